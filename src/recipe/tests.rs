//! Recipe loading: positions in errors, all errors at once, element merge and override order.

use std::path::{Path, PathBuf};

use super::*;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    fn element(&self, name: &str, text: &str) {
        self.write(&format!("elements/{name}/element.yaml"), text);
    }
}

const MINIMAL: &str =
    "name: t\nversion: \"1\"\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\n";

fn errors(dir: &Dir, recipe: &str) -> Vec<Diagnostic> {
    let p = dir.write("r.yaml", recipe);
    load_plan(&p, &[], &[]).expect_err("expected errors")
}

fn at(d: &[Diagnostic], line: usize, col: usize, needle: &str) {
    assert!(
        d.iter()
            .any(|e| e.line == line && e.column == col && e.message.contains(needle)),
        "no error at {line}:{col} containing {needle:?} in:\n{}",
        d.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn minimal_recipe_resolves_with_defaults() {
    let dir = Dir::new();
    let p = dir.write("r.yaml", MINIMAL);
    let plan = load_plan(&p, &[], &[]).unwrap();
    assert_eq!(plan.slug(), "t-1");
    assert_eq!(plan.vm.memory_mib, 2048);
    assert_eq!(plan.vm.timeout_secs, 1800);
    assert_eq!(plan.vm.boot_timeout_secs, 300);
    assert_eq!(plan.outputs.len(), 1);
    assert_eq!(plan.cloud_init.datasources, DEFAULT_DATASOURCES);
    assert!(
        plan.sysprep.contains(&"machine-id"),
        "defaults apply when nothing is said"
    );
    assert_eq!(plan.recipe_sha256.len(), 64);
}

#[test]
fn every_error_is_reported_with_file_line_and_column() {
    let dir = Dir::new();
    let d = errors(
        &dir,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\nvm:\n  memroy: 2G\n  vcpus: two\n  accel: fast\noutputs: [qcow3]\nprovision:\n  - packges: [tree]\n",
    );
    at(&d, 5, 3, "unknown key `memroy` (did you mean `memory`?)");
    at(&d, 6, 10, "expected an integer");
    at(&d, 7, 10, "expected one of auto, kvm, tcg, found `fast`");
    at(&d, 8, 11, "qcow3");
    at(
        &d,
        10,
        5,
        "unknown key `packges` (did you mean `packages`?)",
    );
    assert_eq!(d.len(), 5, "{d:#?}");
    assert!(d[0].to_string().contains("r.yaml:"), "{}", d[0]);
}

#[test]
fn semantic_errors_are_collected_too() {
    let dir = Dir::new();
    let d = errors(
        &dir,
        "name: 'bad name'\nsource:\n  image: {url: ftp://x/y.img}\nvm:\n  memory: 12Q\n  timeout: soon\n  boot_timeout: 0\nelements: [debain]\nsysprep:\n  operations: [defaults, -logfile]\nprovision:\n  - files:\n      - {path: relative, content: x, mode: '999'}\n",
    );
    at(&d, 1, 7, "expected a name");
    at(&d, 3, 16, "http");
    at(&d, 3, 10, "missing `checksum`");
    at(&d, 5, 11, "expected a size");
    at(&d, 6, 12, "expected a duration");
    at(&d, 7, 17, "at least 1 s");
    at(
        &d,
        8,
        12,
        "element `debain` not found (did you mean `debian`?)",
    );
    at(&d, 10, 26, "did you mean `logfiles`");
    at(&d, 13, 16, "expected an absolute path");
    at(&d, 13, 44, "octal mode");
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let dir = Dir::new();
    let d = errors(&dir, "name: t\nsource: {bootstrap: [\n");
    assert_eq!(d.len(), 1);
    assert!(d[0].message.starts_with("invalid YAML"), "{}", d[0]);
    assert!(d[0].line >= 2, "{}", d[0]);
}

#[test]
fn source_needs_exactly_one_kind() {
    let dir = Dir::new();
    let d = errors(&dir, "name: t\nsource: {}\n");
    at(
        &d,
        2,
        9,
        "exactly one of `image`, `bootstrap` or `installer`",
    );
}

#[test]
fn installer_sources_resolve_and_report_every_mistake() {
    let dir = Dir::new();
    dir.write("k", "kernel");
    dir.write("i", "initrd");
    let p = dir.write(
        "r.yaml",
        "name: t\nvars: {hostname: h1}\nsource:\n  installer:\n    kernel: {path: k}\n    initrd: {path: i}\n    answers: {kind: preseed}\n    suite: bookworm\n    mirror: http://m.example:8080/debian/\n    user: {name: dave, password_hash: \"$6$salt$hash\"}\n    packages: [tree, cloud-init]\n",
    );
    let plan = load_plan(&p, &[], &[]).unwrap();
    let crate::plan::SourcePlan::Installer(i) = &plan.source else {
        panic!("installer plan expected");
    };
    assert_eq!(i.delivery, Delivery::Initrd);
    assert_eq!(
        i.cmdline,
        "auto=true priority=critical console=ttyS0,115200n8"
    );
    assert_eq!(i.answers.hostname, "h1");
    assert_eq!(i.answers.mirror_host, "m.example:8080");
    assert_eq!(i.answers.mirror_directory, "/debian");
    assert_eq!(i.answers.packages, ["tree", "cloud-init"]);
    assert!(i.mirror_check);
    // The hash never shows in the plan's JSON.
    assert!(!serde_json::to_string(&plan).unwrap().contains("$6$salt"));

    let d = errors(
        &dir,
        "name: t\nsource:\n  installer:\n    iso: {url: \"ftp://x/y.iso\"}\n    kernel: {path: k}\n    answers: {kind: autoinstall, delivery: initrd}\n    user: {name: Dave, password_hash: hunter2}\n    timeout: soon\n",
    );
    at(&d, 4, 5, "expected either `iso`, or `kernel` and `initrd`");
    at(&d, 6, 44, "use `seed`");
    at(&d, 7, 18, "lower-case letters");
    at(&d, 7, 39, "never a plain password");
    at(&d, 8, 14, "expected a duration");
}

#[test]
fn elements_merge_in_dependency_order_and_the_recipe_wins() {
    let dir = Dir::new();
    dir.element(
        "base",
        "description: b\nvars: {who: base, only_base: x}\npackages: [p1]\nprovision:\n  - run: [base]\nproperties: {a: base, b: base}\ncloud_init: {datasources: [NoCloud]}\nsysprep: [defaults, -logfiles]\n",
    );
    dir.element(
        "top",
        "description: t\ndepends: [base]\nvars: {who: top}\npackages: [p2, p1]\nprovision:\n  - run: [top]\nproperties: {b: top}\n",
    );
    let p = dir.write(
        "r.yaml",
        &format!("{MINIMAL}elements: [top]\nvars: {{who: recipe}}\nprovision:\n  - run: [recipe]\nproperties: {{a: recipe}}\nsysprep:\n  operations: [+logfiles]\n"),
    );
    let plan = load_plan(&p, &[("who".into(), "cli".into())], &[]).unwrap();
    let names: Vec<&str> = plan.elements.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["base", "top"], "dependencies first");
    assert_eq!(plan.vars["who"], "cli", "--var beats recipe beats elements");
    assert_eq!(plan.vars["only_base"], "x");
    let runs: Vec<String> = plan
        .provision
        .iter()
        .filter_map(|s| match s {
            crate::plan::ProvisionStep::Run(c) => Some(c[0].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(runs, ["base", "top", "recipe"]);
    assert_eq!(plan.properties["a"], "recipe");
    assert_eq!(plan.properties["b"], "top");
    assert_eq!(plan.cloud_init.datasources, ["NoCloud"]);
    assert!(
        plan.sysprep.contains(&"logfiles"),
        "the recipe's +logfiles comes last"
    );
    let crate::plan::SourcePlan::Bootstrap(b) = &plan.source else {
        panic!()
    };
    let tail: Vec<&str> = b
        .packages
        .iter()
        .rev()
        .skip(1) // the recipe's own cloud-init (MINIMAL) comes last
        .take(2)
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["p2", "p1"],
        "element packages are baked into the bootstrap, once each"
    );
}

#[test]
fn element_packages_become_a_first_step_for_image_sources() {
    let dir = Dir::new();
    dir.element("e", "description: e\npackages: [cloud-init]\n");
    dir.write("base.img", "x");
    let p = dir.write(
        "r.yaml",
        "name: t\nelements: [e]\nsource:\n  image: {path: base.img}\nprovision:\n  - run: [x]\n",
    );
    let plan = load_plan(&p, &[], &[]).unwrap();
    assert_eq!(
        plan.provision[0],
        crate::plan::ProvisionStep::Packages(vec!["cloud-init".into()])
    );
}

#[test]
fn recipe_elements_shadow_search_path_and_builtins() {
    let dir = Dir::new();
    dir.element("debian", "description: local override\n");
    let p = dir.write("r.yaml", &format!("{MINIMAL}elements: [debian]\n"));
    let plan = load_plan(&p, &[], &[]).unwrap();
    assert_eq!(plan.elements[0].description, "local override");
    assert!(Path::new(&plan.elements[0].origin).starts_with(dir.0.path()));
}

#[test]
fn cycles_and_bad_element_files_are_errors() {
    let dir = Dir::new();
    dir.element("a", "description: a\ndepends: [b]\n");
    dir.element("b", "description: b\ndepends: [a]\n");
    dir.element("broken", "description: x\npackagez: []\n");
    let d = errors(&dir, &format!("{MINIMAL}elements: [a, broken]\n"));
    assert!(
        d.iter().any(|e| e.message.contains("cycle: a -> b -> a")),
        "{d:#?}"
    );
    assert!(
        d.iter().any(|e| e.file.ends_with("broken/element.yaml")
            && e.line == 2
            && e.message.contains("did you mean `packages`")),
        "{d:#?}"
    );
}

#[test]
fn unknown_var_override_is_an_error() {
    let dir = Dir::new();
    let p = dir.write("r.yaml", &format!("{MINIMAL}vars: {{hostname: a}}\n"));
    let d = load_plan(&p, &[("hostnme".into(), "b".into())], &[]).unwrap_err();
    assert!(d[0].message.contains("did you mean `hostname`"), "{d:#?}");
}

#[test]
fn missing_file_sources_are_reported() {
    let dir = Dir::new();
    let d = errors(
        &dir,
        &format!("{MINIMAL}provision:\n  - files:\n      - {{path: /x, source: nope.txt}}\n"),
    );
    assert!(d[0].message.contains("nope.txt"), "{d:#?}");
    assert_eq!(d[0].line, 7);
}

#[test]
fn sizes_and_durations() {
    use model::{DurationSpec as D, SizeSpec as S};
    assert_eq!(parse_size(&S::Text("2G".into()), 1).unwrap(), 2 << 30);
    assert_eq!(parse_size(&S::Text("512MiB".into()), 1).unwrap(), 512 << 20);
    assert_eq!(parse_size(&S::Number(1024), 1 << 20).unwrap(), 1 << 30);
    assert!(parse_size(&S::Text("2X".into()), 1).is_err());
    assert_eq!(parse_duration(&D::Text("1h30m".into())).unwrap(), 5400);
    assert_eq!(parse_duration(&D::Text("90s".into())).unwrap(), 90);
    assert_eq!(parse_duration(&D::Seconds(5)).unwrap(), 5);
    assert!(parse_duration(&D::Text("0s".into())).is_err());
    // No wrap-around into a short timeout (it became 3584 s), nothing past a week.
    let e = parse_duration(&D::Text("5124095576030432h".into())).unwrap_err();
    assert!(e.contains("longer than a week"), "{e}");
    assert!(parse_duration(&D::Text("169h".into())).is_err());
    assert!(parse_duration(&D::Seconds(u64::MAX)).is_err());
    assert_eq!(
        parse_duration(&D::Text("168h".into())).unwrap(),
        MAX_WAIT_SECS
    );
}

#[test]
fn checksums() {
    assert!(parse_checksum(&format!("sha256:{}", "a".repeat(64))).is_ok());
    assert!(parse_checksum(&format!("sha512:{}", "A".repeat(128))).is_ok());
    assert!(parse_checksum("md5:abc").is_err());
    assert!(parse_checksum("sha256:abc").is_err());
}

#[test]
fn the_examples_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for ex in ["examples/debian-12.yaml", "examples/ubuntu-18.04.yaml"] {
        let plan = load_plan(&root.join(ex), &[], &[]).unwrap_or_else(|d| panic!("{ex}: {d:#?}"));
        assert!(!plan.elements.is_empty());
    }
}

#[test]
fn schema_is_generated_from_the_types() {
    let s = recipe_schema();
    let props = s["properties"].as_object().unwrap();
    for k in [
        "name",
        "version",
        "vars",
        "elements",
        "source",
        "vm",
        "provision",
        "cloud_init",
        "sysprep",
        "outputs",
        "publish",
    ] {
        assert!(props.contains_key(k), "{k} missing from the schema");
    }
}

#[test]
fn output_options_are_checked_per_format() {
    let dir = Dir::new();
    let d = errors(
        &dir,
        &format!(
            "{MINIMAL}outputs:\n  - {{format: vdi, subformat: fixed}}\n  - {{format: vmdk, compress: zstd}}\n  - {{format: raw}}\n  - {{format: qcow2, cluster_size: 3K}}\n"
        ),
    );
    at(&d, 6, 5, "subformat fixed does not apply to vdi");
    at(&d, 7, 5, "`compress` applies to qcow2 only");
    at(&d, 9, 5, "power of two");
    let d = errors(
        &dir,
        &format!("{MINIMAL}outputs:\n  - {{format: qcow2, compress: lz4}}\n"),
    );
    at(&d, 6, 31, "expected one of zlib, zstd, found `lz4`");
    let p = dir.write(
        "ok.yaml",
        &format!(
            "{MINIMAL}outputs:\n  - {{format: qcow2, compress: zstd, cluster_size: 2M}}\n  - {{format: vmdk, subformat: streamOptimized}}\n  - {{format: vpc, subformat: fixed}}\n  - raw\n"
        ),
    );
    let plan = load_plan(&p, &[], &[]).unwrap();
    assert_eq!(plan.outputs.len(), 4);
    assert_eq!(plan.outputs[0].cluster_size, Some(2 << 20));
    assert_eq!(
        plan.outputs[1].subformat,
        Some(model::Subformat::StreamOptimized)
    );
    assert_eq!(plan.outputs[2].file_name("x-1"), "x-1.vhd");
}

#[test]
fn a_base_without_cloud_init_is_an_error_before_anything_runs() {
    let dir = Dir::new();
    let d = errors(
        &dir,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm}\n",
    );
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].line, d[0].column), (3, 14));
    assert!(d[0].message.contains("no cloud-init"), "{}", d[0].message);
    assert!(d[0].message.contains("`cloud-init` element"));
    // The element brings it.
    let p = dir.write(
        "ok.yaml",
        "name: t\nelements: [cloud-init]\nsource:\n  bootstrap: {distro: debian, suite: bookworm}\n",
    );
    load_plan(&p, &[], &[]).unwrap();
    // Installers: the packages they install decide (subiquity always installs cloud-init).
    dir.write("k", "kernel");
    dir.write("i", "initrd");
    let installer = |kind: &str| {
        format!(
            "name: t\nsource:\n  installer:\n    kernel: {{path: k}}\n    initrd: {{path: i}}\n    answers: {{kind: {kind}}}\n    user: {{name: dave, password_hash: \"$6$salt$hash\"}}\n"
        )
    };
    let d = errors(&dir, &installer("preseed"));
    assert!(
        d.iter().any(|d| d.message.contains("no cloud-init")),
        "{d:?}"
    );
    let p = dir.write("ai.yaml", &installer("autoinstall"));
    load_plan(&p, &[], &[]).unwrap();
}

#[test]
fn integers_past_their_type_are_positioned_errors() {
    let dir = Dir::new();
    let d = errors(&dir, &format!("{MINIMAL}vm: {{vcpus: 4294967296}}\n"));
    at(&d, 5, 13, "expected a number <= 4294967295");
}

/// The provision key names the way the steps run (issue 23): host or guest apt, direct or
/// firmware boot, as the settings ask; a recipe without steps is not booted either way.
#[test]
fn the_provision_key_names_the_way_the_steps_run() {
    use crate::stagecache::{intended_path, provision_key, Key};
    use crate::vocab::{BootPath, PackagePath};
    let dir = Dir::new();
    let p = dir.write(
        "r.yaml",
        &format!("{MINIMAL}provision:\n  - packages: [jq]\n  - run: [\"true\"]\n"),
    );
    let plan = load_plan(&p, &[], &[]).unwrap();
    let default = crate::tunables::Tunables::from_lookup(|_| None);
    let guest = crate::tunables::Tunables::from_lookup(|k| {
        (k == "KILN_HOST_PACKAGES").then(|| "0".to_string())
    });
    let firmware = crate::tunables::Tunables::from_lookup(|k| {
        (k == "KILN_DIRECT_BOOT").then(|| "0".to_string())
    });
    let path = intended_path(&plan, &default);
    assert_eq!(
        (path.packages, path.boot),
        (PackagePath::Host, BootPath::Direct)
    );
    assert_eq!(intended_path(&plan, &guest).packages, PackagePath::Guest);
    assert_eq!(intended_path(&plan, &firmware).boot, BootPath::Firmware);
    let base = Key("0".repeat(64));
    let keys: Vec<Key> = [&default, &guest, &firmware]
        .iter()
        .map(|t| provision_key(&plan, t, &base).unwrap())
        .collect();
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
    assert_ne!(keys[1], keys[2]);
    // No steps: no boot, no packages, whatever the settings.
    let bare = load_plan(&dir.write("b.yaml", MINIMAL), &[], &[]).unwrap();
    let none = intended_path(&bare, &guest);
    assert_eq!(
        (none.packages, none.boot),
        (PackagePath::None, BootPath::None)
    );
}

/// The versions of the tools that write a stage's bytes are in its key (issue 23): another
/// libguestfs rebuilds the libguestfs unit, another qemu-img every output it writes; kiln's own
/// streamOptimized vmdk writer does not depend on qemu-img.
#[test]
fn tool_versions_that_write_the_bytes_are_in_the_keys() {
    use crate::hosttools::HostTools;
    use crate::stagecache::{guestfs_key, output_key, Key};
    use crate::tunables::VmdkWriter;
    let dir = Dir::new();
    let p = dir.write(
        "r.yaml",
        &format!("{MINIMAL}outputs:\n  - {{format: qcow2, compress: zstd}}\n  - {{format: vmdk, subformat: streamOptimized}}\n"),
    );
    let plan = load_plan(&p, &[], &[]).unwrap();
    let old = HostTools {
        qemu_img: "qemu-img version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)".into(),
        libguestfs: "1.48.6".into(),
    };
    let new_qemu = HostTools {
        qemu_img: "qemu-img version 10.0.3 (Debian 1:10.0.3+ds-2~bpo12+1)".into(),
        ..old.clone()
    };
    let new_guestfs = HostTools {
        libguestfs: "1.52.0".into(),
        ..old.clone()
    };
    let prev = Key("0".repeat(64));
    let g = |t: &HostTools| guestfs_key(&plan, &prev, t).unwrap().unwrap();
    assert_ne!(g(&old), g(&new_guestfs));
    assert_eq!(g(&old), g(&new_qemu));
    let (qcow2, vmdk) = (&plan.outputs[0], &plan.outputs[1]);
    let o = |out, w, t: &HostTools| output_key(&prev, out, w, t);
    assert_ne!(
        o(qcow2, VmdkWriter::Kiln, &old),
        o(qcow2, VmdkWriter::Kiln, &new_qemu)
    );
    assert_eq!(
        o(qcow2, VmdkWriter::Kiln, &old),
        o(qcow2, VmdkWriter::Kiln, &new_guestfs)
    );
    assert_eq!(
        o(vmdk, VmdkWriter::Kiln, &old),
        o(vmdk, VmdkWriter::Kiln, &new_qemu)
    );
    assert_ne!(
        o(vmdk, VmdkWriter::QemuImg, &old),
        o(vmdk, VmdkWriter::QemuImg, &new_qemu)
    );
}

/// `vm.firmware` / `secure_boot` resolve to one firmware; the bootstrap is hybrid by default
/// with both GRUBs, an MBR layout cannot boot UEFI, and Glance's hardware properties follow
/// the build (a recipe's property saying otherwise is an error at its place).
#[test]
fn firmware_and_layout_resolve_and_contradictions_are_refused() {
    use crate::vocab::{DiskLayout, Firmware};
    let dir = Dir::new();
    let plan = load_plan(&dir.write("r.yaml", MINIMAL), &[], &[]).unwrap();
    assert_eq!(plan.vm.firmware, Firmware::Bios);
    let SourcePlan::Bootstrap(b) = &plan.source else {
        panic!("bootstrap")
    };
    assert_eq!(b.layout, DiskLayout::Hybrid);
    assert!(b.packages.contains(&"grub-cloud-amd64".to_string()));
    assert!(!b.packages.contains(&"grub-pc".to_string()));

    let glance = "publish:\n  glance:\n    cloud: c\n    name: n\n";
    let sb = format!("{MINIMAL}vm:\n  secure_boot: true\n  tpm: true\n{glance}");
    let plan = load_plan(&dir.write("r.yaml", &sb), &[], &[]).unwrap();
    assert_eq!(plan.vm.firmware, Firmware::SecureBoot);
    let props = &plan.publish.glance[0].properties;
    for (k, v) in [
        ("architecture", "x86_64"),
        ("hw_machine_type", "q35"),
        ("hw_firmware_type", "uefi"),
        ("os_secure_boot", "required"),
        ("hw_tpm_version", "2.0"),
        ("hw_tpm_model", "tpm-crb"),
    ] {
        assert_eq!(props.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(plan.vm.tpm);

    let mbr = MINIMAL.replace(
        "packages: [cloud-init]}",
        "packages: [cloud-init], layout: bios}",
    );
    let plan = load_plan(&dir.write("r.yaml", &mbr), &[], &[]).unwrap();
    let SourcePlan::Bootstrap(b) = &plan.source else {
        panic!("bootstrap")
    };
    assert!(b.packages.contains(&"grub-pc".to_string()));
    let e = errors(
        &dir,
        &format!("{mbr}vm:\n  firmware: uefi\nproperties:\n  hw_firmware_type: bios\n{glance}"),
    );
    at(&e, 6, 13, "needs an EFI system partition");
    at(&e, 8, 21, "`hw_firmware_type` is \"uefi\" for this build");
}

/// `arch: aarch64` resolves to UEFI (AAVMF), the `uefi` layout with arm64's kernel and signed
/// boot chain, `virt` in Glance's properties, and keys of their own; what another architecture
/// cannot do is refused at its line, all at once.
#[test]
fn aarch64_resolves_to_its_firmware_layout_and_packages_and_refuses_what_it_cannot_do() {
    use crate::vocab::{Arch, DiskLayout, Firmware};
    let dir = Dir::new();
    let glance = "publish:\n  glance:\n    cloud: c\n    name: n\n";
    let arm = format!("arch: aarch64\n{MINIMAL}{glance}");
    let plan = load_plan(&dir.write("r.yaml", &arm), &[], &[]).unwrap();
    assert_eq!(plan.vm.arch, Arch::Aarch64);
    assert_eq!(plan.vm.firmware, Firmware::Uefi);
    let SourcePlan::Bootstrap(b) = &plan.source else {
        panic!("bootstrap")
    };
    assert_eq!((b.layout, b.arch), (DiskLayout::Uefi, Arch::Aarch64));
    for p in [
        "linux-image-cloud-arm64",
        "grub-efi-arm64-signed",
        "shim-signed",
    ] {
        assert!(b.packages.contains(&p.to_string()), "{p}: {:?}", b.packages);
    }
    assert!(
        !b.packages.iter().any(|p| p.contains("amd64")),
        "{:?}",
        b.packages
    );
    let props = &plan.publish.glance[0].properties;
    assert_eq!(props["architecture"], "aarch64");
    assert_eq!(props["hw_machine_type"], "virt");
    assert_eq!(props["hw_firmware_type"], "uefi");
    // Another architecture, another base disk (and x86_64's keys as they were).
    let x86 = load_plan(&dir.write("r.yaml", MINIMAL), &[], &[]).unwrap();
    let SourcePlan::Bootstrap(xb) = &x86.source else {
        panic!("bootstrap")
    };
    assert_ne!(b.cache_key(), xb.cache_key());

    let e = errors(
        &dir,
        "arch: aarch64\nname: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init], layout: hybrid}\nvm:\n  firmware: bios\n  cpu: x86-64-v2\n  accel: kvm\ncustomize:\n  - run-command: apt-get update\n  - write: /etc/motd:hi\n  - install: [tree]\n",
    );
    at(&e, 4, 80, "boots UEFI only");
    at(&e, 6, 13, "has no BIOS");
    at(&e, 7, 8, "not a CPU for aarch64");
    at(&e, 8, 10, "KVM runs x86_64 guests on this host");
    at(
        &e,
        10,
        18,
        "libguestfs's appliance, which runs the host's architecture",
    );
    at(&e, 12, 14, "libguestfs's appliance");
    assert_eq!(e.len(), 6, "{e:?}");
    let e = errors(
        &dir,
        &MINIMAL.replace(
            "packages: [cloud-init]}",
            "packages: [cloud-init], layout: uefi}",
        ),
    );
    at(&e, 4, 80, "`uefi` is aarch64's layout");
    assert_eq!(e.len(), 1, "{e:?}");
}

/// `publish.glance` as a list: one target per cloud and region, each resolved like the single
/// mapping (names rendered, properties), every mistake at its place in the list; the same
/// place twice and `all_or_nothing` with one target are refused.
#[test]
fn several_glance_targets_resolve_and_their_mistakes_are_placed() {
    let dir = Dir::new();
    let two = format!(
        "{MINIMAL}publish:\n  all_or_nothing: true\n  glance:\n    - cloud: a\n      name: \"n-{{{{vars.x}}}}\"\n    - cloud: a\n      region: \"{{{{vars.r}}}}\"\n      keep: 2\nvars:\n  x: \"1\"\n  r: RegionTwo\n"
    );
    let plan = load_plan(&dir.write("r.yaml", &two), &[], &[]).unwrap();
    let g = &plan.publish.glance;
    assert_eq!(g.len(), 2);
    assert!(plan.publish.all_or_nothing);
    assert_eq!(
        (g[0].cloud.as_deref(), g[0].region.as_deref()),
        (Some("a"), None)
    );
    assert_eq!(g[1].region.as_deref(), Some("RegionTwo"));
    assert_eq!(g[0].names.values().next().map(String::as_str), Some("n-1"));
    assert_eq!(g[1].keep, Some(2));
    assert_eq!(g[0].properties, g[1].properties);

    // Line 7 is the list's first item, line 9 its second.
    let bad = format!(
        "{MINIMAL}publish:\n  glance:\n    - cloud: a\n      keep: 0\n    - cloud: a\n      formats: [vdi]\n      regoin: x\n"
    );
    let d = errors(&dir, &bad);
    at(&d, 8, 13, "keep must be at least 1");
    at(&d, 10, 17, "not among the outputs");
    at(&d, 11, 7, "unknown key `regoin`");
    let same = format!("{MINIMAL}publish:\n  glance:\n    - cloud: a\n    - cloud: a\n");
    at(
        &errors(&dir, &same),
        8,
        7,
        "the same cloud and region as target 0",
    );
    let one = format!("{MINIMAL}publish:\n  all_or_nothing: true\n  glance:\n    cloud: a\n");
    at(
        &errors(&dir, &one),
        6,
        19,
        "all_or_nothing is for several Glance targets",
    );
}
