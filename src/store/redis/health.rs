//! Whether Redis answers, as the last operations saw it: one log line per transition and a
//! count of failures for the metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether Redis answers, as the last operations saw it; transitions are logged once.
#[derive(Debug, Default)]
pub(super) struct Health {
    pub(super) down: AtomicBool,
    pub(super) errors: AtomicU64,
    /// Transitions are not logged here (a cluster: one shard's failures alternate with the
    /// others' successes; its watcher logs shard health instead).
    pub(super) quiet: AtomicBool,
}

impl Health {
    pub(super) fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) && !self.quiet.load(Ordering::Relaxed) {
            tracing::warn!("the token store (Redis) answers again: refresh tokens are guarded");
        }
    }

    pub(super) fn failed(&self, operation: &'static str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) && !self.quiet.load(Ordering::Relaxed) {
            tracing::error!(
                operation,
                error,
                "THE TOKEN STORE (Redis) IS UNAVAILABLE: refresh grants follow store.on_store_error \
                 until it answers again"
            );
        }
    }
}
