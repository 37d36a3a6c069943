//! Client authentication as the token endpoint sees it: HTTP Basic (RFC 6749 §2.3.1, with
//! form-decoded id and secret), `client_id` / `client_secret` in the form body, or a client
//! assertion (RFC 7523); and the identity the gate binds answers to, which also carries what
//! the gate verified (an assertion, a DPoP key).

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
    /// The client assertion (`client_assertion`, RFC 7523), if one was sent.
    pub assertion: Option<ClientSecret>,
}

/// What the gate knows of a presentation's DPoP proof (RFC 9449).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopBinding {
    /// No proof was sent.
    Absent,
    /// A proof by the key with this RFC 7638 thumbprint.
    Key([u8; 32]),
    /// A proof the gate could not verify: bound to no key anyone else can show.
    Unproven,
}

impl ClientCredentials {
    /// The identity of these credentials as sent, an assertion unverified and no DPoP proof.
    pub fn identity(&self, fingerprinter: &Fingerprinter) -> ClientIdentity {
        self.bound_identity(fingerprinter, false, DpopBinding::Absent)
    }

    /// The identity the gate remembers and compares: the id, plus a keyed fingerprint of how
    /// the client authenticated and what it is bound to. A secret alone keeps the
    /// fingerprint of the secret. An assertion counts as the client's only when
    /// `assertion_verified`; an unverified one (and an unproven DPoP proof) makes an
    /// identity no other presentation shares, so it can be matched by none.
    pub fn bound_identity(
        &self,
        fingerprinter: &Fingerprinter,
        assertion_verified: bool,
        dpop: DpopBinding,
    ) -> ClientIdentity {
        let unique = || {
            use rand::RngCore;
            let mut nonce = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut nonce);
            nonce
        };
        let (authentication, nonce_a): (&[u8], Option<[u8; 16]>) = match &self.assertion {
            Some(_) if assertion_verified => (b"assertion-verified", None),
            Some(_) => (b"assertion-unverified", Some(unique())),
            None => (b"", None),
        };
        let (constraint, nonce_d): (Option<[u8; 32]>, Option<[u8; 16]>) = match dpop {
            DpopBinding::Absent => (None, None),
            DpopBinding::Key(jkt) => (Some(jkt), None),
            DpopBinding::Unproven => (None, Some(unique())),
        };
        let composite = self.assertion.is_some() || !matches!(dpop, DpopBinding::Absent);
        let secret = if !composite {
            self.secret.as_ref().map(|s| fingerprinter.client_secret(s))
        } else {
            // A domain of its own (no client secret fingerprints the same), fields
            // length-prefixed: the kind of binding, then its values.
            let secret = self
                .secret
                .as_ref()
                .filter(|_| self.assertion.is_none())
                .map_or(&[][..], |s| s.expose());
            let jkt = constraint.as_ref().map_or(&[][..], |k| &k[..]);
            let nonce_a = nonce_a.as_ref().map_or(&[][..], |n| &n[..]);
            let nonce_d = nonce_d.as_ref().map_or(&[][..], |n| &n[..]);
            Some(fingerprinter.bound_identity(&[secret, authentication, nonce_a, jkt, nonce_d]))
        };
        ClientIdentity {
            client_id: self.client_id.as_str().into(),
            secret,
        }
    }
}

/// Who a refresh grant came from, as the gate remembers it. Basic and form credentials with
/// the same id and secret are the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The client id (empty when the request named none).
    pub client_id: Box<str>,
    /// A keyed fingerprint of the client's authentication and binding (its secret, a
    /// verified assertion, its DPoP key), when it had any
    /// ([`ClientCredentials::bound_identity`]).
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
        assertion: None,
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
            assertion: None,
        };
        let b = a.clone();
        let c = ClientCredentials {
            client_id: "k".into(),
            secret: Some(ClientSecret::new("other")),
            assertion: None,
        };
        assert_eq!(a.identity(&f), b.identity(&f));
        assert_ne!(a.identity(&f), c.identity(&f));
        // A secret alone keeps the fingerprint it always had (tombstones of older replicas).
        assert_eq!(
            a.identity(&f).secret,
            Some(f.client_secret(&ClientSecret::new("s")))
        );
    }

    #[test]
    fn an_assertion_binds_only_once_verified() {
        let f = Fingerprinter::new(&[9u8; 32]);
        let asserted = |jwt: &str| ClientCredentials {
            client_id: "k".into(),
            secret: None,
            assertion: Some(ClientSecret::new(jwt)),
        };
        let plain = ClientCredentials {
            client_id: "k".into(),
            ..ClientCredentials::default()
        };
        let verified = |c: &ClientCredentials| c.bound_identity(&f, true, DpopBinding::Absent);
        // Two fresh assertions of the same client, both verified: the same client.
        assert_eq!(verified(&asserted("a.b.c")), verified(&asserted("x.y.z")));
        // Unverified, even the very same assertion matches nothing.
        assert_ne!(
            asserted("a.b.c").identity(&f),
            asserted("a.b.c").identity(&f)
        );
        assert_ne!(asserted("a.b.c").identity(&f), verified(&asserted("a.b.c")));
        // Only a client id is another client.
        assert_ne!(verified(&plain), verified(&asserted("a.b.c")));
        assert_ne!(plain.identity(&f), verified(&asserted("a.b.c")));
    }

    #[test]
    fn no_client_secret_fingerprints_as_a_bound_identity() {
        let f = Fingerprinter::new(&[9u8; 32]);
        let verified = ClientCredentials {
            client_id: "ci".into(),
            secret: None,
            assertion: Some(ClientSecret::new("a.b.c")),
        }
        .bound_identity(&f, true, DpopBinding::Absent);
        let dpop = ClientCredentials {
            client_id: "ci".into(),
            ..ClientCredentials::default()
        }
        .bound_identity(&f, false, DpopBinding::Key([3; 32]));
        for crafted in [
            "\0assertion\0verified".to_owned(),
            format!("\0dpop\0{}", hex::encode([3u8; 32])),
            "assertion-verified".to_owned(),
        ] {
            let forged = ClientCredentials {
                client_id: "ci".into(),
                secret: Some(ClientSecret::new(crafted)),
                assertion: None,
            }
            .identity(&f);
            assert_ne!(forged, verified);
            assert_ne!(forged, dpop);
        }
    }

    #[test]
    fn a_dpop_key_binds_the_identity() {
        let f = Fingerprinter::new(&[9u8; 32]);
        let public = ClientCredentials {
            client_id: "kubectl".into(),
            ..ClientCredentials::default()
        };
        let with = |dpop| public.bound_identity(&f, false, dpop);
        assert_eq!(
            with(DpopBinding::Key([1; 32])),
            with(DpopBinding::Key([1; 32]))
        );
        assert_ne!(
            with(DpopBinding::Key([1; 32])),
            with(DpopBinding::Key([2; 32]))
        );
        assert_ne!(with(DpopBinding::Key([1; 32])), with(DpopBinding::Absent));
        assert_ne!(with(DpopBinding::Unproven), with(DpopBinding::Unproven));
        assert_eq!(with(DpopBinding::Absent), public.identity(&f));
    }
}
