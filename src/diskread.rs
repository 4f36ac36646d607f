//! Reading a disk image on the host without an appliance, for read-only inspection: raw and
//! qcow2 (v2/v3, backing chains, zlib- and zstd-compressed and zero clusters), MBR and GPT
//! partition tables, ext2/3/4 superblocks. Everything it parses comes from an untrusted image:
//! bounds are checked, sizes capped, and anything it does not handle (encryption, external data
//! files, subclusters) is `Unsupported`, so the caller falls back to libguestfs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not supported by the host reader")]
    Unsupported(String),
    #[error("{0}: corrupt image")]
    Corrupt(String),
}

/// Random-access reads of a virtual disk.
pub trait Disk: Send + Sync {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`; past the end reads zeros.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
}

/// An image and its backing chain as checked before reading (`imagefile::check`): the format
/// of each is the one qemu-img reported or the user gave, never probed here again, and a
/// backing file is only ever the one named here.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: PathBuf,
    pub format: String,
    pub virtual_size: u64,
    pub backing: Option<Box<Image>>,
}

/// The most L1 table one image may have (2^22 entries: 2 PiB of 64 KiB clusters); a header
/// claiming more is read as corrupt instead of allocating it.
const L1_MAX: u32 = 1 << 22;

/// Open a checked image (raw or qcow2; others are `Unsupported`).
pub fn open(img: &Image) -> Result<Arc<dyn Disk>, DiskError> {
    let path = img.path.as_path();
    // Not blocking on open (the check said regular file; a swap since is refused below).
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io(path))?
    };
    let meta = f.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(DiskError::Corrupt(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    match img.format.as_str() {
        "qcow2" => Ok(Arc::new(Qcow2::open(path, f, img.backing.as_deref())?)),
        "raw" if img.backing.is_none() => Ok(Arc::new(Raw { f, len: meta.len() })),
        // vmdk, vpc, vhdx, vdi, qed: libguestfs reads them.
        other => Err(DiskError::Unsupported(format!(
            "{}: format {other}",
            path.display()
        ))),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Raw {
    f: File,
    len: u64,
}

impl Disk for Raw {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        buf.fill(0);
        if offset >= self.len {
            return Ok(());
        }
        let n = ((self.len - offset) as usize).min(buf.len());
        self.f
            .read_exact_at(&mut buf[..n], offset)
            .map_err(|source| DiskError::Io {
                path: PathBuf::from("raw image"),
                source,
            })
    }
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

struct Qcow2 {
    path: PathBuf,
    f: File,
    size: u64,
    cluster_bits: u32,
    /// Compressed clusters are zstd frames (the header's compression type 1), else deflate.
    zstd: bool,
    l1: Vec<u64>,
    backing: Option<Arc<dyn Disk>>,
    /// The last L2 table read: (its offset, entries). Reads are mostly sequential.
    l2_cache: Mutex<Option<(u64, Arc<Vec<u64>>)>>,
    /// The compressed clusters decompressed last, most recent first: (host offset, bytes). A
    /// filesystem reads a cluster a block at a time, between its metadata's blocks.
    cluster_cache: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
}

/// qcow2 header fields the reader needs (pure, for tests).
#[derive(Debug, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub backing_file: Option<(u64, u32)>,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_offset: u64,
    pub incompatible: u64,
    pub compression_type: u8,
}

pub fn parse_qcow2_header(h: &[u8]) -> Result<Qcow2Header, String> {
    if h.len() < 72 || &h[..4] != b"QFI\xfb" {
        return Err("not a qcow2 header".into());
    }
    let version = be32(h, 4);
    if !(2..=3).contains(&version) {
        return Err(format!("qcow2 version {version}"));
    }
    let bf_off = be64(h, 8);
    let bf_len = be32(h, 16);
    let cluster_bits = be32(h, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!("cluster_bits {cluster_bits}"));
    }
    let (incompatible, compression_type) = if version >= 3 && h.len() >= 104 {
        let hl = be32(h, 100) as usize;
        let ct = if hl > 104 && h.len() > 104 { h[104] } else { 0 };
        (be64(h, 72), ct)
    } else {
        (0, 0)
    };
    Ok(Qcow2Header {
        version,
        backing_file: (bf_off != 0 && bf_len != 0).then_some((bf_off, bf_len)),
        cluster_bits,
        size: be64(h, 24),
        crypt_method: be32(h, 32),
        l1_size: be32(h, 36),
        l1_offset: be64(h, 40),
        incompatible,
        compression_type,
    })
}

/// Where a guest cluster's data is, from its L2 entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Cluster {
    /// Not allocated here: the backing file's (or zeros).
    Unallocated,
    Zero,
    Data(u64),
    /// Compressed: host offset and the most bytes it may span.
    Compressed(u64, u64),
}

pub fn l2_entry(e: u64, cluster_bits: u32) -> Cluster {
    if e & (1 << 62) != 0 {
        let x = 62 - (cluster_bits - 8);
        let offset = e & ((1u64 << x) - 1);
        let sectors = ((e >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        return Cluster::Compressed(offset, sectors * 512 - (offset & 511));
    }
    let offset = e & 0x00ff_ffff_ffff_fe00;
    if e & 1 != 0 {
        Cluster::Zero
    } else if offset == 0 {
        Cluster::Unallocated
    } else {
        Cluster::Data(offset)
    }
}

impl Qcow2 {
    fn open(path: &Path, f: File, backing: Option<&Image>) -> Result<Qcow2, DiskError> {
        let mut h = vec![0u8; 512];
        let len = f.metadata().map_err(io(path))?.len();
        let n = (len as usize).min(h.len());
        f.read_exact_at(&mut h[..n], 0).map_err(io(path))?;
        let hd = parse_qcow2_header(&h[..n])
            .map_err(|e| DiskError::Corrupt(format!("{}: {e}", path.display())))?;
        let unsupported =
            |what: &str| DiskError::Unsupported(format!("{}: {what}", path.display()));
        if hd.crypt_method != 0 {
            return Err(unsupported("encryption"));
        }
        // Bit 0 dirty (reads are fine), 1 corrupt, 2 external data file, 3 compression type,
        // 4 extended L2 (subclusters).
        if hd.incompatible & !0b1001 != 0 {
            return Err(unsupported("incompatible features"));
        }
        if hd.compression_type > 1 {
            return Err(unsupported("compression type"));
        }
        let cluster = 1u64 << hd.cluster_bits;
        let needed = hd.size.div_ceil(cluster).div_ceil(cluster / 8);
        if (hd.l1_size as u64) < needed || hd.l1_size > L1_MAX {
            return Err(DiskError::Corrupt(format!("{}: L1 size", path.display())));
        }
        let mut raw = vec![0u8; hd.l1_size as usize * 8];
        f.read_exact_at(&mut raw, hd.l1_offset).map_err(io(path))?;
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        // The backing file is the checked one, never the name in the header (which can name
        // any host file): a header and a check that disagree are corrupt.
        let backing = match (hd.backing_file, backing) {
            (None, None) => None,
            (Some(_), Some(b)) => Some(open(b)?),
            _ => {
                return Err(DiskError::Corrupt(format!(
                    "{}: backing file not as checked",
                    path.display()
                )))
            }
        };
        Ok(Qcow2 {
            path: path.to_path_buf(),
            f,
            size: hd.size,
            cluster_bits: hd.cluster_bits,
            zstd: hd.compression_type == 1,
            l1,
            backing,
            l2_cache: Mutex::new(None),
            cluster_cache: Mutex::new(Vec::new()),
        })
    }

    /// The compressed cluster at `host` (at most `max` bytes stored), decompressed.
    fn compressed_cluster(
        &self,
        host: u64,
        max: u64,
        cluster: u64,
    ) -> Result<Arc<Vec<u8>>, DiskError> {
        let cached = |c: &mut Vec<(u64, Arc<Vec<u8>>)>| {
            let i = c.iter().position(|(at, _)| *at == host)?;
            let hit = c.remove(i);
            c.insert(0, hit.clone());
            Some(hit.1)
        };
        if let Some(b) = cached(&mut self.cluster_cache.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(b);
        }
        let flen = self.f.metadata().map_err(|e| self.err(e))?.len();
        let n = max.min(flen.saturating_sub(host)).min(2 * cluster) as usize;
        let mut comp = vec![0u8; n];
        self.f
            .read_exact_at(&mut comp, host)
            .map_err(|e| self.err(e))?;
        let out = decompress_cluster(&comp, cluster as usize, self.zstd)
            .map_err(|e| DiskError::Corrupt(format!("{}: {e}", self.path.display())))?;
        let out = Arc::new(out);
        let mut c = self.cluster_cache.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(0, (host, out.clone()));
        // At most 8 MiB of decompressed clusters (one at least).
        c.truncate((CLUSTER_CACHE_BYTES / cluster).max(1) as usize);
        Ok(out)
    }

    fn err(&self, e: std::io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            source: e,
        }
    }

    fn l2(&self, offset: u64) -> Result<Arc<Vec<u64>>, DiskError> {
        let mut cache = self.l2_cache.lock().expect("l2 cache");
        if let Some((o, t)) = cache.as_ref() {
            if *o == offset {
                return Ok(t.clone());
            }
        }
        let mut raw = vec![0u8; 1 << self.cluster_bits];
        self.f
            .read_exact_at(&mut raw, offset)
            .map_err(|e| self.err(e))?;
        let t = Arc::new(raw.chunks_exact(8).map(|c| be64(c, 0)).collect::<Vec<_>>());
        *cache = Some((offset, t.clone()));
        Ok(t)
    }

    /// Read within one cluster.
    fn read_cluster(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let cluster = 1u64 << self.cluster_bits;
        let entries = cluster / 8;
        let idx = offset / cluster;
        let within = offset % cluster;
        let l1e = self.l1.get((idx / entries) as usize).copied().unwrap_or(0);
        let l2_off = l1e & 0x00ff_ffff_ffff_fe00;
        let entry = if l2_off == 0 {
            0
        } else {
            self.l2(l2_off)?[(idx % entries) as usize]
        };
        match l2_entry(entry, self.cluster_bits) {
            Cluster::Unallocated => match &self.backing {
                Some(b) => b.read_at(offset, buf),
                None => {
                    buf.fill(0);
                    Ok(())
                }
            },
            Cluster::Zero => {
                buf.fill(0);
                Ok(())
            }
            Cluster::Data(host) => self
                .f
                .read_exact_at(buf, host + within)
                .map_err(|e| self.err(e)),
            Cluster::Compressed(host, max) => {
                let out = self.compressed_cluster(host, max, cluster)?;
                buf.copy_from_slice(&out[within as usize..within as usize + buf.len()]);
                Ok(())
            }
        }
    }
}

/// How many decompressed bytes an image keeps of its compressed clusters.
const CLUSTER_CACHE_BYTES: u64 = 8 << 20;

/// The largest zstd window a compressed cluster may ask for (qemu compresses each cluster, at
/// most 2 MiB, as one frame): a crafted frame cannot make the reader allocate more.
const ZSTD_MAX_WINDOW: u64 = 32 << 20;

/// One compressed cluster's bytes (`comp` may run past the end of its data: qcow2 stores a
/// sector count), decompressed into exactly `cluster` bytes: raw deflate, or one zstd frame
/// (pure-Rust `ruzstd`, its window bounded). Less output than a cluster is corrupt.
fn decompress_cluster(comp: &[u8], cluster: usize, zstd: bool) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; cluster];
    if zstd {
        use std::io::Read as _;
        let mut d =
            ruzstd::decoding::StreamingDecoder::new_with_max_window_size(comp, ZSTD_MAX_WINDOW)
                .map_err(|e| format!("zstd cluster: {e}"))?;
        d.read_exact(&mut out)
            .map_err(|e| format!("zstd cluster: {e}"))?;
    } else {
        let mut d = flate2::Decompress::new(false);
        d.decompress(comp, &mut out, flate2::FlushDecompress::Finish)
            .map_err(|e| e.to_string())?;
        if (d.total_out() as usize) < cluster {
            return Err(format!(
                "a compressed cluster gave {} of {cluster} bytes",
                d.total_out()
            ));
        }
    }
    Ok(out)
}

impl Disk for Qcow2 {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, mut offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let cluster = 1u64 << self.cluster_bits;
        let mut done = 0;
        while done < buf.len() {
            let n = ((cluster - offset % cluster) as usize).min(buf.len() - done);
            if offset >= self.size {
                buf[done..].fill(0);
                return Ok(());
            }
            self.read_cluster(offset, &mut buf[done..done + n])?;
            done += n;
            offset += n as u64;
        }
        Ok(())
    }
}

/// A partition (or the whole disk) as a byte range of a disk, readable by ext4-view.
#[derive(Clone)]
pub struct Slice {
    pub disk: Arc<dyn Disk>,
    pub start: u64,
    pub len: u64,
}

impl Slice {
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(DiskError::Corrupt("read past the partition's end".into()));
        }
        self.disk.read_at(self.start + offset, buf)
    }
}

impl ext4_view::Ext4Read for Slice {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Slice::read_at(self, start_byte, dst).map_err(|e| e.to_string().into())
    }
}

/// One partition table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub start: u64,
    pub size: u64,
    /// MBR type ("0x83") or GPT type GUID (upper case).
    pub kind: String,
    pub bootable: bool,
}

/// The partition table from the disk's first 34 sectors: ("msdos" | "gpt", partitions), or
/// None without a table. Extended MBR partitions are not followed.
pub fn partitions(head: &[u8]) -> Option<(String, Vec<Part>)> {
    if head.len() < 512 || head[510] != 0x55 || head[511] != 0xaa {
        return None;
    }
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    let mbr: Vec<(u8, u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = &head[446 + i * 16..446 + (i + 1) * 16];
            (e[0], e[4], le32(e, 8) as u64, le32(e, 12) as u64)
        })
        .collect();
    if mbr.iter().any(|m| m.1 == 0xee) {
        let h = head.get(512..1024)?;
        if &h[..8] != b"EFI PART" {
            return None;
        }
        let entries_lba = le64(h, 72);
        let count = le32(h, 80).min(128) as usize;
        let esize = le32(h, 84) as usize;
        if entries_lba != 2 || !(128..=512).contains(&esize) {
            return None;
        }
        let mut parts = Vec::new();
        for i in 0..count {
            let at = 1024 + i * esize;
            let Some(e) = head.get(at..at + 128) else {
                break;
            };
            if e[..16].iter().all(|b| *b == 0) {
                continue;
            }
            let (first, last) = (le64(e, 32), le64(e, 40));
            // The table's numbers are the image's claims: one that overflows is no partition.
            let (Some(start), Some(size)) = (
                first.checked_mul(512),
                last.checked_sub(first)
                    .and_then(|n| n.checked_add(1))
                    .and_then(|n| n.checked_mul(512)),
            ) else {
                continue;
            };
            parts.push(Part {
                number: i as i32 + 1,
                start,
                size,
                kind: guid(&e[..16]),
                bootable: false,
            });
        }
        return Some(("gpt".into(), parts));
    }
    let parts = mbr
        .iter()
        .enumerate()
        .filter(|(_, m)| m.1 != 0 && m.3 != 0)
        .map(|(i, m)| Part {
            number: i as i32 + 1,
            start: m.2 * 512,
            size: m.3 * 512,
            kind: format!("0x{:02x}", m.1),
            bootable: m.0 == 0x80,
        })
        .collect();
    Some(("msdos".into(), parts))
}

/// A FAT boot sector's volume ID as blkid shows it (`XXXX-XXXX`), or None when `bs` (the
/// first 512 bytes of a filesystem) is not a FAT12/16/32 boot sector.
pub fn fat_volume_id(bs: &[u8]) -> Option<String> {
    if bs.len() < 512 || bs[510] != 0x55 || bs[511] != 0xaa {
        return None;
    }
    // FAT32 keeps its extended boot record at 0x40, FAT12/16 at 0x24: signature 0x29, then the
    // volume ID, the label and the type text.
    let at = match (&bs[0x52..0x57], &bs[0x36..0x39]) {
        (b"FAT32", _) if bs[0x42] == 0x29 => 0x43,
        (_, b"FAT") if bs[0x26] == 0x29 => 0x27,
        _ => return None,
    };
    let id = u32::from_le_bytes(bs[at..at + 4].try_into().ok()?);
    Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff))
}

/// GPT partition types kiln looks for.
pub const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6E6F-744E-656564454649";

/// The firmware a partition table calls for: UEFI for a GPT disk with an EFI system partition
/// and no BIOS boot partition (it cannot boot from SeaBIOS), BIOS for everything else (a
/// hybrid disk boots both; BIOS is what a cloud boots without `hw_firmware_type`).
pub fn firmware_of(table: Option<&(String, Vec<Part>)>) -> crate::vocab::Firmware {
    let has = |guid: &str, parts: &[Part]| parts.iter().any(|p| p.kind == guid);
    match table {
        Some((t, parts)) if t == "gpt" && has(ESP_GUID, parts) && !has(BIOS_BOOT_GUID, parts) => {
            crate::vocab::Firmware::Uefi
        }
        _ => crate::vocab::Firmware::Bios,
    }
}

/// [`firmware_of`] the image's partition table (BIOS when it cannot be read).
pub fn firmware_for(img: &Image) -> crate::vocab::Firmware {
    let mut head = vec![0u8; 34 * 512];
    let table = open(img)
        .and_then(|d| d.read_at(0, &mut head))
        .ok()
        .and_then(|()| partitions(&head));
    firmware_of(table.as_ref())
}

/// A GPT GUID (mixed-endian on disk) as text.
fn guid(b: &[u8]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    )
}

/// What an ext2/3/4 superblock (1024 bytes at offset 1024) says: (uuid, label, size, used).
pub fn ext4_superblock(sb: &[u8]) -> Option<(String, String, u64, u64)> {
    if sb.len() < 1024 || u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xef53 {
        return None;
    }
    let le32 = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4")) as u64;
    let bits64 = le32(0x60) & 0x80 != 0;
    let hi = |at: usize| if bits64 { le32(at) << 32 } else { 0 };
    let block = 1024u64 << le32(0x18).min(16);
    let blocks = le32(0x4) | hi(0x150);
    let free = le32(0xc) | hi(0x158);
    let u = &sb[0x68..0x78];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&u[..4]),
        hex::encode(&u[4..6]),
        hex::encode(&u[6..8]),
        hex::encode(&u[8..10]),
        hex::encode(&u[10..16])
    );
    let label = String::from_utf8_lossy(&sb[0x78..0x88])
        .trim_end_matches('\0')
        .to_string();
    Some((
        uuid,
        label,
        blocks.checked_mul(block)?,
        blocks.saturating_sub(free).checked_mul(block)?,
    ))
}

/// Whether an ext2/3/4 superblock's geometry fits the `len` bytes it lives in, checked before
/// ext4-view loads it: ext4-view allocates a descriptor for every block group the superblock
/// implies (a mutated one asked for 24 GiB), so a filesystem larger than its partition, or with
/// fewer than the 256 blocks a group mke2fs allows, is not read.
pub fn ext4_geometry_fits(sb: &[u8], len: u64) -> Result<(), String> {
    let Some((_, _, size, _)) = ext4_superblock(sb) else {
        return Err("not an ext2/3/4 superblock".into());
    };
    let le32 = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4")) as u64;
    let block = 1024u64 << le32(0x18).min(16);
    let per_group = le32(0x20);
    if size > len {
        return Err(format!(
            "the filesystem claims {size} bytes in a partition of {len}"
        ));
    }
    if per_group < 256 || per_group > 8 * block {
        return Err(format!(
            "{per_group} blocks a group (ext4 has 256 to {})",
            8 * block
        ));
    }
    Ok(())
}

/// How many inodes an ext2/3/4 filesystem of `len` bytes can hold: what its superblock says,
/// but never more than its bytes hold inode tables for (128 bytes an inode at least; a crafted
/// superblock may claim billions).
pub fn ext4_inode_capacity(sb: &[u8], len: u64) -> u64 {
    let claimed = sb
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")) as u64);
    claimed.min(len / 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A superblock whose geometry does not fit its bytes is not handed to ext4-view.
    #[test]
    fn ext4_geometry_must_fit_the_partition() {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&4096u32.to_le_bytes()); // blocks of 1 KiB
        sb[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        assert_eq!(ext4_geometry_fits(&sb, 4 << 20), Ok(()));
        assert!(
            ext4_geometry_fits(&sb, 1 << 20).is_err(),
            "4 MiB claimed in 1"
        );
        sb[0x20..0x24].copy_from_slice(&1u32.to_le_bytes());
        assert!(
            ext4_geometry_fits(&sb, 4 << 20).is_err(),
            "a group of 1 block"
        );
        sb[0x20..0x24].copy_from_slice(&9000u32.to_le_bytes());
        assert!(
            ext4_geometry_fits(&sb, 4 << 20).is_err(),
            "more than a bitmap holds"
        );
    }

    /// A superblock's inode count stands only as far as the bytes hold inode tables.
    #[test]
    fn inode_capacity_is_bounded_by_the_filesystem_size() {
        let mut sb = vec![0u8; 1024];
        sb[..4].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(ext4_inode_capacity(&sb, 16 << 20), 4096);
        sb[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(ext4_inode_capacity(&sb, 16 << 20), (16 << 20) / 128);
        assert_eq!(ext4_inode_capacity(&[], 16 << 20), 0);
    }

    /// Numbers a crafted table or superblock chose to overflow: no partition, no filesystem,
    /// no panic (debug) and no wrapped offset (release).
    #[test]
    fn overflowing_tables_and_superblocks_are_refused() {
        let mut head = vec![0u8; 34 * 512];
        head[510] = 0x55;
        head[511] = 0xaa;
        head[446 + 4] = 0xee;
        head[512..520].copy_from_slice(b"EFI PART");
        head[512 + 72] = 2; // entries at LBA 2
        head[512 + 80] = 2; // two entries
        head[512 + 84] = 128; // of 128 bytes
        for (i, (first, last)) in [(0u64, u64::MAX), (u64::MAX / 256, u64::MAX / 256)]
            .iter()
            .enumerate()
        {
            let e = 1024 + i * 128;
            head[e] = 1; // a type GUID
            head[e + 32..e + 40].copy_from_slice(&first.to_le_bytes());
            head[e + 40..e + 48].copy_from_slice(&last.to_le_bytes());
        }
        let (_, parts) = partitions(&head).unwrap();
        assert!(parts.is_empty(), "{parts:?}");
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        sb[0x18] = 6; // 64 KiB blocks
        sb[0x60] = 0x80; // 64-bit
        sb[0x150..0x154].copy_from_slice(&u32::MAX.to_le_bytes());
        sb[0x4..0x8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(ext4_superblock(&sb), None);
    }

    #[test]
    fn l2_entries_decode() {
        assert_eq!(l2_entry(0, 16), Cluster::Unallocated);
        assert_eq!(l2_entry(1, 16), Cluster::Zero);
        assert_eq!(l2_entry((1 << 63) | 0x50000, 16), Cluster::Data(0x50000));
        // Compressed, 64 KiB clusters: x = 54; two sectors from offset 0x1234.
        let e = (1u64 << 62) | (1u64 << 54) | 0x1234;
        assert_eq!(l2_entry(e, 16), Cluster::Compressed(0x1234, 1024 - 0x34));
    }

    #[test]
    fn headers_that_are_not_qcow2_are_refused() {
        assert!(parse_qcow2_header(
            b"not an image at all, not even close to 72 bytes long......................"
        )
        .is_err());
        let mut h = vec![0u8; 112];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[7] = 3;
        h[23] = 16;
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h[104] = 1;
        let p = parse_qcow2_header(&h).unwrap();
        assert_eq!((p.version, p.cluster_bits, p.size), (3, 16, 1 << 30));
        assert_eq!(p.compression_type, 1);
        h[23] = 40;
        assert!(parse_qcow2_header(&h).is_err());
    }

    #[test]
    fn mbr_and_gpt_tables() {
        let mut d = vec![0u8; 34 * 512];
        d[510] = 0x55;
        d[511] = 0xaa;
        let e = &mut d[446..462];
        e[0] = 0x80;
        e[4] = 0x83;
        e[8..12].copy_from_slice(&2048u32.to_le_bytes());
        e[12..16].copy_from_slice(&4096u32.to_le_bytes());
        let (t, p) = partitions(&d).unwrap();
        assert_eq!(t, "msdos");
        assert_eq!(
            p,
            [Part {
                number: 1,
                start: 1 << 20,
                size: 2 << 20,
                kind: "0x83".into(),
                bootable: true
            }]
        );
        // Protective MBR + a GPT with one Linux filesystem partition.
        d[446..462].fill(0);
        d[446 + 4] = 0xee;
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        // 0FC63DAF-8483-4772-8E79-3D69D8477DE4, mixed-endian.
        let g = [
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ];
        d[1024..1040].copy_from_slice(&g);
        d[1024 + 32..1024 + 40].copy_from_slice(&2048u64.to_le_bytes());
        d[1024 + 40..1024 + 48].copy_from_slice(&4095u64.to_le_bytes());
        let (t, p) = partitions(&d).unwrap();
        assert_eq!(t, "gpt");
        assert_eq!(p[0].kind, "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        assert_eq!((p[0].start, p[0].size), (1 << 20, 1 << 20));
        d[510] = 0;
        assert_eq!(partitions(&d), None);
    }
}
