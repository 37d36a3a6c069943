//! A small ES256 signer for tests: compact JWS (client assertions, RFC 7523; DPoP proofs,
//! RFC 9449) and the public JWK / JWKS the gate verifies them with. Keys are generated per
//! test with ring; signing goes through jsonwebtoken's `crypto::sign`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch, now.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A random `jti` never used before.
pub fn fresh_jti() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// An ES256 (P-256) key pair.
pub struct SigningKey {
    encoding: EncodingKey,
    /// The public JWK (`kty`, `crv`, `x`, `y`), no private members.
    pub jwk: Value,
}

impl SigningKey {
    /// A fresh P-256 key.
    pub fn es256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // The uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let len = (point.len() - 1) / 2;
        SigningKey {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "x": b64(&point[1..1 + len]),
                "y": b64(&point[1 + len..]),
            }),
        }
    }

    /// A JWKS (RFC 7517) holding this key's public half, for `assertion_jwks_file`.
    pub fn jwks(&self) -> String {
        let mut jwk = self.jwk.clone();
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("ES256");
        json!({ "keys": [jwk] }).to_string()
    }

    /// A compact JWS over `header` (with `"alg": "ES256"` added) and `claims`.
    pub fn sign(&self, header: Value, claims: Value) -> String {
        let mut header = header;
        header["alg"] = json!("ES256");
        let input = format!(
            "{}.{}",
            b64(serde_json::to_vec(&header).unwrap()),
            b64(serde_json::to_vec(&claims).unwrap())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, Algorithm::ES256).unwrap();
        format!("{input}.{signature}")
    }

    /// A fresh `private_key_jwt` assertion of `client_id` for the token endpoint `aud`
    /// (new `jti`, issued now, valid 60 s).
    pub fn assertion(&self, client_id: &str, aud: &str) -> String {
        let now = now_s();
        self.sign(
            json!({ "typ": "JWT" }),
            json!({
                "iss": client_id,
                "sub": client_id,
                "aud": aud,
                "jti": fresh_jti(),
                "iat": now,
                "exp": now + 60,
            }),
        )
    }

    /// A fresh DPoP proof for a POST to `htu` (new `jti`, issued now, this key in `jwk`).
    pub fn proof(&self, htu: &str) -> String {
        self.sign(
            json!({ "typ": "dpop+jwt", "jwk": self.jwk }),
            json!({
                "jti": fresh_jti(),
                "htm": "POST",
                "htu": htu,
                "iat": now_s(),
            }),
        )
    }
}
