//! One case for the image targets: the bytes as an image file of `format`, through what kiln
//! reads of an untrusted image on the host: the container (qcow2 L1/L2, compressed clusters),
//! the partition table, ext2/3/4 through ext4-view, the guest files inspect parses, and the
//! bounded walk `kiln diff` takes.

use std::io::Write;
use std::sync::OnceLock;

pub fn run(data: &[u8], format: &str) {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // tmpfs: a case is a file write, not a disk write.
    let dir = DIR.get_or_init(|| tempfile::tempdir_in("/dev/shm").expect("tmpdir"));
    let path = dir.path().join(format!("case.{format}"));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(data))
        .expect("write case");
    let _ = kiln::diskread::partitions(&data[..data.len().min(34 * 512)]);
    let img = kiln::diskread::Image {
        path,
        format: format.into(),
        virtual_size: 0,
        backing: None,
    };
    let _ = kiln::inspect::read_host(&img);
    if let Ok((view, _)) = kiln::inspect::open_host(&img) {
        let _ = kiln::imagediff::Root::tree(&view, true);
    }
}
