//! One-time keys of the memory store (`TokenStore::first_sighting`): each key remembered
//! until its own deadline, at most a fixed number at once. When full of keys that have not
//! expired, a new key is neither admitted nor forgotten: the sighting fails (fail closed:
//! the caller refuses), since forgetting an old key would let its value be replayed.

use crate::clock::UnixMillis;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The most one-time keys the memory store holds at once (about 100 bytes each).
pub const MAX_ONE_TIME_KEYS: usize = 100_000;

/// The table is full of keys that have not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Full;

/// One-time keys with deadlines.
#[derive(Debug)]
pub(super) struct OneTimeKeys {
    /// SipHash, not the fingerprint hasher: these keys may be chosen by a client (a `jti`
    /// hashed without a secret key).
    deadlines: HashMap<[u8; 32], UnixMillis>,
    /// (deadline, key) in insertion order; deadlines of different TTLs are not sorted, so
    /// the front is swept as far as it has expired and a full table is scanned whole.
    order: VecDeque<(UnixMillis, [u8; 32])>,
    capacity: usize,
    /// When the last whole scan ran: at most one a second, so a flood stays cheap.
    scanned: Option<UnixMillis>,
}

impl OneTimeKeys {
    /// At most `capacity` keys (at least 1).
    pub(super) fn new(capacity: usize) -> Self {
        OneTimeKeys {
            deadlines: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            scanned: None,
        }
    }

    /// Whether `key` is new at `now` (then remembered until `now + ttl`); `Err(Full)` when
    /// it is new but no room is left.
    pub(super) fn first_sighting(
        &mut self,
        key: &[u8; 32],
        ttl: Duration,
        now: UnixMillis,
    ) -> Result<bool, Full> {
        self.sweep(now);
        if self
            .deadlines
            .get(key)
            .is_some_and(|deadline| *deadline > now)
        {
            return Ok(false);
        }
        if self.deadlines.len() >= self.capacity && !self.deadlines.contains_key(key) {
            self.scan(now);
            if self.deadlines.len() >= self.capacity {
                return Err(Full);
            }
        }
        let deadline = now.plus(ttl);
        self.deadlines.insert(*key, deadline);
        self.order.push_back((deadline, *key));
        Ok(true)
    }

    /// Drop expired keys from the front of the insertion order.
    fn sweep(&mut self, now: UnixMillis) {
        while let Some((deadline, key)) = self.order.front().copied() {
            if deadline > now {
                break;
            }
            self.order.pop_front();
            if self.deadlines.get(&key) == Some(&deadline) {
                self.deadlines.remove(&key);
            }
        }
    }

    /// Drop every expired key, wherever it sits (at most once a second).
    fn scan(&mut self, now: UnixMillis) {
        if self
            .scanned
            .is_some_and(|last| now < last.plus(Duration::from_secs(1)))
        {
            return;
        }
        self.scanned = Some(now);
        self.deadlines.retain(|_, deadline| *deadline > now);
        let deadlines = &self.deadlines;
        self.order
            .retain(|(deadline, key)| deadlines.get(key) == Some(deadline));
    }

    /// Keys held (expired ones not swept yet included).
    pub(super) fn len(&self) -> usize {
        self.deadlines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn true_once_then_false_until_the_ttl() {
        let mut keys = OneTimeKeys::new(10);
        let ttl = Duration::from_secs(60);
        assert_eq!(keys.first_sighting(&[1; 32], ttl, NOW), Ok(true));
        assert_eq!(keys.first_sighting(&[1; 32], ttl, NOW), Ok(false));
        let last = NOW.plus(Duration::from_millis(59_999));
        assert_eq!(keys.first_sighting(&[1; 32], ttl, last), Ok(false));
        assert_eq!(keys.first_sighting(&[2; 32], ttl, last), Ok(true));
        let expired = NOW.plus(ttl);
        assert_eq!(keys.first_sighting(&[1; 32], ttl, expired), Ok(true));
    }

    #[test]
    fn a_full_table_refuses_new_keys_until_some_expire() {
        let mut keys = OneTimeKeys::new(3);
        let long = Duration::from_secs(60);
        let short = Duration::from_secs(1);
        assert_eq!(keys.first_sighting(&[1; 32], long, NOW), Ok(true));
        assert_eq!(keys.first_sighting(&[2; 32], short, NOW), Ok(true));
        assert_eq!(keys.first_sighting(&[3; 32], long, NOW), Ok(true));
        assert_eq!(keys.first_sighting(&[4; 32], long, NOW), Err(Full));
        assert_eq!(keys.first_sighting(&[1; 32], long, NOW), Ok(false), "seen");
        // The short key behind a long one at the front expires: a whole scan finds it.
        let later = NOW.plus(Duration::from_secs(2));
        assert_eq!(keys.first_sighting(&[4; 32], long, later), Ok(true));
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.first_sighting(&[2; 32], long, later), Err(Full));
    }
}
