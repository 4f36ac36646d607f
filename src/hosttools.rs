//! The host tools whose versions can change the bytes a stage makes, asked once per process
//! (the host does not change under a running kiln): qemu-img writes every output but kiln's
//! own streamOptimized vmdk, libguestfs's appliance writes the filesystem changes of
//! cloud-init, customize and sysprep, the host's apt picks the packages it resolves. They are
//! in those stages' cache keys (an upgraded tool rebuilds, never reuses) and in the manifest.

use std::sync::OnceLock;

/// The versions, as the tools print them (a distribution's revision included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTools {
    /// `qemu-img --version`'s first line.
    pub qemu_img: String,
    /// libguestfs's version (major.minor.release), "unknown" without the library.
    pub libguestfs: String,
}

impl HostTools {
    /// This host's tools (asked on first use).
    pub fn here() -> &'static HostTools {
        static TOOLS: OnceLock<HostTools> = OnceLock::new();
        TOOLS.get_or_init(|| HostTools {
            qemu_img: crate::process::tool_version("qemu-img"),
            libguestfs: crate::guest::version(),
        })
    }
}

/// The host's `apt-get --version` first line, when there is an apt (asked on first use).
pub fn apt() -> Option<&'static str> {
    static APT: OnceLock<Option<String>> = OnceLock::new();
    APT.get_or_init(|| crate::process::version_line("apt-get"))
        .as_deref()
}
