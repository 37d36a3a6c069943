//! Client authentication as the token endpoint sees it: HTTP Basic (RFC 6749 §2.3.1, with
//! form-decoded id and secret) or `client_id` / `client_secret` in the form body.

use crate::oauth::form;
use crate::seal::fingerprint::{Fingerprinter, SecretFingerprint};
use crate::seal::secret::ClientSecret;
use base64::Engine;

/// The client credentials one request carried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientCredentials {
    /// The client id (empty when the request named none).
    pub client_id: String,
    /// The client secret, if one was sent.
    pub secret: Option<ClientSecret>,
}

impl ClientCredentials {
    /// The identity the gate remembers and compares: the id plus a keyed secret fingerprint.
    pub fn identity(&self, fingerprinter: &Fingerprinter) -> ClientIdentity {
        ClientIdentity {
            client_id: self.client_id.as_str().into(),
            secret: self.secret.as_ref().map(|s| fingerprinter.client_secret(s)),
        }
    }
}

/// Who a refresh grant came from, as the gate remembers it. Basic and form credentials with
/// the same id and secret are the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The client id (empty when the request named none).
    pub client_id: Box<str>,
    /// A keyed fingerprint of the client secret, when one was sent.
    pub secret: Option<SecretFingerprint>,
}

/// Why an `Authorization: Basic` header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    /// The credentials are not base64.
    #[error("HTTP Basic credentials are not base64")]
    NotBase64,
    /// The decoded credentials have no `:`.
    #[error("HTTP Basic credentials lack the ':' between client id and secret")]
    NoColon,
    /// The id or secret is not valid form-encoded UTF-8.
    #[error("HTTP Basic client id or secret is not valid form-encoded UTF-8")]
    BadEncoding,
}

/// Parse an `Authorization` header value. `Ok(None)` when it is not the Basic scheme.
pub fn parse_basic(header: &[u8]) -> Result<Option<ClientCredentials>, BasicError> {
    let header = header.trim_ascii();
    let Some(space) = header.iter().position(|b| *b == b' ') else {
        return Ok(None);
    };
    if !header[..space].eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let encoded = header[space + 1..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| BasicError::NotBase64)?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(BasicError::NoColon)?;
    let id = form::decode_component(&decoded[..colon]).map_err(|_| BasicError::BadEncoding)?;
    let secret =
        form::decode_component(&decoded[colon + 1..]).map_err(|_| BasicError::BadEncoding)?;
    Ok(Some(ClientCredentials {
        client_id: id,
        secret: Some(ClientSecret::new(secret)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn basic_is_form_decoded() {
        let creds = parse_basic(basic("my%20client:s%3Acret").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(creds.client_id, "my client");
        assert_eq!(creds.secret, Some(ClientSecret::new("s:cret")));
    }

    #[test]
    fn other_schemes_are_not_basic() {
        assert_eq!(parse_basic(b"Bearer abc").unwrap(), None);
        assert_eq!(parse_basic(b"").unwrap(), None);
    }

    #[test]
    fn malformed_basic_is_an_error() {
        assert_eq!(parse_basic(b"Basic !!!"), Err(BasicError::NotBase64));
        assert_eq!(
            parse_basic(basic("nocolon").as_bytes()),
            Err(BasicError::NoColon)
        );
        assert_eq!(
            parse_basic(basic("a%zz:b").as_bytes()),
            Err(BasicError::BadEncoding)
        );
    }

    #[test]
    fn same_id_and_secret_is_the_same_identity() {
        let f = Fingerprinter::new(&[9u8; 32]);
        let a = ClientCredentials {
            client_id: "k".into(),
            secret: Some(ClientSecret::new("s")),
        };
        let b = a.clone();
        let c = ClientCredentials {
            client_id: "k".into(),
            secret: Some(ClientSecret::new("other")),
        };
        assert_eq!(a.identity(&f), b.identity(&f));
        assert_ne!(a.identity(&f), c.identity(&f));
    }
}
