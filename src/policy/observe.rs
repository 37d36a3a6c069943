//! Observe mode (`mode = "observe"`): the rotation decisions computed, never applied. Pure:
//! what the gate *would* do with one presentation, from what it observed of the token so
//! far, by the same rules ([`decide_replay`]) as in enforce. The state the observations
//! are kept in is `store::observations`; this module only decides.

use super::{decide_replay, Decision, Policy, Presenter, RefusalReason, Rotation, Rules};
use crate::clock::UnixMillis;
use crate::oauth::credentials::ClientIdentity;
use serde::Deserialize;
use std::net::IpAddr;

/// `mode`: whether the rotation decisions are applied (`"enforce"`) or only recorded
/// beside what the IdP answered (`"observe"`). The presenting client's mode applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide every refresh grant (the default).
    #[default]
    Enforce,
    /// Forward every refresh grant untouched; record what enforce would have done.
    Observe,
}

/// What enforce would have done with one presentation
/// (`refresh_gate_observed_refreshes_total{would}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Would {
    /// A first use: claim and forward.
    Forward,
    /// Join the exchange under way and get its answer.
    Coalesce,
    /// Answer the remembered answer (inside the window).
    Replay,
    /// Refuse with `400 invalid_grant`, for this reason; `revoke_family` when enforce's
    /// refusal would also revoke the family.
    Refuse {
        /// Why.
        reason: RefusalReason,
        /// Whether enforce would revoke the family.
        revoke_family: bool,
    },
}

impl Would {
    /// Every `would` label, in the metric's order.
    pub const LABELS: [&'static str; 4] = ["forward", "coalesce", "replay", "refuse"];

    /// The `would` label.
    pub fn label(&self) -> &'static str {
        match self {
            Would::Forward => "forward",
            Would::Coalesce => "coalesce",
            Would::Replay => "replay",
            Would::Refuse { .. } => "refuse",
        }
    }

    /// The refusal reason, when enforce would refuse.
    pub fn reason(&self) -> Option<RefusalReason> {
        match self {
            Would::Refuse { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// Whether enforce would hand this presentation the first exchange's answer.
    pub fn answers_from_store(&self) -> bool {
        matches!(self, Would::Coalesce | Would::Replay)
    }
}

/// How the IdP answered an observed refresh (`refresh_gate_observed_refreshes_total{idp}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdpVerdict {
    /// A 2xx answer.
    Success,
    /// A 4xx answer (e.g. `invalid_grant`).
    Refused,
    /// A 5xx answer, another status, a transport failure or a timeout.
    Error,
}

impl IdpVerdict {
    /// Every `idp` label, in the metric's order.
    pub const LABELS: [&'static str; 3] = ["success", "refused", "error"];

    /// The verdict of an HTTP status.
    pub fn of_status(status: u16) -> IdpVerdict {
        match status {
            200..=299 => IdpVerdict::Success,
            400..=499 => IdpVerdict::Refused,
            _ => IdpVerdict::Error,
        }
    }

    /// The `idp` label.
    pub fn label(&self) -> &'static str {
        match self {
            IdpVerdict::Success => "success",
            IdpVerdict::Refused => "refused",
            IdpVerdict::Error => "error",
        }
    }
}

/// Where the first observed exchange of a token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstExchange {
    /// Forwarded, the IdP has not answered yet.
    InFlight,
    /// The IdP rotated the token at this moment (the window starts here, as in enforce).
    Rotated(UnixMillis),
}

/// What observe mode knows of one token: its first use and what followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When it was first presented.
    pub first_seen: UnixMillis,
    /// The first exchange.
    pub exchange: FirstExchange,
    /// The client of the first use.
    pub client: ClientIdentity,
    /// The address of the first use.
    pub source: IpAddr,
    /// Presentations enforce would have answered from the store (replays and waiters).
    pub replays: u32,
    /// When a successor of the token was first presented, if one was.
    pub superseded: Option<UnixMillis>,
}

impl Observation {
    /// The first use of a token, presented now by `who`.
    pub fn first_use(who: &Presenter<'_>, now: UnixMillis) -> Observation {
        Observation {
            first_seen: now,
            exchange: FirstExchange::InFlight,
            client: who.client.clone(),
            source: who.source,
            replays: 0,
            superseded: None,
        }
    }

    /// The moment a presentation's delay is measured from: the rotation, or the first
    /// presentation while its exchange is in flight.
    pub fn first_use_at(&self) -> UnixMillis {
        match self.exchange {
            FirstExchange::InFlight => self.first_seen,
            FirstExchange::Rotated(at) => at,
        }
    }
}

/// What enforce would do with a presentation of an already-used token, under the rules of
/// its first client, as [`decide_replay`] decides it (a presentation while the first
/// exchange is in flight is a waiter: decided as a replay at the moment of rotation, with
/// no successor yet). `family_revoked`: enforce would have revoked the token's family.
pub fn would(
    rules: &Rules,
    seen: &Observation,
    family_revoked: bool,
    who: &Presenter<'_>,
    now: UnixMillis,
) -> Would {
    if family_revoked {
        return Would::Refuse {
            reason: RefusalReason::FamilyRevoked,
            revoke_family: false,
        };
    }
    let (first_use, superseded, answered) = match seen.exchange {
        FirstExchange::InFlight => (now, None, Would::Coalesce),
        FirstExchange::Rotated(at) => (at, seen.superseded, Would::Replay),
    };
    let rotation = Rotation {
        first_use,
        client: &seen.client,
        source: seen.source,
        replays: seen.replays,
        answer_available: true,
        superseded,
        closed: None,
    };
    match decide_replay(rules, &rotation, who, now) {
        Decision::Refuse {
            reason,
            revoke_family,
        } => Would::Refuse {
            reason,
            revoke_family,
        },
        _ => answered,
    }
}

/// Carry the moments enforce resumed from the running rules `old` into the reloaded `new`,
/// and mark `now` for every client (and the defaults) whose mode goes from observe back to
/// enforce: remembered answers of rotations made before then are not replayed.
pub fn carry_mode_switches(old: &Policy, new: &mut Policy, now: UnixMillis) {
    let mark = |old: &Rules, new: &mut Rules| {
        new.observed_until = if old.mode == Mode::Observe && new.mode == Mode::Enforce {
            Some(now)
        } else {
            old.observed_until
        };
    };
    mark(&old.defaults, &mut new.defaults);
    for (client, rules) in new.per_client.iter_mut() {
        mark(old.rules_for(client), rules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OnReplay;
    use std::time::Duration;

    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    fn client(id: &str) -> ClientIdentity {
        ClientIdentity {
            client_id: id.into(),
            secret: None,
        }
    }

    fn at(ip: &str, c: &ClientIdentity) -> Observation {
        Observation::first_use(
            &Presenter {
                client: c,
                source: ip.parse().unwrap(),
            },
            T0,
        )
    }

    fn by<'a>(c: &'a ClientIdentity) -> Presenter<'a> {
        Presenter {
            client: c,
            source: "10.0.0.1".parse().unwrap(),
        }
    }

    fn rotated(mut seen: Observation, after: Duration) -> Observation {
        seen.exchange = FirstExchange::Rotated(T0.plus(after));
        seen
    }

    #[test]
    fn a_presentation_while_the_first_is_in_flight_would_coalesce() {
        let kubectl = client("kubectl");
        let seen = at("10.0.0.1", &kubectl);
        let now = T0.plus(Duration::from_millis(30));
        let rules = Rules::default();
        assert_eq!(
            would(&rules, &seen, false, &by(&kubectl), now),
            Would::Coalesce
        );
        // Another client would be refused, as a waiter of another client is.
        let other = client("other");
        assert_eq!(
            would(&rules, &seen, false, &by(&other), now).reason(),
            Some(RefusalReason::ClientMismatch)
        );
    }

    #[test]
    fn inside_the_window_would_replay_and_after_it_would_refuse() {
        let kubectl = client("kubectl");
        let seen = rotated(at("10.0.0.1", &kubectl), Duration::from_millis(200));
        let rules = Rules::default();
        let inside = T0.plus(Duration::from_millis(200) + rules.grace_period / 2);
        assert_eq!(
            would(&rules, &seen, false, &by(&kubectl), inside),
            Would::Replay
        );
        let after = T0.plus(Duration::from_millis(200) + rules.grace_period);
        assert_eq!(
            would(&rules, &seen, false, &by(&kubectl), after).reason(),
            Some(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn the_reuse_cap_and_the_successor_count_as_in_enforce() {
        let kubectl = client("kubectl");
        let rules = Rules {
            max_reuses: 2,
            ..Rules::default()
        };
        let mut seen = rotated(at("10.0.0.1", &kubectl), Duration::ZERO);
        seen.replays = 2;
        let now = T0.plus(Duration::from_secs(1));
        assert_eq!(
            would(&rules, &seen, false, &by(&kubectl), now).reason(),
            Some(RefusalReason::ReuseLimit)
        );
        seen.replays = 0;
        seen.superseded = Some(T0.plus(Duration::from_millis(10)));
        let late = T0.plus(rules.min_replay_window + Duration::from_millis(1));
        assert_eq!(
            would(&rules, &seen, false, &by(&kubectl), late).reason(),
            Some(RefusalReason::Superseded)
        );
    }

    #[test]
    fn a_theft_signal_would_revoke_the_family_under_revoke_family() {
        let kubectl = client("kubectl");
        let rules = Rules {
            on_replay: OnReplay::RevokeFamily,
            ..Rules::default()
        };
        let seen = rotated(at("10.0.0.1", &kubectl), Duration::ZERO);
        let late = T0.plus(rules.grace_period + Duration::from_secs(1));
        assert_eq!(
            would(&rules, &seen, false, &by(&kubectl), late),
            Would::Refuse {
                reason: RefusalReason::AfterGrace,
                revoke_family: true
            }
        );
        // A member of a family enforce would have revoked is refused, revoking nothing more.
        assert_eq!(
            would(&rules, &seen, true, &by(&kubectl), T0),
            Would::Refuse {
                reason: RefusalReason::FamilyRevoked,
                revoke_family: false
            }
        );
    }

    #[test]
    fn back_to_enforce_no_answer_of_a_rotation_before_the_switch_is_replayed() {
        let kubectl = client("kubectl");
        let enforcing = Policy::default();
        let mut observing = Policy::default();
        observing.defaults.mode = Mode::Observe;
        observing.per_client.insert(
            "k9s".to_owned(),
            Rules {
                mode: Mode::Enforce,
                ..Rules::default()
            },
        );
        carry_mode_switches(&enforcing, &mut observing, T0);
        assert_eq!(observing.defaults.observed_until, None);
        let switch = T0.plus(Duration::from_secs(10));
        let mut back = Policy::default();
        back.per_client.insert("k9s".to_owned(), Rules::default());
        carry_mode_switches(&observing, &mut back, switch);
        assert_eq!(back.defaults.observed_until, Some(switch));
        assert_eq!(
            back.rules_for("k9s").observed_until,
            None,
            "k9s never observed"
        );
        // Carried over by later reloads that do not switch.
        let mut later = Policy::default();
        carry_mode_switches(&back, &mut later, switch.plus(Duration::from_secs(5)));
        assert_eq!(later.defaults.observed_until, Some(switch));

        // A rotation made before the switch is refused after it; one made after is replayed.
        let rules = &later.defaults;
        let before = rotation_at(&kubectl, UnixMillis(switch.0 - 1_000));
        let who = by(&kubectl);
        assert_eq!(
            decide_replay(rules, &before, &who, switch.plus(Duration::from_millis(1))),
            Decision::Refuse {
                reason: RefusalReason::Superseded,
                revoke_family: false
            }
        );
        let after = rotation_at(&kubectl, switch.plus(Duration::from_millis(10)));
        assert_eq!(
            decide_replay(rules, &after, &who, switch.plus(Duration::from_millis(20))),
            Decision::Replay
        );
    }

    fn rotation_at(client: &ClientIdentity, first_use: UnixMillis) -> Rotation<'_> {
        Rotation {
            first_use,
            client,
            source: "10.0.0.1".parse().unwrap(),
            replays: 0,
            answer_available: true,
            superseded: None,
            closed: None,
        }
    }

    #[test]
    fn the_idp_verdict_follows_the_status_class() {
        assert_eq!(IdpVerdict::of_status(200), IdpVerdict::Success);
        assert_eq!(IdpVerdict::of_status(400), IdpVerdict::Refused);
        assert_eq!(IdpVerdict::of_status(401), IdpVerdict::Refused);
        assert_eq!(IdpVerdict::of_status(503), IdpVerdict::Error);
        assert_eq!(IdpVerdict::of_status(302), IdpVerdict::Error);
    }
}
