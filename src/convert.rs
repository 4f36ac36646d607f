//! Converting one source disk to many outputs: concurrently (bounded jobs), each written under
//! a temporary name, checked (`qemu-img check` where supported), proven identical to the source
//! (`qemu-img compare`), hashed (sha256 + sha512 in one read), then renamed into place. A failed
//! output leaves no partial file. Used by the convert stage and by `kiln convert`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::plan::OutputPlan;
use crate::process::{self, Cancel, CommandError, LineSink, Opts};
use crate::progress::{parse_qemu_progress, Percent};

#[derive(Debug, Clone)]
pub struct Job {
    pub src: PathBuf,
    pub src_format: String,
    pub out: OutputPlan,
    pub dst: PathBuf,
    /// Which streamOptimized vmdk writer (`KILN_VMDK_WRITER`).
    pub writer: crate::tunables::VmdkWriter,
}

/// One finished output, as recorded in the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Converted {
    /// File name (relative to the manifest / output directory).
    pub path: String,
    /// qemu-img's format name.
    pub format: String,
    /// Glance's `disk_format` (vpc → vhd; null for qed, which Glance does not accept).
    pub glance_disk_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subformat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    pub virtual_size: u64,
    /// Apparent file size.
    pub size: u64,
    /// Bytes allocated on disk (sparse files use less than `size`).
    pub allocated_size: u64,
    pub sha256: String,
    pub sha512: String,
    /// `qemu-img check` ran and found no problem (false where the format has no check).
    pub checked: bool,
    /// `qemu-img compare` proved identical guest-visible content.
    pub compared: bool,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("converting {src} to {format}: {source}")]
    Convert {
        src: PathBuf,
        format: String,
        source: CommandError,
    },
    #[error("the source {src} is damaged (`qemu-img check`): {source}")]
    SourceCheck { src: PathBuf, source: CommandError },
    #[error("{dst} failed `qemu-img check`: {source}")]
    Check { dst: PathBuf, source: CommandError },
    #[error("{dst} differs from {src} (`qemu-img compare`): {source}")]
    Compare {
        src: PathBuf,
        dst: PathBuf,
        source: CommandError,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Info(#[from] crate::qemu_img::QemuImgError),
}

/// sha256 and sha512 of a file, reading it once.
pub fn checksums(path: &Path) -> std::io::Result<(String, String)> {
    let mut a = Sha256::new();
    let mut b = Sha512::new();
    crate::hostfile::each_chunk(path, |d| {
        a.update(d);
        b.update(d);
    })?;
    Ok((hex::encode(a.finalize()), hex::encode(b.finalize())))
}

/// Sizes of a file: (apparent, allocated).
pub fn file_sizes(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.len(), m.blocks() * 512))
}

/// The temporary name an output is written under (hidden, next to its final name so the
/// rename is atomic).
pub fn part_path(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(".{name}.part-{}", std::process::id()))
}

/// Removes the partial file unless disarmed.
struct PartGuard(Option<PathBuf>);

impl Drop for PartGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// streamOptimized vmdk outputs are written by kiln's parallel writer (`crate::vmdk`) unless
/// `KILN_VMDK_WRITER=qemu-img` asks for qemu-img's single-threaded one.
pub fn native_stream_vmdk(out: &OutputPlan, writer: crate::tunables::VmdkWriter) -> bool {
    is_stream_vmdk(out) && writer == crate::tunables::VmdkWriter::Kiln
}

/// A streamOptimized vmdk: the one output whose bytes depend on the writer.
pub fn is_stream_vmdk(out: &OutputPlan) -> bool {
    out.format == crate::vocab::Format::Vmdk
        && out.subformat == Some(crate::vocab::Subformat::StreamOptimized)
}

impl Job {
    /// The output's file name (what the manifest and messages call it).
    fn file_name(&self) -> String {
        self.dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The hidden raw intermediate of a native streamOptimized vmdk.
fn raw_part_path(dst: &Path, name: &str) -> PathBuf {
    dst.with_file_name(format!(".{name}.raw-part-{}", std::process::id()))
}

/// What [`convert_one`] runs for `job`, for `kiln plan`: the same argv builders.
pub fn planned(job: &Job) -> Vec<String> {
    let name = job.file_name();
    let part = part_path(&job.dst);
    let fmt = job.out.format.as_str();
    let mut v = Vec::new();
    if native_stream_vmdk(&job.out, job.writer) {
        let raw = raw_part_path(&job.dst, &name);
        let raw_plan = OutputPlan::new(crate::vocab::Format::Raw);
        v.push(process::display(&crate::qemu_img::convert_argv(
            &job.src,
            &job.src_format,
            &raw,
            &raw_plan,
        )));
        v.push(format!(
            "kiln's streamOptimized vmdk writer (parallel deflate): {} -> {}",
            raw.display(),
            part.display()
        ));
    } else {
        v.push(process::display(&crate::qemu_img::convert_argv(
            &job.src,
            &job.src_format,
            &part,
            &job.out,
        )));
    }
    if job.out.format.checkable() {
        v.push(process::display(&crate::qemu_img::check_argv(&part, fmt)));
    }
    v.push(process::display(&crate::qemu_img::compare_argv(
        &job.src,
        &job.src_format,
        &part,
        fmt,
    )));
    v.push(format!(
        "SHA-256 and SHA-512 of {}; rename to {}",
        part.display(),
        job.dst.display()
    ));
    v
}

/// Convert, verify, hash and rename one output.
pub fn convert_one(job: &Job, cancel: &Cancel) -> Result<Converted, ConvertError> {
    let start = Instant::now();
    let name = job.file_name();
    let part = part_path(&job.dst);
    let mut guard = PartGuard(Some(part.clone()));
    let fmt = job.out.format.as_str();

    let meter = Arc::new(Percent::new(&format!("convert {name}")));
    let m2 = meter.clone();
    let opts = Opts {
        on_stdout: Some(LineSink(Arc::new(move |line| {
            if let Some(p) = parse_qemu_progress(line) {
                m2.set(p);
            }
        }))),
        ..Default::default()
    };
    if native_stream_vmdk(&job.out, job.writer) {
        // qemu-img expands the source to a sparse raw file (fast), kiln writes the vmdk with
        // parallel deflate (qemu-img's own writer compresses on one thread).
        let raw = raw_part_path(&job.dst, &name);
        let _raw_guard = PartGuard(Some(raw.clone()));
        let raw_plan = OutputPlan::new(crate::vocab::Format::Raw);
        let argv = crate::qemu_img::convert_argv(&job.src, &job.src_format, &raw, &raw_plan);
        process::run(&argv, &Opts::default(), cancel).map_err(|source| ConvertError::Convert {
            src: job.src.clone(),
            format: fmt.to_string(),
            source,
        })?;
        let m3 = meter.clone();
        crate::vmdk::write_stream_optimized(&raw, &part, default_jobs(), cancel, &move |p| {
            m3.set(p)
        })
        .map_err(|source| ConvertError::Io {
            op: "writing the streamOptimized vmdk",
            path: part.clone(),
            source,
        })?;
        meter.finish();
    } else {
        let argv = crate::qemu_img::convert_argv(&job.src, &job.src_format, &part, &job.out);
        let res = process::run(&argv, &opts, cancel);
        meter.finish();
        res.map_err(|source| ConvertError::Convert {
            src: job.src.clone(),
            format: fmt.to_string(),
            source,
        })?;
    }

    let checked = job.out.format.checkable();
    if checked {
        process::run(
            &crate::qemu_img::check_argv(&part, fmt),
            &Opts::default(),
            cancel,
        )
        .map_err(|source| ConvertError::Check {
            dst: job.dst.clone(),
            source,
        })?;
    }
    process::run(
        &crate::qemu_img::compare_argv(&job.src, &job.src_format, &part, fmt),
        &Opts::default(),
        cancel,
    )
    .map_err(|source| ConvertError::Compare {
        src: job.src.clone(),
        dst: job.dst.clone(),
        source,
    })?;
    let info = crate::qemu_img::info_as(&part, Some(fmt), cancel)?;
    let (sha256, sha512) = checksums(&part).map_err(|source| ConvertError::Io {
        op: "hashing",
        path: part.clone(),
        source,
    })?;
    let (size, allocated_size) = file_sizes(&part).map_err(|source| ConvertError::Io {
        op: "reading the size of",
        path: part.clone(),
        source,
    })?;
    std::fs::rename(&part, &job.dst).map_err(|source| ConvertError::Io {
        op: "renaming into place",
        path: job.dst.clone(),
        source,
    })?;
    guard.0 = None;
    Ok(Converted {
        path: name,
        format: fmt.to_string(),
        glance_disk_format: job.out.format.glance_disk_format().map(str::to_string),
        subformat: job
            .out
            .effective_subformat()
            .map(|s| s.as_str().to_string()),
        compression: job.out.compress.map(|c| c.as_str().to_string()),
        virtual_size: info.virtual_size,
        size,
        allocated_size,
        sha256,
        sha512,
        checked,
        compared: true,
        seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

/// Check the source before converting: qemu reads a truncated qcow2 as zeros without
/// complaint, so only `qemu-img check` notices the damage.
pub fn check_source(src: &Path, format: &str, cancel: &Cancel) -> Result<(), ConvertError> {
    // The format table's fact; a source in a format kiln does not write is not checked.
    if !crate::vocab::Format::from_qemu_img(format).is_some_and(crate::vocab::Format::checkable) {
        return Ok(());
    }
    process::run(
        &crate::qemu_img::check_argv(src, format),
        &Opts::default(),
        cancel,
    )
    .map(drop)
    .map_err(|source| ConvertError::SourceCheck {
        src: src.to_path_buf(),
        source,
    })
}

/// Default number of concurrent conversions: the core count.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Run every job, at most `jobs` at a time; results in job order. `yield_cpu`: at the lowest
/// priority (beside the boot test's VM, whose boot is the longer path).
pub fn convert_all(
    jobs_list: &[Job],
    jobs: usize,
    yield_cpu: bool,
    cancel: &Cancel,
) -> Vec<Result<Converted, ConvertError>> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<Converted, ConvertError>>>> =
        Mutex::new((0..jobs_list.len()).map(|_| None).collect());
    let build = crate::logging::current();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(jobs_list.len().max(1)) {
            let (next, results) = (&next, &results);
            scope.spawn(move || loop {
                crate::logging::adopt(build);
                if yield_cpu {
                    // qemu-img, the vmdk writer and the hashing: behind what is more urgent.
                    crate::process::yield_cpu_from_this_thread();
                }
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(job) = jobs_list.get(i) else { break };
                tracing::info!(
                    "converting to {} ({})",
                    job.dst.display(),
                    job.out.format.as_str()
                );
                let r = convert_one(job, cancel);
                match &r {
                    Ok(c) => tracing::info!(
                        "{}: {} in {:.1} s (checked: {}, identical to the source)",
                        c.path,
                        crate::progress::human_bytes(c.size),
                        c.seconds,
                        if c.checked { "ok" } else { "n/a" }
                    ),
                    Err(e) => tracing::error!("{e}"),
                }
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// `SHA256SUMS` lines in the format `sha256sum -c` accepts, merged with an existing file
/// (entries for the same names are replaced).
pub fn write_sha256sums(dir: &Path, outputs: &[Converted]) -> std::io::Result<()> {
    let path = dir.join("SHA256SUMS");
    let mut lines: Vec<(String, String)> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (h, n) = l.split_once("  ")?;
            Some((h.to_string(), n.to_string()))
        })
        .filter(|(_, n)| !outputs.iter().any(|o| &o.path == n))
        .collect();
    lines.extend(outputs.iter().map(|o| (o.sha256.clone(), o.path.clone())));
    lines.sort_by(|a, b| a.1.cmp(&b.1));
    let text: String = lines.iter().map(|(h, n)| format!("{h}  {n}\n")).collect();
    let tmp = dir.join(".SHA256SUMS.part");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Sizes of a source disk, summed over its backing chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceSizes {
    pub format: String,
    pub virtual_size: u64,
    pub size: u64,
    pub allocated_size: u64,
}

pub fn source_sizes(path: &Path, cancel: &Cancel) -> Result<SourceSizes, ConvertError> {
    let chain = crate::qemu_img::info_chain(path, cancel)?;
    let mut size = 0;
    let mut allocated = 0;
    for i in &chain {
        let p = if i.filename.is_empty() {
            path.to_path_buf()
        } else {
            PathBuf::from(&i.filename)
        };
        if let Ok((s, a)) = file_sizes(&p) {
            size += s;
            allocated += a;
        }
    }
    Ok(SourceSizes {
        format: chain.first().map(|i| i.format.clone()).unwrap_or_default(),
        virtual_size: chain.first().map(|i| i.virtual_size).unwrap_or(0),
        size,
        allocated_size: allocated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let (a, b) = checksums(&p).unwrap();
        assert_eq!(
            a,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(b.starts_with("ddaf35a193617aba"));
    }

    #[test]
    fn part_files_are_hidden_siblings() {
        let p = part_path(Path::new("/o/img.qcow2"));
        assert_eq!(p.parent().unwrap(), Path::new("/o"));
        assert!(p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".img.qcow2.part-"));
    }

    fn converted(path: &str, sha: &str) -> Converted {
        Converted {
            path: path.into(),
            format: "raw".into(),
            glance_disk_format: Some("raw".into()),
            subformat: None,
            compression: None,
            virtual_size: 0,
            size: 0,
            allocated_size: 0,
            sha256: sha.into(),
            sha512: String::new(),
            checked: false,
            compared: true,
            seconds: 0.0,
        }
    }

    #[test]
    fn sha256sums_merge_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        write_sha256sums(
            dir.path(),
            &[converted("b.raw", "11"), converted("a.raw", "22")],
        )
        .unwrap();
        write_sha256sums(dir.path(), &[converted("b.raw", "33")]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap(),
            "22  a.raw\n33  b.raw\n"
        );
    }
}
