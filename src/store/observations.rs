//! What observe mode remembers (`docs/DESIGN.md`, "Observe mode"): per token, its first use
//! and what followed; per successor, the token it came from. Kept apart from enforce's
//! tombstones, so the two modes never read each other's state, and per replica, in
//! memory: observe never depends on the shared store (it must keep forwarding while the
//! store is down). Bounded like the tombstones (`max_tombstones` entries per table, each
//! for `tombstone_ttl`). Time comes in as an argument: tested without a runtime.
//!
//! An IdP that does not enforce one-time use itself may hand several successors to one
//! token: each is linked to the same parent and family, and the first of them presented
//! supersedes the parent.

use crate::clock::UnixMillis;
use crate::policy::observe::{would, FirstExchange, Observation, Would};
use crate::policy::{Policy, Presenter};
use crate::seal::fingerprint::TokenFingerprint;
use moka::sync::Cache;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where a successor came from.
#[derive(Debug, Clone, Copy)]
struct Link {
    parent: TokenFingerprint,
    family: TokenFingerprint,
}

/// One token's observation and its family.
#[derive(Debug)]
struct Entry {
    seen: Observation,
    family: TokenFingerprint,
}

/// What one presentation came to.
#[derive(Debug, Clone)]
pub struct ObservedPresentation {
    /// What enforce would have done.
    pub would: Would,
    /// The token's observation before this presentation; `None` for a first use.
    pub before: Option<Observation>,
    /// The token's family (its first ancestor observed).
    pub family: TokenFingerprint,
}

impl ObservedPresentation {
    /// Whether this presentation is the token's first use (its exchange is the one that
    /// rotates it, as far as enforce is concerned).
    pub fn first(&self) -> bool {
        self.before.is_none()
    }
}

/// The observations of one replica.
pub struct Observations {
    tokens: Cache<TokenFingerprint, Arc<Mutex<Entry>>>,
    links: Cache<TokenFingerprint, Link>,
    revoked_families: Cache<TokenFingerprint, UnixMillis>,
}

impl std::fmt::Debug for Observations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observations")
            .field("tokens", &self.tokens.entry_count())
            .finish_non_exhaustive()
    }
}

impl Observations {
    /// At most `capacity` tokens (and as many links), each kept for `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Observations {
            tokens: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            links: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            revoked_families: Cache::builder()
                .max_capacity(capacity.min(100_000))
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Record one presentation of `token` by `who` and say what enforce would have done.
    /// A first use starts an observation (and supersedes the parent it succeeds); a later
    /// presentation that enforce would answer from the store counts as a replay; one that
    /// enforce would refuse revoking the family marks the family (here only).
    pub fn present(
        &self,
        token: &TokenFingerprint,
        who: &Presenter<'_>,
        policy: &Policy,
        now: UnixMillis,
    ) -> ObservedPresentation {
        let link = self.links.get(token);
        let family = link.map_or(*token, |link| link.family);
        let entry = self.tokens.entry(*token).or_insert_with(|| {
            Arc::new(Mutex::new(Entry {
                seen: Observation::first_use(who, now),
                family,
            }))
        });
        if entry.is_fresh() {
            if let Some(link) = link {
                self.supersede(&link.parent, now);
            }
            let would = match self.revoked_families.contains_key(&family) {
                true => Would::Refuse {
                    reason: crate::policy::RefusalReason::FamilyRevoked,
                    revoke_family: false,
                },
                false => Would::Forward,
            };
            return ObservedPresentation {
                would,
                before: None,
                family,
            };
        }
        let entry = entry.into_value();
        let mut entry = entry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = entry.seen.clone();
        let rules = policy.rules_for(&before.client.client_id);
        let revoked = self.revoked_families.contains_key(&entry.family);
        let would = would(rules, &before, revoked, who, now);
        match would {
            Would::Coalesce | Would::Replay => entry.seen.replays += 1,
            Would::Refuse {
                revoke_family: true,
                ..
            } => self.revoked_families.insert(entry.family, now),
            _ => {}
        }
        ObservedPresentation {
            would,
            before: Some(before),
            family: entry.family,
        }
    }

    /// The IdP answered a forwarded presentation of `token`. The first use's answer decides
    /// the token's fate as in enforce: a rotation starts its window now; anything else
    /// rotated nothing (the observation is dropped, the next presentation is a first use
    /// again). Every successor the IdP hands out, on any presentation, is linked to the
    /// token and its family.
    pub fn answered(
        &self,
        token: &TokenFingerprint,
        presentation: &ObservedPresentation,
        successor: Option<TokenFingerprint>,
        now: UnixMillis,
    ) {
        if let Some(successor) = successor.filter(|s| s != token) {
            if !self.links.contains_key(&successor) {
                self.links.insert(
                    successor,
                    Link {
                        parent: *token,
                        family: presentation.family,
                    },
                );
            }
        }
        if !presentation.first() {
            return;
        }
        let Some(entry) = self.tokens.get(token) else {
            return;
        };
        let rotated = successor.is_some_and(|s| s != *token);
        let mut guard = entry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.seen.exchange != FirstExchange::InFlight {
            return;
        }
        if rotated {
            guard.seen.exchange = FirstExchange::Rotated(now);
        } else {
            drop(guard);
            self.tokens.invalidate(token);
        }
    }

    /// The first use's exchange ended without an answer (the client left, the gate
    /// failed): as in enforce, nothing is tombstoned.
    pub fn abandoned(&self, token: &TokenFingerprint) {
        let in_flight = self.tokens.get(token).is_some_and(|entry| {
            let guard = entry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            guard.seen.exchange == FirstExchange::InFlight
        });
        if in_flight {
            self.tokens.invalidate(token);
        }
    }

    fn supersede(&self, parent: &TokenFingerprint, now: UnixMillis) {
        if let Some(entry) = self.tokens.get(parent) {
            let mut guard = entry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            guard.seen.superseded.get_or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::credentials::ClientIdentity;
    use crate::policy::{OnReplay, RefusalReason, Rules};

    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    fn fp(n: u8) -> TokenFingerprint {
        TokenFingerprint([n; 32])
    }

    fn kubectl() -> ClientIdentity {
        ClientIdentity {
            client_id: "kubectl".into(),
            secret: None,
        }
    }

    fn who(client: &ClientIdentity) -> Presenter<'_> {
        Presenter {
            client,
            source: "10.0.0.1".parse().unwrap(),
        }
    }

    fn after(ms: u64) -> UnixMillis {
        T0.plus(Duration::from_millis(ms))
    }

    fn book() -> Observations {
        Observations::new(1000, Duration::from_secs(900))
    }

    #[test]
    fn first_use_in_flight_rotated_then_refused_after_the_window() {
        let (book, policy, c) = (book(), Policy::default(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        assert_eq!((first.would, first.first()), (Would::Forward, true));
        let waiter = book.present(&fp(1), &who(&c), &policy, after(10));
        assert_eq!(waiter.would, Would::Coalesce);
        book.answered(&fp(1), &first, Some(fp(2)), after(300));
        let replay = book.present(&fp(1), &who(&c), &policy, after(1300));
        assert_eq!(replay.would, Would::Replay);
        assert_eq!(replay.before.as_ref().map(|b| b.replays), Some(1));
        assert_eq!(
            replay.before.map(|b| b.first_use_at()),
            Some(after(300)),
            "the window starts at the rotation"
        );
        let late = book.present(&fp(1), &who(&c), &policy, after(300 + 5000));
        assert_eq!(late.would.reason(), Some(RefusalReason::AfterGrace));
    }

    #[test]
    fn an_exchange_that_rotated_nothing_leaves_no_observation() {
        let (book, policy, c) = (book(), Policy::default(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        book.answered(&fp(1), &first, None, after(100));
        let again = book.present(&fp(1), &who(&c), &policy, after(200));
        assert_eq!((again.would, again.first()), (Would::Forward, true));
        book.abandoned(&fp(1));
        assert!(book.present(&fp(1), &who(&c), &policy, after(300)).first());
    }

    #[test]
    fn several_successors_of_one_token_share_its_family_and_the_first_presented_supersedes_it() {
        let (book, policy, c) = (book(), Policy::default(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        let replay = book.present(&fp(1), &who(&c), &policy, after(10));
        // An IdP that does not enforce one-time use answers both with different successors.
        book.answered(&fp(1), &first, Some(fp(2)), after(100));
        book.answered(&fp(1), &replay, Some(fp(3)), after(110));
        let second = book.present(&fp(3), &who(&c), &policy, after(150));
        assert_eq!((second.would, second.family), (Would::Forward, fp(1)));
        let third = book.present(&fp(2), &who(&c), &policy, after(160));
        assert_eq!((third.would, third.family), (Would::Forward, fp(1)));
        // The parent was superseded at the first successor's use, so once
        // `min_replay_window` has passed a replay of it is refused.
        let rules = Rules::default();
        let late = after(100).plus(rules.min_replay_window);
        let parent = book.present(&fp(1), &who(&c), &policy, late);
        assert_eq!(parent.would.reason(), Some(RefusalReason::Superseded));
    }

    #[test]
    fn a_would_be_revocation_refuses_the_family_here_only() {
        let policy = Policy::uniform(Rules {
            on_replay: OnReplay::RevokeFamily,
            ..Rules::default()
        });
        let (book, c) = (book(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        book.answered(&fp(1), &first, Some(fp(2)), after(100));
        let theft = book.present(&fp(1), &who(&c), &policy, after(60_000));
        assert_eq!(
            theft.would,
            Would::Refuse {
                reason: RefusalReason::AfterGrace,
                revoke_family: true
            }
        );
        let successor = book.present(&fp(2), &who(&c), &policy, after(60_001));
        assert_eq!(successor.would.reason(), Some(RefusalReason::FamilyRevoked));
    }
}
