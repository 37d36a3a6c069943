//! Answers for one token leave `replay_spacing` between them, whoever gets them: the first
//! client, the waiters of its exchange and grace replays. Across replicas the shared store
//! numbers the answers (waiter slots; replay counts, so the nth is due n spacings after the
//! first answer): the first answer takes no entry here, so a token nobody races costs
//! nothing. On each replica one timeline per token keeps the later answers apart. kubectl processes sharing a kubeconfig then do not collide
//! on its lock.

use crate::seal::fingerprint::TokenFingerprint;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Tokens whose answer timeline is kept (one entry each, for a few seconds).
const TIMELINES: u64 = 100_000;

/// The next free answer time of each recently answered token.
pub(super) struct AnswerSpacing {
    next: moka::sync::Cache<TokenFingerprint, Arc<Mutex<Instant>>>,
}

impl AnswerSpacing {
    pub(super) fn new() -> Self {
        AnswerSpacing {
            next: moka::sync::Cache::builder()
                .max_capacity(TIMELINES)
                .time_to_idle(Duration::from_secs(10))
                .build(),
        }
    }

    /// How long to wait before answering for `token`: at least `at_least` (the place the
    /// shared store gave this answer among all replicas'), until `spacing` after this
    /// replica's answer before it, and never more than `cap`. The answer's time is reserved.
    pub(super) fn delay(
        &self,
        token: &TokenFingerprint,
        at_least: Duration,
        spacing: Duration,
        cap: Duration,
    ) -> Duration {
        if spacing.is_zero() {
            return at_least.min(cap);
        }
        let now = Instant::now();
        let slot = self.next.get_with(*token, || Arc::new(Mutex::new(now)));
        let mut next = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let delay = next.saturating_duration_since(now).max(at_least).min(cap);
        *next = now + delay + spacing;
        delay
    }

    /// Record an answer the shared store placed (a waiter's slot): it is due after `delay`
    /// whatever this replica answered before, and later answers here come `spacing` after it.
    pub(super) fn placed(&self, token: &TokenFingerprint, delay: Duration, spacing: Duration) {
        let now = Instant::now();
        let slot = self.next.get_with(*token, || Arc::new(Mutex::new(now)));
        let mut next = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *next = (*next).max(now + delay + spacing);
    }
}

/// Wait `delay` before an answer, with no timer at all when there is nothing to wait: a
/// zero `tokio::time::sleep` still registers a timer and wakes the runtime's driver, a
/// cross-thread write(2) on every grace replay.
pub(super) async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
