//! `kiln cache` (the stage cache) and `kiln gc` (what dead builds left).

use std::path::PathBuf;

use super::*;

pub(super) fn cache_cmd(cache_dir: Option<PathBuf>, command: CacheCommand) -> i32 {
    use crate::progress::human_bytes as h;
    let store = crate::stagecache::Store::new(
        &cache_dir.unwrap_or_else(|| super::tunables().cache_dir.clone()),
    );
    let ago = |e: &crate::stagecache::Entry| {
        let s = e.last_used().elapsed().map(|d| d.as_secs()).unwrap_or(0);
        match s {
            0..=119 => format!("{s} s ago"),
            120..=7199 => format!("{} min ago", s / 60),
            7200..=172_799 => format!("{} h ago", s / 3600),
            _ => format!("{} days ago", s / 86400),
        }
    };
    match command {
        CacheCommand::List { format } => {
            let all = store.list();
            if format == PlanFormat::Json {
                let v: Vec<serde_json::Value> = all
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "key": e.meta.key, "stage": e.meta.stage, "size": e.meta.size,
                            "created": e.meta.created, "depends_on": e.meta.depends_on,
                            "files": e.meta.files,
                            "last_used": e.last_used().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
                return exit::OK;
            }
            outln!(
                "{:<16}  {:<9} {:>10}  {:<14}  builds on",
                "KEY",
                "STAGE",
                "SIZE",
                "LAST USED"
            );
            for e in &all {
                outln!(
                    "{:<16}  {:<9} {:>10}  {:<14}  {}",
                    e.meta.key.short(),
                    safe(&e.meta.stage),
                    h(e.meta.size),
                    ago(e),
                    e.meta.depends_on.as_ref().map(|k| k.short()).unwrap_or("-")
                );
            }
            let total: u64 = all.iter().fold(0u64, |t, e| t.saturating_add(e.meta.size));
            outln!(
                "{} entries, {} in {}",
                all.len(),
                h(total),
                store.root.display()
            );
            exit::OK
        }
        CacheCommand::Show { key } => {
            let found: Vec<_> = store
                .list()
                .into_iter()
                .filter(|e| e.meta.key.0.starts_with(&key))
                .collect();
            match found.as_slice() {
                [e] => {
                    outln!("key:        {}", e.meta.key);
                    outln!("stage:      {}", safe(&e.meta.stage));
                    outln!("size:       {}", h(e.meta.size));
                    outln!("last used:  {}", ago(e));
                    outln!(
                        "builds on:  {}",
                        e.meta
                            .depends_on
                            .as_ref()
                            .map(|k| k.0.as_str())
                            .unwrap_or("-")
                    );
                    let id = |k: &Option<crate::stagecache::Key>| {
                        k.as_ref()
                            .map(|k| k.0.clone())
                            .unwrap_or_else(|| "-".into())
                    };
                    outln!("made on:    {}", id(&e.meta.built_on));
                    outln!("holds:      {}", id(&e.meta.content));
                    outln!("directory:  {}", safe(&e.dir.display().to_string()));
                    for f in &e.meta.files {
                        outln!("file:       {}", safe(f));
                    }
                    exit::OK
                }
                [] => usage_error(format!("no cache entry with key {key}")),
                _ => usage_error(format!(
                    "{key} names {} entries: give more digits",
                    found.len()
                )),
            }
        }
        CacheCommand::Prune { max_size } => {
            let max = match crate::recipe::parse_size(
                &crate::recipe::model::SizeSpec::Text(max_size.clone()),
                1,
            ) {
                Ok(m) => m,
                Err(e) => return usage_error(format!("{e} (e.g. 20G, 512M)")),
            };
            match store.prune(max) {
                Ok(gone) => {
                    for e in &gone {
                        outln!(
                            "evicted {} ({}, {})",
                            e.meta.key.short(),
                            e.meta.stage,
                            h(e.meta.size)
                        );
                    }
                    outln!("{} entries evicted", gone.len());
                    exit::OK
                }
                Err(e) => {
                    errln!("error: pruning {}: {e}", store.root.display());
                    exit::BUILD_FAILED
                }
            }
        }
        CacheCommand::Keygen { name, dir } => keygen(&name, &dir),
        CacheCommand::Clear => {
            let n = store.list().len();
            match std::fs::remove_dir_all(&store.root) {
                Ok(()) => {
                    outln!("removed {n} entries ({})", store.root.display());
                    exit::OK
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    outln!("removed 0 entries");
                    exit::OK
                }
                Err(e) => {
                    errln!("error: clearing {}: {e}", store.root.display());
                    exit::BUILD_FAILED
                }
            }
        }
    }
}

/// `kiln cache keygen`: the secret key only ever in a 0600 file (never printed), the public
/// key printed for the pulling machines' KILN_CACHE_TRUSTED_KEYS.
fn keygen(name: &str, dir: &std::path::Path) -> i32 {
    let (secret, public) = match crate::signing::generate(name) {
        Ok(k) => k,
        Err(e) => {
            errln!("error: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let (sf, pf) = (
        dir.join(format!("{name}.secret")),
        dir.join(format!("{name}.public")),
    );
    for f in [&sf, &pf] {
        if f.exists() {
            errln!("error: {} exists; kiln does not replace a key", f.display());
            return exit::INVALID_INPUT;
        }
    }
    let written = crate::hostfile::write_private(&sf, format!("{secret}\n").as_bytes())
        .and_then(|()| std::fs::write(&pf, format!("{public}\n")));
    if let Err(e) = written {
        errln!("error: writing the key pair into {}: {e}", dir.display());
        return exit::BUILD_FAILED;
    }
    outln!(
        "secret key: {} (KILN_CACHE_SIGNING_KEY on the machine that pushes)",
        sf.display()
    );
    outln!(
        "public key: {} (KILN_CACHE_TRUSTED_KEYS on the machines that pull):",
        pf.display()
    );
    outln!("{public}");
    exit::OK
}

pub(super) fn gc_cmd(
    output: Vec<PathBuf>,
    cache_dir: Option<PathBuf>,
    uri: &str,
    dry_run: bool,
    force_foreign: bool,
) -> i32 {
    let roots = if output.is_empty() {
        vec![PathBuf::from("kiln-output")]
    } else {
        output
    };
    let cache = cache_dir.unwrap_or_else(|| super::tunables().cache_dir.clone());
    let lv = match crate::libvirt::Libvirt::connect(uri) {
        Ok(lv) => Some(lv),
        Err(e) => {
            errln!("warning: {e}; domains are not collected");
            None
        }
    };
    let vm_root = super::tunables().vm_dir.clone();
    let r = crate::gc::collect(
        lv.as_ref(),
        &roots,
        &cache,
        &vm_root,
        dry_run,
        force_foreign,
    );
    let verb = if dry_run { "would remove" } else { "removed" };
    for item in &r.orphans {
        outln!("{verb} {}", safe(&item.to_string()));
    }
    for (item, owner) in &r.live {
        outln!(
            "kept {}: its build still runs ({})",
            safe(&item.to_string()),
            safe(&owner.to_string())
        );
    }
    if !force_foreign {
        for (item, why) in &r.foreign {
            outln!(
                "kept {}: {} (cannot tell from here whether it runs; --force-foreign removes it)",
                safe(&item.to_string()),
                safe(&why.to_string())
            );
        }
    }
    if r.orphans.is_empty() {
        outln!("nothing to collect");
    }
    for e in &r.errors {
        errln!("error: {}", safe(&e.to_string()));
    }
    if r.errors.is_empty() && lv.is_some() {
        exit::OK
    } else {
        exit::BUILD_FAILED
    }
}
