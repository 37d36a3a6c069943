//! The rotation policy: the state table of `DESIGN.md` as a pure function of
//! (token state, request facts, now). No I/O, no tokio, no pingora: every rule is
//! unit-tested here by moving time instead of sleeping.

use crate::clock::UnixMillis;
use crate::credentials::ClientIdentity;
use std::net::IpAddr;
use std::time::Duration;

/// The rotation rules in force (from `[rotation]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// How long after the first successful exchange a replay may get the same answer.
    /// Zero means strict one-time use.
    pub grace_period: Duration,
    /// Replays allowed per token inside the window, waiters included.
    pub max_reuses: u32,
    /// Delay between the answers to waiters released by one exchange.
    pub replay_spacing: Duration,
    /// Cap on the delay any one waiter gets from spacing.
    pub max_replay_delay: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            grace_period: Duration::from_secs(5),
            max_reuses: 10,
            replay_spacing: Duration::from_millis(50),
            max_replay_delay: Duration::from_secs(2),
        }
    }
}

/// Who presents the token now.
#[derive(Debug, Clone, Copy)]
pub struct Presenter<'a> {
    /// The client identity (id plus secret fingerprint).
    pub client: &'a ClientIdentity,
    /// The client's address.
    pub source: IpAddr,
}

/// What the gate remembers of a token's successful rotation, as the policy needs it.
#[derive(Debug, Clone, Copy)]
pub struct Rotation<'a> {
    /// When the upstream answered the one exchange.
    pub first_use: UnixMillis,
    /// The client that made the exchange.
    pub client: &'a ClientIdentity,
    /// Replays answered so far.
    pub replays: u32,
    /// Whether the remembered answer is still held.
    pub answer_available: bool,
}

/// The state of one fingerprint.
#[derive(Debug, Clone, Copy)]
pub enum TokenState<'a> {
    /// Nothing known: the IdP alone decides.
    Unknown,
    /// An exchange for this token is under way.
    InFlight,
    /// The token was rotated: its tombstone lives.
    Rotated(Rotation<'a>),
}

/// Why a presentation was refused. The label is a metric label value and an audit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The grace window has passed (or is empty: grace 0).
    AfterGrace,
    /// Another client presented the token.
    ClientMismatch,
    /// The token was replayed `max_reuses` times already.
    ReuseLimit,
}

impl RefusalReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [RefusalReason; 3] = [
        RefusalReason::AfterGrace,
        RefusalReason::ClientMismatch,
        RefusalReason::ReuseLimit,
    ];

    /// The stable label of this reason.
    pub fn label(&self) -> &'static str {
        match self {
            RefusalReason::AfterGrace => "after_grace",
            RefusalReason::ClientMismatch => "client_mismatch",
            RefusalReason::ReuseLimit => "reuse_limit",
        }
    }

    /// The RFC 6749 `error_description` a refused client sees.
    pub fn description(&self) -> &'static str {
        match self {
            RefusalReason::AfterGrace => "refresh token has already been used",
            RefusalReason::ClientMismatch => "refresh token was issued to another client",
            RefusalReason::ReuseLimit => "refresh token reuse limit reached",
        }
    }
}

/// What the gate does with one presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// First use: claim the token and forward the exchange.
    Forward,
    /// An exchange is under way: wait for its outcome, then decide as a replay.
    Wait,
    /// Answer with the remembered answer (and count the replay).
    Replay,
    /// Refuse with `400 invalid_grant`.
    Refuse(RefusalReason),
}

/// Decide one presentation of a token in `state`.
pub fn decide(
    rules: &Rules,
    state: &TokenState<'_>,
    who: &Presenter<'_>,
    now: UnixMillis,
) -> Decision {
    match state {
        TokenState::Unknown => Decision::Forward,
        TokenState::InFlight => Decision::Wait,
        TokenState::Rotated(rotation) => decide_replay(rules, rotation, who, now),
    }
}

/// Decide a replay of a rotated token (also used for waiters once the exchange succeeded).
/// The window is `[first_use, first_use + grace_period)`: exactly at its end it has passed.
pub fn decide_replay(
    rules: &Rules,
    rotation: &Rotation<'_>,
    who: &Presenter<'_>,
    now: UnixMillis,
) -> Decision {
    let window_end = rotation.first_use.plus(rules.grace_period);
    if now >= window_end || !rotation.answer_available {
        return Decision::Refuse(RefusalReason::AfterGrace);
    }
    if who.client != rotation.client {
        return Decision::Refuse(RefusalReason::ClientMismatch);
    }
    if rotation.replays >= rules.max_reuses {
        return Decision::Refuse(RefusalReason::ReuseLimit);
    }
    Decision::Replay
}

/// How long the waiter in `slot` (1 for the first waiter) is held after the exchange ends,
/// so that kubectl processes sharing a kubeconfig do not all write it at the same instant.
pub fn release_delay(rules: &Rules, slot: u32) -> Duration {
    rules
        .replay_spacing
        .saturating_mul(slot)
        .min(rules.max_replay_delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const T0: UnixMillis = UnixMillis(1_700_000_000_000);

    fn client(id: &str) -> ClientIdentity {
        ClientIdentity {
            client_id: id.into(),
            secret: None,
        }
    }

    fn who(c: &ClientIdentity) -> Presenter<'_> {
        Presenter {
            client: c,
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    fn rotated(c: &ClientIdentity, replays: u32) -> Rotation<'_> {
        Rotation {
            first_use: T0,
            client: c,
            replays,
            answer_available: true,
        }
    }

    #[test]
    fn unknown_is_forwarded_and_in_flight_waits() {
        let k = client("k");
        let rules = Rules::default();
        assert_eq!(
            decide(&rules, &TokenState::Unknown, &who(&k), T0),
            Decision::Forward
        );
        assert_eq!(
            decide(&rules, &TokenState::InFlight, &who(&k), T0),
            Decision::Wait
        );
    }

    #[test]
    fn window_boundary_is_exclusive() {
        let k = client("k");
        let rules = Rules::default();
        let state = TokenState::Rotated(rotated(&k, 0));
        let last_inside = T0.plus(rules.grace_period - Duration::from_millis(1));
        assert_eq!(
            decide(&rules, &state, &who(&k), last_inside),
            Decision::Replay
        );
        let at_end = T0.plus(rules.grace_period);
        assert_eq!(
            decide(&rules, &state, &who(&k), at_end),
            Decision::Refuse(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn grace_zero_refuses_every_replay_even_at_first_use_time() {
        let k = client("k");
        let rules = Rules {
            grace_period: Duration::ZERO,
            ..Rules::default()
        };
        let state = TokenState::Rotated(rotated(&k, 0));
        assert_eq!(
            decide(&rules, &state, &who(&k), T0),
            Decision::Refuse(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn reuse_cap_is_exact() {
        let k = client("k");
        let rules = Rules {
            max_reuses: 3,
            ..Rules::default()
        };
        assert_eq!(
            decide_replay(&rules, &rotated(&k, 2), &who(&k), T0),
            Decision::Replay
        );
        assert_eq!(
            decide_replay(&rules, &rotated(&k, 3), &who(&k), T0),
            Decision::Refuse(RefusalReason::ReuseLimit)
        );
    }

    #[test]
    fn another_client_is_refused_inside_the_window() {
        let k = client("k");
        let other = client("other");
        assert_eq!(
            decide_replay(&Rules::default(), &rotated(&k, 0), &who(&other), T0),
            Decision::Refuse(RefusalReason::ClientMismatch)
        );
    }

    #[test]
    fn after_grace_wins_over_other_reasons() {
        let k = client("k");
        let other = client("other");
        let rules = Rules::default();
        let late = T0.plus(Duration::from_secs(60));
        assert_eq!(
            decide_replay(&rules, &rotated(&k, 99), &who(&other), late),
            Decision::Refuse(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn a_lost_answer_is_never_replayed() {
        let k = client("k");
        let mut rotation = rotated(&k, 0);
        rotation.answer_available = false;
        assert_eq!(
            decide_replay(&Rules::default(), &rotation, &who(&k), T0),
            Decision::Refuse(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn release_delay_spaces_and_caps() {
        let rules = Rules {
            replay_spacing: Duration::from_millis(50),
            max_replay_delay: Duration::from_millis(120),
            ..Rules::default()
        };
        assert_eq!(release_delay(&rules, 0), Duration::ZERO);
        assert_eq!(release_delay(&rules, 1), Duration::from_millis(50));
        assert_eq!(release_delay(&rules, 2), Duration::from_millis(100));
        assert_eq!(release_delay(&rules, 3), Duration::from_millis(120));
        let none = Rules {
            replay_spacing: Duration::ZERO,
            ..rules
        };
        assert_eq!(release_delay(&none, 7), Duration::ZERO);
    }

    #[test]
    fn reason_labels_are_the_metric_contract() {
        let labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["after_grace", "client_mismatch", "reuse_limit"]);
    }
}
