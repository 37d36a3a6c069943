//! Audit events: what the SIEM reads. Each event is one log line on the `audit` target and
//! one metric increment, emitted together, so the two can never disagree.

use crate::clock::UnixMillis;
use crate::fingerprint::DisplayFingerprint;
use crate::metrics::{Metrics, RefreshOutcome};
use crate::policy::RefusalReason;
use std::net::IpAddr;

/// The tracing target of every audit event.
pub const TARGET: &str = "audit";

/// The event name of an answered replay (OpenUnison's name for the same event).
pub const EXPIRED_REFRESH_TOKEN_USED: &str = "ExpiredRefreshTokenUsed";
/// The event name of a refused replay.
pub const REFRESH_TOKEN_REUSE_REFUSED: &str = "RefreshTokenReuseRefused";

/// What every replay event says about the token and the two presentations.
#[derive(Debug, Clone)]
pub struct ReplayFacts<'a> {
    /// The display fingerprint of the token.
    pub token: DisplayFingerprint,
    /// The client id presenting it now.
    pub client_id: &'a str,
    /// The address presenting it now.
    pub client_ip: IpAddr,
    /// The client id of the first use.
    pub first_client_id: &'a str,
    /// The address of the first use.
    pub first_ip: IpAddr,
    /// The subject of the first use's id_token.
    pub subject: Option<&'a str>,
    /// When the first use was answered.
    pub first_use: UnixMillis,
    /// The display fingerprint of the token family.
    pub family: DisplayFingerprint,
    /// Whether this request waited for the exchange (coalesced) rather than came later.
    pub coalesced: bool,
}

/// A replay inside the window, answered with the remembered answer.
pub fn replay_answered(metrics: &Metrics, facts: &ReplayFacts<'_>, now: UnixMillis) {
    let outcome = if facts.coalesced {
        RefreshOutcome::Coalesced
    } else {
        RefreshOutcome::GraceReplay
    };
    metrics.refresh_outcome(outcome);
    tracing::info!(
        target: TARGET,
        event = EXPIRED_REFRESH_TOKEN_USED,
        token = %facts.token,
        family = %facts.family,
        client_id = facts.client_id,
        client_ip = %facts.client_ip,
        first_client_id = facts.first_client_id,
        first_ip = %facts.first_ip,
        subject = facts.subject.unwrap_or(""),
        since_first_use_ms = now.since(facts.first_use).as_millis() as u64,
        coalesced = facts.coalesced,
        "Expired token used within grace period"
    );
}

/// A replay refused by the gate.
pub fn replay_refused(
    metrics: &Metrics,
    facts: &ReplayFacts<'_>,
    reason: RefusalReason,
    now: UnixMillis,
) {
    metrics.refresh_outcome(RefreshOutcome::Refused);
    metrics.refused(reason);
    tracing::warn!(
        target: TARGET,
        event = REFRESH_TOKEN_REUSE_REFUSED,
        reason = reason.label(),
        token = %facts.token,
        family = %facts.family,
        client_id = facts.client_id,
        client_ip = %facts.client_ip,
        first_client_id = facts.first_client_id,
        first_ip = %facts.first_ip,
        subject = facts.subject.unwrap_or(""),
        since_first_use_ms = now.since(facts.first_use).as_millis() as u64,
        coalesced = facts.coalesced,
        "Refresh token reuse refused"
    );
}
