//! Command line: parsing, dispatch and exit codes. `validate`, `plan`, `schema` and `elements`
//! never touch libvirt, disks or the network.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that never panics: once stdout's reader has gone (`kiln … | head`), output is
/// dropped and the command carries on to its normal end (a build still cleans up).
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*)))
    };
}
/// `print!` likewise.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))
    };
}
/// `eprintln!` likewise, for stderr.
macro_rules! errln {
    ($($t:tt)*) => {
        $crate::cli::write_err(format_args!("{}\n", format_args!($($t)*)))
    };
}

mod image;

static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STDERR_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn write_to(
    gone: &std::sync::atomic::AtomicBool,
    mut w: impl std::io::Write,
    args: std::fmt::Arguments,
) {
    use std::sync::atomic::Ordering;
    if gone.load(Ordering::Relaxed) {
        return;
    }
    // Any write error (EPIPE above all) means nobody reads any more: stop writing, quietly.
    if w.write_fmt(args).is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

#[doc(hidden)]
pub fn write_out(args: std::fmt::Arguments) {
    write_to(&STDOUT_GONE, std::io::stdout().lock(), args)
}

#[doc(hidden)]
pub fn write_err(args: std::fmt::Arguments) {
    write_to(&STDERR_GONE, std::io::stderr().lock(), args)
}

use crate::exit;
use crate::plan::{Plan, SourcePlan};
use crate::process::{self, Cancel};
use crate::recipe::model::{Compression, Format, Subformat};
use crate::recipe::{self, Diagnostic};
use crate::seed::TemplateContext;
use crate::templates::{self, Kind};

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check recipes (and their elements and templates); report every problem with its position.
    Validate {
        #[arg(required = true)]
        recipes: Vec<PathBuf>,
        /// Override a variable: NAME=VALUE.
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
    },
    /// Show what a build would do: elements, stages with inputs, exact commands; render the
    /// templates into a directory.
    Plan {
        recipe: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
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
    },
    /// Build the image.
    Build {
        recipe: PathBuf,
        /// Catalog directory; the image lands in DIR/NAME-VERSION (default: the recipe's
        /// publish.local.dir, else ./kiln-output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OnError::Cleanup)]
        on_error: OnError,
        #[arg(long = "var", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Cache for base disks and downloads (default: $KILN_CACHE_DIR or ~/.cache/kiln).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Outputs converted at the same time (default: the core count).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Skip publish.glance (publish later with `kiln publish DIR`).
        #[arg(long)]
        no_glance: bool,
    },
    /// Publish a finished build (a catalog directory with manifest.json) to Glance, with the
    /// recipe's publish.glance settings (or defaults); records the image ids in the manifest.
    Publish {
        /// The build's output directory (NAME-VERSION in the catalog).
        dir: PathBuf,
        /// Cloud in clouds.yaml (default: the recipe's publish.glance.cloud, $OS_CLOUD, OS_*).
        #[arg(long, env = "OS_CLOUD")]
        os_cloud: Option<String>,
        /// Image name (one format only; default: the recipe's, else NAME-VERSION).
        #[arg(long)]
        name: Option<String>,
    },
    /// Convert a disk image to one or more formats, in parallel, verified and atomic.
    Convert(ConvertArgs),
    /// Sysprep disk images in place (virt-sysprep's operations, machine-id left empty).
    Sysprep(Box<SysprepArgs>),
    /// Images in Glance, like `openstack image` (auth from clouds.yaml or OS_* variables).
    Image {
        /// Cloud in clouds.yaml (default: $OS_CLOUD, else the OS_* variables).
        #[arg(long, env = "OS_CLOUD", global = true)]
        os_cloud: Option<String>,
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Show an image's format, sizes, sha256 and backing file.
    Info {
        image: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
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
}

#[derive(clap::Args, Debug)]
pub struct SysprepArgs {
    /// Image to sysprep (repeat for several; each is done in turn).
    #[arg(short = 'a', long = "add", required_unless_present = "list_operations")]
    pub images: Vec<PathBuf>,
    /// Image format (default: probed).
    #[arg(long)]
    pub format: Option<String>,
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
fn customize_in_order(m: &clap::ArgMatches) -> Result<Vec<crate::customize::Customize>, String> {
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
            crate::customize::parse(&name, &arg, &cwd).map_err(|e| format!("--{name}: {e}"))
        })
        .collect()
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

pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::INVALID_INPUT
            } else {
                exit::OK
            };
        }
    };
    crate::logging::init(cli.log_format == LogFormat::Json, cli.verbose);
    match cli.command {
        Command::Validate { recipes, vars } => validate(&recipes, &vars),
        Command::Plan {
            recipe,
            format,
            vars,
            render_dir,
            output,
            cache_dir,
        } => plan(&recipe, format, &vars, render_dir, output, cache_dir),
        Command::Build {
            recipe,
            output,
            on_error,
            vars,
            cache_dir,
            jobs,
            no_glance,
        } => build(&recipe, output, on_error, &vars, cache_dir, jobs, no_glance),
        Command::Convert(args) => convert_cmd(args),
        Command::Sysprep(args) => {
            // Customize flags apply in command-line order, across flags (as virt-customize).
            let m = matches
                .subcommand_matches("sysprep")
                .expect("sysprep matches");
            match customize_in_order(m) {
                Ok(steps) => sysprep_cmd(*args, steps),
                Err(e) => usage_error(e),
            }
        }
        Command::Info { image, format } => info_cmd(&image, format),
        Command::Schema => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&recipe::recipe_schema()).expect("schema")
            );
            exit::OK
        }
        Command::Elements { command } => elements(command),
        Command::Publish {
            dir,
            os_cloud,
            name,
        } => publish_cmd(&dir, os_cloud.as_deref(), name),
        Command::Image { os_cloud, command } => image::run(os_cloud.as_deref(), command),
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        errln!("error: {d}");
    }
    errln!(
        "{} error{} found",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    );
}

/// Load a recipe and render every template with a sample context (strict mode catches
/// undefined variables in overrides before any build starts).
/// Every problem at once: the recipe's, its elements', and the templates' (rendered even when
/// the recipe has other errors, as far as it resolved).
pub fn load_checked(path: &Path, vars: &[(String, String)]) -> Result<Plan, Vec<Diagnostic>> {
    let (plan, mut errs) = recipe::load_all(path, vars);
    let Some(plan) = plan else {
        return Err(errs);
    };
    let ctx = TemplateContext::new(&plan, "kiln-validate", "qemu", Path::new("/nonexistent"));
    for kind in Kind::ALL {
        if let Err(e) = templates::render(&plan, kind, &ctx) {
            errs.push(template_diag(e));
        }
    }
    if errs.is_empty() {
        Ok(plan)
    } else {
        recipe::sort_diagnostics(&mut errs, &plan.recipe_path);
        Err(errs)
    }
}

fn template_diag(e: templates::TemplateError) -> Diagnostic {
    match e {
        templates::TemplateError::Render {
            origin,
            line,
            column,
            message,
        } => Diagnostic {
            file: PathBuf::from(origin),
            line,
            column,
            message,
        },
        templates::TemplateError::Read { path, source } => Diagnostic {
            file: path,
            line: 1,
            column: 1,
            message: format!("cannot read template: {source}"),
        },
    }
}

fn validate(recipes: &[PathBuf], vars: &[(String, String)]) -> i32 {
    let mut all = Vec::new();
    for r in recipes {
        match load_checked(r, vars) {
            Ok(p) => outln!(
                "ok: {} ({}, {} element{}, {} provisioning step{})",
                r.display(),
                p.slug(),
                p.elements.len(),
                if p.elements.len() == 1 { "" } else { "s" },
                p.provision.len(),
                if p.provision.len() == 1 { "" } else { "s" }
            ),
            Err(mut d) => all.append(&mut d),
        }
    }
    if all.is_empty() {
        exit::OK
    } else {
        print_diagnostics(&all);
        exit::INVALID_INPUT
    }
}

/// One stage of the plan: its inputs and the external commands it will run.
#[derive(serde::Serialize)]
struct PlannedStage {
    name: &'static str,
    inputs: serde_json::Value,
    commands: Vec<String>,
}

fn planned_stages(plan: &Plan, out_root: &Path, cache: &Path) -> Vec<PlannedStage> {
    let (_, work, out, final_dir) =
        crate::pipeline::context::build_paths(out_root, &plan.slug(), "PID");
    let work = work.as_path();
    use crate::bootstrap;
    use crate::stages::source;
    let disk = work.join("disk.qcow2");
    let mut stages = Vec::new();
    let mut install = None;
    // (commands, base disk path, its format if known now)
    let (source_cmds, base, base_format) = match &plan.source {
        SourcePlan::Installer(inst) => {
            let dir = work.join("install");
            let mut cmds = Vec::new();
            let mut icmds = Vec::new();
            if inst.mirror_check && inst.kind == crate::recipe::model::AnswerKind::Preseed {
                icmds.push(format!(
                    "mirror check: GET {} and HEAD 8 of the udebs it names",
                    crate::installer::udeb_index_url(&inst.answers.mirror, &inst.answers.suite)
                ));
            }
            let (kernel, initrd) = match &inst.media {
                crate::plan::Media::Iso {
                    iso,
                    kernel_paths,
                    initrd_paths,
                } => {
                    cmds.push(source::planned_fetch("ISO", cache, iso));
                    let iso_path = PathBuf::from("<iso>");
                    icmds.push(format!(
                        "{}  (first of: {})",
                        process::display(&crate::installer::xorriso_extract_argv(
                            &iso_path,
                            &kernel_paths[0],
                            &dir.join("vmlinuz")
                        )),
                        kernel_paths.join(", ")
                    ));
                    icmds.push(format!(
                        "{}  (first of: {})",
                        process::display(&crate::installer::xorriso_extract_argv(
                            &iso_path,
                            &initrd_paths[0],
                            &dir.join("initrd.orig")
                        )),
                        initrd_paths.join(", ")
                    ));
                    (dir.join("vmlinuz"), dir.join("initrd.orig"))
                }
                crate::plan::Media::Netboot { kernel, initrd } => {
                    cmds.push(source::planned_fetch("kernel", cache, kernel));
                    cmds.push(source::planned_fetch("initrd", cache, initrd));
                    (PathBuf::from("<kernel>"), PathBuf::from("<initrd>"))
                }
            };
            match inst.delivery {
                crate::recipe::model::Delivery::Initrd => icmds.push(format!(
                    "append /{} (rendered {} answers) to {} as a cpio archive -> {}",
                    inst.answer_file_name(),
                    inst.kind.as_str(),
                    initrd.display(),
                    dir.join("initrd.img").display()
                )),
                crate::recipe::model::Delivery::Seed => {
                    let (label, files) = crate::installer::seed_files(inst, &plan.slug(), "");
                    let paths: Vec<PathBuf> = files
                        .iter()
                        .map(|(n, _)| dir.join("seed").join(n))
                        .collect();
                    icmds.push(format!(
                        "{} answers on a seed disk: {}",
                        inst.kind.as_str(),
                        process::display(&crate::installer::seed_iso_argv(
                            &dir.join("answers.iso"),
                            label,
                            &paths
                        ))
                    ))
                }
            }
            let base = work.join("install.qcow2");
            icmds.push(process::display(&crate::qemu_img::create_argv(
                &base,
                plan.vm.disk_bytes.unwrap_or(8 << 30),
            )));
            icmds.push(format!(
                "libvirt: boot {} + initrd with `{}`; wait up to {} s for the installer to power off; undefine (media detached)",
                kernel.display(),
                inst.cmdline,
                inst.timeout_secs
            ));
            install = Some((
                serde_json::json!({
                    "kind": inst.kind.as_str(), "delivery": inst.delivery,
                    "cmdline": inst.cmdline, "timeout_secs": inst.timeout_secs,
                    "mirror_check": inst.mirror_check,
                }),
                icmds,
            ));
            (cmds, base, Some("qcow2".to_string()))
        }
        SourcePlan::Bootstrap(b) => (
            bootstrap::planned(cache, b),
            bootstrap::cached_disk(cache, b),
            Some("qcow2".to_string()),
        ),
        SourcePlan::Image {
            url,
            path,
            checksum,
            checksum_url,
            format,
        } => {
            let f = crate::plan::FilePlan {
                url: url.clone(),
                path: path.clone(),
                checksum: checksum.clone(),
                checksum_url: checksum_url.clone(),
            };
            let base = match (checksum, path) {
                (Some(c), None) => source::cached_download(cache, c),
                (_, Some(p)) => p.clone(),
                (None, None) => cache.join("images/<checksum from the sums file>"),
            };
            (
                vec![source::planned_fetch("image", cache, &f)],
                base,
                format.clone(),
            )
        }
    };
    stages.push(PlannedStage {
        name: "source",
        inputs: serde_json::to_value(&plan.source).unwrap_or_default(),
        commands: source_cmds,
    });
    if let Some((inputs, commands)) = install {
        stages.push(PlannedStage {
            name: "install",
            inputs,
            commands,
        });
    }
    let size = plan.vm.disk_bytes;
    let mut provision = vec![format!(
        "{}  (size: the larger of vm.disk and the base's)",
        process::display(&crate::qemu_img::create_overlay_argv(
            &base,
            base_format.as_deref().unwrap_or("<probed>"),
            &disk,
            size,
        ))
    )];
    let booted = !plan.provision.is_empty();
    if !booted {
        provision.push("no provisioning steps: the build VM is not booted".into());
    } else {
        if matches!(plan.source, SourcePlan::Image { .. }) {
            provision.push(format!(
                "libguestfs (read-only) on {}: check for /usr/bin/cloud-init before booting (cached per image)",
                base.display()
            ));
        }
        let tctx = TemplateContext::new(plan, "kiln-NAME-XXXXXXXX", "qemu", work);
        let mut seed = vec![work.join("user-data"), work.join("meta-data")];
        if templates::render(plan, Kind::NetworkConfig, &tctx)
            .map(|t| !templates::is_blank(&t))
            .unwrap_or(false)
        {
            seed.push(work.join("network-config"));
        }
        provision.push(process::display(&crate::seed::xorriso_argv(
            &tctx.domain.seed_path,
            &seed,
        )));
        provision.push(format!(
            "libvirt {}: define domain.xml, start, wait for power-off (timeout {} s; ends early on a kernel panic, or {} s after cloud-init finished)",
            plan.vm.uri,
            plan.vm.timeout_secs,
            crate::libvirt::console::CLOUD_INIT_GRACE.as_secs()
        ));
    }
    stages.push(PlannedStage {
        name: "provision",
        inputs: serde_json::json!({
            "vm": plan.vm, "steps": plan.provision,
        }),
        commands: provision,
    });
    stages.push(PlannedStage {
        name: "cloud-init",
        inputs: serde_json::to_value(&plan.cloud_init).unwrap_or_default(),
        commands: vec![format!(
            "libguestfs on {}: {}check /usr/bin/cloud-init; write {}; remove /var/lib/cloud state",
            disk.display(),
            if booted {
                "check the provisioning status in /var/lib/kiln/status; "
            } else {
                ""
            },
            crate::stages::cloud_init::CONFIG_PATH
        )],
    });
    stages.push(PlannedStage {
        name: "sysprep",
        inputs: serde_json::json!({
            "operations": plan.sysprep,
            "options": plan.sysprep_options,
        }),
        commands: plan
            .sysprep_options
            .customize
            .iter()
            .map(|c| format!("customize: {c}"))
            .chain(std::iter::once(format!(
                "libguestfs (same launch): {}; fstrim",
                plan.sysprep.join(", ")
            )))
            .collect(),
    });
    stages.push(PlannedStage {
        name: "undefine",
        inputs: serde_json::json!({ "uri": plan.vm.uri }),
        commands: vec![if booted {
            "libvirt: destroy (if running) and undefine the build domain".into()
        } else {
            "nothing: no domain was defined".into()
        }],
    });
    stages.push(PlannedStage {
        name: "convert",
        inputs: serde_json::to_value(&plan.outputs).unwrap_or_default(),
        commands: plan
            .outputs
            .iter()
            .flat_map(|o| {
                crate::convert::planned(&crate::convert::Job {
                    src: disk.clone(),
                    src_format: "qcow2".into(),
                    out: o.clone(),
                    dst: out.join(o.file_name(&plan.slug())),
                })
            })
            .chain([format!("write {}", out.join("SHA256SUMS").display())])
            .collect(),
    });
    stages.push(PlannedStage {
        name: "publish",
        inputs: serde_json::json!({ "local_dir": plan.publish.local_dir }),
        commands: vec![format!(
            "write manifest.json; rename {} to {}",
            out.display(),
            final_dir.display()
        )],
    });
    if let Some(g) = &plan.publish.glance {
        stages.push(PlannedStage {
            name: "glance",
            inputs: serde_json::to_value(g).unwrap_or_default(),
            commands: g
                .formats
                .iter()
                .map(|f| {
                    let name = g.names.get(f).map(String::as_str).unwrap_or("?");
                    format!(
                        "glance ({}): {} {f} output as `{name}` ({}{}), verify SHA-512{}{}",
                        g.cloud.as_deref().unwrap_or("$OS_CLOUD"),
                        g.method.as_str(),
                        g.visibility,
                        if g.protected { ", protected" } else { "" },
                        if g.members.is_empty() {
                            String::new()
                        } else {
                            format!(", share with {}", g.members.join(", "))
                        },
                        g.keep
                            .map(|k| format!(", keep newest {k}"))
                            .unwrap_or_default()
                    )
                })
                .collect(),
        });
    }
    stages
}

fn publish_cmd(dir: &Path, cloud: Option<&str>, name: Option<String>) -> i32 {
    let manifest_path = dir.join("manifest.json");
    let manifest: serde_json::Value = match std::fs::read_to_string(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            return usage_error(format!(
                "{} is not a kiln build ({}: {e})",
                dir.display(),
                manifest_path.display()
            ))
        }
    };
    let settings = match manifest.get("publish_glance") {
        Some(v) if !v.is_null() => {
            serde_json::from_value::<crate::glance::publish::Settings>(v.clone())
                .map_err(anyhow::Error::from)
        }
        _ => crate::glance::publish::default_settings(&manifest),
    };
    let mut settings = match settings {
        Ok(s) => s,
        Err(e) => return usage_error(format!("{}: {e}", manifest_path.display())),
    };
    if let Some(n) = name {
        if settings.formats.len() != 1 {
            return usage_error("--name needs a single published format");
        }
        settings.names = [(settings.formats[0].clone(), n)].into();
    }
    let cancel = cancel_on_signals();
    match crate::glance::publish::publish_dir(dir, &settings, cloud, &cancel, &mut |_, _| {}) {
        Ok(done) => {
            for p in &done {
                outln!(
                    "{} {} ({}) in {}: {}{}",
                    if p.reused {
                        "already there:"
                    } else {
                        "published"
                    },
                    p.name,
                    p.id,
                    p.cloud,
                    p.status,
                    if p.rotated.is_empty() {
                        String::new()
                    } else {
                        format!("; rotated out {}", p.rotated.join(", "))
                    }
                );
            }
            exit::OK
        }
        Err(e) => {
            errln!("error: {e:#}");
            let user = e
                .chain()
                .find_map(|c| c.downcast_ref::<crate::glance::GlanceError>())
                .is_some_and(|g| g.is_user_error());
            if cancel.is_cancelled() {
                exit::INTERRUPTED
            } else if user {
                exit::INVALID_INPUT
            } else {
                exit::BUILD_FAILED
            }
        }
    }
}

fn plan(
    recipe: &Path,
    format: PlanFormat,
    vars: &[(String, String)],
    render_dir: Option<PathBuf>,
    output: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> i32 {
    let plan = match load_checked(recipe, vars) {
        Ok(p) => p,
        Err(d) => {
            print_diagnostics(&d);
            return exit::INVALID_INPUT;
        }
    };
    let out_root = out_root(output, &plan);
    let cache = cache_dir.unwrap_or_else(crate::build::default_cache_dir);
    let stages = planned_stages(&plan, &out_root, &cache);
    let (_, work, _, _) = crate::pipeline::context::build_paths(&out_root, &plan.slug(), "PID");
    let render_dir = render_dir.unwrap_or_else(|| PathBuf::from(format!("{}.plan", plan.slug())));
    let tctx = TemplateContext::new(
        &plan,
        &format!("kiln-{}-XXXXXXXX", plan.name),
        "qemu",
        &work,
    );
    let mut rendered = Vec::new();
    for kind in Kind::ALL {
        match templates::render(&plan, kind, &tctx) {
            Ok(t) => rendered.push((kind, t)),
            Err(e) => {
                print_diagnostics(&[template_diag(e)]);
                return exit::INVALID_INPUT;
            }
        }
    }
    let answers = match templates::render_answers(&plan) {
        Ok(a) => a,
        Err(e) => {
            print_diagnostics(&[template_diag(e)]);
            return exit::INVALID_INPUT;
        }
    };
    let script = crate::seed::provision_script(&plan.provision);
    let write = templates::write_all(&render_dir, &rendered)
        .and_then(|_| std::fs::write(render_dir.join("provision.sh"), &script))
        .and_then(|_| match (&answers, &plan.source) {
            // In a subdirectory: autoinstall's file is a `user-data` too.
            (Some(a), SourcePlan::Installer(i)) => {
                std::fs::create_dir_all(render_dir.join("install")).and_then(|_| {
                    std::fs::write(render_dir.join("install").join(i.answer_file_name()), a)
                })
            }
            _ => Ok(()),
        });
    if let Err(e) = write {
        errln!(
            "error: writing rendered templates to {}: {e}",
            render_dir.display()
        );
        return exit::BUILD_FAILED;
    }
    match format {
        PlanFormat::Json => {
            let v = serde_json::json!({
                "plan": plan,
                "stages": stages,
                "rendered": render_dir,
            });
            outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        PlanFormat::Text => {
            outln!("{} (recipe {})", plan.slug(), plan.recipe_path.display());
            if let Some(d) = &plan.description {
                outln!("  {d}");
            }
            outln!("elements (in order):");
            for e in &plan.elements {
                outln!("  {:<18} {}  [{}]", e.name, e.description, e.origin);
            }
            outln!(
                "vm: {} MiB, {} vCPU, accel {:?}, timeout {} s, {}",
                plan.vm.memory_mib,
                plan.vm.vcpus,
                plan.vm.accel,
                plan.vm.timeout_secs,
                plan.vm.uri
            );
            outln!("provisioning steps:");
            for (i, s) in plan.provision.iter().enumerate() {
                let d = match s {
                    crate::plan::ProvisionStep::Packages(p) => format!("packages: {}", p.join(" ")),
                    crate::plan::ProvisionStep::Files(f) => format!(
                        "files: {}",
                        f.iter()
                            .map(|f| f.path.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    crate::plan::ProvisionStep::Run(c) => format!("run: {} command(s)", c.len()),
                    crate::plan::ProvisionStep::Users(u) => format!(
                        "users: {}",
                        u.iter()
                            .map(|u| u.name.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                };
                outln!("  {}. {d}", i + 1);
            }
            outln!("stages:");
            for s in &stages {
                outln!("  {}", s.name);
                for c in &s.commands {
                    outln!("      $ {c}");
                }
            }
            outln!("rendered templates: {}", render_dir.display());
        }
    }
    exit::OK
}

fn build(
    recipe_path: &Path,
    output: Option<PathBuf>,
    on_error: OnError,
    vars: &[(String, String)],
    cache_dir: Option<PathBuf>,
    jobs: Option<usize>,
    no_glance: bool,
) -> i32 {
    let mut plan = match load_checked(recipe_path, vars) {
        Ok(p) => p,
        Err(d) => {
            print_diagnostics(&d);
            return exit::INVALID_INPUT;
        }
    };
    if no_glance {
        plan.publish.glance = None;
    }
    // Credentials are checked before a long build, not after it.
    if let Some(g) = &plan.publish.glance {
        if let Err(e) = crate::glance::Glance::connect(g.cloud.as_deref()) {
            errln!(
                "error: publish.glance: {e}\n  (fix the cloud configuration, or build without \
                 Glance with --no-glance and publish later with `kiln publish DIR`)"
            );
            return if e.is_user_error() {
                exit::INVALID_INPUT
            } else {
                exit::BUILD_FAILED
            };
        }
    }
    let cancel = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, cancel.flag()) {
            errln!("error: cannot install signal handler: {e}");
            return exit::BUILD_FAILED;
        }
    }
    let out_root = out_root(output, &plan);
    let opts = crate::build::Options {
        out_root,
        cache_dir: cache_dir.unwrap_or_else(crate::build::default_cache_dir),
        keep_on_error: on_error == OnError::Keep,
        jobs: jobs.unwrap_or_else(crate::convert::default_jobs),
    };
    match crate::build::run(plan, &opts, &cancel) {
        Err(e) => {
            errln!("error: {e:#}");
            exit::BUILD_FAILED
        }
        Ok(f) => {
            match f.code {
                exit::OK => {
                    let dir = f.ctx.published.clone().unwrap_or_default();
                    outln!("built {}", dir.display());
                    if let Some(src) = &f.ctx.source_disk {
                        print_size_row(
                            "(build disk)",
                            &src.format,
                            src.size,
                            src.allocated_size,
                            src.virtual_size,
                        );
                    }
                    for o in &f.ctx.outputs {
                        print_size_row(
                            &o.path,
                            &o.format,
                            o.size,
                            o.allocated_size,
                            o.virtual_size,
                        );
                    }
                    for p in &f.ctx.glance_published {
                        outln!(
                            "  glance: {} {} ({}, {}) {}",
                            p.name,
                            p.id,
                            p.cloud,
                            p.status,
                            if p.reused {
                                "already there"
                            } else {
                                "uploaded"
                            }
                        );
                    }
                    outln!("  stages:");
                    for r in &f.ctx.records {
                        outln!("    {:<11} {:>7.1} s", r.name, r.seconds);
                    }
                }
                exit::INTERRUPTED => errln!("interrupted: the build was cleaned up"),
                _ => {}
            }
            if let Some(e) = f.error {
                if f.code == exit::OK {
                    // The build is complete but its cleanup failed: not said before.
                    errln!("error: {e:#}");
                    return exit::BUILD_FAILED;
                }
                // The whole error was logged when the stage failed, before the cleanup.
                let logs = match f.ctx.keep_on_error {
                    true => f.ctx.staging.display().to_string(),
                    false => f
                        .ctx
                        .final_dir
                        .with_file_name(format!("{}.failed", f.ctx.plan.slug()))
                        .display()
                        .to_string(),
                };
                errln!("error: {e}; the cause is above, the logs are in {logs}");
            }
            f.code
        }
    }
}

/// The catalog directory: `-o`, else the recipe's publish.local.dir, else ./kiln-output.
fn out_root(output: Option<PathBuf>, plan: &Plan) -> PathBuf {
    output
        .or_else(|| plan.publish.local_dir.clone())
        .unwrap_or_else(|| PathBuf::from("kiln-output"))
}

fn print_size_row(name: &str, format: &str, size: u64, allocated: u64, virtual_size: u64) {
    use crate::progress::human_bytes as h;
    outln!(
        "  {name:<32} {format:>6}  file {:>10}  allocated {:>10}  virtual {:>9}",
        h(size),
        h(allocated),
        h(virtual_size)
    );
}

pub(crate) fn usage_error(msg: impl std::fmt::Display) -> i32 {
    errln!("error: {msg}");
    exit::INVALID_INPUT
}

fn convert_cmd(a: ConvertArgs) -> i32 {
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
    if compress.is_some() && !formats.contains(&Format::Qcow2) {
        return usage_error("--compress applies to qcow2 only");
    }
    let cluster_size = match &a.cluster_size {
        None => None,
        Some(c) => match recipe::parse_size(&SizeSpec::Text(c.clone()), 1) {
            Ok(v) => Some(v),
            Err(m) => return usage_error(format!("--cluster-size: {m}")),
        },
    };
    let cancel = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, cancel.flag());
    }
    let src_format = match &a.source_format {
        Some(f) => f.clone(),
        None => match crate::qemu_img::info(&a.src, &cancel) {
            Ok(i) => i.format,
            Err(e) => return usage_error(format!("cannot read {}: {e}", a.src.display())),
        },
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
            compress: compress.filter(|_| *f == Format::Qcow2),
            cluster_size: cluster_size.filter(|_| *f == Format::Qcow2),
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
        });
    }
    if let Err(e) = convert::check_source(&a.src, &src_format, &cancel) {
        errln!("error: {e}");
        return exit::BUILD_FAILED;
    }
    let results =
        convert::convert_all(&jobs, a.jobs.unwrap_or_else(convert::default_jobs), &cancel);
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
    // SHA256SUMS next to the outputs, per directory.
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
            failed = true;
        }
    }
    match a.format {
        PlanFormat::Json => {
            let src = convert::source_sizes(&a.src, &cancel).ok();
            let v = serde_json::json!({
                "source": src,
                "outputs": done.iter().map(|(p, c)| serde_json::json!({"file": p, "output": c})).collect::<Vec<_>>(),
            });
            outln!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        PlanFormat::Text => {
            if let Ok(src) = convert::source_sizes(&a.src, &cancel) {
                print_size_row(
                    &a.src.display().to_string(),
                    &src.format,
                    src.size,
                    src.allocated_size,
                    src.virtual_size,
                );
            }
            for (p, c) in &done {
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
    if cancel.is_cancelled() {
        exit::INTERRUPTED
    } else if failed {
        exit::BUILD_FAILED
    } else {
        exit::OK
    }
}

fn sysprep_cmd(a: SysprepArgs, customize: Vec<crate::customize::Customize>) -> i32 {
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
    let cancel = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, cancel.flag());
    }
    // Every image is checked before any is touched.
    let mut images = Vec::new();
    for img in &a.images {
        let Ok(path) = std::fs::canonicalize(img) else {
            return usage_error(format!("image {} does not exist", img.display()));
        };
        if !path.is_file() {
            return usage_error(format!("{} is not a file", img.display()));
        }
        if !a.dry_run {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
            if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
                return usage_error(format!(
                    "{} is read-only: sysprep changes the image in place (use --dry-run to look)",
                    img.display()
                ));
            }
        }
        if let Ok(lv) = crate::libvirt::Libvirt::connect("qemu:///system") {
            let users = lv.running_domains_using(&path);
            if !users.is_empty() {
                return usage_error(format!(
                    "{} is in use by the running domain {}: shut it down first",
                    img.display(),
                    users.join(", ")
                ));
            }
        }
        // qemu's image locks catch other users (a qemu not managed by libvirt).
        let fmt = match &a.format {
            Some(f) => f.clone(),
            None => match crate::qemu_img::info(&path, &cancel) {
                Ok(i) => i.format,
                Err(e) => return usage_error(format!("cannot read {}: {e}", img.display())),
            },
        };
        let locked = process::run(
            &process::argv(["qemu-img", "info", "-f", &fmt, &path.display().to_string()]),
            &Default::default(),
            &cancel,
        );
        if let Err(e) = locked {
            return usage_error(format!("{} is in use (locked): {e}", img.display()));
        }
        images.push((path, fmt));
    }
    let tcg = crate::libvirt::probe::tcg_for_tools(
        a.accel,
        &crate::build::default_cache_dir(),
        "qemu:///system",
        &cancel,
    );
    for (path, fmt) in images {
        let before = crate::manifest::allocated(&path);
        let launch = crate::guest::Launch {
            tcg,
            readonly: a.dry_run,
            network: !a.dry_run && crate::customize::needs_network(&opts.customize),
        };
        let g = match crate::guest::Guest::open_with(&path, &fmt, launch) {
            Ok(g) => g,
            Err(e) => {
                errln!("error: {e}");
                return exit::BUILD_FAILED;
            }
        };
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
                    outln!("    {verb} {act}");
                }
                for note in &r.notes {
                    outln!("    {note}");
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

fn info_cmd(image: &Path, format: PlanFormat) -> i32 {
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
                info.backing_filename.as_deref().unwrap_or("none")
            );
        }
    }
    exit::OK
}

fn elements(cmd: ElementsCommand) -> i32 {
    let cwd = std::env::current_dir().ok();
    let search = recipe::elements::search_path(cwd.as_deref());
    match cmd {
        ElementsCommand::List => {
            for (name, origin) in recipe::elements::all(&search) {
                let at = origin.describe();
                match recipe::elements::load(&name, &origin) {
                    Ok(l) => outln!("{name:<18} {}  [{at}]", l.file.description),
                    Err(d) => outln!("{name:<18} (invalid: {})  [{at}]", d[0]),
                }
            }
            exit::OK
        }
        ElementsCommand::Show { name } => match recipe::elements::find(&name, &search) {
            None => {
                errln!("error: element `{name}` not found on the search path");
                exit::INVALID_INPUT
            }
            Some(origin) => match recipe::elements::read(&name, &origin) {
                Ok((file, t)) => {
                    match origin {
                        recipe::elements::Origin::BuiltIn => {
                            outln!("# {name}: built-in (compiled into kiln)")
                        }
                        recipe::elements::Origin::Dir(_) => outln!("# {}", file.display()),
                    }
                    out!("{t}");
                    exit::OK
                }
                Err(e) => {
                    errln!("error: {e}");
                    exit::INVALID_INPUT
                }
            },
        },
    }
}

/// A cancellation flag set by SIGINT/SIGTERM.
pub(crate) fn cancel_on_signals() -> Cancel {
    let cancel = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, cancel.flag());
    }
    cancel
}
