//! `kiln image`'s command line: its subcommands and flags (clap), shaped like `openstack image`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::parse_var;
use crate::glance::publish::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    #[value(alias = "text")]
    Table,
    Json,
}

/// `--private|--shared|--public|--community`, as openstack spells them.
#[derive(Args, Debug, Default)]
#[group(multiple = false)]
pub struct VisibilityFlags {
    #[arg(long)]
    pub(super) private: bool,
    #[arg(long)]
    pub(super) shared: bool,
    #[arg(long)]
    pub(super) public: bool,
    #[arg(long)]
    pub(super) community: bool,
}

impl VisibilityFlags {
    pub(super) fn get(&self) -> Option<&'static str> {
        [
            (self.private, "private"),
            (self.shared, "shared"),
            (self.public, "public"),
            (self.community, "community"),
        ]
        .into_iter()
        .find(|(on, _)| *on)
        .map(|(_, v)| v)
    }
}

#[derive(Args, Debug, Default)]
#[group(multiple = false)]
pub struct ProtectedFlags {
    /// Prevent deletion.
    #[arg(long)]
    pub(super) protected: bool,
    /// Allow deletion.
    #[arg(long)]
    pub(super) unprotected: bool,
}

impl ProtectedFlags {
    pub(super) fn get(&self) -> Option<bool> {
        match (self.protected, self.unprotected) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

/// Glance's interoperable import methods (`upload` is `kiln image create --file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportMethod {
    GlanceDirect,
    WebDownload,
    CopyImage,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images (every page), newest first unless --sort says otherwise.
    List {
        #[arg(long)]
        name: Option<String>,
        /// Only images with this tag (repeat: all of them).
        #[arg(long)]
        tag: Vec<String>,
        #[arg(long)]
        status: Option<String>,
        /// public, private, shared, community or all.
        #[arg(long)]
        visibility: Option<String>,
        /// Only images with this property value (repeat).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_var)]
        property: Vec<(String, String)>,
        /// Sort keys, e.g. name:asc,created_at:desc.
        #[arg(long)]
        sort: Option<String>,
        #[arg(short = 'f', long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
    },
    /// Show one image (by id, or by a unique name).
    Show {
        image: String,
        #[arg(short = 'f', long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
    },
    /// Create an image; with --file, stream the data in (Content-Length, SHA-512 verified
    /// against Glance's os_hash_value). A failed upload leaves no record behind.
    Create(Box<CreateArgs>),
    /// Change an image: name, visibility, protection, min_disk/min_ram, properties, tags.
    Set(Box<SetArgs>),
    /// Remove properties or tags.
    Unset {
        image: String,
        #[arg(long, value_name = "KEY")]
        property: Vec<String>,
        #[arg(long)]
        tag: Vec<String>,
    },
    /// Add or remove tags.
    Tag {
        #[command(subcommand)]
        command: TagCommand,
    },
    /// Share an image with other projects (the image must be `shared`).
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Accept an image shared with this project.
    Accept { image: String },
    /// Reject an image shared with this project.
    Reject { image: String },
    /// Make an image's data unavailable (owner or admin).
    Deactivate { image: String },
    /// Make a deactivated image available again.
    Reactivate { image: String },
    /// Download (export) an image's data: verified (SHA-512, else MD5) and written atomically.
    Download {
        image: String,
        /// Output file.
        #[arg(short = 'o', long = "file", visible_alias = "output")]
        file: PathBuf,
    },
    /// Delete images (protected ones refuse).
    Delete {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import data into an existing image: glance-direct (stages --file first), web-download
    /// (--uri) or copy-image (--store, admin); follows the task until active or failed.
    Import {
        image: String,
        #[arg(long, value_enum)]
        method: ImportMethod,
        /// glance-direct: the file to stage.
        #[arg(long)]
        file: Option<PathBuf>,
        /// web-download: where Glance fetches the data.
        #[arg(long)]
        uri: Option<String>,
        /// Target store (repeat).
        #[arg(long = "store")]
        stores: Vec<String>,
        /// Give up following the import after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// The import tasks of an image.
    Tasks {
        image: String,
        #[arg(short = 'f', long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
    },
    /// The image cache (admin): list, queue, delete, clear, clean, prune.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

impl clap::ValueEnum for Method {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Method::Upload,
            Method::GlanceDirect,
            Method::WebDownload,
            Method::CopyImage,
        ]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub(super) name: String,
    /// The data (omit to create a queued record, e.g. for `import`).
    #[arg(long)]
    pub(super) file: Option<PathBuf>,
    /// qcow2, raw, vmdk, vdi, vhd, vhdx, iso, … (default: probed from --file by qemu-img).
    #[arg(long)]
    pub(super) disk_format: Option<String>,
    #[arg(long, default_value = "bare")]
    pub(super) container_format: String,
    #[command(flatten)]
    pub(super) visibility: VisibilityFlags,
    #[command(flatten)]
    pub(super) protected: ProtectedFlags,
    /// GiB (default: the file's virtual size, rounded up).
    #[arg(long)]
    pub(super) min_disk: Option<u64>,
    /// MiB.
    #[arg(long, default_value_t = 0)]
    pub(super) min_ram: u64,
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_var)]
    pub(super) property: Vec<(String, String)>,
    #[arg(long)]
    pub(super) tag: Vec<String>,
    /// Share with this project once active (repeat; implies --shared).
    #[arg(long, value_name = "PROJECT_ID")]
    pub(super) member: Vec<String>,
    /// How the data goes in: upload (default), glance-direct, web-download, copy-image.
    #[arg(long, value_enum, default_value_t = Method::Upload)]
    pub(super) import_method: Method,
    /// web-download: where Glance fetches the data.
    #[arg(long)]
    pub(super) uri: Option<String>,
    /// Target store (repeat).
    #[arg(long = "store")]
    pub(super) stores: Vec<String>,
    #[arg(short = 'f', long, value_enum, default_value_t = OutFormat::Table)]
    pub(super) format: OutFormat,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    pub(super) image: String,
    #[arg(long)]
    pub(super) name: Option<String>,
    #[command(flatten)]
    pub(super) visibility: VisibilityFlags,
    #[command(flatten)]
    pub(super) protected: ProtectedFlags,
    #[arg(long)]
    pub(super) min_disk: Option<u64>,
    #[arg(long)]
    pub(super) min_ram: Option<u64>,
    #[arg(long)]
    pub(super) disk_format: Option<String>,
    #[arg(long)]
    pub(super) container_format: Option<String>,
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_var)]
    pub(super) property: Vec<(String, String)>,
    /// Add a tag (repeat).
    #[arg(long)]
    pub(super) tag: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum TagCommand {
    Add {
        image: String,
        #[arg(required = true)]
        tags: Vec<String>,
    },
    Remove {
        image: String,
        #[arg(required = true)]
        tags: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Share IMAGE with project PROJECT_ID (status pending until the project accepts).
    Add {
        image: String,
        project: String,
    },
    Remove {
        image: String,
        project: String,
    },
    List {
        image: String,
        #[arg(short = 'f', long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
    },
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Cached and queued images.
    List {
        #[arg(short = 'f', long, value_enum, default_value_t = OutFormat::Table)]
        format: OutFormat,
    },
    /// Queue images for caching.
    Queue {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove images from the cache.
    Delete {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Empty the cache and the queue (or only one with --target).
    Clear {
        #[arg(long, value_parser = ["cache", "queue"])]
        target: Option<String>,
    },
    /// Remove invalid and stalled cache entries.
    Clean,
    /// Shrink the cache to its size limit.
    Prune,
}
