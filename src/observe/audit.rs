//! Audit events: what the SIEM reads. Each event is a value; its `emit` writes its one line
//! on the `audit` target and bumps the metrics that belong to the event itself (the
//! request's outcome is counted once, where the answer is written). An [`Auditor`] carries
//! the metrics and the per-source caps every emission goes through.

use crate::clock::UnixMillis;
use crate::oauth::grant::Refusal;
use crate::observe::metrics::Metrics;
use crate::policy::source_cap::SourceCap;
use crate::policy::RefusalReason;
use crate::seal::fingerprint::DisplayFingerprint;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

/// The tracing target of every audit event.
pub const TARGET: &str = "audit";
/// The version of the audit event fields; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// An answered replay inside the window (OpenUnison's name for the same event).
pub const EXPIRED_REFRESH_TOKEN_USED: &str = "ExpiredRefreshTokenUsed";
/// A replay refused by the gate.
pub const REFRESH_TOKEN_REPLAY_REFUSED: &str = "RefreshTokenReplayRefused";
/// A successful rotation (debug level).
pub const REFRESH_TOKEN_ROTATED: &str = "RefreshTokenRotated";
/// A detected replay revoked the token's family.
pub const REFRESH_TOKEN_FAMILY_REVOKED: &str = "RefreshTokenFamilyRevoked";
/// The gate asked the IdP to revoke a revoked family's token (RFC 7009).
pub const IDP_REVOCATION: &str = "RefreshTokenRevokedAtIdp";
/// A refresh grant forwarded unguarded while the shared store was unavailable.
pub const REFRESH_FORWARDED_UNGUARDED: &str = "RefreshForwardedUnguarded";

/// A token-path request refused because the gate could not be certain it is not a refresh
/// grant, or because it is a malformed one.
pub const TOKEN_REQUEST_REFUSED: &str = "TokenRequestRefused";
/// A refresh grant refused with 503 because its address had `max_detached_per_source`
/// exchanges running whose clients left.
pub const DETACHED_LIMIT_REACHED: &str = "RefreshDetachedLimitReached";

/// A rotation whose writes fewer than `[store] wait_replicas` replicas acknowledged in
/// time: its tombstone may not survive a failover of the store's primary.
pub const ROTATION_UNACKNOWLEDGED: &str = "RotationUnacknowledged";

/// A presentation of an already-used token in observe mode: forwarded, with what enforce
/// would have done beside what the IdP answered (WARN when enforce would refuse).
pub const REFRESH_TOKEN_REPLAY_OBSERVED: &str = "RefreshTokenReplayObserved";

/// Every audit event name, as the SIEM sees it in the `event` field (the README's table).
pub const EVENT_NAMES: [&str; 10] = [
    EXPIRED_REFRESH_TOKEN_USED,
    REFRESH_TOKEN_REPLAY_REFUSED,
    REFRESH_TOKEN_ROTATED,
    REFRESH_TOKEN_FAMILY_REVOKED,
    IDP_REVOCATION,
    REFRESH_FORWARDED_UNGUARDED,
    TOKEN_REQUEST_REFUSED,
    DETACHED_LIMIT_REACHED,
    ROTATION_UNACKNOWLEDGED,
    REFRESH_TOKEN_REPLAY_OBSERVED,
];

/// Audit lines per source address per second for [`TOKEN_REQUEST_REFUSED`] and
/// [`DETACHED_LIMIT_REACHED`].
pub const REFUSALS_PER_SOURCE_PER_SECOND: u32 = 5;

/// Distinct source addresses whose capped events are written in one second (the rest
/// share one budget).
const AUDITED_SOURCES_PER_SECOND: usize = 4096;

/// What every audit event says about the request that caused it.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// `X-Request-Id` as received or generated (and forwarded upstream).
    pub request_id: &'a str,
    /// The token endpoint URL the client used (no query).
    pub token_url: &'a str,
    /// The client id presenting the token now.
    pub client_id: &'a str,
    /// The address presenting it now.
    pub client_ip: IpAddr,
    /// The display fingerprint of the presented token.
    pub token: DisplayFingerprint,
}

/// What the tombstone remembers of the first use.
#[derive(Debug, Clone)]
pub struct FirstUse<'a> {
    /// Its client id.
    pub client_id: &'a str,
    /// Its address.
    pub client_ip: IpAddr,
    /// The id_token's subject.
    pub subject: Option<&'a str>,
    /// When the IdP answered it.
    pub at: UnixMillis,
    /// The token family.
    pub family: DisplayFingerprint,
    /// Replays answered so far (this one included).
    pub replays: u32,
}

/// The event time as RFC 3339 with milliseconds (written where the line is formatted).
fn timestamp(now: UnixMillis) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(now.0))
}

/// The OpenUnison-compatible line of an answered replay (written where the line is
/// formatted).
pub fn openunison_line<'a>(
    request: &'a RequestFacts<'a>,
    subject: Option<&'a str>,
) -> OpenUnisonLine<'a> {
    OpenUnisonLine { request, subject }
}

/// The message of [`EXPIRED_REFRESH_TOKEN_USED`] as OpenUnison writes it.
#[derive(Debug)]
pub struct OpenUnisonLine<'a> {
    request: &'a RequestFacts<'a>,
    subject: Option<&'a str>,
}

impl std::fmt::Display for OpenUnisonLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{EXPIRED_REFRESH_TOKEN_USED}] - {} - {} - Expired token used within grace period [{}] - [{}]",
            self.request.token_url,
            self.subject.unwrap_or("-"),
            self.request.client_ip,
            self.request.token
        )
    }
}

/// Where every audit event goes: the metrics, and the per-source caps of the events a
/// flood could repeat.
pub struct Auditor {
    metrics: Metrics,
    refused_cap: SourceCap,
    detached_cap: SourceCap,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").finish_non_exhaustive()
    }
}

impl Auditor {
    /// An auditor counting into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        let cap = || SourceCap::new(REFUSALS_PER_SOURCE_PER_SECOND, AUDITED_SOURCES_PER_SECOND);
        Auditor {
            metrics,
            refused_cap: cap(),
            detached_cap: cap(),
        }
    }

    /// The metrics the events count into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// A replay inside the window, answered with the remembered answer
/// ([`EXPIRED_REFRESH_TOKEN_USED`]).
#[derive(Debug)]
pub struct ReplayAnswered<'a> {
    /// The request replaying.
    pub request: RequestFacts<'a>,
    /// The first use it replays.
    pub first: FirstUse<'a>,
    /// Whether it waited for the exchange (rather than arriving after it).
    pub coalesced: bool,
    /// When.
    pub now: UnixMillis,
}

impl ReplayAnswered<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let (request, first, now) = (&self.request, &self.first, self.now);
        tracing::info!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(now),
            event = EXPIRED_REFRESH_TOKEN_USED,
            request_id = request.request_id,
            token_url = request.token_url,
            token = %request.token,
            family = %first.family,
            client_id = request.client_id,
            client_ip = %request.client_ip,
            subject = first.subject.unwrap_or(""),
            since_first_use_ms = now.since(first.at).as_millis() as u64,
            replay_count = first.replays,
            first_client_id = first.client_id,
            first_client_ip = %first.client_ip,
            coalesced = self.coalesced,
            "{}",
            openunison_line(request, first.subject)
        );
    }
}

/// A replay refused by the gate ([`REFRESH_TOKEN_REPLAY_REFUSED`]). Its reason is counted
/// with the request's outcome.
#[derive(Debug)]
pub struct ReplayRefused<'a> {
    /// The request refused.
    pub request: RequestFacts<'a>,
    /// The first use; absent for an unseen member of a revoked family.
    pub first: Option<FirstUse<'a>>,
    /// Why.
    pub reason: RefusalReason,
    /// Whether it waited for the exchange.
    pub coalesced: bool,
    /// When.
    pub now: UnixMillis,
}

impl ReplayRefused<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let (request, first, now, reason) =
            (&self.request, self.first.as_ref(), self.now, self.reason);
        let subject = first.and_then(|f| f.subject);
        tracing::warn!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(now),
            event = REFRESH_TOKEN_REPLAY_REFUSED,
            reason = reason.label(),
            request_id = request.request_id,
            token_url = request.token_url,
            token = %request.token,
            family = first.map(|f| f.family.to_string()).unwrap_or_default(),
            client_id = request.client_id,
            client_ip = %request.client_ip,
            subject = subject.unwrap_or(""),
            since_first_use_ms = first.map_or(0, |f| now.since(f.at).as_millis() as u64),
            replay_count = first.map_or(0, |f| f.replays),
            first_client_id = first.map_or("", |f| f.client_id),
            first_client_ip = first.map(|f| f.client_ip.to_string()).unwrap_or_default(),
            coalesced = self.coalesced,
            "[{REFRESH_TOKEN_REPLAY_REFUSED}] - {} - {} - Refresh token replay refused ({}) [{}] - [{}]",
            request.token_url,
            subject.unwrap_or("-"),
            reason.label(),
            request.client_ip,
            request.token
        );
    }
}

/// A presentation of an already-used token in observe mode
/// ([`REFRESH_TOKEN_REPLAY_OBSERVED`]): WARN when enforce would have refused it, INFO
/// otherwise.
#[derive(Debug)]
pub struct ReplayObserved<'a> {
    /// The request, forwarded.
    pub request: RequestFacts<'a>,
    /// The observed first use; absent for an unseen member of a family enforce would have
    /// revoked.
    pub first: Option<FirstUse<'a>>,
    /// The token's family.
    pub family: DisplayFingerprint,
    /// What enforce would have done (`forward`, `coalesce`, `replay`, `refuse`).
    pub would: &'static str,
    /// Why enforce would refuse (empty otherwise).
    pub reason: Option<RefusalReason>,
    /// Whether enforce's refusal would also revoke the family (nothing is revoked).
    pub revoke_family: bool,
    /// The IdP's status (absent when it did not answer).
    pub idp_status: Option<u16>,
    /// The IdP's verdict (`success`, `refused`, `error`).
    pub idp: &'static str,
    /// When.
    pub now: UnixMillis,
}

impl ReplayObserved<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let (request, first, now) = (&self.request, self.first.as_ref(), self.now);
        let reason = self.reason.map_or("", |r| r.label());
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: TARGET,
                    schema_version = SCHEMA_VERSION,
                    ts = %timestamp(now),
                    event = REFRESH_TOKEN_REPLAY_OBSERVED,
                    mode = "observe",
                    would = self.would,
                    reason,
                    would_revoke_family = self.revoke_family,
                    idp = self.idp,
                    idp_status = self.idp_status.unwrap_or(0),
                    request_id = request.request_id,
                    token_url = request.token_url,
                    token = %request.token,
                    family = %self.family,
                    client_id = request.client_id,
                    client_ip = %request.client_ip,
                    since_first_use_ms = first.map_or(0, |f| now.since(f.at).as_millis() as u64),
                    replay_count = first.map_or(0, |f| f.replays),
                    first_client_id = first.map_or("", |f| f.client_id),
                    first_client_ip = first.map(|f| f.client_ip.to_string()).unwrap_or_default(),
                    "[{REFRESH_TOKEN_REPLAY_OBSERVED}] - {} - used token presented again, forwarded: enforce would {}{}, the IdP answered {} [{}] - [{}]",
                    request.token_url,
                    self.would,
                    if reason.is_empty() { String::new() } else { format!(" ({reason})") },
                    self.idp_status.map_or("nothing".to_owned(), |s| s.to_string()),
                    request.client_ip,
                    request.token
                )
            };
        }
        if self.reason.is_some() {
            line!(warn);
        } else {
            line!(info);
        }
    }
}

/// A refused replay revoked the whole family: every later member is refused
/// ([`REFRESH_TOKEN_FAMILY_REVOKED`]).
#[derive(Debug)]
pub struct FamilyRevoked<'a> {
    /// The request whose replay revoked it.
    pub request: RequestFacts<'a>,
    /// The family.
    pub family: DisplayFingerprint,
    /// The refusal that revoked it.
    pub reason: RefusalReason,
    /// When.
    pub now: UnixMillis,
}

impl FamilyRevoked<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let (request, family) = (&self.request, self.family);
        tracing::warn!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = REFRESH_TOKEN_FAMILY_REVOKED,
            reason = self.reason.label(),
            request_id = request.request_id,
            token = %request.token,
            family = %family,
            client_id = request.client_id,
            client_ip = %request.client_ip,
            "[{REFRESH_TOKEN_FAMILY_REVOKED}] - {} - family [{}] revoked after a {} replay [{}] - [{}]",
            request.token_url,
            family,
            self.reason.label(),
            request.client_ip,
            request.token
        );
    }
}

/// The result of asking the IdP to revoke a token of a revoked family
/// ([`IDP_REVOCATION`]).
#[derive(Debug)]
pub struct IdpRevocation<'a> {
    /// The request whose token was sent for revocation.
    pub request: RequestFacts<'a>,
    /// The family.
    pub family: DisplayFingerprint,
    /// The IdP's status; absent when it could not be reached.
    pub status: Option<u16>,
    /// When.
    pub now: UnixMillis,
}

impl IdpRevocation<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let (request, family, status) = (&self.request, self.family, self.status);
        tracing::warn!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = IDP_REVOCATION,
            request_id = request.request_id,
            token = %request.token,
            family = %family,
            client_id = request.client_id,
            idp_status = status.unwrap_or(0),
            "[{IDP_REVOCATION}] - family [{}] revoked at the IdP with token [{}]: {}",
            family,
            request.token,
            status.map_or("IdP unreachable".to_owned(), |s| format!("status {s}"))
        );
    }
}

/// A refresh grant forwarded untouched because the shared store could not be reached
/// (`on_store_error = "fail-open"`): no one-time use, no grace window and no replay
/// detection at the gate for this token; the IdP's own rules apply
/// ([`REFRESH_FORWARDED_UNGUARDED`]).
#[derive(Debug)]
pub struct ForwardedUnguarded<'a> {
    /// The request forwarded.
    pub request: RequestFacts<'a>,
    /// When.
    pub now: UnixMillis,
}

impl ForwardedUnguarded<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let request = &self.request;
        tracing::warn!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = REFRESH_FORWARDED_UNGUARDED,
            request_id = request.request_id,
            token_url = request.token_url,
            token = %request.token,
            client_id = request.client_id,
            client_ip = %request.client_ip,
            "[{REFRESH_FORWARDED_UNGUARDED}] - {} - {} - token store unavailable: refresh token [{}] forwarded without one-time-use checks",
            request.token_url,
            request.client_ip,
            request.token
        );
    }
}

/// A rotation that too few replicas acknowledged in time ([`ROTATION_UNACKNOWLEDGED`],
/// WARN): the client got its new token (the IdP rotated), but a failover of the store's
/// primary before the write reached a replica would forget the old token's tombstone.
#[derive(Debug)]
pub struct RotationUnacknowledged<'a> {
    /// The rotated token.
    pub token: DisplayFingerprint,
    /// Its family.
    pub family: DisplayFingerprint,
    /// The client whose exchange rotated it.
    pub client_id: &'a str,
    /// `[store] wait_replicas`.
    pub wanted: u32,
    /// Replicas that did acknowledge.
    pub replicas: u32,
    /// Why not: `timeout`, `missing`, `unreachable`, `not_primary`, `error`, `redirected`,
    /// `unknown_primary` or `busy`.
    pub reason: &'static str,
    /// When.
    pub now: UnixMillis,
}

impl RotationUnacknowledged<'_> {
    /// Write the line and count the miss.
    pub fn emit(&self, auditor: &Auditor) {
        auditor.metrics().replication_ack(false);
        tracing::warn!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = ROTATION_UNACKNOWLEDGED,
            token = %self.token,
            family = %self.family,
            client_id = self.client_id,
            wanted = self.wanted,
            replicas = self.replicas,
            reason = self.reason,
            "[{ROTATION_UNACKNOWLEDGED}] - rotation of refresh token [{}] acknowledged by {} of {} replicas ({}): its tombstone may not survive a failover",
            self.token,
            self.replicas,
            self.wanted,
            self.reason
        );
    }
}

/// A token-path request refused before any decision on a token
/// ([`TOKEN_REQUEST_REFUSED`]).
#[derive(Debug)]
pub struct TokenRequestRefused<'a> {
    /// The request refused.
    pub request: RefusedRequest<'a>,
    /// Why.
    pub refusal: Refusal,
    /// When.
    pub now: UnixMillis,
}

impl TokenRequestRefused<'_> {
    /// Count it by reason, always; write the line only while its source is under the
    /// per-second cap, otherwise count the suppression.
    pub fn emit(&self, auditor: &Auditor) {
        let (request, refusal) = (&self.request, self.refusal);
        auditor.metrics.token_request_refused(refusal);
        if !auditor.refused_cap.allow(request.client_ip, self.now) {
            auditor.metrics.audit_suppressed(TOKEN_REQUEST_REFUSED);
            return;
        }
        tracing::info!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = TOKEN_REQUEST_REFUSED,
            request_id = request.request_id,
            token_url = request.token_url,
            client_ip = %request.client_ip,
            reason = refusal.reason(),
            error = refusal.error(),
            "[{TOKEN_REQUEST_REFUSED}] - {} - {} [{}]",
            request.token_url,
            refusal.reason(),
            request.client_ip
        );
    }
}

/// A refresh grant refused with `503` by `max_detached_per_source`
/// ([`DETACHED_LIMIT_REACHED`]).
#[derive(Debug)]
pub struct DetachedLimitReached<'a> {
    /// The request refused.
    pub request: RequestFacts<'a>,
    /// When.
    pub now: UnixMillis,
}

impl DetachedLimitReached<'_> {
    /// Count it, always; write the line only while its source is under the per-second
    /// cap, otherwise count the suppression.
    pub fn emit(&self, auditor: &Auditor) {
        let request = &self.request;
        auditor.metrics.detached_limit_refused();
        if !auditor.detached_cap.allow(request.client_ip, self.now) {
            auditor.metrics.audit_suppressed(DETACHED_LIMIT_REACHED);
            return;
        }
        tracing::warn!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = DETACHED_LIMIT_REACHED,
            request_id = request.request_id,
            token_url = request.token_url,
            token = %request.token,
            client_id = request.client_id,
            client_ip = %request.client_ip,
            "[{DETACHED_LIMIT_REACHED}] - {} - too many exchanges from this address whose clients left; refresh refused with 503 [{}] - [{}]",
            request.token_url,
            request.client_ip,
            request.token
        );
    }
}

/// What a [`TokenRequestRefused`] event says about the request (no token, no body).
#[derive(Debug, Clone)]
pub struct RefusedRequest<'a> {
    /// `X-Request-Id` as received or generated.
    pub request_id: &'a str,
    /// The token endpoint URL the client used (no query).
    pub token_url: &'a str,
    /// The address the request came from.
    pub client_ip: IpAddr,
}

/// A successful exchange: the token is now tombstoned ([`REFRESH_TOKEN_ROTATED`], debug
/// level).
#[derive(Debug)]
pub struct Rotated<'a> {
    /// The request whose exchange rotated the token.
    pub request: RequestFacts<'a>,
    /// The id_token's subject.
    pub subject: Option<&'a str>,
    /// The token family.
    pub family: DisplayFingerprint,
    /// When.
    pub now: UnixMillis,
}

impl Rotated<'_> {
    /// Write the line.
    pub fn emit(&self, _auditor: &Auditor) {
        let request = &self.request;
        tracing::debug!(
            target: TARGET,
            schema_version = SCHEMA_VERSION,
            ts = %timestamp(self.now),
            event = REFRESH_TOKEN_ROTATED,
            request_id = request.request_id,
            token_url = request.token_url,
            token = %request.token,
            family = %self.family,
            client_id = request.client_id,
            client_ip = %request.client_ip,
            subject = self.subject.unwrap_or(""),
            "[{REFRESH_TOKEN_ROTATED}] - {} - {} - Refresh token rotated [{}] - [{}]",
            request.token_url,
            self.subject.unwrap_or("-"),
            request.client_ip,
            request.token
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openunison_compatible_line() {
        let request = RequestFacts {
            request_id: "r1",
            token_url: "https://login.example.com/auth/idp/k8sIdp/token",
            client_id: "kubernetes",
            client_ip: "10.1.2.3".parse().unwrap(),
            token: DisplayFingerprint([0xab, 0xcd, 0xef, 0x01, 0x23, 0x45]),
        };
        assert_eq!(
            openunison_line(&request, Some("alice")).to_string(),
            "[ExpiredRefreshTokenUsed] - https://login.example.com/auth/idp/k8sIdp/token - alice - \
             Expired token used within grace period [10.1.2.3] - [abcdef012345]"
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(
            timestamp(UnixMillis(1_700_000_000_123)).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
