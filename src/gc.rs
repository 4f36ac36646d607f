//! `kiln gc`: what builds that died (SIGKILL, a crash, a power cut) left behind: libvirt
//! domains, staging directories in a catalog, bootstrap scratch directories and partial
//! downloads and pulls in the cache, partial conversions. Only what kiln made, and only when
//! its owner (pid, boot id and start time, see `owner`) is gone: a live build's resources are
//! reported and kept, and so is what another host or pid namespace made (a container sharing
//! libvirtd, the catalog or the cache), unless `--force-foreign` says otherwise.

use std::path::{Path, PathBuf};

use crate::libvirt::Libvirt;
use crate::owner::{self, Liveness, Owner};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Domain(String),
    Dir(PathBuf),
    File(PathBuf),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Domain(n) => write!(f, "domain {n}"),
            Item::Dir(p) => write!(f, "directory {}", p.display()),
            Item::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Orphans (removed unless this was a dry run).
    pub orphans: Vec<Item>,
    /// Resources of builds that still run, with their owner.
    pub live: Vec<(Item, String)>,
    /// Resources this process cannot judge (another host or pid namespace made them), with
    /// why; removed (and listed in `orphans` too) only with `force_foreign`.
    pub foreign: Vec<(Item, String)>,
    /// What could not be looked at or removed.
    pub errors: Vec<String>,
}

/// The pid in a name that ends in `-PID` or `.part-PID`, or `-PID-RANDOM` (staging).
fn pid_in(name: &str, staging: bool) -> Option<u32> {
    let mut parts = name.rsplit('-');
    if staging {
        parts.next()?;
    }
    parts.next()?.parse().ok()
}

/// Dead or alive: by the owner file when there is one, else by the pid in the name.
fn dir_owner(dir: &Path, pid: Option<u32>) -> (Liveness, String) {
    match Owner::read_from(dir) {
        Some(o) => (o.liveness(), o.encode()),
        None => match pid {
            Some(p) => (owner::pid_only_liveness(p, dir), format!("pid={p}")),
            // Neither: not knowably kiln's leftover.
            None => (Liveness::Alive, "unknown owner".into()),
        },
    }
}

/// A partial file (`.NAME.part-PID`: a conversion or a download): dead or alive by its pid.
fn part_file(p: PathBuf) -> Option<(Item, Liveness, String)> {
    let n = name_of(&p);
    if !(n.starts_with('.') && n.contains(".part-")) {
        return None;
    }
    let pid = pid_in(&n, false)?;
    let l = owner::pid_only_liveness(pid, &p);
    Some((Item::File(p), l, format!("pid={pid}")))
}

/// A pull from the remote cache (`.pull-KEY-PID/`) or a commit (`.tmp-KEY-PID/`) in `dir`.
fn transfers(dir: &Path) -> Vec<(Item, Liveness, String)> {
    entries(dir)
        .into_iter()
        .filter(|p| {
            let n = name_of(p);
            (n.starts_with(".pull-") || n.starts_with(".tmp-")) && p.is_dir()
        })
        .map(|p| {
            let (l, who) = dir_owner(&p, pid_in(&name_of(&p), false));
            (Item::Dir(p), l, who)
        })
        .collect()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Find (and unless `dry_run`, remove) orphans: domains on `lv`, staging directories and
/// partial conversions in each catalog of `out_roots`, scratch and partial downloads in `cache`,
/// the build VMs' directories in `vm_root`.
pub fn collect(
    lv: Option<&Libvirt>,
    out_roots: &[PathBuf],
    cache: &Path,
    vm_root: &Path,
    dry_run: bool,
    force_foreign: bool,
) -> Report {
    let mut r = Report::default();
    let mut found: Vec<(Item, Liveness, String)> = Vec::new();

    if let Some(lv) = lv {
        match lv.kiln_domains() {
            Ok(doms) => {
                for (name, o, _active) in doms {
                    match o {
                        Some(o) => found.push((Item::Domain(name), o.liveness(), o.encode())),
                        // A domain whose owner was not recorded: not judged from here.
                        None => found.push((
                            Item::Domain(name),
                            Liveness::Foreign("no owner recorded".into()),
                            "no owner recorded".into(),
                        )),
                    }
                }
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    for root in out_roots {
        for p in entries(root) {
            let n = name_of(&p);
            if n.starts_with(".kiln-staging-") && p.is_dir() {
                let (l, who) = dir_owner(&p, pid_in(&n, true));
                found.push((Item::Dir(p), l, who));
            } else if n.starts_with('.') && n.ends_with(".lock") && p.is_file() {
                // A build's lock: stale when nobody holds it (removed under the lock).
                let res = if dry_run {
                    crate::outdir::try_lock_file(&p).map(|f| f.is_some())
                } else {
                    crate::outdir::remove_stale_lock(&p)
                };
                match res {
                    Ok(true) => r.orphans.push(Item::File(p)),
                    Ok(false) => r
                        .live
                        .push((Item::File(p), "held by a running build".into())),
                    Err(e) => r.errors.push(e.to_string()),
                }
            } else {
                found.extend(part_file(p));
            }
        }
    }
    // The build VMs' directories (when qemu runs as libvirt's own user).
    for p in entries(vm_root) {
        let n = name_of(&p);
        if !n.starts_with('.') && p.is_dir() {
            let (l, who) = dir_owner(&p, pid_in(&n, true));
            found.push((Item::Dir(p), l, who));
        }
    }
    // Stage cache entries being committed or pulled when their build died.
    found.extend(transfers(&cache.join("stages")));
    let boot = cache.join("bootstrap");
    for p in entries(&boot) {
        let n = name_of(&p);
        if n.starts_with(".build-") && p.is_dir() {
            let (l, who) = dir_owner(&p, pid_in(&n, false));
            found.push((Item::Dir(p), l, who));
        }
    }
    // Base disks pulled from the remote land beside the bootstrapped and downloaded ones.
    found.extend(transfers(&boot));
    found.extend(transfers(&crate::fetch::downloads_dir(cache)));
    // Partial downloads are written beside the verified ones.
    for dir in [crate::fetch::downloads_dir(cache), cache.to_path_buf()] {
        for p in entries(&dir) {
            if p.is_file() {
                found.extend(part_file(p));
            }
        }
    }

    for (item, liveness, who) in found {
        match liveness {
            Liveness::Alive => {
                r.live.push((item, who));
                continue;
            }
            Liveness::Foreign(why) => {
                r.foreign.push((item.clone(), format!("{why}; {who}")));
                if !force_foreign {
                    continue;
                }
            }
            Liveness::Dead => {}
        }
        if !dry_run {
            let res = match &item {
                Item::Domain(n) => lv
                    .map(|lv| lv.destroy_and_undefine(n).map_err(|e| e.to_string()))
                    .unwrap_or(Ok(())),
                Item::Dir(p) => {
                    std::fs::remove_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))
                }
                Item::File(p) => {
                    std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display()))
                }
            };
            if let Err(e) = res {
                r.errors.push(format!("removing {item}: {e}"));
                continue;
            }
        }
        r.orphans.push(item);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_come_out_of_kiln_names() {
        assert_eq!(
            pid_in(".kiln-staging-debian-12-1-4242-a1b2c3d4", true),
            Some(4242)
        );
        assert_eq!(pid_in(".sha256-ab12.part-77", false), Some(77));
        assert_eq!(pid_in(".build-0123abcd-99", false), Some(99));
        assert_eq!(pid_in("kiln-kvm-probe-5", false), Some(5));
        assert_eq!(pid_in("kiln-debian-1a2b3c4d", false), None);
    }

    #[test]
    fn partial_downloads_of_dead_builds_are_found_where_downloads_go() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let images = crate::fetch::downloads_dir(&cache);
        std::fs::create_dir_all(&images).unwrap();
        let dead_pid = (100_000..4_000_000)
            .find(|p| !Path::new(&format!("/proc/{p}")).exists())
            .unwrap();
        let dead = images.join(format!(".sha256-ab.part-{dead_pid}"));
        let live = images.join(format!(".sha256-cd.part-{}", std::process::id()));
        let done = images.join("sha256-ab");
        for f in [&dead, &live, &done] {
            std::fs::write(f, "x").unwrap();
        }
        // Left alone for an hour: a dead build's (a live transfer writes all the time).
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let r = collect(None, &[], &cache, &root.path().join("vm"), false, false);
        assert_eq!(r.orphans, vec![Item::File(dead.clone())]);
        assert!(!dead.exists() && live.exists() && done.exists());
    }

    #[test]
    fn live_and_dead_directories_are_told_apart() {
        let root = tempfile::tempdir().unwrap();
        let live = root.path().join(".kiln-staging-x-1-1-aa");
        let dead = root.path().join(".kiln-staging-x-1-2-bb");
        let theirs = root.path().join("x-1");
        for d in [&live, &dead, &theirs] {
            std::fs::create_dir_all(d).unwrap();
        }
        Owner::current().write_into(&live).unwrap();
        Owner {
            start: Owner::current().start + 1,
            ..Owner::current()
        }
        .write_into(&dead)
        .unwrap();
        let r = collect(
            None,
            &[root.path().to_path_buf()],
            &root.path().join("cache"),
            &root.path().join("vm"),
            true,
            false,
        );
        assert_eq!(r.orphans, vec![Item::Dir(dead.clone())]);
        assert_eq!(r.live.len(), 1);
        assert!(dead.exists(), "a dry run removes nothing");
        let r = collect(
            None,
            &[root.path().to_path_buf()],
            &root.path().join("cache"),
            &root.path().join("vm"),
            false,
            false,
        );
        assert_eq!(r.orphans, vec![Item::Dir(dead.clone())]);
        assert!(!dead.exists() && live.exists() && theirs.exists());
    }

    /// What a build in another container (another pid namespace) sharing this catalog and
    /// cache left is listed and kept, however dead its pid looks from here; `force_foreign`
    /// removes it. A pull of a dead build is collected.
    #[test]
    fn another_namespaces_leftovers_are_kept_unless_forced() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let theirs = root.path().join(".kiln-staging-x-1-3-cc");
        std::fs::create_dir_all(&theirs).unwrap();
        Owner {
            pid: 1,
            start: 1,
            pidns: Some("pid:[1]".into()),
            ..Owner::current()
        }
        .write_into(&theirs)
        .unwrap();
        let dead_pid = (100_000..4_000_000)
            .find(|p| !Path::new(&format!("/proc/{p}")).exists())
            .unwrap();
        // A pull by a dead build of this namespace (its owner file says so).
        let pull = cache.join(format!("stages/.pull-0123456789abcdef-{dead_pid}"));
        std::fs::create_dir_all(&pull).unwrap();
        Owner {
            pid: dead_pid,
            ..Owner::current()
        }
        .write_into(&pull)
        .unwrap();
        // A fresh partial file whose pid is nobody here: perhaps a live one elsewhere.
        let images = crate::fetch::downloads_dir(&cache);
        std::fs::create_dir_all(&images).unwrap();
        let part = images.join(format!(".sha256-ef.part-{dead_pid}"));
        std::fs::write(&part, "x").unwrap();
        let roots = [root.path().to_path_buf()];
        let vm = root.path().join("vm");
        let r = collect(None, &roots, &cache, &vm, false, false);
        assert_eq!(r.orphans, vec![Item::Dir(pull.clone())]);
        let kept: Vec<&Item> = r.foreign.iter().map(|(i, _)| i).collect();
        assert_eq!(
            kept,
            [&Item::Dir(theirs.clone()), &Item::File(part.clone())]
        );
        assert!(theirs.exists() && part.exists() && !pull.exists());
        let r = collect(None, &roots, &cache, &vm, false, true);
        assert_eq!(r.orphans.len(), 2);
        assert!(!theirs.exists() && !part.exists());
    }
}
