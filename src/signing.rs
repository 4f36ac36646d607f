//! Signed stage-cache entries: Ed25519 keys (`ring`) named like Nix's binary-cache keys,
//! `NAME:BASE64`. A machine that pushes signs each entry's meta.json (which holds every file's
//! SHA-256) with its secret key; a machine that pulls takes an entry only when one of its
//! trusted public keys signed it. Integrity alone (digests from the same bucket) proves nothing
//! about who wrote the entry.

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: {message}")]
    Bad { what: String, message: String },
}

fn bad(what: impl Into<String>, message: impl Into<String>) -> KeyError {
    KeyError::Bad {
        what: what.into(),
        message: message.into(),
    }
}

/// A key's name: what signatures say signed them (letters, digits, `.`, `_`, `-`).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "`{name}` is not a key name (1-64 of letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

fn split(text: &str, what: &str) -> Result<(String, Vec<u8>), KeyError> {
    let text = text.trim();
    let (name, b64) = text
        .split_once(':')
        .ok_or_else(|| bad(what, "expected NAME:BASE64"))?;
    check_name(name).map_err(|m| bad(what, m))?;
    let bytes = B64
        .decode(b64)
        .map_err(|e| bad(what, format!("not base64: {e}")))?;
    Ok((name.to_string(), bytes))
}

/// A new key pair: (secret key text, public key text), each `NAME:BASE64`.
pub fn generate(name: &str) -> Result<(String, String), KeyError> {
    check_name(name).map_err(|m| bad("key name", m))?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| bad("key pair", e.to_string()))?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| bad("key pair", e.to_string()))?;
    Ok((
        format!("{name}:{}", B64.encode(pkcs8.as_ref())),
        format!("{name}:{}", B64.encode(pair.public_key().as_ref())),
    ))
}

/// The key a machine signs its pushes with (never printed, never in argv: read from a file).
pub struct SecretKey {
    name: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, pkcs8) = split(text, "signing key")?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| bad("signing key", format!("not an Ed25519 key: {e}")))?;
        Ok(SecretKey { name, pair })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key: self.name.clone(),
            sig: B64.encode(self.pair.sign(message).as_ref()),
        }
    }
}

/// A key whose signatures a machine trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    bytes: Vec<u8>,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = split(text, "trusted key")?;
        if bytes.len() != 32 {
            return Err(bad(
                "trusted key",
                format!(
                    "`{name}` is {} bytes, an Ed25519 public key 32",
                    bytes.len()
                ),
            ));
        }
        Ok(PublicKey { name, bytes })
    }
}

/// One signature on an entry: the signing key's name and the signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

/// The name of the first trusted key with a valid signature over `message`, else why not.
pub fn verify<'a>(
    trusted: &'a [PublicKey],
    message: &[u8],
    sigs: &[Signature],
) -> Result<&'a str, String> {
    if sigs.is_empty() {
        return Err("it is not signed".into());
    }
    for s in sigs {
        let Some(k) = trusted.iter().find(|k| k.name == s.key) else {
            continue;
        };
        let Ok(raw) = B64.decode(&s.sig) else {
            continue;
        };
        if signature::UnparsedPublicKey::new(&signature::ED25519, &k.bytes)
            .verify(message, &raw)
            .is_ok()
        {
            return Ok(&k.name);
        }
        return Err(format!("its signature by `{}` does not verify", s.key));
    }
    let names: Vec<&str> = sigs.iter().map(|s| s.key.as_str()).collect();
    Err(format!(
        "it is signed only by keys this machine does not trust ({})",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_signed_bytes_and_a_trusted_key() {
        let (secret, public) = generate("ci-1").unwrap();
        let (_, other_public) = generate("laptop").unwrap();
        let sk = SecretKey::parse(&secret).unwrap();
        let pk = PublicKey::parse(&public).unwrap();
        let other = PublicKey::parse(&other_public).unwrap();
        let sig = sk.sign(b"entry");
        let (pks, sigs) = (vec![pk.clone()], vec![sig]);
        assert_eq!(verify(&pks, b"entry", &sigs), Ok("ci-1"));
        // Other bytes: refused.
        assert!(verify(&pks, b"entrY", &sigs)
            .unwrap_err()
            .contains("does not verify"));
        // Not trusted here, or not signed at all: refused.
        assert!(verify(&[other], b"entry", &sigs)
            .unwrap_err()
            .contains("does not trust"));
        assert!(verify(&pks, b"entry", &[]).is_err());
        // A signature claiming the trusted name with another key's bytes.
        let (forged_secret, _) = generate("ci-1").unwrap();
        let forged = SecretKey::parse(&forged_secret).unwrap().sign(b"entry");
        assert!(verify(&[pk], b"entry", &[forged]).is_err());
        // Bad key texts.
        assert!(PublicKey::parse("nocolon").is_err());
        assert!(PublicKey::parse("a b:AAAA").is_err());
        assert!(PublicKey::parse("k:AAAA").is_err());
        assert!(SecretKey::parse(&public).is_err());
        assert_eq!(format!("{sk:?}"), "SecretKey(ci-1)");
    }
}
