//! Newtypes for secrets: they cannot be printed, and compare in constant time.

use std::fmt;
use subtle::ConstantTimeEq;

/// A raw refresh token as the client presented it (decoded). Never logged or stored.
#[derive(Clone)]
pub struct RefreshToken(Box<str>);

impl RefreshToken {
    /// Wrap a decoded refresh token.
    pub fn new(value: impl Into<Box<str>>) -> Self {
        RefreshToken(value.into())
    }

    /// The raw bytes: only for fingerprinting, the envelope key and revocation at the IdP.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

impl PartialEq for RefreshToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose().ct_eq(other.expose()).into()
    }
}

impl Eq for RefreshToken {}

/// A client secret as sent by the client (Basic or form). Never logged or stored.
#[derive(Clone)]
pub struct ClientSecret(Box<str>);

impl ClientSecret {
    /// Wrap a decoded client secret.
    pub fn new(value: impl Into<Box<str>>) -> Self {
        ClientSecret(value.into())
    }

    /// The raw bytes: only for fingerprinting.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

impl PartialEq for ClientSecret {
    fn eq(&self, other: &Self) -> bool {
        self.expose().ct_eq(other.expose()).into()
    }
}

impl Eq for ClientSecret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = RefreshToken::new("rt-super-secret");
        let secret = ClientSecret::new("cs-super-secret");
        let printed = format!("{token:?} {secret:?}");
        assert!(!printed.contains("super-secret"), "{printed}");
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(RefreshToken::new("a"), RefreshToken::new("a"));
        assert_ne!(RefreshToken::new("a"), RefreshToken::new("b"));
        assert_ne!(ClientSecret::new("a"), ClientSecret::new("ab"));
    }
}
