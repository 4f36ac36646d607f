//! `kiln diff A B`: what changed between two builds. Each side is a kiln output directory (its
//! SBOM for packages, its first qemu-bootable output for files and services), an image file, or
//! a root filesystem tree on the host. Exit 0 when nothing changed, 1 when something did (as
//! diff(1)), 2 on bad input.

use std::path::{Path, PathBuf};

use super::*;
use crate::imagediff::{self, Diff, Snapshot};
use crate::inventory::{self, Package};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The older build: a kiln output directory (NAME-VERSION with manifest.json), an image
    /// file, or a root filesystem directory.
    pub a: PathBuf,
    /// The newer build.
    pub b: PathBuf,
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Compare packages only, from the output directories' SBOMs (no image is opened).
    #[arg(long)]
    pub packages_only: bool,
    /// Hash every regular file of the same size on both sides, not only those whose mtime
    /// differs (finds same-size edits that kept the mtime; slower).
    #[arg(long)]
    pub checksum: bool,
    /// Compare the paths of the ignore list too (logs, caches, package database, …).
    #[arg(long)]
    pub all: bool,
    /// List the files of added, removed and changed packages too.
    #[arg(long)]
    pub package_files: bool,
    /// Accelerator for the libguestfs appliance.
    #[arg(long, value_enum, default_value_t = crate::vocab::Accel::Auto)]
    pub accel: crate::vocab::Accel,
    /// Always read images through libguestfs's appliance, not kiln's host reader.
    #[arg(long)]
    pub libguestfs: bool,
    /// A backing file an image may have besides A and B (repeat for a chain): kiln follows no
    /// backing file it was not named, as a crafted image can name any file on the host.
    #[arg(long, value_name = "FILE")]
    pub backing: Vec<PathBuf>,
}

/// What a side is read from once checked.
enum Read {
    Tree(PathBuf),
    Image(crate::diskread::Image),
}

/// One side of a diff.
#[derive(Debug, Clone)]
enum Side {
    /// A kiln output directory and the image in it (if any), with its format as the
    /// manifest records it (a raw output whose guest wrote a qcow2 header stays raw).
    Output(PathBuf, Option<(PathBuf, String)>),
    Image(PathBuf),
    Tree(PathBuf),
}

fn side(p: &Path) -> Result<Side, String> {
    if p.is_file() {
        return Ok(Side::Image(p.to_path_buf()));
    }
    if p.join("manifest.json").is_file() {
        return Ok(Side::Output(p.to_path_buf(), output_image(p)?));
    }
    if p.join("etc").is_dir() {
        return Ok(Side::Tree(p.to_path_buf()));
    }
    Err(format!(
        "{}: not a kiln output directory (no manifest.json), an image file or a root filesystem (no etc/)",
        p.display()
    ))
}

/// The output directory's first qcow2 or raw output, else its first output, and its format.
fn output_image(dir: &Path) -> Result<Option<(PathBuf, String)>, String> {
    let m = dir.join("manifest.json");
    let manifest: crate::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(&m).map_err(|e| format!("{}: {e}", m.display()))?)
            .map_err(|e| format!("{}: {e}", m.display()))?;
    let pick = manifest
        .outputs
        .iter()
        .find(|o| {
            crate::vocab::Format::from_qemu_img(&o.format).is_some_and(|f| f.facts().bootable)
        })
        .or(manifest.outputs.first());
    Ok(pick
        .filter(|o| !o.path.contains('/'))
        .map(|o| (dir.join(&o.path), o.format.clone()))
        .filter(|(p, _)| p.is_file()))
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffFormat {
    Text,
    Json,
}

/// The packages of an output directory, from the SBOM its manifest names.
fn packages(dir: &Path) -> Result<Vec<Package>, String> {
    let m = dir.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&m)
            .map_err(|e| format!("{}: {e} (a kiln output directory?)", m.display()))?,
    )
    .map_err(|e| format!("{}: {e}", m.display()))?;
    let Some(name) = manifest["inventory"]["sbom"].as_str() else {
        return Err(format!(
            "{}: no inventory (built by a kiln without SBOMs, or from a guest it could not read)",
            m.display()
        ));
    };
    if name.contains('/') {
        return Err(format!(
            "{}: the SBOM's name {name:?} is not a plain file name",
            m.display()
        ));
    }
    let p = dir.join(name);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(inventory::packages_from_spdx(&doc))
}

pub(super) fn diff_cmd(a: DiffArgs) -> i32 {
    let (sa, sb) = match (side(&a.a), side(&a.b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return usage_error(e),
    };
    if a.packages_only {
        let (Side::Output(da, _), Side::Output(db, _)) = (&sa, &sb) else {
            return usage_error(
                "--packages-only compares the SBOMs of two kiln output directories".to_string(),
            );
        };
        let (pa, pb) = match (packages(da), packages(db)) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => return usage_error(e),
        };
        let d = Diff {
            packages: inventory::diff_packages(&pa, &pb),
            ..Default::default()
        };
        match a.format {
            DiffFormat::Json => outln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "packages": d.packages }))
                    .expect("JSON")
            ),
            DiffFormat::Text => print_packages(&d),
        }
        return if d.is_empty() {
            exit::OK
        } else {
            exit::BUILD_FAILED
        };
    }
    for s in [&sa, &sb] {
        if let Side::Output(dir, None) = s {
            return usage_error(format!(
                "{}: no image output to open (only packages can be compared: --packages-only)",
                dir.display()
            ));
        }
    }
    let cancel = Cancel::new();
    // Images are checked before anything reads them: A and B may back each other, any other
    // backing file must be named.
    let allowed: Vec<PathBuf> = [a.a.clone(), a.b.clone()]
        .into_iter()
        .chain(a.backing.iter().cloned())
        .collect();
    let check = |p: PathBuf, format: Option<String>| -> Result<Read, String> {
        crate::imagefile::check(&p, format.as_deref(), &allowed, &cancel)
            .map(Read::Image)
            .map_err(|e| format!("reading {}: {e}", safe(&p.display().to_string())))
    };
    let mut reads = Vec::new();
    for s in [sa, sb] {
        let r = match s {
            Side::Tree(dir) => Ok(Read::Tree(dir)),
            Side::Image(p) => check(p, None),
            Side::Output(_, Some((p, format))) => check(p, Some(format)),
            Side::Output(..) => unreachable!("refused above"),
        };
        match r {
            Ok(r) => reads.push(r),
            Err(e) => return usage_error(e),
        }
    }
    let [ra, rb]: [Read; 2] = reads.try_into().ok().expect("two sides");
    // The KVM probe (possibly a probe VM) only once an appliance is really needed: the host
    // reader and root trees need none. Both workers share the one verdict.
    let tcg = std::sync::OnceLock::new();
    let tcg = || {
        *tcg.get_or_init(|| {
            crate::libvirt::probe::tcg_for_tools(
                a.accel,
                &super::tunables().cache_dir,
                crate::plan::DEFAULT_URI,
                &cancel,
            )
        })
    };
    // An image or tree that cannot be read is an error (2), not a difference (1).
    let d = match snapshots([ra, rb], &a, &tcg, &cancel) {
        Ok((x, y)) => imagediff::diff(&x, &y),
        Err(e) => return usage_error(safe(&e)),
    };
    match a.format {
        DiffFormat::Json => outln!("{}", serde_json::to_string_pretty(&d).expect("JSON")),
        DiffFormat::Text => {
            print_packages(&d);
            print_files(&d, a.package_files);
            print_identity(&d);
            let s = &d.services;
            outln!(
                "services: {} enabled, {} disabled, {} masked, {} unmasked",
                s.enabled.len(),
                s.disabled.len(),
                s.masked.len(),
                s.unmasked.len()
            );
            for (sign, list) in [
                ("+", &s.enabled),
                ("-", &s.disabled),
                ("masked", &s.masked),
                ("unmasked", &s.unmasked),
            ] {
                for u in list {
                    outln!("  {sign} {}", safe(u));
                }
            }
        }
    }
    if d.is_empty() {
        exit::OK
    } else {
        exit::BUILD_FAILED
    }
}

fn print_packages(d: &Diff) {
    let p = &d.packages;
    outln!(
        "packages: {} added, {} removed, {} changed",
        p.added.len(),
        p.removed.len(),
        p.changed.len()
    );
    for p in &p.added {
        outln!(
            "  + {}",
            safe(&format!("{} {} ({})", p.name, p.version, p.arch))
        );
    }
    for p in &p.removed {
        outln!(
            "  - {}",
            safe(&format!("{} {} ({})", p.name, p.version, p.arch))
        );
    }
    for (n, arch, from, to) in &p.changed {
        outln!("  ~ {}", safe(&format!("{n} {from} -> {to} ({arch})")));
    }
}

/// Host keys and machine-id: a golden image carries none, so any change is shown here.
fn print_identity(d: &Diff) {
    let f = &d.identity;
    outln!(
        "identity (host keys, machine-id): {} added, {} removed, {} changed",
        f.added.len(),
        f.removed.len(),
        f.changed.len()
    );
    for (sign, list) in [("+", &f.added), ("-", &f.removed)] {
        for c in list {
            outln!("  {sign} {} ({})", safe(&c.path), c.what.join(", "));
        }
    }
    for c in &f.changed {
        outln!("  ~ {}: {}", safe(&c.path), safe(&c.what.join(", ")));
    }
}

fn print_files(d: &Diff, package_files: bool) {
    let f = &d.files;
    let shown = |c: &&imagediff::FileChange| package_files || c.package.is_none();
    let of_packages = f
        .added
        .iter()
        .chain(&f.removed)
        .chain(&f.changed)
        .filter(|c| c.package.is_some())
        .count();
    let count = |v: &[imagediff::FileChange]| v.iter().filter(|c| c.package.is_none()).count();
    let tail = if of_packages > 0 && !package_files {
        format!(" (and {of_packages} of the changed packages: --package-files lists them)")
    } else if of_packages > 0 {
        format!(" (and {of_packages} of the changed packages)")
    } else {
        String::new()
    };
    outln!(
        "files: {} added, {} removed, {} changed{tail}",
        count(&f.added),
        count(&f.removed),
        count(&f.changed)
    );
    let owner = |c: &imagediff::FileChange| {
        c.package
            .as_deref()
            .map(|p| format!(" [{}]", safe(p)))
            .unwrap_or_default()
    };
    for c in f.added.iter().filter(shown) {
        outln!("  + {} ({}){}", safe(&c.path), c.what.join(", "), owner(c));
    }
    for c in f.removed.iter().filter(shown) {
        outln!("  - {} ({}){}", safe(&c.path), c.what.join(", "), owner(c));
    }
    for c in f.changed.iter().filter(shown) {
        outln!(
            "  ~ {}: {}{}",
            safe(&c.path),
            safe(&c.what.join(", ")),
            owner(c)
        );
    }
}

/// Both sides read in parallel (one appliance each), then the files metadata cannot decide
/// hashed on both.
fn snapshots(
    sides: [Read; 2],
    a: &DiffArgs,
    tcg: &(dyn Fn() -> bool + Sync),
    cancel: &Cancel,
) -> Result<(Snapshot, Snapshot), String> {
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    /// What the second round answers: hashes of the asked files, owners of changed packages'
    /// files.
    type Answer = (Vec<(String, String)>, BTreeMap<String, String>);
    std::thread::scope(|scope| {
        let mut snaps = Vec::new();
        let mut asks = Vec::new();
        let mut workers = Vec::new();
        for side in sides {
            let (snap_tx, snap_rx) = mpsc::channel::<Snapshot>();
            let (ask_tx, ask_rx) = mpsc::channel::<(Vec<String>, Vec<String>)>();
            snaps.push(snap_rx);
            asks.push(ask_tx);
            let all = a.all;
            let libguestfs = a.libguestfs;
            workers.push(scope.spawn(move || -> Result<Answer, String> {
                let work = |root: &dyn imagediff::Root| -> Result<Answer, String> {
                    snap_tx
                        .send(imagediff::snapshot(root, all)?)
                        .map_err(|_| "the other side failed".to_string())?;
                    let Ok((paths, packages)) = ask_rx.recv() else {
                        return Ok(Default::default());
                    };
                    let t0 = std::time::Instant::now();
                    let n = paths.len();
                    let hashes = paths
                        .into_iter()
                        .map(|p| root.sha256(&p).map(|h| (p, h)))
                        .collect::<Result<Vec<_>, String>>()?;
                    let owners = imagediff::package_files(root, &packages);
                    tracing::debug!(
                        "hashed {n} files, read the file lists of {} packages in {:.1?}",
                        packages.len(),
                        t0.elapsed()
                    );
                    Ok((hashes, owners))
                };
                match side {
                    Read::Tree(dir) => work(&imagediff::HostDir(&dir)),
                    Read::Image(img) => {
                        // The host reader where it can (as `kiln inspect`), else libguestfs;
                        // an image corrupt where kiln reads it is handed to neither.
                        if !libguestfs && (img.format == "raw" || img.format == "qcow2") {
                            match crate::inspect::open_host(&img, crate::inspect::Reach::Everything)
                            {
                                Ok((view, _)) => return work(&view),
                                Err(crate::inspect::HostError::Corrupt(why)) => return Err(why),
                                Err(why) => tracing::debug!(
                                    "host reader on {}: {why}; using libguestfs",
                                    img.path.display()
                                ),
                            }
                        }
                        let mut g =
                            crate::guest::Guest::open_readonly(&img.path, &img.format, tcg())
                                .map_err(|e| e.to_string())?;
                        g.kill_on_cancel(cancel);
                        let r = work(&g);
                        let _ = g.close();
                        r
                    }
                }
            }));
        }
        let received: Vec<Option<Snapshot>> = snaps.iter().map(|rx| rx.recv().ok()).collect();
        let mut failed = |workers: Vec<std::thread::ScopedJoinHandle<'_, _>>| {
            drop(std::mem::take(&mut asks));
            let errs: Vec<String> = workers
                .into_iter()
                .filter_map(|w| match w.join() {
                    Ok(Err(e)) => Some(e),
                    Ok(Ok(_)) => None,
                    Err(_) => Some("a diff worker panicked".into()),
                })
                .collect();
            errs.join("; ")
        };
        let (Some(mut x), Some(mut y)) = (received[0].clone(), received[1].clone()) else {
            return Err(failed(workers));
        };
        let paths = imagediff::to_hash(&x.tree, &y.tree, a.checksum);
        let packages = imagediff::touched_packages(&x.packages, &y.packages);
        for tx in &asks {
            let _ = tx.send((paths.clone(), packages.clone()));
        }
        let mut hashes = Vec::new();
        for w in workers {
            match w.join() {
                Ok(Ok(h)) => hashes.push(h),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a diff worker panicked".into()),
            }
        }
        for (snap, (hs, owners)) in [&mut x, &mut y].into_iter().zip(hashes) {
            snap.owners = owners;
            for (p, h) in hs {
                if let Some(e) = snap.tree.get_mut(&p) {
                    e.sha256 = Some(h);
                }
            }
        }
        Ok((x, y))
    })
}
