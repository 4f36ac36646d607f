//! What kiln reads out of a guest, as data: the types its listings return and the pure
//! parsers of passwd, fstab and os-release (table-tested).

/// What lstat says about one path (the fields a diff compares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// One package of an rpm database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    pub epoch: i32,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub source: Option<String>,
}

/// One partition of the disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    pub device: String,
    pub number: i32,
    pub start: u64,
    pub size: u64,
    /// GPT type GUID or MBR type id.
    #[serde(rename = "type")]
    pub kind: String,
    /// MBR active flag.
    pub bootable: bool,
}

/// (spec, mountpoint, type, options) of fstab's entries.
/// One /etc/passwd line that has all seven fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The accounts of a passwd file (lines without seven fields or numeric ids are skipped).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

pub fn fstab_entries(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| {
                (
                    f[0].to_string(),
                    f[1].to_string(),
                    f[2].to_string(),
                    f.get(3).unwrap_or(&"defaults").to_string(),
                )
            })
        })
        .collect()
}

/// libguestfs 1.48's distro name and package manager for an os-release file; None for
/// distributions kiln does not map (inspect_os decides those).
pub fn distro_from_os_release(text: &str) -> Option<(String, String)> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
    };
    let id = get("ID")?;
    let major: u32 = get("VERSION_ID")
        .and_then(|v| v.split('.').next().and_then(|m| m.parse().ok()))
        .unwrap_or(0);
    let rpm = |distro: &str| {
        let pm = if major >= 8 { "dnf" } else { "yum" };
        Some((distro.to_string(), pm.to_string()))
    };
    match id.as_str() {
        "debian" | "ubuntu" | "kali" | "linuxmint" => {
            let d = if id == "kali" {
                "kalilinux"
            } else {
                id.as_str()
            };
            Some((d.to_string(), "apt".to_string()))
        }
        "fedora" => Some(("fedora".into(), "dnf".into())),
        "rhel" | "centos" | "rocky" => rpm(&id),
        "ol" => rpm("oraclelinux"),
        _ => None,
    }
}
