//! The rotation policy: the state table of `docs/DESIGN.md` as a pure function of
//! (token state, request facts, now). No I/O, no tokio, no pingora: every rule is
//! unit-tested here by moving time instead of sleeping.

pub mod detached;
pub mod grace_advice;
pub mod observe;
pub mod source_cap;

use crate::clock::UnixMillis;
use crate::oauth::credentials::ClientIdentity;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// `bind_source`: how strictly a replay inside the window must come from the first use's
/// address. The configuration deserializes straight into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindSource {
    /// Any address (`"off"`).
    #[default]
    Off,
    /// The same address (`"ip"`).
    Ip,
    /// The same network (`"subnet"`): see [`SubnetPrefixes`].
    Subnet,
}

/// The networks of [`BindSource::Subnet`] (`subnet_ipv4_prefix`, `subnet_ipv6_prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPrefixes {
    /// IPv4 addresses sharing this many leading bits are one source.
    pub v4: u8,
    /// IPv6 addresses sharing this many leading bits are one source.
    pub v6: u8,
}

impl Default for SubnetPrefixes {
    fn default() -> Self {
        SubnetPrefixes { v4: 24, v6: 64 }
    }
}

impl BindSource {
    /// Whether `now` counts as the same source as `first` (`subnet` applies to `Subnet`).
    pub fn same_source(&self, subnet: SubnetPrefixes, first: IpAddr, now: IpAddr) -> bool {
        let first = canonical(first);
        let now = canonical(now);
        match self {
            BindSource::Off => true,
            BindSource::Ip => first == now,
            BindSource::Subnet => match (first, now) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    ipnet::Ipv4Net::new(a, subnet.v4).is_ok_and(|net| net.contains(&b))
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    ipnet::Ipv6Net::new(a, subnet.v6).is_ok_and(|net| net.contains(&b))
                }
                _ => false,
            },
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `on_replay`: what a refused replay does beyond the refusal. The configuration
/// deserializes straight into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnReplay {
    /// Refuse the replay only (`"refuse"`).
    #[default]
    Refuse,
    /// Also revoke the whole token family, RFC 9700 §4.14.2 (`"revoke-family"`).
    RevokeFamily,
}

/// The rules for one client (the defaults of `[rotation]`, or `[clients."id"]`). Its
/// `Default` is the documented default of each `[rotation]` key it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// How long after the first successful exchange a replay may get the same answer.
    /// Zero means strict one-time use.
    pub grace_period: Duration,
    /// Replays allowed per token inside the window, waiters included.
    pub max_reuses: u32,
    /// Whether an in-window replay must come from the first use's source.
    pub bind_source: BindSource,
    /// The networks of `BindSource::Subnet` (the same for every client).
    pub subnet: SubnetPrefixes,
    /// What a refused replay does to the family.
    pub on_replay: OnReplay,
    /// `close_on_successor_use`: the first presentation of a token's successor closes the
    /// token's window (later replays are refused `superseded`), though never before
    /// `min_replay_window` after its first use (the same for every client).
    pub close_on_successor_use: bool,
    /// `min_replay_window`: how long after its first use a token's window stays open
    /// however early its successor is presented (the same for every client).
    pub min_replay_window: Duration,
    /// `mode`: whether the decisions are applied or only observed, for this client's
    /// presentations.
    pub mode: observe::Mode,
    /// When this client's presentations were last switched from observe back to enforce
    /// (a reload; never from the file): a rotation made before it may have been superseded
    /// at the IdP while the gate only observed, so its answer is never replayed after it
    /// (`superseded`).
    pub observed_until: Option<UnixMillis>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            grace_period: Duration::from_secs(5),
            max_reuses: 10,
            bind_source: BindSource::Off,
            subnet: SubnetPrefixes::default(),
            on_replay: OnReplay::Refuse,
            close_on_successor_use: true,
            // `max_replay_delay`'s default: a waiter held the longest still finds the
            // window open.
            min_replay_window: Duration::from_secs(2),
            mode: observe::Mode::Enforce,
            observed_until: None,
        }
    }
}

/// Every rule in force: per-client rules and the waiter spacing. Its `Default` holds the
/// documented defaults of `replay_spacing` and `max_replay_delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rules of clients without their own.
    pub defaults: Rules,
    /// Rules by client id.
    pub per_client: HashMap<String, Rules>,
    /// Delay between the answers to waiters released by one exchange.
    pub replay_spacing: Duration,
    /// Cap on the delay any one waiter gets from spacing.
    pub max_replay_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::uniform(Rules::default())
    }
}

impl Policy {
    /// The same rules for every client, default spacing.
    pub fn uniform(rules: Rules) -> Self {
        Policy {
            defaults: rules,
            per_client: HashMap::new(),
            replay_spacing: Duration::from_millis(50),
            max_replay_delay: Duration::from_secs(2),
        }
    }

    /// The rules of `client_id`.
    pub fn rules_for(&self, client_id: &str) -> &Rules {
        self.per_client.get(client_id).unwrap_or(&self.defaults)
    }

    /// The longest grace period of any client (how long answers must be kept).
    pub fn longest_grace(&self) -> Duration {
        self.per_client
            .values()
            .map(|r| r.grace_period)
            .chain([self.defaults.grace_period])
            .max()
            .unwrap_or_default()
    }

    /// Whether any client's rules close a window on the successor's use (whether a store
    /// must record the successor's first presentation at all).
    pub fn closes_on_successor_use(&self) -> bool {
        self.defaults.close_on_successor_use
            || self.per_client.values().any(|r| r.close_on_successor_use)
    }

    /// How long the waiter in `slot` (1 for the first waiter) is held after the exchange
    /// ends, so that kubectl processes sharing a kubeconfig do not all write it at once.
    pub fn release_delay(&self, slot: u32) -> Duration {
        self.replay_spacing
            .saturating_mul(slot)
            .min(self.max_replay_delay)
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
    /// The address the exchange came from.
    pub source: IpAddr,
    /// Replays answered so far.
    pub replays: u32,
    /// Whether the remembered answer is still held.
    pub answer_available: bool,
    /// When the token's successor was first presented, if it was (and the store recorded
    /// it): with `close_on_successor_use`, the window closes then, though never before
    /// `first_use + min_replay_window`. A waiter joined to the token's own exchange is
    /// decided with `None` here: its window stays open.
    pub superseded: Option<UnixMillis>,
    /// A closing of the window for a reason of its own (a revocation the IdP confirmed),
    /// when one applies to this token's family.
    pub closed: Option<WindowClose>,
}

/// A window closed at a moment, for a reason: every replay of a token rotated at or before
/// `at` (its `first_use <= at`) and presented at or after `at` is refused with `reason`.
/// Tokens rotated after `at` are not affected: the IdP decided their first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClose {
    /// When the window closed.
    pub at: UnixMillis,
    /// The refusal of every later replay (`RefusalReason::Revoked` for a revocation).
    pub reason: RefusalReason,
}

impl WindowClose {
    /// Whether this closing refuses a replay, at `now`, of a token first used at
    /// `first_use`.
    pub fn applies(&self, first_use: UnixMillis, now: UnixMillis) -> bool {
        first_use <= self.at && now >= self.at
    }
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
    /// The token's family was revoked.
    FamilyRevoked,
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
    /// The replay came from another source than the first use (`bind_source`).
    SourceMismatch,
    /// The token's family was revoked after a detected replay.
    FamilyRevoked,
    /// The shared store could not be reached and `on_store_error = "fail-closed"`: the
    /// gate answers `503 temporarily_unavailable` (never decided by the policy).
    StoreUnavailable,
    /// The token (or a member of its family) was revoked at the IdP (RFC 7009) through the
    /// gate after this token's rotation: its window closed then.
    Revoked,
    /// The token's successor was presented, so its window closed
    /// (`close_on_successor_use`, never before `min_replay_window` after the first use).
    /// A stale generation of a client that moved on, not theft.
    Superseded,
}

impl RefusalReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::AfterGrace,
        RefusalReason::ClientMismatch,
        RefusalReason::ReuseLimit,
        RefusalReason::SourceMismatch,
        RefusalReason::FamilyRevoked,
        RefusalReason::StoreUnavailable,
        RefusalReason::Revoked,
        RefusalReason::Superseded,
    ];

    /// The stable label of this reason.
    pub fn label(&self) -> &'static str {
        match self {
            RefusalReason::AfterGrace => "after_grace",
            RefusalReason::ClientMismatch => "client_mismatch",
            RefusalReason::ReuseLimit => "reuse_limit",
            RefusalReason::SourceMismatch => "source_mismatch",
            RefusalReason::FamilyRevoked => "family_revoked",
            RefusalReason::StoreUnavailable => "store_unavailable",
            RefusalReason::Revoked => "revoked",
            RefusalReason::Superseded => "superseded",
        }
    }

    /// The reason whose [`label`](Self::label) is `label` (for a store that keeps it as text).
    pub fn from_label(label: &str) -> Option<RefusalReason> {
        RefusalReason::ALL.into_iter().find(|r| r.label() == label)
    }

    /// The RFC 6749 `error_description` a refused client sees.
    pub fn description(&self) -> &'static str {
        match self {
            RefusalReason::AfterGrace => "refresh token has already been used",
            RefusalReason::ClientMismatch => "refresh token was issued to another client",
            RefusalReason::ReuseLimit => "refresh token reuse limit reached",
            RefusalReason::SourceMismatch => "refresh token replayed from another source",
            RefusalReason::FamilyRevoked => "refresh token family revoked after a detected replay",
            RefusalReason::StoreUnavailable => {
                "the refresh token store is unavailable; retry shortly"
            }
            RefusalReason::Revoked => "refresh token was revoked",
            RefusalReason::Superseded => "refresh token was superseded by its successor",
        }
    }

    /// Whether this refusal signals a stolen token (and so revokes the family under
    /// `on_replay = "revoke-family"`). Exceeding the reuse cap from the right client and
    /// source is a misbehaving tool, not theft. `superseded` is a client that moved on to
    /// the successor (a late process of a kubeconfig's readers), and `revoked` follows a
    /// revocation the IdP already made: neither revokes anything more (so neither asks the
    /// IdP to revoke again).
    pub fn signals_theft(&self) -> bool {
        matches!(
            self,
            RefusalReason::AfterGrace
                | RefusalReason::ClientMismatch
                | RefusalReason::SourceMismatch
        )
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
    /// Refuse with `400 invalid_grant`; `revoke_family` when the family must be revoked.
    Refuse {
        /// Why.
        reason: RefusalReason,
        /// Whether this refusal revokes the token's family.
        revoke_family: bool,
    },
}

impl Decision {
    fn refuse(reason: RefusalReason, rules: &Rules) -> Decision {
        Decision::Refuse {
            reason,
            revoke_family: rules.on_replay == OnReplay::RevokeFamily && reason.signals_theft(),
        }
    }
}

/// Decide one presentation of a token in `state`, under the rules of the client that owns
/// the token (the first use's client; for an unknown token, the presenter's).
pub fn decide(
    rules: &Rules,
    state: &TokenState<'_>,
    who: &Presenter<'_>,
    now: UnixMillis,
) -> Decision {
    match state {
        TokenState::Unknown => Decision::Forward,
        TokenState::InFlight => Decision::Wait,
        TokenState::FamilyRevoked => Decision::Refuse {
            reason: RefusalReason::FamilyRevoked,
            revoke_family: false,
        },
        TokenState::Rotated(rotation) => decide_replay(rules, rotation, who, now),
    }
}

/// When the successor's use closes the window of `rotation` (None: it does not, or not
/// yet): `max(superseded, first_use + min_replay_window)`, with `close_on_successor_use`.
pub fn superseded_at(rules: &Rules, rotation: &Rotation<'_>) -> Option<UnixMillis> {
    let presented = rotation
        .superseded
        .filter(|_| rules.close_on_successor_use)?;
    Some(presented.max(rotation.first_use.plus(rules.min_replay_window)))
}

/// Decide a replay of a rotated token (also used for waiters once the exchange succeeded).
/// The window is `[first_use, first_use + grace_period)`: exactly at its end it has passed.
/// Checks in order: a closing that applies (`revoked`: first, so that a revoked token
/// replayed late is never taken for theft and revoked again), the window, the client, the
/// source, the successor's use (`superseded`: after client and source, so that another
/// client's replay still signals theft), the reuse cap.
pub fn decide_replay(
    rules: &Rules,
    rotation: &Rotation<'_>,
    who: &Presenter<'_>,
    now: UnixMillis,
) -> Decision {
    if let Some(closed) = rotation.closed {
        if closed.applies(rotation.first_use, now) {
            return Decision::refuse(closed.reason, rules);
        }
    }
    let window_end = rotation.first_use.plus(rules.grace_period);
    if now >= window_end || !rotation.answer_available {
        return Decision::refuse(RefusalReason::AfterGrace, rules);
    }
    if who.client != rotation.client {
        return Decision::refuse(RefusalReason::ClientMismatch, rules);
    }
    if !rules
        .bind_source
        .same_source(rules.subnet, rotation.source, who.source)
    {
        return Decision::refuse(RefusalReason::SourceMismatch, rules);
    }
    if superseded_at(rules, rotation).is_some_and(|at| now >= at) {
        return Decision::refuse(RefusalReason::Superseded, rules);
    }
    if rules
        .observed_until
        .is_some_and(|until| rotation.first_use < until && now >= until)
    {
        return Decision::refuse(RefusalReason::Superseded, rules);
    }
    if rotation.replays >= rules.max_reuses {
        return Decision::refuse(RefusalReason::ReuseLimit, rules);
    }
    Decision::Replay
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

    fn localhost() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    fn who(c: &ClientIdentity) -> Presenter<'_> {
        Presenter {
            client: c,
            source: localhost(),
        }
    }

    fn from<'a>(c: &'a ClientIdentity, ip: &str) -> Presenter<'a> {
        Presenter {
            client: c,
            source: ip.parse().unwrap(),
        }
    }

    fn rotated(c: &ClientIdentity, replays: u32) -> Rotation<'_> {
        Rotation {
            first_use: T0,
            client: c,
            source: localhost(),
            replays,
            answer_available: true,
            superseded: None,
            closed: None,
        }
    }

    fn refused(reason: RefusalReason) -> Decision {
        Decision::Refuse {
            reason,
            revoke_family: false,
        }
    }

    #[test]
    fn unknown_is_forwarded_in_flight_waits_revoked_is_refused() {
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
        assert_eq!(
            decide(&rules, &TokenState::FamilyRevoked, &who(&k), T0),
            refused(RefusalReason::FamilyRevoked)
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
            refused(RefusalReason::AfterGrace)
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
            refused(RefusalReason::AfterGrace)
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
            refused(RefusalReason::ReuseLimit)
        );
    }

    #[test]
    fn another_client_is_refused_inside_the_window() {
        let k = client("k");
        let other = client("other");
        assert_eq!(
            decide_replay(&Rules::default(), &rotated(&k, 0), &who(&other), T0),
            refused(RefusalReason::ClientMismatch)
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
            refused(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn a_lost_answer_is_never_replayed() {
        let k = client("k");
        let mut rotation = rotated(&k, 0);
        rotation.answer_available = false;
        assert_eq!(
            decide_replay(&Rules::default(), &rotation, &who(&k), T0),
            refused(RefusalReason::AfterGrace)
        );
    }

    #[test]
    fn source_binding_by_ip() {
        let k = client("k");
        let rules = Rules {
            bind_source: BindSource::Ip,
            ..Rules::default()
        };
        let mut rotation = rotated(&k, 0);
        rotation.source = "10.0.0.5".parse().unwrap();
        assert_eq!(
            decide_replay(&rules, &rotation, &from(&k, "10.0.0.5"), T0),
            Decision::Replay
        );
        assert_eq!(
            decide_replay(&rules, &rotation, &from(&k, "10.0.0.6"), T0),
            refused(RefusalReason::SourceMismatch)
        );
        // An IPv4-mapped IPv6 address is the same source.
        assert_eq!(
            decide_replay(&rules, &rotation, &from(&k, "::ffff:10.0.0.5"), T0),
            Decision::Replay
        );
    }

    #[test]
    fn source_binding_by_subnet_v4_and_v6() {
        let nets = SubnetPrefixes { v4: 24, v6: 64 };
        let same = |b: BindSource, x: &str, y: &str| {
            b.same_source(nets, x.parse().unwrap(), y.parse().unwrap())
        };
        let subnet = BindSource::Subnet;
        assert!(same(subnet, "192.168.1.10", "192.168.1.200"));
        assert!(!same(subnet, "192.168.1.10", "192.168.2.10"));
        assert!(same(subnet, "2001:db8:1:2::1", "2001:db8:1:2:ffff::9"));
        assert!(!same(subnet, "2001:db8:1:2::1", "2001:db8:1:3::1"));
        assert!(!same(subnet, "192.168.1.10", "2001:db8::1"));
        assert!(same(BindSource::Off, "1.1.1.1", "2001:db8::1"));
    }

    #[test]
    fn source_is_checked_after_client_and_before_the_cap() {
        let k = client("k");
        let other = client("other");
        let rules = Rules {
            bind_source: BindSource::Ip,
            max_reuses: 0,
            ..Rules::default()
        };
        let rotation = rotated(&k, 0);
        assert_eq!(
            decide_replay(&rules, &rotation, &from(&other, "10.9.9.9"), T0),
            refused(RefusalReason::ClientMismatch)
        );
        assert_eq!(
            decide_replay(&rules, &rotation, &from(&k, "10.9.9.9"), T0),
            refused(RefusalReason::SourceMismatch)
        );
    }

    #[test]
    fn revoke_family_only_for_theft_signals() {
        let k = client("k");
        let other = client("other");
        let rules = Rules {
            on_replay: OnReplay::RevokeFamily,
            max_reuses: 1,
            ..Rules::default()
        };
        let late = T0.plus(Duration::from_secs(60));
        assert_eq!(
            decide_replay(&rules, &rotated(&k, 0), &who(&k), late),
            Decision::Refuse {
                reason: RefusalReason::AfterGrace,
                revoke_family: true
            }
        );
        assert_eq!(
            decide_replay(&rules, &rotated(&k, 0), &who(&other), T0),
            Decision::Refuse {
                reason: RefusalReason::ClientMismatch,
                revoke_family: true
            }
        );
        assert_eq!(
            decide_replay(&rules, &rotated(&k, 1), &who(&k), T0),
            Decision::Refuse {
                reason: RefusalReason::ReuseLimit,
                revoke_family: false
            }
        );
    }

    #[test]
    fn per_client_rules_and_longest_grace() {
        let mut policy = Policy::default();
        policy.per_client.insert(
            "k9s".to_owned(),
            Rules {
                grace_period: Duration::from_secs(30),
                ..Rules::default()
            },
        );
        assert_eq!(
            policy.rules_for("k9s").grace_period,
            Duration::from_secs(30)
        );
        assert_eq!(
            policy.rules_for("kubectl").grace_period,
            Duration::from_secs(5)
        );
        assert_eq!(policy.longest_grace(), Duration::from_secs(30));
    }

    #[test]
    fn release_delay_spaces_and_caps() {
        let policy = Policy {
            replay_spacing: Duration::from_millis(50),
            max_replay_delay: Duration::from_millis(120),
            ..Policy::default()
        };
        assert_eq!(policy.release_delay(0), Duration::ZERO);
        assert_eq!(policy.release_delay(1), Duration::from_millis(50));
        assert_eq!(policy.release_delay(2), Duration::from_millis(100));
        assert_eq!(policy.release_delay(3), Duration::from_millis(120));
        let none = Policy {
            replay_spacing: Duration::ZERO,
            ..policy
        };
        assert_eq!(none.release_delay(7), Duration::ZERO);
    }

    fn superseded_at_time(c: &ClientIdentity, at: UnixMillis) -> Rotation<'_> {
        Rotation {
            superseded: Some(at),
            ..rotated(c, 0)
        }
    }

    #[test]
    fn a_successor_used_early_closes_the_window_at_min_replay_window() {
        let k = client("k");
        let rules = Rules::default();
        // The successor came 100 ms after the rotation: the window stays open until
        // first_use + min_replay_window (2 s), then closes.
        let rotation = superseded_at_time(&k, T0.plus(Duration::from_millis(100)));
        let before = T0.plus(rules.min_replay_window - Duration::from_millis(1));
        assert_eq!(
            decide_replay(&rules, &rotation, &who(&k), before),
            Decision::Replay
        );
        assert_eq!(
            decide_replay(
                &rules,
                &rotation,
                &who(&k),
                T0.plus(rules.min_replay_window)
            ),
            refused(RefusalReason::Superseded)
        );
    }

    #[test]
    fn a_successor_used_late_closes_the_window_when_it_is_used() {
        let k = client("k");
        let rules = Rules::default();
        let used = T0.plus(Duration::from_secs(3));
        let rotation = superseded_at_time(&k, used);
        assert_eq!(
            decide_replay(&rules, &rotation, &who(&k), used.plus(Duration::ZERO)),
            refused(RefusalReason::Superseded)
        );
        // Before the successor's use (a presentation decided with a stale clock) it is open.
        assert_eq!(
            decide_replay(
                &rules,
                &rotation,
                &who(&k),
                T0.plus(Duration::from_millis(2_999))
            ),
            Decision::Replay
        );
        assert_eq!(superseded_at(&rules, &rotation), Some(used));
    }

    #[test]
    fn without_close_on_successor_use_the_window_stays_open() {
        let k = client("k");
        let rules = Rules {
            close_on_successor_use: false,
            ..Rules::default()
        };
        let rotation = superseded_at_time(&k, T0);
        assert_eq!(superseded_at(&rules, &rotation), None);
        assert_eq!(
            decide_replay(&rules, &rotation, &who(&k), T0.plus(Duration::from_secs(4))),
            Decision::Replay
        );
    }

    #[test]
    fn superseded_never_revokes_the_family() {
        let k = client("k");
        let rules = Rules {
            on_replay: OnReplay::RevokeFamily,
            min_replay_window: Duration::ZERO,
            ..Rules::default()
        };
        let rotation = superseded_at_time(&k, T0);
        assert_eq!(
            decide_replay(&rules, &rotation, &who(&k), T0.plus(Duration::from_secs(1))),
            Decision::Refuse {
                reason: RefusalReason::Superseded,
                revoke_family: false
            }
        );
        assert!(!RefusalReason::Superseded.signals_theft());
    }

    #[test]
    fn a_superseded_token_from_another_client_is_still_a_mismatch() {
        let k = client("k");
        let other = client("other");
        let rules = Rules {
            on_replay: OnReplay::RevokeFamily,
            ..Rules::default()
        };
        let rotation = superseded_at_time(&k, T0);
        let now = T0.plus(Duration::from_secs(3));
        assert_eq!(
            decide_replay(&rules, &rotation, &who(&other), now),
            Decision::Refuse {
                reason: RefusalReason::ClientMismatch,
                revoke_family: true
            }
        );
        // After the window it is after_grace, as without a successor.
        let late = T0.plus(Duration::from_secs(60));
        assert_eq!(
            decide_replay(&rules, &rotation, &who(&k), late),
            Decision::Refuse {
                reason: RefusalReason::AfterGrace,
                revoke_family: true
            }
        );
    }

    #[test]
    fn a_revocation_closes_the_window_from_its_moment_and_never_revokes_again() {
        let k = client("k");
        let other = client("other");
        let rules = Rules {
            on_replay: OnReplay::RevokeFamily,
            ..Rules::default()
        };
        let at = T0.plus(Duration::from_secs(1));
        let rotation = Rotation {
            closed: Some(WindowClose {
                at,
                reason: RefusalReason::Revoked,
            }),
            ..rotated(&k, 0)
        };
        let revoked = Decision::Refuse {
            reason: RefusalReason::Revoked,
            revoke_family: false,
        };
        assert_eq!(
            decide_replay(
                &rules,
                &rotation,
                &who(&k),
                T0.plus(Duration::from_millis(999))
            ),
            Decision::Replay,
            "a replay before the revocation was answered"
        );
        assert_eq!(decide_replay(&rules, &rotation, &who(&k), at), revoked);
        // Late, or by another client: still revoked, never after_grace (no second
        // revocation at the IdP).
        let late = T0.plus(Duration::from_secs(60));
        assert_eq!(decide_replay(&rules, &rotation, &who(&k), late), revoked);
        assert_eq!(decide_replay(&rules, &rotation, &who(&other), at), revoked);
        assert!(!RefusalReason::Revoked.signals_theft());
    }

    #[test]
    fn a_revocation_spares_tokens_rotated_after_it() {
        let k = client("k");
        let close = WindowClose {
            at: UnixMillis(T0.0 - 1),
            reason: RefusalReason::Revoked,
        };
        assert!(!close.applies(T0, T0.plus(Duration::from_secs(1))));
        assert!(close.applies(UnixMillis(T0.0 - 1), T0));
        let rotation = Rotation {
            closed: Some(close),
            ..rotated(&k, 0)
        };
        assert_eq!(
            decide_replay(&Rules::default(), &rotation, &who(&k), T0),
            Decision::Replay
        );
    }

    #[test]
    fn labels_read_back() {
        for reason in RefusalReason::ALL {
            assert_eq!(RefusalReason::from_label(reason.label()), Some(reason));
        }
        assert_eq!(RefusalReason::from_label("nope"), None);
    }

    #[test]
    fn reason_labels_are_the_metric_contract() {
        let labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "after_grace",
                "client_mismatch",
                "reuse_limit",
                "source_mismatch",
                "family_revoked",
                "store_unavailable",
                "revoked",
                "superseded"
            ]
        );
    }
}
