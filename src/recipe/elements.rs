//! Element discovery and dependency resolution.
//!
//! Search order: the recipe's own `elements/`, then each directory of `KILN_ELEMENTS_PATH`
//! (colon-separated), then `$KILN_DATA_DIR/elements` if set, then the built-in elements
//! compiled into the binary; the first one holding `<name>/element.yaml` wins. The binary
//! never reads elements from the source tree it was built from: an installed or copied kiln
//! behaves the same everywhere, and nobody can plant elements into a path baked into it.

use std::path::{Path, PathBuf};

use super::model::ElementFile;
use super::yaml::{Diagnostic, Document};

/// The built-in elements, compiled in: (name, element.yaml). A unit test checks that this
/// table matches the `elements/` directory of the source tree.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "cloud-init",
        include_str!("../../elements/cloud-init/element.yaml"),
    ),
    ("debian", include_str!("../../elements/debian/element.yaml")),
    (
        "growroot",
        include_str!("../../elements/growroot/element.yaml"),
    ),
    (
        "qemu-guest-agent",
        include_str!("../../elements/qemu-guest-agent/element.yaml"),
    ),
    (
        "sysprep-default",
        include_str!("../../elements/sysprep-default/element.yaml"),
    ),
    ("ubuntu", include_str!("../../elements/ubuntu/element.yaml")),
];

/// Where an element was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A directory holding `element.yaml` (and the files it names).
    Dir(PathBuf),
    /// Compiled into kiln.
    BuiltIn,
}

impl Origin {
    /// The directory relative paths in the element resolve against. Built-in elements have
    /// none: they name no host files (a unit test checks), and a path under `/dev/null` can
    /// neither be read nor created, so a reference cannot pick up a planted file.
    pub fn base_dir(&self) -> PathBuf {
        match self {
            Origin::Dir(d) => d.clone(),
            Origin::BuiltIn => PathBuf::from("/dev/null/kiln-built-in-element"),
        }
    }

    /// For messages and listings: the directory, or `built-in`.
    pub fn describe(&self) -> String {
        match self {
            Origin::Dir(d) => d.display().to_string(),
            Origin::BuiltIn => "built-in".into(),
        }
    }
}

/// The directories searched for elements before the built-in ones, in order.
/// `configured`: `KILN_ELEMENTS_PATH` then `KILN_DATA_DIR/elements` (`Tunables::elements_path`).
pub fn search_path(recipe_dir: Option<&Path>, configured: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = recipe_dir {
        dirs.push(d.join("elements"));
    }
    dirs.extend(configured.iter().cloned());
    dirs
}

fn builtin(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Where `name` lives, if anywhere.
pub fn find(name: &str, search: &[PathBuf]) -> Option<Origin> {
    search
        .iter()
        .map(|d| d.join(name))
        .find(|d| d.join("element.yaml").is_file())
        .map(Origin::Dir)
        .or_else(|| builtin(name).map(|_| Origin::BuiltIn))
}

/// Every element name visible on the search path (first occurrence wins), sorted.
pub fn all(search: &[PathBuf]) -> Vec<(String, Origin)> {
    let mut seen = std::collections::BTreeMap::new();
    for dir in search {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().join("element.yaml").is_file() {
                let name = e.file_name().to_string_lossy().to_string();
                seen.entry(name).or_insert_with(|| Origin::Dir(e.path()));
            }
        }
    }
    for (name, _) in BUILTIN {
        seen.entry(name.to_string()).or_insert(Origin::BuiltIn);
    }
    seen.into_iter().collect()
}

/// The text of an element's `element.yaml` and the name it is reported under.
pub fn read(name: &str, origin: &Origin) -> Result<(PathBuf, String), Diagnostic> {
    match origin {
        Origin::Dir(d) => {
            let path = d.join("element.yaml");
            // Its own file, not a link out of its directory (a link to /etc/shadow would be
            // echoed line by line in the parse errors), regular and bounded.
            let read = || -> std::io::Result<String> {
                let (real, root) = (path.canonicalize()?, d.canonicalize()?);
                if !real.starts_with(&root) {
                    return Err(std::io::Error::other(format!(
                        "it is a link out of the element's directory ({})",
                        real.display()
                    )));
                }
                let bytes = crate::hostfile::read_regular(&real, super::yaml::MAX_BYTES as u64)?;
                String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
            };
            read().map(|t| (path.clone(), t)).map_err(|e| Diagnostic {
                file: path,
                line: 1,
                column: 1,
                message: format!("cannot read element: {e}"),
            })
        }
        Origin::BuiltIn => Ok((
            PathBuf::from(format!("<built-in>/{name}/element.yaml")),
            builtin(name).unwrap_or_default().to_string(),
        )),
    }
}

/// A loaded element.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub origin: Origin,
    /// What relative paths in the element resolve against (see [`Origin::base_dir`]).
    pub dir: PathBuf,
    pub doc: Document,
    pub file: ElementFile,
}

/// Load one element file, validated against the element schema.
pub fn load(name: &str, origin: &Origin) -> Result<Loaded, Vec<Diagnostic>> {
    let (path, text) = read(name, origin).map_err(|d| vec![d])?;
    let doc = super::yaml::load_str(&path, &text)?;
    let control = super::values::control_characters(&doc);
    if !control.is_empty() {
        return Err(control);
    }
    let schema = serde_json::to_value(schemars::schema_for!(ElementFile)).expect("schema");
    let errs = super::schema_check::check(&doc, &schema);
    if !errs.is_empty() {
        return Err(errs);
    }
    let file: ElementFile = serde_json::from_value(doc.value.clone())
        .map_err(|e| vec![doc.diag("", format!("invalid element: {e}"))])?;
    let bad: Vec<Diagnostic> = file
        .packages
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let m = super::values::package(p).err()?;
            Some(doc.diag(&format!("/packages/{i}"), m))
        })
        .collect();
    if !bad.is_empty() {
        return Err(bad);
    }
    Ok(Loaded {
        name: name.to_string(),
        dir: origin.base_dir(),
        origin: origin.clone(),
        doc,
        file,
    })
}

/// Resolve `requested` (with the position of each request for diagnostics) into a list with
/// dependencies first, each element once. Missing elements and cycles are diagnostics.
pub fn resolve(
    requested: &[(String, Diagnostic)],
    search: &[PathBuf],
) -> Result<Vec<Loaded>, Vec<Diagnostic>> {
    let mut order: Vec<Loaded> = Vec::new();
    let mut errors = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    for (name, at) in requested {
        visit(name, at, search, &mut stack, &mut order, &mut errors);
    }
    if errors.is_empty() {
        Ok(order)
    } else {
        Err(errors)
    }
}

fn visit(
    name: &str,
    at: &Diagnostic,
    search: &[PathBuf],
    stack: &mut Vec<String>,
    order: &mut Vec<Loaded>,
    errors: &mut Vec<Diagnostic>,
) {
    if order.iter().any(|l| l.name == name) {
        return;
    }
    if let Some(i) = stack.iter().position(|s| s == name) {
        let mut cycle = stack[i..].to_vec();
        cycle.push(name.to_string());
        errors.push(Diagnostic {
            message: format!("element dependency cycle: {}", cycle.join(" -> ")),
            ..at.clone()
        });
        return;
    }
    let Some(origin) = find(name, search) else {
        let names: Vec<String> = all(search).into_iter().map(|(n, _)| n).collect();
        let hint = crate::suggest::suggest(name, names.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let searched: Vec<String> = search
            .iter()
            .map(|p| p.display().to_string())
            .chain(["the built-in elements".to_string()])
            .collect();
        errors.push(Diagnostic {
            message: format!(
                "element `{name}` not found{hint}; searched {}",
                searched.join(", ")
            ),
            ..at.clone()
        });
        return;
    };
    let loaded = match load(name, &origin) {
        Ok(l) => l,
        Err(mut e) => {
            errors.append(&mut e);
            return;
        }
    };
    stack.push(name.to_string());
    for (i, dep) in loaded.file.depends.iter().enumerate() {
        let at = loaded.doc.diag(&format!("/depends/{i}"), "");
        visit(dep, &at, search, stack, order, errors);
    }
    stack.pop();
    order.push(loaded);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in table is the source tree's `elements/`, element for element.
    #[test]
    fn builtin_table_matches_the_elements_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("elements");
        let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path().join("element.yaml")).unwrap();
                (name, text)
            })
            .collect();
        on_disk.sort();
        let compiled: Vec<(String, String)> = BUILTIN
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(compiled, on_disk, "update elements::BUILTIN");
        // Only element.yaml is compiled in, so a built-in element may name no other file.
        for (name, _) in BUILTIN {
            let files: Vec<_> = std::fs::read_dir(dir.join(name))
                .unwrap()
                .flatten()
                .collect();
            assert_eq!(files.len(), 1, "{name} has files besides element.yaml");
        }
    }

    #[test]
    fn builtins_load_and_name_no_host_files() {
        for (name, _) in BUILTIN {
            let l = load(name, &Origin::BuiltIn).unwrap_or_else(|d| panic!("{name}: {d:?}"));
            assert!(
                l.file.customize.is_empty(),
                "{name}: customize steps may read host files"
            );
            let text = serde_json::to_string(&l.file.provision).unwrap();
            assert!(
                !text.contains("\"source\""),
                "{name}: provision files with a source"
            );
        }
    }

    #[test]
    fn search_path_has_no_compile_time_directory() {
        let s = search_path(None, &[]);
        assert!(
            !s.iter().any(|d| d.starts_with(env!("CARGO_MANIFEST_DIR"))),
            "{s:?}"
        );
        assert_eq!(find("debian", &[]), Some(Origin::BuiltIn));
    }
}
