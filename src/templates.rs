//! Handlebars templates in strict mode (an undefined variable is an error). Built-in templates
//! are compiled into the binary; a recipe may replace any of them with its own file.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
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

    /// How `{{value}}` is quoted in it.
    fn format(self) -> Format {
        match self {
            Kind::Domain => Format::Xml,
            _ => Format::Yaml,
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
    /// A value the file's format cannot carry (the template does not say where it went).
    #[error("{origin}: {message}")]
    Refused { origin: String, message: String },
    #[error("cannot read template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The format of a rendered file: it decides how `{{value}}` is quoted. `{{{value}}}` inserts
/// a value as it is; `{{json v}}`, `{{yaml v}}`, `{{sh v}}`, `{{xml v}}`, `{{preseed v}}` and
/// `{{kickstart v}}` quote for a format explicitly (for a shell line inside YAML, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Yaml,
    Preseed,
    Kickstart,
    /// Names and URLs kiln renders for itself (`publish.glance.name`): validated afterwards.
    Plain,
}

type Quoter = fn(&str) -> Result<String, String>;

fn quoter(f: Format) -> Quoter {
    match f {
        Format::Xml => |s| Ok(crate::quote::xml(s)),
        Format::Yaml => |s| Ok(crate::quote::yaml(s)),
        Format::Preseed => crate::quote::preseed,
        Format::Kickstart => crate::quote::kickstart,
        Format::Plain => |s| Ok(s.to_string()),
    }
}

/// A helper that quotes its one argument for a format and writes it as it is (the file's
/// own quoting does not apply on top).
struct QuoteHelper(Quoter);

impl QuoteHelper {
    /// The helper's one argument (a string, or JSON for anything else), quoted.
    fn quoted(&self, h: &handlebars::Helper<'_>) -> Result<String, handlebars::RenderError> {
        let v = h
            .param(0)
            .ok_or_else(|| handlebars::RenderErrorReason::ParamNotFoundForIndex("quote", 0))?
            .value();
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Ok((self.0)(&s).map_err(handlebars::RenderErrorReason::Other)?)
    }
}

impl handlebars::HelperDef for QuoteHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc handlebars::Context,
        _: &mut handlebars::RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
        Ok(handlebars::ScopedJson::Derived(serde_json::Value::String(
            self.quoted(h)?,
        )))
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc handlebars::Context,
        _: &mut handlebars::RenderContext<'reg, 'rc>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        out.write(&self.quoted(h)?)?;
        Ok(())
    }
}

/// `{{json v}}`: the value as JSON (a number stays a number), written as it is.
struct JsonHelper;

impl handlebars::HelperDef for JsonHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc handlebars::Context,
        _: &mut handlebars::RenderContext<'reg, 'rc>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        let v = h
            .param(0)
            .ok_or_else(|| handlebars::RenderErrorReason::ParamNotFoundForIndex("json", 0))?
            .value();
        out.write(&serde_json::to_string(v).unwrap_or_default())?;
        Ok(())
    }
}

/// A registry whose `{{value}}` quotes for `format`. A value the format cannot carry is
/// recorded in `refused` (an escape function cannot fail) and the render is failed after.
fn registry(
    format: Format,
    refused: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    h.register_helper("json", Box::new(JsonHelper));
    for (name, q) in [
        ("yaml", quoter(Format::Yaml)),
        ("xml", quoter(Format::Xml)),
        ("preseed", quoter(Format::Preseed)),
        ("kickstart", quoter(Format::Kickstart)),
        ("sh", (|s| Ok(crate::quote::sh(s))) as Quoter),
    ] {
        h.register_helper(name, Box::new(QuoteHelper(q)));
    }
    let q = quoter(format);
    h.register_escape_fn(move |s| match q(s) {
        Ok(v) => v,
        Err(m) => {
            refused.lock().unwrap_or_else(|e| e.into_inner()).push(m);
            String::new()
        }
    });
    h
}

/// The largest template file read (as a recipe: 1 MiB).
const TEMPLATE_MAX: u64 = 1 << 20;

/// A recipe's own template file: (origin for messages, text).
fn read_template(p: &Path) -> Result<(String, String), TemplateError> {
    // A regular file of bounded size (a FIFO or /dev/zero named as a template must not hang
    // or exhaust `kiln validate`).
    let read = || -> std::io::Result<String> {
        let bytes = crate::hostfile::read_regular(p, TEMPLATE_MAX)?;
        String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
    };
    let text = read().map_err(|source| TemplateError::Read {
        path: p.to_path_buf(),
        source,
    })?;
    Ok((p.display().to_string(), text))
}

/// Render one template with `ctx`: the recipe's own, else the built-in one. Errors name the
/// template (built-in or file) and position.
pub fn render(plan: &Plan, kind: Kind, ctx: &impl Serialize) -> Result<String, TemplateError> {
    match kind.override_path(plan) {
        Some(p) => {
            let (origin, text) = read_template(p)?;
            let out = render_str(&origin, &text, kind.format(), ctx)?;
            if kind == Kind::Domain {
                check_domain(&out, &render_builtin(kind, ctx)?)
                    .map_err(|message| TemplateError::Refused { origin, message })?;
            }
            Ok(out)
        }
        None => render_builtin(kind, ctx),
    }
}

/// A recipe's own domain XML (trusted recipes only) may shape the VM, not reach through it to
/// the host: its security labels and qemu passthrough (`<qemu:…>`) must be exactly those of
/// kiln's own template rendered for the same VM (sVirt's DAC label, the ssh port forward), and
/// it may have no host devices, filesystem shares or shared memory, and disks only from
/// files. Checked on the rendered XML, so no template trick hides anything.
pub fn check_domain(xml: &str, builtin: &str) -> Result<(), String> {
    let parse = |x: &'_ str| -> Result<Vec<String>, String> {
        let doc = roxmltree::Document::parse_with_options(
            x,
            roxmltree::ParsingOptions {
                allow_dtd: false,
                ..Default::default()
            },
        )
        .map_err(|e| format!("the rendered domain XML does not parse: {e}"))?;
        Ok(doc
            .descendants()
            .filter(|n| n.is_element())
            .filter_map(|n| {
                let name = n.tag_name().name();
                let qemu = n
                    .tag_name()
                    .namespace()
                    .is_some_and(|ns| ns.contains("libvirt.org/schemas/domain/qemu"));
                let kept = qemu || matches!(name, "seclabel" | "label");
                let refused = matches!(name, "hostdev" | "filesystem" | "shmem")
                    || (name == "disk" && n.attribute("type").unwrap_or("file") != "file");
                (kept || refused).then(|| {
                    let attrs: Vec<String> = n
                        .attributes()
                        .map(|a| format!("{}='{}'", a.name(), a.value()))
                        .collect();
                    let text = n.text().map(str::trim).unwrap_or_default();
                    format!("<{name} {}>{text}", attrs.join(" "))
                })
            })
            .collect())
    };
    let (mine, kilns) = (parse(xml)?, parse(builtin)?);
    if mine == kilns {
        return Ok(());
    }
    let extra: Vec<&String> = mine.iter().filter(|e| !kilns.contains(e)).collect();
    let missing: Vec<&String> = kilns.iter().filter(|e| !mine.contains(e)).collect();
    Err(format!(
        "the domain template may not change security labels, qemu passthrough, host devices, filesystem shares or non-file disks (kiln's own template decides them); it adds {extra:?} and lacks {missing:?}"
    ))
}

/// Render the built-in template of `kind` (the domain template for the VMs no recipe
/// template replaces: installer, test VM, KVM probe).
pub fn render_builtin(kind: Kind, ctx: &impl Serialize) -> Result<String, TemplateError> {
    let origin = format!("built-in template {}", kind.file_name());
    render_str(&origin, kind.builtin(), kind.format(), ctx)
}

pub fn render_str(
    origin: &str,
    text: &str,
    format: Format,
    ctx: &impl Serialize,
) -> Result<String, TemplateError> {
    let refused = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = registry(format, refused.clone());
    let out = h.render_template(text, ctx).map_err(|e| {
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
    })?;
    let refused = std::mem::take(&mut *refused.lock().unwrap_or_else(|e| e.into_inner()));
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(TemplateError::Refused {
            origin: origin.to_string(),
            message: refused.join("; "),
        })
    }
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
    let format = match inst.kind {
        AnswerKind::Preseed => Format::Preseed,
        AnswerKind::Kickstart => Format::Kickstart,
        AnswerKind::Autoinstall => Format::Yaml,
    };
    render_str(&origin, &text, format, &ctx).map(Some)
}

/// Is a rendered file empty apart from comments (then it is left out of the seed)?
pub fn is_blank(rendered: &str) -> bool {
    rendered
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

#[cfg(test)]
mod domain_tests {
    #[test]
    fn a_recipe_domain_cannot_reach_the_host() {
        let kilns = "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><seclabel type='static' model='dac'><label>+64055:+64055</label></seclabel><devices><disk type='file' device='disk'/></devices><qemu:commandline><qemu:arg value='-netdev'/></qemu:commandline></domain>";
        // The same VM with a different look (more memory, another disk from a file): fine.
        let ok = kilns.replace(
            "<devices>",
            "<memory>4</memory><devices><disk type='file'/>",
        );
        super::check_domain(&ok, kilns).unwrap();
        for (bad, why) in [
            (
                kilns.replace("type='static' model='dac'", "type='none'"),
                "seclabel type='none'",
            ),
            (
                kilns.replace("value='-netdev'", "value='-drive'"),
                "value='-drive'",
            ),
            (
                kilns.replace("<devices>", "<devices><hostdev mode='subsystem'/>"),
                "hostdev",
            ),
            (
                kilns.replace("<devices>", "<devices><filesystem type='mount'/>"),
                "filesystem",
            ),
            (
                kilns.replace("<disk type='file'", "<disk type='block'"),
                "type='block'",
            ),
            (
                "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/shadow'>]><domain>&x;</domain>".into(),
                "does not parse",
            ),
        ] {
            let e = super::check_domain(&bad, kilns).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
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
            Format::Yaml,
            &json!({"vars": {}}),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("t.hbs:2:"), "{msg}");
        assert!(msg.contains("missing"), "{msg}");
    }

    #[test]
    fn each_format_quotes_values_its_own_way() {
        let ctx = json!({"v": "a<b & 'c'", "n": 5, "plain": "bookworm", "bs": "x\\"});
        let r = |f, t: &str| render_str("t", t, f, &ctx);
        assert_eq!(
            r(Format::Xml, "<n a='{{v}}'>{{v}}</n>").unwrap(),
            "<n a='a&lt;b &amp; &apos;c&apos;'>a&lt;b &amp; &apos;c&apos;</n>"
        );
        assert_eq!(r(Format::Yaml, "k: {{v}}").unwrap(), r#"k: "a<b & 'c'""#);
        assert_eq!(r(Format::Yaml, "k: {{plain}}").unwrap(), "k: bookworm");
        assert_eq!(r(Format::Yaml, "k: {{n}}").unwrap(), r#"k: "5""#);
        assert_eq!(r(Format::Yaml, "k: {{json n}}").unwrap(), "k: 5");
        assert_eq!(
            r(Format::Yaml, "k: {{json v}}").unwrap(),
            r#"k: "a<b & 'c'""#
        );
        assert_eq!(r(Format::Yaml, "k: {{{v}}}").unwrap(), "k: a<b & 'c'");
        assert_eq!(
            r(Format::Yaml, "- {{yaml (sh v)}}").unwrap(),
            r#"- "'a<b & '\\''c'\\'''""#
        );
        assert_eq!(
            r(Format::Kickstart, "user --gecos={{v}}").unwrap(),
            r#"user --gecos="a<b & 'c'""#
        );
        assert_eq!(
            r(Format::Preseed, "d-i x string {{v}}").unwrap(),
            "d-i x string a<b & 'c'"
        );
        // A value the format cannot carry fails the render, naming the value.
        let e = r(Format::Preseed, "d-i x string {{bs}}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t: ") && e.contains("trailing"), "{e}");
        let e = r(Format::Yaml, "{{preseed bs}}").unwrap_err().to_string();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn blank_detection() {
        assert!(is_blank("# only a comment\n\n"));
        assert!(!is_blank("# c\nversion: 2\n"));
    }
}
