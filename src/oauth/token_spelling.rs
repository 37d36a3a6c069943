//! How the IdP reads its refresh tokens, so that every spelling it reads as one token gets
//! one fingerprint and a spent token cannot come back in another spelling as an "unknown"
//! one. IdPs that decode their tokens as base64 or base64url (Dex decodes refresh tokens
//! with Go's `RawURLEncoding`; JWT refresh tokens carry base64url segments that Java and
//! Node decoders read leniently) ignore the unused low bits of a segment's last character,
//! padding `=`, and (Node's decoder) the alphabet (`+/` or `-_`): `YWJjZA`, `YWJjZB` and
//! `YWJjZA==` are one token to them. IdPs that compare tokens as opaque strings do not, and
//! for them merging spellings would merge distinct tokens, so this is configured
//! (`[upstream] token_encoding`), not guessed.

use serde::Deserialize;
use std::borrow::Cow;

/// `[upstream] token_encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenEncoding {
    /// Tokens are compared as strings (the default).
    #[default]
    Opaque,
    /// Tokens are base64 / base64url, or JWTs (`.`-separated base64url segments), decoded
    /// by the IdP.
    Base64,
}

impl TokenEncoding {
    /// The bytes the gate fingerprints for `token`.
    pub fn key<'t>(&self, token: &'t [u8]) -> Cow<'t, [u8]> {
        match self {
            TokenEncoding::Opaque => Cow::Borrowed(token),
            TokenEncoding::Base64 => Cow::Owned(canonical_base64(token)),
        }
    }
}

/// Each `.`-separated segment made only of base64 characters, decoded and re-encoded as
/// unpadded base64url with the unused bits cleared; other segments as they are.
fn canonical_base64(token: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(token.len());
    for (i, segment) in token.split(|b| *b == b'.').enumerate() {
        if i > 0 {
            key.push(b'.');
        }
        key.extend(canonical_segment(segment));
    }
    key
}

const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn sextet(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

fn canonical_segment(segment: &[u8]) -> Vec<u8> {
    let end = segment
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(0, |i| i + 1);
    let unpadded = &segment[..end];
    let Some(mut values) = unpadded
        .iter()
        .map(|b| sextet(*b))
        .collect::<Option<Vec<u8>>>()
    else {
        return segment.to_vec();
    };
    // Of the last character, only the bits that complete a byte count.
    let used_bits = match unpadded.len() % 4 {
        2 => 2,
        3 => 4,
        _ => 6,
    };
    if let Some(last) = values.last_mut() {
        *last &= 0x3f & !((1u8 << (6 - used_bits)) - 1);
    }
    values.iter().map(|v| URL_ALPHABET[*v as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::TokenEncoding;

    fn key(token: &str) -> Vec<u8> {
        TokenEncoding::Base64.key(token.as_bytes()).into_owned()
    }

    #[test]
    fn spellings_a_base64_decoder_reads_alike_share_a_key() {
        // "abcd" in base64url: the last character's low four bits are unused.
        for spelling in ["YWJjZA", "YWJjZB", "YWJjZP", "YWJjZA=="] {
            assert_eq!(key(spelling), key("YWJjZA"), "{spelling}");
        }
        assert_eq!(key("ab+/cd"), key("ab-_cd"));
        assert_eq!(
            key("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJlAA"),
            key("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJlAB")
        );
    }

    #[test]
    fn different_tokens_keep_different_keys() {
        assert_ne!(key("YWJjZGVm"), key("YWJjZGVn"));
        assert_ne!(key("YWJjZQ"), key("YWJjZA"));
        assert_ne!(key("a.b"), key("ab"));
        assert_ne!(key("rt~1"), key("rt~2"));
        assert_ne!(key("YWJjZA"), key("ywjjza"));
    }

    #[test]
    fn opaque_tokens_are_their_own_key() {
        assert_eq!(&*TokenEncoding::Opaque.key(b"YWJjZB"), b"YWJjZB");
        assert_ne!(
            TokenEncoding::Opaque.key(b"YWJjZA"),
            TokenEncoding::Opaque.key(b"YWJjZB")
        );
    }
}
