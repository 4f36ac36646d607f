//! Recipes: load (YAML with positions), check against the schema, merge elements, and resolve
//! into a [`Plan`]. Every problem is collected and reported at once, each with its position.

pub mod elements;
pub mod model;
mod publish;
pub mod schema_check;
mod source;
mod steps;
pub mod values;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use crate::suggest::suggest;
pub use source::{default_iso_paths, parse_checksum, split_mirror};
pub use yaml::Diagnostic;

use crate::plan::*;
use model::*;
use yaml::Document;

/// The JSON Schema of recipes, as printed by `kiln schema`.
pub fn recipe_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Recipe)).expect("schema serializes")
}

/// Default cloud-init datasources of a golden image.
pub const DEFAULT_DATASOURCES: &[&str] = &["ConfigDrive", "OpenStack", "NoCloud", "None"];

/// Load and fully resolve a recipe. `overrides` are `--var` pairs; `elements_path` the
/// configured element directories (`Tunables::elements_path`), searched after the recipe's own.
pub fn load_plan(
    path: &Path,
    overrides: &[(String, String)],
    elements_path: &[PathBuf],
) -> Result<Plan, Vec<Diagnostic>> {
    match load_all(path, overrides, elements_path, Trust::Untrusted) {
        (Some(plan), errors) if errors.is_empty() => Ok(plan),
        (_, errors) => Err(errors),
    }
}

/// What a recipe may reach besides the guest (README, "Hostile input"). Untrusted (the
/// default): files below its own directory (and its elements' below theirs) and the network
/// sources it names. Trusted (`--trust-recipe`, or a directory in `KILN_TRUSTED_RECIPES`):
/// also host-side scripts, a domain template of its own, and host files anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Untrusted,
    Trusted,
}

/// Load a recipe and collect every problem of every kind: YAML, schema (unknown keys, types),
/// and meaning (elements, files, values). The plan comes back as far as it could be resolved
/// (for further checks, such as rendering templates), even when there are errors; without
/// errors it is complete.
pub fn load_all(
    path: &Path,
    overrides: &[(String, String)],
    elements_path: &[PathBuf],
    trust: Trust,
) -> (Option<Plan>, Vec<Diagnostic>) {
    match load_inner(path, overrides, elements_path, trust) {
        Ok(r) => r,
        Err(errors) => (None, errors),
    }
}

fn load_inner(
    path: &Path,
    overrides: &[(String, String)],
    elements_path: &[PathBuf],
    trust: Trust,
) -> Result<(Option<Plan>, Vec<Diagnostic>), Vec<Diagnostic>> {
    let bytes = crate::hostfile::read_regular(path, yaml::MAX_BYTES as u64).map_err(|e| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read recipe: {e}"),
        }]
    })?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "the recipe is not valid UTF-8".into(),
        }]
    })?;
    let doc = yaml::load_str(path, &text)?;
    let control = values::control_characters(&doc);
    let findings = schema_check::findings(&doc, &recipe_schema());
    let schema_errors: Vec<Diagnostic> = findings.iter().map(|f| f.diag.clone()).collect();
    // With schema errors, the meaning of the rest is still checked (one unknown key must not
    // hide every other mistake): without the offending nodes, if what is left deserializes.
    // Semantic errors about a node the schema rejected (removed below) or its ancestors, which
    // lost it, would only repeat the schema's complaint.
    let mut suppressed = Vec::new();
    let recipe: Recipe = if findings.is_empty() {
        serde_json::from_value(doc.value.clone())
            .map_err(|e| vec![doc.diag("", format!("invalid recipe: {e}"))])?
    } else {
        match schema_check::without(&doc.value, &findings)
            .and_then(|(v, removed)| Some((serde_json::from_value(v).ok()?, removed)))
        {
            Some((r, removed)) => {
                suppressed = removed;
                r
            }
            None => return Err(schema_errors),
        }
    };
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (plan, semantic) = Resolver {
        doc: &doc,
        dir,
        elements_path,
        trust,
        errors: Vec::new(),
        suppressed,
        glance_at: String::new(),
    }
    .resolve(recipe, hex::encode(Sha256::digest(&bytes)), overrides);
    let mut errors = schema_errors;
    errors.extend(control);
    for d in semantic {
        if !errors.contains(&d) {
            errors.push(d);
        }
    }
    sort_diagnostics(&mut errors, &doc.file);
    Ok((plan, errors))
}

/// Source order reads best; other files (elements, templates, --var) after the recipe.
pub fn sort_diagnostics(errors: &mut [Diagnostic], recipe: &Path) {
    errors.sort_by(|a, b| {
        (a.file != recipe, &a.file, a.line, a.column).cmp(&(
            b.file != recipe,
            &b.file,
            b.line,
            b.column,
        ))
    });
}

struct Resolver<'a> {
    doc: &'a Document,
    dir: PathBuf,
    /// `Tunables::elements_path`.
    elements_path: &'a [PathBuf],
    trust: Trust,
    errors: Vec<Diagnostic>,
    /// Pointers of nodes the schema check rejected (see `load_inner`).
    suppressed: Vec<String>,
    /// The JSON pointer of the Glance target being resolved (`/publish/glance[/N]`).
    glance_at: String,
}

/// `a` is `b` or below it (JSON pointers, whole segments).
fn within(a: &str, b: &str) -> bool {
    a == b || (a.starts_with(b) && a[b.len()..].starts_with('/'))
}

/// Today's date (UTC) as YYYYMMDD, for image names.
fn utc_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86400)
        .unwrap_or(0) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

impl Resolver<'_> {
    /// `test:` as checks (None: off), each validated for the shell or path it reaches.
    fn test_checks(
        &mut self,
        t: &Option<model::TestSetting>,
    ) -> Option<Vec<crate::plan::TestCheck>> {
        use crate::plan::TestCheck as C;
        let list = match t {
            None | Some(model::TestSetting::Enabled(true)) => return Some(Vec::new()),
            Some(model::TestSetting::Enabled(false)) => return None,
            Some(model::TestSetting::Checks(l)) => l,
        };
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let at = format!("/test/{i}");
            let text_ok = |s: &str| !s.contains('\0');
            let check = match (&c.run, &c.file, &c.service) {
                (Some(run), None, None) if c.contains.is_none() && c.active.is_none() => {
                    if run.trim().is_empty() || !text_ok(run) {
                        self.err(&format!("{at}/run"), "an empty command (or a NUL byte)");
                        continue;
                    }
                    C::Run {
                        run: run.clone(),
                        expect: c.expect.clone(),
                    }
                }
                (None, Some(file), None) if c.expect.is_none() && c.active.is_none() => {
                    if !file.starts_with('/') || !text_ok(file) || file.contains('\n') {
                        self.err(&format!("{at}/file"), "an absolute path, on one line");
                        continue;
                    }
                    let Some(contains) = c.contains.clone() else {
                        self.err(&at, "`file` needs `contains` (the text it must hold)");
                        continue;
                    };
                    C::File {
                        file: file.clone(),
                        contains,
                    }
                }
                (None, None, Some(service)) if c.expect.is_none() && c.contains.is_none() => {
                    if service.is_empty()
                        || !service
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "-_.@:\\".contains(ch))
                    {
                        self.err(&format!("{at}/service"), "not a systemd unit name");
                        continue;
                    }
                    C::Service {
                        service: service.clone(),
                        active: c.active.unwrap_or(true),
                    }
                }
                _ => {
                    self.err(
                        &at,
                        "a check is one of `run` (with `expect`), `file` (with `contains`) or `service` (with `active`)",
                    );
                    continue;
                }
            };
            out.push(check);
        }
        Some(out)
    }

    fn err(&mut self, pointer: &str, msg: impl Into<String>) {
        let repeats = self
            .suppressed
            .iter()
            .any(|s| within(pointer, s) || (!pointer.is_empty() && within(s, pointer)));
        if !repeats {
            self.errors.push(self.doc.diag(pointer, msg));
        }
    }

    fn resolve(
        mut self,
        r: Recipe,
        recipe_sha256: String,
        overrides: &[(String, String)],
    ) -> (Option<Plan>, Vec<Diagnostic>) {
        if r.name.is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.err(
                "/name",
                "expected a name of letters, digits, `-`, `_` and `.`",
            );
        }
        if r.version.is_empty()
            || r.version.contains('/')
            || r.version.contains(char::is_whitespace)
        {
            self.err("/version", "expected a version without spaces or `/`");
        }

        for (i, n) in r.elements.iter().enumerate() {
            if let Err(m) = values::element_name(n) {
                self.err(&format!("/elements/{i}"), m);
            }
        }
        // Elements, dependencies first.
        let search = elements::search_path(Some(&self.dir), self.elements_path);
        let requested: Vec<(String, Diagnostic)> = r
            .elements
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), self.doc.diag(&format!("/elements/{i}"), "")))
            .collect();
        let loaded = match elements::resolve(&requested, &search) {
            Ok(l) => l,
            Err(mut e) => {
                self.errors.append(&mut e);
                Vec::new()
            }
        };

        let vars = self.variables(&r, &loaded, overrides);
        let arch = r.arch.unwrap_or_else(crate::vocab::Arch::host);
        let source = match &r.source.installer {
            Some(_) if r.source.image.is_some() || r.source.bootstrap.is_some() => {
                self.err(
                    "/source",
                    "expected exactly one of `image`, `bootstrap` or `installer` under `source`",
                );
                None
            }
            Some(inst) => self.installer(inst, &loaded, &vars),
            None => self.source(&r, &loaded, arch),
        };
        self.require_cloud_init(source.as_ref());
        let vm = self.vm(&r.vm, arch);
        self.arch_fits(&r, arch, source.as_ref());
        if let Some(SourcePlan::Bootstrap(b)) = &source {
            if vm.arch.has_layout(b.layout) && !b.layout.boots_with(vm.firmware) {
                self.err(
                    "/vm/firmware",
                    format!(
                        "`{}` needs an EFI system partition, and `source.bootstrap.layout: bios` makes an MBR disk without one: use `layout: hybrid`",
                        vm.firmware
                    ),
                );
            }
        }

        let provision = self.provision(&r, source.as_ref(), &loaded);
        let cloud_init = self.cloud_init(&r, &loaded);
        let (sysprep, sysprep_options) = self.sysprep(&r, &loaded);
        let outputs = self.outputs(&r.outputs);
        let templates = self.templates(&r.templates);

        let mut properties = BTreeMap::new();
        for el in &loaded {
            properties.extend(el.file.properties.clone());
        }
        properties.extend(r.properties.clone());
        let publish = self.publish(&r, &outputs, &properties, &vars, &vm);

        let Some(source) = source else {
            if self.errors.is_empty() {
                self.errors.push(self.doc.diag("/source", "invalid source"));
            }
            return (None, self.errors);
        };
        let (cache_max_age_secs, cache_remote) = self.cache(&r.cache);
        let test = self.test_checks(&r.test);
        let plan = Plan {
            test,
            cache_max_age_secs,
            cache_remote,
            recipe_path: self.doc.file.clone(),
            recipe_sha256,
            trusted: self.trust == Trust::Trusted,
            name: r.name,
            version: r.version,
            description: r.description,
            vars,
            elements: loaded
                .iter()
                .map(|l| ResolvedElement {
                    name: l.name.clone(),
                    origin: l.origin.describe(),
                    description: l.file.description.clone(),
                })
                .collect(),
            source,
            vm,
            provision,
            cloud_init,
            sysprep,
            sysprep_options,
            outputs,
            publish,
            templates,
            properties,
        };
        (Some(plan), self.errors)
    }

    /// What another architecture cannot do (yet), each at its line: an installer VM, BIOS,
    /// an x86-64 CPU level, a disk layout of the other, a customize step that runs a guest
    /// program (libguestfs's appliance runs the host's architecture).
    fn arch_fits(&mut self, r: &Recipe, arch: crate::vocab::Arch, source: Option<&SourcePlan>) {
        use crate::vocab::Arch;
        if arch == Arch::X86_64 {
            if let Some(SourcePlan::Bootstrap(b)) = source {
                if !arch.has_layout(b.layout) {
                    self.err(
                        "/source/bootstrap/layout",
                        "`uefi` is aarch64's layout; x86_64 disks are `hybrid` (BIOS and UEFI) or `bios`",
                    );
                }
            }
            return;
        }
        match source {
            Some(SourcePlan::Installer(_)) => self.err(
                "/source/installer",
                format!("an installer source builds x86_64 images only (its VM, media and answer files); for {arch} use `bootstrap` or a cloud `image`"),
            ),
            Some(SourcePlan::Bootstrap(b)) if !arch.has_layout(b.layout) => self.err(
                "/source/bootstrap/layout",
                format!("{arch} boots UEFI only: its disks have the `uefi` layout (the default)"),
            ),
            _ => {}
        }
        if r.vm.firmware == Some(crate::recipe::model::FirmwareSetting::Bios) {
            self.err(
                "/vm/firmware",
                format!("{arch} has no BIOS: use `uefi` (the default)"),
            );
        }
        if r.vm.accel == crate::vocab::Accel::Kvm && arch != Arch::host() {
            self.err(
                "/vm/accel",
                format!(
                    "KVM runs {} guests on this host, not {arch}: use `auto` or `tcg`",
                    Arch::host()
                ),
            );
        }
        if !r.vm.cpu.fits(arch) {
            self.err(
                "/vm/cpu",
                format!("an x86-64 level is not a CPU for {arch}: use `auto` or `max`"),
            );
        }
        for (i, c) in r.customize.iter().enumerate() {
            if let CustomizeStep::RunCommand(_)
            | CustomizeStep::Run(_)
            | CustomizeStep::Install(_)
            | CustomizeStep::Uninstall(_) = c
            {
                let (name, _) = c.name_and_arg();
                self.err(
                    &format!("/customize/{i}/{name}"),
                    format!("runs a program of the {arch} guest in libguestfs's appliance, which runs the host's architecture: do it in `provision` (the {arch} build VM)"),
                );
            }
        }
    }

    fn vm(&mut self, vm: &Vm, arch: crate::vocab::Arch) -> VmPlan {
        let memory_mib = match &vm.memory {
            None => crate::plan::DEFAULT_MEMORY_MIB,
            Some(s) => match parse_size(s, 1 << 20) {
                Ok(b) if b >= 256 << 20 => b >> 20,
                Ok(_) => {
                    self.err("/vm/memory", "expected at least 256M");
                    crate::plan::DEFAULT_MEMORY_MIB
                }
                Err(m) => {
                    self.err("/vm/memory", m);
                    crate::plan::DEFAULT_MEMORY_MIB
                }
            },
        };
        let vcpus = vm.vcpus.unwrap_or(crate::plan::DEFAULT_VCPUS);
        if vcpus == 0 {
            self.err("/vm/vcpus", "expected at least 1 vCPU");
        }
        let disk_bytes = vm.disk.as_ref().and_then(|s| match parse_size(s, 1) {
            Ok(b) => Some(b),
            Err(m) => {
                self.err("/vm/disk", m);
                None
            }
        });
        let timeout_secs = match &vm.timeout {
            None => crate::plan::DEFAULT_VM_TIMEOUT_SECS,
            Some(d) => parse_duration(d).unwrap_or_else(|m| {
                self.err("/vm/timeout", m);
                crate::plan::DEFAULT_VM_TIMEOUT_SECS
            }),
        };
        let boot_timeout_secs = match &vm.boot_timeout {
            None => crate::plan::DEFAULT_BOOT_TIMEOUT_SECS,
            Some(d) => match parse_duration(d) {
                Ok(0) => {
                    self.err("/vm/boot_timeout", "expected at least 1 s");
                    crate::plan::DEFAULT_BOOT_TIMEOUT_SECS
                }
                Ok(s) => s,
                Err(m) => {
                    self.err("/vm/boot_timeout", m);
                    crate::plan::DEFAULT_BOOT_TIMEOUT_SECS
                }
            },
        };
        let firmware = match vm.firmware {
            None if !vm.secure_boot => arch.default_firmware(),
            setting => crate::vocab::Firmware::from_settings(
                setting == Some(crate::recipe::model::FirmwareSetting::Uefi),
                vm.secure_boot,
            ),
        };
        VmPlan {
            arch,
            cpu: vm.cpu,
            firmware,
            tpm: vm.tpm,
            memory_mib,
            vcpus,
            disk_bytes,
            accel: vm.accel,
            timeout_secs,
            boot_timeout_secs,
            uri: vm
                .uri
                .clone()
                .unwrap_or_else(|| crate::plan::DEFAULT_URI.into()),
        }
    }

    fn outputs(&mut self, outs: &[Output]) -> Vec<OutputPlan> {
        let mut plans: Vec<OutputPlan> = Vec::new();
        for (i, o) in outs.iter().enumerate() {
            let ptr = format!("/outputs/{i}");
            let p = match o {
                Output::Format(f) => OutputPlan::new(*f),
                Output::Spec(s) => OutputPlan {
                    format: s.format,
                    subformat: s.subformat,
                    compress: s.compress,
                    cluster_size: s.cluster_size.as_ref().and_then(|c| {
                        parse_size(c, 1)
                            .map_err(|m| self.err(&format!("{ptr}/cluster_size"), m))
                            .ok()
                    }),
                },
            };
            for m in p.check() {
                self.err(&ptr, m);
            }
            if plans.iter().any(|q| q.format == p.format) {
                self.err(
                    &ptr,
                    format!(
                        "format {} is listed twice (each format makes one file)",
                        p.format.as_str()
                    ),
                );
            }
            plans.push(p);
        }
        if plans.is_empty() {
            plans.push(OutputPlan::new(Format::Qcow2));
        }
        plans
    }

    fn templates(&mut self, t: &Templates) -> TemplateSources {
        if t.domain.is_some() && self.trust == Trust::Untrusted {
            self.err(
                "/templates/domain",
                "a domain template of the recipe's own configures the VM on this host: only a trusted recipe may (--trust-recipe)",
            );
        }
        let trusted = self.trust == Trust::Trusted;
        let mut check = |ptr: &str, p: &Option<String>| -> Option<PathBuf> {
            let full = self.dir.join(p.as_ref()?);
            if !full.is_file() {
                self.errors.push(self.doc.diag(
                    ptr,
                    format!("template file {} does not exist", full.display()),
                ));
            } else if !trusted {
                // Read whole into the seed: below the recipe's directory, as any host file.
                if let Err(m) = crate::hostfile::read(&self.dir, p.as_ref()?, true) {
                    self.errors
                        .push(self.doc.diag(ptr, format!("{m} (or --trust-recipe)")));
                }
            }
            Some(full)
        };
        TemplateSources {
            domain: check("/templates/domain", &t.domain),
            user_data: check("/templates/user_data", &t.user_data),
            meta_data: check("/templates/meta_data", &t.meta_data),
            network_config: check("/templates/network_config", &t.network_config),
        }
    }
}

fn dedup(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn valid_package_name(p: &str) -> bool {
    values::package(p).is_ok()
}

/// Parse customize steps (host paths relative to `dir`, and below it unless `trust`ed);
/// errors point into `doc`.
fn customize_steps(
    steps: &[CustomizeStep],
    dir: &Path,
    trust: Trust,
    doc: &Document,
    errors: &mut Vec<Diagnostic>,
) -> Vec<crate::customize::Customize> {
    let host = crate::customize::HostFiles {
        base: dir,
        inside: trust == Trust::Untrusted,
    };
    let mut out = Vec::new();
    for (i, c) in steps.iter().enumerate() {
        if let CustomizeStep::SelinuxRelabel(false) = c {
            continue;
        }
        let (name, arg) = c.name_and_arg();
        match crate::customize::parse(&name, &arg, host) {
            Ok(step) => out.push(step),
            Err(m) => errors.push(doc.diag(&format!("/customize/{i}/{name}"), m)),
        }
    }
    out
}

/// Resolve one provisioning step: read file sources, check modes, paths and names.
fn step(
    s: &Step,
    dir: &Path,
    doc: &Document,
    ptr: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<ProvisionStep> {
    match s {
        Step::Packages(p) => {
            for (i, name) in p.iter().enumerate() {
                if !valid_package_name(name) {
                    errors.push(doc.diag(
                        &format!("{ptr}/packages/{i}"),
                        format!("`{name}` is not a valid package name"),
                    ));
                }
            }
            Some(ProvisionStep::Packages(p.clone()))
        }
        Step::Run(cmds) => Some(ProvisionStep::Run(cmds.clone())),
        Step::Files(files) => {
            let mut out = Vec::new();
            for (i, f) in files.iter().enumerate() {
                let fp = format!("{ptr}/files/{i}");
                if !f.path.starts_with('/') {
                    errors.push(doc.diag(&format!("{fp}/path"), "expected an absolute path"));
                }
                let mode = match f.mode.as_deref() {
                    None => 0o644,
                    Some(m) => match u32::from_str_radix(m, 8) {
                        Ok(v) if v <= 0o7777 => v,
                        _ => {
                            errors.push(doc.diag(
                                &format!("{fp}/mode"),
                                format!("expected an octal mode like \"0644\", found `{m}`"),
                            ));
                            0o644
                        }
                    },
                };
                let (origin, content) = match (&f.content, &f.source) {
                    (Some(c), None) => ("inline".to_string(), c.as_bytes().to_vec()),
                    // Copied into the image: only files that belong to the recipe.
                    (None, Some(src)) => match crate::hostfile::read(dir, src, true) {
                        Ok((full, b)) => (full.display().to_string(), b),
                        Err(m) => {
                            errors.push(doc.diag(&format!("{fp}/source"), m));
                            continue;
                        }
                    },
                    _ => {
                        errors.push(doc.diag(&fp, "expected exactly one of `content` or `source`"));
                        continue;
                    }
                };
                out.push(ProvisionFile {
                    path: f.path.clone(),
                    origin,
                    size: content.len(),
                    content,
                    mode,
                    owner: f.owner.clone().unwrap_or_else(|| "root:root".into()),
                });
            }
            Some(ProvisionStep::Files(out))
        }
        Step::Users(users) => {
            let mut out = Vec::new();
            for (i, u) in users.iter().enumerate() {
                let valid = !u.name.is_empty()
                    && u.name.len() <= 32
                    && u.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c))
                    && !u.name.starts_with('-');
                if !valid {
                    errors.push(doc.diag(
                        &format!("{ptr}/users/{i}/name"),
                        "expected a user name of lowercase letters, digits, `-` and `_`",
                    ));
                }
                if let Some(h) = &u.password_hash {
                    if !h.starts_with('$') {
                        errors.push(doc.diag(
                            &format!("{ptr}/users/{i}/password_hash"),
                            "expected a crypt(3) hash such as `$6$...` (never a clear-text password)",
                        ));
                    }
                }
                out.push(ProvisionUser {
                    name: u.name.clone(),
                    groups: u.groups.clone(),
                    shell: u.shell.clone().unwrap_or_else(|| "/bin/bash".into()),
                    sudo: u.sudo,
                    ssh_authorized_keys: u.ssh_authorized_keys.clone(),
                    password_hash: u.password_hash.clone(),
                });
            }
            Some(ProvisionStep::Users(out))
        }
    }
}

/// Parse a size; a bare integer is multiplied by `unit` (1 for bytes, 1 MiB for memory).
/// Suffixes: K, M, G, T (powers of 1024), optionally followed by `i`, `B` or `iB`.
pub fn parse_size(s: &SizeSpec, unit: u64) -> Result<u64, String> {
    let text = match s {
        SizeSpec::Number(n) => return n.checked_mul(unit).ok_or_else(|| "size too large".into()),
        SizeSpec::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a size like \"2G\" or \"512M\", found `{text}`"))?;
    let mult: u64 = match suffix
        .trim()
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .trim_end_matches('i')
    {
        "" => unit,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => {
            return Err(format!(
                "expected a size like \"2G\" or \"512M\", found `{text}`"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(|| "size too large".into())
}

/// `cache.max_age`: a duration, or days ("7d"), up to ten years.
fn parse_max_age(d: &DurationSpec) -> Result<u64, String> {
    if let DurationSpec::Text(t) = d {
        if let Some(days) = t.trim().strip_suffix('d') {
            return days
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= 3650)
                .map(|n| n * 86_400)
                .ok_or_else(|| format!("expected a number of days up to 3650, found `{t}`"));
        }
    }
    parse_duration(d)
}

/// The longest wait a recipe may ask for (vm.timeout, installer timeout).
pub const MAX_WAIT_SECS: u64 = 7 * 24 * 3600;

/// Parse a duration: integer seconds or "90s", "20m", "1h", "1h30m".
pub fn parse_duration(d: &DurationSpec) -> Result<u64, String> {
    let text = match d {
        DurationSpec::Seconds(s) if *s > MAX_WAIT_SECS => {
            return Err(format!("{s} s is longer than a week ({MAX_WAIT_SECS} s)"))
        }
        DurationSpec::Seconds(s) => return Ok(*s),
        DurationSpec::Text(t) => t.trim(),
    };
    let bad = || format!("expected a duration like \"90s\", \"20m\" or \"1h\", found `{text}`");
    let too_long = || format!("`{text}` is longer than a week ({MAX_WAIT_SECS} s)");
    let mut total = 0u64;
    let mut num = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(too_long)?;
    }
    if !num.is_empty() {
        let n = num.parse::<u64>().map_err(|_| bad())?;
        total = total.checked_add(n).ok_or_else(too_long)?;
    }
    if total == 0 {
        return Err(bad());
    }
    // Beyond a week nobody waits for a guest: a typo, or a number that would wrap later.
    if total > MAX_WAIT_SECS {
        return Err(too_long());
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
