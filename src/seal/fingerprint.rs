//! Keyed fingerprints: HMAC-SHA256 over the decoded token. The full MAC is the store key;
//! a short display fingerprint, derived from it separately, is what logs and audit events show.

use crate::seal::secret::{ClientSecret, RefreshToken};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The shortest fingerprint key accepted from a file, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a fingerprint key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read fingerprint key file {path}: {source}")]
    Read {
        /// The file named in the configuration.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds fewer than [`MIN_KEY_BYTES`] bytes.
    #[error(
        "fingerprint key file {path} holds {len} bytes; at least {MIN_KEY_BYTES} are required"
    )]
    TooShort {
        /// The file named in the configuration.
        path: String,
        /// How many bytes it holds (surrounding whitespace trimmed).
        len: usize,
    },
}

/// The secret key of the fingerprints. Replicas that share state must share it.
#[derive(Clone)]
pub struct Fingerprinter {
    key: Box<[u8]>,
    encoding: crate::oauth::token_spelling::TokenEncoding,
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter(<key redacted>)")
    }
}

impl Fingerprinter {
    /// A fingerprinter with the given key bytes.
    pub fn new(key: &[u8]) -> Self {
        Fingerprinter {
            key: key.into(),
            encoding: Default::default(),
        }
    }

    /// Fingerprint tokens by how the IdP reads them (`[upstream] token_encoding`).
    pub fn with_token_encoding(
        mut self,
        encoding: crate::oauth::token_spelling::TokenEncoding,
    ) -> Self {
        self.encoding = encoding;
        self
    }

    /// A fingerprinter with a random key: fingerprints last as long as the process.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Fingerprinter::new(&key)
    }

    /// Load the key from a file (raw bytes, surrounding whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = raw.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: path.display().to_string(),
                len: key.len(),
            });
        }
        Ok(Fingerprinter::new(key))
    }

    fn mac(&self, domain: &[u8], value: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(domain);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// The fingerprint of a refresh token: one for every spelling the IdP reads as it.
    pub fn token(&self, token: &RefreshToken) -> TokenFingerprint {
        TokenFingerprint(self.mac(
            b"refresh-gate/token/v1\0",
            &self.encoding.key(token.expose()),
        ))
    }

    /// The store key of a value that may be used once (an assertion's or a DPoP proof's
    /// `jti`): keyed like every fingerprint, so the store never holds the value itself.
    pub fn one_time_key(&self, kind: &str, client_id: &str, value: &str) -> [u8; 32] {
        self.mac(
            b"refresh-gate/one-time/v1\0",
            &length_prefixed(&[kind.as_bytes(), client_id.as_bytes(), value.as_bytes()]),
        )
    }

    /// The fingerprint of a client's bound identity (its secret, a verified assertion, a
    /// DPoP key), under its own domain: no client secret can ever fingerprint the same.
    pub fn bound_identity(&self, parts: &[&[u8]]) -> SecretFingerprint {
        let full = self.mac(b"refresh-gate/bound-identity/v1\0", &length_prefixed(parts));
        let mut short = [0u8; 16];
        short.copy_from_slice(&full[..16]);
        SecretFingerprint(short)
    }

    /// The token answers are sealed under: the spelling the IdP reads (`token_encoding`),
    /// so every spelling that shares the fingerprint opens the answer. With opaque tokens,
    /// the token itself.
    pub fn sealing_token(&self, token: &RefreshToken) -> RefreshToken {
        RefreshToken::new(String::from_utf8_lossy(&self.encoding.key(token.expose())))
    }

    /// The fingerprint of a client secret (16 bytes are plenty to tell secrets apart).
    pub fn client_secret(&self, secret: &ClientSecret) -> SecretFingerprint {
        let full = self.mac(b"refresh-gate/client-secret/v1\0", secret.expose());
        let mut short = [0u8; 16];
        short.copy_from_slice(&full[..16]);
        SecretFingerprint(short)
    }
}

/// Fields joined so that no two different lists give the same bytes: each is preceded by its
/// length.
fn length_prefixed(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The keyed fingerprint of one refresh token: the key of everything the gate stores about it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenFingerprint(pub [u8; 32]);

impl TokenFingerprint {
    /// The short fingerprint that logs and audit events show (12 hex digits).
    pub fn display(&self) -> DisplayFingerprint {
        let digest = Sha256::new()
            .chain_update(b"refresh-gate/display/v1\0")
            .chain_update(self.0)
            .finalize();
        let mut short = [0u8; 6];
        short.copy_from_slice(&digest[..6]);
        DisplayFingerprint(short)
    }

    /// The full fingerprint as lowercase hex (store keys).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFingerprint({})", self.display())
    }
}

/// A hasher for maps keyed by fingerprints. The keys are already keyed MACs, uniformly
/// random and not choosable without the key, so folding their bytes is a perfect hash and
/// SipHash's protection against chosen keys buys nothing (it was visible in the profile).
#[derive(Debug, Clone, Copy, Default)]
pub struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}
}

/// Builds [`FingerprintHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct FingerprintHashing;

impl std::hash::BuildHasher for FingerprintHashing {
    type Hasher = FingerprintHasher;

    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher::default()
    }
}

/// The short, printable form of a token fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DisplayFingerprint(pub [u8; 6]);

impl fmt::Display for DisplayFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The keyed fingerprint of a client secret.
#[derive(Clone, Copy, Eq)]
pub struct SecretFingerprint(pub [u8; 16]);

impl std::hash::Hash for SecretFingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for SecretFingerprint {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretFingerprint(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_token_same_fingerprint_and_keys_matter() {
        let a = Fingerprinter::new(&[1u8; 32]);
        let b = Fingerprinter::new(&[2u8; 32]);
        let t = RefreshToken::new("token-1");
        assert_eq!(a.token(&t), a.token(&t));
        assert_ne!(a.token(&t), b.token(&t));
        assert_ne!(a.token(&t), a.token(&RefreshToken::new("token-2")));
    }

    #[test]
    fn display_is_short_and_not_a_prefix_of_the_key() {
        let fp = Fingerprinter::new(&[7u8; 32]).token(&RefreshToken::new("x"));
        let shown = fp.display().to_string();
        assert_eq!(shown.len(), 12);
        assert!(!fp.to_hex().starts_with(&shown));
        assert!(format!("{fp:?}").contains(&shown));
        assert!(!format!("{fp:?}").contains(&fp.to_hex()));
    }

    #[test]
    fn token_and_secret_domains_differ() {
        let f = Fingerprinter::new(&[3u8; 32]);
        let t = f.token(&RefreshToken::new("same"));
        let s = f.client_secret(&ClientSecret::new("same"));
        assert_ne!(&t.0[..16], &s.0[..]);
    }

    #[test]
    fn fingerprint_hashing_spreads_keys() {
        use std::hash::BuildHasher;
        let f = Fingerprinter::new(&[4u8; 32]);
        let hashes: std::collections::HashSet<u64> = (0..10_000)
            .map(|n| FingerprintHashing.hash_one(f.token(&RefreshToken::new(format!("t{n}")))))
            .collect();
        assert_eq!(hashes.len(), 10_000);
    }

    #[test]
    fn key_file_too_short_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "short\n").unwrap();
        let err = Fingerprinter::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        std::fs::write(&path, [b'k'; 40]).unwrap();
        assert!(Fingerprinter::from_file(&path).is_ok());
    }
}
