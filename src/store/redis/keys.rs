//! Redis key names. Every key of one fingerprint carries the fingerprint as its hash tag
//! (`prefix{fp}:suffix`), so one token's keys live in one slot and the scripts that touch
//! them work on Redis Cluster. Keys hold fingerprints, never tokens.

use crate::seal::fingerprint::TokenFingerprint;

/// The names of every key and of the notification channel, under one prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

/// The keys of one fingerprint.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    /// The tombstone: a hash of the record (TTL `tombstone_ttl`).
    pub state: String,
    /// The sealed answer (TTL: the client's grace period).
    pub answer: String,
    /// The claim of an exchange in flight: a hash of claim id and waiter count.
    pub claim: String,
    /// How the last released claim ended, for its waiters.
    pub released: String,
    /// The family this token joined when its predecessor rotated (TTL `tombstone_ttl`).
    pub family: String,
    /// The revocation mark of the family rooted at this fingerprint.
    pub revoked: String,
    /// The token whose rotation made this one (the successor-to-parent link, TTL
    /// `tombstone_ttl`): this token's first presentation closes that parent's window.
    pub parent: String,
    /// The closing of the windows of the family rooted at this fingerprint
    /// (`<at ms>:<reason>`, TTL `tombstone_ttl`; `TokenStore::close_window`).
    pub closed: String,
    /// The token's own sharded channel (a cluster's wake-ups: `SPUBLISH` reaches the
    /// token's shard only).
    pub exchange: String,
}

impl KeySpace {
    /// Keys under `prefix` (e.g. `refresh-gate:`).
    pub fn new(prefix: &str) -> Self {
        KeySpace {
            prefix: prefix.to_owned(),
        }
    }

    /// The keys of `token`.
    pub fn token(&self, token: &TokenFingerprint) -> TokenKeys {
        let tag = format!("{}{{{}}}", self.prefix, token.to_hex());
        TokenKeys {
            state: format!("{tag}:state"),
            answer: format!("{tag}:answer"),
            claim: format!("{tag}:claim"),
            released: format!("{tag}:released"),
            family: format!("{tag}:family"),
            revoked: format!("{tag}:revoked"),
            parent: format!("{tag}:parent"),
            closed: format!("{tag}:closed"),
            exchange: format!("{tag}:exchange"),
        }
    }

    /// The key of a one-time value (`TokenStore::first_sighting`): `<prefix>{<hex>}:once`,
    /// the value its own hash tag.
    pub fn once(&self, key: &[u8; 32]) -> String {
        format!("{}{{{}}}:once", self.prefix, hex::encode(key))
    }

    /// The revocation mark of `family`.
    pub fn revoked(&self, family: &TokenFingerprint) -> String {
        self.token(family).revoked
    }

    /// The channel every replica listens on: each message is the hex fingerprint of a
    /// token whose exchange ended.
    pub fn channel(&self) -> String {
        format!("{}exchanges", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a hash tag");
        let close = key[open..].find('}').expect("a closed hash tag") + open;
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_token_shares_its_hash_tag() {
        let space = KeySpace::new("rg:");
        let token = TokenFingerprint([7; 32]);
        let keys = space.token(&token);
        let all = [
            &keys.state,
            &keys.answer,
            &keys.claim,
            &keys.released,
            &keys.family,
            &keys.revoked,
            &keys.parent,
            &keys.closed,
            &keys.exchange,
        ];
        for key in all {
            assert!(key.starts_with("rg:{"), "{key}");
            assert_eq!(hash_tag(key), token.to_hex());
        }
        let mut distinct: Vec<_> = all.to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 9);
    }

    #[test]
    fn the_revocation_mark_is_keyed_by_the_family() {
        let space = KeySpace::new("rg:");
        let family = TokenFingerprint([9; 32]);
        assert_eq!(space.revoked(&family), space.token(&family).revoked);
        assert_eq!(space.channel(), "rg:exchanges");
    }

    #[test]
    fn a_one_time_key_is_its_own_hash_tag() {
        let space = KeySpace::new("rg:");
        let key = space.once(&[0xab; 32]);
        assert_eq!(hash_tag(&key), "ab".repeat(32));
        assert!(key.starts_with("rg:{") && key.ends_with(":once"));
    }
}
