//! Quoting for the formats kiln writes values into: one helper per format. Recipe values are
//! validated for their target first (recipe/values.rs); these helpers are what makes an
//! accepted value arrive intact, and refuse what a format cannot carry at all.

/// Single-quote for POSIX sh: the result is one word whatever `s` holds.
pub fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Text that came from an image, a tree, a cache or a recipe, made safe to print on a
/// terminal: control characters (escape sequences, carriage returns) and the bidirectional
/// formatting characters that reorder what is shown (U+202E and kin) are printed escaped.
pub fn terminal(s: &str) -> std::borrow::Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(hidden) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// XML text or attribute value (either quote style).
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// YAML 1.1 (PyYAML, cloud-init, subiquity) and 1.2 both read this back as the string `s`: a
/// plain scalar when it cannot be mistaken for anything else, else a double-quoted one with
/// every non-printable character escaped.
pub fn yaml(s: &str) -> String {
    if yaml_plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if yaml_printable(c) && c != '\t' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Words YAML 1.1 resolves to booleans or null when plain.
const YAML_WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

fn yaml_plain_ok(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !YAML_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// YAML's printable set (c-printable), minus BOM, line and paragraph separators.
fn yaml_printable(c: char) -> bool {
    matches!(c as u32,
        0x20..=0x7e | 0x85 | 0xa0..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
        && !matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// Refuse control characters, which no line-based format can carry in a value.
fn no_controls(s: &str, target: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "`{}` cannot be written into {target} ({} is not allowed)",
            s.escape_debug(),
            c.escape_debug()
        )),
        None => Ok(()),
    }
}

/// A debconf value (preseed files, `debconf-set-selections`): the rest of the line after one
/// space, with no quoting at all. So it must be one line, not end in `\` (a continuation)
/// and carry no leading or trailing blanks (d-i's own parser trims them).
pub fn preseed(s: &str) -> Result<String, String> {
    no_controls(s, "a preseed file")?;
    if s.ends_with('\\') {
        return Err(format!(
            "`{}` cannot end a preseed line (a trailing `\\` continues it)",
            s.escape_debug()
        ));
    }
    if s.trim() != s {
        return Err(format!(
            "`{}` cannot be written into a preseed file (leading or trailing blanks)",
            s.escape_debug()
        ));
    }
    Ok(s.to_string())
}

/// One kickstart word (pykickstart splits lines with `shlex.split(line, comments=True)`): as
/// it is when plain, else double-quoted with `\` and `"` escaped.
pub fn kickstart(s: &str) -> Result<String, String> {
    no_controls(s, "a kickstart file")?;
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,/:=+@%".contains(c))
    {
        return Ok(s.to_string());
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// One field of a one-line sources.list entry (a URI, a suite): the format has no quoting, so
/// blanks, `#` (a comment), brackets (an options block), `%` and anything outside visible
/// ASCII are percent-encoded, which apt decodes for http(s) URIs.
pub fn sources_list(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !b"#[]%\"'\\".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One apt.conf string value: double-quoted; the format has no escape for `"` and a value
/// cannot span lines, so those are refused.
pub fn apt_conf(s: &str) -> Result<String, String> {
    no_controls(s, "an apt configuration file")?;
    if s.contains('"') {
        return Err(format!(
            "{s:?}: a double quote cannot be written into an apt configuration file"
        ));
    }
    Ok(format!("\"{s}\""))
}

/// `s` with the password of every `scheme://user:password@host` replaced by `***`: for logs,
/// the manifest and `kiln plan`, never for what is run.
pub fn redact_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:***@{host}"));
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn apt_conf_strings_are_quoted_or_refused() {
        assert_eq!(super::apt_conf("/var/tmp/a b").unwrap(), "\"/var/tmp/a b\"");
        assert!(super::apt_conf("amd64\"; Dir \"/").is_err());
        assert!(super::apt_conf("a\nb").is_err());
    }

    #[test]
    fn sh_quotes_every_byte_into_one_word() {
        assert_eq!(super::sh("a b"), "'a b'");
        assert_eq!(super::sh("it's"), r"'it'\''s'");
        assert_eq!(super::sh(""), "''");
    }

    #[test]
    fn yaml_is_plain_only_when_it_cannot_mean_anything_else() {
        use super::yaml;
        assert_eq!(yaml("bookworm"), "bookworm");
        assert_eq!(yaml("Europe/Paris"), "Europe/Paris");
        for s in [
            "yes", "No", "null", "on", "5", "1e3", "0x1f", "", "-x", "a: b", "a #b",
        ] {
            assert!(yaml(s).starts_with('"'), "{s} must be quoted");
        }
        assert_eq!(yaml("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(yaml("tab\there\u{2028}"), r#""tab\u0009here\u2028""#);
    }

    #[test]
    fn preseed_refuses_what_debconf_cannot_carry() {
        use super::preseed;
        assert_eq!(preseed("Alice O'Brien").unwrap(), "Alice O'Brien");
        for s in ["a\nb", "a\\", " a", "a ", "a\rb", "a\u{1b}"] {
            assert!(preseed(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn kickstart_words_are_plain_or_double_quoted() {
        use super::kickstart;
        assert_eq!(kickstart("alice").unwrap(), "alice");
        assert_eq!(kickstart("http://m/x").unwrap(), "http://m/x");
        assert_eq!(kickstart("A B").unwrap(), r#""A B""#);
        assert_eq!(kickstart(r#"a"b\c #d"#).unwrap(), r#""a\"b\\c #d""#);
        assert_eq!(kickstart("").unwrap(), r#""""#);
        assert!(kickstart("a\nb").is_err());
    }

    #[test]
    fn sources_list_fields_stay_one_field() {
        use super::sources_list as q;
        assert_eq!(
            q("http://deb.debian.org/debian"),
            "http://deb.debian.org/debian"
        );
        assert_eq!(q("http://m/a b#c"), "http://m/a%20b%23c");
        assert_eq!(q("[trusted=yes]"), "%5Btrusted=yes%5D");
        assert_eq!(q("http://m/\ndeb x"), "http://m/%0Adeb%20x");
    }

    #[test]
    fn terminal_text_shows_escapes_and_reordering_characters_escaped() {
        use super::terminal as t;
        assert_eq!(t("plain ünïcode"), "plain ünïcode");
        assert_eq!(t("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(t("x\ry"), "x\\u{d}y");
        assert_eq!(t("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe");
        assert_eq!(t("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn xml_escapes_markup_and_both_quotes() {
        assert_eq!(
            super::xml(r#"<a b="c" d='e'>&"#),
            "&lt;a b=&quot;c&quot; d=&apos;e&apos;&gt;&amp;"
        );
    }

    #[test]
    fn url_passwords_are_redacted() {
        use super::redact_url_passwords as r;
        assert_eq!(
            r("deb http://bob:s3cret@mirror.example/debian bookworm main"),
            "deb http://bob:***@mirror.example/debian bookworm main"
        );
        assert_eq!(
            r("http://mirror.example/debian"),
            "http://mirror.example/debian"
        );
        assert_eq!(
            r("https://tok@host/x"),
            "https://tok@host/x",
            "no password part"
        );
        assert_eq!(
            r("'a http://u:p@h1/ b https://v:q@h2:8080/y'"),
            "'a http://u:***@h1/ b https://v:***@h2:8080/y'"
        );
    }
}
