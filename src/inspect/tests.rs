use super::*;

#[test]
fn sshd_first_value_wins_includes_read_in_place_match_ends_globals() {
    let main = "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication yes\n\
                #PermitRootLogin yes\nMatch User bob\n  PermitRootLogin yes\n";
    let inc = |p: &str| {
        assert_eq!(p, "/etc/ssh/sshd_config.d/*.conf");
        vec!["passwordauthentication no\n".to_string()]
    };
    let s = sshd(main, &inc);
    assert_eq!(s.password_authentication, "no");
    assert_eq!(s.permit_root_login, "prohibit-password");
    assert_eq!(s.permit_empty_passwords, "no");
    let s = sshd("PermitRootLogin=yes\nPermitRootLogin no\n", &|_| Vec::new());
    assert_eq!(s.permit_root_login, "yes");
    assert_eq!(s.password_authentication, "yes");
    // An include loop stops at a depth limit instead of recursing forever.
    let s = sshd("Include x\n", &|_| vec!["Include x\n".to_string()]);
    assert_eq!(s.password_authentication, "yes");
}

#[test]
fn accounts_show_password_states_never_hashes() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                  daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                  alice:x:1000:1000::/home/alice:/bin/bash\n\
                  svc:x:998:998::/:/usr/sbin/nologin\n\
                  open:x:1001:1001::/home/open:/bin/sh\n\
                  legacy:$6$abc$def:1002:1002::/:/bin/false\n";
    let shadow = "root:!:19000::::::\ndaemon:*:19000::::::\nalice:$6$salt$hash:19000::::::\n\
                  svc:$y$j9T$x:19000::::::\nopen::19000::::::\n";
    let a = accounts(passwd, shadow);
    let got: Vec<(&str, &str)> = a
        .iter()
        .map(|a| (a.name.as_str(), a.password.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("root", "locked"),
            ("alice", "set"),
            ("svc", "set"),
            ("open", "empty"),
            ("legacy", "set")
        ]
    );
    let json = serde_json::to_string(&a).unwrap();
    assert!(!json.contains("$6$") && !json.contains("$y$"), "{json}");
}

#[test]
fn cloud_init_later_files_override() {
    let files = vec![
        "datasource_list: [NoCloud, None]\nsystem_info:\n  default_user:\n    name: debian\n"
            .to_string(),
        "not: [valid".to_string(),
        "datasource_list: [ ConfigDrive, OpenStack ]\n".to_string(),
    ];
    let ci = cloud_init_config(&files);
    assert_eq!(
        ci.datasources,
        Some(vec!["ConfigDrive".to_string(), "OpenStack".to_string()])
    );
    assert_eq!(ci.default_user.as_deref(), Some("debian"));
    assert_eq!(cloud_init_config(&[String::new()]), CloudInit::default());
}

#[test]
fn services_from_links() {
    let s = services(
        &[
            "/etc/systemd/system/multi-user.target.wants/ssh.service".into(),
            "/etc/systemd/system/sockets.target.wants/x.socket".into(),
            "/etc/systemd/system/stray".into(),
        ],
        &[
            (
                "/etc/systemd/system/apt-daily.timer".into(),
                "/dev/null".into(),
            ),
            (
                "/etc/systemd/system/sshd.service".into(),
                "/lib/systemd/system/ssh.service".into(),
            ),
        ],
    );
    assert_eq!(
        s.enabled,
        [
            "multi-user.target.wants/ssh.service",
            "sockets.target.wants/x.socket"
        ]
    );
    assert_eq!(s.masked, ["apt-daily.timer"]);
}

#[test]
fn boot_and_fstab_and_machine_id() {
    let cfg =
        "menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1.0-9-amd64 root=UUID=abc ro quiet\n}\n";
    let b = boot(Some(cfg), false, false, true, vec![]);
    assert_eq!(b.loader, "grub2");
    assert_eq!(b.cmdline.as_deref(), Some("root=UUID=abc ro quiet"));
    assert_eq!(boot(None, true, false, false, vec![]).loader, "extlinux");
    assert_eq!(boot(None, false, false, false, vec![]).loader, "none found");

    let fs = vec![Filesystem {
        device: "/dev/sda1".into(),
        fstype: "ext4".into(),
        uuid: "ABC-1".into(),
        label: "root".into(),
        mountpoint: Some("/".into()),
        size: None,
        used: None,
    }];
    let t = fstab(
        "UUID=abc-1 / ext4 defaults 0 1\nUUID=dead / ext4 nofail\nLABEL=gone /srv ext4\nproc /proc proc\n",
        &fs,
    );
    let found: Vec<bool> = t.iter().map(|e| e.found).collect();
    assert_eq!(found, [true, false, false, true]);

    assert_eq!(machine_id(Some("\n")), MachineId::Empty);
    assert_eq!(machine_id(None), MachineId::Absent);
    assert_eq!(
        machine_id(Some("uninitialized\n")),
        MachineId::Uninitialized
    );
    let id = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        machine_id(Some(&format!("{id}\n"))),
        MachineId::Set(id.into())
    );
    // Anything else is not shown (a host key read through a crafted image, escapes).
    assert_eq!(machine_id(Some("0123\n")), MachineId::Invalid(4));
    assert_eq!(
        machine_id(Some("-----BEGIN OPENSSH PRIVATE KEY-----")),
        MachineId::Invalid(35)
    );
}

#[test]
fn the_architecture_comes_from_an_elf_header() {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[5] = 1;
    elf[18] = 0x3e;
    assert_eq!(elf_arch(&elf), Some("x86_64"));
    elf[18] = 0xb7;
    assert_eq!(elf_arch(&elf), Some("aarch64"));
    // The host's own shell, read as a guest's would be.
    let sh = std::fs::read("/bin/sh").unwrap();
    assert_eq!(elf_arch(&sh), Some(std::env::consts::ARCH));
    assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
    assert_eq!(elf_arch(&elf[..10]), None);
}
