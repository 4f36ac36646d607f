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

/// Several commands in one ssh session, each framed by markers with its exit status. The
/// markers carry a nonce of this batch: a command's own output (the guest's, or a recipe
/// check's) cannot fake another command's status by printing a marker.
pub struct Batch {
    nonce: String,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::with_nonce(&hex::encode(crate::libvirt::console::rand_bytes()))
    }

    pub fn with_nonce(nonce: &str) -> Batch {
        Batch {
            nonce: nonce.to_string(),
        }
    }

    /// One shell script running `commands` in turn. The status marker starts a line of its
    /// own even when a command's output ends without a newline (`printf x`).
    pub fn script(&self, commands: &[String]) -> String {
        let k = &self.nonce;
        let mut s = String::new();
        for (i, c) in commands.iter().enumerate() {
            s.push_str(&format!(
                "echo '@@kiln-{k}-check {i}'; ( {c} ); st=$?; echo; echo \"@@kiln-{k}-status {i} $st\"\n"
            ));
        }
        s
    }

    /// Each command's (status, output) from `script`'s output, in order; a command whose
    /// markers are missing has status -1. A status counts only for the command whose output
    /// is open, once.
    pub fn split(&self, out: &str, n: usize) -> Vec<(i32, String)> {
        let check = format!("@@kiln-{}-check ", self.nonce);
        let status = format!("@@kiln-{}-status ", self.nonce);
        let mut v = vec![(-1, String::new()); n];
        let mut cur: Option<usize> = None;
        // The status marker that closes the open command: (index, status).
        let closes = |l: &str, cur: Option<usize>| -> Option<(usize, i32)> {
            let mut w = l.strip_prefix(&status)?.split_whitespace();
            let i = w
                .next()?
                .parse::<usize>()
                .ok()
                .filter(|i| Some(*i) == cur)?;
            Some((i, w.next()?.parse::<i32>().ok()?))
        };
        for l in out.lines() {
            if let Some((i, st)) = closes(l, cur) {
                v[i].0 = st;
                // The newline the script adds before the marker is not output.
                if v[i].1.ends_with('\n') {
                    v[i].1.pop();
                }
                cur = None;
            } else if let Some(i) = cur {
                // Inside a command, anything (a marker too) is its output.
                v[i].1.push_str(l);
                v[i].1.push('\n');
            } else if let Some(i) = l.strip_prefix(&check).and_then(|x| x.trim().parse().ok()) {
                cur = Some(i).filter(|i: &usize| *i < n && v[*i].0 == -1);
            }
        }
        v
    }
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
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
