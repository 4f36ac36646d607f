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
    let trust = trust(path, input.trust_recipe, &t.trusted_recipes);
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
