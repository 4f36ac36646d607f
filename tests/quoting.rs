//! Property tests of the quoting helpers: generated strings go into recipe values and `--var`
//! variables, through kiln's validators and renderers, and the rendered files are read back by
//! the real parser of each format: debconf-set-selections (preseed), pykickstart (kickstart),
//! PyYAML (cloud-init and subiquity's YAML), dash (shell), Python's expat (XML). Every value
//! arrives intact or is refused; nothing a value holds changes the rest of its file.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

mod harness;
use harness::*;

/// Values that broke out of their files before (issue 12), then generated ones: any Unicode,
/// the characters each format treats specially, blanks and invisible characters.
fn values(n: usize) -> Vec<String> {
    let mut v: Vec<String> = [
        "Alice Example",
        "Alice O'Brien \"Al\" #1",
        "x\nd-i preseed/late_command string in-target sh -c 'id'",
        "rocky --bootproto=static --ip=10.0.0.1\nuser --name=evil\n%post\nid\n%end",
        "h\nruncmd: [id]",
        "yes",
        "null",
        "1e3",
        "- a",
        "a: b",
        "{x: y}",
        "&anchor *alias !tag |",
        "trailing\\",
        " leading",
        "trailing ",
        "tab\there",
        "zero\u{200b}width",
        "\u{85}nel",
        "",
        "'",
        "\"",
        "\\\"",
        "%post",
        "#comment",
        "$(id) `id` ${HOME}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let strat = prop_oneof![
        any::<String>(),
        "[ a-zA-Z0-9\"'\\\\#:%$`!&*|>{}\\[\\],=@~^?;()<>/.+-]{0,24}",
        "[ \t\n\r\u{7f}\u{85}\u{a0}\u{2028}\u{feff}\u{1b}aZ\\\\\"'#:-]{0,8}",
        "(yes|no|on|off|null|true|~|[0-9]{1,3}|0x1f|\\.inf)",
    ];
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    while v.len() < n {
        v.push(strat.new_tree(&mut runner).unwrap().current());
    }
    v.retain(|s| !s.contains('\0'));
    v
}

fn tools_python() -> PathBuf {
    let venv = std::env::var("KILN_TOOLS_VENV").unwrap_or_else(|_| "/opt/kiln-tools-venv".into());
    let p = Path::new(&venv).join("bin/python3");
    assert!(
        p.is_file(),
        "{} missing: scripts/install-deps.sh installs pykickstart there",
        p.display()
    );
    p
}

/// Run a Python script over files; one JSON value per file, in order.
fn python_each(python: &Path, script: &str, files: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.len(), files.len());
    v
}

const PYYAML: &str = r#"
import json, sys, yaml
out = []
for f in sys.argv[1:]:
    try:
        out.append({"ok": True, "doc": yaml.safe_load(open(f, encoding="utf-8"))})
    except Exception as e:
        out.append({"ok": False, "error": str(e)})
print(json.dumps(out, default=str))
"#;

const PYKICKSTART: &str = r#"
import json, sys
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion
out = []
for f in sys.argv[1:]:
    h = makeVersion("RHEL9")
    p = KickstartParser(h, errorsAreFatal=True)
    try:
        p.readKickstart(f)
        out.append({"ok": True, "gecos": [u.gecos for u in h.user.userList],
                    "names": [u.name for u in h.user.userList],
                    "hostname": h.network.hostname,
                    "post": len(h.scripts)})
    except Exception as e:
        out.append({"ok": False, "error": str(e)})
print(json.dumps(out, default=str))
"#;

/// The value debconf-set-selections stores for `question` from `file`, in a private database.
fn debconf_value(file: &Path, question: &str) -> (Option<String>, String) {
    let db = file.with_extension("db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = db.join("debconf.conf");
    std::fs::write(
        &conf,
        format!(
            "Config: configdb\nTemplates: templatedb\n\nName: configdb\nDriver: File\nFilename: {0}/config.dat\n\nName: templatedb\nDriver: File\nFilename: {0}/templates.dat\n",
            db.display()
        ),
    )
    .unwrap();
    let set = Command::new("debconf-set-selections")
        .arg(file)
        .env("DEBCONF_SYSTEMRC", &conf)
        .output()
        .unwrap();
    let all_questions = Command::new("perl")
        .args([
            "-MDebconf::Db",
            "-MDebconf::Question",
            "-e",
            "Debconf::Db->load; my $q = Debconf::Question->get($ARGV[0]); print defined $q ? $q->value : '<unset>'; print \"\\0\"; my $it = Debconf::Question->iterator; while (my $x = $it->iterate) { print $x->name, \"\\n\" }",
            question,
        ])
        .env("DEBCONF_SYSTEMRC", &conf)
        .output()
        .unwrap();
    assert!(
        all_questions.status.success(),
        "{}",
        text(&all_questions.stderr)
    );
    let out = String::from_utf8(all_questions.stdout).unwrap();
    let (value, names) = out.split_once('\0').unwrap();
    let stderr = text(&set.stderr);
    if !set.status.success() || stderr.contains("error") {
        return (None, stderr);
    }
    (Some(value.to_string()), names.to_string())
}

struct Case {
    value: String,
    /// The rendered answer file, or the validator's messages.
    rendered: Result<PathBuf, String>,
}

/// Render the answer file of the fixture `kind` with `full_name` (or, with `template`, a
/// recipe template that writes `--var v=VALUE`) for every value.
fn render_all(kind: &str, template: Option<&str>, values: &[String], dir: &Path) -> Vec<Case> {
    let fixture = root().join("tests/fixtures/installer");
    let base = std::fs::read_to_string(fixture.join(format!("{kind}.yaml"))).unwrap();
    let file = match kind {
        "preseed" => "preseed.cfg",
        "kickstart" => "ks.cfg",
        _ => "user-data",
    };
    let mut cases = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let case = dir.join(format!("{kind}-{}-{i}", template.is_some()));
        std::fs::create_dir_all(&case).unwrap();
        let mut recipe = base
            .replace(
                "{path: vmlinuz}",
                &format!("{{path: {}}}", fixture.join("vmlinuz").display()),
            )
            .replace(
                "{path: initrd.gz}",
                &format!("{{path: {}}}", fixture.join("initrd.gz").display()),
            );
        let mut vars = Vec::new();
        match template {
            None => {
                // JSON is YAML: the recipe carries the value exactly.
                let json = serde_json::to_string(value).unwrap();
                recipe = recipe.replace("full_name: Alice Example", &format!("full_name: {json}"));
            }
            Some(t) => {
                std::fs::write(case.join("answers.hbs"), t).unwrap();
                recipe = recipe
                    .replace(
                        "vars: {hostname: snaphost}",
                        "vars: {hostname: snaphost, v: \"\"}",
                    )
                    .replace("answers: {", "answers: {template: answers.hbs, ");
                vars.push(("v".to_string(), value.clone()));
            }
        }
        let path = case.join("recipe.yaml");
        std::fs::write(&path, recipe).unwrap();
        let (plan, errs) =
            kiln::recipe::load_all(&path, &vars, &[], kiln::recipe::Trust::Untrusted);
        let rendered = match (plan, errs.is_empty()) {
            (Some(plan), true) => match kiln::templates::render_answers(&plan) {
                Ok(Some(text)) => {
                    let out = case.join(file);
                    std::fs::write(&out, text).unwrap();
                    Ok(out)
                }
                Ok(None) => panic!("no answer file"),
                Err(e) => Err(e.to_string()),
            },
            _ => Err(errs
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")),
        };
        cases.push(Case {
            value: value.clone(),
            rendered,
        });
    }
    cases
}

/// Every refusal names where the value was (file:line:column or the template and `--var`),
/// and enough values get through for the test to mean something.
fn check_refusals(what: &str, cases: &[Case], must_accept: &[&str]) {
    let accepted = cases.iter().filter(|c| c.rendered.is_ok()).count();
    assert!(
        accepted * 4 >= cases.len(),
        "{what}: only {accepted} of {} values accepted",
        cases.len()
    );
    for c in cases {
        if let Err(m) = &c.rendered {
            assert!(
                m.contains("recipe.yaml:") || m.contains("--var") || m.contains("answers.hbs: "),
                "{what}: {:?} refused without a position: {m}",
                c.value
            );
        } else if c.value.chars().any(char::is_control) {
            panic!(
                "{what}: {:?} holds a control character and was accepted",
                c.value
            );
        }
    }
    for s in must_accept {
        let c = cases.iter().find(|c| c.value == *s).unwrap();
        assert!(
            c.rendered.is_ok(),
            "{what}: {s:?} refused: {:?}",
            c.rendered
        );
    }
}

#[test]
fn preseed_values_arrive_intact_in_debconf_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let values = values(120);
    for template in [
        None,
        Some("d-i passwd/user-fullname string {{vars.v}}\nd-i netcfg/hostname string h\n"),
    ] {
        let cases = render_all("preseed", template, &values, dir.path());
        check_refusals(
            "preseed",
            &cases,
            &["Alice O'Brien \"Al\" #1", "$(id) `id` ${HOME}"],
        );
        for c in &cases {
            let Ok(f) = &c.rendered else { continue };
            let (got, names) = debconf_value(f, "passwd/user-fullname");
            assert_eq!(
                got.as_deref(),
                Some(c.value.as_str()),
                "{:?} in {}",
                c.value,
                f.display()
            );
            // Nothing but the template's own questions: no line was added.
            assert!(
                !names.contains("late_command") && !names.contains("preseed/"),
                "{:?} added questions: {names}",
                c.value
            );
        }
    }
}

#[test]
fn kickstart_values_arrive_intact_in_pykickstart_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let values = values(150);
    let mut files = Vec::new();
    let mut wanted = Vec::new();
    for template in [
        None,
        Some(
            "network --bootproto=dhcp --hostname=h\nuser --name=alice --gecos={{vars.v}} --lock\n",
        ),
    ] {
        let cases = render_all("kickstart", template, &values, dir.path());
        check_refusals(
            "kickstart",
            &cases,
            &["Alice O'Brien \"Al\" #1", "%post", "#comment"],
        );
        for c in cases {
            if let Ok(f) = c.rendered {
                files.push(f);
                wanted.push(c.value);
            }
        }
    }
    let parsed = python_each(&tools_python(), PYKICKSTART, &files);
    for ((f, want), got) in files.iter().zip(&wanted).zip(&parsed) {
        let shown = std::fs::read_to_string(f).unwrap();
        assert_eq!(
            got["ok"], true,
            "{want:?}: pykickstart refused:\n{got}\n{shown}"
        );
        assert_eq!(
            got["gecos"],
            serde_json::json!([want]),
            "{want:?}:\n{shown}"
        );
        assert_eq!(
            got["names"],
            serde_json::json!(["alice"]),
            "{want:?}:\n{shown}"
        );
        assert_eq!(got["post"], 0, "{want:?} added a script:\n{shown}");
    }
}

#[test]
fn yaml_values_arrive_intact_in_pyyaml_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let values = values(200);
    let mut files = Vec::new();
    let mut wanted = Vec::new();
    for template in [
        None,
        Some("#cloud-config\nautoinstall:\n  version: 1\n  identity: {realname: {{vars.v}}}\n  x: [{{vars.v}}, {{vars.v}}]\n"),
    ] {
        let cases = render_all("autoinstall", template, &values, dir.path());
        check_refusals("yaml", &cases, &["yes", "- a", "&anchor *alias !tag |", "1e3"]);
        for c in cases {
            if let Ok(f) = c.rendered {
                files.push((f, template.is_some()));
                wanted.push(c.value);
            }
        }
    }
    let paths: Vec<PathBuf> = files.iter().map(|(f, _)| f.clone()).collect();
    let parsed = python_each(Path::new("/usr/bin/python3"), PYYAML, &paths);
    for (((f, flow), want), got) in files.iter().zip(&wanted).zip(&parsed) {
        let shown = std::fs::read_to_string(f).unwrap();
        assert_eq!(got["ok"], true, "{want:?}: PyYAML refused:\n{got}\n{shown}");
        let doc = &got["doc"]["autoinstall"];
        assert_eq!(
            doc["identity"]["realname"],
            serde_json::json!(want),
            "{want:?}:\n{shown}"
        );
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        let want_keys = if *flow {
            vec!["identity", "version", "x"]
        } else {
            vec![
                "apt", "identity", "keyboard", "locale", "packages", "proxy", "shutdown", "ssh",
                "storage", "timezone", "version",
            ]
        };
        let mut keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, want_keys, "{want:?} changed the document:\n{shown}");
        if *flow {
            assert_eq!(
                doc["x"],
                serde_json::json!([want, want]),
                "{want:?}:\n{shown}"
            );
        }
    }
}

/// The helpers on their own, against dash and expat, for every value without a control
/// character (those are refused before any file is written).
#[test]
fn shell_and_xml_quoting_round_trip_through_dash_and_expat() {
    let values: Vec<String> = values(400)
        .into_iter()
        .filter(|v| !v.chars().any(char::is_control))
        .collect();
    let mut script = String::new();
    for v in &values {
        script.push_str(&format!("printf '%s\\0' {}\n", kiln::quote::sh(v)));
    }
    let out = Command::new("dash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_terminator('\0')
        .collect();
    assert_eq!(got, values.iter().map(String::as_str).collect::<Vec<_>>());

    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let f = dir.path().join(format!("{i}.xml"));
        let q = kiln::quote::xml(v);
        std::fs::write(&f, format!("<d a='{q}' b=\"{q}\"><n>{q}</n></d>")).unwrap();
        files.push(f);
    }
    let parsed = python_each(
        Path::new("/usr/bin/python3"),
        r#"
import json, sys
import xml.etree.ElementTree as ET
out = []
for f in sys.argv[1:]:
    d = ET.parse(f).getroot()
    out.append([d.get("a"), d.get("b"), d.find("n").text or "", len(list(d))])
print(json.dumps(out, default=str))
"#,
        &files,
    );
    for (v, got) in values.iter().zip(parsed) {
        assert_eq!(got, serde_json::json!([v, v, v, 1]), "{v:?}");
    }
}
