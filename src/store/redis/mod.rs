//! The shared store: every replica keeps the state of each token (in flight, rotated, spent,
//! family revoked) in one Redis, so any number of replicas behave as one gate. Each step is
//! one Lua script over the keys of one fingerprint (one hash tag); decisions stay in the pure
//! policy, and a replay is counted only while the count is still under the cap the decision
//! relied on. Waiters on any replica learn the end of an exchange from a pub/sub message
//! (and check once a second in case it was lost). Redis holds fingerprints and sealed answers, never a token.

mod completion;
mod health;
mod journal;
mod keys;
mod ops;
mod recent;
mod record;
mod reply;
mod scripts;
mod topology;
mod waiters;

pub use keys::{KeySpace, TokenKeys};

use super::{
    AfterWait, ExchangeOutcome, Presented, Refusal, Released, Replication, StoreError, StoreHealth,
    TokenRecord, TokenStore, Waiter,
};
use crate::clock::{Clock, UnixMillis};
use crate::oauth::credentials::ClientIdentity;
use crate::policy::{Policy, Presenter, RefusalReason};
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use crate::store::RedisTopology;
use async_trait::async_trait;
use health::Health;
use recent::RecentCount;
use redis::aio::ConnectionManagerConfig;
use redis::{PushInfo, PushKind, Value};
use reply::{malformed, ABANDONED, ANSWERED_ERROR, ANSWERED_OK, TIMED_OUT, UNREACHABLE};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use topology::ack::Acknowledger;
use topology::node::NodeAccess;
use topology::pool::NodePool;
use topology::Link;
use waiters::Waiters;

/// How many times one presentation re-reads after losing a race to another replica.
const MAX_ATTEMPTS: usize = 16;
/// How long a released claim's outcome is kept for its waiters (woken within milliseconds;
/// one that comes later presents again, as any retry may).
const RELEASED_TTL: Duration = Duration::from_secs(5);
/// The shortest pause of a waiter between checks when no message arrives.
const MIN_RECHECK: Duration = Duration::from_millis(5);
/// The longest pause of a waiter between checks, however long its claim still lives.
const MAX_RECHECK: Duration = Duration::from_secs(1);
/// How long after a followed failover presentations get `503` (`StoreError`): every gate
/// replica writes back the rotations the new primary lost within this time of its own
/// switch, and gates hear of a failover within about a second of each other.
const FAILOVER_FENCE: Duration = Duration::from_millis(1500);
/// How often a waiter checks when its cluster subscription was not confirmed.
const UNHEARD_RECHECK: Duration = Duration::from_millis(50);

/// How a release is written: its kind and its sealed answer (empty for none).
fn released_kind(released: &Released) -> (&'static str, &[u8]) {
    match released {
        Released::Answered {
            answer,
            success: true,
        } => (ANSWERED_OK, answer.as_bytes()),
        Released::Answered {
            answer,
            success: false,
        } => (ANSWERED_ERROR, answer.as_bytes()),
        Released::Unreachable => (UNREACHABLE, &[][..]),
        Released::TimedOut => (TIMED_OUT, &[][..]),
    }
}

/// How to reach Redis and how long things live there.
#[derive(Clone)]
pub struct RedisStoreConfig {
    /// One server, Sentinel or Cluster.
    pub topology: RedisTopology,
    /// TLS to Sentinels and cluster nodes (a single server's URL scheme says it).
    pub tls: bool,
    /// Replicas that must acknowledge a rotation (0: none is awaited).
    pub wait_replicas: u32,
    /// How long a rotation waits for them.
    pub wait_timeout: Duration,
    /// The ACL user.
    pub username: Option<String>,
    /// The password (read from `store.password_file`).
    pub password: Option<String>,
    /// PEM roots for `rediss://` instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Prepended to every key and channel.
    pub key_prefix: String,
    /// The bound on one store operation.
    pub timeout: Duration,
    /// How long tombstones, family links and revocation marks live.
    pub tombstone_ttl: Duration,
    /// How long a claim lives if its replica never completes it (the exchange timeout
    /// plus a margin).
    pub claim_ttl: Duration,
    /// The most exchanges this replica runs at once.
    pub max_in_flight: usize,
}

impl std::fmt::Debug for RedisStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// How commands and wake-ups reach the store (single server, Sentinel, Cluster).
    link: Link,
    /// Replication acknowledgements of rotations (`wait_replicas` above 0).
    ack: Option<Acknowledger>,
    /// This replica's recent rotations, restored on a new primary after a failover.
    journal: journal::Journal,
    /// Rotations restored on a new primary since start.
    restored: std::sync::atomic::AtomicU64,
    /// Ends of exchanges written again after a failed write.
    late_ends: completion::LateEnds,
    /// Waits a waiter's own check ended because their message never came.
    waits_unheard: std::sync::atomic::AtomicU64,
    keys: KeySpace,
    channel: String,
    timeout: Duration,
    tombstone_ttl: Duration,
    claim_ttl: Duration,
    max_in_flight: usize,
    /// Claims this replica holds: fingerprint to claim id and when it was claimed.
    claims: Mutex<HashMap<TokenFingerprint, (u64, std::time::Instant), FingerprintHashing>>,
    waiters: Arc<Waiters>,
    health: Arc<Health>,
    /// Tombstones this replica wrote within `tombstone_ttl` (the gauge; Prometheus sums
    /// the replicas).
    written: RecentCount,
    clock: Arc<dyn Clock>,
}

/// The store shared by every replica, in Redis.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("channel", &self.inner.channel)
            .field("claims", &self.inner.claims().len())
            .field("waiting", &self.inner.waiters.waited_for())
            .finish()
    }
}

/// Why the Redis store could not be built.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct RedisConfigError(String);

fn milliseconds(duration: Duration) -> u64 {
    (duration.as_millis().min(u64::MAX as u128) as u64).max(1)
}

impl RedisStore {
    /// A store on the Redis at `config.url`. Connects lazily: the gate starts while Redis
    /// is down, and every operation reconnects as needed. Must run inside a Tokio runtime,
    /// which then drives the connection.
    pub fn connect(
        config: &RedisStoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisStore, RedisConfigError> {
        let bad = |e: redis::RedisError| RedisConfigError(e.to_string());
        let data = NodeAccess {
            username: config.username.clone(),
            password: config.password.clone(),
            tls: config.tls,
            ca_pem: config.ca_pem.clone(),
        };
        let sentinel_access = NodeAccess {
            username: None,
            password: match &config.topology {
                RedisTopology::Sentinel { password, .. } => password.clone(),
                _ => None,
            },
            ..data.clone()
        };
        let waiters = Arc::new(Waiters::default());
        let health = Arc::new(Health::default());
        health.quiet.store(
            matches!(config.topology, RedisTopology::Cluster { .. }),
            Ordering::Relaxed,
        );
        let keys = KeySpace::new(&config.key_prefix);
        let channel = keys.channel();
        let command_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_pipeline_buffer_size(1024);
        let link = Link::open(
            &config.topology,
            &data,
            &sentinel_access,
            command_config,
            config.timeout,
            waiters.clone(),
            &channel,
        )
        .map_err(bad)?;
        let ack = (config.wait_replicas > 0).then(|| {
            let pool = match &config.topology {
                RedisTopology::Single { url } => data
                    .client_for_url(url)
                    .map(|client| NodePool::for_single(client, config.timeout)),
                _ => Ok(NodePool::new(data.clone(), config.timeout)),
            };
            pool.map(|pool| {
                Acknowledger::new(
                    config.wait_replicas,
                    config.wait_timeout,
                    pool,
                    config.timeout,
                )
            })
        });
        let ack = ack.transpose().map_err(bad)?;
        let inner = Arc::new(Inner {
            link,
            ack,
            journal: journal::Journal::default(),
            restored: std::sync::atomic::AtomicU64::new(0),
            late_ends: completion::LateEnds::default(),
            waits_unheard: std::sync::atomic::AtomicU64::new(0),
            keys,
            channel,
            timeout: config.timeout,
            tombstone_ttl: config.tombstone_ttl,
            claim_ttl: config.claim_ttl,
            max_in_flight: config.max_in_flight,
            claims: Mutex::new(HashMap::with_hasher(FingerprintHashing)),
            waiters,
            health,
            written: RecentCount::new(config.tombstone_ttl),
            clock,
        });
        match inner.link.single_subscription() {
            Some(subscription) => {
                tokio::spawn(subscribe(inner.clone(), subscription));
            }
            None => {
                tokio::spawn(restore_after_failovers(inner.clone()));
            }
        }
        Ok(RedisStore { inner })
    }

    /// Ask Redis once whether it answers (start-up logging and tests).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.inner.link.commands();
        self.inner
            .run("ping", async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            })
            .await
            .map(|_| ())
    }
}

impl RedisStore {
    /// The server's `maxmemory-policy`, when it lets us read it (managed services may not).
    pub async fn eviction_policy(&self) -> Option<String> {
        let mut connection = self.inner.link.commands();
        let reply: HashMap<String, String> = tokio::time::timeout(
            self.inner.timeout,
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut connection),
        )
        .await
        .ok()?
        .ok()?;
        reply.get("maxmemory-policy").cloned()
    }
}

/// Subscribe to the exchange channel until Redis accepts; the connection manager
/// resubscribes by itself after every reconnection.
async fn subscribe(inner: Arc<Inner>, subscription: redis::aio::ConnectionManager) {
    let mut pause = Duration::from_millis(50);
    loop {
        let mut connection = subscription.clone();
        let channel = inner.channel.clone();
        match tokio::time::timeout(inner.timeout, connection.subscribe(channel)).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => inner.health.failed("subscribe", &error.to_string()),
            Err(_) => inner.health.failed("subscribe", "timed out"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// After every failover the link follows, write this replica's recent rotations again
/// where the new primary lacks them: at once, and again as rotations that were completing
/// on the old primary during the switch land in the journal.
async fn restore_after_failovers(inner: Arc<Inner>) {
    const POLL: Duration = Duration::from_millis(20);
    const AGAIN_AFTER: [Duration; 4] = [
        Duration::ZERO,
        Duration::from_millis(250),
        Duration::from_millis(1000),
        Duration::from_millis(3000),
    ];
    let mut seen = inner.link.failovers();
    loop {
        tokio::time::sleep(POLL).await;
        let failovers = inner.link.failovers();
        if failovers == seen {
            continue;
        }
        seen = failovers;
        let mut waited = Duration::ZERO;
        for at in AGAIN_AFTER {
            tokio::time::sleep(at.saturating_sub(waited)).await;
            waited = at;
            let restored = inner.restore_recent().await;
            if restored > 0 {
                inner
                    .restored
                    .fetch_add(restored, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    restored,
                    "after a failover, the new primary lacked recent rotations of this replica: their tombstones are written again"
                );
            }
        }
    }
}

/// Route one push from Redis: an ended exchange (a message on the exchange channel, or on
/// a token's sharded channel) wakes its waiters; a lost connection wakes everyone, since
/// messages may have been lost with it.
fn deliver(waiters: &Waiters, push: PushInfo) {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            let Some(Value::BulkString(payload)) = push.data.get(1) else {
                return;
            };
            let mut token = [0u8; 32];
            if hex::decode_to_slice(payload, &mut token).is_ok() {
                waiters.wake(&TokenFingerprint(token));
            }
        }
        PushKind::Disconnection => waiters.wake_all(),
        _ => {}
    }
}

/// What a presentation found.
enum Found {
    Rotated(TokenRecord, Option<Arc<SealedAnswer>>),
    InFlight {
        id: u64,
        slot: u32,
        claimant: Option<ClientIdentity>,
    },
    Revoked,
    Full,
    Claimed {
        link: Option<TokenFingerprint>,
        parent: Option<TokenFingerprint>,
    },
}

/// Where a waiter's exchange stands.
enum Standing {
    Ended(ExchangeOutcome),
    InFlight { pttl: i64 },
    Gone,
}

/// What a decision on a tombstone came to.
enum Settled {
    Replay(Arc<TokenRecord>),
    Refuse(Refusal),
    /// Other replicas took the last replays first, or the tombstone expired: read again.
    Retry,
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn is_spent(
        &self,
        token: &TokenFingerprint,
        _now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.inner.is_spent(token).await
    }

    async fn present(
        &self,
        token: &TokenFingerprint,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Presented, StoreError> {
        let inner = &self.inner;
        let keys = inner.keys.token(token);
        for _ in 0..MAX_ATTEMPTS {
            let claim_id = rand::random::<u64>();
            let may_claim = inner.claims().len() < inner.max_in_flight;
            match inner.find(&keys, claim_id, may_claim, who.client).await? {
                Found::Rotated(record, answer) => {
                    let held = answer.is_some();
                    match inner
                        .settle(&keys, record, held, false, who, policy, now)
                        .await?
                    {
                        Settled::Replay(record) => {
                            let answer = answer.ok_or_else(|| malformed("answer"))?;
                            return Ok(Presented::Replay { answer, record });
                        }
                        Settled::Refuse(refused) => return Ok(Presented::Refused(refused)),
                        Settled::Retry => continue,
                    }
                }
                Found::InFlight { id, slot, claimant } => {
                    let outcome = Box::pin(inner.clone().wait(*token, id));
                    return Ok(Presented::Wait(Waiter {
                        slot,
                        claimant,
                        outcome,
                    }));
                }
                Found::Revoked => {
                    return Ok(Presented::Refused(Refusal::new(
                        RefusalReason::FamilyRevoked,
                        *token,
                        None,
                    )))
                }
                Found::Full => return Err(StoreError::InFlightFull),
                Found::Claimed { .. } if inner.fenced() => {
                    // Just after a failover, another replica may still be writing back
                    // rotations the new primary lost: a token unknown now may be one of
                    // them, so it is not claimed (replays and waiters are answered).
                    let _ = inner.release(token, claim_id, ABANDONED, &[], false).await;
                    return Err(StoreError::Unavailable(
                        "a failover was just followed: the new primary is being completed".into(),
                    ));
                }
                Found::Claimed { link, parent } => {
                    let family = link.unwrap_or(*token);
                    let revoked = async {
                        match link {
                            Some(family) => inner.is_revoked(&family).await,
                            None => Ok(false),
                        }
                    };
                    // The successor's first presentation closes its parent's window, on
                    // every replica (the parent's tombstone records it).
                    let superseded = async {
                        match parent.filter(|_| policy.closes_on_successor_use()) {
                            Some(parent) => inner.supersede(&parent, now).await,
                            None => Ok(()),
                        }
                    };
                    let (revoked, superseded) = tokio::join!(revoked, superseded);
                    if !matches!(revoked, Ok(false)) || superseded.is_err() {
                        // Give the claim back before refusing (or failing): waiters that
                        // joined it present again.
                        let _ = inner.release(token, claim_id, ABANDONED, &[], false).await;
                        revoked?;
                        superseded?;
                        return Ok(Presented::Refused(Refusal::new(
                            RefusalReason::FamilyRevoked,
                            family,
                            None,
                        )));
                    }
                    inner
                        .claims()
                        .insert(*token, (claim_id, std::time::Instant::now()));
                    return Ok(Presented::Claimed { family });
                }
            }
        }
        Err(StoreError::Contended)
    }

    async fn complete(
        &self,
        token: &TokenFingerprint,
        outcome: ExchangeOutcome,
        policy: &Policy,
    ) -> Result<Replication, StoreError> {
        let inner = &self.inner;
        let (claim_id, claimed_at) = inner
            .claims()
            .remove(token)
            .unwrap_or_else(|| (0, std::time::Instant::now()));
        let grace = match &outcome {
            ExchangeOutcome::Rotated { record, .. } => {
                policy.rules_for(&record.client.client_id).grace_period
            }
            ExchangeOutcome::Released(_) => Duration::ZERO,
        };
        let first_try = std::time::Instant::now();
        let result = match inner
            .write_end(token, claim_id, &outcome, grace, None)
            .await
        {
            Ok(()) => match &outcome {
                ExchangeOutcome::Rotated { successor, .. } => {
                    Ok(inner.acknowledge(token, successor.as_ref()).await)
                }
                ExchangeOutcome::Released(_) => Ok(Replication::NotAsked),
            },
            Err(error) => {
                inner.write_end_later(*token, (claim_id, claimed_at), first_try, outcome, grace);
                Err(error)
            }
        };
        // Waiters on this replica need not wait for the message to come back.
        inner.waiters.wake(token);
        result
    }

    async fn decide_after_wait(
        &self,
        token: &TokenFingerprint,
        record: &Arc<TokenRecord>,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<AfterWait, StoreError> {
        let inner = &self.inner;
        let keys = inner.keys.token(token);
        for _ in 0..MAX_ATTEMPTS {
            let Some((current, answer_held)) = inner.tombstone(&keys).await? else {
                // Expired already: never a second exchange.
                return Ok(AfterWait::Refuse(Refusal::new(
                    RefusalReason::AfterGrace,
                    record.family,
                    Some(record.clone()),
                )));
            };
            match inner
                .settle(&keys, current, answer_held, true, who, policy, now)
                .await?
            {
                Settled::Replay(record) => return Ok(AfterWait::Replay(record)),
                Settled::Refuse(refused) => return Ok(AfterWait::Refuse(refused)),
                Settled::Retry => continue,
            }
        }
        Err(StoreError::Contended)
    }

    async fn close_window(
        &self,
        token: &TokenFingerprint,
        reason: RefusalReason,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.inner.close_window(token, reason, now).await
    }

    /// `SET NX PX` on `<prefix>{<hex key>}:once`: shared by every replica; Redis expires
    /// the key by its own clock (`now` is not used). An unreachable Redis is an error.
    async fn first_sighting(
        &self,
        key: &[u8; 32],
        ttl: Duration,
        _now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.inner.first_sighting(key, ttl).await
    }

    fn tombstone_count(&self) -> u64 {
        self.inner.written.count(self.inner.clock.now())
    }

    fn eviction_count(&self) -> u64 {
        0
    }

    fn health(&self) -> StoreHealth {
        let inner = &self.inner;
        let (moved, asked) = inner.ack.as_ref().map_or((0, 0), |ack| {
            (
                ack.moved.load(Ordering::Relaxed),
                ack.asked.load(Ordering::Relaxed),
            )
        });
        // In a cluster, one shard's failures must not hide the others' successes (nor
        // the reverse): the topology's own probe decides.
        let operations_up = !inner.health.down.load(Ordering::Relaxed) || !inner.link.one_channel();
        StoreHealth {
            available: operations_up && inner.link.whole(),
            errors: inner.health.errors.load(Ordering::Relaxed),
            failovers: inner.link.failovers(),
            redirects_moved: moved,
            redirects_ask: asked,
            topology_changes: inner.link.topology_changes(),
            restored: inner.restored.load(Ordering::Relaxed),
            ends_written_late: inner.late_ends.written.load(Ordering::Relaxed),
            ends_abandoned: inner.late_ends.abandoned.load(Ordering::Relaxed),
            waits_unheard: inner.waits_unheard.load(Ordering::Relaxed),
            shards_down: inner.link.shards_down(),
        }
    }
}
