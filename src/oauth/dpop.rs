//! DPoP proofs (RFC 9449) as the token endpoint sees them: verify a proof against its own
//! embedded public key, the request's method and URL and the clock, and compute JWK
//! thumbprints (RFC 7638) to compare the key of a replay with the key of the first use.
//!
//! Pure: no I/O, no clock of its own (the caller passes `now_ms`). The JWS plumbing here
//! (compact parsing, public JWKs, algorithm families) is shared with
//! [`assertion`](crate::oauth::assertion).
//!
//! Supported algorithms: RS256/384/512 and PS256/384/512 (RSA, 2048 to 8192 bits), ES256
//! (P-256), ES384 (P-384) and EdDSA (Ed25519). Never `none` and never HS*.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// The `typ` a DPoP proof's JOSE header must carry.
pub const DPOP_JWT_TYPE: &str = "dpop+jwt";

/// The longest `jti` accepted, in bytes.
pub const MAX_JTI_LEN: usize = 256;

/// The largest proof or assertion read, in bytes; longer ones are refused unparsed.
pub const MAX_JWS_LEN: usize = 16 * 1024;

/// What a proof must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofCheck<'a> {
    /// The request's method (`htm`), compared exactly (methods are case-sensitive).
    pub method: &'a str,
    /// The request's URL as the client addressed it (`htu`); compared after
    /// [`normalize_htu`] on both sides.
    pub url: &'a str,
    /// How far `iat` may be from `now_ms`, either way.
    pub max_skew: Duration,
}

/// A proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 thumbprint of the proof's public key.
    pub jkt: Jkt,
    /// The proof's `jti`.
    pub jti: String,
    /// The proof's `iat`, in milliseconds since the epoch.
    pub iat_ms: u64,
    /// The proof's `nonce` claim, if any (returned, not judged).
    pub nonce: Option<String>,
}

/// A JWK SHA-256 thumbprint (RFC 7638). Public, not a secret: `Display` and `Debug` print it
/// base64url-encoded without padding, as `cnf.jkt` and `dpop_jkt` spell it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Jkt(pub [u8; 32]);

impl Jkt {
    /// The thumbprint's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Base64url without padding.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Read a base64url (no padding) thumbprint; `None` unless it is exactly 32 bytes.
    pub fn from_base64url(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Jkt(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64url())
    }
}

impl fmt::Debug for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jkt({self})")
    }
}

/// Why a proof was refused. The texts are fixed: they never quote the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Longer than [`MAX_JWS_LEN`].
    #[error("DPoP proof is too large")]
    TooLarge,
    /// Not a compact JWS with a JSON object header and payload (or a duplicated member).
    #[error("DPoP proof is not a well-formed JWS")]
    Malformed,
    /// The header's `typ` is not `dpop+jwt`.
    #[error("DPoP proof typ is not dpop+jwt")]
    WrongType,
    /// The header has `crit`, which no DPoP extension here understands.
    #[error("DPoP proof has critical header parameters")]
    CriticalHeader,
    /// `alg` is missing, `none`, symmetric or not supported.
    #[error("DPoP proof alg is not an accepted asymmetric algorithm")]
    AlgorithmNotAllowed,
    /// The header has no `jwk` object.
    #[error("DPoP proof header has no jwk")]
    MissingJwk,
    /// The `jwk` carries private or symmetric key members.
    #[error("DPoP proof jwk contains private key material")]
    PrivateKey,
    /// The `jwk` is malformed, of an unsupported type or curve, or does not fit `alg`.
    #[error("DPoP proof jwk is unusable for its alg")]
    BadJwk,
    /// The signature does not verify with the embedded key.
    #[error("DPoP proof signature does not verify")]
    BadSignature,
    /// `jti` is missing, not a string or empty.
    #[error("DPoP proof has no jti")]
    MissingJti,
    /// `jti` is longer than [`MAX_JTI_LEN`].
    #[error("DPoP proof jti is too long")]
    JtiTooLong,
    /// `htm` is missing or differs from the request's method.
    #[error("DPoP proof htm does not match the request method")]
    WrongMethod,
    /// `htu` is missing, not a URL or differs from the request's URL.
    #[error("DPoP proof htu does not match the request URL")]
    WrongUrl,
    /// The URL the caller expects is not an absolute http(s) URL.
    #[error("the expected DPoP URL is not an absolute http(s) URL")]
    ExpectedUrlInvalid,
    /// `iat` is missing or not a non-negative number.
    #[error("DPoP proof has no valid iat")]
    MissingIssuedAt,
    /// `iat` is further from now than the allowed skew.
    #[error("DPoP proof iat is outside the allowed clock skew")]
    IssuedAtOutOfRange,
    /// `nonce` is present but not a string.
    #[error("DPoP proof nonce is not a string")]
    BadNonce,
}

/// Verify a DPoP proof for a request, per RFC 9449 §4.3 (without replay and nonce judgement,
/// which the caller does with the returned `jti` and `nonce`). `ath` is ignored.
pub fn verify_proof(
    proof: &str,
    expected: &ProofCheck<'_>,
    now_ms: u64,
) -> Result<VerifiedProof, DpopError> {
    let jws = parse_jws(proof).map_err(|e| match e {
        JwsError::TooLarge => DpopError::TooLarge,
        JwsError::Malformed => DpopError::Malformed,
    })?;
    match jws.header.get("typ").and_then(Value::as_str) {
        Some(typ) if typ.eq_ignore_ascii_case(DPOP_JWT_TYPE) => {}
        _ => return Err(DpopError::WrongType),
    }
    if jws.header.contains_key("crit") {
        return Err(DpopError::CriticalHeader);
    }
    let alg = jws
        .header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(asymmetric_alg)
        .ok_or(DpopError::AlgorithmNotAllowed)?;
    let jwk = jws
        .header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(DpopError::MissingJwk)?;
    let key = public_jwk(jwk).map_err(|e| match e {
        JwkError::Private => DpopError::PrivateKey,
        JwkError::Unsupported | JwkError::Malformed => DpopError::BadJwk,
    })?;
    if !key.allows(alg) {
        return Err(DpopError::BadJwk);
    }
    if !key.verify(&jws, alg) {
        return Err(DpopError::BadSignature);
    }
    let jkt = jwk_thumbprint_of(jwk).ok_or(DpopError::BadJwk)?;

    let claims = &jws.claims;
    let jti = match claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => jti,
        _ => return Err(DpopError::MissingJti),
    };
    if jti.len() > MAX_JTI_LEN {
        return Err(DpopError::JtiTooLong);
    }
    if claims.get("htm").and_then(Value::as_str) != Some(expected.method) {
        return Err(DpopError::WrongMethod);
    }
    let want = normalize_htu(expected.url).ok_or(DpopError::ExpectedUrlInvalid)?;
    let got = claims
        .get("htu")
        .and_then(Value::as_str)
        .and_then(normalize_htu)
        .ok_or(DpopError::WrongUrl)?;
    if got != want {
        return Err(DpopError::WrongUrl);
    }
    let iat_ms = claims
        .get("iat")
        .and_then(numeric_date_ms)
        .ok_or(DpopError::MissingIssuedAt)?;
    if iat_ms.abs_diff(now_ms) > duration_ms(expected.max_skew) {
        return Err(DpopError::IssuedAtOutOfRange);
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(DpopError::BadNonce),
    };
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        iat_ms,
        nonce,
    })
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK: the required members only (RSA `e`,
/// `kty`, `n`; EC `crv`, `kty`, `x`, `y`; OKP `crv`, `kty`, `x`), in lexicographic order,
/// without whitespace. `None` for another `kty` or a missing or non-string member. The key
/// itself is not validated.
pub fn jwk_thumbprint(jwk: &Value) -> Option<Jkt> {
    jwk_thumbprint_of(jwk.as_object()?)
}

/// The thumbprint of a proof's header `jwk`, WITHOUT verifying the proof (for the first
/// use, which the IdP verifies). `None` when the proof or its `jwk` cannot be read.
pub fn peek_proof_thumbprint(proof: &str) -> Option<Jkt> {
    let jws = parse_jws(proof).ok()?;
    jwk_thumbprint_of(jws.header.get("jwk")?.as_object()?)
}

/// Normalise an `htu` or request URL for comparison (RFC 9449 §4.3, RFC 3986 §6.2.2 and
/// §6.2.3): drop the query and fragment; lowercase scheme and host; make the port explicit
/// (80 for http, 443 for https); an empty path becomes `/`; percent-encoded unreserved
/// characters are decoded and other escapes uppercased; dot segments are removed. The
/// result is `scheme://host:port/path`. `None` unless it is an absolute http(s) URL without
/// user information.
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split('#').next().unwrap_or_default();
    let url = url.split('?').next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, after) = authority.split_at(close + 1);
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = |b: u8| b.is_ascii_graphic() && !b"[]:/?#@".contains(&b);
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    let inner = if bracketed {
        &host[1..host.len() - 1]
    } else {
        host
    };
    if inner.is_empty()
        || !inner
            .bytes()
            .all(|b| valid_host(b) || (bracketed && b == b':'))
    {
        return None;
    }
    let port: u16 = match port {
        None | Some("") => default_port,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => p.parse().ok()?,
        Some(_) => return None,
    };
    let path = normalize_percent(if path.is_empty() { "/" } else { path })?;
    let path = remove_dot_segments(&path);
    Some(format!(
        "{scheme}://{}:{port}{path}",
        host.to_ascii_lowercase()
    ))
}

/// Decode escapes of unreserved characters, uppercase the others; `None` on a broken escape.
fn normalize_percent(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3)?;
        let text = std::str::from_utf8(hex).ok()?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let value = u8::from_str_radix(text, 16).ok()?;
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(value);
        } else {
            out.push(b'%');
            out.extend(text.to_ascii_uppercase().bytes());
        }
        i += 3;
    }
    String::from_utf8(out).ok()
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." | ".." => {
                if segment == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn jwk_thumbprint_of(jwk: &Map<String, Value>) -> Option<Jkt> {
    let members: &[&str] = match jwk.get("kty")?.as_str()? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = jwk.get(*name)?.as_str()?;
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&serde_json::to_string(name).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).ok()?);
    }
    canonical.push('}');
    Some(Jkt(Sha256::digest(canonical.as_bytes()).into()))
}

// ---- JWS plumbing shared with `assertion` ----

/// A compact JWS, split and decoded but not verified.
pub(crate) struct Jws<'a> {
    /// The JOSE header.
    pub(crate) header: Map<String, Value>,
    /// The payload, as a JSON object.
    pub(crate) claims: Map<String, Value>,
    /// `header.payload`, as signed.
    signing_input: &'a str,
    /// The base64url signature.
    signature: &'a str,
}

impl Jws<'_> {
    /// Whether the signature verifies as HS256/384/512 with this secret (`false` for any
    /// other `alg`).
    pub(crate) fn verify_hmac(&self, secret: &DecodingKey, alg: Algorithm) -> bool {
        matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
            && jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                secret,
                alg,
            )
            .unwrap_or(false)
    }
}

/// Why a compact JWS could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwsError {
    TooLarge,
    Malformed,
}

/// Split and decode a compact JWS (three base64url parts, JSON object header and payload,
/// no duplicated top-level member, non-empty signature).
pub(crate) fn parse_jws(token: &str) -> Result<Jws<'_>, JwsError> {
    if token.len() > MAX_JWS_LEN {
        return Err(JwsError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    if signature.is_empty() {
        return Err(JwsError::Malformed);
    }
    let decode = |part: &str| -> Result<Map<String, Value>, JwsError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwsError::Malformed)?;
        serde_json::from_slice::<UniqueObject>(&bytes)
            .map(|o| o.0)
            .map_err(|_| JwsError::Malformed)
    };
    Ok(Jws {
        header: decode(header)?,
        claims: decode(payload)?,
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature,
    })
}

/// A JSON object whose members are all distinct (a duplicated `alg` or `iss` could be read
/// one way here and another at the IdP).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some((name, value)) = access.next_entry::<String, Value>()? {
                    if map.insert(name, value).is_some() {
                        return Err(A::Error::custom("duplicate member"));
                    }
                }
                Ok(UniqueObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// The asymmetric algorithms accepted for proofs and private_key_jwt.
pub(crate) fn asymmetric_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Members that only private or symmetric JWKs have (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The key type and curve of a public JWK; each admits its own algorithms only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyFamily {
    fn admits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyFamily::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::P256 => alg == ES256,
            KeyFamily::P384 => alg == ES384,
            KeyFamily::Ed25519 => alg == EdDSA,
        }
    }
}

/// A verified-usable public JWK.
#[derive(Clone)]
pub(crate) struct PublicJwk {
    family: KeyFamily,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl PublicJwk {
    /// Whether a JWS with this `alg` may be verified with this key.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        self.family.admits(alg) && self.alg.is_none_or(|own| own == alg)
    }

    /// Whether the JWS's signature verifies with this key under `alg` (never panics: a
    /// family mismatch is `false` before the key is touched).
    pub(crate) fn verify(&self, jws: &Jws<'_>, alg: Algorithm) -> bool {
        self.allows(alg)
            && jsonwebtoken::crypto::verify(
                jws.signature,
                jws.signing_input.as_bytes(),
                &self.key,
                alg,
            )
            .unwrap_or(false)
    }
}

/// Why a JWK cannot serve as a public verification key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwkError {
    /// It has private or symmetric members.
    Private,
    /// A `kty`, curve or `alg` not supported here.
    Unsupported,
    /// A supported type with missing or broken members.
    Malformed,
}

/// Read a public JWK: RSA (2048 to 8192 bits), EC P-256 or P-384, OKP Ed25519.
pub(crate) fn public_jwk(jwk: &Map<String, Value>) -> Result<PublicJwk, JwkError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(JwkError::Private);
    }
    let member = |name: &str| -> Result<Vec<u8>, JwkError> {
        let text = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or(JwkError::Malformed)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| JwkError::Malformed)
    };
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or(JwkError::Malformed)?;
    let (family, key) = match kty {
        "RSA" => {
            let n = member("n")?;
            let e = member("e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if !(256..=1024).contains(&significant) || e.is_empty() || e.len() > 8 {
                return Err(JwkError::Malformed);
            }
            // Leading zero octets (which some JWKs carry) are dropped: ring refuses them.
            let n = &n[n.len() - significant..];
            (KeyFamily::Rsa, DecodingKey::from_rsa_raw_components(n, &e))
        }
        "EC" => {
            let (family, len) = match jwk.get("crv").and_then(Value::as_str) {
                Some("P-256") => (KeyFamily::P256, 32),
                Some("P-384") => (KeyFamily::P384, 48),
                Some(_) => return Err(JwkError::Unsupported),
                None => return Err(JwkError::Malformed),
            };
            let x = member("x")?;
            let y = member("y")?;
            if x.len() != len || y.len() != len {
                return Err(JwkError::Malformed);
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (family, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            match jwk.get("crv").and_then(Value::as_str) {
                Some("Ed25519") => {}
                Some(_) => return Err(JwkError::Unsupported),
                None => return Err(JwkError::Malformed),
            }
            let x = member("x")?;
            if x.len() != 32 {
                return Err(JwkError::Malformed);
            }
            (KeyFamily::Ed25519, DecodingKey::from_ed_der(&x))
        }
        _ => return Err(JwkError::Unsupported),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => {
            let alg = asymmetric_alg(name).ok_or(JwkError::Unsupported)?;
            if !family.admits(alg) {
                return Err(JwkError::Malformed);
            }
            Some(alg)
        }
        Some(_) => return Err(JwkError::Malformed),
    };
    Ok(PublicJwk { family, alg, key })
}

/// A NumericDate (seconds, possibly fractional) in milliseconds; `None` unless a finite
/// non-negative number. Saturates far in the future.
pub(crate) fn numeric_date_ms(value: &Value) -> Option<u64> {
    if let Some(secs) = value.as_u64() {
        return Some(secs.saturating_mul(1000));
    }
    let secs = value.as_f64()?;
    // `as` saturates for large finite floats.
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use ring::rand::SystemRandom;
    use ring::signature::{self as rs, KeyPair};
    use serde_json::json;

    pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key for tests and its public JWK.
    pub(crate) struct TestKey {
        pub(crate) alg: Algorithm,
        pub(crate) encoding: EncodingKey,
        pub(crate) jwk: Value,
    }

    impl TestKey {
        pub(crate) fn es256() -> Self {
            Self::ec(
                &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
                Algorithm::ES256,
                "P-256",
            )
        }

        pub(crate) fn es384() -> Self {
            Self::ec(
                &rs::ECDSA_P384_SHA384_FIXED_SIGNING,
                Algorithm::ES384,
                "P-384",
            )
        }

        fn ec(alg: &'static rs::EcdsaSigningAlgorithm, jwa: Algorithm, crv: &str) -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = rs::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            let pair = rs::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
            let point = pair.public_key().as_ref();
            let len = (point.len() - 1) / 2;
            TestKey {
                alg: jwa,
                encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
                jwk: json!({
                    "kty": "EC", "crv": crv,
                    "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..]),
                }),
            }
        }

        pub(crate) fn ed25519() -> Self {
            let pkcs8 = rs::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let pair = rs::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            TestKey {
                alg: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
            }
        }

        /// The fixed 2048-bit test key of jsonwebtoken's own test suite (PKCS#1 DER); test
        /// material only, published with that crate.
        pub(crate) fn rs256() -> Self {
            let der = base64::engine::general_purpose::STANDARD
                .decode(TEST_RSA_PKCS1_DER_B64)
                .unwrap();
            let pair = rs::RsaKeyPair::from_der(&der).unwrap();
            let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
            TestKey {
                alg: Algorithm::RS256,
                encoding: EncodingKey::from_rsa_der(&der),
                jwk: json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)}),
            }
        }

        /// Sign `header` (with `alg` added unless it names one) and `claims` as a compact JWS.
        pub(crate) fn sign(&self, header: Value, claims: Value) -> String {
            let mut header = header;
            let alg = match header.get("alg").and_then(Value::as_str) {
                Some(name) => asymmetric_alg(name).unwrap_or(self.alg),
                None => {
                    header["alg"] = json!(format!("{:?}", self.alg));
                    self.alg
                }
            };
            // A header alg the key cannot sign with (ES384 on P-256) is signed with the key's own.
            try_sign_with(&self.encoding, alg, &header, &claims)
                .unwrap_or_else(|| sign_with(&self.encoding, self.alg, &header, &claims))
        }
    }

    /// A compact JWS over exactly these header and claims, signed with `key` under `alg`.
    pub(crate) fn sign_with(
        key: &EncodingKey,
        alg: Algorithm,
        header: &Value,
        claims: &Value,
    ) -> String {
        try_sign_with(key, alg, header, claims).unwrap()
    }

    fn try_sign_with(
        key: &EncodingKey,
        alg: Algorithm,
        header: &Value,
        claims: &Value,
    ) -> Option<String> {
        let input = format!(
            "{}.{}",
            b64(serde_json::to_vec(header).unwrap()),
            b64(serde_json::to_vec(claims).unwrap())
        );
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).ok()?;
        Some(format!("{input}.{signature}"))
    }

    pub(crate) const TEST_RSA_PKCS1_DER_B64: &str = concat!(
        "MIIEpAIBAAKCAQEAyRE6rHuNR0QbHO3H3Kt2pOKGVhQqGZXInOduQNxXzuKlvQTLUTv4l4sggh5/CYYi/cvI+SXV",
        "T9kPWSKXxJXBXd/4LkvcPuUakBoAkfh+eiFVMh2VrUyWyj3MFl0HTVF9KwRXLAcwkREiS3npThHRyIxuy0ZMeZfx",
        "VL5arMhw1SRELB8HoGfG/AtH89BIE9jDBHZ9dLelK9a184zAf8LwoPLxvJb3Il5nncqPcSfKDDodMFBIMc4lQzDK",
        "L5gvmiXLXB1AGLm8KBjfE8s3L5xqi+yUod+j8MtvIj812dkS4QMiRVN/by2h3ZY8LYVGrqZXZTcgn2ujn8uKjXLZ",
        "VD5TdQIDAQABAoIBAHREk0I0O9DvECKdWUpAmF3mY7oY9PNQiu44Yaf+AoSuyRpRUGTMIgc3u3eivOE8ALX0BmYU",
        "O5JtuRNZDpvt4SAwqCnVUinIf6C+eH/wSurCpapSM0BAHp4aOA7igptyOMgMPYBHNA1e9A7jE0dCxKWMl3DSWNyj",
        "QTk4zeRGEAEfbNjHrq6YCtjHSZSLmWiG80hnfnYos9hOr5JnLnyS7ZmFE/5P3XVrxLc/tQ5zum0R4cbrgzHiQP5R",
        "gfxGJaEi7XcgherCCOgurJSSbYH29Gz8u5fFbS+Yg8s+OiCss3cs1rSgJ9/eHZuzGEdUZVARH6hVMjSuwvqVTFaE",
        "8AgtleECgYEA+uLMn4kNqHlJS2A5uAnCkj90ZxEtNm3E8hAxUrhssktY5XSOAPBlxyf5RuRGIImGtUVIr4HuJSa5",
        "TX48n3Vdt9MYCprO/iYl6moNRSPt5qowIIOJmIjY2mqPDfDt/zw+fcDD3lmCJrFlzcnh0uea1CohxEbQnL3cypeL",
        "t+WbU6kCgYEAzSp19m1ajieFkqgoB0YTpt/OroDx38vvI5unInJlEeOjQ+oIAQdN2wpxBvTrRorMU6P07mFUbt1j",
        "+Co6CbNiw+X8HcCaqYLR5clbJOOWNR36PuzOpQLkfK8woupBxzW9B8gZmY8rB1mbJ+/WTPrEJy6YGmIEBkWylQ2V",
        "pW8O4O0CgYEApdbvvfFBlwD9YxbrcGz7MeNCFbMz+MucqQntIKoKJ91ImPxvtc0y6e/Rhnv0oyNlaUOwJVu0yNgN",
        "G117w0g4t/+Q38mvVC5xV7/cn7x9UMFk6MkqVir3dYGEqIl/OP1grY2Tq9HtB5iyG9L8NIamQOLMyUqqMUILxdth",
        "HyFmiGkCgYEAn9+PjpjGMPHxL0gj8Q8VbzsFtou6b1deIRRA2CHmSltltR1gYVTMwXxQeUhPMmgkMqUXzs4/Wijg",
        "pthY44hK1TaZEKIuoxrS70nJ4WQLf5a9k1065fDsFZD6yGjdGxvwEmlGMZgTwqV7t1I4X0Ilqhav5hcs5apYL7gn",
        "PYPeRz0CgYALHCj/Ji8XSsDoF/MhVhnGdIs2P99NNdmo3R2Pv0CuZbDKMU559LJHUvrKS8WkuWRDuKrz1W/EQKAp",
        "FjDGpdqToZqriUFQzwy7mR3ayIiogzNtHcvbDHx8oFnGY0OFksX/ye0/XGpy2SFxYRwGU98HPYeBvAQQrVjdkzfy",
        "7BmXQQ==",
    );

    const NOW_MS: u64 = 1_700_000_000_000;
    const URL: &str = "https://idp.example.com/oauth2/token";

    fn check() -> ProofCheck<'static> {
        ProofCheck {
            method: "POST",
            url: URL,
            max_skew: Duration::from_secs(60),
        }
    }

    fn header(key: &TestKey) -> Value {
        json!({"typ": "dpop+jwt", "jwk": key.jwk})
    }

    fn claims() -> Value {
        json!({"jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URL, "iat": NOW_MS / 1000})
    }

    fn proof_with(key: &TestKey, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
        let (mut h, mut c) = (header(key), claims());
        edit(&mut h, &mut c);
        key.sign(h, c)
    }

    fn verify(proof: &str) -> Result<VerifiedProof, DpopError> {
        verify_proof(proof, &check(), NOW_MS)
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        });
        let jkt = jwk_thumbprint(&jwk).unwrap();
        assert_eq!(
            jkt.to_string(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(
            format!("{jkt:?}"),
            "Jkt(NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs)"
        );
        assert_eq!(Jkt::from_base64url(&jkt.to_base64url()), Some(jkt));
        assert_eq!(Jkt::from_base64url("AQAB"), None);
        // Member order and extra members do not matter; a missing member does.
        let reordered = json!({"e": "AQAB", "kid": "x", "n": jwk["n"], "kty": "RSA"});
        assert_eq!(jwk_thumbprint(&reordered), Some(jkt));
        assert_eq!(jwk_thumbprint(&json!({"kty": "RSA", "e": "AQAB"})), None);
        assert_eq!(jwk_thumbprint(&json!({"kty": "oct", "k": "AAAA"})), None);
        assert_eq!(jwk_thumbprint(&json!("RSA")), None);
    }

    #[test]
    fn thumbprints_of_ec_and_okp_use_their_required_members() {
        // RFC 8037 §A.3: the Ed25519 example key's thumbprint.
        let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            jwk_thumbprint(&okp).unwrap().to_string(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "use": "sig"});
        let expected: [u8; 32] =
            Sha256::digest(br#"{"crv":"P-256","kty":"EC","x":"a","y":"b"}"#).into();
        assert_eq!(jwk_thumbprint(&ec), Some(Jkt(expected)));
    }

    #[test]
    fn a_valid_proof_verifies_for_each_algorithm() {
        for key in [
            TestKey::es256(),
            TestKey::es384(),
            TestKey::ed25519(),
            TestKey::rs256(),
        ] {
            let proof = proof_with(&key, |_, c| c["nonce"] = json!("n-0S6_WzA2Mj"));
            let verified = verify(&proof).unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
            assert_eq!(verified.jkt, jwk_thumbprint(&key.jwk).unwrap());
            assert_eq!(verified.jti, "e1j3V_bKic8-LAEB");
            assert_eq!(verified.iat_ms, NOW_MS);
            assert_eq!(verified.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
            assert_eq!(peek_proof_thumbprint(&proof), Some(verified.jkt));
        }
    }

    #[test]
    fn ps256_with_an_rsa_key_verifies() {
        let key = TestKey::rs256();
        let proof = proof_with(&key, |h, _| h["alg"] = json!("PS256"));
        assert!(verify(&proof).is_ok());
    }

    #[test]
    fn an_rsa_modulus_with_a_leading_zero_octet_verifies() {
        let key = TestKey::rs256();
        let n = URL_SAFE_NO_PAD
            .decode(key.jwk["n"].as_str().unwrap())
            .unwrap();
        let padded = b64([&[0u8][..], &n].concat());
        let proof = proof_with(&key, |h, _| h["jwk"]["n"] = json!(padded));
        assert!(verify(&proof).is_ok());
    }

    #[test]
    fn nonce_is_optional_and_ath_ignored() {
        let key = TestKey::es256();
        let proof = proof_with(&key, |_, c| c["ath"] = json!("not-checked"));
        assert_eq!(verify(&proof).unwrap().nonce, None);
        let proof = proof_with(&key, |_, c| c["nonce"] = json!(7));
        assert_eq!(verify(&proof), Err(DpopError::BadNonce));
    }

    #[test]
    fn typ_must_be_dpop_jwt() {
        let key = TestKey::es256();
        assert!(verify(&proof_with(&key, |h, _| h["typ"] = json!("DPoP+JWT"))).is_ok());
        for typ in [json!("JWT"), json!("at+jwt"), json!(1)] {
            let proof = proof_with(&key, |h, _| h["typ"] = typ.clone());
            assert_eq!(verify(&proof), Err(DpopError::WrongType));
        }
        let proof = proof_with(&key, |h, _| {
            h.as_object_mut().unwrap().remove("typ");
        });
        assert_eq!(verify(&proof), Err(DpopError::WrongType));
    }

    #[test]
    fn crit_is_refused() {
        let key = TestKey::es256();
        let proof = proof_with(&key, |h, _| h["crit"] = json!(["exp"]));
        assert_eq!(verify(&proof), Err(DpopError::CriticalHeader));
    }

    #[test]
    fn alg_none_and_symmetric_algs_are_refused() {
        let key = TestKey::es256();
        // alg none: header says none, signature part stripped or kept.
        let signed = proof_with(&key, |h, _| h["alg"] = json!("none"));
        assert_eq!(verify(&signed), Err(DpopError::AlgorithmNotAllowed));
        let unsigned = format!("{}.", signed.rsplit_once('.').unwrap().0);
        assert_eq!(verify(&unsigned), Err(DpopError::Malformed));
        // HS256 keyed with the public key's bytes (the algorithm confusion attack).
        let secret = serde_json::to_vec(&key.jwk).unwrap();
        let forged = sign_with(
            &EncodingKey::from_secret(&secret),
            Algorithm::HS256,
            &json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk}),
            &claims(),
        );
        assert_eq!(verify(&forged), Err(DpopError::AlgorithmNotAllowed));
        let no_alg = sign_with(
            &key.encoding,
            key.alg,
            &json!({"typ": "dpop+jwt", "jwk": key.jwk}),
            &claims(),
        );
        assert_eq!(verify(&no_alg), Err(DpopError::AlgorithmNotAllowed));
    }

    #[test]
    fn alg_must_fit_the_jwk() {
        let p256 = TestKey::es256();
        // ES384 header over a P-256 key.
        let proof = proof_with(&p256, |h, _| h["alg"] = json!("ES384"));
        assert_eq!(verify(&proof), Err(DpopError::BadJwk));
        // RS256 header over an EC key.
        let proof = proof_with(&p256, |h, _| h["alg"] = json!("RS256"));
        assert_eq!(verify(&proof), Err(DpopError::BadJwk));
        // The JWK's own alg must agree.
        let proof = proof_with(&p256, |h, _| h["jwk"]["alg"] = json!("ES256"));
        assert!(verify(&proof).is_ok());
        let rsa = TestKey::rs256();
        let proof = proof_with(&rsa, |h, _| h["jwk"]["alg"] = json!("PS256"));
        assert_eq!(verify(&proof), Err(DpopError::BadJwk));
    }

    #[test]
    fn jwk_is_required_and_must_be_public() {
        let key = TestKey::es256();
        let proof = proof_with(&key, |h, _| {
            h.as_object_mut().unwrap().remove("jwk");
        });
        assert_eq!(verify(&proof), Err(DpopError::MissingJwk));
        for member in PRIVATE_MEMBERS {
            let proof = proof_with(&key, |h, _| h["jwk"][member] = json!("AAAA"));
            assert_eq!(verify(&proof), Err(DpopError::PrivateKey), "{member}");
        }
        let proof = proof_with(&key, |h, _| {
            h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})
        });
        assert_eq!(verify(&proof), Err(DpopError::PrivateKey));
    }

    #[test]
    fn broken_or_unsupported_jwks_are_refused() {
        let key = TestKey::es256();
        for jwk in [
            json!({"kty": "EC", "crv": "P-521", "x": "AAAA", "y": "AAAA"}),
            json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
            json!({"kty": "EC", "crv": "P-256", "x": key.jwk["x"]}),
            json!({"kty": "OKP", "crv": "Ed448", "x": "AAAA"}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "XYZ"}),
            json!({"crv": "P-256", "x": key.jwk["x"], "y": key.jwk["y"]}),
            json!("not an object"),
        ] {
            let proof = proof_with(&key, |h, _| h["jwk"] = jwk.clone());
            let got = verify(&proof);
            assert!(
                got == Err(DpopError::BadJwk) || got == Err(DpopError::MissingJwk),
                "{jwk}: {got:?}"
            );
        }
    }

    #[test]
    fn signature_must_verify_with_the_embedded_key() {
        let signer = TestKey::es256();
        let other = TestKey::es256();
        // Signed by `signer` but carrying `other`'s public key.
        let proof = proof_with(&signer, |h, _| h["jwk"] = other.jwk.clone());
        assert_eq!(verify(&proof), Err(DpopError::BadSignature));
        // A tampered payload.
        let good = proof_with(&signer, |_, _| {});
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["htm"] = json!("GET");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(verify(&tampered), Err(DpopError::BadSignature));
        let ed = TestKey::ed25519();
        let proof = proof_with(&ed, |h, _| h["jwk"] = TestKey::ed25519().jwk);
        assert_eq!(verify(&proof), Err(DpopError::BadSignature));
    }

    #[test]
    fn two_keys_have_different_thumbprints() {
        let (a, b) = (TestKey::es256(), TestKey::es256());
        let ja = verify(&proof_with(&a, |_, _| {})).unwrap().jkt;
        let jb = verify(&proof_with(&b, |_, _| {})).unwrap().jkt;
        assert_ne!(ja, jb);
        assert_eq!(peek_proof_thumbprint(&proof_with(&b, |_, _| {})), Some(jb));
    }

    #[test]
    fn jti_is_required_and_bounded() {
        let key = TestKey::es256();
        for jti in [Value::Null, json!(""), json!(12)] {
            let proof = proof_with(&key, |_, c| c["jti"] = jti.clone());
            assert_eq!(verify(&proof), Err(DpopError::MissingJti));
        }
        let proof = proof_with(&key, |_, c| {
            c.as_object_mut().unwrap().remove("jti");
        });
        assert_eq!(verify(&proof), Err(DpopError::MissingJti));
        let proof = proof_with(&key, |_, c| c["jti"] = json!("j".repeat(MAX_JTI_LEN)));
        assert!(verify(&proof).is_ok());
        let proof = proof_with(&key, |_, c| c["jti"] = json!("j".repeat(MAX_JTI_LEN + 1)));
        assert_eq!(verify(&proof), Err(DpopError::JtiTooLong));
    }

    #[test]
    fn htm_must_match_exactly() {
        let key = TestKey::es256();
        for htm in [json!("GET"), json!("post"), json!(null)] {
            let proof = proof_with(&key, |_, c| c["htm"] = htm.clone());
            assert_eq!(verify(&proof), Err(DpopError::WrongMethod), "{htm}");
        }
    }

    #[test]
    fn htu_must_match_after_normalisation() {
        let key = TestKey::es256();
        for htu in [
            "https://idp.example.com/oauth2/token",
            "HTTPS://IDP.Example.COM/oauth2/token",
            "https://idp.example.com:443/oauth2/token",
            "https://idp.example.com/oauth2/./token",
            "https://idp.example.com/oauth2/x/../token",
            "https://idp.example.com/oauth2/%74oken",
            // Query and fragment are ignored (RFC 9449 §4.3 step 9).
            "https://idp.example.com/oauth2/token?foo=bar",
            "https://idp.example.com/oauth2/token#frag",
        ] {
            let proof = proof_with(&key, |_, c| c["htu"] = json!(htu));
            assert!(verify(&proof).is_ok(), "{htu}");
        }
        for htu in [
            json!("http://idp.example.com/oauth2/token"),
            json!("https://idp.example.com:8443/oauth2/token"),
            json!("https://other.example.com/oauth2/token"),
            json!("https://idp.example.com/oauth2/Token"),
            json!("https://idp.example.com/oauth2/token/"),
            json!("https://idp.example.com/oauth2/revoke?x=/oauth2/token"),
            json!("https://user@idp.example.com/oauth2/token"),
            json!("/oauth2/token"),
            json!("https://idp.example.com/oauth2/%zztoken"),
            json!(null),
            json!(["https://idp.example.com/oauth2/token"]),
        ] {
            let proof = proof_with(&key, |_, c| c["htu"] = htu.clone());
            assert_eq!(verify(&proof), Err(DpopError::WrongUrl), "{htu}");
        }
        let bad = ProofCheck {
            url: "idp.example.com/token",
            ..check()
        };
        let proof = proof_with(&key, |_, _| {});
        assert_eq!(
            verify_proof(&proof, &bad, NOW_MS),
            Err(DpopError::ExpectedUrlInvalid)
        );
        // The expected URL is normalised too (a query on the request is dropped).
        let with_query = ProofCheck {
            url: "https://IDP.example.com:443/oauth2/token?a=b",
            ..check()
        };
        assert!(verify_proof(&proof, &with_query, NOW_MS).is_ok());
    }

    #[test]
    fn normalize_htu_cases() {
        let n = |u: &str| normalize_htu(u);
        assert_eq!(
            n("http://a.example").as_deref(),
            Some("http://a.example:80/")
        );
        assert_eq!(
            n("http://a.example:").as_deref(),
            Some("http://a.example:80/")
        );
        assert_eq!(
            n("https://A.example:443").as_deref(),
            Some("https://a.example:443/")
        );
        assert_eq!(
            n("http://a.example:443/").as_deref(),
            Some("http://a.example:443/")
        );
        assert_eq!(
            n("https://[::1]:8443/t").as_deref(),
            Some("https://[::1]:8443/t")
        );
        assert_eq!(n("https://[::1]/t").as_deref(), Some("https://[::1]:443/t"));
        assert_eq!(
            n("https://h/a/b/../../c").as_deref(),
            Some("https://h:443/c")
        );
        assert_eq!(n("https://h/a/..").as_deref(), Some("https://h:443/"));
        assert_eq!(n("https://h/%2f%7E").as_deref(), Some("https://h:443/%2F~"));
        for bad in [
            "ftp://h/",
            "https:///t",
            "https://h:99999/",
            "https://h:8x/",
            "https://[::1/t",
            "https://[::1]x/t",
            "https://a:b:c/",
            "https://h h/",
            "https://h/%4",
            "h/t",
            "",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn iat_must_be_within_the_skew() {
        let key = TestKey::es256();
        let secs = NOW_MS / 1000;
        for iat in [json!(secs - 60), json!(secs + 60), json!(secs as f64 + 0.5)] {
            let proof = proof_with(&key, |_, c| c["iat"] = iat.clone());
            assert!(verify(&proof).is_ok(), "{iat}");
        }
        for iat in [json!(secs - 61), json!(secs + 61), json!(0)] {
            let proof = proof_with(&key, |_, c| c["iat"] = iat.clone());
            assert_eq!(verify(&proof), Err(DpopError::IssuedAtOutOfRange), "{iat}");
        }
        for iat in [json!(null), json!("1700000000"), json!(-1)] {
            let proof = proof_with(&key, |_, c| c["iat"] = iat.clone());
            assert_eq!(verify(&proof), Err(DpopError::MissingIssuedAt), "{iat}");
        }
    }

    #[test]
    fn malformed_proofs_are_refused_without_echoing_them() {
        let key = TestKey::es256();
        let good = proof_with(&key, |_, _| {});
        assert_eq!(verify("a.b"), Err(DpopError::Malformed));
        assert_eq!(verify(&format!("{good}.x")), Err(DpopError::Malformed));
        assert_eq!(verify("!!.!!.!!"), Err(DpopError::Malformed));
        let array = format!("{}.{}.sig", b64("[]"), b64("{}"));
        assert_eq!(verify(&array), Err(DpopError::Malformed));
        let duplicated = format!(
            "{}.{}.sig",
            b64(r#"{"typ":"dpop+jwt","alg":"ES256","alg":"HS256"}"#),
            b64("{}")
        );
        assert_eq!(verify(&duplicated), Err(DpopError::Malformed));
        assert_eq!(peek_proof_thumbprint(&duplicated), None);
        assert_eq!(
            verify(&"a".repeat(MAX_JWS_LEN + 1)),
            Err(DpopError::TooLarge)
        );
        // Error texts are fixed.
        let err = verify(&good.replace('.', "")).unwrap_err();
        assert!(!err.to_string().contains(&good[..20]));
        assert!(!format!("{err:?}").contains(&good[..20]));
        assert_eq!(peek_proof_thumbprint("garbage"), None);
    }
}
