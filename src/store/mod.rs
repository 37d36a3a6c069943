//! Where the gate keeps the state of each fingerprint (`docs/DESIGN.md`): one async trait, so
//! the embedded memory store and a shared store (Redis) are interchangeable.

mod answers;
mod memory;
mod observations;
mod once;
#[cfg(feature = "redis")]
pub mod redis;
mod tombstones;
mod topology;

pub use memory::{MemoryStore, MemoryStoreLimits};
pub use observations::{Answered, Observations, ObservedPresentation};
pub use once::MAX_ONE_TIME_KEYS;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreConfig};
pub use tombstones::Tombstones;
pub use topology::RedisTopology;

use crate::clock::UnixMillis;
use crate::oauth::credentials::ClientIdentity;
use crate::policy::{self, Decision, Policy, Presenter, RefusalReason, Rotation, WindowClose};
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::TokenFingerprint;
use async_trait::async_trait;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What the tombstone of a rotated token keeps: what later decisions and audit events need.
#[derive(Debug)]
pub struct TokenRecord {
    /// When the upstream answered the one exchange (the window starts here).
    pub first_use: UnixMillis,
    /// The client that made the exchange.
    pub client: ClientIdentity,
    /// The address the exchange came from.
    pub source: IpAddr,
    /// The subject of the id_token, when there was one.
    pub subject: Option<Box<str>>,
    /// The first token the gate saw in this chain.
    pub family: TokenFingerprint,
    /// Replays answered so far.
    replays: u32,
    /// When the token's successor was first presented (claimed), if it was.
    superseded: Option<UnixMillis>,
}

impl TokenRecord {
    /// A fresh record with no replays.
    pub fn new(
        first_use: UnixMillis,
        client: ClientIdentity,
        source: IpAddr,
        subject: Option<Box<str>>,
        family: TokenFingerprint,
    ) -> Self {
        TokenRecord {
            first_use,
            client,
            source,
            subject,
            family,
            replays: 0,
            superseded: None,
        }
    }

    /// The same record with `replays` replays answered.
    pub fn with_replays(mut self, replays: u32) -> Self {
        self.replays = replays;
        self
    }

    /// Replays answered so far.
    pub fn replays(&self) -> u32 {
        self.replays
    }

    /// The same record with the successor first presented at `at` (None: not yet).
    pub fn with_superseded(mut self, at: Option<UnixMillis>) -> Self {
        self.superseded = at;
        self
    }

    /// When the token's successor was first presented, if the store recorded it.
    pub fn superseded(&self) -> Option<UnixMillis> {
        self.superseded
    }

    /// Decide a replay with the pure policy, under the rules of the client that made the
    /// first use, with the closing of the family's windows (`closed`) when there is one.
    /// The store applies the decision (counts it) under its own lock. A waiter joined to
    /// this token's own exchange is decided on a record without `superseded`.
    pub fn decide(
        &self,
        policy: &Policy,
        answer_available: bool,
        closed: Option<WindowClose>,
        who: &Presenter<'_>,
        now: UnixMillis,
    ) -> Decision {
        let rotation = Rotation {
            first_use: self.first_use,
            client: &self.client,
            source: self.source,
            replays: self.replays,
            answer_available,
            superseded: self.superseded,
            closed,
        };
        policy::decide_replay(
            policy.rules_for(&self.client.client_id),
            &rotation,
            who,
            now,
        )
    }
}

/// How an exchange that rotated nothing ended, as its waiters must learn it.
#[derive(Debug, Clone)]
pub enum Released {
    /// The upstream answered (non-2xx, a 2xx that is no token response, or an IdP that does
    /// not rotate): the same answer, sealed.
    Answered {
        /// The answer, sealed under the presented token.
        answer: Arc<SealedAnswer>,
        /// Whether it was a token response (an IdP that does not rotate).
        success: bool,
    },
    /// Nothing reached the upstream (connection refused, reset before the request was sent).
    Unreachable,
    /// The upstream never answered within the exchange deadline; the outcome is unknown.
    TimedOut,
}

/// The end of one exchange.
#[derive(Debug, Clone)]
pub enum ExchangeOutcome {
    /// The upstream rotated the token: it is tombstoned and its answer remembered.
    Rotated {
        /// The tombstone.
        record: Arc<TokenRecord>,
        /// The answer for replays, sealed under the presented token.
        answer: Arc<SealedAnswer>,
        /// The fingerprint of the new refresh token, which joins the family.
        successor: Option<TokenFingerprint>,
    },
    /// Nothing was rotated: the claim is released, the client may retry.
    Released(Released),
}

/// What a waiter's future resolves to.
pub type WaitOutcome =
    Pin<Box<dyn Future<Output = Result<Option<ExchangeOutcome>, StoreError>> + Send>>;

/// A request that waits for an exchange under way.
pub struct Waiter {
    /// Arrival order among this exchange's waiters (1 for the first).
    pub slot: u32,
    /// Who claimed the exchange (`None` when the store does not know, e.g. a claim written
    /// by an older replica): only a presenter with the same client identity may be handed
    /// an outcome that rotated nothing (`docs/DESIGN.md`, "Waiters and owners").
    pub claimant: Option<ClientIdentity>,
    /// Resolves to the exchange's outcome; `Ok(None)` if the exchange vanished without one
    /// (present again); an error if the store failed meanwhile (the outcome is unknown).
    pub outcome: WaitOutcome,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("slot", &self.slot)
            .field("claimant", &self.claimant.as_ref().map(|c| &c.client_id))
            .finish()
    }
}

/// The store's answer to one presentation, already applied to the state.
#[derive(Debug)]
pub enum Presented {
    /// The caller owns the exchange and must call [`TokenStore::complete`].
    Claimed {
        /// The family the token belongs to.
        family: TokenFingerprint,
    },
    /// An exchange is under way: wait for it.
    Wait(Waiter),
    /// Answer with the remembered answer; the replay is counted.
    Replay {
        /// The sealed answer.
        answer: Arc<SealedAnswer>,
        /// The tombstone.
        record: Arc<TokenRecord>,
    },
    /// Refuse with `400 invalid_grant`.
    Refused(Refusal),
}

/// A refusal, with what the audit event and the family revocation need.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// The tombstone, when the token itself was seen before (not for an unseen member of a
    /// revoked family).
    pub record: Option<Arc<TokenRecord>>,
    /// The token's family.
    pub family: TokenFingerprint,
    /// This refusal revoked the family (the store has marked it).
    pub revoked_family: bool,
}

impl Refusal {
    /// A refusal that revokes nothing.
    pub fn new(
        reason: RefusalReason,
        family: TokenFingerprint,
        record: Option<Arc<TokenRecord>>,
    ) -> Refusal {
        Refusal {
            reason,
            record,
            family,
            revoked_family: false,
        }
    }

    /// The refusal of a decision the store cannot answer with a replay (the store marks the
    /// family when it says so). The policy replays only when the answer is held, so a
    /// `Replay` without one is refused `after_grace`: the gate never answers without it.
    pub fn from_decision(decision: Decision, record: &Arc<TokenRecord>) -> Refusal {
        match decision {
            Decision::Refuse {
                reason,
                revoke_family,
            } => Refusal {
                reason,
                record: Some(record.clone()),
                family: record.family,
                revoked_family: revoke_family,
            },
            _ => Refusal::new(
                RefusalReason::AfterGrace,
                record.family,
                Some(record.clone()),
            ),
        }
    }
}

/// A waiter's fate once the exchange it joined rotated the token.
#[derive(Debug)]
pub enum AfterWait {
    /// Replay the exchange's answer; the record carries the replay count, this one included.
    Replay(Arc<TokenRecord>),
    /// Refuse.
    Refuse(Refusal),
}

/// Why the store could not decide.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Too many exchanges in flight: answer 503, never start a second exchange.
    #[error("too many refresh exchanges in flight")]
    InFlightFull,
    /// Other requests kept changing this token's state: answer 503 (never expected).
    #[error("too many concurrent presentations of one token")]
    Contended,
    /// The store cannot be reached.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
}

/// The state of every fingerprint (see `docs/DESIGN.md`). Implementations apply each decision
/// atomically with the state change it implies.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Present a token: claim it if unknown, join the exchange under way, or decide a replay
    /// of a rotated token (counting it).
    /// A member of a revoked family is refused; a refusal that revokes the family marks it.
    /// Claiming the successor of a rotated token records, on the parent's tombstone, this
    /// first presentation (while some rules have `close_on_successor_use`): later replays of
    /// the parent are then refused `superseded` from `max(now, first_use +
    /// min_replay_window)` on, on every replica. Nothing else is needed from the caller.
    async fn present(
        &self,
        token: &TokenFingerprint,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Presented, StoreError>;

    /// End the exchange the caller claimed: tombstone on rotation, release otherwise, and
    /// wake every waiter with the outcome. A rotation on a replicated store is acknowledged
    /// by replicas before this returns (`[store] wait_replicas`); what came of that is the
    /// answer (a miss is no error: the IdP rotated, the client must get its token).
    async fn complete(
        &self,
        token: &TokenFingerprint,
        outcome: ExchangeOutcome,
        policy: &Policy,
    ) -> Result<Replication, StoreError>;

    /// Decide a waiter's request once the exchange it waited for rotated the token, and
    /// count it when it is replayed.
    async fn decide_after_wait(
        &self,
        token: &TokenFingerprint,
        record: &Arc<TokenRecord>,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<AfterWait, StoreError>;

    /// Whether `token` was rotated through the gate and its tombstone still lives (for the
    /// check that a spent refresh token does not travel inside another grant).
    async fn is_spent(&self, token: &TokenFingerprint, now: UnixMillis)
        -> Result<bool, StoreError>;

    /// Close the replay window of `token` and of every remembered answer of its family, at
    /// `now`, for `reason` (`RefusalReason::Revoked` after the IdP confirmed an RFC 7009
    /// revocation of `token`): every later replay of a member rotated at or before `now` is
    /// refused with `reason`, waiters included. Members never presented yet are not
    /// refused: their first use is the IdP's to judge, and a member rotated later is not
    /// affected. The family is that of the token's tombstone, or the one its predecessor's
    /// successor link names (`token` is the newest, unused refresh token); a token the
    /// store knows neither way closes nothing. The closing lives `tombstone_ttl`.
    /// On a shared store it applies to every replica.
    ///
    /// The default fails: a store that cannot close windows must not pretend it did.
    async fn close_window(
        &self,
        token: &TokenFingerprint,
        reason: RefusalReason,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let _ = (token, reason, now);
        Err(StoreError::Unavailable(
            "this store cannot close replay windows".into(),
        ))
    }

    /// Whether `key` (a one-time value, e.g. the SHA-256 of a client assertion's or DPoP
    /// proof's `jti` under the issuer) is seen for the first time within `ttl`: `true` once,
    /// then `false` until `ttl` after that first sighting. On a shared store the sighting is
    /// shared by every replica. A store that cannot tell answers `false` or an error, never
    /// a `true` it is unsure of (see each store).
    ///
    /// The default fails: a store without one-time keys must not accept a replay.
    async fn first_sighting(
        &self,
        key: &[u8; 32],
        ttl: Duration,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let _ = (key, ttl, now);
        Err(StoreError::Unavailable(
            "this store cannot keep one-time keys".into(),
        ))
    }

    /// Tombstones held now (approximate; for a shared store, those this replica wrote).
    fn tombstone_count(&self) -> u64;

    /// Tombstones evicted for capacity since start.
    fn eviction_count(&self) -> u64;

    /// Whether the store answers, and its failures so far.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }
}

/// The store's health as the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// The store answers: the last operation succeeded (an embedded store always does);
    /// with Sentinel, a primary is known; in a cluster, every shard answered the last
    /// probe.
    pub available: bool,
    /// Operations that failed since start.
    pub errors: u64,
    /// Failovers followed since start (a new primary taken).
    pub failovers: u64,
    /// `MOVED` redirects followed by the gate's own (acknowledgement) connections.
    pub redirects_moved: u64,
    /// `ASK` redirects followed by the gate's own (acknowledgement) connections.
    pub redirects_ask: u64,
    /// Cluster slot map changes seen since start.
    pub topology_changes: u64,
    /// Cluster shards that do not answer now.
    pub shards_down: u64,
    /// Recent rotations written again on a new primary that lacked them, since start.
    pub restored: u64,
    /// Ends of exchanges (rotations, releases) whose write failed and that a retry wrote.
    pub ends_written_late: u64,
    /// Ends of exchanges never written: their claims expired first (or too many were being
    /// retried at once).
    pub ends_abandoned: u64,
    /// Waits that the waiter's own periodic check ended because the exchange's message
    /// never came (lost with a failed write or a failover); one per waiter.
    pub waits_unheard: u64,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            available: true,
            errors: 0,
            failovers: 0,
            redirects_moved: 0,
            redirects_ask: 0,
            topology_changes: 0,
            shards_down: 0,
            restored: 0,
            ends_written_late: 0,
            ends_abandoned: 0,
            waits_unheard: 0,
        }
    }
}

/// What came of the replicas' acknowledgement of a rotation (`[store] wait_replicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// None was asked (no rotation, an embedded store, or `wait_replicas = 0`).
    NotAsked,
    /// At least `wait_replicas` replicas acknowledged every write of the rotation.
    Acknowledged {
        /// The fewest replicas that acknowledged one of its writes.
        replicas: u32,
    },
    /// Fewer did within `wait_timeout`, or the primary could not be asked: the answer
    /// still goes out (the IdP rotated), and the miss is counted and audited.
    Missed {
        /// `wait_replicas`.
        wanted: u32,
        /// The fewest replicas that acknowledged one of its writes.
        replicas: u32,
        /// `timeout`, `missing`, `unreachable`, `not_primary`, `error`, `redirected`,
        /// `unknown_primary` or `busy` (64 acknowledgements were under way already).
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::UnixMillis;
    use crate::policy::{Decision, RefusalReason};

    fn record() -> Arc<TokenRecord> {
        Arc::new(TokenRecord::new(
            UnixMillis(1),
            ClientIdentity {
                client_id: "k".into(),
                secret: None,
            },
            "127.0.0.1".parse().unwrap(),
            None,
            TokenFingerprint([4; 32]),
        ))
    }

    #[test]
    fn a_refusing_decision_keeps_its_reason_and_revocation() {
        let refusal = Refusal::from_decision(
            Decision::Refuse {
                reason: RefusalReason::ClientMismatch,
                revoke_family: true,
            },
            &record(),
        );
        assert_eq!(refusal.reason, RefusalReason::ClientMismatch);
        assert!(refusal.revoked_family);
        assert_eq!(refusal.family, TokenFingerprint([4; 32]));
    }

    #[test]
    fn a_replay_without_an_answer_is_refused_after_grace() {
        let refusal = Refusal::from_decision(Decision::Replay, &record());
        assert_eq!(refusal.reason, RefusalReason::AfterGrace);
        assert!(!refusal.revoked_family);
        assert!(refusal.record.is_some());
    }
}
