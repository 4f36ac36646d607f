use super::*;

#[test]
fn passwd_lines() {
    let p = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\ndave:x:1001:100::/home/dave:/bin/sh\nx:x:notanumber:0::/:/bin/sh\n");
    assert_eq!(p.len(), 2);
    assert_eq!(
        p[1],
        PasswdEntry {
            name: "dave".into(),
            uid: 1001,
            gid: 100,
            home: "/home/dave".into()
        }
    );
}

#[test]
fn os_release_maps_to_libguestfs_names() {
    for (text, want) in [
        (
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
            Some(("debian", "apt")),
        ),
        ("ID=\"rhel\"\nVERSION_ID=\"9.2\"\n", Some(("rhel", "dnf"))),
        ("ID=\"centos\"\nVERSION_ID=\"7\"\n", Some(("centos", "yum"))),
        ("ID=ol\nVERSION_ID=8.9\n", Some(("oraclelinux", "dnf"))),
        ("ID=kali\n", Some(("kalilinux", "apt"))),
        ("ID=nixos\n", None),
        ("NAME=x\n", None),
    ] {
        assert_eq!(
            distro_from_os_release(text),
            want.map(|(d, p)| (d.to_string(), p.to_string())),
            "{text}"
        );
    }
}

#[test]
fn fstab_entries_skip_comments_and_default_options() {
    let e = fstab_entries(
        "# comment\nUUID=abc / ext4 errors=remount-ro 0 1\n\n/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0\ntmpfs /tmp tmpfs\n",
    );
    assert_eq!(e.len(), 3);
    assert_eq!(
        e[0],
        (
            "UUID=abc".into(),
            "/".into(),
            "ext4".into(),
            "errors=remount-ro".into()
        )
    );
    assert_eq!(e[2].3, "defaults");
}
