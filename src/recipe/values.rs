//! What a value may be before it reaches a generated file or a command line. Answer files,
//! YAML seeds, sources.list and mmdebstrap's argv are line- and word-based: a newline or a
//! leading `-` in a value would add lines or options of the user's choosing, so values are
//! checked for their target here, before anything is rendered.

use serde_json::Value;

use super::yaml::{pointer_segment, Diagnostic, Document};

/// Characters no recipe value may hold: controls (other than newline and tab where text is
/// expected), and the invisible format characters that make two names look alike.
fn forbidden(c: char, multiline: bool) -> bool {
    (c.is_control() && !(multiline && (c == '\n' || c == '\t')))
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// Pointers (with `*` for any one segment) whose strings are text, where newlines belong.
const MULTILINE: &[&str] = &[
    "/description",
    "/provision/*/files/*/content",
    "/provision/*/run/*",
    "/customize/*/write",
    "/customize/*/run-command",
    "/customize/*/firstboot-command",
];

fn matches(pattern: &str, pointer: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let q: Vec<&str> = pointer.split('/').collect();
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
}

/// Every string (and key) of `doc` with a character it may not hold.
pub fn control_characters(doc: &Document) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    walk(doc, &doc.value, "", &mut out);
    out
}

fn walk(doc: &Document, v: &Value, ptr: &str, out: &mut Vec<Diagnostic>) {
    match v {
        Value::String(s) => {
            let multiline = MULTILINE.iter().any(|p| matches(p, ptr));
            if let Some(c) = s.chars().find(|c| forbidden(*c, multiline)) {
                out.push(doc.diag(
                    ptr,
                    format!("{} is not allowed here", describe(c, multiline)),
                ));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(doc, x, &format!("{ptr}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let child = format!("{ptr}/{}", pointer_segment(k));
                if let Some(c) = k.chars().find(|c| forbidden(*c, false)) {
                    out.push(doc.diag_key(&child, format!("{} in a key", describe(c, false))));
                }
                walk(doc, x, &child, out);
            }
        }
        _ => {}
    }
}

fn describe(c: char, multiline: bool) -> String {
    let what = if c == '\n' {
        "a line break".to_string()
    } else {
        format!("the character U+{:04X}", c as u32)
    };
    if multiline {
        what
    } else {
        format!("{what} (only file contents, commands and the description may span lines)")
    }
}

/// A `--var` value: one line of visible text.
pub fn check_var(value: &str) -> Result<(), String> {
    match value.chars().find(|c| forbidden(*c, false)) {
        Some(c) => Err(format!(
            "{} is not allowed in a variable",
            describe(c, false)
        )),
        None => Ok(()),
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and `-`, 1-63 each, not
/// starting or ending with `-`; 253 in all.
pub fn hostname(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a host name (RFC 1123: letters, digits and `-` in dot-separated labels of at most 63)",
            s.escape_debug()
        ))
    }
}

/// A distribution suite or codename (`bookworm`, `bookworm-backports`, `9.2`).
pub fn suite(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a suite name (lower-case letters, digits, `-` and `.`, starting with a letter or digit)",
            s.escape_debug()
        ))
    }
}

/// A mirror or proxy URL as sources.list, preseed and mmdebstrap take it: http(s), a host, no
/// spaces or quotes.
pub fn url(s: &str) -> Result<(), String> {
    let host = url_host(s)
        .ok_or_else(|| format!("`{}` is not an http:// or https:// URL", s.escape_debug()))?;
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c))
    {
        return Err(format!("`{}` has no valid host", s.escape_debug()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || "\"'`\\<>{}|^".contains(*c))
    {
        return Err(format!(
            "`{}` is not allowed in a URL (`{}`)",
            c.escape_debug(),
            s.escape_debug()
        ));
    }
    Ok(())
}

/// An http(s) URL whose host is this machine (127.0.0.0/8, ::1, localhost): no network between.
pub fn loopback_url(s: &str) -> bool {
    url_host(s).is_some_and(|host| {
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The host of an http(s) URL: without user, port or the brackets of an IPv6 address.
fn url_host(s: &str) -> Option<&str> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(match host.strip_prefix('[') {
        Some(h) => h.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    })
}

/// A cloud-init datasource name (`NoCloud`, `ConfigDrive`, `OpenStack`, `None`).
pub fn datasource(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a cloud-init datasource name (letters and digits)",
            s.escape_debug()
        ))
    }
}

/// An element name: it is also a directory name on the search path.
pub fn element_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an element name (lower-case letters, digits, `-` and `_`)",
            s.escape_debug()
        ))
    }
}

/// A full name for the installer's user (GECOS: no `:`, `,` or `=`; one line without `\\`
/// or surrounding blanks, which a preseed line cannot carry).
pub fn full_name(s: &str) -> Result<(), String> {
    match s.chars().find(|c| ":,=\\".contains(*c) || c.is_control()) {
        Some(c) => Err(format!(
            "`{}` is not allowed in a full name",
            c.escape_debug()
        )),
        None if s.len() > 128 => Err("a full name of at most 128 characters".into()),
        None if s.trim() != s => Err("a full name cannot start or end with blanks".into()),
        None => Ok(()),
    }
}

/// A package name (with apt's `=version` or `:arch` if need be): one word of an apt, dnf or
/// mmdebstrap command line, a preseed list and a kickstart `%packages` line; never an option.
pub fn package(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.:_=~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid package name",
            s.escape_debug()
        ))
    }
}

/// Time zone (`Europe/Paris`), locale (`C.UTF-8`, `en_US.UTF-8`), keyboard layout (`us`).
pub fn token(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(['-', '/', '.'])
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-./@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{}` is not a {what}", s.escape_debug()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for ok in ["golden", "web-1.example.com", "a", "x1"] {
            assert!(hostname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "rocky --bootproto=static",
            "-x",
            "x-",
            "a..b",
            "host\nruncmd: [id]",
            "h_1",
            &"a".repeat(64),
        ] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn suites_urls_datasources_elements_names() {
        assert!(suite("bookworm").is_ok() && suite("bookworm-backports").is_ok());
        for bad in ["--setup-hook=id", "Bookworm", "a b", "", "x;y"] {
            assert!(suite(bad).is_err(), "{bad:?}");
        }
        for ok in [
            "http://deb.debian.org/debian",
            "https://m.example:8080/debian/",
            "http://10.0.2.2:3142/deb",
            "http://[::1]:80/x",
        ] {
            assert!(url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x/y",
            "http://x/y\ndeb [trusted=yes] http://evil/ x main",
            "http://x/ y",
            "http://",
            "http:// /",
            "http://x/'",
            "--x",
        ] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
        assert!(loopback_url("http://127.0.0.1:8080/SUMS") && loopback_url("http://[::1]/x"));
        assert!(loopback_url("http://localhost/x") && !loopback_url("http://127.0.0.1.evil/x"));
        assert!(!loopback_url("http://mirror.example/SUMS"));
        assert!(datasource("NoCloud").is_ok());
        assert!(datasource("None\nssh_pwauth: true").is_err() && datasource("a b").is_err());
        assert!(element_name("qemu-guest-agent").is_ok());
        assert!(element_name("../etc").is_err() && element_name("A").is_err());
        assert!(full_name("Debian User").is_ok());
        assert!(full_name("x\nd-i preseed/late_command string id").is_err());
        assert!(full_name("a:b").is_err());
        assert!(token("time zone", "Europe/Paris").is_ok() && token("locale", "C.UTF-8").is_ok());
        assert!(token("time zone", "../../etc/shadow").is_err());
        assert!(token("keyboard layout", "us --x").is_err());
    }

    #[test]
    fn control_characters_are_refused_except_in_text() {
        let doc = super::super::yaml::load_str(
            std::path::Path::new("r.yaml"),
            "name: \"a\\u200bb\"\nversion: \"1\\u0000\"\ndescription: \"two\\nlines\"\nprovision:\n  - run: [\"a\\nb\"]\n  - files: [{path: /x, content: \"l1\\nl2\\n\"}]\nvars: {hostname: \"h\\nruncmd: [id]\"}\n",
        )
        .unwrap();
        let d = control_characters(&doc);
        let lines: Vec<usize> = d.iter().map(|d| d.line).collect();
        assert_eq!(lines, [1, 2, 7], "{d:?}");
        assert!(d[2].message.contains("a line break"), "{}", d[2].message);
        assert!(check_var("x\ny").is_err() && check_var("x y").is_ok());
    }
}
