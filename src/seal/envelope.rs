//! The sealed answer: a remembered token answer is encrypted (AES-256-GCM) under a key
//! derived with HKDF-SHA256 from the raw refresh token, so the store never holds usable
//! tokens and only a client presenting the same refresh token can open it.

use crate::http::answer::{Answer, DecodeError};
use crate::seal::secret::RefreshToken;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

const SALT: &[u8] = b"refresh-gate/envelope/v1";
const NONCE_LEN: usize = 12;

/// An answer encrypted under a key only the token's holder can derive.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedAnswer(Vec<u8>);

impl std::fmt::Debug for SealedAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedAnswer({} bytes)", self.0.len())
    }
}

/// Why a sealed answer could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Wrong token, or tampered bytes.
    #[error("the sealed answer does not open with this token")]
    Rejected,
    /// The plaintext is not an answer.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn cipher_for(token: &RefreshToken) -> Aes256Gcm {
    let hkdf = Hkdf::<Sha256>::new(Some(SALT), token.expose());
    let mut key = [0u8; 32];
    hkdf.expand(b"answer-key", &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new(&key.into())
}

impl SealedAnswer {
    /// Seal `answer` under a key derived from `token`.
    pub fn seal(token: &RefreshToken, answer: &Answer) -> SealedAnswer {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = cipher_for(token)
            .encrypt(Nonce::from_slice(&nonce), answer.encode().as_slice())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        SealedAnswer(sealed)
    }

    /// Open with the token the client presents now.
    pub fn open(&self, token: &RefreshToken) -> Result<Answer, OpenError> {
        if self.0.len() < NONCE_LEN {
            return Err(OpenError::Rejected);
        }
        let (nonce, ciphertext) = self.0.split_at(NONCE_LEN);
        let plain = cipher_for(token)
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError::Rejected)?;
        Ok(Answer::decode(&plain)?)
    }

    /// The sealed bytes (for stores that serialise them).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Rebuild from bytes a store kept.
    pub fn from_bytes(bytes: Vec<u8>) -> SealedAnswer {
        SealedAnswer(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer() -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from_static(b"{\"access_token\":\"AT-123\",\"refresh_token\":\"RT-456\"}"),
        }
    }

    #[test]
    fn opens_only_with_the_same_token() {
        let token = RefreshToken::new("rt-1");
        let sealed = SealedAnswer::seal(&token, &answer());
        assert_eq!(sealed.open(&token).unwrap(), answer());
        assert_eq!(
            sealed.open(&RefreshToken::new("rt-2")),
            Err(OpenError::Rejected)
        );
    }

    #[test]
    fn sealed_bytes_hold_no_plaintext_token() {
        let sealed = SealedAnswer::seal(&RefreshToken::new("rt-1"), &answer());
        let bytes = sealed.as_bytes();
        assert!(!bytes.windows(6).any(|w| w == b"AT-123" || w == b"RT-456"));
    }

    #[test]
    fn tampering_is_detected() {
        let token = RefreshToken::new("rt-1");
        let mut bytes = SealedAnswer::seal(&token, &answer()).as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(SealedAnswer::from_bytes(bytes).open(&token).is_err());
    }
}
