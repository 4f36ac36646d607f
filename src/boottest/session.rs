//! Reaching the guest: ssh (argv, retries of a connection ssh itself could not make, many
//! commands in one session) and what the serial console says (cloud-init done, a failed boot).

use super::*;

/// ssh to the test VM: the test key only, its own known_hosts (the host key is learnt on the
/// first login and must not change), no agent, no config from the invoking user.
pub fn ssh_argv(key: &Path, known_hosts: &Path, port: u16, command: &str) -> Vec<String> {
    let mut v = process::argv(["ssh", "-F", "/dev/null", "-i"]);
    v.push(key.display().to_string());
    for o in [
        "IdentitiesOnly=yes".to_string(),
        "BatchMode=yes".into(),
        "StrictHostKeyChecking=accept-new".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "ConnectTimeout=10".into(),
        "ServerAliveInterval=10".into(),
        "LogLevel=ERROR".into(),
    ] {
        v.push("-o".into());
        v.push(o);
    }
    v.push("-p".into());
    v.push(port.to_string());
    v.push(format!("{TEST_USER}@127.0.0.1"));
    v.push("--".into());
    v.push(command.to_string());
    v
}

/// Run an ssh command: its exit status and its output (stdout; the remote commands send
/// stderr there too). Killed when the build is cancelled or `limit` passes.
pub(super) fn ssh_run(
    argv: &[String],
    cancel: &Cancel,
    limit: Duration,
) -> Result<(i32, String), TestError> {
    use std::io::Read;
    tracing::debug!(target: "kiln::command", "running: {}", process::display(argv));
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| TestError::Setup(format!("cannot run ssh: {e}")))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if cancel.is_cancelled() || start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestError::Setup(if cancel.is_cancelled() {
                "interrupted".into()
            } else {
                format!(
                    "`{}` took longer than {} s",
                    argv.last().map(String::as_str).unwrap_or(""),
                    limit.as_secs()
                )
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = reader.join().unwrap_or_default();
    let e = err_reader.join().unwrap_or_default();
    if !e.trim().is_empty() {
        text.push_str(&e);
    }
    Ok((status.code().unwrap_or(-1), text))
}

/// ssh's own failure to connect (exit 255 with a connection error), as opposed to the remote
/// command's exit status.
pub fn ssh_connection_failed(status: i32, output: &str) -> bool {
    status == 255
        && [
            "kex_exchange_identification",
            "ssh_exchange_identification",
            "Connection reset",
            "Connection refused",
            "Connection closed",
            "Connection timed out",
        ]
        .iter()
        .any(|m| output.contains(m))
}

/// One shell script running `commands` in turn, each framed by markers with its exit status.
pub fn batch_script(commands: &[String]) -> String {
    let mut s = String::new();
    for (i, c) in commands.iter().enumerate() {
        s.push_str(&format!(
            "echo '@@kiln-check {i}'; ( {c} ); echo \"@@kiln-status {i} $?\"\n"
        ));
    }
    s
}

/// Each command's (status, output) from `batch_script`'s output; a command whose markers are
/// missing has status -1.
pub fn split_batch(out: &str, n: usize) -> Vec<(i32, String)> {
    let mut v = vec![(-1, String::new()); n];
    let mut cur: Option<usize> = None;
    for l in out.lines() {
        if let Some(i) = l
            .strip_prefix("@@kiln-check ")
            .and_then(|x| x.trim().parse().ok())
        {
            cur = Some(i).filter(|i| *i < n);
        } else if let Some(rest) = l.strip_prefix("@@kiln-status ") {
            let mut w = rest.split_whitespace();
            if let (Some(Ok(i)), Some(Ok(st))) = (
                w.next().map(str::parse::<usize>),
                w.next().map(str::parse::<i32>),
            ) {
                if i < n {
                    v[i].0 = st;
                }
            }
            cur = None;
        } else if let Some(i) = cur {
            v[i].1.push_str(l);
            v[i].1.push('\n');
        }
    }
    v
}

/// cloud-init's last line on the console ("Cloud-init v. 22.4.2 finished at …").
pub fn cloud_init_finished(console: &str) -> bool {
    console
        .lines()
        .any(|l| l.contains("Cloud-init v.") && l.contains(" finished at "))
}

/// A boot that will never reach sshd, from the console.
pub fn boot_failure(console: &str) -> Option<String> {
    for (needle, what) in [
        (
            "You are in emergency mode",
            "the guest booted into emergency mode",
        ),
        (
            "Give root password for maintenance",
            "the guest booted into emergency mode",
        ),
        ("Kernel panic - not syncing", "the guest's kernel panicked"),
        ("ALERT!  ", "the initramfs did not find the root filesystem"),
        ("grub rescue>", "GRUB did not find its files (grub rescue)"),
    ] {
        if let Some(l) = console.lines().find(|l| l.contains(needle)) {
            return Some(format!("{what} ({})", l.trim()));
        }
    }
    None
}

/// A free TCP port on the loopback (bound and released; qemu binds it right after).
pub(super) fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
