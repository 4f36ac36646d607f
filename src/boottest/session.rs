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
                "echo '@@kiln-{k}-check {i}'; ( {c} ); st=$?; echo; echo \"@@kiln-{k}-status {i} $st $(date +%s.%N)\"\n"
            ));
        }
        s
    }

    /// Each command's (status, output) from `script`'s output, in order; a command whose
    /// markers are missing has status -1. A status counts only for the command whose output
    /// is open, once.
    pub fn split(&self, out: &str, n: usize) -> Vec<(i32, String)> {
        self.split_timed(out, n)
            .into_iter()
            .map(|r| (r.status, r.output))
            .collect()
    }

    /// [`split`](Self::split), with the guest's clock when each command ended.
    pub fn split_timed(&self, out: &str, n: usize) -> Vec<Ran> {
        let check = format!("@@kiln-{}-check ", self.nonce);
        let status = format!("@@kiln-{}-status ", self.nonce);
        let mut v = vec![Ran::default(); n];
        let mut cur: Option<usize> = None;
        // The status marker that closes the open command: (index, status, guest time).
        let closes = |l: &str, cur: Option<usize>| -> Option<(usize, i32, Option<f64>)> {
            let mut w = l.strip_prefix(&status)?.split_whitespace();
            let i = w
                .next()?
                .parse::<usize>()
                .ok()
                .filter(|i| Some(*i) == cur)?;
            let st = w.next()?.parse::<i32>().ok()?;
            Some((i, st, w.next().and_then(|t| t.parse().ok())))
        };
        for l in out.lines() {
            if let Some((i, st, at)) = closes(l, cur) {
                v[i].status = st;
                v[i].ended = at;
                // The newline the script adds before the marker is not output.
                if v[i].output.ends_with('\n') {
                    v[i].output.pop();
                }
                cur = None;
            } else if let Some(i) = cur {
                // Inside a command, anything (a marker too) is its output.
                v[i].output.push_str(l);
                v[i].output.push('\n');
            } else if let Some(i) = l.strip_prefix(&check).and_then(|x| x.trim().parse().ok()) {
                cur = Some(i).filter(|i: &usize| *i < n && v[*i].status == -1);
            }
        }
        v
    }

    /// Whether `out` shows the script started (its first command's marker): ssh logged in,
    /// whatever the commands then did.
    pub fn started(&self, out: &str) -> bool {
        let first = format!("@@kiln-{}-check 0", self.nonce);
        out.lines().any(|l| l == first)
    }
}

/// One command of a batch as it ran: exit status (-1 when its markers are missing), output,
/// and the guest's clock when it ended (seconds; None when the guest's `date` gave none).
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    pub status: i32,
    pub output: String,
    pub ended: Option<f64>,
}

impl Default for Ran {
    fn default() -> Ran {
        Ran {
            status: -1,
            output: String::new(),
            ended: None,
        }
    }
}

/// Whether sshd answers on the forwarded port: its banner (`SSH-2.0-…`) within `wait`. qemu's
/// user networking accepts the host side of a connection before anything listens in the guest,
/// so a connect alone says nothing, and ssh would sit out its ConnectTimeout (10 s) instead.
pub(super) fn sshd_answers(port: u16, wait: Duration) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, wait) else {
        return false;
    };
    if s.set_read_timeout(Some(wait)).is_err() {
        return false;
    }
    let mut banner = [0u8; 4];
    s.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
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

/// A console line as text: firmware's box drawing (replaced bytes) and runs of blanks dropped.
fn readable(line: &str) -> String {
    line.replace('\u{FFFD}', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A boot that will never reach sshd, from the console.
pub fn boot_failure(console: &str) -> Option<String> {
    use crate::libvirt::console::{cpu_level_too_low, CPU_LEVEL_HINT};
    if let Some(l) = console.lines().find(|l| cpu_level_too_low(l)) {
        return Some(format!("{CPU_LEVEL_HINT} ({})", l.trim()));
    }
    if let Some((l, why)) = console
        .lines()
        .find_map(|l| crate::libvirt::console::fatal_line(l).map(|why| (l, why)))
    {
        return Some(format!("{why} ({})", readable(l)));
    }
    for (needle, what) in [
        (
            "You are in emergency mode",
            "the guest booted into emergency mode",
        ),
        (
            "Give root password for maintenance",
            "the guest booted into emergency mode",
        ),
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
