//! `kiln validate` and the checks every recipe command runs first.

use std::path::{Path, PathBuf};

use super::*;

pub(super) fn print_diagnostics(diags: &[Diagnostic]) {
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
pub fn load_checked(path: &Path, input: &RecipeInput) -> Result<Plan, Vec<Diagnostic>> {
    let t = super::tunables();
    let mut dirs = t.trusted_recipes.clone();
    dirs.extend(configured_trust(t.user_config.as_deref())?);
    let trust = trust(path, input.trust_recipe, &dirs);
    let (plan, mut errs) = recipe::load_all(path, &input.vars, &t.elements_path, trust);
    let Some(plan) = plan else {
        return Err(errs);
    };
    let ctx = TemplateContext::new(
        &plan,
        "kiln-validate",
        crate::vocab::Engine::Tcg,
        Path::new("/nonexistent"),
    );
    for kind in Kind::ALL {
        if let Err(e) = templates::render(&plan, kind, &ctx) {
            errs.push(template_diag(e));
        }
    }
    if let Err(e) = templates::render_answers(&plan) {
        errs.push(template_diag(e));
    }
    if errs.is_empty() {
        Ok(plan)
    } else {
        recipe::sort_diagnostics(&mut errs, &plan.recipe_path);
        Err(errs)
    }
}

pub(super) fn template_diag(e: templates::TemplateError) -> Diagnostic {
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
        templates::TemplateError::Refused { origin, message } => Diagnostic {
            file: PathBuf::from(origin),
            line: 1,
            column: 1,
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

/// The `trusted_recipes:` directories of the user's configuration file (none when there is no
/// file). The file decides what may run on the host, so it counts only as a regular file, not
/// a link, of this user's (or root's) that no one else can write; each entry an absolute path.
fn configured_trust(file: Option<&Path>) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
    use std::os::unix::fs::MetadataExt;
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let whole = |message: String| {
        vec![Diagnostic {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message,
        }]
    };
    let md = match std::fs::symlink_metadata(file) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(whole(e.to_string())),
    };
    let me = unsafe { libc::geteuid() };
    if !md.file_type().is_file() || (md.uid() != me && md.uid() != 0) || md.mode() & 0o022 != 0 {
        return Err(whole(
            "not used: kiln's configuration says which recipes run on the host, so it must be a \
             regular file (not a link) owned by you or root, writable by no one else (chmod 644)"
                .into(),
        ));
    }
    let bytes = crate::hostfile::read_untrusted(file, 1 << 20).map_err(|e| whole(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| whole("not UTF-8".into()))?;
    let doc = recipe::yaml::load_str(file, &text)?;
    let mut dirs = Vec::new();
    let mut errs = Vec::new();
    match doc.value.get("trusted_recipes") {
        None => {}
        Some(serde_json::Value::Array(list)) => {
            for (i, v) in list.iter().enumerate() {
                match v.as_str().map(PathBuf::from) {
                    Some(p) if p.is_absolute() => dirs.push(p),
                    _ => errs.push(doc.diag(
                        &format!("/trusted_recipes/{i}"),
                        "expected an absolute directory path",
                    )),
                }
            }
        }
        Some(_) => errs.push(doc.diag(
            "/trusted_recipes",
            "expected a list of absolute directory paths",
        )),
    }
    if let Some(map) = doc.value.as_object() {
        for k in map.keys().filter(|k| *k != "trusted_recipes") {
            errs.push(doc.diag(
                &format!("/{k}#key"),
                format!("unknown setting {k:?} (known: trusted_recipes)"),
            ));
        }
    }
    if errs.is_empty() {
        Ok(dirs)
    } else {
        Err(errs)
    }
}

/// A recipe is trusted when the user says so, or when it lies below a directory they listed.
fn trust(recipe: &Path, flag: bool, dirs: &[PathBuf]) -> recipe::Trust {
    let below = || {
        let Ok(r) = recipe.canonicalize() else {
            return false;
        };
        dirs.iter()
            .filter_map(|d| d.canonicalize().ok())
            .any(|d| r.starts_with(d))
    };
    if flag || below() {
        recipe::Trust::Trusted
    } else {
        recipe::Trust::Untrusted
    }
}

pub(super) fn validate(recipes: &[PathBuf], input: &RecipeInput) -> i32 {
    let mut all = Vec::new();
    for r in recipes {
        match load_checked(r, input) {
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
