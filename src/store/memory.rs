//! The embedded store: in-flight claims, tombstones (with family links) and remembered
//! answers in compact, bounded structures under one short lock; revoked families in a moka
//! cache with LRU eviction (moka's default TinyLFU admission would silently refuse new
//! entries when full).

use super::answers::Answers;
use super::once::{OneTimeKeys, MAX_ONE_TIME_KEYS};
use super::tombstones::Tombstones;
use super::{
    AfterWait, ExchangeOutcome, Presented, Refusal, Replication, StoreError, TokenRecord,
    TokenStore, Waiter,
};
use crate::clock::{Clock, UnixMillis};
use crate::oauth::credentials::ClientIdentity;
use crate::policy::{Decision, Policy, Presenter, RefusalReason, WindowClose};
use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use async_trait::async_trait;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Capacity and lifetime limits of the memory store.
#[derive(Debug, Clone)]
pub struct MemoryStoreLimits {
    /// How long a tombstone (and a family link) lives.
    pub tombstone_ttl: Duration,
    /// The most tombstones held; the oldest is evicted beyond it.
    pub max_tombstones: u64,
    /// The most exchanges in flight at once.
    pub max_in_flight: usize,
}

struct InFlight {
    outcome: watch::Sender<Option<ExchangeOutcome>>,
    waiters: u32,
    claimant: ClientIdentity,
}

struct State {
    in_flight: HashMap<TokenFingerprint, InFlight, FingerprintHashing>,
    tombstones: Tombstones,
    answers: Answers,
    once: OneTimeKeys,
}

/// Expired answers one presentation or completion sweeps at most: a wave of answers
/// expiring together is spread over the requests that follow it, a few each.
const SWEEP_PER_REQUEST: usize = 32;
/// Expired answers swept per lock acquisition by an explicit sweep.
const SWEEP_PER_BATCH: usize = 1024;

/// The embedded, per-process store.
pub struct MemoryStore {
    state: Mutex<State>,
    max_in_flight: usize,
    revoked_families: Cache<TokenFingerprint, (), FingerprintHashing>,
    /// Families whose remembered answers were closed (`close_window`), by family; bounded
    /// and expiring like the revoked families.
    closed_families: Cache<TokenFingerprint, WindowClose, FingerprintHashing>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryStore")
            .field("in_flight", &state.in_flight.len())
            .field("tombstones", &state.tombstones.len())
            .finish()
    }
}

impl MemoryStore {
    /// A store with these limits.
    pub fn new(limits: &MemoryStoreLimits, clock: Arc<dyn Clock>) -> Self {
        let revoked_families = Cache::builder()
            .max_capacity(limits.max_tombstones)
            .time_to_live(limits.tombstone_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(FingerprintHashing);
        let closed_families = Cache::builder()
            .max_capacity(limits.max_tombstones)
            .time_to_live(limits.tombstone_ttl)
            .eviction_policy(EvictionPolicy::lru())
            .build_with_hasher(FingerprintHashing);
        MemoryStore {
            state: Mutex::new(State {
                in_flight: HashMap::with_hasher(FingerprintHashing),
                tombstones: Tombstones::new(limits.max_tombstones, limits.tombstone_ttl),
                answers: Answers::new(usize::try_from(limits.max_tombstones).unwrap_or(usize::MAX)),
                once: OneTimeKeys::new(MAX_ONE_TIME_KEYS),
            }),
            max_in_flight: limits.max_in_flight,
            clock,
            revoked_families,
            closed_families,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update of plain maps that stay
        // consistent at every step: keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run housekeeping now: sweep expired answers in batches (the lock is released
    /// between them) and expire revocations.
    pub fn sweep(&self, now: UnixMillis) {
        while self.state().answers.sweep(now, SWEEP_PER_BATCH) {}
        self.revoked_families.run_pending_tasks();
        self.closed_families.run_pending_tasks();
    }

    /// Run housekeeping now, by the store's clock.
    pub fn run_maintenance(&self) {
        self.sweep(self.clock.now());
    }

    /// Answers remembered now.
    pub fn answer_count(&self) -> usize {
        self.state().answers.len()
    }

    /// One-time keys held now (`first_sighting`; expired ones not swept yet included).
    pub fn one_time_key_count(&self) -> usize {
        self.state().once.len()
    }

    /// Exchanges in flight now.
    pub fn in_flight_count(&self) -> usize {
        self.state().in_flight.len()
    }

    /// Apply a refusing decision: mark the family when the refusal revokes it.
    fn settle(&self, decision: Decision, record: &Arc<TokenRecord>) -> Refusal {
        let refusal = Refusal::from_decision(decision, record);
        if refusal.revoked_family {
            self.revoked_families.insert(refusal.family, ());
        }
        refusal
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn is_spent(
        &self,
        token: &TokenFingerprint,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        Ok(self.state().tombstones.get(token, now).is_some())
    }

    async fn present(
        &self,
        token: &TokenFingerprint,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Presented, StoreError> {
        let mut state = self.state();
        if let Some(entry) = state.in_flight.get_mut(token) {
            entry.waiters += 1;
            let mut receiver = entry.outcome.subscribe();
            let outcome = Box::pin(async move {
                Ok(receiver
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|value| value.clone()))
            });
            return Ok(Presented::Wait(Waiter {
                slot: entry.waiters,
                claimant: Some(entry.claimant.clone()),
                outcome,
            }));
        }
        state.tombstones.expire(now);
        state.answers.sweep(now, SWEEP_PER_REQUEST);
        if let Some(record) = state.tombstones.get(token, now) {
            let family = record.family;
            if self.revoked_families.contains_key(&family) {
                let record = Some(Arc::new(record));
                return Ok(Presented::Refused(Refusal::new(
                    RefusalReason::FamilyRevoked,
                    family,
                    record,
                )));
            }
            let answer = state.answers.get(token, now);
            let closed = self.closed_families.get(&family);
            let decision = record.decide(policy, answer.is_some(), closed, who, now);
            return Ok(match (decision, answer) {
                (Decision::Replay, Some(answer)) => {
                    state.tombstones.count_replay(token, now);
                    let replays = record.replays() + 1;
                    Presented::Replay {
                        answer,
                        record: Arc::new(record.with_replays(replays)),
                    }
                }
                (decision, _) => Presented::Refused(self.settle(decision, &Arc::new(record))),
            });
        }
        let family = state.tombstones.family_of(token, now).unwrap_or(*token);
        if self.revoked_families.contains_key(&family) {
            return Ok(Presented::Refused(Refusal::new(
                RefusalReason::FamilyRevoked,
                family,
                None,
            )));
        }
        if state.in_flight.len() >= self.max_in_flight {
            return Err(StoreError::InFlightFull);
        }
        // The successor's first presentation: the parent's window closes (the policy
        // decides when, by the rules in force).
        if policy.closes_on_successor_use() {
            state.tombstones.supersede(token, now);
        }
        let (sender, _) = watch::channel(None);
        state.in_flight.insert(
            *token,
            InFlight {
                claimant: who.client.clone(),
                outcome: sender,
                waiters: 0,
            },
        );
        Ok(Presented::Claimed { family })
    }

    async fn complete(
        &self,
        token: &TokenFingerprint,
        outcome: ExchangeOutcome,
        policy: &Policy,
    ) -> Result<Replication, StoreError> {
        let mut state = self.state();
        if let ExchangeOutcome::Rotated {
            record,
            answer,
            successor,
        } = &outcome
        {
            state.tombstones.insert(token, record, successor.as_ref());
            // Kept for its client's grace period as configured now (a reload may change
            // it); the policy decides the window from timestamps, this only bounds memory.
            let grace = policy.rules_for(&record.client.client_id).grace_period;
            state.answers.sweep(record.first_use, SWEEP_PER_REQUEST);
            if !grace.is_zero() {
                let deadline = record.first_use.plus(grace);
                state.answers.insert(*token, answer.clone(), deadline);
            }
        }
        if let Some(entry) = state.in_flight.remove(token) {
            entry.outcome.send_replace(Some(outcome));
        }
        Ok(Replication::NotAsked)
    }

    async fn decide_after_wait(
        &self,
        token: &TokenFingerprint,
        record: &Arc<TokenRecord>,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<AfterWait, StoreError> {
        if self.revoked_families.contains_key(&record.family) {
            return Ok(AfterWait::Refuse(Refusal::new(
                RefusalReason::FamilyRevoked,
                record.family,
                Some(record.clone()),
            )));
        }
        let mut state = self.state();
        let Some(current) = state.tombstones.get(token, now) else {
            // Evicted already (a store far too small for the load): never a second exchange.
            return Ok(AfterWait::Refuse(Refusal::new(
                RefusalReason::AfterGrace,
                record.family,
                Some(record.clone()),
            )));
        };
        // The waiter holds the answer from the outcome it was woken with, and joined the
        // exchange before any successor existed: the successor's use does not close its
        // window (a revocation does).
        let current = current.with_superseded(None);
        let closed = self.closed_families.get(&current.family);
        let decision = current.decide(policy, true, closed, who, now);
        if decision == Decision::Replay {
            state.tombstones.count_replay(token, now);
            let replays = current.replays() + 1;
            return Ok(AfterWait::Replay(Arc::new(current.with_replays(replays))));
        }
        Ok(AfterWait::Refuse(self.settle(decision, &Arc::new(current))))
    }

    async fn close_window(
        &self,
        token: &TokenFingerprint,
        reason: RefusalReason,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let family = {
            let state = self.state();
            match state.tombstones.get(token, now) {
                Some(record) => Some(record.family),
                None => state.tombstones.family_of(token, now),
            }
        };
        let Some(family) = family else {
            return Ok(());
        };
        // A later closing covers whatever an earlier one did, and more.
        let close = WindowClose { at: now, reason };
        let kept = self.closed_families.get(&family);
        if kept.is_none_or(|kept| kept.at <= now) {
            self.closed_families.insert(family, close);
        }
        Ok(())
    }

    /// Full of one-time keys that have not expired ([`MAX_ONE_TIME_KEYS`]): a new key is
    /// an error (`StoreError::Unavailable`), never a `true`, and no held key is forgotten.
    async fn first_sighting(
        &self,
        key: &[u8; 32],
        ttl: Duration,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        self.state()
            .once
            .first_sighting(key, ttl, now)
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "{MAX_ONE_TIME_KEYS} one-time keys held, none expired"
                ))
            })
    }

    fn tombstone_count(&self) -> u64 {
        self.state().tombstones.len() as u64
    }

    fn eviction_count(&self) -> u64 {
        self.state().tombstones.evictions()
    }
}
