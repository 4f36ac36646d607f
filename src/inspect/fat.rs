//! FAT filesystems (an EFI system partition) for the host reader, read-only through the
//! `fatfs` crate. The image is someone else's: every walk and read is bounded (a directory's
//! cluster chain can loop), and a malformed filesystem is an error or a fallback to
//! libguestfs, never a panic that reaches the caller.

use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::Stat;
use crate::diskread::Slice;

/// The most entries one directory listing returns (a looping cluster chain repeats forever).
const DIR_MAX: usize = 65_536;

/// The partition's bytes as a stream; writes are refused (nothing is changed on the image).
struct SliceIo {
    slice: Slice,
    pos: u64,
}

impl Read for SliceIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.slice.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.slice
            .read_at(self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SliceIo {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.slice.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = at.ok_or_else(|| std::io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

impl Write for SliceIo {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the host reader writes nothing"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A FAT filesystem of the image.
pub struct Fat {
    fs: fatfs::FileSystem<SliceIo>,
}

/// A call into fatfs with its panics turned into None (a crafted boot sector or directory).
fn guarded<R>(f: impl FnOnce() -> Option<R>) -> Option<R> {
    catch_unwind(AssertUnwindSafe(f)).ok().flatten()
}

/// `path` relative to the filesystem's root, as fatfs takes it ("" for the root).
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl Fat {
    pub fn open(slice: Slice) -> Result<Fat, String> {
        let io = SliceIo { slice, pos: 0 };
        let opts = fatfs::FsOptions::new().update_accessed_date(false);
        catch_unwind(AssertUnwindSafe(|| fatfs::FileSystem::new(io, opts)))
            .map_err(|_| "a malformed FAT boot sector".to_string())?
            .map(|fs| Fat { fs })
            .map_err(|e| format!("not a FAT filesystem fatfs reads: {e}"))
    }

    /// The volume label (the boot sector's), the data area's size and what is used of it, as
    /// statvfs shows them for a mounted FAT.
    pub fn label_and_sizes(&self) -> (String, Option<u64>, Option<u64>) {
        let label = self.fs.volume_label().trim_end().to_string();
        let sizes = guarded(|| {
            let st = self.fs.stats().ok()?;
            let unit = st.cluster_size() as u64;
            let total = st.total_clusters() as u64 * unit;
            Some((
                total,
                total.saturating_sub(st.free_clusters() as u64 * unit),
            ))
        });
        (label, sizes.map(|s| s.0), sizes.map(|s| s.1))
    }

    /// The directory's entries (names, stats), at most [`DIR_MAX`].
    pub fn entries(&self, dir: &str) -> Vec<(String, Stat)> {
        guarded(|| {
            let root = self.fs.root_dir();
            let d = match rel(dir) {
                "" => root,
                p => root.open_dir(p).ok()?,
            };
            Some(
                d.iter()
                    .take(DIR_MAX)
                    .filter_map(|e| e.ok())
                    .map(|e| (e.file_name(), stat_of(&e)))
                    .filter(|(n, _)| n != "." && n != "..")
                    .collect(),
            )
        })
        .unwrap_or_default()
    }

    pub fn lstat(&self, path: &str) -> Option<Stat> {
        let p = rel(path);
        if p.is_empty() {
            return Some((0o040755, 0, 0, 0, 0));
        }
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
        self.entries(parent)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, st)| st)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.lstat(path).is_some()
    }

    /// The file's bytes, or None past `max` (its size is the image's claim).
    pub fn read(&self, path: &str, max: u64) -> Option<Vec<u8>> {
        let (mode, _, _, len, _) = self.lstat(path)?;
        if mode & 0o170000 != 0o100000 || len as u64 > max {
            return None;
        }
        guarded(|| {
            let mut f = self.fs.root_dir().open_file(rel(path)).ok()?;
            let mut out = Vec::new();
            (&mut f).take(max).read_to_end(&mut out).ok()?;
            Some(out)
        })
    }
}

/// FAT has no owners or modes: what Linux's vfat shows with its defaults (root, 0755), the
/// modification time taken as UTC (the kernel's default time zone for FAT).
fn stat_of(e: &fatfs::DirEntry<SliceIo>) -> Stat {
    let kind = if e.is_dir() { 0o040000 } else { 0o100000 };
    let m = e.modified();
    let secs = days_from_civil(m.date.year as i64, m.date.month as i64, m.date.day as i64) * 86_400
        + m.time.hour as i64 * 3600
        + m.time.min as i64 * 60
        + m.time.sec as i64;
    let size = if e.is_dir() { 0 } else { e.len() as i64 };
    (
        kind | 0o755,
        0,
        0,
        size,
        secs * 1_000_000_000 + m.time.millis as i64 * 1_000_000,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT32 filesystem made by mkfs.vfat with a file put in by mtools, read back; then the
    /// same bytes damaged: refused or read as nothing, never a panic or an endless listing.
    #[test]
    fn a_real_fat_reads_back_and_damage_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("esp.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(40 << 20)
            .unwrap();
        let run = |argv: &[&str]| {
            let o = std::process::Command::new(argv[0])
                .args(&argv[1..])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{argv:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        let path = img.to_str().unwrap();
        run(&["mkfs.vfat", "-F", "32", "-s", "1", "-n", "EFI", path]);
        let payload = dir.path().join("BOOTX64.EFI");
        std::fs::write(&payload, b"MZ not really an EFI binary").unwrap();
        run(&["mmd", "-i", path, "::/EFI", "::/EFI/BOOT"]);
        run(&[
            "mcopy",
            "-i",
            path,
            payload.to_str().unwrap(),
            "::/EFI/BOOT/",
        ]);
        let open = || {
            let image = crate::imagefile::standalone(&img, "raw", 40 << 20);
            let disk = crate::diskread::open(&image).unwrap();
            Fat::open(Slice {
                disk,
                start: 0,
                len: 40 << 20,
            })
        };
        let fat = open().unwrap();
        let names: Vec<String> = fat.entries("/EFI/BOOT").into_iter().map(|e| e.0).collect();
        assert_eq!(names, ["BOOTX64.EFI"]);
        assert_eq!(
            fat.read("/EFI/BOOT/BOOTX64.EFI", 1 << 20).unwrap(),
            b"MZ not really an EFI binary"
        );
        assert_eq!(fat.read("/EFI/BOOT/BOOTX64.EFI", 4), None, "over the cap");
        let (mode, _, _, size, _) = fat.lstat("/efi/boot/bootx64.efi").unwrap();
        assert_eq!((mode, size), (0o100755, 27));
        assert_eq!(fat.label_and_sizes().0, "EFI");
        // The root directory's cluster pointing at itself in the FAT: a loop.
        let mut bytes = std::fs::read(&img).unwrap();
        let reserved = u16::from_le_bytes([bytes[14], bytes[15]]) as usize;
        let root = u32::from_le_bytes(bytes[44..48].try_into().unwrap()) as usize;
        let at = reserved * 512 + root * 4;
        bytes[at..at + 4].copy_from_slice(&(root as u32).to_le_bytes());
        std::fs::write(&img, &bytes).unwrap();
        let fat = open().unwrap();
        assert!(fat.entries("/").len() <= DIR_MAX);
        // No boot sector at all.
        std::fs::write(&img, vec![0u8; 40 << 20]).unwrap();
        assert!(open().is_err());
    }

    #[test]
    fn civil_dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 11, 14), 19_675);
    }
}
