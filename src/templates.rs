//! Handlebars templates in strict mode (an undefined variable is an error). Built-in templates
//! are compiled into the binary; a recipe may replace any of them with its own file.

use std::path::{Path, PathBuf};

use handlebars::{handlebars_helper, Handlebars};
use serde::Serialize;

use crate::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Domain,
    UserData,
    MetaData,
    NetworkConfig,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Domain,
        Kind::UserData,
        Kind::MetaData,
        Kind::NetworkConfig,
    ];

    /// The rendered file's name.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Domain => "domain.xml",
            Kind::UserData => "user-data",
            Kind::MetaData => "meta-data",
            Kind::NetworkConfig => "network-config",
        }
    }

    fn builtin(self) -> &'static str {
        match self {
            Kind::Domain => include_str!("../templates/domain.xml.hbs"),
            Kind::UserData => include_str!("../templates/user-data.hbs"),
            Kind::MetaData => include_str!("../templates/meta-data.hbs"),
            Kind::NetworkConfig => include_str!("../templates/network-config.hbs"),
        }
    }

    fn override_path(self, plan: &Plan) -> Option<&PathBuf> {
        match self {
            Kind::Domain => plan.templates.domain.as_ref(),
            Kind::UserData => plan.templates.user_data.as_ref(),
            Kind::MetaData => plan.templates.meta_data.as_ref(),
            Kind::NetworkConfig => plan.templates.network_config.as_ref(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{origin}:{line}:{column}: {message}")]
    Render {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

handlebars_helper!(json: |v: Json| serde_json::to_string(v).unwrap_or_default());

fn registry(xml: bool) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_helper("json", Box::new(json));
    if !xml {
        // YAML and answer files: values are inserted as they are (use {{json x}} to quote).
        h.register_escape_fn(handlebars::no_escape);
    }
    h
}

/// A recipe's own template file: (origin for messages, text).
fn read_template(p: &Path) -> Result<(String, String), TemplateError> {
    let text = std::fs::read_to_string(p).map_err(|source| TemplateError::Read {
        path: p.to_path_buf(),
        source,
    })?;
    Ok((p.display().to_string(), text))
}

/// Render one template with `ctx`. Errors name the template (built-in or file) and position.
pub fn render(plan: &Plan, kind: Kind, ctx: &impl Serialize) -> Result<String, TemplateError> {
    let (origin, text) = match kind.override_path(plan) {
        Some(p) => read_template(p)?,
        None => (
            format!("built-in template {}", kind.file_name()),
            kind.builtin().to_string(),
        ),
    };
    render_str(&origin, &text, kind == Kind::Domain, ctx)
}

pub fn render_str(
    origin: &str,
    text: &str,
    xml: bool,
    ctx: &impl Serialize,
) -> Result<String, TemplateError> {
    let h = registry(xml);
    h.render_template(text, ctx).map_err(|e| {
        let (line, column) = match (e.line_no, e.column_no) {
            (Some(l), Some(c)) => (l, c),
            _ => template_position(&e).unwrap_or((1, 1)),
        };
        TemplateError::Render {
            origin: origin.to_string(),
            line,
            column,
            message: e.reason().to_string(),
        }
    })
}

fn template_position(e: &handlebars::RenderError) -> Option<(usize, usize)> {
    match e.reason() {
        handlebars::RenderErrorReason::TemplateError(te) => te.pos(),
        _ => None,
    }
}

/// The answer file of an installer source: the recipe's template, else the built-in one for
/// the answer kind. Sees the answer variables, `lvm`, `packages_line`, `ubuntu`, `password_hash` and
/// `vars`.
pub fn render_answers(plan: &Plan) -> Result<Option<String>, TemplateError> {
    use crate::vocab::AnswerKind;
    let crate::plan::SourcePlan::Installer(inst) = &plan.source else {
        return Ok(None);
    };
    let (origin, text) = match &inst.template {
        Some(p) => read_template(p)?,
        None => {
            let (name, text) = match inst.kind {
                AnswerKind::Preseed => {
                    ("preseed.cfg", include_str!("../templates/preseed.cfg.hbs"))
                }
                AnswerKind::Kickstart => (
                    "kickstart.cfg",
                    include_str!("../templates/kickstart.cfg.hbs"),
                ),
                AnswerKind::Autoinstall => (
                    "autoinstall.yaml",
                    include_str!("../templates/autoinstall.yaml.hbs"),
                ),
            };
            (format!("built-in template {name}"), text.to_string())
        }
    };
    let mut ctx = serde_json::to_value(&inst.answers).unwrap_or_default();
    ctx["password_hash"] = serde_json::json!(inst.answers.password_hash);
    ctx["lvm"] = serde_json::json!(inst.answers.disk_layout == "lvm");
    ctx["packages_line"] = serde_json::json!(inst.answers.packages.join(" "));
    // Ubuntu's debian-installer names some tasks differently (openssh-server).
    ctx["ubuntu"] = serde_json::json!(inst.answers.mirror.contains("ubuntu"));
    ctx["vars"] = serde_json::to_value(&plan.vars).unwrap_or_default();
    render_str(&origin, &text, false, &ctx).map(Some)
}

/// Is a rendered file empty apart from comments (then it is left out of the seed)?
pub fn is_blank(rendered: &str) -> bool {
    rendered
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_mode_rejects_undefined_variables_with_position() {
        let err = render_str(
            "t.hbs",
            "a\nb {{vars.missing}}\n",
            false,
            &json!({"vars": {}}),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("t.hbs:2:"), "{msg}");
        assert!(msg.contains("missing"), "{msg}");
    }

    #[test]
    fn xml_templates_escape_and_yaml_templates_do_not() {
        let ctx = json!({"v": "a<b & 'c'"});
        assert_eq!(
            render_str("x", "<n>{{v}}</n>", true, &ctx).unwrap(),
            "<n>a&lt;b &amp; &#x27;c&#x27;</n>"
        );
        assert_eq!(
            render_str("y", "k: {{v}}", false, &ctx).unwrap(),
            "k: a<b & 'c'"
        );
        assert_eq!(
            render_str("y", "k: {{json v}}", false, &ctx).unwrap(),
            "k: \"a<b & 'c'\""
        );
    }

    #[test]
    fn blank_detection() {
        assert!(is_blank("# only a comment\n\n"));
        assert!(!is_blank("# c\nversion: 2\n"));
    }
}
