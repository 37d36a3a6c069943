//! The embedded store: in-flight claims in a bounded, sharded map; tombstones, remembered
//! answers and family links in moka caches with LRU eviction (moka's default TinyLFU
//! admission would silently refuse new tombstones when full).

use super::{ExchangeOutcome, Presented, Refusal, StoreError, TokenRecord, TokenStore, Waiter};
use crate::clock::UnixMillis;
use crate::envelope::SealedAnswer;
use crate::fingerprint::{FingerprintHashing, TokenFingerprint};
use crate::policy::{Decision, Policy, Presenter, RefusalReason};
use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

const SHARDS: usize = 64;

/// Capacity and lifetime limits of the memory store.
#[derive(Debug, Clone)]
pub struct MemoryStoreLimits {
    /// How long a tombstone (and a family link) lives.
    pub tombstone_ttl: Duration,
    /// The most tombstones held; the least recently used is evicted beyond it.
    pub max_tombstones: u64,
    /// The most exchanges in flight at once.
    pub max_in_flight: usize,
    /// The longest grace period the store must keep answers for.
    pub answer_ttl: Duration,
}

struct InFlight {
    outcome: watch::Sender<Option<ExchangeOutcome>>,
    waiters: u32,
}

/// The embedded, per-process store.
pub struct MemoryStore {
    shards: Box<[Mutex<HashMap<TokenFingerprint, InFlight, FingerprintHashing>>]>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    tombstones: Cache<TokenFingerprint, Arc<TokenRecord>, FingerprintHashing>,
    answers: Cache<TokenFingerprint, Arc<SealedAnswer>, FingerprintHashing>,
    families: Cache<TokenFingerprint, TokenFingerprint, FingerprintHashing>,
    revoked_families: Cache<TokenFingerprint, (), FingerprintHashing>,
    evictions: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("tombstones", &self.tombstones.entry_count())
            .finish()
    }
}

impl MemoryStore {
    /// A store with these limits.
    pub fn new(limits: &MemoryStoreLimits) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = evictions.clone();
        let tombstones = Cache::builder()
            .max_capacity(limits.max_tombstones)
            .time_to_live(limits.tombstone_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(FingerprintHashing);
        let answers = Cache::builder()
            .max_capacity(limits.max_tombstones)
            .time_to_live(limits.answer_ttl.max(Duration::from_millis(1)))
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(FingerprintHashing);
        let families = Cache::builder()
            .max_capacity(limits.max_tombstones)
            .time_to_live(limits.tombstone_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(FingerprintHashing);
        let revoked_families = Cache::builder()
            .max_capacity(limits.max_tombstones)
            .time_to_live(limits.tombstone_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(FingerprintHashing);
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(FingerprintHashing)))
                .collect(),
            revoked_families,
            in_flight: AtomicUsize::new(0),
            max_in_flight: limits.max_in_flight,
            tombstones,
            answers,
            families,
            evictions,
        }
    }

    fn shard(
        &self,
        token: &TokenFingerprint,
    ) -> MutexGuard<'_, HashMap<TokenFingerprint, InFlight, FingerprintHashing>> {
        let index = token.0[0] as usize % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update of a plain map entry;
        // the map itself stays consistent, so keep serving.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run pending cache maintenance now (evictions, expiry): for tests and the gauges.
    pub fn run_maintenance(&self) {
        self.tombstones.run_pending_tasks();
        self.answers.run_pending_tasks();
        self.families.run_pending_tasks();
        self.revoked_families.run_pending_tasks();
    }

    fn family_of(&self, token: &TokenFingerprint) -> TokenFingerprint {
        self.families.get(token).unwrap_or(*token)
    }

    /// Apply a replay decision: mark the family when the refusal revokes it.
    fn settle(&self, decision: Decision, record: &Arc<TokenRecord>) -> Option<Refusal> {
        let refusal = Refusal::from_decision(decision, record)?;
        if refusal.revoked_family {
            self.revoked_families.insert(refusal.family, ());
        }
        Some(refusal)
    }

    fn family_revoked(
        &self,
        family: TokenFingerprint,
        record: Option<Arc<TokenRecord>>,
    ) -> Presented {
        Presented::Refused(refusal(RefusalReason::FamilyRevoked, family, record))
    }

    /// Exchanges in flight now.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn present(
        &self,
        token: &TokenFingerprint,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Presented, StoreError> {
        let mut shard = self.shard(token);
        if let Some(entry) = shard.get_mut(token) {
            entry.waiters += 1;
            let mut receiver = entry.outcome.subscribe();
            let outcome = Box::pin(async move {
                receiver
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|value| value.clone())
            });
            return Ok(Presented::Wait(Waiter {
                slot: entry.waiters,
                outcome,
            }));
        }
        if let Some(record) = self.tombstones.get(token) {
            if self.revoked_families.contains_key(&record.family) {
                return Ok(self.family_revoked(record.family, Some(record)));
            }
            let answer = self.answers.get(token);
            let decision = record.decide_and_count(policy, answer.is_some(), who, now);
            return Ok(match (self.settle(decision, &record), answer) {
                (Some(refusal), _) => Presented::Refused(refusal),
                (None, Some(answer)) => Presented::Replay { answer, record },
                // The policy replays only when the answer is held; never answer without one.
                (None, None) => Presented::Refused(refusal(
                    RefusalReason::AfterGrace,
                    record.family,
                    Some(record),
                )),
            });
        }
        let family = self.family_of(token);
        if self.revoked_families.contains_key(&family) {
            return Ok(self.family_revoked(family, None));
        }
        if self.in_flight.load(Ordering::SeqCst) >= self.max_in_flight {
            return Err(StoreError::InFlightFull);
        }
        let (sender, _) = watch::channel(None);
        shard.insert(
            *token,
            InFlight {
                outcome: sender,
                waiters: 0,
            },
        );
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Presented::Claimed { family })
    }

    async fn complete(
        &self,
        token: &TokenFingerprint,
        outcome: ExchangeOutcome,
        policy: &Policy,
    ) -> Result<(), StoreError> {
        let mut shard = self.shard(token);
        if let ExchangeOutcome::Rotated {
            record,
            answer,
            successor,
        } = &outcome
        {
            self.tombstones.insert(*token, record.clone());
            if !policy
                .rules_for(&record.client.client_id)
                .grace_period
                .is_zero()
            {
                self.answers.insert(*token, answer.clone());
            }
            if let Some(successor) = successor {
                self.families.insert(*successor, record.family);
            }
        }
        if let Some(entry) = shard.remove(token) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            entry.outcome.send_replace(Some(outcome));
        }
        Ok(())
    }

    async fn decide_after_wait(
        &self,
        _token: &TokenFingerprint,
        record: &Arc<TokenRecord>,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Option<Refusal>, StoreError> {
        if self.revoked_families.contains_key(&record.family) {
            return Ok(Some(refusal(
                RefusalReason::FamilyRevoked,
                record.family,
                Some(record.clone()),
            )));
        }
        // The waiter holds the answer from the outcome it was woken with.
        let decision = record.decide_and_count(policy, true, who, now);
        Ok(self.settle(decision, record))
    }

    fn tombstone_count(&self) -> u64 {
        self.tombstones.run_pending_tasks();
        self.tombstones.entry_count()
    }

    fn eviction_count(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

fn refusal(
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
