//! Quoting for the formats kiln writes values into.

/// Single-quote for POSIX sh: the result is one word whatever `s` holds.
pub fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
    fn sh_quotes_every_byte_into_one_word() {
        assert_eq!(super::sh("a b"), "'a b'");
        assert_eq!(super::sh("it's"), r"'it'\''s'");
        assert_eq!(super::sh(""), "''");
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
