//! Element discovery and dependency resolution.
//!
//! Search order: the recipe's own `elements/`, then each directory of `KILN_ELEMENTS_PATH`
//! (colon-separated), then the built-in `elements/`; the first directory holding
//! `<name>/element.yaml` wins.

use std::path::{Path, PathBuf};

use super::model::ElementFile;
use super::yaml::{Diagnostic, Document};

/// The directories searched for elements, in order.
pub fn search_path(recipe_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = recipe_dir {
        dirs.push(d.join("elements"));
    }
    if let Ok(p) = std::env::var("KILN_ELEMENTS_PATH") {
        dirs.extend(p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs.push(builtin_dir());
    dirs
}

/// Built-in elements: `$KILN_DATA_DIR/elements`, else next to the installed binary
/// (`../share/kiln/elements`), else the source tree kiln was built from.
pub fn builtin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KILN_DATA_DIR") {
        return PathBuf::from(d).join("elements");
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(share) = exe
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("share/kiln/elements"))
        {
            if share.is_dir() {
                return share;
            }
        }
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/elements"))
}

/// Where `name` lives, if anywhere.
pub fn find(name: &str, search: &[PathBuf]) -> Option<PathBuf> {
    search
        .iter()
        .map(|d| d.join(name))
        .find(|d| d.join("element.yaml").is_file())
}

/// Every element name visible on the search path (first occurrence wins), sorted.
pub fn all(search: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut seen = std::collections::BTreeMap::new();
    for dir in search {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().join("element.yaml").is_file() {
                let name = e.file_name().to_string_lossy().to_string();
                seen.entry(name).or_insert_with(|| e.path());
            }
        }
    }
    seen.into_iter().collect()
}

/// A loaded element.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub dir: PathBuf,
    pub doc: Document,
    pub file: ElementFile,
}

/// Load one element file, validated against the element schema.
pub fn load(name: &str, dir: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let path = dir.join("element.yaml");
    let doc = super::yaml::load_file(&path)?;
    let schema = serde_json::to_value(schemars::schema_for!(ElementFile)).expect("schema");
    let errs = super::schema_check::check(&doc, &schema);
    if !errs.is_empty() {
        return Err(errs);
    }
    let file: ElementFile = serde_json::from_value(doc.value.clone())
        .map_err(|e| vec![doc.diag("", format!("invalid element: {e}"))])?;
    Ok(Loaded {
        name: name.to_string(),
        dir: dir.to_path_buf(),
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
    let Some(dir) = find(name, search) else {
        let names: Vec<String> = all(search).into_iter().map(|(n, _)| n).collect();
        let hint = super::suggest(name, names.iter().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let searched: Vec<String> = search.iter().map(|p| p.display().to_string()).collect();
        errors.push(Diagnostic {
            message: format!(
                "element `{name}` not found{hint}; searched {}",
                searched.join(", ")
            ),
            ..at.clone()
        });
        return;
    };
    let loaded = match load(name, &dir) {
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
