//! The rotations this replica wrote in the last seconds, kept to write again after a
//! failover. Redis replicates asynchronously, and `WAIT` is no proof against every
//! failover: writes taken by a primary after Sentinel promoted another (a graceful
//! failover: the old primary serves until it is demoted) or not yet on the replica that a
//! cluster promotes are gone from the new primary. The replica that made the rotation is
//! still alive and remembers it: when the store follows a failover it restores each recent
//! tombstone (and sealed answer, and successor link) that the new primary does not have, at
//! once and again shortly after (rotations that completed on the old primary during the
//! switch). The journal holds fingerprints and sealed answers only, as Redis does.

use crate::seal::fingerprint::TokenFingerprint;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a rotation stays in the journal: longer than any replication lag and failover
/// detection the gate is meant to survive.
pub(super) const JOURNAL_WINDOW: Duration = Duration::from_secs(30);
/// The most rotations kept (memory stays bounded under a flood; the oldest go first).
pub(super) const JOURNAL_CAPACITY: usize = 50_000;
/// The most bytes of sealed answers and tombstone fields kept (answers may be large).
pub(super) const JOURNAL_MAX_BYTES: usize = 64 * 1024 * 1024;

/// One rotation as written: enough to write it again.
#[derive(Clone)]
pub(super) struct Written {
    /// The rotated token.
    pub(super) token: TokenFingerprint,
    /// The tombstone's field/value pairs.
    pub(super) fields: Vec<(&'static str, Vec<u8>)>,
    /// The sealed answer (empty when none is kept).
    pub(super) answer: Vec<u8>,
    /// How long the answer is kept after the write (its client's grace period).
    pub(super) answer_ttl: Duration,
    /// The successor and the family it joined.
    pub(super) successor: Option<(TokenFingerprint, TokenFingerprint)>,
    /// When it was written.
    pub(super) at: Instant,
}

impl Written {
    /// The bytes it holds (answer and fields).
    fn size(&self) -> usize {
        self.answer.len()
            + self
                .fields
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
    }
}

/// Recent rotations, oldest first, and the bytes they hold.
#[derive(Default)]
pub(super) struct Journal {
    written: Mutex<(VecDeque<Arc<Written>>, usize)>,
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Arc<Written>>, usize)> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep `written`, dropping what is older than the window or past the capacity (in
    /// rotations and in bytes).
    pub(super) fn record(&self, written: Written) {
        let mut guard = self.lock();
        let (journal, bytes) = &mut *guard;
        let now = written.at;
        let size = written.size();
        while journal.front().is_some_and(|oldest| {
            now.duration_since(oldest.at) > JOURNAL_WINDOW
                || journal.len() >= JOURNAL_CAPACITY
                || *bytes + size > JOURNAL_MAX_BYTES
        }) {
            if let Some(oldest) = journal.pop_front() {
                *bytes -= oldest.size();
            }
        }
        *bytes += size;
        journal.push_back(Arc::new(written));
    }

    /// The rotations written within the window before `now`.
    pub(super) fn recent(&self, now: Instant) -> Vec<Arc<Written>> {
        self.lock()
            .0
            .iter()
            .filter(|written| now.saturating_duration_since(written.at) <= JOURNAL_WINDOW)
            .cloned()
            .collect()
    }

    /// Rotations held now, and their bytes.
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        let guard = self.lock();
        (guard.0.len(), guard.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(n: u8, at: Instant) -> Written {
        Written {
            token: TokenFingerprint([n; 32]),
            fields: vec![],
            answer: vec![],
            answer_ttl: Duration::ZERO,
            successor: None,
            at,
        }
    }

    #[test]
    fn the_journal_keeps_the_window_and_no_more_than_its_capacity() {
        let journal = Journal::default();
        let start = Instant::now();
        journal.record(written(1, start));
        journal.record(written(2, start + Duration::from_secs(10)));
        journal.record(written(3, start + JOURNAL_WINDOW + Duration::from_secs(5)));
        let recent = journal.recent(start + JOURNAL_WINDOW + Duration::from_secs(5));
        let tokens: Vec<u8> = recent.iter().map(|w| w.token.0[0]).collect();
        assert_eq!(tokens, vec![2, 3], "the first is older than the window");
        assert_eq!(journal.len().0, 2);
        for n in 0..JOURNAL_CAPACITY + 10 {
            journal.record(written(
                (n % 200) as u8,
                start + JOURNAL_WINDOW + Duration::from_secs(5),
            ));
        }
        assert_eq!(journal.len().0, JOURNAL_CAPACITY);
    }

    #[test]
    fn large_answers_are_bounded_in_bytes() {
        let journal = Journal::default();
        let start = Instant::now();
        for n in 0..200u8 {
            journal.record(Written {
                answer: vec![n; 1024 * 1024],
                ..written(n, start)
            });
        }
        let (count, bytes) = journal.len();
        assert!(bytes <= JOURNAL_MAX_BYTES, "{bytes}");
        assert_eq!(count, JOURNAL_MAX_BYTES / (1024 * 1024));
        let recent = journal.recent(start);
        assert_eq!(
            recent.last().unwrap().token.0[0],
            199,
            "the newest are kept"
        );
    }
}
