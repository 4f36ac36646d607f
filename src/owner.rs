//! Who made a resource: the process id, the boot it ran in and the process's start time, so
//! that `kiln gc` can tell a dead build's leftovers from a live build's (a pid alone is reused,
//! and means nothing after a reboot), and the host (machine-id) and pid namespace it ran in: a
//! pid only means something in its own namespace, so what another host or container made
//! (sharing a libvirtd, a catalog or a cache) is never judged from here.

use std::path::Path;

/// The file in a staging or scratch directory that names its owner.
pub const OWNER_FILE: &str = ".kiln-owner";

/// The XML namespace of the owner element in a domain's `<metadata>`.
pub const OWNER_NS: &str = "https://kiln.invalid/owner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub boot_id: String,
    /// Start time of the process in clock ticks after boot (/proc/PID/stat, field 22).
    pub start: u64,
    /// The machine's /etc/machine-id (else its hostname); None when an older kiln wrote it.
    pub host: Option<String>,
    /// The pid namespace (`pid:[INODE]`, /proc/self/ns/pid).
    pub pidns: Option<String>,
}

/// What `kiln gc` may conclude about a resource's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Made where this process cannot see its owner (another host or pid namespace, or not
    /// recorded): neither alive nor dead from here.
    Foreign(String),
}

fn host_id() -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let id = id.trim();
    if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        return id.to_string();
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("hostname:{}", name.trim())
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat (after the parenthesised command, which may hold spaces).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

fn parse_start(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on: state is field 3, starttime field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            pid,
            boot_id: boot_id(),
            start: start_ticks(pid).unwrap_or(0),
            host: Some(host_id()),
            pidns: Some(pid_namespace()),
        }
    }

    /// `pid=… boot=… start=… host=… pidns=…`: one line, for files and domain metadata.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "pid={} boot={} start={}",
            self.pid, self.boot_id, self.start
        );
        if let Some(h) = &self.host {
            s.push_str(&format!(" host={h}"));
        }
        if let Some(ns) = &self.pidns {
            s.push_str(&format!(" pidns={ns}"));
        }
        s
    }

    pub fn parse(s: &str) -> Option<Owner> {
        let mut pid = None;
        let mut boot = None;
        let mut start = None;
        let (mut host, mut pidns) = (None, None);
        for w in s.split_whitespace() {
            match w.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("boot", v)) => boot = Some(v.to_string()),
                Some(("start", v)) => start = v.parse().ok(),
                Some(("host", v)) => host = Some(v.to_string()),
                Some(("pidns", v)) => pidns = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Owner {
            pid: pid?,
            boot_id: boot?,
            start: start?,
            host,
            pidns,
        })
    }

    /// Is the process that made this still running? Same boot, same pid, same start time
    /// (in this process's pid namespace: see `liveness`).
    pub fn is_alive(&self) -> bool {
        self.boot_id == boot_id() && start_ticks(self.pid) == Some(self.start)
    }

    /// Alive or dead, judged only where the owner's pid means something: on the same host in
    /// the same pid namespace. Anything else is foreign.
    pub fn liveness(&self) -> Liveness {
        self.liveness_from(&host_id(), &pid_namespace())
    }

    fn liveness_from(&self, host: &str, pidns: &str) -> Liveness {
        match (&self.host, &self.pidns) {
            (Some(h), _) if h != host => Liveness::Foreign(format!("made on another host ({h})")),
            (Some(_), Some(ns)) if ns != pidns => {
                Liveness::Foreign(format!("made in another pid namespace ({ns})"))
            }
            (Some(_), Some(_)) if self.is_alive() => Liveness::Alive,
            (Some(_), Some(_)) => Liveness::Dead,
            _ => Liveness::Foreign("its host and pid namespace were not recorded".into()),
        }
    }

    /// Record this owner in `dir` (a staging or scratch directory kiln just made).
    pub fn write_into(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join(OWNER_FILE), self.encode() + "\n")
    }

    pub fn read_from(dir: &Path) -> Option<Owner> {
        Owner::parse(&std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?)
    }

    /// The owner element kiln puts into a domain's `<metadata>`.
    pub fn xml_element(&self) -> String {
        format!(
            "<kiln:owner xmlns:kiln='{OWNER_NS}'>{}</kiln:owner>",
            crate::quote::xml(&self.encode())
        )
    }

    /// The owner recorded in a domain's XML (as libvirt gives it back), if any.
    pub fn from_domain_xml(xml: &str) -> Option<Owner> {
        let at = xml.find(OWNER_NS)?;
        let rest = &xml[at..];
        let open = rest.find('>')?;
        let text = &rest[open + 1..];
        Owner::parse(&text[..text.find('<')?])
    }
}

/// `xml` with the owner element in its `<metadata>` (made if the template has none): every
/// domain kiln defines says who made it, whatever template rendered it.
pub fn with_owner(xml: &str, owner: &Owner) -> String {
    let el = owner.xml_element();
    if let Some(i) = xml.find("</metadata>") {
        return format!("{}  {el}\n  {}", &xml[..i], &xml[i..]);
    }
    if let Some(i) = xml.find("</name>") {
        let end = i + "</name>".len();
        return format!(
            "{}\n  <metadata>\n    {el}\n  </metadata>{}",
            &xml[..end],
            &xml[end..]
        );
    }
    xml.to_string()
}

/// How long a file that carries only a pid must have been left alone before `kiln gc` takes
/// it for a dead build's: its pid may be another pid namespace's (a build in a container
/// sharing the cache), and a live transfer or conversion writes far more often than this.
const PID_ONLY_QUIET: std::time::Duration = std::time::Duration::from_secs(600);

/// Was a file or directory that carries only a pid (`….part-PID`) left by a dead process?
/// Dead when it is older than this boot (the pid is another process's now), or when no such
/// process runs here and it has not been written for ten minutes (a pid means nothing in
/// another namespace). A running process of that pid keeps it: never a live build's.
pub fn pid_only_liveness(pid: u32, path: &Path) -> Liveness {
    let mtime = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok();
    if let (Some(b), Some(m)) = (boot_time(), mtime) {
        if m < b {
            return Liveness::Dead;
        }
    }
    if start_ticks(pid).is_some() {
        return Liveness::Alive;
    }
    let quiet = mtime
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|e| e >= PID_ONLY_QUIET);
    if quiet {
        Liveness::Dead
    } else {
        Liveness::Foreign(format!(
            "no process {pid} here, but written in the last {} minutes: perhaps a build in \
             another pid namespace",
            PID_ONLY_QUIET.as_secs() / 60
        ))
    }
}

fn boot_time() -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_or_boot_is_not() {
        let me = Owner::current();
        assert!(me.is_alive());
        assert!(!Owner {
            start: me.start + 1,
            ..me.clone()
        }
        .is_alive());
        assert!(!Owner {
            boot_id: "other".into(),
            ..me.clone()
        }
        .is_alive());
        assert_eq!(Owner::parse(&me.encode()), Some(me));
    }

    #[test]
    fn start_time_is_field_22_even_with_spaces_in_the_command() {
        let stat = "4242 (a b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_start(stat), Some(987654));
    }

    #[test]
    fn owner_goes_into_metadata_and_comes_back_from_libvirts_xml() {
        let o = Owner {
            pid: 7,
            boot_id: "b-1".into(),
            start: 99,
            host: None,
            pidns: None,
        };
        let with = with_owner(
            "<domain>\n  <name>x</name>\n  <metadata>\n    <a/>\n  </metadata>\n</domain>",
            &o,
        );
        assert!(with.contains("<a/>\n    <kiln:owner"), "{with}");
        assert_eq!(Owner::from_domain_xml(&with), Some(o.clone()));
        let bare = with_owner("<domain><name>x</name><memory>1</memory></domain>", &o);
        assert!(bare.contains("</name>\n  <metadata>"), "{bare}");
        // libvirt writes attributes with double quotes.
        let back = format!(
            "<metadata>\n<kiln:owner xmlns:kiln=\"{OWNER_NS}\">pid=7 boot=b-1 start=99</kiln:owner>"
        );
        assert_eq!(Owner::from_domain_xml(&back), Some(o));
        assert_eq!(Owner::from_domain_xml("<domain/>"), None);
    }

    #[test]
    fn owners_round_trip_and_are_judged_only_where_their_pid_means_something() {
        let me = Owner::current();
        assert_eq!(Owner::parse(&me.encode()), Some(me.clone()));
        assert_eq!(me.liveness(), Liveness::Alive);
        let (host, ns) = (me.host.clone().unwrap(), me.pidns.clone().unwrap());
        // Same host and namespace, another start: dead.
        let gone = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(gone.liveness_from(&host, &ns), Liveness::Dead);
        // The same dead-looking owner seen from another container or host: foreign.
        assert!(matches!(
            gone.liveness_from(&host, "pid:[1]"),
            Liveness::Foreign(w) if w.contains("pid namespace")
        ));
        assert!(matches!(
            gone.liveness_from("another", &ns),
            Liveness::Foreign(w) if w.contains("another host")
        ));
        // An older kiln's owner line (no host, no namespace): not judged.
        let old = Owner::parse(&format!("pid=1 boot={} start=1", me.boot_id)).unwrap();
        assert!(matches!(old.liveness(), Liveness::Foreign(_)));
    }
}
