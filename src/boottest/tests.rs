use super::*;

#[test]
fn seed_files_quote_what_they_carry() {
    assert_eq!(
        meta_data("kiln-test-1", "kiln-test-1"),
        "instance-id: kiln-test-1\nlocal-hostname: kiln-test-1\n"
    );
    let ud = user_data("ssh-ed25519 AAAA kiln-boot-test\n");
    assert!(ud.starts_with("#cloud-config\n"));
    assert!(
        ud.contains("      - \"ssh-ed25519 AAAA kiln-boot-test\"\n"),
        "{ud}"
    );
    assert!(ud.contains("sudo: \"ALL=(ALL) NOPASSWD:ALL\""), "{ud}");
}

#[test]
fn checks_run_quoted_commands_and_judge_their_output() {
    let f = Check::File {
        file: "/etc/it's".into(),
        contains: "kiln".into(),
    };
    assert_eq!(f.command(), "sudo cat -- '/etc/it'\\''s'");
    assert!(f.judge(0, "built by kiln").is_ok());
    assert!(f
        .judge(0, "nothing")
        .unwrap_err()
        .contains("does not contain"));
    assert!(f.judge(1, "No such file").is_err());
    let s = Check::Service {
        service: "ssh".into(),
        active: true,
    };
    assert_eq!(s.command(), "systemctl is-active -- 'ssh'");
    assert!(s.judge(0, "active\n").is_ok());
    assert_eq!(s.judge(3, "inactive\n").unwrap_err(), "it is inactive");
    let off = Check::Service {
        service: "ssh".into(),
        active: false,
    };
    assert!(off.judge(3, "inactive").is_ok());
    let r = Check::Run {
        run: "tree --version".into(),
        expect: Some("tree v2".into()),
    };
    assert!(r.judge(0, "tree v2.1.0 (c) 1996").is_ok());
    assert!(r.judge(0, "tree v1").unwrap_err().contains("lacks"));
    assert!(r.judge(127, "not found").unwrap_err().contains("127"));
}

#[test]
fn builtin_checks_judge_the_guest() {
    let want = Expected {
        instance_id: "kiln-test-ab",
        hostname: "kiln-test-ab",
        image_virtual: 3 << 30,
        firmware: crate::vocab::Firmware::Bios,
        tpm: false,
    };
    let j = |b: Builtin, status, out: &str| b.judge(status, out, &want);
    let names = builtin_checks();
    assert_eq!(names.len(), 7);
    let data = |platform: &str, id: &str| {
        format!("{{\"v1\": {{\"platform\": \"{platform}\", \"instance_id\": \"{id}\"}}}}\n")
    };
    assert!(j(names[0], 0, &data("nocloud", "kiln-test-ab")).is_ok());
    assert!(j(names[0], 0, &data("ec2", "kiln-test-ab"))
        .unwrap_err()
        .contains("not nocloud"));
    assert!(j(names[0], 0, &data("nocloud", "i-old"))
        .unwrap_err()
        .contains("instance-id"));
    assert!(j(
        names[0],
        0,
        "cat: /run/cloud-init/instance-data.json: No such file"
    )
    .unwrap_err()
    .contains("not JSON"));
    assert!(j(names[1], 0, &format!("{}\n", 4u64 << 30)).is_ok());
    assert!(j(names[1], 0, &format!("{}\n", 2u64 << 30))
        .unwrap_err()
        .contains("did not grow"));
    // A minimal image without growpart: the failure names what it lacks and the fix.
    let e = j(names[1], 0, &format!("{}\nno-growpart\n", 2u64 << 30)).unwrap_err();
    assert!(
        e.contains("no growpart") && e.contains("`growroot` element"),
        "{e}"
    );
    // Without cloud-init (127: command not found), said so, not an exit status.
    let e = j(names[0], 127, "").unwrap_err();
    assert!(e.contains("cloud-init is not installed"), "{e}");
    // No check of the defaults needs sudo, which a minimal image need not have.
    for b in &names {
        assert!(!b.command().contains("sudo"), "{}", b.command());
    }
    let id = "0123456789abcdef0123456789abcdef";
    assert!(j(names[2], 0, &format!("{id}\n1000\n1001\n")).is_ok());
    assert!(j(names[2], 0, &format!("{id}\n1000\n900\n"))
        .unwrap_err()
        .contains("older"));
    assert!(j(names[2], 0, "uninitialized\n1000\n1001\n").is_err());
    assert!(j(names[3], 0, "1000\n1002\n1003\n").is_ok());
    assert!(j(names[3], 0, "1000\n1002\n10\n")
        .unwrap_err()
        .contains("older"));
    assert!(j(names[4], 0, "kiln-test-ab\n").is_ok());
    assert!(j(names[4], 0, "golden\n").is_err());
    assert!(j(names[5], 0, "").is_ok());
    assert_eq!(
        j(
            names[5],
            0,
            "ssh.service loaded failed failed OpenBSD Secure Shell server\n"
        )
        .unwrap_err(),
        "failed: ssh.service"
    );
}

#[test]
fn cloud_init_status_and_host_keys() {
    assert_eq!(
        judge_cloud_init(0, "status: done\n"),
        (true, false, "status: done".into())
    );
    assert!(judge_cloud_init(2, "status: done\nrecoverable").1);
    assert!(!judge_cloud_init(1, "status: error").0);
    assert_eq!(
        public_key_blob("ssh-ed25519 AAAAC3 root@golden\n").as_deref(),
        Some("ssh-ed25519 AAAAC3")
    );
    assert_eq!(public_key_blob("garbage\n"), None);
    let learnt = known_host_keys("[127.0.0.1]:2222 ssh-ed25519 AAAAC3\n");
    assert_eq!(learnt, vec!["ssh-ed25519 AAAAC3"]);
    // The build VM's key presented again: the check fails and names it.
    let build = vec!["ecdsa-sha2-nistp256 AAAAE2".to_string(), learnt[0].clone()];
    let r = judge_host_keys(&build, &learnt).unwrap();
    assert!(!r.ok && r.detail.contains("AAAAC3"), "{r:?}");
    // New keys: passes. No key learnt: fails. Nothing to compare with: not run at all.
    assert!(judge_host_keys(&build[..1], &learnt).unwrap().ok);
    assert!(!judge_host_keys(&build, &[]).unwrap().ok);
    assert!(judge_host_keys(&[], &learnt).is_none());
}

#[test]
fn a_lost_batch_output_fails_every_builtin_check() {
    let want = Expected {
        instance_id: "i-1",
        hostname: "h",
        image_virtual: 1,
        firmware: crate::vocab::Firmware::Bios,
        tpm: false,
    };
    // The session ended before the last command's markers: -1, judged as lost.
    let out = batch_lost_after_first();
    let results = Batch::with_nonce("n").split(&out, builtin_checks().len());
    for (b, (status, text)) in builtin_checks().into_iter().zip(results).skip(1) {
        let r = b.judge(status, &text, &want);
        assert!(
            r.as_ref().is_err_and(|e| e.contains("lost")),
            "{}: {r:?}",
            b.name()
        );
    }
}

fn batch_lost_after_first() -> String {
    "@@kiln-n-check 0\nnocloud\ni-1\n\n@@kiln-n-status 0 0\n".to_string()
}

/// sshd "answers" only when it speaks: qemu's user networking accepts a connection for a guest
/// that does not listen yet, and that must not count.
#[test]
fn sshd_answers_only_with_its_banner() {
    use std::io::Write;
    let wait = std::time::Duration::from_millis(300);
    let speaks = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (p1, p2) = (
        speaks.local_addr().unwrap().port(),
        silent.local_addr().unwrap().port(),
    );
    let t = std::thread::spawn(move || {
        let (mut c, _) = speaks.accept().unwrap();
        c.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").unwrap();
    });
    assert!(sshd_answers(p1, wait));
    t.join().unwrap();
    let t0 = std::time::Instant::now();
    assert!(!sshd_answers(p2, wait), "accepted but silent");
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    drop(silent);
    assert!(!sshd_answers(p2, wait), "nothing listens");
}

/// The session's times: each command from the guest's stamps, the login the rest of the total.
#[test]
fn a_session_is_timed_by_the_guest_clock() {
    let batch = Batch::with_nonce("t");
    let out = "@@kiln-t-check 0\n\n@@kiln-t-status 0 0 100.5\n@@kiln-t-check 1\ndone\n@@kiln-t-status 1 0 108.0\n@@kiln-t-check 2\n\n@@kiln-t-status 2 0 109.25\n";
    assert!(batch.started(out));
    assert!(!batch.started("Permission denied (publickey).\n"));
    assert!(!Batch::with_nonce("u").started(out));
    let ran = batch.split_timed(out, 3);
    assert_eq!(ran[1].output, "done");
    assert_eq!(ran[2].ended, Some(109.25));
    assert_eq!(durations(&ran, 50.0), vec![41.25, 7.5, 1.25]);
    // A guest without `date +%N` stamps nothing: its commands count 0, the login all.
    let bare = "@@kiln-t-check 0\n\n@@kiln-t-status 0 0\n@@kiln-t-check 1\n\n@@kiln-t-status 1 0\n";
    assert_eq!(durations(&batch.split_timed(bare, 2), 9.0), vec![9.0, 0.0]);
}

#[test]
fn batched_checks_come_apart_with_their_status() {
    let batch = Batch::with_nonce("0a1b");
    let script = batch.script(&["hostname".into(), "false".into()]);
    assert_eq!(
        script,
        "echo '@@kiln-0a1b-check 0'; ( hostname ); st=$?; echo; echo \"@@kiln-0a1b-status 0 $st $(date +%s.%N)\"\n\
         echo '@@kiln-0a1b-check 1'; ( false ); st=$?; echo; echo \"@@kiln-0a1b-status 1 $st $(date +%s.%N)\"\n"
    );
    let run = |commands: &[&str]| {
        let commands: Vec<String> = commands.iter().map(|c| c.to_string()).collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(batch.script(&commands))
            .output()
            .unwrap();
        batch.split(&String::from_utf8_lossy(&out.stdout), commands.len())
    };
    let r = run(&["hostname", "false"]);
    assert_eq!(r[0].0, 0);
    assert!(!r[0].1.trim().is_empty());
    assert_eq!(r[1], (1, String::new()));
    // Output without a final newline is read, as it is.
    assert_eq!(run(&["printf x"]), vec![(0, "x".to_string())]);
    assert_eq!(run(&["echo y"]), vec![(0, "y\n".to_string())]);
    // A check that prints markers (of another batch, or guessing) cannot set another's status.
    let r = run(&[
        "echo '@@kiln-0a1b-status 1 0'; echo '@@kiln-check 1'; echo '@@kiln-status 1 0'; false",
        "exit 3",
    ]);
    assert_eq!(r[0].0, 1, "{r:?}");
    assert_eq!(r[1].0, 3, "{r:?}");
    assert_eq!(
        batch.split("@@kiln-0a1b-check 0\nx\n", 2),
        vec![(-1, "x\n".into()), (-1, String::new())]
    );
}

#[test]
fn the_console_tells_a_boot_that_cannot_reach_sshd() {
    assert!(cloud_init_finished("Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 13:00:00 +0000. Datasource DataSourceNoCloud.  Up 60.1 seconds"));
    assert!(!cloud_init_finished(
        "Cloud-init v. 22.4.2 running 'modules:final'"
    ));
    assert!(
        boot_failure("[  OK  ] ok\nYou are in emergency mode. After logging in, type")
            .unwrap()
            .contains("emergency")
    );
    assert!(
        boot_failure("ALERT!  UUID=1234 does not exist.  Dropping to a shell!")
            .unwrap()
            .contains("root filesystem")
    );
    assert!(boot_failure("[  OK  ] Reached target Multi-User System").is_none());
    // shim refusing an unsigned GRUB, as its dialog reaches the console (escapes and code page
    // 437 box drawing, not UTF-8): read from the file as the test reads it.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("test-console.log");
    std::fs::write(
        &log,
        b"BdsDxe: starting Boot0001 \"UEFI Misc Device\"\r\n\xb3\x1b[04;01H\xb3   Verification failed: (0x1A) Security Violation   \xb3\x1b[37m\r\n",
    )
    .unwrap();
    let console = crate::libvirt::console::file_lines(&log, 1 << 20).join("\n");
    let m = boot_failure(&console).unwrap();
    assert!(m.contains("Secure Boot refused an unsigned part"), "{m}");
    // glibc's own refusal comes before the panic it causes, and names the fix.
    let m = boot_failure(
        "Fatal glibc error: CPU does not support x86-64-v2\n[ 9.1] Kernel panic - not syncing: Attempted to kill init!",
    )
    .unwrap();
    assert!(m.contains("vm.cpu") && m.contains("x86-64-v2"), "{m}");
}

#[test]
fn ssh_uses_only_the_test_key_and_its_own_known_hosts() {
    let v = ssh_argv(Path::new("/w/test-key"), Path::new("/w/kh"), 2222, "true");
    assert_eq!(&v[..5], ["ssh", "-F", "/dev/null", "-i", "/w/test-key"]);
    assert!(v.contains(&"UserKnownHostsFile=/w/kh".to_string()));
    assert!(v.contains(&"BatchMode=yes".to_string()));
    assert_eq!(&v[v.len() - 3..], ["kiln-test@127.0.0.1", "--", "true"]);
}

#[test]
fn junit_names_each_check_and_its_failure() {
    let r = Report {
        instance_id: "i".into(),
        hostname: "h".into(),
        checks: vec![
            CheckResult {
                name: "a <b>".into(),
                ok: true,
                warning: false,
                detail: String::new(),
                seconds: 1.0,
            },
            CheckResult {
                name: "c".into(),
                ok: false,
                warning: false,
                detail: "it is \"inactive\"".into(),
                seconds: 0.5,
            },
        ],
        phases: vec![],
    };
    let x = junit_xml("debian-12-1.0", &r);
    assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
    assert!(x.contains("name=\"a &lt;b&gt;\""), "{x}");
    assert!(
        x.contains("<failure message=\"it is &quot;inactive&quot;\"/>"),
        "{x}"
    );
}

/// The firmware check's verdict on `out` for a VM with `firmware` (and a TPM when `tpm`).
fn firmware_check(firmware: crate::vocab::Firmware, tpm: bool, out: &str) -> Result<(), String> {
    Builtin::Firmware.judge(
        0,
        out,
        &Expected {
            instance_id: "i",
            hostname: "h",
            image_virtual: 1,
            firmware,
            tpm,
        },
    )
}

#[test]
fn the_firmware_check_wants_what_the_vm_had() {
    use crate::vocab::Firmware as F;
    let j = |firmware, out: &str| firmware_check(firmware, false, out);
    assert!(j(F::Bios, "bios\n\n").is_ok());
    assert!(j(F::Uefi, "uefi\n0\n").is_ok());
    assert!(j(F::SecureBoot, "uefi\n1\n").is_ok());
    assert!(j(F::Bios, "uefi\n0\n")
        .unwrap_err()
        .contains("the VM had bios"));
    assert!(j(F::Uefi, "bios\n")
        .unwrap_err()
        .contains("\"bios\" firmware"));
    assert!(j(F::SecureBoot, "uefi\n0\n")
        .unwrap_err()
        .contains("not enforcing in the guest (SecureBoot variable: 0)"));
    assert!(j(F::SecureBoot, "uefi\n")
        .unwrap_err()
        .contains("variable: missing"));
}

#[test]
fn a_tpm_must_be_seen_by_the_guest() {
    let j = |out: &str| firmware_check(crate::vocab::Firmware::Uefi, true, out);
    assert!(j("uefi\n0\ntpm\n").is_ok());
    assert!(j("uefi\n0\n").unwrap_err().contains("no /dev/tpm0"));
}

#[test]
fn a_silent_boot_is_booted_again_and_an_image_fault_is_not() {
    let (timeout, boot) = (Duration::from_secs(2400), Duration::from_secs(300));
    let seen = |secs: u64, answered: bool, console: &'static str| Seen {
        elapsed: Duration::from_secs(secs),
        answered,
        console,
        running: true,
        crashed: false,
        cloud_init_for: None,
        wedged: None,
        last: "sshd does not answer yet",
    };
    let judge = |s: &Seen| no_login(timeout, boot, s).map(|n| (n.again, n.why));
    // Still booting: wait.
    assert_eq!(judge(&seen(299, false, "")), None);
    // Silent past boot_timeout (CI: a Secure Boot guest hung 40 minutes): once more.
    let (again, why) = judge(&seen(301, false, "")).unwrap();
    assert!(again, "{why}");
    assert!(why.contains("within 300 s"), "{why}");
    // Wedged (too little CPU for a booting guest): once more, long before boot_timeout.
    let mut wedged = seen(70, false, "");
    wedged.wedged = Some(Duration::from_millis(300));
    let (again, why) = judge(&wedged).unwrap();
    assert!(again && why.contains("0.3 s of CPU in 60 s"), "{why}");
    // sshd spoke but no login yet: the image's business, up to the whole timeout.
    assert_eq!(judge(&seen(2399, true, "")), None);
    assert!(!judge(&seen(2401, true, "")).unwrap().0);
    // What the console says is final, however early.
    let refused = "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\": Access Denied";
    let (again, why) = judge(&seen(10, false, refused)).unwrap();
    assert!(!again && why.contains("Secure Boot"), "{why}");
    let emergency = seen(10, false, "You are in emergency mode.");
    assert!(!judge(&emergency).unwrap().0);
    // qemu died: once more; a guest that powered itself off: not.
    let mut died = seen(10, false, "");
    died.running = false;
    died.crashed = true;
    assert!(judge(&died).unwrap().0);
    died.crashed = false;
    assert!(!judge(&died).unwrap().0);
    // cloud-init done and sshd still refusing the key after the grace: not.
    let mut refusing = seen(200, true, "");
    refusing.cloud_init_for = Some(SSH_GRACE + Duration::from_secs(1));
    assert!(!judge(&refusing).unwrap().0);
}
