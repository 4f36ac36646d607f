//! `kiln convert`, `kiln sysprep` and `kiln info`: tools that work on any image.

use std::path::{Path, PathBuf};

use super::*;
use crate::vocab::Format;

pub(super) fn convert_cmd(a: ConvertArgs) -> i32 {
    use crate::convert::{self, Job};
    use crate::recipe::model::SizeSpec;
    if !a.src.is_file() {
        return usage_error(format!("source image {} does not exist", a.src.display()));
    }
    let mut formats: Vec<Format> = Vec::new();
    for f in &a.formats {
        if formats.contains(f) {
            return usage_error(format!("-O {} given twice", f.as_str()));
        }
        formats.push(*f);
    }
    let subformat = a.subformat;
    if let Some(sf) = subformat {
        if !formats.iter().any(|f| sf.fits(*f)) {
            return usage_error(format!(
                "--subformat {} fits none of the requested formats (vmdk: monolithicSparse, streamOptimized; vpc: dynamic, fixed)",
                sf.as_str()
            ));
        }
    }
    let compress = a.compress;
    if compress.is_some() && !formats.iter().any(|f| f.facts().compressible) {
        return usage_error("--compress applies to qcow2 only");
    }
    let cluster_size = match &a.cluster_size {
        None => None,
        Some(c) => match recipe::parse_size(&SizeSpec::Text(c.clone()), 1) {
            Ok(v) => Some(v),
            Err(m) => return usage_error(format!("--cluster-size: {m}")),
        },
    };
    let cancel = cancel_on_signals();
    let src_format =
        match crate::imagefile::check(&a.src, a.source_format.as_deref(), &a.backing, &cancel) {
            Ok(i) => i.format,
            Err(e) => {
                return usage_error(format!(
                    "cannot read {}: {e}",
                    safe(&a.src.display().to_string())
                ))
            }
        };
    let stem = a
        .src
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let src_dir = a.src.parent().map(Path::to_path_buf).unwrap_or_default();
    if let (Some(o), true) = (&a.output, formats.len() > 1) {
        if let Err(e) = std::fs::create_dir_all(o) {
            return usage_error(format!(
                "cannot create output directory {}: {e}",
                o.display()
            ));
        }
    }
    let mut jobs = Vec::new();
    for f in &formats {
        let out = crate::plan::OutputPlan {
            format: *f,
            subformat: subformat.filter(|s| s.fits(*f)),
            compress: compress.filter(|_| f.facts().compressible),
            cluster_size: cluster_size.filter(|_| f.facts().compressible),
        };
        if let Some(m) = out.check().into_iter().next() {
            return usage_error(m);
        }
        let file = format!("{stem}.{}", f.extension());
        let dst = match (&a.output, formats.len()) {
            (Some(o), 1) if !o.is_dir() => o.clone(),
            (Some(o), _) => o.join(&file),
            (None, _) => src_dir.join(&file),
        };
        if dst.exists() && !a.force {
            return usage_error(format!(
                "{} already exists (use --force to replace it)",
                dst.display()
            ));
        }
        if let Ok(same) = std::fs::canonicalize(&dst) {
            if std::fs::canonicalize(&a.src).ok() == Some(same) {
                return usage_error("the output would overwrite the source");
            }
        }
        if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return usage_error(format!(
                    "output directory {} does not exist",
                    parent.display()
                ));
            }
        }
        jobs.push(Job {
            src: a.src.clone(),
            src_format: src_format.clone(),
            out,
            dst,
            writer: super::tunables().vmdk_writer,
        });
    }
    if let Err(e) = convert::check_source(&a.src, &src_format, &cancel) {
        errln!("error: {e}");
        return exit::BUILD_FAILED;
    }
    let results = convert::convert_all(
        &jobs,
        a.jobs.unwrap_or_else(convert::default_jobs),
        false,
        &cancel,
    );
    let mut done = Vec::new();
    let mut failed = false;
    for (job, r) in jobs.iter().zip(results) {
        match r {
            Ok(c) => done.push((job.dst.clone(), c)),
            Err(e) => {
                failed = true;
                errln!("error: {e}");
            }
        }
    }
    if !write_sums(&done) {
        failed = true;
    }
    print_converted(&a, &done, &cancel);
    if cancel.is_cancelled() {
        exit::INTERRUPTED
    } else if failed {
        exit::BUILD_FAILED
    } else {
        exit::OK
    }
}

/// SHA256SUMS next to the outputs, per directory; false when one could not be written.
fn write_sums(done: &[(PathBuf, crate::convert::Converted)]) -> bool {
    use crate::convert;
    let mut ok = true;
    let mut dirs: Vec<PathBuf> = done
        .iter()
        .map(|(d, _)| d.parent().map(Path::to_path_buf).unwrap_or_default())
        .collect();
    dirs.dedup();
    for d in dirs {
        let here: Vec<convert::Converted> = done
            .iter()
            .filter(|(p, _)| p.parent().map(Path::to_path_buf).unwrap_or_default() == d)
            .map(|(p, c)| convert::Converted {
                path: p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                ..c.clone()
            })
            .collect();
        let dir = if d.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            d
        };
        if let Err(e) = convert::write_sha256sums(&dir, &here) {
            errln!("error: writing {}/SHA256SUMS: {e}", dir.display());
            ok = false;
        }
    }
    ok
}

/// What `kiln convert` made (and from what), as a table or JSON.
fn print_converted(
    a: &ConvertArgs,
    done: &[(PathBuf, crate::convert::Converted)],
    cancel: &crate::process::Cancel,
) {
    use crate::convert;
    match a.format {
        PlanFormat::Json => {
            let src = convert::source_sizes(&a.src, cancel).ok();
            let v = serde_json::json!({
                "source": src,
                "outputs": done.iter().map(|(p, c)| serde_json::json!({"file": p, "output": c})).collect::<Vec<_>>(),
            });
            outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        PlanFormat::Text => {
            if let Ok(src) = convert::source_sizes(&a.src, cancel) {
                print_size_row(
                    &a.src.display().to_string(),
                    &src.format,
                    src.size,
                    src.allocated_size,
                    src.virtual_size,
                );
            }
            for (p, c) in done {
                print_size_row(
                    &p.display().to_string(),
                    &c.format,
                    c.size,
                    c.allocated_size,
                    c.virtual_size,
                );
            }
        }
    }
}

/// An image `kiln sysprep` may change: there, a file, writable (unless --dry-run), used by
/// no running domain and locked by no qemu; with its format. Else why not.
fn sysprep_target(
    a: &SysprepArgs,
    img: &Path,
    cancel: &crate::process::Cancel,
) -> Result<(PathBuf, String), String> {
    let Ok(path) = std::fs::canonicalize(img) else {
        return Err(format!("image {} does not exist", img.display()));
    };
    if !path.is_file() {
        return Err(format!("{} is not a file", img.display()));
    }
    if !a.dry_run {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            return Err(format!(
                "{} is read-only: sysprep changes the image in place (use --dry-run to look)",
                img.display()
            ));
        }
    }
    if let Ok(lv) = crate::libvirt::Libvirt::connect(crate::plan::DEFAULT_URI) {
        let users = lv.running_domains_using(&path);
        if !users.is_empty() {
            return Err(format!(
                "{} is in use by the running domain {}: shut it down first",
                img.display(),
                users.join(", ")
            ));
        }
    }
    // qemu's image locks catch other users (a qemu not managed by libvirt).
    let fmt = match crate::imagefile::check(&path, a.format.as_deref(), &a.backing, cancel) {
        Ok(i) => i.format,
        Err(e) => {
            return Err(format!(
                "cannot read {}: {e}",
                safe(&img.display().to_string())
            ))
        }
    };
    let locked = process::run(
        &process::argv(["qemu-img", "info", "-f", &fmt, &path.display().to_string()]),
        &Default::default(),
        cancel,
    );
    if let Err(e) = locked {
        return Err(format!("{} is in use (locked): {e}", img.display()));
    }
    Ok((path, fmt))
}

pub(super) fn sysprep_cmd(a: SysprepArgs, customize: Vec<crate::customize::Customize>) -> i32 {
    use crate::sysprep::engine as ops;
    let split = |v: &[String]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let opts = ops::Options {
        remove_user_accounts: split(&a.remove_user_accounts),
        keep_user_accounts: split(&a.keep_user_accounts),
        scripts: a.script.clone(),
        customize,
    };
    if a.list_operations {
        for o in crate::sysprep::OPERATIONS {
            outln!(
                "{} {} {}",
                o.name,
                if o.default { "*" } else { " " },
                o.description
            );
        }
        return exit::OK;
    }
    let words: Vec<String> = match &a.enable {
        Some(e) => vec![e.clone()],
        None if a.operations.is_empty() => vec!["defaults".into()],
        None => a.operations.clone(),
    };
    let selected = match crate::sysprep::resolve(&words) {
        Ok(s) => s,
        Err(errs) => {
            for (_, m) in &errs {
                errln!("error: {m}");
            }
            return exit::INVALID_INPUT;
        }
    };
    // Arguments for an operation that will not run are a mistake (as in virt-sysprep).
    for (given, op, flag) in [
        (
            !opts.remove_user_accounts.is_empty(),
            "user-account",
            "--remove-user-accounts",
        ),
        (
            !opts.keep_user_accounts.is_empty(),
            "user-account",
            "--keep-user-accounts",
        ),
        (!opts.scripts.is_empty(), "script", "--script"),
        (!opts.customize.is_empty(), "customize", "customize flags"),
    ] {
        if given && !selected.contains(&op) {
            return usage_error(format!(
                "{flag} given, but the `{op}` operation is not enabled"
            ));
        }
    }
    let cancel = cancel_on_signals();
    // Every image is checked before any is touched.
    let mut images = Vec::new();
    for img in &a.images {
        match sysprep_target(&a, img, &cancel) {
            Ok(t) => images.push(t),
            Err(m) => return usage_error(m),
        }
    }
    let tcg = crate::libvirt::probe::tcg_for_tools(
        a.accel,
        &super::tunables().cache_dir,
        crate::plan::DEFAULT_URI,
        &cancel,
    );
    for (path, fmt) in images {
        let before = crate::manifest::allocated(&path);
        let launch = crate::guest::Launch {
            tcg,
            readonly: a.dry_run,
            network: !a.dry_run && crate::customize::needs_network(&opts.customize),
        };
        let mut g = match crate::guest::Guest::open_with(&path, &fmt, launch) {
            Ok(g) => g,
            Err(e) => {
                errln!("error: {e}");
                return exit::BUILD_FAILED;
            }
        };
        g.kill_on_cancel(&cancel);
        outln!("{}:", path.display());
        let verb = if a.dry_run { "would" } else { "did" };
        let res = ops::run_all(
            &g,
            &selected,
            &opts,
            a.dry_run,
            &cancel,
            &mut |g| g.fstrim(),
            &mut |r| {
                let n = r.actions.len();
                outln!("  {}: {n} change{}", r.op, if n == 1 { "" } else { "s" });
                for act in &r.actions {
                    outln!("    {verb} {}", safe(&act.to_string()));
                }
                for note in &r.notes {
                    outln!("    {}", safe(&note.to_string()));
                }
                // Shown once, as virt-customize does; never logged.
                for secret in &r.secrets {
                    outln!("    random password for {secret}");
                }
            },
        );
        if let Err((op, e)) = res {
            if cancel.is_cancelled() {
                return exit::INTERRUPTED;
            }
            errln!("error: {op}: {e}");
            return exit::BUILD_FAILED;
        }
        if let Err(e) = g.close() {
            errln!("error: {e}");
            return exit::BUILD_FAILED;
        }
        if !a.dry_run {
            let after = crate::manifest::allocated(&path);
            outln!(
                "  sparsify: allocated {} -> {}",
                crate::progress::human_bytes(before),
                crate::progress::human_bytes(after)
            );
        }
    }
    exit::OK
}

pub(super) fn info_cmd(image: &Path, format: PlanFormat) -> i32 {
    if !image.is_file() {
        return usage_error(format!("image {} does not exist", image.display()));
    }
    let cancel = Cancel::new();
    let info = match crate::qemu_img::info(image, &cancel) {
        Ok(i) => i,
        Err(e) => {
            errln!("error: {e}");
            return exit::BUILD_FAILED;
        }
    };
    let (size, allocated) = crate::convert::file_sizes(image).unwrap_or((0, 0));
    let (sha256, _) = match crate::convert::checksums(image) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: reading {}: {e}", image.display());
            return exit::BUILD_FAILED;
        }
    };
    let v = serde_json::json!({
        "image": image,
        "format": info.format,
        "virtual_size": info.virtual_size,
        "size": size,
        "allocated_size": allocated,
        "sha256": sha256,
        "backing_file": info.backing_filename,
    });
    match format {
        PlanFormat::Json => outln!("{}", serde_json::to_string_pretty(&v).expect("json")),
        PlanFormat::Text => {
            use crate::progress::human_bytes as h;
            outln!("image:          {}", image.display());
            outln!("format:         {}", info.format);
            outln!(
                "virtual size:   {} ({} bytes)",
                h(info.virtual_size),
                info.virtual_size
            );
            outln!("file size:      {} ({size} bytes)", h(size));
            outln!("allocated size: {} ({allocated} bytes)", h(allocated));
            outln!("sha256:         {sha256}");
            outln!(
                "backing file:   {}",
                safe(info.backing_filename.as_deref().unwrap_or("none"))
            );
        }
    }
    exit::OK
}
