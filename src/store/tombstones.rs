//! A compact, bounded table of tombstones: a ring of fixed-size slots in insertion order
//! (which is expiry order, since every tombstone lives `tombstone_ttl`), indexed by two
//! small hash maps. About 200 bytes per tombstone with its family link, where a general
//! cache spends close to 1 KB; when full, the oldest is evicted (never a refusal to admit).

use super::TokenRecord;
use crate::clock::UnixMillis;
use crate::oauth::credentials::ClientIdentity;
use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

/// The first 16 bytes of a fingerprint: the table's key (a 128-bit MAC prefix).
type Key = [u8; 16];

fn key(fingerprint: &TokenFingerprint) -> Key {
    let mut key = [0u8; 16];
    key.copy_from_slice(&fingerprint.0[..16]);
    key
}

const NO_SUBJECT: u32 = u32::MAX;

/// One tombstone, fixed size.
#[derive(Clone)]
struct Slot {
    key: Key,
    successor: Option<Key>,
    first_use: u64,
    family: [u8; 32],
    source: [u8; 16],
    client: u32,
    subject: u32,
    replays: u32,
    /// When the successor was first presented (0: not yet).
    superseded: u64,
    live: bool,
}

/// Interned values (client identities, subjects) with reference counts, so each distinct
/// value is held once however many tombstones refer to it, and freed with the last one.
struct Interner<T: std::hash::Hash + Eq + Clone> {
    index: HashMap<T, u32>,
    values: Vec<Option<(T, u32)>>,
    free: Vec<u32>,
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    fn new() -> Self {
        Interner {
            index: HashMap::new(),
            values: Vec::new(),
            free: Vec::new(),
        }
    }

    fn acquire(&mut self, value: &T) -> u32 {
        if let Some(&id) = self.index.get(value) {
            if let Some((_, count)) = self.values[id as usize].as_mut() {
                *count += 1;
            }
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.values[id as usize] = Some((value.clone(), 1));
                id
            }
            None => {
                self.values.push(Some((value.clone(), 1)));
                (self.values.len() - 1) as u32
            }
        };
        self.index.insert(value.clone(), id);
        id
    }

    fn release(&mut self, id: u32) {
        let Some(entry) = self.values.get_mut(id as usize) else {
            return;
        };
        let last = match entry.as_mut() {
            Some((_, count)) => {
                *count -= 1;
                *count == 0
            }
            None => false,
        };
        if last {
            if let Some((value, _)) = entry.take() {
                self.index.remove(&value);
            }
            self.free.push(id);
        }
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.values
            .get(id as usize)?
            .as_ref()
            .map(|(value, _)| value)
    }
}

/// The tombstones of one store.
pub struct Tombstones {
    slots: Vec<Slot>,
    head: usize,
    /// Ring positions in use (live tombstones and retired ones not yet passed).
    occupied: usize,
    /// Live tombstones.
    live_count: usize,
    capacity: usize,
    ttl: Duration,
    by_key: HashMap<Key, u32, FingerprintHashing>,
    by_successor: HashMap<Key, u32, FingerprintHashing>,
    clients: Interner<ClientIdentity>,
    subjects: Interner<Arc<str>>,
    evictions: u64,
}

fn pack(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn unpack(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl Tombstones {
    /// At most `capacity` tombstones (at least 1), each living `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as u64 - 1) as usize;
        Tombstones {
            slots: Vec::with_capacity(capacity.min(4096)),
            head: 0,
            occupied: 0,
            live_count: 0,
            capacity,
            ttl,
            by_key: HashMap::with_hasher(FingerprintHashing),
            by_successor: HashMap::with_hasher(FingerprintHashing),
            clients: Interner::new(),
            subjects: Interner::new(),
            evictions: 0,
        }
    }

    /// Tombstones held.
    pub fn len(&self) -> usize {
        self.live_count
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.live_count == 0
    }

    /// Tombstones evicted for capacity so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn expired(&self, slot: &Slot, now: UnixMillis) -> bool {
        UnixMillis(slot.first_use).plus(self.ttl) <= now
    }

    /// Drop the oldest tombstone (expired, or evicted for room).
    /// Forget the tombstone in slot `index`: its indexes and its interned values. The slot
    /// keeps its ring position until the ring moves past it. Returns whether it was live.
    fn retire(&mut self, index: usize) -> bool {
        let slot = &mut self.slots[index];
        if !slot.live {
            return false;
        }
        slot.live = false;
        let (key, successor, client, subject) =
            (slot.key, slot.successor, slot.client, slot.subject);
        if self.by_key.get(&key) == Some(&(index as u32)) {
            self.by_key.remove(&key);
        }
        if let Some(successor) = successor {
            if self.by_successor.get(&successor) == Some(&(index as u32)) {
                self.by_successor.remove(&successor);
            }
        }
        self.clients.release(client);
        if subject != NO_SUBJECT {
            self.subjects.release(subject);
        }
        self.live_count -= 1;
        true
    }

    /// Free the oldest ring position; returns whether a live tombstone was dropped.
    fn pop_oldest(&mut self) -> bool {
        let was_live = self.retire(self.head);
        self.head = (self.head + 1) % self.capacity;
        self.occupied -= 1;
        was_live
    }

    /// Drop every tombstone whose TTL has passed.
    pub fn expire(&mut self, now: UnixMillis) {
        while self.occupied > 0 && self.expired(&self.slots[self.head], now) {
            self.pop_oldest();
        }
    }

    /// Tombstone a rotated token (and link its successor to the family). When full, the
    /// oldest tombstone makes room.
    pub fn insert(
        &mut self,
        token: &TokenFingerprint,
        record: &TokenRecord,
        successor: Option<&TokenFingerprint>,
    ) {
        self.expire(record.first_use);
        if self.occupied == self.capacity && self.pop_oldest() {
            self.evictions += 1;
        }
        let key = key(token);
        if let Some(&old) = self.by_key.get(&key) {
            // Re-tombstoning a token whose old tombstone expired but still sits in the ring
            // (completions can land slightly out of first-use order): retire it fully.
            self.retire(old as usize);
        }
        let slot = Slot {
            key,
            successor: successor.map(key_of),
            first_use: record.first_use.0,
            family: record.family.0,
            source: pack(record.source),
            client: self.clients.acquire(&record.client),
            subject: record.subject.as_ref().map_or(NO_SUBJECT, |s| {
                self.subjects.acquire(&Arc::from(s.as_ref()))
            }),
            replays: record.replays(),
            superseded: record.superseded().map_or(0, |at| at.0.max(1)),
            live: true,
        };
        let position = (self.head + self.occupied) % self.capacity;
        if position == self.slots.len() {
            self.slots.push(slot);
        } else {
            let stale = std::mem::replace(&mut self.slots[position], slot);
            debug_assert!(!stale.live, "a live tombstone was overwritten");
        }
        self.occupied += 1;
        self.live_count += 1;
        self.by_key.insert(key, position as u32);
        if let Some(successor) = self.slots[position].successor {
            self.by_successor.insert(successor, position as u32);
        }
    }

    fn slot(&self, token: &TokenFingerprint, now: UnixMillis) -> Option<usize> {
        let index = *self.by_key.get(&key(token))? as usize;
        let slot = &self.slots[index];
        (slot.live && !self.expired(slot, now)).then_some(index)
    }

    /// The tombstone of `token`, as a record (None: unknown or expired).
    pub fn get(&self, token: &TokenFingerprint, now: UnixMillis) -> Option<TokenRecord> {
        let index = self.slot(token, now)?;
        Some(self.record(index))
    }

    fn record(&self, index: usize) -> TokenRecord {
        let slot = &self.slots[index];
        let client = self
            .clients
            .get(slot.client)
            .cloned()
            .unwrap_or(ClientIdentity {
                client_id: "".into(),
                secret: None,
            });
        let subject = self
            .subjects
            .get(slot.subject)
            .map(|s| Box::<str>::from(s.as_ref()));
        TokenRecord::new(
            UnixMillis(slot.first_use),
            client,
            unpack(slot.source),
            subject,
            TokenFingerprint(slot.family),
        )
        .with_replays(slot.replays)
        .with_superseded((slot.superseded != 0).then_some(UnixMillis(slot.superseded)))
    }

    /// Count one replay of `token`; false if it is no longer held.
    pub fn count_replay(&mut self, token: &TokenFingerprint, now: UnixMillis) -> bool {
        match self.slot(token, now) {
            Some(index) => {
                self.slots[index].replays += 1;
                true
            }
            None => false,
        }
    }

    /// The slot of the tombstone whose successor is `token` (the successor-to-parent link,
    /// which lives and goes with the parent's tombstone).
    fn parent_slot(&self, token: &TokenFingerprint, now: UnixMillis) -> Option<usize> {
        let index = *self.by_successor.get(&key(token))? as usize;
        let slot = &self.slots[index];
        (slot.live && slot.successor == Some(key(token)) && !self.expired(slot, now))
            .then_some(index)
    }

    /// The family `token` belongs to, when it is the successor of a tombstoned token.
    pub fn family_of(&self, token: &TokenFingerprint, now: UnixMillis) -> Option<TokenFingerprint> {
        let index = self.parent_slot(token, now)?;
        Some(TokenFingerprint(self.slots[index].family))
    }

    /// `token`, the successor of a tombstoned token, is presented at `now`: the parent's
    /// tombstone records it (the first presentation only). False without such a parent.
    pub fn supersede(&mut self, token: &TokenFingerprint, now: UnixMillis) -> bool {
        let Some(index) = self.parent_slot(token, now) else {
            return false;
        };
        let slot = &mut self.slots[index];
        if slot.superseded == 0 {
            slot.superseded = now.0.max(1);
        }
        true
    }
}

fn key_of(fingerprint: &TokenFingerprint) -> Key {
    key(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::fingerprint::Fingerprinter;
    use crate::seal::secret::RefreshToken;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn fp(n: u32) -> TokenFingerprint {
        Fingerprinter::new(&[1u8; 32]).token(&RefreshToken::new(format!("t{n}")))
    }

    fn record(family: TokenFingerprint, at: UnixMillis, subject: &str) -> TokenRecord {
        TokenRecord::new(
            at,
            ClientIdentity {
                client_id: "kubernetes".into(),
                secret: None,
            },
            "10.1.2.3".parse().unwrap(),
            Some(subject.into()),
            family,
        )
    }

    #[test]
    fn round_trip_of_every_field() {
        let mut table = Tombstones::new(10, Duration::from_secs(60));
        let mut r = record(fp(0), NOW, "alice");
        r = r.with_replays(2);
        table.insert(&fp(1), &r, Some(&fp(2)));
        let back = table.get(&fp(1), NOW).unwrap();
        assert_eq!(back.first_use, NOW);
        assert_eq!(back.client.client_id.as_ref(), "kubernetes");
        assert_eq!(back.source, "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(back.subject.as_deref(), Some("alice"));
        assert_eq!(back.family, fp(0));
        assert_eq!(back.replays(), 2);
        assert_eq!(table.family_of(&fp(2), NOW), Some(fp(0)));
        assert_eq!(table.family_of(&fp(3), NOW), None);
        assert!(table.count_replay(&fp(1), NOW));
        assert_eq!(table.get(&fp(1), NOW).unwrap().replays(), 3);
    }

    #[test]
    fn full_table_evicts_the_oldest_and_counts_it() {
        let mut table = Tombstones::new(3, Duration::from_secs(60));
        for n in 0..5 {
            table.insert(&fp(n), &record(fp(n), NOW, "s"), Some(&fp(100 + n)));
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.evictions(), 2);
        assert!(table.get(&fp(0), NOW).is_none());
        assert!(table.get(&fp(1), NOW).is_none());
        assert!(
            table.family_of(&fp(100), NOW).is_none(),
            "links go with their tombstone"
        );
        for n in 2..5 {
            assert!(table.get(&fp(n), NOW).is_some());
        }
    }

    #[test]
    fn expiry_by_injected_time() {
        let mut table = Tombstones::new(10, Duration::from_secs(60));
        table.insert(&fp(1), &record(fp(1), NOW, "s"), None);
        let later = NOW.plus(Duration::from_secs(30));
        table.insert(&fp(2), &record(fp(2), later, "s"), None);
        let at_ttl = NOW.plus(Duration::from_secs(60));
        assert!(
            table.get(&fp(1), at_ttl).is_none(),
            "exactly at the TTL it is gone"
        );
        assert!(table.get(&fp(2), at_ttl).is_some());
        table.expire(at_ttl);
        assert_eq!(table.len(), 1);
        assert_eq!(table.evictions(), 0, "expiry is not eviction");
    }

    #[test]
    fn interned_values_are_freed_with_their_last_tombstone() {
        let mut table = Tombstones::new(2, Duration::from_secs(60));
        table.insert(&fp(1), &record(fp(1), NOW, "alice"), None);
        table.insert(&fp(2), &record(fp(2), NOW, "bob"), None);
        table.insert(&fp(3), &record(fp(3), NOW, "carol"), None);
        assert_eq!(table.subjects.index.len(), 2, "alice was freed");
        assert_eq!(table.clients.index.len(), 1);
    }

    #[test]
    fn re_tombstoning_a_token_retires_the_old_slot_entirely() {
        let mut table = Tombstones::new(10, Duration::from_secs(60));
        // An expired tombstone that the ring has not passed yet (it is not at the head).
        let later = NOW.plus(Duration::from_secs(1));
        table.insert(&fp(9), &record(fp(9), later, "bob"), None);
        table.insert(&fp(1), &record(fp(1), NOW, "alice"), Some(&fp(2)));
        let after_ttl = NOW.plus(Duration::from_secs(60));
        assert!(table.get(&fp(1), after_ttl).is_none());
        // The token is exchanged again and tombstoned anew.
        table.insert(&fp(1), &record(fp(1), after_ttl, "carol"), Some(&fp(3)));
        assert_eq!(table.len(), 2, "bob, and the new tombstone of fp(1)");
        assert_eq!(
            table.get(&fp(1), after_ttl).unwrap().subject.as_deref(),
            Some("carol")
        );
        assert!(
            !table
                .subjects
                .index
                .contains_key(&Arc::<str>::from("alice")),
            "alice freed"
        );
        assert_eq!(
            table.family_of(&fp(2), after_ttl),
            None,
            "the old link is gone"
        );
        assert_eq!(table.by_successor.len(), 1);
        assert_eq!(table.family_of(&fp(3), after_ttl), Some(fp(1)));
        // Passing the retired slot later counts no eviction.
        assert_eq!(table.evictions(), 0);
    }

    #[test]
    fn the_successors_first_presentation_supersedes_its_parent() {
        let mut table = Tombstones::new(10, Duration::from_secs(60));
        table.insert(&fp(1), &record(fp(1), NOW, "s"), Some(&fp(2)));
        assert_eq!(table.get(&fp(1), NOW).unwrap().superseded(), None);
        assert!(!table.supersede(&fp(3), NOW), "no parent");
        let used = NOW.plus(Duration::from_secs(1));
        assert!(table.supersede(&fp(2), used));
        assert!(table.supersede(&fp(2), used.plus(Duration::from_secs(5))));
        assert_eq!(
            table.get(&fp(1), NOW).unwrap().superseded(),
            Some(used),
            "the first presentation counts"
        );
        let gone = NOW.plus(Duration::from_secs(60));
        assert!(
            !table.supersede(&fp(2), gone),
            "the link expired with the parent"
        );
    }

    #[test]
    fn wraps_around_many_times() {
        let mut table = Tombstones::new(7, Duration::from_secs(60));
        for n in 0..1000 {
            table.insert(&fp(n), &record(fp(n), NOW, "s"), Some(&fp(10_000 + n)));
            assert!(table.get(&fp(n), NOW).is_some());
        }
        assert_eq!(table.len(), 7);
        assert_eq!(table.by_key.len(), 7);
        assert_eq!(table.by_successor.len(), 7);
        assert_eq!(table.family_of(&fp(10_999), NOW), Some(fp(999)));
    }
}
