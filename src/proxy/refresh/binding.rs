//! Binding a presentation to its client beyond the secret: a client assertion (RFC 7523)
//! counts only when the gate verifies it with the client's configured keys and its `jti`
//! is new; a DPoP proof (RFC 9449) binds the presentation to the proof's key only when the
//! gate verifies it and its `jti` is new. What is not verified binds to nothing anyone else
//! can show, so a replay or waiter without it is another client (`client_mismatch`).
//!
//! A first use is forwarded and the IdP verifies it; its record keeps the client as
//! authenticated (by assertion) and the proof's key as the header names it.

use super::RefreshHandler;
use crate::clock::UnixMillis;
use crate::oauth::assertion::{peek_assertion_jti, verify_assertion, AssertionCheck};
use crate::oauth::credentials::{ClientCredentials, ClientIdentity, DpopBinding};
use crate::oauth::dpop::{peek_proof_thumbprint, verify_proof, ProofCheck};
use crate::seal::secret::ClientSecret;
use crate::store::StoreError;
use std::time::Duration;

/// The longest lifetime accepted for a client assertion (`exp - iat`).
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// Clock skew accepted on assertion times.
const ASSERTION_LEEWAY: Duration = Duration::from_secs(30);
/// How far a DPoP proof's `iat` may be from now, either way.
pub const MAX_PROOF_SKEW: Duration = Duration::from_secs(60);

/// The identities of one presentation.
pub(super) struct Bound {
    /// What this presentation proves now: compared with the record and the claimant.
    pub(super) presented: ClientIdentity,
    /// What a first use records (the IdP verifies it).
    pub(super) recorded: ClientIdentity,
    /// One-time keys of what the gate could not verify (an assertion without the client's
    /// keys), spent only once the first use rotated: a captured request stays spent even if
    /// the keys arrive later, and junk tokens never fill the table.
    pub(super) spend_on_rotation: Vec<([u8; 32], Duration)>,
}

impl RefreshHandler {
    /// The identities of a presentation with these credentials and proof, at the token
    /// endpoint `token_url` (the assertion's audience and the proof's `htu`; unknown, nothing
    /// verifies). A store that cannot tell whether a `jti` is new is an error: the request
    /// gets a retryable 503, never a refusal that reads as theft.
    pub(super) async fn bind(
        &self,
        credentials: &ClientCredentials,
        dpop: Option<&ClientSecret>,
        token_url: Option<&str>,
    ) -> Result<Bound, StoreError> {
        let now = self.clock.now();
        let mut spend_on_rotation = Vec::new();
        let assertion_verified = match (&credentials.assertion, token_url) {
            (Some(jwt), Some(token_url)) => {
                let jwt = String::from_utf8_lossy(jwt.expose());
                let verified = self
                    .assertion_verified(&credentials.client_id, &jwt, token_url, now)
                    .await?;
                if !verified {
                    spend_on_rotation.extend(self.unverified_key(
                        &credentials.client_id,
                        &jwt,
                        now,
                    ));
                }
                verified
            }
            (Some(jwt), None) => {
                let jwt = String::from_utf8_lossy(jwt.expose());
                spend_on_rotation.extend(self.unverified_key(&credentials.client_id, &jwt, now));
                false
            }
            _ => false,
        };
        let (presented_dpop, recorded_dpop) = match dpop {
            None => (DpopBinding::Absent, DpopBinding::Absent),
            Some(proof) => {
                let proof = String::from_utf8_lossy(proof.expose());
                let proof = proof.as_ref();
                let proven = match token_url {
                    Some(token_url) => {
                        self.proof_key(&credentials.client_id, proof, token_url, now)
                            .await?
                    }
                    None => None,
                };
                let named = peek_proof_thumbprint(proof)
                    .map_or(DpopBinding::Unproven, |jkt| DpopBinding::Key(jkt.0));
                (
                    proven.map_or(DpopBinding::Unproven, DpopBinding::Key),
                    named,
                )
            }
        };
        Ok(Bound {
            presented: credentials.bound_identity(
                &self.fingerprinter,
                assertion_verified,
                presented_dpop,
            ),
            recorded: credentials.bound_identity(&self.fingerprinter, true, recorded_dpop),
            spend_on_rotation,
        })
    }

    /// The one-time key of an assertion's `jti`, read without verifying, and how long it
    /// must stay spent.
    fn unverified_key(
        &self,
        client_id: &str,
        jwt: &str,
        now: UnixMillis,
    ) -> Option<([u8; 32], Duration)> {
        let (jti, expires) = peek_assertion_jti(jwt)?;
        let ttl = Duration::from_millis(expires.saturating_sub(now.0)).min(MAX_ASSERTION_LIFETIME)
            + ASSERTION_LEEWAY;
        Some((
            self.fingerprinter
                .one_time_key("assertion", client_id, &jti),
            ttl,
        ))
    }

    /// Spend the keys a rotated first use left (their outcome does not matter: the IdP
    /// accepted the request).
    pub(super) async fn spend(&self, keys: &[([u8; 32], Duration)]) {
        for (key, ttl) in keys {
            if let Err(error) = self.store.first_sighting(key, *ttl, self.clock.now()).await {
                tracing::warn!(%error, "could not spend a first use's assertion");
            }
        }
    }

    /// Whether the assertion verifies with the client's keys and its `jti` is new. Without
    /// keys it cannot be verified (and nothing is remembered of it: its client's replays
    /// are refused anyway).
    async fn assertion_verified(
        &self,
        client_id: &str,
        jwt: &str,
        token_url: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let keys = self.client_keys.load();
        let Some(keys) = keys.get(client_id) else {
            return Ok(false);
        };
        let check = AssertionCheck {
            client_id: client_id.to_owned(),
            audiences: vec![token_url.to_owned()],
            max_lifetime: MAX_ASSERTION_LIFETIME,
            leeway: ASSERTION_LEEWAY,
        };
        match verify_assertion(jwt, &check, keys, now.0) {
            Ok(verified) => {
                let ttl = Duration::from_millis(verified.expires_ms.saturating_sub(now.0))
                    + ASSERTION_LEEWAY;
                self.first_sighting("assertion", client_id, &verified.jti, ttl, now)
                    .await
            }
            Err(error) => {
                tracing::debug!(%error, client_id, "client assertion not verified");
                Ok(false)
            }
        }
    }

    /// The thumbprint of the proof's key, when the proof verifies and its `jti` is new.
    async fn proof_key(
        &self,
        client_id: &str,
        proof: &str,
        token_url: &str,
        now: UnixMillis,
    ) -> Result<Option<[u8; 32]>, StoreError> {
        let check = ProofCheck {
            method: "POST",
            url: token_url,
            max_skew: MAX_PROOF_SKEW,
        };
        match verify_proof(proof, &check, now.0) {
            // Kept a second past the last moment the proof's `iat` is still accepted.
            Ok(verified) => Ok(self
                .first_sighting(
                    "dpop",
                    client_id,
                    &verified.jti,
                    MAX_PROOF_SKEW * 2 + Duration::from_secs(1),
                    now,
                )
                .await?
                .then_some(verified.jkt.0)),
            Err(error) => {
                tracing::debug!(%error, client_id, "DPoP proof not verified");
                Ok(None)
            }
        }
    }

    /// Whether `value` of `kind` is seen for the first time (a store that cannot tell is
    /// an error).
    async fn first_sighting(
        &self,
        kind: &str,
        client_id: &str,
        value: &str,
        ttl: Duration,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let key = self.fingerprinter.one_time_key(kind, client_id, value);
        self.store.first_sighting(&key, ttl, now).await
    }
}
