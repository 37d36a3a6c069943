//! Revocation requests (RFC 7009) passing through the gate to `[upstream] revocation_path`:
//! the body is watched (never changed) as it is forwarded, and when the IdP answers 200 the
//! revoked token's replay window closes (`revoked`), with its family's remembered answers.

use crate::oauth::form;
use crate::seal::secret::RefreshToken;
use bytes::{Bytes, BytesMut};

/// The most of a revocation body the gate keeps to read its `token`; a longer body is
/// forwarded without closing anything.
const MAX_WATCHED_BYTES: usize = 16 * 1024;

/// The body of one revocation request, as it is forwarded.
#[derive(Debug, Default)]
pub(super) struct RevocationWatch {
    body: BytesMut,
    overflowed: bool,
}

impl RevocationWatch {
    /// Keep a forwarded chunk.
    pub(super) fn push(&mut self, chunk: &Bytes) {
        if self.overflowed || self.body.len() + chunk.len() > MAX_WATCHED_BYTES {
            self.overflowed = true;
            self.body.clear();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    /// The revoked token: exactly one non-empty `token` in a strictly parsed form.
    pub(super) fn token(&self) -> Option<RefreshToken> {
        if self.overflowed {
            return None;
        }
        let fields = form::parse(&self.body).ok()?;
        let mut tokens = fields.iter().filter(|(name, _)| name == "token");
        match (tokens.next(), tokens.next()) {
            (Some((_, token)), None) if !token.is_empty() => {
                Some(RefreshToken::new(token.as_str()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(parts: &[&str]) -> RevocationWatch {
        let mut watch = RevocationWatch::default();
        for part in parts {
            watch.push(&Bytes::copy_from_slice(part.as_bytes()));
        }
        watch
    }

    #[test]
    fn the_token_is_read_across_chunks() {
        let w = watch(&["token=abc%2B", "1&token_type_hint=refresh_token"]);
        assert_eq!(w.token(), Some(RefreshToken::new("abc+1")));
    }

    #[test]
    fn ambiguous_or_oversized_bodies_close_nothing() {
        assert_eq!(watch(&["token=a&token=b"]).token(), None);
        assert_eq!(watch(&["token="]).token(), None);
        assert_eq!(watch(&["token=%zz"]).token(), None);
        let big = "x".repeat(MAX_WATCHED_BYTES);
        assert_eq!(watch(&["token=abc&pad=", &big]).token(), None);
    }
}
