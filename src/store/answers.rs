//! Remembered answers of the memory store: each kept until its own deadline (its client's
//! grace period after the rotation), swept in insertion order a bounded batch at a time, so
//! a wave of answers expiring together is never swept by one request, and capped (oldest
//! first) at a fixed count.

use crate::clock::UnixMillis;
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Sealed answers by fingerprint, with deadlines.
#[derive(Debug)]
pub(super) struct Answers {
    by_token: HashMap<TokenFingerprint, (Arc<SealedAnswer>, UnixMillis), FingerprintHashing>,
    /// (deadline, token) in insertion order; an entry whose token was stored again later
    /// is stale and skipped.
    order: VecDeque<(UnixMillis, TokenFingerprint)>,
    capacity: usize,
}

impl Answers {
    /// At most `capacity` answers.
    pub(super) fn new(capacity: usize) -> Self {
        Answers {
            by_token: HashMap::with_hasher(FingerprintHashing),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remember `answer` for `token` until `deadline`; the oldest answer makes room.
    pub(super) fn insert(
        &mut self,
        token: TokenFingerprint,
        answer: Arc<SealedAnswer>,
        deadline: UnixMillis,
    ) {
        while self.by_token.len() >= self.capacity && !self.by_token.contains_key(&token) {
            if !self.pop_front() {
                break;
            }
        }
        self.by_token.insert(token, (answer, deadline));
        self.order.push_back((deadline, token));
    }

    /// The answer of `token`, if it is still within its deadline.
    pub(super) fn get(
        &self,
        token: &TokenFingerprint,
        now: UnixMillis,
    ) -> Option<Arc<SealedAnswer>> {
        match self.by_token.get(token) {
            Some((answer, deadline)) if *deadline > now => Some(answer.clone()),
            _ => None,
        }
    }

    /// Drop up to `budget` expired answers from the front; whether more may be due.
    pub(super) fn sweep(&mut self, now: UnixMillis, budget: usize) -> bool {
        for _ in 0..budget {
            match self.order.front() {
                Some((deadline, _)) if *deadline <= now => {
                    self.pop_front();
                }
                _ => return false,
            }
        }
        true
    }

    /// Remove the front entry (and its answer unless it was stored again); false if empty.
    fn pop_front(&mut self) -> bool {
        let Some((deadline, token)) = self.order.pop_front() else {
            return false;
        };
        if self
            .by_token
            .get(&token)
            .is_some_and(|(_, d)| *d == deadline)
        {
            self.by_token.remove(&token);
        }
        true
    }

    /// Answers held.
    pub(super) fn len(&self) -> usize {
        self.by_token.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> TokenFingerprint {
        TokenFingerprint([n; 32])
    }

    fn answer(n: u8) -> Arc<SealedAnswer> {
        Arc::new(SealedAnswer::from_bytes(vec![n]))
    }

    #[test]
    fn an_answer_lives_until_its_deadline() {
        let mut answers = Answers::new(10);
        answers.insert(token(1), answer(1), UnixMillis(1_000));
        assert!(answers.get(&token(1), UnixMillis(999)).is_some());
        assert!(answers.get(&token(1), UnixMillis(1_000)).is_none());
        assert!(!answers.sweep(UnixMillis(1_000), 10));
        assert_eq!(answers.len(), 0);
    }

    #[test]
    fn sweeping_is_bounded_per_call() {
        let mut answers = Answers::new(100);
        for n in 0..50 {
            answers.insert(token(n), answer(n), UnixMillis(1_000));
        }
        assert!(answers.sweep(UnixMillis(2_000), 20), "more are due");
        assert_eq!(answers.len(), 30);
        assert!(answers.sweep(UnixMillis(2_000), 20));
        assert!(!answers.sweep(UnixMillis(2_000), 20));
        assert_eq!(answers.len(), 0);
    }

    #[test]
    fn the_oldest_makes_room_at_capacity() {
        let mut answers = Answers::new(2);
        answers.insert(token(1), answer(1), UnixMillis(5_000));
        answers.insert(token(2), answer(2), UnixMillis(5_000));
        answers.insert(token(3), answer(3), UnixMillis(5_000));
        assert_eq!(answers.len(), 2);
        assert!(answers.get(&token(1), UnixMillis(0)).is_none());
        assert!(answers.get(&token(3), UnixMillis(0)).is_some());
    }

    #[test]
    fn an_answer_stored_again_survives_the_sweep_of_its_old_entry() {
        let mut answers = Answers::new(10);
        answers.insert(token(1), answer(1), UnixMillis(1_000));
        answers.insert(token(1), answer(2), UnixMillis(9_000));
        answers.sweep(UnixMillis(5_000), 10);
        assert_eq!(
            answers
                .get(&token(1), UnixMillis(5_000))
                .unwrap()
                .as_bytes(),
            &[2]
        );
    }
}
