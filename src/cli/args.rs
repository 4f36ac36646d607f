//! The command line's clap types (flags, subcommands) and their small parsers.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::image;
use crate::vocab::{Compression, Format, Subformat};

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Bake golden VM images from YAML recipes"
)]
pub struct Cli {
    /// Log at debug level (the exact external commands).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OnError {
    /// Remove the domain, disks and staging directory (logs are kept in NAME-VERSION.failed/).
    Cleanup,
    /// Keep the domain, disks and logs for inspection and say how to look at them.
    Keep,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
}

/// What `validate`, `plan` and `build` read a recipe with.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct RecipeInput {
    /// Override a variable: NAME=VALUE.
    #[arg(long = "var", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Trust the recipe and its elements: let them run scripts on this host (sysprep.scripts),
    /// bring a domain template of their own and read host files outside their directory
    /// (recipes below a directory in $KILN_TRUSTED_RECIPES are trusted too).
    #[arg(long)]
    pub trust_recipe: bool,
}

/// `kiln build`'s flags: one recipe is built in this process; several (or a directory of them)
/// each in a `kiln build` process of its own, `--jobs` at a time.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct BuildArgs {
    /// Recipes, or directories whose *.yaml and *.yml files are recipes.
    #[arg(required = true, value_name = "RECIPE")]
    pub recipes: Vec<PathBuf>,
    /// Catalog directory; the image lands in DIR/NAME-VERSION (default: the recipe's
    /// publish.local.dir, else ./kiln-output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OnError::Cleanup)]
    pub on_error: OnError,
    #[command(flatten)]
    pub input: RecipeInput,
    /// Cache for base disks and downloads (default: $KILN_CACHE_DIR or ~/.cache/kiln).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Builds at once, for several recipes (default: what the cores and the available memory
    /// hold: each build's VM needs its vCPUs and its memory).
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// With several recipes: go on starting builds after one failed (default: start no more,
    /// let the running ones finish).
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Outputs converted at the same time (default: the core count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub convert_jobs: Option<u16>,
    /// Skip publish.glance (publish later with `kiln publish DIR`).
    #[arg(long)]
    pub no_glance: bool,
    /// Skip the boot test (the recipe's `test:`).
    #[arg(long)]
    pub no_test: bool,
    /// Take nothing from the stage cache and store nothing in it.
    #[arg(long, conflicts_with = "rebuild_from")]
    pub no_cache: bool,
    /// Run this stage and every one after it again, even when the stage cache has them.
    #[arg(long, value_name = "STAGE", value_parser = ["source", "provision", "cloud-init", "sysprep", "convert"])]
    pub rebuild_from: Option<String>,
    /// Stop after this stage; its result stays in the stage cache (to inspect the
    /// provisioned disk, say). Nothing is published.
    #[arg(long, value_name = "STAGE", conflicts_with = "no_cache", value_parser = ["provision", "sysprep", "convert"])]
    pub until: Option<String>,
    /// Provision again even if the cache has the disk (newer packages from the mirror).
    #[arg(long, conflicts_with = "no_cache")]
    pub refresh: bool,
    /// Share the stage cache through object storage: s3://BUCKET[/PREFIX] (Swift's S3
    /// API, Ceph RGW, MinIO, AWS). Local misses are pulled from it, results pushed to it.
    /// Default: $KILN_CACHE_REMOTE, else the recipe's cache.remote. Credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the endpoint from AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL", conflicts_with = "no_cache")]
    pub cache_remote: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check recipes (and their elements and templates); report every problem with its position.
    Validate {
        #[arg(required = true)]
        recipes: Vec<PathBuf>,
        #[command(flatten)]
        input: RecipeInput,
    },
    /// Show what a build would do: elements, stages with inputs, exact commands; render the
    /// templates into a directory.
    Plan {
        recipe: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        #[command(flatten)]
        input: RecipeInput,
        /// Where rendered templates go (default: ./NAME-VERSION.plan).
        #[arg(long)]
        render_dir: Option<PathBuf>,
        /// Catalog directory, as for `build` (default: the recipe's publish.local.dir, else
        /// ./kiln-output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Cache to look for base disks and downloads in, as for `build` (default:
        /// $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// The remote stage cache to look keys up in, as for `build` (default:
        /// $KILN_CACHE_REMOTE, else the recipe's cache.remote).
        #[arg(long, value_name = "URL")]
        cache_remote: Option<String>,
    },
    /// Build the image of a recipe, or the images of several (`-j N` at once, a summary at the
    /// end).
    Build(Box<BuildArgs>),
    /// Publish a finished build (a catalog directory with manifest.json) to Glance, with the
    /// recipe's publish.glance settings (or defaults); records the image ids in the manifest.
    Publish {
        /// The build's output directory (NAME-VERSION in the catalog).
        dir: PathBuf,
        /// Publish to this cloud in clouds.yaml (another target, with the recipe's first
        /// target's settings; default: every target of the recipe's publish.glance, a target
        /// without a cloud on $OS_CLOUD, else the OS_* variables).
        #[arg(long)]
        os_cloud: Option<String>,
        /// Publish to this region of the cloud (another target, as --os-cloud).
        #[arg(long, value_name = "REGION")]
        os_region_name: Option<String>,
        /// Image name (one format only; default: the recipe's, else NAME-VERSION).
        #[arg(long)]
        name: Option<String>,
    },
    /// Convert a disk image to one or more formats, in parallel, verified and atomic.
    Convert(ConvertArgs),
    /// Sysprep disk images in place (virt-sysprep's operations, machine-id left empty).
    Sysprep(Box<SysprepArgs>),
    /// Boot an image like a new cloud instance (throwaway overlay, fresh NoCloud seed, ssh
    /// login over user networking) and check it: cloud-init, growth, machine-id, host keys,
    /// hostname, failed units, and the --check-* checks. Exit 1 when a check fails.
    Test(Box<super::boot::TestArgs>),
    /// What changed between two builds (kiln output directories, images or root trees):
    /// packages, files and services added, removed and changed. Exit 0: the same; 1: they differ.
    Diff(super::diff::DiffArgs),
    /// What an image holds: os-release, kernels, boot loader, partitions, filesystems, fstab,
    /// packages, services, cloud-init, sshd, accounts, machine-id, and warnings.
    Inspect(super::inspect::InspectArgs),
    /// Images in Glance, like `openstack image` (auth from clouds.yaml or OS_* variables).
    Image {
        /// Cloud in clouds.yaml (default: $OS_CLOUD, else the OS_* variables).
        #[arg(long, env = "OS_CLOUD", global = true)]
        os_cloud: Option<String>,
        /// The cloud's region whose Glance to use (default: the cloud's region_name).
        #[arg(long, env = "OS_REGION_NAME", global = true, value_name = "REGION")]
        os_region_name: Option<String>,
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Show an image's format, sizes, sha256 and backing file.
    Info {
        image: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Remove what builds that died left behind (domains, staging directories, partial files),
    /// never a live build's.
    Gc {
        /// Catalog directories to look in (repeatable; default ./kiln-output).
        #[arg(short, long)]
        output: Vec<PathBuf>,
        /// Cache to look in (default: $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else
        /// ~/.cache/kiln).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// libvirt connection to look for domains on.
        #[arg(long, default_value = crate::plan::DEFAULT_URI)]
        connect: String,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove what another host or pid namespace left too (a container sharing libvirtd,
        /// the catalog or the cache), which is otherwise listed and kept: only once none of
        /// its builds can still run. See the list first without it.
        #[arg(long)]
        force_foreign: bool,
    },
    /// The stage cache: what builds reuse (list, show, prune, clear).
    Cache {
        /// Cache directory (default: $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else
        /// ~/.cache/kiln).
        #[arg(long, global = true)]
        cache_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// One self-contained HTML page of a catalog: each build's stage timeline, boot test,
    /// SBOM summary, packages changed since the previous version, outputs, where it went.
    Report {
        /// The catalog directory (a build's `-o`; default ./kiln-output).
        #[arg(default_value = "kiln-output")]
        dir: PathBuf,
        /// Where to write the page (default: DIR/report.html); `-` for stdout. A file there
        /// is replaced only if kiln report wrote it.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Job definitions for an engine teams already run: one job per recipe (a matrix), sharing
    /// the remote stage cache, publishing from the job.
    Ci(Box<crate::cli::ci::CiArgs>),
    /// Print the JSON Schema of recipes (for editors).
    Schema,
    /// Built-in and local elements.
    Elements {
        #[command(subcommand)]
        command: ElementsCommand,
    },
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Source image.
    pub src: PathBuf,
    /// Output format; repeat for several outputs (converted in parallel).
    #[arg(short = 'O', long = "output-format", required = true, value_enum)]
    pub formats: Vec<Format>,
    /// Output file (one format) or directory (several); default: next to SRC, named
    /// after it with the format's extension.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// vmdk: monolithicSparse|streamOptimized; vpc: dynamic|fixed. Applies to the formats
    /// it fits.
    #[arg(long, value_enum)]
    pub subformat: Option<Subformat>,
    /// qcow2: compress with zlib or zstd.
    #[arg(long, value_enum)]
    pub compress: Option<Compression>,
    /// qcow2: cluster size, a power of two from 512 to 2M (e.g. 64K, 2M; default 64K).
    #[arg(long)]
    pub cluster_size: Option<String>,
    /// Source format (default: probed).
    #[arg(short = 'f', long = "source-format")]
    pub source_format: Option<String>,
    /// Replace existing outputs.
    #[arg(long)]
    pub force: bool,
    /// Concurrent conversions (default: the core count).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// A backing file the image may have (repeat for a chain): kiln follows no backing file
    /// it was not named, as a crafted image can name any file on the host.
    #[arg(long, value_name = "FILE")]
    pub backing: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SysprepArgs {
    /// Image to sysprep (repeat for several; each is done in turn).
    #[arg(short = 'a', long = "add", required_unless_present = "list_operations")]
    pub images: Vec<PathBuf>,
    /// Image format (default: probed).
    #[arg(long)]
    pub format: Option<String>,
    /// A backing file the image may have (repeat for a chain): kiln follows no backing file
    /// it was not named, as a crafted image can name any file on the host.
    #[arg(long, value_name = "FILE")]
    pub backing: Vec<PathBuf>,
    /// Operations in virt-sysprep syntax: defaults, op, +op, -op (comma-separated; repeatable).
    #[arg(long)]
    pub operations: Vec<String>,
    /// Enable exactly these operations (comma-separated), like virt-sysprep --enable.
    #[arg(long, conflicts_with = "operations")]
    pub enable: Option<String>,
    /// List the operations: name, `*` when on by default, description.
    #[arg(long)]
    pub list_operations: bool,
    /// Change nothing; print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Accelerator for the libguestfs appliance.
    #[arg(long, value_enum, default_value_t = crate::recipe::model::Accel::Auto)]
    pub accel: crate::recipe::model::Accel,
    /// user-account: remove only these users (comma-separated; repeatable).
    #[arg(long, value_name = "USERS")]
    pub remove_user_accounts: Vec<String>,
    /// user-account: keep these users (comma-separated; repeatable).
    #[arg(long, value_name = "USERS")]
    pub keep_user_accounts: Vec<String>,
    /// script: a host shell command run with the guest's root as working directory.
    #[arg(long, value_name = "SCRIPT")]
    pub script: Vec<String>,
    #[command(flatten)]
    pub customize: CustomizeArgs,
}

/// virt-customize's operations, applied (in command-line order) by the `customize` operation.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Customize (virt-customize syntax, applied in order)")]
pub struct CustomizeArgs {
    /// Write CONTENT to FILE.
    #[arg(long, value_name = "FILE:CONTENT")]
    pub write: Vec<String>,
    /// Append LINE to FILE.
    #[arg(long, value_name = "FILE:LINE")]
    pub append_line: Vec<String>,
    /// Copy a host file or directory into REMOTEDIR.
    #[arg(long, value_name = "LOCALPATH:REMOTEDIR")]
    pub copy_in: Vec<String>,
    /// Upload a host file to DEST.
    #[arg(long, value_name = "FILE:DEST")]
    pub upload: Vec<String>,
    /// Create a directory (and parents).
    #[arg(long, value_name = "DIR")]
    pub mkdir: Vec<String>,
    /// Delete a file or directory tree (globs allowed).
    #[arg(long, value_name = "PATH")]
    pub delete: Vec<String>,
    /// Change a file's mode (octal).
    #[arg(long, value_name = "PERMISSIONS:FILE")]
    pub chmod: Vec<String>,
    /// Create symbolic links to TARGET.
    #[arg(long, value_name = "TARGET:LINK[:LINK..]")]
    pub link: Vec<String>,
    /// Create an empty file or update its times.
    #[arg(long, value_name = "FILE")]
    pub touch: Vec<String>,
    /// Run a shell command in the guest.
    #[arg(long, value_name = "CMD")]
    pub run_command: Vec<String>,
    /// Run a host script in the guest.
    #[arg(long, value_name = "SCRIPT")]
    pub run: Vec<String>,
    /// Install packages (comma-separated) with the guest's package manager.
    #[arg(long, value_name = "PKG,PKG..")]
    pub install: Vec<String>,
    /// Remove packages (comma-separated).
    #[arg(long, value_name = "PKG,PKG..")]
    pub uninstall: Vec<String>,
    /// root's password: password:PW, file:FILE, random, disabled, locked[:SELECTOR].
    #[arg(long, value_name = "SELECTOR")]
    pub root_password: Vec<String>,
    /// A user's password: USER:SELECTOR.
    #[arg(long, value_name = "USER:SELECTOR")]
    pub password: Vec<String>,
    /// Add an ssh key: USER:file:KEYFILE or USER:string:KEY.
    #[arg(long, value_name = "USER:SELECTOR")]
    pub ssh_inject: Vec<String>,
    /// Set the hostname.
    #[arg(long, value_name = "HOSTNAME")]
    pub hostname: Vec<String>,
    /// Set the time zone (e.g. Europe/Paris).
    #[arg(long, value_name = "TIMEZONE")]
    pub timezone: Vec<String>,
    /// Run a command once at first boot.
    #[arg(long, value_name = "CMD")]
    pub firstboot_command: Vec<String>,
    /// Relabel files for SELinux.
    #[arg(long)]
    pub selinux_relabel: bool,
}

/// The customize flags of `m` as steps, in the order they were given.
pub(super) fn customize_in_order(
    m: &clap::ArgMatches,
) -> Result<Vec<crate::customize::Customize>, String> {
    let mut found: Vec<(usize, String, String)> = Vec::new();
    for (name, _, _) in crate::customize::OPERATIONS {
        let id = name.replace('-', "_");
        if *name == "selinux-relabel" {
            if m.get_flag(&id) {
                let at = m.index_of(&id).unwrap_or(usize::MAX);
                found.push((at, name.to_string(), String::new()));
            }
            continue;
        }
        if let (Some(idx), Some(vals)) = (m.indices_of(&id), m.get_many::<String>(&id)) {
            for (i, v) in idx.zip(vals) {
                found.push((i, name.to_string(), v.clone()));
            }
        }
    }
    found.sort_by_key(|f| f.0);
    let cwd = std::env::current_dir().unwrap_or_default();
    found
        .into_iter()
        .map(|(_, name, arg)| {
            // The user's own command line: host files anywhere.
            let host = crate::customize::HostFiles {
                base: &cwd,
                inside: false,
            };
            crate::customize::parse(&name, &arg, host).map_err(|e| format!("--{name}: {e}"))
        })
        .collect()
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Every entry: key, stage, size, last use, what it builds on.
    List {
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// One entry (a key or a unique prefix of one).
    Show { key: String },
    /// Evict least recently used entries until the cache holds at most SIZE (e.g. 20G);
    /// an entry another one builds on goes only after it.
    Prune { max_size: String },
    /// Remove every entry.
    Clear,
    /// Make a key pair for signing what this machine pushes to a remote cache: NAME.secret
    /// (0600; KILN_CACHE_SIGNING_KEY names it) and NAME.public (KILN_CACHE_TRUSTED_KEYS on
    /// the machines that pull takes its content).
    Keygen {
        /// The key's name, which signatures carry (e.g. ci-1).
        name: String,
        /// Where to write the two files (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ElementsCommand {
    /// List elements on the search path.
    List,
    /// Show one element's file and where it was found.
    Show { name: String },
}

pub(crate) fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, found `{s}`"))?;
    if k.is_empty() {
        return Err("empty variable name".into());
    }
    Ok((k.to_string(), v.to_string()))
}
