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
use crate::oauth::credentials::ClientIdentity;
use crate::policy::observe::{would, FirstExchange, Observation, Would};
use crate::policy::{Policy, Presenter};
use crate::seal::fingerprint::TokenFingerprint;
use moka::sync::Cache;
use std::net::IpAddr;
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
    /// The first use's exchange rotated nothing (an error, a non-rotating answer, no
    /// answer): the next presentation is a first use again, as in enforce.
    released: bool,
    /// Presenters (client and address) whose presentation enforce would have answered
    /// from the store but the IdP refused: their next presentation is likely their own
    /// retry (golang.org/x/oauth2, in kubectl, retries a refused refresh with the other
    /// client authentication style), which enforce, having answered the first, would never
    /// see. It does not count toward `max_reuses`. At most [`MAX_RETRY_CREDITS`].
    retries: Vec<(ClientIdentity, IpAddr)>,
}

/// Refused presentations remembered per token as likely to be retried.
const MAX_RETRY_CREDITS: usize = 64;

/// The shared, locked record of one token.
type Shared = Arc<Mutex<Entry>>;

fn lock(entry: &Shared) -> std::sync::MutexGuard<'_, Entry> {
    entry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// The record this presentation read and must update (never another one that took its
    /// key since).
    entry: Shared,
}

impl ObservedPresentation {
    /// Whether this presentation is the token's first use (its exchange is the one that
    /// rotates it, as far as enforce is concerned).
    pub fn first(&self) -> bool {
        self.before.is_none()
    }
}

/// How the IdP answered one forwarded presentation.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// The new refresh token's fingerprint, when the answer rotated the token.
    pub successor: Option<TokenFingerprint>,
    /// The IdP refused the grant (a 4xx).
    pub refused_by_idp: bool,
    /// Who presented it.
    pub presenter: &'a Presenter<'a>,
}

/// The observations of one replica.
pub struct Observations {
    tokens: Cache<TokenFingerprint, Shared>,
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

/// Families a would-be revocation marks, at most (beside `capacity` tokens and links).
const MAX_REVOKED_FAMILIES: u64 = 100_000;

impl Observations {
    /// At most `capacity` tokens and `capacity` successor links (and 100,000 would-be
    /// revoked families), each kept for `ttl`.
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
                .max_capacity(capacity.min(MAX_REVOKED_FAMILIES))
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
        let fresh_entry = || Entry {
            seen: Observation::first_use(who, now),
            family,
            released: false,
            retries: Vec::new(),
        };
        let entry = self
            .tokens
            .entry(*token)
            .or_insert_with(|| Arc::new(Mutex::new(fresh_entry())));
        let fresh = entry.is_fresh();
        let entry = entry.into_value();
        let mut guard = lock(&entry);
        if fresh || guard.released {
            *guard = fresh_entry();
            drop(guard);
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
                entry,
            };
        }
        let before = guard.seen.clone();
        let rules = policy.rules_for(&before.client.client_id);
        let revoked = self.revoked_families.contains_key(&guard.family);
        // A retry of a presentation the IdP refused is decided as that presentation was
        // (enforce would have seen only the one), and counted once.
        let presenter = (who.client.clone(), who.source);
        let retry = guard.retries.iter().position(|r| *r == presenter);
        let mut decided = before.clone();
        if retry.is_some() {
            decided.replays = decided.replays.saturating_sub(1);
        }
        let would = would(rules, &decided, revoked, who, now);
        match (would, retry) {
            (Would::Coalesce | Would::Replay, Some(retry)) => {
                guard.retries.swap_remove(retry);
            }
            (Would::Coalesce | Would::Replay, None) => guard.seen.replays += 1,
            (
                Would::Refuse {
                    revoke_family: true,
                    ..
                },
                _,
            ) => self.revoked_families.insert(guard.family, now),
            _ => {}
        }
        let family = guard.family;
        drop(guard);
        ObservedPresentation {
            would,
            before: Some(before),
            family,
            entry,
        }
    }

    /// The IdP answered a forwarded presentation of `token`, rotating it into `successor`
    /// or not. The first rotation seen, on any presentation, starts the token's window (as
    /// in enforce, where the exchange that rotated it is the one that counts); a first use
    /// that rotated nothing releases the token (the next presentation is a first use
    /// again) unless another presentation rotated it meanwhile. Every successor the IdP
    /// hands out is linked to the token and its family.
    pub fn answered(
        &self,
        token: &TokenFingerprint,
        presentation: &ObservedPresentation,
        answer: Answered<'_>,
        now: UnixMillis,
    ) {
        let Answered {
            successor,
            refused_by_idp,
            presenter,
        } = answer;
        let successor = successor.filter(|s| s != token);
        if let Some(successor) = successor {
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
        let mut guard = lock(&presentation.entry);
        if refused_by_idp
            && presentation.would.answers_from_store()
            && guard.retries.len() < MAX_RETRY_CREDITS
        {
            guard
                .retries
                .push((presenter.client.clone(), presenter.source));
        }
        if guard.seen.exchange != FirstExchange::InFlight {
            return;
        }
        if successor.is_some() {
            guard.seen.exchange = FirstExchange::Rotated(now);
            guard.released = false;
        } else if presentation.first() {
            guard.released = true;
        }
    }

    /// The first use's exchange ended without an answer (the gate failed, or the exchange
    /// task ended early): as in enforce, nothing is tombstoned.
    pub fn abandoned(&self, presentation: &ObservedPresentation) {
        if presentation.first() {
            let mut guard = lock(&presentation.entry);
            if guard.seen.exchange == FirstExchange::InFlight {
                guard.released = true;
            }
        }
    }

    fn supersede(&self, parent: &TokenFingerprint, now: UnixMillis) {
        if let Some(entry) = self.tokens.get(parent) {
            lock(&entry).seen.superseded.get_or_insert(now);
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

    fn idp<'a>(successor: Option<TokenFingerprint>, who: &'a Presenter<'a>) -> Answered<'a> {
        Answered {
            successor,
            refused_by_idp: false,
            presenter: who,
        }
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
        book.answered(&fp(1), &first, idp(Some(fp(2)), &who(&c)), after(300));
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
        book.answered(&fp(1), &first, idp(None, &who(&c)), after(100));
        let again = book.present(&fp(1), &who(&c), &policy, after(200));
        assert_eq!((again.would, again.first()), (Would::Forward, true));
        book.abandoned(&again);
        assert!(book.present(&fp(1), &who(&c), &policy, after(300)).first());
    }

    #[test]
    fn several_successors_of_one_token_share_its_family_and_the_first_presented_supersedes_it() {
        let (book, policy, c) = (book(), Policy::default(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        let replay = book.present(&fp(1), &who(&c), &policy, after(10));
        // An IdP that does not enforce one-time use answers both with different successors.
        book.answered(&fp(1), &first, idp(Some(fp(2)), &who(&c)), after(100));
        book.answered(&fp(1), &replay, idp(Some(fp(3)), &who(&c)), after(110));
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
    fn a_rotation_by_a_later_presentation_stands_though_the_first_use_failed() {
        let (book, policy, c) = (book(), Policy::default(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        let racer = book.present(&fp(1), &who(&c), &policy, after(10));
        assert_eq!(racer.would, Would::Coalesce);
        // The racer's exchange rotated the token (an IdP without one-time use), then the
        // first use's failed: the token stays rotated, from the racer's answer on.
        book.answered(&fp(1), &racer, idp(Some(fp(2)), &who(&c)), after(100));
        book.answered(&fp(1), &first, idp(None, &who(&c)), after(120));
        let replay = book.present(&fp(1), &who(&c), &policy, after(200));
        assert_eq!(replay.would, Would::Replay);
        assert_eq!(replay.before.map(|b| b.first_use_at()), Some(after(100)));
        // The other order: the first use fails, then the racer rotates it.
        let first = book.present(&fp(5), &who(&c), &policy, T0);
        let racer = book.present(&fp(5), &who(&c), &policy, after(10));
        book.answered(&fp(5), &first, idp(None, &who(&c)), after(100));
        book.answered(&fp(5), &racer, idp(Some(fp(6)), &who(&c)), after(120));
        let replay = book.present(&fp(5), &who(&c), &policy, after(200));
        assert_eq!(replay.would, Would::Replay);
    }

    #[test]
    fn a_client_retrying_a_grant_the_idp_refused_is_not_counted_toward_the_reuse_cap() {
        let policy = Policy::uniform(Rules {
            max_reuses: 1,
            ..Rules::default()
        });
        let (book, c) = (book(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        let racer = book.present(&fp(1), &who(&c), &policy, after(10));
        assert_eq!(racer.would, Would::Coalesce);
        book.answered(&fp(1), &first, idp(Some(fp(2)), &who(&c)), after(100));
        let presenter = who(&c);
        let refused = Answered {
            refused_by_idp: true,
            ..idp(None, &presenter)
        };
        book.answered(&fp(1), &racer, refused, after(110));
        // The racer's own retry: enforce, which answered the racer, would never see it.
        let retry = book.present(&fp(1), &who(&c), &policy, after(120));
        assert_eq!(retry.would, Would::Replay);
        // A further presentation is a replay over the cap of 1.
        let another = book.present(&fp(1), &who(&c), &policy, after(130));
        assert_eq!(another.would.reason(), Some(RefusalReason::ReuseLimit));
    }

    #[test]
    fn a_would_be_revocation_refuses_the_family_here_only() {
        let policy = Policy::uniform(Rules {
            on_replay: OnReplay::RevokeFamily,
            ..Rules::default()
        });
        let (book, c) = (book(), kubectl());
        let first = book.present(&fp(1), &who(&c), &policy, T0);
        book.answered(&fp(1), &first, idp(Some(fp(2)), &who(&c)), after(100));
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
