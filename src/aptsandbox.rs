//! Package resolution on the host for apt guests: the host's apt, in a sandbox directory that
//! holds only the guest's package state (dpkg status, architectures, auto marks), its sources,
//! keyrings and pins, resolves the recipe's packages and downloads the .debs natively; apt
//! verifies them against the archive's signed Release files as it would in the guest. The
//! guest then installs them from the seed, without `apt-get update` (under emulation that is
//! most of a provisioning boot: reading package lists, not installing).
//!
//! Nothing of the guest's apt configuration that can run commands (apt.conf.d hooks) reaches
//! the host: the sandbox's apt reads only its own generated configuration.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::inspect::View;
use crate::process::{self, Cancel, Opts};

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// The guest or the host cannot do this: the packages are installed in the guest instead.
    #[error("{0}")]
    Unsupported(String),
    /// `apt-get update` failed on the host (network, keys): the guest may still reach its
    /// sources, so it installs them itself.
    #[error("apt-get update on the host failed: {0}")]
    Update(process::CommandError),
    /// apt could not resolve or download the packages: the guest would fail the same way.
    #[error("resolving the packages with the guest's apt state failed: {0}")]
    Resolve(process::CommandError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the sandbox copies from the guest.
#[derive(Debug, Clone, Default)]
pub struct GuestApt {
    pub arch: String,
    pub foreign: Vec<String>,
    /// Packages installed in the guest (`name` for the native architecture and `all`,
    /// `name:arch` otherwise).
    pub installed: BTreeSet<String>,
    /// (path under the sandbox, content): status, sources (signed-by paths rewritten), keys.
    files: Vec<(String, Vec<u8>)>,
}

/// The guest's files the sandbox needs, read from a view of its filesystem. Unsupported when
/// it has no dpkg database or no apt.
pub fn read_guest(v: &dyn View, sandbox: &Path) -> Result<GuestApt, AptError> {
    let unsupported = |m: &str| AptError::Unsupported(m.to_string());
    let status = v
        .read("/var/lib/dpkg/status")
        .ok_or_else(|| unsupported("the guest has no dpkg database"))?;
    if !v.exists("/usr/bin/apt-get") {
        return Err(unsupported("the guest has no apt-get"));
    }
    let status_text = String::from_utf8_lossy(&status).into_owned();
    let archs = v
        .read("/var/lib/dpkg/arch")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut archs = archs.split_whitespace().map(String::from);
    let arch = match archs.next() {
        Some(a) => a,
        None => dpkg_arch(&status_text)
            .ok_or_else(|| unsupported("the guest's architecture is unknown"))?,
    };
    let foreign: Vec<String> = archs.collect();
    let installed = installed(&status_text, &arch);

    let guest_root = sandbox.join("guest");
    let mut files = vec![("status".to_string(), status)];
    if let Some(b) = v.read("/var/lib/apt/extended_states") {
        files.push(("state/extended_states".into(), b));
    }
    let mut keys = BTreeSet::new();
    let mut sources = Vec::new();
    if let Some(b) = v.read("/etc/apt/sources.list") {
        sources.push(("sources.list".to_string(), b));
    }
    let mut listed = v.list("/etc/apt/sources.list.d");
    listed.sort();
    for name in listed {
        if name.ends_with(".list") || name.ends_with(".sources") {
            if let Some(b) = v.read(&format!("/etc/apt/sources.list.d/{name}")) {
                sources.push((format!("sources.list.d/{name}"), b));
            }
        }
    }
    if sources.is_empty() {
        return Err(unsupported("the guest has no apt sources"));
    }
    for (rel, body) in sources {
        let text = String::from_utf8_lossy(&body);
        // The host's apt would read file:, copy: or cdrom: sources from the host itself.
        if let Some(u) = source_uris(&text, rel.ends_with(".sources"))
            .into_iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(AptError::Unsupported(format!(
                "the guest's apt sources include {u}: only http(s) sources are resolved on the host"
            )));
        }
        let (text, used) = if rel.ends_with(".sources") {
            rewrite_deb822(&text, &guest_root)
        } else {
            rewrite_one_line(&text, &guest_root)
        };
        keys.extend(used);
        files.push((format!("etc/apt/{rel}"), text.into_bytes()));
    }
    if let Some(b) = v.read("/etc/apt/trusted.gpg") {
        files.push(("etc/apt/trusted.gpg".into(), b));
    }
    for name in v.list("/etc/apt/trusted.gpg.d") {
        if name.ends_with(".gpg") || name.ends_with(".asc") {
            if let Some(b) = v.read(&format!("/etc/apt/trusted.gpg.d/{name}")) {
                files.push((format!("etc/apt/trusted.gpg.d/{name}"), b));
            }
        }
    }
    for key in keys {
        if let Some(b) = v.read(&key) {
            files.push((format!("guest{key}"), b));
        }
    }
    if let Some(b) = v.read("/etc/apt/preferences") {
        files.push(("etc/apt/preferences".into(), b));
    }
    for name in v.list("/etc/apt/preferences.d") {
        if let Some(b) = v.read(&format!("/etc/apt/preferences.d/{name}")) {
            files.push((format!("etc/apt/preferences.d/{name}"), b));
        }
    }
    Ok(GuestApt {
        arch,
        foreign,
        installed,
        files,
    })
}

/// The architecture of the guest's dpkg package (images without /var/lib/dpkg/arch).
fn dpkg_arch(status: &str) -> Option<String> {
    crate::inventory::dpkg_installed(status)
        .find(|f| f.get("Package") == Some(&"dpkg"))
        .and_then(|f| f.get("Architecture").map(|a| a.to_string()))
}

/// Installed packages of a dpkg status file, named as `apt-mark` takes them.
pub fn installed(status: &str, native: &str) -> BTreeSet<String> {
    crate::inventory::dpkg_installed(status)
        .filter_map(|f| {
            let name = f.get("Package")?;
            Some(qualified(
                name,
                f.get("Architecture").copied().unwrap_or(native),
                native,
            ))
        })
        .collect()
}

fn qualified(name: &str, arch: &str, native: &str) -> String {
    if arch == native || arch == "all" {
        name.to_string()
    } else {
        format!("{name}:{arch}")
    }
}

/// A one-line sources file with every `signed-by=` path moved under `root`; the original
/// paths.
pub fn rewrite_one_line(text: &str, root: &Path) -> (String, Vec<String>) {
    let mut used = Vec::new();
    let mut out = String::new();
    for line in text.lines() {
        let (Some(open), Some(close)) = (line.find('['), line.find(']')) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if close < open || line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let opts: Vec<String> = line[open + 1..close]
            .split_whitespace()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("signed-by") => {
                    let vals: Vec<String> =
                        v.split(',').map(|p| relocate(p, root, &mut used)).collect();
                    format!("{k}={}", vals.join(","))
                }
                _ => o.to_string(),
            })
            .collect();
        out.push_str(&format!(
            "{}[{}]{}\n",
            &line[..open],
            opts.join(" "),
            &line[close + 1..]
        ));
    }
    (out, used)
}

/// A deb822 `.sources` file with the paths of every `Signed-By:` field moved under `root`
/// (an embedded key block stays as it is); the original paths.
pub fn rewrite_deb822(text: &str, root: &Path) -> (String, Vec<String>) {
    let mut used = Vec::new();
    let mut out = String::new();
    for line in text.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("signed-by") && !v.trim().is_empty() => {
                let vals: Vec<String> = v
                    .split([' ', '\t', ','])
                    .filter(|t| !t.is_empty())
                    .map(|p| relocate(p, root, &mut used))
                    .collect();
                out.push_str(&format!("{k}: {}\n", vals.join(" ")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    (out, used)
}

fn relocate(p: &str, root: &Path, used: &mut Vec<String>) -> String {
    if p.starts_with('/') && !p.contains("/../") {
        used.push(p.to_string());
        format!("{}{p}", root.display())
    } else {
        p.to_string()
    }
}

/// The URIs of a sources file (one-line or deb822), comments left out.
pub fn source_uris(text: &str, deb822: bool) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if deb822 {
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("uris") {
                    out.extend(v.split_whitespace().map(String::from));
                }
            }
            continue;
        }
        let mut rest = match line.split_once(char::is_whitespace) {
            Some(("deb" | "deb-src", r)) => r.trim_start(),
            _ => continue,
        };
        if rest.starts_with('[') {
            rest = rest.split_once(']').map_or("", |(_, r)| r.trim_start());
        }
        if let Some(u) = rest.split_whitespace().next() {
            out.push(u.to_string());
        }
    }
    out
}

/// The sandbox's only apt configuration (APT_CONFIG): every directory inside it, the guest's
/// architectures, no translations, no recommends (as kiln installs in the guest), downloads as
/// root (the sandbox is root's), no lock on the host's dpkg.
pub fn apt_conf(sandbox: &Path, arch: &str, foreign: &[String]) -> Result<String, String> {
    use crate::quote::apt_conf as q;
    let dir = |rel: &str| q(&format!("{}/{rel}", sandbox.display()));
    let mut archs = vec![q(arch)?];
    for a in foreign {
        archs.push(q(a)?);
    }
    Ok(format!(
        "Dir {};\n\
         Dir::Etc {};\n\
         Dir::Etc::main \"apt.conf\";\n\
         Dir::Etc::parts \"apt.conf.d/\";\n\
         Dir::State {};\n\
         Dir::State::status {};\n\
         Dir::Cache {};\n\
         Dir::Log {};\n\
         APT::Architecture {};\n\
         APT::Architectures {{ {}; }};\n\
         APT::Install-Recommends \"false\";\n\
         APT::Sandbox::User \"root\";\n\
         Acquire::Languages \"none\";\n",
        dir("")?,
        dir("etc/apt/")?,
        dir("state/")?,
        dir("status")?,
        dir("cache/")?,
        dir("log/")?,
        archs[0],
        archs.join("; ")
    ))
}

pub fn update_argv() -> Vec<String> {
    ["apt-get", "-q", "update"].map(String::from).to_vec()
}

/// Resolve and download `packages` (the recipe's words, checked as package specs) into the
/// sandbox's archive directory.
pub fn download_argv(packages: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "apt-get",
        "-q",
        "-y",
        "--no-install-recommends",
        "--download-only",
        "install",
        "--",
    ]
    .map(String::from)
    .to_vec();
    v.extend(packages.iter().cloned());
    v
}

/// A requested package spec (`name`, `name=version`, `name/suite`, `name:arch`) as apt-mark
/// names it.
pub fn spec_name(spec: &str) -> &str {
    spec.split(['=', '/']).next().unwrap_or(spec)
}

/// The package a .deb file name carries (`name_version_arch.deb`), qualified like `installed`.
pub fn deb_package(file: &str, native: &str) -> Option<String> {
    let stem = file.strip_suffix(".deb")?;
    let mut parts = stem.split('_');
    let (name, _ver, arch) = (parts.next()?, parts.next()?, parts.next()?);
    Some(qualified(name, arch, native))
}

/// What the guest installs: the .deb files, the packages apt pulled in that were not there
/// before (marked automatically installed, as an in-guest `apt-get install` marks them), and
/// the requested packages the guest already had (marked manual, the same).
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub debs: Vec<PathBuf>,
    pub auto: Vec<String>,
    pub manual: Vec<String>,
}

/// Split what apt downloaded into the marks an in-guest install would leave.
pub fn marks(
    downloaded: &[String],
    requested: &[String],
    installed: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let req: BTreeSet<&str> = requested.iter().map(|s| spec_name(s)).collect();
    let auto = downloaded
        .iter()
        .filter(|d| !req.contains(d.as_str()) && !installed.contains(d.as_str()))
        .cloned()
        .collect();
    let manual = req
        .iter()
        .filter(|r| installed.contains(**r))
        .map(|r| r.to_string())
        .collect();
    (auto, manual)
}

/// Build the sandbox in `dir` from the guest's files, update it and download `packages`.
pub fn resolve(
    guest: &GuestApt,
    dir: &Path,
    packages: &[String],
    cancel: &Cancel,
) -> Result<Resolved, AptError> {
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err(AptError::Unsupported("the host has no apt-get".into()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AptError::Io { path, source }
    };
    for sub in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "etc/apt/trusted.gpg.d",
        "state/lists/partial",
        "cache/archives/partial",
        "log",
    ] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
    }
    for (rel, body) in &guest.files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&p, body).map_err(io(&p))?;
    }
    let conf = dir.join("apt.conf");
    let text = apt_conf(dir, &guest.arch, &guest.foreign).map_err(AptError::Unsupported)?;
    std::fs::write(&conf, text).map_err(io(&conf))?;
    let opts = || Opts {
        env: vec![
            ("APT_CONFIG".into(), conf.display().to_string()),
            ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
        ],
        ..Opts::default()
    };
    process::run(&update_argv(), &opts(), cancel).map_err(AptError::Update)?;
    process::run(&download_argv(packages), &opts(), cancel).map_err(AptError::Resolve)?;
    let archives = dir.join("cache/archives");
    let mut debs = Vec::new();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&archives).map_err(io(&archives))? {
        let e = e.map_err(io(&archives))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pkg) = deb_package(&name, &guest.arch) {
            debs.push(e.path());
            names.push(pkg);
        }
    }
    debs.sort();
    names.sort();
    let (auto, manual) = marks(&names, packages, &guest.installed);
    Ok(Resolved { debs, auto, manual })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: i386\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\n\n\
Package: base-files\nStatus: install ok installed\nArchitecture: all\n";

    #[test]
    fn installed_packages_are_named_as_apt_mark_takes_them() {
        let got: Vec<String> = installed(STATUS, "amd64").into_iter().collect();
        assert_eq!(got, ["base-files", "dpkg", "libc6:i386"]);
        assert_eq!(dpkg_arch(STATUS).as_deref(), Some("amd64"));
    }

    #[test]
    fn signed_by_paths_move_into_the_sandbox() {
        let root = Path::new("/sb/guest");
        let (text, used) = rewrite_one_line(
            "# deb [signed-by=/x] http://c main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/a.gpg] http://m/debian bookworm main\n\
             deb http://m/debian bookworm-updates main\n",
            root,
        );
        assert_eq!(
            text,
            "# deb [signed-by=/x] http://c main\n\
             deb [arch=amd64 signed-by=/sb/guest/usr/share/keyrings/a.gpg] http://m/debian bookworm main\n\
             deb http://m/debian bookworm-updates main\n"
        );
        assert_eq!(used, ["/usr/share/keyrings/a.gpg"]);
        let (text, used) = rewrite_deb822(
            "Types: deb\nURIs: http://m/debian\nSuites: bookworm\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: http://x\nSuites: s\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n",
            root,
        );
        assert!(
            text.contains("Signed-By: /sb/guest/usr/share/keyrings/debian-archive-keyring.gpg\n")
        );
        assert!(text.contains("Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n"));
        assert_eq!(used, ["/usr/share/keyrings/debian-archive-keyring.gpg"]);
    }

    #[test]
    fn source_uris_of_both_formats() {
        assert_eq!(
            source_uris(
                "deb [signed-by=/k] http://m/debian bookworm main\n# deb file:/x ./\n\
                 deb-src https://m/debian bookworm main\ndeb file:/srv/repo ./\n",
                false
            ),
            ["http://m/debian", "https://m/debian", "file:/srv/repo"]
        );
        assert_eq!(
            source_uris(
                "Types: deb\nURIs: http://a https://b\n#URIs: file:/c\n",
                true
            ),
            ["http://a", "https://b"]
        );
    }

    #[test]
    fn the_sandbox_reads_only_its_own_configuration() {
        let c = apt_conf(Path::new("/w/apt"), "amd64", &["i386".into()]).unwrap();
        assert!(c.contains("Dir::Etc \"/w/apt/etc/apt/\";"));
        assert!(c.contains("Dir::State::status \"/w/apt/status\";"));
        assert!(c.contains("APT::Architecture \"amd64\";"));
        assert!(c.contains("APT::Architectures { \"amd64\"; \"i386\"; };"));
        assert!(c.contains("Acquire::Languages \"none\";"));
        // An architecture name cannot end the string and add configuration.
        assert!(apt_conf(Path::new("/w"), "amd64\"; Dir \"/", &[]).is_err());
    }

    #[test]
    fn argv_and_names() {
        assert_eq!(update_argv().join(" "), "apt-get -q update");
        assert_eq!(
            download_argv(&["jq".into(), "tree=2.1.0-1".into()]).join(" "),
            "apt-get -q -y --no-install-recommends --download-only install -- jq tree=2.1.0-1"
        );
        assert_eq!(spec_name("tree=2.1.0-1"), "tree");
        assert_eq!(spec_name("tree/bookworm-backports"), "tree");
        assert_eq!(spec_name("libc6:i386"), "libc6:i386");
        assert_eq!(
            deb_package("libjq1_1.6-2.1_amd64.deb", "amd64").as_deref(),
            Some("libjq1")
        );
        assert_eq!(
            deb_package("libc6_2.36-9_i386.deb", "amd64").as_deref(),
            Some("libc6:i386")
        );
        assert_eq!(
            deb_package("tzdata_2024a-0%2bdeb12u1_all.deb", "amd64").as_deref(),
            Some("tzdata")
        );
        assert_eq!(deb_package("lock", "amd64"), None);
    }

    #[test]
    fn dependencies_new_to_the_guest_are_marked_automatic() {
        let installed: BTreeSet<String> = ["libc6", "tree"].map(String::from).into();
        let (auto, manual) = marks(
            &["jq", "libjq1", "libonig5", "libc6"].map(String::from),
            &["jq".into(), "tree".into()],
            &installed,
        );
        assert_eq!(auto, ["libjq1", "libonig5"]);
        assert_eq!(manual, ["tree"]);
    }
}
