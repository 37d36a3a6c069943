//! Client authentication by JWT assertion (RFC 7523 §2.2 and §3; OpenID Connect Core §9):
//! `private_key_jwt` (verified with the client's JWKS) and `client_secret_jwt` (HMAC with the
//! client's secret).
//!
//! Pure: the caller reads the key files and passes the bytes and `now_ms`; replay of a `jti`
//! is the caller's to judge with the returned [`VerifiedAssertion`].
//!
//! Supported algorithms: with a JWKS RS256/384/512 and PS256/384/512 (RSA, 2048 to 8192
//! bits), ES256 (P-256), ES384 (P-384) and EdDSA (Ed25519); with a secret HS256/384/512.
//! Never `none`, never HS* with a JWKS nor an asymmetric `alg` with a secret.

use crate::oauth::dpop::{self, JwkError, PublicJwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// The `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The shortest client_secret_jwt secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The longest `jti` accepted, in bytes.
pub const MAX_JTI_LEN: usize = 256;

/// The default cap on an assertion's lifetime (`exp - iat` and `exp - now`).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The default allowance for clock skew.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The keys one client's assertions are verified with. `Debug` prints no key material.
#[derive(Clone)]
pub struct AssertionKeys {
    inner: Keys,
}

#[derive(Clone)]
enum Keys {
    /// client_secret_jwt.
    Secret(DecodingKey),
    /// private_key_jwt: the usable keys of the client's JWKS.
    Jwks(Vec<JwksKey>),
}

#[derive(Clone)]
struct JwksKey {
    kid: Option<String>,
    key: PublicJwk,
}

impl fmt::Debug for AssertionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Keys::Secret(_) => f.write_str("AssertionKeys::Secret"),
            Keys::Jwks(keys) => write!(f, "AssertionKeys::Jwks({} keys)", keys.len()),
        }
    }
}

/// Why a JWKS or secret cannot serve as assertion keys. Fixed texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The JWKS is not JSON.
    #[error("the JWKS is not valid JSON")]
    NotJson,
    /// The JSON is not an object with a `keys` array of objects.
    #[error("the JWKS is not an object with a \"keys\" array of objects")]
    NotAJwks,
    /// A key carries private or symmetric members (a JWKS for verification holds public keys).
    #[error("the JWKS holds private or symmetric key material")]
    PrivateKey,
    /// A key of a supported type has missing or broken members, or a `kid` that is not a string.
    #[error("the JWKS holds a malformed key")]
    BadKey,
    /// No key is left once unsupported types and non-signature keys are set aside.
    #[error("the JWKS has no usable signature key (RSA, EC P-256/P-384, Ed25519)")]
    NoUsableKeys,
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("the client_secret_jwt secret is shorter than 32 bytes")]
    SecretTooShort,
}

impl AssertionKeys {
    /// Keys from a JWKS (RFC 7517 §5). Keys whose `use` is not `sig`, whose `key_ops` lack
    /// `verify`, or of an unsupported type or curve (`oct` excepted: refused) are set aside.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let value: Value = serde_json::from_slice(json).map_err(|_| KeyError::NotJson)?;
        let entries = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(KeyError::NotAJwks)?;
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let jwk = entry.as_object().ok_or(KeyError::NotAJwks)?;
            if jwk.get("use").is_some_and(|u| u != "sig") {
                continue;
            }
            if let Some(ops) = jwk.get("key_ops") {
                let ops = ops.as_array().ok_or(KeyError::BadKey)?;
                if !ops.iter().any(|op| op == "verify") {
                    continue;
                }
            }
            let kid = match jwk.get("kid") {
                None => None,
                Some(Value::String(kid)) => Some(kid.clone()),
                Some(_) => return Err(KeyError::BadKey),
            };
            match dpop::public_jwk(jwk) {
                Ok(key) => keys.push(JwksKey { kid, key }),
                Err(JwkError::Unsupported) => {}
                Err(JwkError::Private) => return Err(KeyError::PrivateKey),
                Err(JwkError::Malformed) => return Err(KeyError::BadKey),
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKeys);
        }
        Ok(AssertionKeys {
            inner: Keys::Jwks(keys),
        })
    }

    /// A client_secret_jwt secret (the raw bytes, at least [`MIN_SECRET_LEN`]).
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort);
        }
        Ok(AssertionKeys {
            inner: Keys::Secret(DecodingKey::from_secret(secret)),
        })
    }

    /// How many keys are usable (1 for a secret).
    pub fn key_count(&self) -> usize {
        match &self.inner {
            Keys::Secret(_) => 1,
            Keys::Jwks(keys) => keys.len(),
        }
    }
}

/// What an assertion must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionCheck {
    /// The client the request names; `iss` and `sub` must both equal it.
    pub client_id: String,
    /// The accepted `aud` values (the token endpoint URL, spelled as clients send it); `aud`
    /// (a string or an array) must contain one of them exactly.
    pub audiences: Vec<String>,
    /// The cap on `exp - iat` and on `exp - now` (the latter plus `leeway`).
    pub max_lifetime: Duration,
    /// The allowance for clock skew on `exp`, `iat` and `nbf`.
    pub leeway: Duration,
}

impl AssertionCheck {
    /// A check with [`DEFAULT_MAX_LIFETIME`] and [`DEFAULT_LEEWAY`].
    pub fn new(client_id: impl Into<String>, audiences: Vec<String>) -> Self {
        AssertionCheck {
            client_id: client_id.into(),
            audiences,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// An assertion that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// Its `jti` (remember it until `expires_ms` to refuse a second use).
    pub jti: String,
    /// Its `exp`, in milliseconds since the epoch.
    pub expires_ms: u64,
}

/// Why an assertion was refused. The texts are fixed: they never quote the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Longer than [`dpop::MAX_JWS_LEN`].
    #[error("client assertion is too large")]
    TooLarge,
    /// Not a compact JWS with JSON object header and claims (or a duplicated member).
    #[error("client assertion is not a well-formed JWS")]
    Malformed,
    /// The header has `crit`.
    #[error("client assertion has critical header parameters")]
    CriticalHeader,
    /// `alg` is missing, `none` or not supported.
    #[error("client assertion alg is not supported")]
    UnsupportedAlgorithm,
    /// `alg` is of the wrong kind for the client's keys (HS* with a JWKS, asymmetric with a
    /// secret).
    #[error("client assertion alg does not fit the client's keys")]
    AlgorithmMismatch,
    /// No configured key has the assertion's `kid` and fits its `alg`.
    #[error("no configured key matches the client assertion's kid and alg")]
    UnknownKey,
    /// The signature does not verify.
    #[error("client assertion signature does not verify")]
    BadSignature,
    /// `iss` is missing or is not the client.
    #[error("client assertion iss is not the client")]
    WrongIssuer,
    /// `sub` is missing or is not the client.
    #[error("client assertion sub is not the client")]
    WrongSubject,
    /// `aud` is missing or names none of the accepted audiences.
    #[error("client assertion aud does not name the token endpoint")]
    WrongAudience,
    /// `exp` is missing or not a non-negative number.
    #[error("client assertion has no valid exp")]
    MissingExpiry,
    /// `exp` has passed (beyond the leeway).
    #[error("client assertion has expired")]
    Expired,
    /// `iat` is missing or not a non-negative number.
    #[error("client assertion has no valid iat")]
    MissingIssuedAt,
    /// `iat` is in the future (beyond the leeway).
    #[error("client assertion iat is in the future")]
    IssuedInFuture,
    /// `exp - iat` or `exp - now` exceeds the cap, or `exp` is not after `iat`.
    #[error("client assertion lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// `nbf` is not a number or is in the future (beyond the leeway).
    #[error("client assertion is not yet valid")]
    NotYetValid,
    /// `jti` is missing, not a string or empty.
    #[error("client assertion has no jti")]
    MissingJti,
    /// `jti` is longer than [`MAX_JTI_LEN`].
    #[error("client assertion jti is too long")]
    JtiTooLong,
}

/// Verify a client assertion: the signature with the client's keys (by `kid` when the
/// assertion names one, else every key fitting `alg`), then `iss`, `sub`, `aud`, `exp`, `iat`,
/// the lifetime cap, `nbf` and `jti`. Keys embedded in the header (`jwk`, `jku`, `x5c`, …)
/// are never used.
pub fn verify_assertion(
    jwt: &str,
    expected: &AssertionCheck,
    keys: &AssertionKeys,
    now_ms: u64,
) -> Result<VerifiedAssertion, AssertionError> {
    let jws = dpop::parse_jws(jwt).map_err(|e| match e {
        dpop::JwsError::TooLarge => AssertionError::TooLarge,
        dpop::JwsError::Malformed => AssertionError::Malformed,
    })?;
    if jws.header.contains_key("crit") {
        return Err(AssertionError::CriticalHeader);
    }
    let alg_name = jws
        .header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AssertionError::UnsupportedAlgorithm)?;
    let kid = match jws.header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(AssertionError::Malformed),
    };
    match &keys.inner {
        Keys::Secret(secret) => {
            let alg = match (hmac_alg(alg_name), dpop::asymmetric_alg(alg_name)) {
                (Some(alg), _) => alg,
                (None, Some(_)) => return Err(AssertionError::AlgorithmMismatch),
                (None, None) => return Err(AssertionError::UnsupportedAlgorithm),
            };
            if !jws.verify_hmac(secret, alg) {
                return Err(AssertionError::BadSignature);
            }
        }
        Keys::Jwks(jwks) => {
            let alg = match (dpop::asymmetric_alg(alg_name), hmac_alg(alg_name)) {
                (Some(alg), _) => alg,
                (None, Some(_)) => return Err(AssertionError::AlgorithmMismatch),
                (None, None) => return Err(AssertionError::UnsupportedAlgorithm),
            };
            let mut candidates = jwks
                .iter()
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
                .filter(|k| k.key.allows(alg))
                .peekable();
            if candidates.peek().is_none() {
                return Err(AssertionError::UnknownKey);
            }
            if !candidates.any(|k| k.key.verify(&jws, alg)) {
                return Err(AssertionError::BadSignature);
            }
        }
    }
    check_claims(&jws.claims, expected, now_ms)
}

fn check_claims(
    claims: &serde_json::Map<String, Value>,
    expected: &AssertionCheck,
    now_ms: u64,
) -> Result<VerifiedAssertion, AssertionError> {
    let client_id = expected.client_id.as_str();
    if claims.get("iss").and_then(Value::as_str) != Some(client_id) {
        return Err(AssertionError::WrongIssuer);
    }
    if claims.get("sub").and_then(Value::as_str) != Some(client_id) {
        return Err(AssertionError::WrongSubject);
    }
    let accepted = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| expected.audiences.iter().any(|a| a == aud))
    };
    let aud_ok = match claims.get("aud") {
        Some(Value::Array(auds)) => auds.iter().any(accepted),
        Some(aud) => accepted(aud),
        None => false,
    };
    if !aud_ok {
        return Err(AssertionError::WrongAudience);
    }
    let leeway = dpop::duration_ms(expected.leeway);
    let max_lifetime = dpop::duration_ms(expected.max_lifetime);
    let exp = claims
        .get("exp")
        .and_then(dpop::numeric_date_ms)
        .ok_or(AssertionError::MissingExpiry)?;
    if exp.saturating_add(leeway) <= now_ms {
        return Err(AssertionError::Expired);
    }
    let iat = claims
        .get("iat")
        .and_then(dpop::numeric_date_ms)
        .ok_or(AssertionError::MissingIssuedAt)?;
    if iat > now_ms.saturating_add(leeway) {
        return Err(AssertionError::IssuedInFuture);
    }
    if exp <= iat
        || exp - iat > max_lifetime
        || exp.saturating_sub(now_ms) > max_lifetime.saturating_add(leeway)
    {
        return Err(AssertionError::LifetimeTooLong);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = dpop::numeric_date_ms(nbf).ok_or(AssertionError::NotYetValid)?;
        if nbf > now_ms.saturating_add(leeway) {
            return Err(AssertionError::NotYetValid);
        }
    }
    let jti = match claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => jti,
        _ => return Err(AssertionError::MissingJti),
    };
    if jti.len() > MAX_JTI_LEN {
        return Err(AssertionError::JtiTooLong);
    }
    Ok(VerifiedAssertion {
        jti: jti.to_owned(),
        expires_ms: exp,
    })
}

/// The `jti` and `exp` (milliseconds) of an assertion WITHOUT verifying it, to remember the
/// first use's `jti` (which the IdP verifies) so a captured assertion cannot be replayed
/// through the gate. `None` when unparseable or either claim is missing or empty.
pub fn peek_assertion_jti(jwt: &str) -> Option<(String, u64)> {
    let jws = dpop::parse_jws(jwt).ok()?;
    let jti = jws.claims.get("jti")?.as_str()?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return None;
    }
    let exp = dpop::numeric_date_ms(jws.claims.get("exp")?)?;
    Some((jti.to_owned(), exp))
}

/// The HMAC algorithms accepted for client_secret_jwt.
fn hmac_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::dpop::tests::{b64, sign_with, TestKey};
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW: u64 = NOW_MS / 1000;
    const CLIENT: &str = "my-client";
    const AUD: &str = "https://idp.example.com/oauth2/token";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn check() -> AssertionCheck {
        AssertionCheck::new(
            CLIENT,
            vec![AUD.to_owned(), "https://idp.example.com".to_owned()],
        )
    }

    fn claims() -> Value {
        json!({
            "iss": CLIENT, "sub": CLIENT, "aud": AUD,
            "jti": "a-unique-id", "iat": NOW, "exp": NOW + 60,
        })
    }

    fn jwks(keys: &[&TestKey]) -> AssertionKeys {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        AssertionKeys::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn jwks_with_kids(keys: &[(&TestKey, &str)]) -> AssertionKeys {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(k, kid)| {
                let mut jwk = k.jwk.clone();
                jwk["kid"] = json!(kid);
                jwk
            })
            .collect();
        AssertionKeys::from_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn signed(key: &TestKey, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let (mut header, mut c) = (json!({"typ": "JWT"}), claims());
        edit(&mut header, &mut c);
        key.sign(header, c)
    }

    fn hs(alg: Algorithm, secret: &[u8], edit: impl FnOnce(&mut Value)) -> String {
        let mut c = claims();
        edit(&mut c);
        let header = json!({"alg": format!("{alg:?}"), "typ": "JWT"});
        sign_with(&EncodingKey::from_secret(secret), alg, &header, &c)
    }

    #[test]
    fn private_key_jwt_verifies_for_each_algorithm() {
        for key in [
            TestKey::es256(),
            TestKey::es384(),
            TestKey::ed25519(),
            TestKey::rs256(),
        ] {
            let keys = jwks(&[&key]);
            let jwt = signed(&key, |_, _| {});
            let verified = verify_assertion(&jwt, &check(), &keys, NOW_MS)
                .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
            assert_eq!(
                verified,
                VerifiedAssertion {
                    jti: "a-unique-id".into(),
                    expires_ms: (NOW + 60) * 1000
                }
            );
            assert_eq!(
                peek_assertion_jti(&jwt),
                Some(("a-unique-id".into(), (NOW + 60) * 1000))
            );
        }
    }

    #[test]
    fn client_secret_jwt_verifies_for_each_hmac() {
        let keys = AssertionKeys::from_secret(SECRET).unwrap();
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let jwt = hs(alg, SECRET, |_| {});
            assert!(
                verify_assertion(&jwt, &check(), &keys, NOW_MS).is_ok(),
                "{alg:?}"
            );
        }
        let wrong = hs(
            Algorithm::HS256,
            b"another secret of at least 32 bytes!",
            |_| {},
        );
        assert_eq!(
            verify_assertion(&wrong, &check(), &keys, NOW_MS),
            Err(AssertionError::BadSignature)
        );
    }

    #[test]
    fn secrets_shorter_than_32_bytes_are_refused() {
        assert_eq!(
            AssertionKeys::from_secret(&SECRET[..31]).unwrap_err(),
            KeyError::SecretTooShort
        );
        assert_eq!(AssertionKeys::from_secret(SECRET).unwrap().key_count(), 1);
    }

    #[test]
    fn debug_prints_no_key_material() {
        let secret = AssertionKeys::from_secret(SECRET).unwrap();
        assert_eq!(format!("{secret:?}"), "AssertionKeys::Secret");
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let text = format!("{keys:?}");
        assert_eq!(text, "AssertionKeys::Jwks(1 keys)");
        assert!(!text.contains(key.jwk["x"].as_str().unwrap()));
    }

    #[test]
    fn wrong_key_is_refused() {
        let (signer, other) = (TestKey::es256(), TestKey::es256());
        let jwt = signed(&signer, |_, _| {});
        assert_eq!(
            verify_assertion(&jwt, &check(), &jwks(&[&other]), NOW_MS),
            Err(AssertionError::BadSignature)
        );
        // With both keys and no kid, each fitting key is tried.
        assert!(verify_assertion(&jwt, &check(), &jwks(&[&other, &signer]), NOW_MS).is_ok());
        // A header jwk of the signer's key is never trusted.
        let jwt = signed(&signer, |h, _| h["jwk"] = signer.jwk.clone());
        assert_eq!(
            verify_assertion(&jwt, &check(), &jwks(&[&other]), NOW_MS),
            Err(AssertionError::BadSignature)
        );
    }

    #[test]
    fn kid_selects_the_key() {
        let (a, b) = (TestKey::es256(), TestKey::ed25519());
        let keys = jwks_with_kids(&[(&a, "a"), (&b, "b")]);
        let jwt = signed(&a, |h, _| h["kid"] = json!("a"));
        assert!(verify_assertion(&jwt, &check(), &keys, NOW_MS).is_ok());
        // The right key under the wrong kid.
        let jwt = signed(&a, |h, _| h["kid"] = json!("b"));
        assert_eq!(
            verify_assertion(&jwt, &check(), &keys, NOW_MS),
            Err(AssertionError::UnknownKey)
        );
        let jwt = signed(&a, |h, _| h["kid"] = json!("c"));
        assert_eq!(
            verify_assertion(&jwt, &check(), &keys, NOW_MS),
            Err(AssertionError::UnknownKey)
        );
        let jwt = signed(&a, |h, _| h["kid"] = json!(1));
        assert_eq!(
            verify_assertion(&jwt, &check(), &keys, NOW_MS),
            Err(AssertionError::Malformed)
        );
        // Two keys under one kid: both tried.
        let a2 = TestKey::es256();
        let keys = jwks_with_kids(&[(&a2, "a"), (&a, "a")]);
        let jwt = signed(&a, |h, _| h["kid"] = json!("a"));
        assert!(verify_assertion(&jwt, &check(), &keys, NOW_MS).is_ok());
    }

    #[test]
    fn alg_none_and_unknown_algs_are_refused() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let secret = AssertionKeys::from_secret(SECRET).unwrap();
        for alg in ["none", "None", "ES512", "HS1", ""] {
            let jwt = signed(&key, |h, _| h["alg"] = json!(alg));
            assert_eq!(
                verify_assertion(&jwt, &check(), &keys, NOW_MS),
                Err(AssertionError::UnsupportedAlgorithm),
                "{alg}"
            );
            assert_eq!(
                verify_assertion(&jwt, &check(), &secret, NOW_MS),
                Err(AssertionError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            b64(json!({"alg": "none"}).to_string()),
            b64(claims().to_string())
        );
        assert_eq!(
            verify_assertion(&unsigned, &check(), &keys, NOW_MS),
            Err(AssertionError::Malformed)
        );
        let jwt = signed(&key, |h, _| h["crit"] = json!(["b64"]));
        assert_eq!(
            verify_assertion(&jwt, &check(), &keys, NOW_MS),
            Err(AssertionError::CriticalHeader)
        );
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused() {
        // The classic confusion attack: HMAC keyed with the verifier's public key bytes.
        for key in [TestKey::es256(), TestKey::rs256(), TestKey::ed25519()] {
            let keys = jwks(&[&key]);
            for public in [key.jwk.to_string(), json!({"keys": [key.jwk]}).to_string()] {
                let jwt = hs(Algorithm::HS256, public.as_bytes(), |_| {});
                assert_eq!(
                    verify_assertion(&jwt, &check(), &keys, NOW_MS),
                    Err(AssertionError::AlgorithmMismatch)
                );
            }
        }
        // And the other way: an asymmetric alg is no use against a secret.
        let key = TestKey::es256();
        let jwt = signed(&key, |_, _| {});
        let secret = AssertionKeys::from_secret(SECRET).unwrap();
        assert_eq!(
            verify_assertion(&jwt, &check(), &secret, NOW_MS),
            Err(AssertionError::AlgorithmMismatch)
        );
    }

    #[test]
    fn alg_must_fit_the_key_type() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        for alg in ["ES384", "RS256", "EdDSA"] {
            let jwt = signed(&key, |h, _| h["alg"] = json!(alg));
            assert_eq!(
                verify_assertion(&jwt, &check(), &keys, NOW_MS),
                Err(AssertionError::UnknownKey),
                "{alg}"
            );
        }
        // A JWKS key's own alg restricts it.
        let rsa = TestKey::rs256();
        let mut jwk = rsa.jwk.clone();
        jwk["alg"] = json!("PS256");
        let keys = AssertionKeys::from_jwks(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        assert_eq!(
            verify_assertion(&signed(&rsa, |_, _| {}), &check(), &keys, NOW_MS),
            Err(AssertionError::UnknownKey)
        );
        let ps = signed(&rsa, |h, _| h["alg"] = json!("PS256"));
        assert!(verify_assertion(&ps, &check(), &keys, NOW_MS).is_ok());
    }

    #[test]
    fn iss_and_sub_must_be_the_client() {
        let key = TestKey::ed25519();
        let keys = jwks(&[&key]);
        let cases = [
            ("iss", json!("other"), AssertionError::WrongIssuer),
            ("iss", json!(null), AssertionError::WrongIssuer),
            ("sub", json!("other"), AssertionError::WrongSubject),
            ("sub", json!(["my-client"]), AssertionError::WrongSubject),
        ];
        for (claim, value, want) in cases {
            let jwt = signed(&key, |_, c| c[claim] = value.clone());
            assert_eq!(
                verify_assertion(&jwt, &check(), &keys, NOW_MS),
                Err(want),
                "{claim}={value}"
            );
        }
        let jwt = signed(&key, |_, c| {
            c.as_object_mut().unwrap().remove("sub");
        });
        assert_eq!(
            verify_assertion(&jwt, &check(), &keys, NOW_MS),
            Err(AssertionError::WrongSubject)
        );
    }

    #[test]
    fn aud_must_name_an_accepted_audience() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        for aud in [
            json!(AUD),
            json!(["https://elsewhere.example", AUD]),
            json!("https://idp.example.com"),
        ] {
            let jwt = signed(&key, |_, c| c["aud"] = aud.clone());
            assert!(
                verify_assertion(&jwt, &check(), &keys, NOW_MS).is_ok(),
                "{aud}"
            );
        }
        for aud in [
            json!("https://elsewhere.example/token"),
            json!("https://idp.example.com/oauth2/token/"),
            json!(["https://elsewhere.example"]),
            json!([]),
            json!(null),
            json!(7),
        ] {
            let jwt = signed(&key, |_, c| c["aud"] = aud.clone());
            assert_eq!(
                verify_assertion(&jwt, &check(), &keys, NOW_MS),
                Err(AssertionError::WrongAudience),
                "{aud}"
            );
        }
    }

    #[test]
    fn exp_is_required_and_in_the_future() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let run = |edit: &dyn Fn(&mut Value)| {
            let jwt = signed(&key, |_, c| edit(c));
            verify_assertion(&jwt, &check(), &keys, NOW_MS)
        };
        // Expired 10 s ago: inside the 30 s leeway.
        assert!(run(&|c| {
            c["iat"] = json!(NOW - 100);
            c["exp"] = json!(NOW - 10)
        })
        .is_ok());
        assert_eq!(
            run(&|c| {
                c["iat"] = json!(NOW - 100);
                c["exp"] = json!(NOW - 30)
            }),
            Err(AssertionError::Expired)
        );
        assert_eq!(
            run(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            Err(AssertionError::MissingExpiry)
        );
        assert_eq!(
            run(&|c| c["exp"] = json!("soon")),
            Err(AssertionError::MissingExpiry)
        );
    }

    #[test]
    fn iat_is_required_and_not_in_the_future() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let run = |edit: &dyn Fn(&mut Value)| {
            let jwt = signed(&key, |_, c| edit(c));
            verify_assertion(&jwt, &check(), &keys, NOW_MS)
        };
        assert!(run(&|c| c["iat"] = json!(NOW + 30)).is_ok());
        assert_eq!(
            run(&|c| {
                c["iat"] = json!(NOW + 31);
                c["exp"] = json!(NOW + 90)
            }),
            Err(AssertionError::IssuedInFuture)
        );
        assert_eq!(
            run(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            Err(AssertionError::MissingIssuedAt)
        );
        assert_eq!(
            run(&|c| c["iat"] = json!(-5)),
            Err(AssertionError::MissingIssuedAt)
        );
    }

    #[test]
    fn lifetime_is_capped() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let run = |iat: u64, exp: u64| {
            let jwt = signed(&key, |_, c| {
                c["iat"] = json!(iat);
                c["exp"] = json!(exp)
            });
            verify_assertion(&jwt, &check(), &keys, NOW_MS)
        };
        assert!(run(NOW, NOW + 300).is_ok());
        assert_eq!(run(NOW, NOW + 301), Err(AssertionError::LifetimeTooLong));
        // An old iat with a short remaining life is still too long a lifetime.
        assert_eq!(
            run(NOW - 3600, NOW + 10),
            Err(AssertionError::LifetimeTooLong)
        );
        // exp not after iat.
        assert_eq!(run(NOW, NOW), Err(AssertionError::LifetimeTooLong));
        // exp - now is capped too (iat in the future within the leeway).
        assert!(run(NOW + 30, NOW + 330).is_ok());
        let tight = AssertionCheck {
            leeway: Duration::ZERO,
            ..check()
        };
        let jwt = signed(&key, |_, c| {
            c["iat"] = json!(NOW);
            c["exp"] = json!(NOW + 300)
        });
        assert!(verify_assertion(&jwt, &tight, &keys, NOW_MS).is_ok());
        let short = AssertionCheck {
            max_lifetime: Duration::from_secs(60),
            ..check()
        };
        assert_eq!(
            verify_assertion(&jwt, &short, &keys, NOW_MS),
            Err(AssertionError::LifetimeTooLong)
        );
    }

    #[test]
    fn nbf_when_present_must_have_passed() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let run = |nbf: Value| {
            let jwt = signed(&key, |_, c| c["nbf"] = nbf);
            verify_assertion(&jwt, &check(), &keys, NOW_MS)
        };
        assert!(run(json!(NOW)).is_ok());
        assert!(run(json!(NOW + 30)).is_ok());
        assert_eq!(run(json!(NOW + 31)), Err(AssertionError::NotYetValid));
        assert_eq!(run(json!("now")), Err(AssertionError::NotYetValid));
    }

    #[test]
    fn jti_is_required_and_bounded() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let run = |jti: Option<Value>| {
            let jwt = signed(&key, |_, c| match jti {
                Some(jti) => c["jti"] = jti,
                None => {
                    c.as_object_mut().unwrap().remove("jti");
                }
            });
            (
                verify_assertion(&jwt, &check(), &keys, NOW_MS),
                peek_assertion_jti(&jwt),
            )
        };
        assert_eq!(run(None), (Err(AssertionError::MissingJti), None));
        assert_eq!(
            run(Some(json!(""))),
            (Err(AssertionError::MissingJti), None)
        );
        assert_eq!(
            run(Some(json!(42))),
            (Err(AssertionError::MissingJti), None)
        );
        let max = "j".repeat(MAX_JTI_LEN);
        assert!(run(Some(json!(max))).0.is_ok());
        let long = "j".repeat(MAX_JTI_LEN + 1);
        assert_eq!(
            run(Some(json!(long))),
            (Err(AssertionError::JtiTooLong), None)
        );
    }

    #[test]
    fn peek_reads_without_verifying() {
        let key = TestKey::es256();
        // Any key, expired, wrong audience: peek still reads jti and exp.
        let jwt = signed(&key, |_, c| {
            c["aud"] = json!("x");
            c["exp"] = json!(1.5)
        });
        assert_eq!(peek_assertion_jti(&jwt), Some(("a-unique-id".into(), 1500)));
        let no_exp = signed(&key, |_, c| {
            c.as_object_mut().unwrap().remove("exp");
        });
        assert_eq!(peek_assertion_jti(&no_exp), None);
        assert_eq!(peek_assertion_jti("not.a.jwt"), None);
        assert_eq!(peek_assertion_jti(""), None);
    }

    #[test]
    fn malformed_assertions_are_refused_without_echoing_them() {
        let key = TestKey::es256();
        let keys = jwks(&[&key]);
        let jwt = signed(&key, |_, _| {});
        for bad in [
            String::new(),
            "a.b".into(),
            format!("{jwt}.x"),
            "!!.!!.!!".into(),
        ] {
            assert_eq!(
                verify_assertion(&bad, &check(), &keys, NOW_MS),
                Err(AssertionError::Malformed)
            );
        }
        assert_eq!(
            verify_assertion(&"a".repeat(dpop::MAX_JWS_LEN + 1), &check(), &keys, NOW_MS),
            Err(AssertionError::TooLarge)
        );
        let duplicated = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"iss":"my-client","iss":"attacker"}"#)
        );
        assert_eq!(
            verify_assertion(&duplicated, &check(), &keys, NOW_MS),
            Err(AssertionError::Malformed)
        );
        let tampered = signed(&key, |_, c| c["exp"] = json!(NOW + 61));
        let forged = format!(
            "{}.{}",
            tampered.rsplit_once('.').unwrap().0,
            jwt.rsplit_once('.').unwrap().1
        );
        let err = verify_assertion(&forged, &check(), &keys, NOW_MS).unwrap_err();
        assert_eq!(err, AssertionError::BadSignature);
        let sig = jwt.rsplit_once('.').unwrap().1;
        assert!(!err.to_string().contains(sig) && !format!("{err:?}").contains(sig));
    }

    #[test]
    fn jwks_loading() {
        let (ec, ed) = (TestKey::es256(), TestKey::ed25519());
        let load = |v: Value| AssertionKeys::from_jwks(v.to_string().as_bytes());
        assert_eq!(
            AssertionKeys::from_jwks(b"{").unwrap_err(),
            KeyError::NotJson
        );
        assert_eq!(load(json!([])).unwrap_err(), KeyError::NotAJwks);
        assert_eq!(load(json!({"keys": {}})).unwrap_err(), KeyError::NotAJwks);
        assert_eq!(
            load(json!({"keys": ["x"]})).unwrap_err(),
            KeyError::NotAJwks
        );
        assert_eq!(
            load(json!({"keys": []})).unwrap_err(),
            KeyError::NoUsableKeys
        );
        // Encryption keys and unsupported curves are set aside.
        let mut enc = ec.jwk.clone();
        enc["use"] = json!("enc");
        let mut wrap = ec.jwk.clone();
        wrap["key_ops"] = json!(["wrapKey"]);
        let p521 = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
        assert_eq!(
            load(json!({"keys": [enc, wrap, p521]})).unwrap_err(),
            KeyError::NoUsableKeys
        );
        let mut sig = ed.jwk.clone();
        sig["use"] = json!("sig");
        sig["key_ops"] = json!(["verify"]);
        assert_eq!(
            load(json!({"keys": [enc, sig, p521]})).unwrap().key_count(),
            1
        );
        // An encryption key cannot verify an assertion.
        let keys = load(json!({"keys": [enc]}));
        assert!(keys.is_err());
        // Private or symmetric material and broken keys are refused.
        let mut private = ec.jwk.clone();
        private["d"] = json!("AAAA");
        assert_eq!(
            load(json!({"keys": [private]})).unwrap_err(),
            KeyError::PrivateKey
        );
        assert_eq!(
            load(json!({"keys": [{"kty": "oct", "k": b64(SECRET)}]})).unwrap_err(),
            KeyError::PrivateKey
        );
        let broken = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"});
        assert_eq!(
            load(json!({"keys": [broken]})).unwrap_err(),
            KeyError::BadKey
        );
        let mut bad_kid = ec.jwk.clone();
        bad_kid["kid"] = json!(3);
        assert_eq!(
            load(json!({"keys": [bad_kid]})).unwrap_err(),
            KeyError::BadKey
        );
    }

    #[test]
    fn constant_is_the_rfc_7523_urn() {
        assert_eq!(
            CLIENT_ASSERTION_TYPE_JWT_BEARER,
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
    }
}
