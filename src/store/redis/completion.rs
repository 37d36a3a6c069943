//! The end of an exchange, written until it lands. A rotation or a release that Redis does
//! not take (a primary failing over, a shard restarting, a stalled server) is not dropped:
//! its claim would hold the token "in flight" until the claim expires, every waiter would
//! time out, and a rotation the IdP made would be unknown to every replica. The write is
//! tried again in the background, backing off, until it lands or the claim would have
//! expired; the first client has its answer meanwhile.

use super::Inner;
use crate::seal::fingerprint::TokenFingerprint;
use crate::store::{ExchangeOutcome, StoreError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first pause before a write is tried again; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two tries (a failover is followed within about a second).
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Ends of exchanges written late, or given up, since start.
#[derive(Debug, Default)]
pub(super) struct LateEnds {
    /// Retries running now (at most `max_in_flight`: memory stays bounded in an outage).
    running: AtomicUsize,
    /// Written by a retry.
    pub(super) written: AtomicU64,
    /// Given up: the claim expired first, or too many retries were running.
    pub(super) abandoned: AtomicU64,
}

/// Gives a retry's place back however its task ends.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a rotation's tombstone and sealed answer live from their write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lifetimes {
    /// The tombstone (and the successor's links).
    pub(super) tombstone: Duration,
    /// The sealed answer (zero: none is kept).
    pub(super) answer: Duration,
}

impl Lifetimes {
    /// `tombstone_ttl` and `grace`, less `age`: a late write lives no longer than the first
    /// would have (no answer at all once the window has passed).
    fn after(tombstone_ttl: Duration, grace: Duration, age: Duration) -> Lifetimes {
        Lifetimes {
            tombstone: tombstone_ttl
                .saturating_sub(age)
                .max(Duration::from_millis(1)),
            answer: grace.saturating_sub(age),
        }
    }
}

impl Inner {
    /// Write the end of `token`'s exchange under claim `claim_id`: its rotation (journaled
    /// on the first try) or its release, and announce it. `first_try` is `None` on the first
    /// try, else when that was: a late write keeps only what is left of the lifetimes, and
    /// a late release is written only while the claim is still there.
    pub(super) async fn write_end(
        &self,
        token: &TokenFingerprint,
        claim_id: u64,
        outcome: &ExchangeOutcome,
        grace: Duration,
        first_try: Option<Instant>,
    ) -> Result<(), StoreError> {
        let age = first_try.map_or(Duration::ZERO, |at| at.elapsed());
        match outcome {
            ExchangeOutcome::Rotated {
                record,
                answer,
                successor,
            } => {
                if first_try.is_none() {
                    self.journal_rotation(token, record, answer, successor.as_ref(), grace);
                }
                let lifetimes = Lifetimes::after(self.tombstone_ttl, grace, age);
                self.record_rotation(
                    token,
                    claim_id,
                    record,
                    answer,
                    successor.as_ref(),
                    lifetimes,
                )
                .await?;
                self.written.record(record.first_use);
                Ok(())
            }
            ExchangeOutcome::Released(released) => {
                let (kind, answer) = super::released_kind(released);
                self.release(token, claim_id, kind, answer, first_try.is_some())
                    .await
            }
        }
    }

    /// Write the end of `token`'s exchange (first tried at `first_try`) again in the
    /// background until it lands or its claim would have expired, waking this replica's
    /// waiters when it does.
    pub(super) fn write_end_later(
        self: &Arc<Self>,
        token: TokenFingerprint,
        (claim_id, claimed_at): (u64, Instant),
        first_try: Instant,
        outcome: ExchangeOutcome,
        grace: Duration,
    ) {
        let late = &self.late_ends;
        if late.running.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            late.running.fetch_sub(1, Ordering::Relaxed);
            late.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                token = %token.display(),
                "the end of an exchange was not written and too many are being retried: its claim holds the token until it expires"
            );
            return;
        }
        tracing::warn!(
            token = %token.display(),
            "the end of an exchange was not written: writing it again until its claim expires"
        );
        let inner = self.clone();
        let deadline = claimed_at + self.claim_ttl;
        tokio::spawn(async move {
            let _running = Running(&inner.late_ends.running);
            let mut pause = FIRST_PAUSE;
            let mut tries: u32 = 1;
            loop {
                tokio::time::sleep(pause).await;
                if Instant::now() >= deadline {
                    inner.late_ends.abandoned.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        token = %token.display(),
                        tries,
                        "the end of an exchange could not be written before its claim expired"
                    );
                    return;
                }
                tries += 1;
                if inner
                    .write_end(&token, claim_id, &outcome, grace, Some(first_try))
                    .await
                    .is_ok()
                {
                    inner.late_ends.written.fetch_add(1, Ordering::Relaxed);
                    inner.waiters.wake(&token);
                    tracing::info!(
                        token = %token.display(),
                        tries,
                        rotated = matches!(outcome, ExchangeOutcome::Rotated { .. }),
                        "the end of an exchange was written late"
                    );
                    return;
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        });
    }
}
