//! Local waiters for exchanges that run anywhere: one `Notify` per fingerprint someone on
//! this replica waits for, woken by the pub/sub message that ends the exchange (or by this
//! replica's own completion), and all woken when the connection to Redis drops.

use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Fingerprints waited for on this replica.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    waiting: Mutex<HashMap<TokenFingerprint, (Arc<Notify>, usize), FingerprintHashing>>,
}

/// One waiter's registration; dropping it unregisters.
#[derive(Debug)]
pub(super) struct Registration {
    waiters: Arc<Waiters>,
    token: TokenFingerprint,
    /// Woken when the exchange may have ended.
    pub notify: Arc<Notify>,
}

impl Waiters {
    fn waiting(
        &self,
    ) -> MutexGuard<'_, HashMap<TokenFingerprint, (Arc<Notify>, usize), FingerprintHashing>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait for `token`'s exchange to end.
    pub(super) fn register(self: &Arc<Self>, token: TokenFingerprint) -> Registration {
        let mut waiting = self.waiting();
        let entry = waiting
            .entry(token)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            waiters: self.clone(),
            token,
            notify: entry.0.clone(),
        }
    }

    /// The exchange of `token` ended: wake its waiters.
    pub(super) fn wake(&self, token: &TokenFingerprint) {
        if let Some((notify, _)) = self.waiting().get(token) {
            notify.notify_waiters();
        }
    }

    /// Wake every waiter (a lost connection may have lost messages).
    pub(super) fn wake_all(&self) {
        for (notify, _) in self.waiting().values() {
            notify.notify_waiters();
        }
    }

    /// Fingerprints waited for now.
    pub(super) fn waited_for(&self) -> usize {
        self.waiting().len()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiting = self.waiters.waiting();
        if let Some(entry) = waiting.get_mut(&self.token) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiting.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_reaches_a_waiter_registered_before_it() {
        let waiters = Arc::new(Waiters::default());
        let token = TokenFingerprint([1; 32]);
        let registration = waiters.register(token);
        let notified = registration.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        waiters.wake(&token);
        tokio::time::timeout(Duration::from_secs(1), notified)
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn registrations_are_counted_and_removed() {
        let waiters = Arc::new(Waiters::default());
        let token = TokenFingerprint([2; 32]);
        let first = waiters.register(token);
        let second = waiters.register(token);
        assert_eq!(waiters.waited_for(), 1);
        drop(first);
        assert_eq!(waiters.waited_for(), 1);
        drop(second);
        assert_eq!(waiters.waited_for(), 0);
    }
}
