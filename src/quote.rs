//! Quoting for the formats kiln writes values into.

/// Single-quote for POSIX sh: the result is one word whatever `s` holds.
pub fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sh_quotes_every_byte_into_one_word() {
        assert_eq!(super::sh("a b"), "'a b'");
        assert_eq!(super::sh("it's"), r"'it'\''s'");
        assert_eq!(super::sh(""), "''");
    }
}
