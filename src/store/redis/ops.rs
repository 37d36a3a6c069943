//! The store's steps against Redis, one script each: present, wait, decide, release,
//! record a rotation. Every call is bounded by the store timeout and counted in its health.

use super::completion::Lifetimes;
use super::journal::Written;
use super::reply::{
    closing, fields, fingerprint, malformed, number, parse_claim_id, released_outcome, rotated,
    text,
};
use super::topology::ack::Acked;
use super::topology::Commands;
use super::{
    milliseconds, record, scripts, Found, Inner, Settled, Standing, TokenKeys, MAX_RECHECK,
    MIN_RECHECK, RELEASED_TTL, UNHEARD_RECHECK,
};
use crate::clock::UnixMillis;
use crate::oauth::credentials::ClientIdentity;
use crate::policy::{Decision, Policy, Presenter, RefusalReason, WindowClose};
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use crate::store::Replication;
use crate::store::{ExchangeOutcome, Refusal, StoreError, TokenRecord};
use redis::{RedisResult, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

impl Inner {
    /// The command connection of the topology (for a single server, created on first use
    /// on the caller's runtime).
    pub(super) fn connection(&self) -> Commands {
        self.link.commands()
    }

    /// The channel and publish command that announce the end of `keys`' exchange.
    fn announce<'k>(&'k self, keys: &'k TokenKeys) -> (&'k str, &'static str) {
        let channel = if self.link.one_channel() {
            self.channel.as_str()
        } else {
            keys.exchange.as_str()
        };
        (channel, self.link.publish_command())
    }

    /// Have replicas acknowledge the rotation of `token` (its tombstone, and its
    /// successor's family link, on whichever primaries took them); `NotAsked` when
    /// `wait_replicas` is 0.
    pub(super) async fn acknowledge(
        &self,
        token: &TokenFingerprint,
        successor: Option<&TokenFingerprint>,
    ) -> Replication {
        let Some(ack) = &self.ack else {
            return Replication::NotAsked;
        };
        let ttl = milliseconds(self.tombstone_ttl);
        let state = self.keys.token(token).state;
        let mut written = vec![state.clone()];
        if let Some(next) = successor {
            let link = self.keys.token(next).family;
            if !self.link.same_primary(&state, &link) {
                written.push(link);
            }
        }
        let acks = written.iter().map(|key| async move {
            match self.link.primary_of(key) {
                Some(node) => ack.acknowledge(&node, key, ttl).await,
                None => Acked::No {
                    replicas: 0,
                    reason: "unknown_primary",
                },
            }
        });
        let mut fewest = u32::MAX;
        let mut missed = None;
        for acked in futures_util::future::join_all(acks).await {
            match acked {
                Acked::Yes(replicas) => fewest = fewest.min(replicas),
                Acked::No { replicas, reason } => {
                    fewest = fewest.min(replicas);
                    missed.get_or_insert(reason);
                }
            }
        }
        match missed {
            None => Replication::Acknowledged { replicas: fewest },
            Some(reason) => Replication::Missed {
                wanted: ack.replicas,
                replicas: fewest,
                reason,
            },
        }
    }

    /// Whether a failover was followed less than `FAILOVER_FENCE` ago.
    pub(super) fn fenced(&self) -> bool {
        self.link
            .last_failover()
            .is_some_and(|at| at.elapsed() < super::FAILOVER_FENCE)
    }

    pub(super) fn claims(
        &self,
    ) -> MutexGuard<'_, HashMap<TokenFingerprint, (u64, Instant), FingerprintHashing>> {
        self.claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One Redis operation under the store timeout, with its failure counted.
    pub(super) async fn run<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.health.succeeded();
                Ok(value)
            }
            Ok(Err(error)) => {
                let message = error.to_string();
                self.health.failed(operation, &message);
                Err(StoreError::Unavailable(message))
            }
            Err(_) => {
                self.health.failed(operation, "timed out");
                Err(StoreError::Unavailable(format!("{operation} timed out")))
            }
        }
    }

    pub(super) async fn is_revoked(&self, family: &TokenFingerprint) -> Result<bool, StoreError> {
        let key = self.keys.revoked(family);
        let mut connection = self.connection();
        self.run("revoked", async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<bool>(&mut connection)
                .await
        })
        .await
    }

    /// The marks of `family`: revoked (by `revoke-family`), and the closing of its windows.
    pub(super) async fn family_marks(
        &self,
        family: &TokenFingerprint,
    ) -> Result<(bool, Option<WindowClose>), StoreError> {
        let keys = self.keys.token(family);
        let mut connection = self.connection();
        let mut invocation = scripts::FAMILY.prepare_invoke();
        invocation.key(&keys.revoked).key(&keys.closed);
        let reply: Value = self
            .run("family", async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(malformed("family"));
        };
        let revoked = parts
            .first()
            .and_then(number)
            .ok_or_else(|| malformed("family"))?
            == 1;
        Ok((revoked, parts.get(1).and_then(closing)))
    }

    /// `token` was claimed at `now` and is the successor of `parent`: the parent's
    /// tombstone records the first such presentation.
    pub(super) async fn supersede(
        &self,
        parent: &TokenFingerprint,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let state = self.keys.token(parent).state;
        let mut connection = self.connection();
        let mut invocation = scripts::SUPERSEDE.prepare_invoke();
        invocation.key(state).arg(now.0.max(1));
        self.run("supersede", async move {
            invocation.invoke_async::<()>(&mut connection).await
        })
        .await
    }

    /// Close the windows of `token`'s family (see `TokenStore::close_window`).
    pub(super) async fn close_window(
        &self,
        token: &TokenFingerprint,
        reason: RefusalReason,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let keys = self.keys.token(token);
        let mut connection = self.connection();
        let mut invocation = scripts::FAMILY_OF.prepare_invoke();
        invocation.key(&keys.state).key(&keys.family);
        let reply: Value = self
            .run("family_of", async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        let family = match reply {
            Value::Nil => return Ok(()),
            other => fingerprint(&other).ok_or_else(|| malformed("family"))?,
        };
        let closed = self.keys.token(&family).closed;
        let ttl = milliseconds(self.tombstone_ttl);
        let mut connection = self.connection();
        let mut invocation = scripts::CLOSE.prepare_invoke();
        invocation
            .key(closed)
            .arg(now.0)
            .arg(reason.label())
            .arg(ttl);
        self.run("close", async move {
            invocation.invoke_async::<()>(&mut connection).await
        })
        .await
    }

    /// `SET <once key> 1 NX PX ttl`: whether this replica set it first.
    pub(super) async fn first_sighting(
        &self,
        key: &[u8; 32],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.keys.once(key);
        let ttl = milliseconds(ttl);
        let mut connection = self.connection();
        let reply: Value = self
            .run("once", async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(match reply {
            Value::Nil => false,
            Value::Okay => true,
            Value::SimpleString(ref s) if s == "OK" => true,
            _ => return Err(malformed("once")),
        })
    }

    pub(super) async fn is_spent(&self, token: &TokenFingerprint) -> Result<bool, StoreError> {
        let key = self.keys.token(token).state;
        let mut connection = self.connection();
        self.run("spent", async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<bool>(&mut connection)
                .await
        })
        .await
    }

    pub(super) async fn revoke(&self, family: &TokenFingerprint) -> Result<(), StoreError> {
        let key = self.keys.revoked(family);
        let ttl = milliseconds(self.tombstone_ttl);
        let mut connection = self.connection();
        self.run("revoke", async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut connection)
                .await
        })
        .await
    }

    pub(super) async fn find(
        &self,
        keys: &TokenKeys,
        claim_id: u64,
        may_claim: bool,
        claimant: &ClientIdentity,
    ) -> Result<Found, StoreError> {
        let mut connection = self.connection();
        let mut invocation = scripts::PRESENT.prepare_invoke();
        invocation
            .key(&keys.state)
            .key(&keys.answer)
            .key(&keys.claim)
            .key(&keys.family)
            .key(&keys.revoked)
            .key(&keys.parent)
            .arg(claim_id)
            .arg(milliseconds(self.claim_ttl))
            .arg(if may_claim { "1" } else { "0" })
            .arg(super::record::encode_identity(claimant));
        let reply: Value = self
            .run("present", async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(malformed("present"));
        };
        let kind = parts.first().and_then(text).unwrap_or_default();
        Ok(match kind {
            b"rotated" => {
                let (record, answer) = rotated(&parts)?;
                Found::Rotated(record, answer)
            }
            b"in_flight" => {
                let id = parts
                    .get(1)
                    .and_then(parse_claim_id)
                    .ok_or_else(|| malformed("claim id"))?;
                let slot = parts.get(2).and_then(number).unwrap_or(1);
                // A claim written by an older replica names no claimant: its waiters are
                // then owners of nothing but a rotation (decided by the policy).
                let claimant = parts
                    .get(4)
                    .and_then(text)
                    .and_then(super::record::decode_identity);
                Found::InFlight {
                    id,
                    slot: u32::try_from(slot).unwrap_or(u32::MAX),
                    claimant,
                }
            }
            b"revoked" => Found::Revoked,
            b"full" => Found::Full,
            b"claimed" => Found::Claimed {
                link: parts.get(1).and_then(fingerprint),
                parent: parts.get(2).and_then(fingerprint),
            },
            _ => return Err(malformed("present")),
        })
    }

    pub(super) async fn standing(
        &self,
        keys: &TokenKeys,
        claim_id: u64,
    ) -> Result<Standing, StoreError> {
        let mut connection = self.connection();
        let mut invocation = scripts::OUTCOME.prepare_invoke();
        invocation
            .key(&keys.state)
            .key(&keys.answer)
            .key(&keys.claim)
            .key(&keys.released)
            .arg(claim_id);
        let reply: Value = self
            .run("outcome", async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(malformed("outcome"));
        };
        Ok(match parts.first().and_then(text).unwrap_or_default() {
            b"rotated" => {
                let (record, answer) = rotated(&parts)?;
                // A grace period of 0 keeps no answer: the waiter is refused anyway.
                let answer =
                    answer.unwrap_or_else(|| Arc::new(SealedAnswer::from_bytes(Vec::new())));
                Standing::Ended(ExchangeOutcome::Rotated {
                    record: Arc::new(record),
                    answer,
                    successor: None,
                })
            }
            b"released" => {
                let kind = parts.get(1).and_then(text).unwrap_or_default();
                match released_outcome(kind, parts.get(2)) {
                    Some(outcome) => Standing::Ended(outcome),
                    None => Standing::Gone,
                }
            }
            b"in_flight" => Standing::InFlight {
                pttl: parts.get(1).and_then(number).unwrap_or(0),
            },
            _ => Standing::Gone,
        })
    }

    /// Wait for the exchange `claim_id` of `token`, wherever it runs. `Ok(None)` when it
    /// ended without an outcome to share (the caller presents again).
    pub(super) async fn wait(
        self: Arc<Self>,
        token: TokenFingerprint,
        claim_id: u64,
    ) -> Result<Option<ExchangeOutcome>, StoreError> {
        let keys = self.keys.token(&token);
        let registration = self.waiters.register(token);
        // In a cluster, the token's own sharded channel, subscribed before the first check.
        let watch = self.link.watch_exchange(token, &keys.exchange).await;
        let unheard = watch.as_ref().is_some_and(|watch| !watch.confirmed);
        let mut woken_by_clock = false;
        loop {
            let notified = registration.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a message published after it is not lost.
            notified.as_mut().enable();
            let standing = match self.standing(&keys, claim_id).await {
                Ok(standing) => standing,
                // A check of its own that failed (a stalled store) does not end the wait: a
                // later one, or the message, may still bring the end before the client's
                // deadline. A check a message or a lost connection asked for does.
                Err(_) if woken_by_clock && !unheard => {
                    woken_by_clock = tokio::select! {
                        _ = &mut notified => false,
                        _ = tokio::time::sleep(MAX_RECHECK) => true,
                    };
                    continue;
                }
                Err(error) => return Err(error),
            };
            match standing {
                Standing::Ended(outcome) => {
                    if woken_by_clock && !unheard {
                        // Its message never came (lost with a failed write or a failover).
                        self.waits_unheard.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(Some(outcome));
                }
                Standing::Gone => return Ok(None),
                Standing::InFlight { pttl } => {
                    // No message by the claim's expiry means its replica died: check then.
                    // A message can be lost with a failed write or a failover (the end is
                    // then written late, or restored): check again within `MAX_RECHECK`.
                    let mut expiry =
                        Duration::from_millis(pttl.max(0) as u64).clamp(MIN_RECHECK, MAX_RECHECK);
                    if unheard {
                        // No subscription: check often rather than wait for the expiry.
                        expiry = expiry.min(UNHEARD_RECHECK);
                    }
                    woken_by_clock = tokio::select! {
                        _ = &mut notified => false,
                        _ = tokio::time::sleep(expiry) => true,
                    };
                }
            }
        }
    }

    pub(super) async fn tombstone(
        &self,
        keys: &TokenKeys,
    ) -> Result<Option<(TokenRecord, bool)>, StoreError> {
        let mut connection = self.connection();
        let mut invocation = scripts::TOMBSTONE.prepare_invoke();
        invocation.key(&keys.state).key(&keys.answer);
        let reply: Value = self
            .run("tombstone", async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        let Value::Array(parts) = reply else {
            return Err(malformed("tombstone"));
        };
        let map = parts
            .first()
            .and_then(fields)
            .ok_or_else(|| malformed("tombstone"))?;
        if map.is_empty() {
            return Ok(None);
        }
        let record = super::reply::tombstone(&map)?;
        let answer_held = parts.get(1).and_then(number) == Some(1);
        Ok(Some((record, answer_held)))
    }

    /// Decide a presentation of a rotated token and apply the decision: count a replay
    /// while the cap still allows it, mark a revoked family. A `waiter` (joined to the
    /// token's own exchange) is decided without the successor's use.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn settle(
        &self,
        keys: &TokenKeys,
        record: TokenRecord,
        answer_held: bool,
        waiter: bool,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> Result<Settled, StoreError> {
        let family = record.family;
        let (revoked, closed) = self.family_marks(&family).await?;
        if revoked {
            return Ok(Settled::Refuse(Refusal::new(
                RefusalReason::FamilyRevoked,
                family,
                Some(Arc::new(record)),
            )));
        }
        let record = if waiter {
            record.with_superseded(None)
        } else {
            record
        };
        let decision = record.decide(policy, answer_held, closed, who, now);
        if decision == Decision::Replay && answer_held {
            // The decision relied on the count being under the cap; count only if it
            // still is (another replica may have taken the last replay), else decide again.
            let cap = policy.rules_for(&record.client.client_id).max_reuses;
            let mut connection = self.connection();
            let mut invocation = scripts::COUNT_REPLAY.prepare_invoke();
            invocation.key(&keys.state).arg(cap);
            let counted: i64 = self
                .run("count_replay", async move {
                    invocation.invoke_async(&mut connection).await
                })
                .await?;
            return Ok(match u32::try_from(counted) {
                Ok(replays) => Settled::Replay(Arc::new(record.with_replays(replays))),
                Err(_) => Settled::Retry,
            });
        }
        let refused = Refusal::from_decision(decision, &Arc::new(record));
        if refused.revoked_family {
            self.revoke(&family).await?;
        }
        Ok(Settled::Refuse(refused))
    }

    pub(super) async fn release(
        &self,
        token: &TokenFingerprint,
        claim_id: u64,
        kind: &str,
        answer: &[u8],
        only_while_claimed: bool,
    ) -> Result<(), StoreError> {
        let keys = self.keys.token(token);
        let (channel, publish) = self.announce(&keys);
        let mut connection = self.connection();
        let mut invocation = scripts::RELEASED.prepare_invoke();
        invocation
            .key(&keys.claim)
            .key(&keys.released)
            .arg(claim_id)
            .arg(kind)
            .arg(answer)
            .arg(milliseconds(RELEASED_TTL.min(self.claim_ttl)))
            .arg(channel)
            .arg(token.to_hex())
            .arg(publish)
            .arg(if only_while_claimed { "1" } else { "0" });
        self.run("release", async move {
            invocation.invoke_async::<()>(&mut connection).await
        })
        .await
    }

    /// Keep a rotation in the journal, before its first write: a write that fails or is
    /// lost with its primary is exactly the one to write back after a failover (a single
    /// server has no failover).
    pub(super) fn journal_rotation(
        &self,
        token: &TokenFingerprint,
        record: &TokenRecord,
        answer: &SealedAnswer,
        successor: Option<&TokenFingerprint>,
        grace: Duration,
    ) {
        if self.link.one_server() {
            return;
        }
        self.journal.record(Written {
            token: *token,
            fields: record::encode(record),
            answer: if grace.is_zero() {
                Vec::new()
            } else {
                answer.as_bytes().to_vec()
            },
            answer_ttl: grace,
            successor: successor.map(|next| (*next, record.family)),
            at: Instant::now(),
        });
    }

    pub(super) async fn record_rotation(
        &self,
        token: &TokenFingerprint,
        claim_id: u64,
        record: &TokenRecord,
        answer: &SealedAnswer,
        successor: Option<&TokenFingerprint>,
        lifetimes: Lifetimes,
    ) -> Result<(), StoreError> {
        let keys = self.keys.token(token);
        let ttl = milliseconds(lifetimes.tombstone);
        let link = successor.map(|next| {
            let mut connection = self.connection();
            let next = self.keys.token(next);
            let mut invocation = scripts::LINK.prepare_invoke();
            invocation
                .key(&next.family)
                .key(&next.parent)
                .arg(record.family.to_hex())
                .arg(token.to_hex())
                .arg(ttl);
            async move { invocation.invoke_async::<()>(&mut connection).await }
        });
        let (channel, publish) = self.announce(&keys);
        let mut connection = self.connection();
        let mut invocation = scripts::ROTATED.prepare_invoke();
        invocation
            .key(&keys.state)
            .key(&keys.answer)
            .key(&keys.claim)
            .key(&keys.released)
            .arg(claim_id)
            .arg(ttl)
            .arg(milliseconds(lifetimes.answer))
            .arg(answer.as_bytes())
            .arg(channel)
            .arg(token.to_hex())
            .arg(publish);
        for (name, value) in &record::encode(record) {
            invocation.arg(*name).arg(value);
        }
        let tombstone = async move { invocation.invoke_async::<()>(&mut connection).await };
        // The successor's link and the tombstone are independent keys (two slots); both are
        // written before the first client sees the new token.
        self.run("complete", async move {
            match link {
                Some(link) => tokio::try_join!(link, tombstone).map(|_| ()),
                None => tombstone.await,
            }
        })
        .await
    }

    /// Write again each recent rotation of this replica that the primary lacks (after a
    /// failover); how many were missing.
    pub(super) async fn restore_recent(&self) -> u64 {
        let now = Instant::now();
        let mut restored = 0;
        for batch in self.journal.recent(now).chunks(64) {
            let writes = batch.iter().map(|written| self.restore(written, now));
            for result in futures_util::future::join_all(writes).await {
                restored += u64::from(result.unwrap_or(false));
            }
        }
        restored
    }

    async fn restore(&self, written: &Written, now: Instant) -> Result<bool, StoreError> {
        let age = now.saturating_duration_since(written.at);
        if age >= self.tombstone_ttl {
            return Ok(false);
        }
        let ttl = milliseconds(self.tombstone_ttl.saturating_sub(age));
        let answer_ttl = if written.answer.is_empty() {
            0
        } else {
            written.answer_ttl.saturating_sub(age).as_millis() as u64
        };
        let keys = self.keys.token(&written.token);
        let mut connection = self.connection();
        let mut invocation = scripts::RESTORE.prepare_invoke();
        invocation
            .key(&keys.state)
            .key(&keys.answer)
            .arg(ttl)
            .arg(answer_ttl)
            .arg(&written.answer[..]);
        for (name, value) in &written.fields {
            invocation.arg(*name).arg(value);
        }
        let restored: i64 = self
            .run("restore", async move {
                invocation.invoke_async(&mut connection).await
            })
            .await?;
        if let Some((next, family)) = &written.successor {
            let next = self.keys.token(next);
            let mut connection = self.connection();
            let mut invocation = scripts::LINK.prepare_invoke();
            invocation
                .key(&next.family)
                .key(&next.parent)
                .arg(family.to_hex())
                .arg(written.token.to_hex())
                .arg(ttl);
            self.run("restore_link", async move {
                invocation.invoke_async::<()>(&mut connection).await
            })
            .await?;
        }
        Ok(restored == 1)
    }
}
