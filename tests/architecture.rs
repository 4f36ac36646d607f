//! The import rule of ARCHITECTURE.md, enforced on the sources: every module has a layer,
//! imports point only to its own layer or below, no files import each other in a circle, a
//! stage never imports another stage, the build context stays above the domain modules, and
//! only the command line prints to stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, top (1) to bottom (7): a module may import its own layer and those below.
const LAYERS: &[(&str, u8)] = &[
    ("crate", 1), // lib.rs and main.rs
    ("cli", 1),
    ("build", 2),
    ("stages", 3),
    ("pipeline", 4),
    ("recipe", 5),
    ("glance", 5),
    ("installer", 5),
    ("inventory", 5),
    ("inspect", 5),
    ("aptsandbox", 5),
    ("directboot", 5),
    ("diskread", 6),
    ("imagediff", 5),
    ("imagefile", 5),
    ("bootstrap", 5),
    ("efiboot", 5),
    ("boottest", 5),
    ("fetch", 5),
    ("templates", 6),
    ("seed", 5),
    ("convert", 5),
    ("qemu_img", 5),
    ("vmdk", 5),
    ("manifest", 5),
    ("outdir", 5),
    ("gc", 5),
    ("report", 5),
    ("ci", 5),
    ("stagecache", 5),
    ("remotecache", 5),
    ("sysprep", 5),
    ("customize::apply", 5),
    ("guest", 6),
    ("hosttools", 6),
    ("libvirt", 6),
    ("process", 6),
    ("owner", 6),
    ("parallel", 6),
    ("signing", 6),
    ("progress", 6),
    ("logging", 6),
    ("customize", 7),
    ("plan", 7),
    ("vocab", 7),
    ("suggest", 7),
    ("quote", 7),
    ("hostfile", 7),
    ("tunables", 7),
    ("stall", 7),
];

fn layer(module: &str) -> Option<u8> {
    // The longest entry that is the module or one of its ancestors.
    LAYERS
        .iter()
        .filter(|(m, _)| module == *m || module.starts_with(&format!("{m}::")))
        .max_by_key(|(m, _)| m.len())
        .map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path of a source file: src/recipe/mod.rs -> recipe, src/libvirt/console.rs ->
/// libvirt::console, src/lib.rs -> crate.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => "crate".into(),
        _ => parts.join("::"),
    }
}

/// The code of a file without its tests and line comments.
fn code(text: &str) -> String {
    let body = text.split("\n#[cfg(test)]").next().unwrap_or("");
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Crate {
    files: BTreeMap<String, (PathBuf, String)>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn load() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let mut files = BTreeMap::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        files.insert(module_of(&src, &p), (p, code(&text)));
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|i| parts[..i].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut edges = BTreeMap::new();
    for (m, (_, text)) in &files {
        let mut to = BTreeSet::new();
        let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
        for (prefix, base) in [("crate::", None), ("super::", parent.clone())] {
            for (i, _) in text.match_indices(prefix) {
                let rest: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let full = match &base {
                    Some(b) => format!("{b}::{rest}"),
                    None if prefix == "super::" => rest.clone(),
                    None => rest.clone(),
                };
                let target = resolve(full.trim_end_matches(':'))
                    .or_else(|| base.clone().filter(|b| modules.contains(b)));
                if let Some(t) = target.filter(|t| t != m) {
                    to.insert(t);
                }
            }
        }
        edges.insert(m.clone(), to);
    }
    Crate { files, edges }
}

#[test]
fn every_module_has_a_layer_and_imports_point_down() {
    let c = load();
    let mut problems = Vec::new();
    for (m, to) in &c.edges {
        let Some(lm) = layer(m) else {
            problems.push(format!(
                "{m} has no layer: add it to ARCHITECTURE.md and LAYERS"
            ));
            continue;
        };
        for t in to {
            if let Some(lt) = layer(t) {
                if lt < lm {
                    problems.push(format!(
                        "{m} (layer {lm}) imports {t} (layer {lt}), above it"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let c = load();
    // Tarjan's strongly connected components.
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        next: usize,
        cycles: Vec<Vec<String>>,
    }
    fn visit(t: &mut T, v: &str) {
        t.index.insert(v.into(), t.next);
        t.low.insert(v.into(), t.next);
        t.next += 1;
        t.stack.push(v.into());
        t.on.insert(v.into());
        for w in t.edges.get(v).cloned().unwrap_or_default() {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.cycles.push(comp);
            }
        }
    }
    let mut t = T {
        edges: &c.edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        cycles: Vec::new(),
    };
    for m in c.edges.keys() {
        if !t.index.contains_key(m) {
            visit(&mut t, m);
        }
    }
    assert!(t.cycles.is_empty(), "import cycles: {:?}", t.cycles);
}

#[test]
fn a_stage_never_imports_another_stage() {
    let c = load();
    // A stage is `stages::NAME` with its submodules (a source kind is part of the source
    // stage); `stages` itself is the list of them.
    let stage_of = |m: &str| m.split("::").take(2).collect::<Vec<_>>().join("::");
    for (m, to) in &c.edges {
        if m.starts_with("stages::") {
            let own = stage_of(m);
            let other: Vec<&String> = to
                .iter()
                .filter(|t| t.starts_with("stages") && stage_of(t) != own)
                .collect();
            assert!(other.is_empty(), "{m} imports {other:?}");
        }
    }
}

#[test]
fn the_build_context_stays_above_the_domain_modules() {
    let c = load();
    for (m, (path, text)) in &c.files {
        if layer(m).is_some_and(|l| l > 4) {
            assert!(
                !text.contains("BuildContext"),
                "{} names the build context",
                path.display()
            );
        }
    }
}

#[test]
fn only_the_command_line_prints_to_stdout() {
    let c = load();
    for (m, (path, text)) in &c.files {
        if m != "cli" && !m.starts_with("cli::") {
            assert!(
                !text.contains("println!") && !text.contains("print!("),
                "{} prints to stdout",
                path.display()
            );
        }
    }
}

#[test]
fn the_rule_test_sees_the_imports_it_checks() {
    // Guard against a parser that finds nothing: known edges must be there.
    let c = load();
    assert!(c.edges["stages::convert"].contains("convert"));
    assert!(c.edges["stages::source::bootstrap"].contains("bootstrap"));
    assert!(c.edges["cli::planned"].contains("stages"));
    assert!(c.edges["plan"].contains("vocab"));
    assert!(c.files.len() > 40, "{}", c.files.len());
}

/// The whole text of a source file, tests included (the rules below hold for tests too).
fn whole_sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect()
}

#[test]
fn only_the_tunables_module_reads_the_environment() {
    let mut readers: Vec<String> = whole_sources()
        .into_iter()
        .filter(|(p, t)| !p.ends_with("src/tunables.rs") && t.contains("env::var"))
        .map(|(p, _)| p.display().to_string())
        .collect();
    readers.sort();
    assert!(readers.is_empty(), "read the environment: {readers:?}");
}

#[test]
fn every_vm_comes_from_the_one_domain_template() {
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let domain_templates: Vec<String> = std::fs::read_dir(&templates)
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("<domain ")))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(domain_templates, ["domain.xml.hbs"]);
    // No domain XML written in code (tests may read rendered XML, not write their own VM).
    for (m, (path, text)) in &load().files {
        assert!(
            !text.contains("<domain type") && !text.contains("<domain>"),
            "{} ({m}) writes domain XML itself",
            path.display()
        );
    }
}

#[test]
fn no_source_file_is_over_900_lines() {
    let long: Vec<String> = whole_sources()
        .into_iter()
        .filter(|(_, t)| t.lines().count() > 900)
        .map(|(p, t)| format!("{} ({} lines)", p.display(), t.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

/// Functions longer than 150 lines, by (file, name): a brace count from each `fn` line, on
/// text whose strings and comments cannot hold braces that matter here.
fn long_functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let is_fn = ["fn ", "pub fn ", "pub(super) fn ", "pub(crate) fn "]
            .iter()
            .any(|p| t.starts_with(p));
        if !is_fn || t.ends_with(';') {
            continue;
        }
        let name: String = t[t.find("fn ").unwrap() + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut started) = (0i64, false);
        for (j, body) in lines[i..].iter().enumerate() {
            // Strings and char literals out: `"{"` and `'{'` are no braces.
            let mut code = String::new();
            let mut in_str = false;
            let mut prev = ' ';
            for c in body.split("//").next().unwrap_or("").chars() {
                if c == '"' && prev != '\\' {
                    in_str = !in_str;
                } else if !in_str {
                    code.push(c);
                }
                prev = c;
            }
            let code = code.replace("'{'", "").replace("'}'", "");
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth <= 0 {
                if j + 1 > 150 {
                    out.push((name.clone(), j + 1));
                }
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_150_lines_but_the_tables() {
    // One arm per sysprep operation or customize step, each a few lines: tables, not logic.
    const TABLES: &[&str] = &["plan_operation", "patterns", "apply"];
    let mut long = Vec::new();
    for (p, text) in whole_sources() {
        for (name, n) in long_functions(&text) {
            if !TABLES.contains(&name.as_str()) {
                long.push(format!("{}: {name} ({n} lines)", p.display()));
            }
        }
    }
    assert!(long.is_empty(), "split these: {long:?}");
    // The counter sees the tables themselves (guards against one that finds nothing).
    let engine = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sysprep/engine.rs"),
    )
    .unwrap();
    assert!(long_functions(&engine)
        .iter()
        .any(|(n, _)| n == "plan_operation"));
}
