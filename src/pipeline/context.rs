//! The typed build context that stages share (instead of a string-keyed state bag), and the
//! register of external resources: each is recorded the moment it exists, by the stage that
//! made it, and released by that stage's cleanup.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Outcome, Records, StageRecord};
use crate::guest::Guest;
use crate::libvirt::Libvirt;
use crate::manifest::{Manifest, Tools};
use crate::plan::Plan;
use crate::process::Cancel;
use crate::tunables::Tunables;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A libvirt domain (defined or transient).
    Domain {
        uri: String,
        name: String,
    },
    File(PathBuf),
    Dir(PathBuf),
    /// An image kiln created in Glance.
    GlanceImage {
        cloud: String,
        region: Option<String>,
        id: String,
    },
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Domain { uri, name } => write!(f, "libvirt domain {name} ({uri})"),
            Resource::File(p) => write!(f, "file {}", p.display()),
            Resource::Dir(p) => write!(f, "directory {}", p.display()),
            Resource::GlanceImage { cloud, region, id } => match region {
                Some(r) => write!(f, "Glance image {id} ({cloud}, {r})"),
                None => write!(f, "Glance image {id} ({cloud})"),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Held {
    stage: &'static str,
    resource: Resource,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseDisk {
    pub path: PathBuf,
    pub format: String,
    pub virtual_size: u64,
}

/// The libguestfs unit (cloud-init, customize, sysprep: one launch, one cache entry), handed
/// from the cloud-init stage to the sysprep stage as one value.
#[derive(Default)]
pub struct GuestfsSession {
    /// The appliance: None once sysprep closed it, or when the unit was reused.
    pub guest: Option<Guest>,
    /// The key this build makes (held locked), committed by the sysprep stage.
    pub slot: Option<super::cached::Slot>,
    /// Reused from the stage cache: the sysprep stage has nothing left to do.
    pub reused: bool,
}

/// Installer media in the cache (or in place), verified.
#[derive(Debug, Clone, Default)]
pub struct InstallMedia {
    pub iso: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

/// What every stage may read and none changes: the plan, the environment's settings, the
/// paths of this build and its command-line switches.
pub struct BuildEnv {
    /// When the build started (seconds since the epoch): the manifest's `built_at`.
    pub built_at: u64,
    pub plan: Plan,
    pub cancel: Cancel,
    /// `--on-error keep`: on failure keep domain, disks and logs for inspection.
    pub keep_on_error: bool,
    /// Who the build VM's qemu runs as; when that is not kiln's own user, `work` is a
    /// directory it can reach under `Tunables::vm_dir`, not inside `staging`.
    pub vm_user: crate::libvirt::vmuser::VmUser,
    /// Everything of this build lives here until it is published.
    pub staging: PathBuf,
    /// Intermediate files (build disk, seed, rendered templates, console log).
    pub work: PathBuf,
    /// The future output directory, renamed into place by publish.
    pub out: PathBuf,
    /// Where the output directory lands.
    pub final_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// What the environment set (read once by `cli/`).
    pub tunables: Tunables,
    /// Concurrent conversions.
    pub jobs: usize,
    /// `--rebuild-from STAGE`: from that stage on nothing is taken from the cache.
    pub rebuild_from: Option<String>,
    /// `--until STAGE`: stop after it (its result stays in the stage cache).
    pub until: Option<String>,
    /// `--refresh`: provisioned disks are made again (new packages from the mirror).
    pub refresh: bool,
}

/// The stage cache as this build uses it (through `protocol.rs`).
pub struct StageCache {
    /// The store (None with --no-cache).
    pub store: Option<crate::stagecache::Store>,
    /// Claims on the remote for the stages this machine makes, withdrawn once their entries
    /// are pushed (before `remote`: they are withdrawn through its runtime).
    pub(super) claims: std::sync::Mutex<Vec<crate::remotecache::Claim>>,
    /// The remote stage cache (`--cache-remote`, `KILN_CACHE_REMOTE`, `cache.remote`).
    pub remote: Option<std::sync::Arc<crate::remotecache::Remote>>,
    /// Keys pushed (or pulled) in this build: each goes to the remote once.
    pub(super) shared: std::sync::Mutex<std::collections::HashSet<crate::stagecache::Key>>,
    pub(super) lookups_off: bool,
    /// The last link of the chain so far (the base disk, then each cached stage's disk);
    /// None once a stage cannot be cached (nothing after it is, either).
    pub chain: Option<crate::pipeline::cached::ChainLink>,
    /// The entries this build uses (shared locks `prune` respects), released when it ends.
    pub held: Vec<crate::stagecache::UseLock>,
}

/// What the stages made, filled in in order; each stage's doc says which it reads and sets.
#[derive(Default)]
pub struct Artifacts {
    /// source (or install): the disk the build starts from.
    pub base: Option<BaseDisk>,
    /// source, for installer sources: the fetched ISO or kernel + initrd.
    pub install_media: Option<InstallMedia>,
    /// provision: the build disk (qcow2 overlay over the base); the libguestfs unit's after it.
    pub disk: Option<PathBuf>,
    /// test: its VM boots beside the stages after it (which then yield the CPU to it: the
    /// boot is the build's critical path).
    pub boot_test_running: bool,
    /// The accelerator guests (and the libguestfs appliance) use, once decided.
    pub engine: Option<crate::vocab::Engine>,
    /// provision: how the steps ran (host or guest apt, direct or firmware boot).
    pub provision_path: Option<crate::vocab::ProvisionPath>,
    /// provision: the build VM's domain (until undefine).
    pub domain: Option<String>,
    /// cloud-init to sysprep: the one libguestfs launch they share.
    pub guestfs: Option<GuestfsSession>,
    /// cloud-init (or the cache): the build VM's ssh host keys as the provisioned disk holds
    /// them (type and base64), which the booted image must not present.
    pub build_host_keys: Vec<String>,
    /// sysprep (or the cache): operations and what each removed.
    pub sysprep_removed: Vec<(String, usize)>,
    /// sysprep: allocated bytes of the build disk before and after the trim.
    pub sparsify: Option<crate::manifest::Sparsify>,
    /// sysprep: what the image holds (packages, os-release, kernels).
    pub inventory: Option<crate::inventory::Inventory>,
    /// convert: the outputs, and the sizes of the disk they were made from.
    pub outputs: Vec<crate::convert::Converted>,
    /// convert: each output's stage-cache key, in the plan's order (None without a cache);
    /// the test stage binds its result to the booted output's.
    pub output_keys: Vec<Option<crate::stagecache::Key>>,
    pub source_disk: Option<crate::convert::SourceSizes>,
    /// convert: the SBOM's summary for manifest.json (file, digest, counts).
    pub inventory_summary: Option<serde_json::Value>,
    /// test: the boot test's report (manifest.json's `test`).
    pub test_report: Option<serde_json::Value>,
    /// publish: the build's directory in the catalog.
    pub published: Option<PathBuf>,
    /// glance: the images published to Glance.
    pub glance_published: Vec<crate::glance::publish::Published>,
}

/// The typed build context stages share: what they read ([`BuildEnv`]), the stage cache, the
/// resources held (recorded by the stage that made them, released by its cleanup), what they
/// made ([`Artifacts`]), and the build's report (stage records, tools, secrets).
pub struct BuildContext {
    pub env: BuildEnv,
    pub cache: StageCache,
    pub made: Artifacts,
    /// The build's libvirt connection (one per build).
    pub libvirt: Option<Libvirt>,
    pub tools: Tools,
    pub records: Vec<StageRecord>,
    /// Random passwords the build set ("USER: PASSWORD"): in memory only, shown once when the
    /// build ends; never logged, serialized or written to a file.
    pub secrets: Vec<String>,
    /// The external resources held, each with the stage that made it.
    pub register: Register,
}

/// The register of external resources: each is recorded the moment it exists, by the stage
/// that made it, and released by that stage's cleanup.
#[derive(Debug, Default)]
pub struct Register {
    held: Vec<Held>,
    current_stage: &'static str,
}

impl Register {
    /// Record an external resource the moment it exists.
    pub fn record(&mut self, resource: Resource) {
        tracing::debug!("created {resource}");
        self.held.push(Held {
            stage: self.current_stage,
            resource,
        });
    }

    /// Forget a resource that was released on the normal path (e.g. the undefined domain).
    pub fn forget(&mut self, resource: &Resource) {
        self.held.retain(|h| &h.resource != resource);
    }

    pub fn held(&self) -> Vec<Resource> {
        self.held.iter().map(|h| h.resource.clone()).collect()
    }

    /// What `stage` recorded, oldest first.
    fn of(&self, stage: &str) -> Vec<Resource> {
        self.held
            .iter()
            .filter(|h| h.stage == stage)
            .map(|h| h.resource.clone())
            .collect()
    }
}

impl Records for BuildContext {
    fn records(&mut self) -> &mut Vec<StageRecord> {
        &mut self.records
    }

    fn stop_after(&self, stage: &str) -> bool {
        self.env.until.as_deref() == Some(stage)
    }

    fn enter(&mut self, stage: &'static str) {
        self.register.current_stage = stage;
        // cloud-init and sysprep are one cache unit: rebuilding either rebuilds both.
        fn unit(s: &str) -> &str {
            if s == "sysprep" {
                "cloud-init"
            } else {
                s
            }
        }
        if self.env.rebuild_from.as_deref().map(unit) == Some(unit(stage)) {
            self.cache.lookups_off = true;
        }
    }

    /// Once the build is in the catalog, its manifest follows every stage's record.
    fn finished(&mut self) {
        if let Some(dir) = self.made.published.clone() {
            if let Err(e) = crate::manifest::write(&dir, &self.manifest()) {
                tracing::warn!("updating {}/manifest.json: {e:#}", dir.display());
            }
        }
    }
}

/// Where a build of `slug` in the catalog `out_root` works: (staging, work, out, final_dir).
/// `run` tells builds apart (the process id). `work` holds the VM's files: inside the staging
/// directory, or in a VM directory of its own when qemu runs as another user on `uri`.
pub fn build_paths(
    out_root: &Path,
    slug: &str,
    run: &str,
    uri: &str,
    vm_dir: &Path,
) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let staging = out_root.join(format!(".kiln-staging-{slug}-{run}"));
    let work = if crate::libvirt::vmuser::VmUser::for_uri(uri).is_other() {
        vm_dir.join(format!("{slug}-{run}"))
    } else {
        staging.join("work")
    };
    (
        staging.clone(),
        work,
        staging.join(slug),
        out_root.join(slug),
    )
}

impl BuildContext {
    /// The committed cache entry of `key`, unless caching is off for this stage.
    /// The entry of `key` for `unit`: the local store's, else (for a unit the remote is
    /// trusted with) pulled from the remote, made on `built_on`.
    pub fn cache_get(
        &self,
        key: &crate::stagecache::Key,
        unit: crate::pipeline::cached::Unit,
        built_on: Option<&crate::stagecache::Key>,
    ) -> Option<crate::stagecache::Entry> {
        if self.cache.lookups_off {
            return None;
        }
        let store = self.cache.store.as_ref()?;
        store.get(key).or_else(|| {
            unit.shared
                .then(|| self.remote_pull(store, key, built_on))?
        })
    }

    /// Before committing `key`: with `--rebuild-from`, the entry being rebuilt (and everything
    /// built on it) goes, so that the new result replaces it instead of losing to it.
    pub fn cache_replacing(&self, key: &crate::stagecache::Key) {
        if let (true, Some(store)) = (self.cache.lookups_off, &self.cache.store) {
            if let Err(e) = store.remove(key) {
                tracing::warn!(
                    "removing the cache entry {} to rebuild it: {e}",
                    key.short()
                );
            }
        }
    }

    /// Record `stage`'s key and whether its result was reused (the manifest shows both).
    pub fn note_cache(&mut self, stage: &str, key: &crate::stagecache::Key, reused: bool) {
        if let Some(r) = self.records.iter_mut().find(|r| r.name == stage) {
            r.key = Some(key.0.clone());
            r.reused = reused;
        }
        if reused {
            tracing::info!("stage {stage}: reused cache entry {}", key.short());
        }
    }

    pub fn new(
        plan: Plan,
        out_root: &Path,
        tunables: Tunables,
        cache_dir: PathBuf,
        cancel: Cancel,
    ) -> Self {
        let cache_dir_for_store = cache_dir.clone();
        let slug = plan.slug();
        // The pid tells concurrent builds apart, the random part builds of reused pids (and
        // containers, where every build can be pid 1).
        let run = format!(
            "{}-{}",
            std::process::id(),
            hex::encode(&crate::libvirt::console::rand_bytes()[..4])
        );
        let (staging, work, out, final_dir) =
            build_paths(out_root, &slug, &run, &plan.vm.uri, &tunables.vm_dir);
        let vm_user = crate::libvirt::vmuser::VmUser::for_uri(&plan.vm.uri);
        BuildContext {
            env: BuildEnv {
                built_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                work,
                out,
                final_dir,
                staging,
                plan,
                cancel,
                keep_on_error: false,
                vm_user,
                cache_dir,
                tunables,
                jobs: crate::convert::default_jobs(),
                rebuild_from: None,
                until: None,
                refresh: false,
            },
            cache: StageCache {
                store: Some(crate::stagecache::Store::new(&cache_dir_for_store)),
                remote: None,
                shared: Default::default(),
                claims: Default::default(),
                lookups_off: false,
                chain: None,
                held: Vec::new(),
            },
            made: Artifacts::default(),
            libvirt: None,
            tools: Tools::default(),
            records: Vec::new(),
            secrets: Vec::new(),
            register: Register {
                held: Vec::new(),
                current_stage: "build",
            },
        }
    }

    /// Record an external resource the moment it exists (see [`Register`]).
    pub fn record(&mut self, resource: Resource) {
        self.register.record(resource);
    }

    /// Forget a resource that was released on the normal path (e.g. the undefined domain).
    pub fn forget(&mut self, resource: &Resource) {
        self.register.forget(resource);
    }

    pub fn held(&self) -> Vec<Resource> {
        self.register.held()
    }

    /// Release what `stage` recorded, newest first. On failure with `--on-error keep`, keep
    /// everything and say how to inspect it.
    pub fn release(&mut self, stage: &'static str, outcome: Outcome) -> anyhow::Result<()> {
        let mine = self.register.of(stage);
        let mut first_err = None;
        for r in mine.into_iter().rev() {
            if outcome == Outcome::Failed && self.env.keep_on_error {
                tracing::warn!("kept for debugging: {r}{}", inspect_hint(&r));
                continue;
            }
            let res = match &r {
                Resource::Domain { uri, name } => match &self.libvirt {
                    Some(l) => l.destroy_and_undefine(name),
                    None => Libvirt::connect(uri).and_then(|l| l.destroy_and_undefine(name)),
                }
                .map_err(anyhow::Error::from),
                Resource::File(p) => match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(anyhow::anyhow!("removing {}: {e}", p.display()))
                    }
                    _ => Ok(()),
                },
                Resource::GlanceImage { cloud, region, id } => crate::glance::Glance::connect_in(
                    Some(cloud),
                    region.as_deref(),
                    &self.env.tunables.glance,
                )
                .and_then(|g| crate::glance::publish::delete_created(&g, id))
                .map_err(|e| anyhow::anyhow!("deleting Glance image {id}: {e}")),
                Resource::Dir(p) => match std::fs::remove_dir_all(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(anyhow::anyhow!("removing {}: {e}", p.display()))
                    }
                    _ => Ok(()),
                },
            };
            match res {
                Ok(()) => {
                    tracing::debug!("released {r}");
                    self.forget(&r);
                }
                Err(e) => {
                    tracing::warn!("could not release {r}: {e:#}");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

fn inspect_hint(r: &Resource) -> String {
    match r {
        Resource::Domain { uri, name } => format!(
            " — inspect with `virsh -c {uri} dumpxml {name}`; remove with `virsh -c {uri} destroy {name}; virsh -c {uri} undefine {name}`"
        ),
        Resource::File(p) if p.extension().is_some_and(|e| e == "qcow2") => format!(
            " — inspect with `guestfish --ro -a {} -i`",
            p.display()
        ),
        Resource::GlanceImage { cloud, region, id } => {
            let r = region
                .as_ref()
                .map(|r| format!(" --os-region-name {r}"))
                .unwrap_or_default();
            format!(
                " — inspect with `kiln image --os-cloud {cloud}{r} show {id}`; remove with `kiln image --os-cloud {cloud}{r} delete {id}`"
            )
        }
        _ => String::new(),
    }
}

impl BuildContext {
    /// The manifest of this build as it stands.
    pub fn manifest(&self) -> Manifest {
        let ctx = self;
        let plan = &ctx.env.plan;
        Manifest {
            name: plan.name.clone(),
            version: plan.version.clone(),
            recipe: plan.recipe_path.display().to_string(),
            recipe_sha256: plan.recipe_sha256.clone(),
            built_at: ctx.env.built_at,
            elements: plan.elements.iter().map(|e| e.name.clone()).collect(),
            source: plan.source.manifest_record(),
            accelerator: ctx
                .made
                .engine
                .map_or("none", |e| e.for_guest(plan.vm.arch).as_str())
                .into(),
            cpu: ctx
                .made
                .engine
                .map_or("none", |e| {
                    e.for_guest(plan.vm.arch)
                        .cpu(plan.vm.cpu, plan.vm.arch)
                        .name
                })
                .into(),
            architecture: plan.vm.arch.as_str().into(),
            firmware: plan.vm.firmware.as_str().into(),
            tpm: plan.vm.tpm,
            tools: ctx.tools.clone(),
            stages: ctx.records.clone(),
            sysprep: ctx.made.sysprep_removed.iter().cloned().collect(),
            sparsify: ctx.made.sparsify.clone(),
            properties: plan.properties.clone(),
            source_disk: ctx.made.source_disk.clone(),
            outputs: ctx.made.outputs.clone(),
            published: crate::manifest::Published {
                local: ctx.env.final_dir.display().to_string(),
                glance: ctx.made.glance_published.clone(),
            },
            publish_glance: plan.publish.glance.clone(),
            publish_all_or_nothing: plan.publish.all_or_nothing,
            test: ctx.made.test_report.clone(),
            inventory: ctx.made.inventory_summary.clone(),
        }
    }
}

/// The hypervisor, reached once per build.
impl BuildContext {
    /// Connect to libvirt once per build.
    pub fn libvirt(&mut self) -> anyhow::Result<&Libvirt> {
        let ctx = self;
        if ctx.libvirt.is_none() {
            let lv = Libvirt::connect(&ctx.env.plan.vm.uri)?;
            ctx.tools.libvirt = lv.version();
            ctx.libvirt = Some(lv);
        }
        Ok(ctx.libvirt.as_ref().expect("just set"))
    }

    /// Decide (once) the accelerator: `accel: auto` probes whether a KVM guest really runs.
    pub fn engine(&mut self) -> anyhow::Result<crate::vocab::Engine> {
        let ctx = self;
        if let Some(e) = ctx.made.engine {
            return Ok(e);
        }
        let tcg = match ctx.env.plan.vm.accel {
            crate::vocab::Accel::Tcg => true,
            crate::vocab::Accel::Kvm => false,
            crate::vocab::Accel::Auto => {
                let cached = crate::libvirt::probe::cached(&ctx.env.cache_dir);
                let probe = match cached {
                    Some(p) => p,
                    None => {
                        let cancel = ctx.env.cancel.clone();
                        let p = ctx.libvirt()?.probe_kvm(&cancel)?;
                        crate::libvirt::probe::store(&ctx.env.cache_dir, &p);
                        p
                    }
                };
                match probe {
                    crate::libvirt::KvmProbe::Usable => {
                        tracing::info!("accelerator: kvm (a probe guest ran)");
                        false
                    }
                    crate::libvirt::KvmProbe::Unusable(why)
                    | crate::libvirt::KvmProbe::Unknown(why) => {
                        // libvirt then probes qemu again before every domain (measured
                        // 30-80 s each), unless its daemon does not see /dev/kvm.
                        let hint = if std::path::Path::new("/dev/kvm").exists() {
                            "; /dev/kvm exists but does not work, so libvirtd re-probes qemu before every domain it defines (30-80 s each): run libvirtd without /dev/kvm (systemd: InaccessiblePaths=/dev/kvm; scripts/start-services.sh does this)"
                        } else {
                            ""
                        };
                        tracing::warn!(
                            "KVM is not usable here ({why}); falling back to TCG, which is much slower{hint}"
                        );
                        true
                    }
                }
            }
        };
        let engine = crate::vocab::Engine::from_tcg(tcg);
        ctx.made.engine = Some(engine);
        Ok(engine)
    }
}
