//! Who made a resource: the process id, the boot it ran in and the process's start time, so
//! that `kiln gc` can tell a dead build's leftovers from a live build's (a pid alone is reused,
//! and means nothing after a reboot).

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
        }
    }

    /// `pid=… boot=… start=…`: one line, for files and domain metadata.
    pub fn encode(&self) -> String {
        format!(
            "pid={} boot={} start={}",
            self.pid, self.boot_id, self.start
        )
    }

    pub fn parse(s: &str) -> Option<Owner> {
        let mut pid = None;
        let mut boot = None;
        let mut start = None;
        for w in s.split_whitespace() {
            match w.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("boot", v)) => boot = Some(v.to_string()),
                Some(("start", v)) => start = v.parse().ok(),
                _ => {}
            }
        }
        Some(Owner {
            pid: pid?,
            boot_id: boot?,
            start: start?,
        })
    }

    /// Is the process that made this still running? Same boot, same pid, same start time.
    pub fn is_alive(&self) -> bool {
        self.boot_id == boot_id() && start_ticks(self.pid) == Some(self.start)
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

/// Was a file or directory that carries only a pid (`….part-PID`) left by a dead process?
/// Dead when no such process runs, or when it is older than this boot (the pid is another
/// process's now). A running process of that pid keeps it: never a live build's.
pub fn pid_is_dead(pid: u32, path: &Path) -> bool {
    if start_ticks(pid).is_none() {
        return true;
    }
    let boot = boot_time();
    let mtime = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok();
    matches!((boot, mtime), (Some(b), Some(m)) if m < b)
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
}
