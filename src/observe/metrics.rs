//! Every metric of refresh-gate, named in this one place. Label values are bounded enums:
//! never a token, subject, IP or raw path.

use crate::policy::RefusalReason;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `refresh_gate_refresh_requests_total{outcome}`.
pub const REFRESH_REQUESTS_TOTAL: &str = "refresh_gate_refresh_requests_total";
/// `refresh_gate_refused_total{reason}`.
pub const REFUSED_TOTAL: &str = "refresh_gate_refused_total";
/// `refresh_gate_upstream_request_duration_seconds{kind}`.
pub const UPSTREAM_DURATION_SECONDS: &str = "refresh_gate_upstream_request_duration_seconds";
/// `refresh_gate_requests_total{route, code_class}`.
pub const REQUESTS_TOTAL: &str = "refresh_gate_requests_total";
/// `refresh_gate_tombstones`.
pub const TOMBSTONES: &str = "refresh_gate_tombstones";
/// `refresh_gate_tombstone_evictions_total`.
pub const TOMBSTONE_EVICTIONS_TOTAL: &str = "refresh_gate_tombstone_evictions_total";
/// `refresh_gate_upstream_not_rotating_total`.
pub const UPSTREAM_NOT_ROTATING_TOTAL: &str = "refresh_gate_upstream_not_rotating_total";
/// `refresh_gate_store_errors_total`.
pub const STORE_ERRORS_TOTAL: &str = "refresh_gate_store_errors_total";
/// `refresh_gate_store_up`.
pub const STORE_UP: &str = "refresh_gate_store_up";
/// `refresh_gate_token_requests_refused_total{reason}`: token-path requests the gate refused
/// because it could not be certain they are not refresh grants (or they are malformed ones).
pub const TOKEN_REQUESTS_REFUSED_TOTAL: &str = "refresh_gate_token_requests_refused_total";
/// `refresh_gate_audit_suppressed_total{event}`: audit lines not written because their
/// source address passed its per-second cap.
pub const AUDIT_SUPPRESSED_TOTAL: &str = "refresh_gate_audit_suppressed_total";
/// `refresh_gate_detached_exchanges`: exchanges running whose clients left.
pub const DETACHED_EXCHANGES: &str = "refresh_gate_detached_exchanges";
/// `refresh_gate_detached_limit_refusals_total`: refresh grants refused with 503 because
/// their address had `max_detached_per_source` detached exchanges running.
pub const DETACHED_LIMIT_REFUSALS_TOTAL: &str = "refresh_gate_detached_limit_refusals_total";
/// `refresh_gate_store_failovers_total`: failovers the store connection followed (a new
/// primary taken from Sentinel, or a cluster replica seen promoted).
pub const STORE_FAILOVERS_TOTAL: &str = "refresh_gate_store_failovers_total";
/// `refresh_gate_store_redirects_total{kind}`: `MOVED`/`ASK` redirects followed by the
/// gate's own acknowledgement connections (the cluster client follows its own silently).
pub const STORE_REDIRECTS_TOTAL: &str = "refresh_gate_store_redirects_total";
/// `refresh_gate_store_topology_changes_total`: Redis Cluster slot map changes seen.
pub const STORE_TOPOLOGY_CHANGES_TOTAL: &str = "refresh_gate_store_topology_changes_total";
/// `refresh_gate_store_shards_down`: Redis Cluster shards whose primary does not answer.
pub const STORE_SHARDS_DOWN: &str = "refresh_gate_store_shards_down";
/// `refresh_gate_store_replication_acks_total{result}`: rotations whose writes replicas
/// acknowledged (`WAIT`), or did not in time.
pub const STORE_REPLICATION_ACKS_TOTAL: &str = "refresh_gate_store_replication_acks_total";
/// `refresh_gate_store_rotations_restored_total`: recent rotations of this replica written
/// again on a new primary that lacked them after a failover.
pub const STORE_ROTATIONS_RESTORED_TOTAL: &str = "refresh_gate_store_rotations_restored_total";
/// `refresh_gate_store_late_writes_total{result}`: ends of exchanges (rotations, releases)
/// whose write failed, `written` by a retry or `abandoned` when the claim expired first.
pub const STORE_LATE_WRITES_TOTAL: &str = "refresh_gate_store_late_writes_total";
/// `refresh_gate_store_waits_unheard_total`: waits that the waiter's own periodic check
/// ended because the exchange's message never came (one per waiter).
pub const STORE_WAITS_UNHEARD_TOTAL: &str = "refresh_gate_store_waits_unheard_total";
/// `refresh_gate_replay_delay_seconds{outcome}`: for every presentation of an already-used
/// token, the time since its first use.
pub const REPLAY_DELAY_SECONDS: &str = "refresh_gate_replay_delay_seconds";
/// `refresh_gate_observed_refreshes_total{would, idp}`: refresh grants forwarded in observe
/// mode, by what enforce would have done and what the IdP answered.
pub const OBSERVED_REFRESHES_TOTAL: &str = "refresh_gate_observed_refreshes_total";
/// `refresh_gate_build_info{version}`.
pub const BUILD_INFO: &str = "refresh_gate_build_info";

/// The outcome of one refresh request: exactly one per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// First use, sent upstream, rotated.
    Forwarded,
    /// Waited for an in-flight exchange and got its success.
    Coalesced,
    /// Answered from the grace window.
    GraceReplay,
    /// Refused by the gate (see the reason).
    Refused,
    /// The exchange (its own, or the one it waited for) failed.
    UpstreamError,
    /// An ambiguous or malformed token request, refused (`invalid_request`).
    InvalidRequest,
    /// A grant type the gate does not forward, refused (`unsupported_grant_type`).
    UnsupportedGrant,
    /// Forwarded untouched because the shared store was unavailable (`fail-open`).
    Unguarded,
    /// The gate itself failed: an upstream request it could not build, a remembered
    /// answer it could not open, an exchange that ended without an outcome.
    InternalError,
    /// Forwarded in observe mode: the decision recorded beside the IdP's answer.
    Observed,
}

impl RefreshOutcome {
    /// Its position in [`RefreshOutcome::ALL`].
    fn index(self) -> usize {
        self as usize
    }

    /// Every outcome, for pre-registering series at 0.
    pub const ALL: [RefreshOutcome; 10] = [
        RefreshOutcome::Forwarded,
        RefreshOutcome::Coalesced,
        RefreshOutcome::GraceReplay,
        RefreshOutcome::Refused,
        RefreshOutcome::UpstreamError,
        RefreshOutcome::InvalidRequest,
        RefreshOutcome::UnsupportedGrant,
        RefreshOutcome::Unguarded,
        RefreshOutcome::InternalError,
        RefreshOutcome::Observed,
    ];

    /// The label value.
    pub fn label(&self) -> &'static str {
        match self {
            RefreshOutcome::Forwarded => "forwarded",
            RefreshOutcome::Coalesced => "coalesced",
            RefreshOutcome::GraceReplay => "grace_replay",
            RefreshOutcome::Refused => "refused",
            RefreshOutcome::UpstreamError => "upstream_error",
            RefreshOutcome::InvalidRequest => "invalid_request",
            RefreshOutcome::UnsupportedGrant => "unsupported_grant",
            RefreshOutcome::Unguarded => "unguarded",
            RefreshOutcome::InternalError => "internal_error",
            RefreshOutcome::Observed => "observed",
        }
    }
}

/// Which hop a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A token path.
    Token,
    /// Anything else.
    Passthrough,
}

impl Route {
    /// Every route, in the order of [`Route::index`].
    const ALL: [Route; 2] = [Route::Token, Route::Passthrough];

    fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Token => "token",
            Route::Passthrough => "passthrough",
        }
    }
}

/// What kind of upstream request was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// A refresh exchange.
    Refresh,
    /// A forwarded request.
    Passthrough,
}

impl UpstreamKind {
    /// Every kind, in the order of [`UpstreamKind::index`].
    const ALL: [UpstreamKind; 2] = [UpstreamKind::Refresh, UpstreamKind::Passthrough];

    fn index(self) -> usize {
        self as usize
    }

    fn label(&self) -> &'static str {
        match self {
            UpstreamKind::Refresh => "refresh",
            UpstreamKind::Passthrough => "passthrough",
        }
    }
}

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The series counted on every request, looked up once at start: a labelled series' lookup
/// hashes its label values and takes the vector's lock, on every request otherwise.
#[derive(Clone)]
struct EveryRequest {
    /// `refresh_gate_requests_total`, by [`Route::index`] and code class.
    requests: Vec<[IntCounter; 5]>,
    /// `refresh_gate_upstream_request_duration_seconds`, by [`UpstreamKind::index`].
    upstream_duration: Vec<Histogram>,
    /// `refresh_gate_refresh_requests_total`, by [`RefreshOutcome::index`].
    outcomes: Vec<IntCounter>,
}

impl EveryRequest {
    fn resolve(
        requests: &IntCounterVec,
        upstream_duration: &HistogramVec,
        outcomes: &IntCounterVec,
    ) -> Self {
        EveryRequest {
            requests: Route::ALL
                .iter()
                .map(|route| {
                    CODE_CLASSES.map(|class| requests.with_label_values(&[route.label(), class]))
                })
                .collect(),
            upstream_duration: UpstreamKind::ALL
                .iter()
                .map(|kind| upstream_duration.with_label_values(&[kind.label()]))
                .collect(),
            outcomes: RefreshOutcome::ALL
                .iter()
                .map(|outcome| outcomes.with_label_values(&[outcome.label()]))
                .collect(),
        }
    }
}

/// The gate's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    refresh_requests: IntCounterVec,
    refused: IntCounterVec,
    upstream_duration: HistogramVec,
    requests: IntCounterVec,
    tombstones: IntGauge,
    evictions: IntCounter,
    not_rotating: IntCounter,
    store_errors: IntCounter,
    store_up: IntGauge,
    store_failovers: IntCounter,
    store_redirects: IntCounterVec,
    store_topology_changes: IntCounter,
    store_shards_down: IntGauge,
    replication_acks: IntCounterVec,
    store_restored: IntCounter,
    store_late_writes: IntCounterVec,
    store_waits_unheard: IntCounter,
    replay_delay: HistogramVec,
    observed: IntCounterVec,
    token_refused: IntCounterVec,
    audit_suppressed: IntCounterVec,
    detached: IntGauge,
    detached_refusals: IntCounter,
    build_info: IntGaugeVec,
    every_request: EveryRequest,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(result: prometheus::Result<T>) -> T {
    result.expect("metric definitions are static and valid")
}

/// Raise a counter to a total kept elsewhere (never lowers it).
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Creates each metric and registers it at once, so none can be forgotten.
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        must(self.0.register(Box::new(collector.clone())));
        collector
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(must(IntCounter::new(name, help)))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(must(IntGauge::new(name, help)))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(must(IntCounterVec::new(Opts::new(name, help), labels)))
    }
}

/// The buckets of the replay delay histogram, in seconds: fine below a second, up to five
/// minutes.
const REPLAY_DELAY_BUCKETS: [f64; 22] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
    10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
];

/// What became of a presentation of an already-used token (the `outcome` label of
/// `refresh_gate_replay_delay_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayDelayOutcome {
    /// It waited for the exchange under way.
    Coalesced,
    /// Answered from the window.
    GraceReplay,
    /// Refused.
    Refused,
    /// Forwarded in observe mode (the decision recorded, not applied).
    Observed,
}

impl ReplayDelayOutcome {
    /// Every value.
    pub const ALL: [ReplayDelayOutcome; 4] = [
        ReplayDelayOutcome::Coalesced,
        ReplayDelayOutcome::GraceReplay,
        ReplayDelayOutcome::Refused,
        ReplayDelayOutcome::Observed,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ReplayDelayOutcome::Coalesced => "coalesced",
            ReplayDelayOutcome::GraceReplay => "grace_replay",
            ReplayDelayOutcome::Refused => "refused",
            ReplayDelayOutcome::Observed => "observed",
        }
    }
}

/// The buckets of the upstream duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Register every metric, with every series of every label value at 0.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = Registrar(&registry);
        let refresh_requests = r.counters(
            REFRESH_REQUESTS_TOTAL,
            "Refresh grants by outcome, one per request.",
            &["outcome"],
        );
        let upstream_duration = r.add(must(HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_DURATION_SECONDS,
                "Duration of requests to the IdP, by kind.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["kind"],
        )));
        let requests = r.counters(
            REQUESTS_TOTAL,
            "Requests answered, by route and status class.",
            &["route", "code_class"],
        );
        let every_request = EveryRequest::resolve(&requests, &upstream_duration, &refresh_requests);
        let metrics = Metrics {
            refresh_requests,
            refused: r.counters(
                REFUSED_TOTAL,
                "Refresh grants refused by the gate, by reason.",
                &["reason"],
            ),
            upstream_duration,
            requests,
            every_request,
            tombstones: r.gauge(TOMBSTONES, "Tombstones held now."),
            evictions: r.counter(
                TOMBSTONE_EVICTIONS_TOTAL,
                "Tombstones evicted before their TTL because the store was full.",
            ),
            not_rotating: r.counter(
                UPSTREAM_NOT_ROTATING_TOTAL,
                "Successful refresh answers without a new refresh token (nothing tombstoned).",
            ),
            store_errors: r.counter(
                STORE_ERRORS_TOTAL,
                "Token store operations that failed (Redis unreachable, timed out or erroring).",
            ),
            store_up: r.gauge(
                STORE_UP,
                "1 while the token store answers, 0 while it does not.",
            ),
            store_failovers: r.counter(
                STORE_FAILOVERS_TOTAL,
                "Failovers the token store connection followed (a new primary taken).",
            ),
            store_redirects: r.counters(
                STORE_REDIRECTS_TOTAL,
                "MOVED/ASK redirects followed by the gate's acknowledgement connections.",
                &["kind"],
            ),
            store_topology_changes: r.counter(
                STORE_TOPOLOGY_CHANGES_TOTAL,
                "Redis Cluster slot map changes seen.",
            ),
            store_shards_down: r.gauge(
                STORE_SHARDS_DOWN,
                "Redis Cluster shards whose primary does not answer now.",
            ),
            replication_acks: r.counters(
                STORE_REPLICATION_ACKS_TOTAL,
                "Rotations whose writes replicas acknowledged in time, or did not.",
                &["result"],
            ),
            store_restored: r.counter(
                STORE_ROTATIONS_RESTORED_TOTAL,
                "Recent rotations written again on a new primary that lacked them after a failover.",
            ),
            store_late_writes: r.counters(
                STORE_LATE_WRITES_TOTAL,
                "Ends of exchanges whose write failed: written by a retry, or abandoned when the claim expired first.",
                &["result"],
            ),
            store_waits_unheard: r.counter(
                STORE_WAITS_UNHEARD_TOTAL,
                "Waits the waiter's own periodic check ended because the exchange's message never came (one per waiter).",
            ),
            replay_delay: r.add(must(HistogramVec::new(
                HistogramOpts::new(
                    REPLAY_DELAY_SECONDS,
                    "Time since the first use of a used token presented again, by outcome.",
                )
                .buckets(REPLAY_DELAY_BUCKETS.to_vec()),
                &["outcome"],
            ))),
            observed: r.counters(
                OBSERVED_REFRESHES_TOTAL,
                "Refresh grants forwarded in observe mode, by what enforce would have done \
                 and what the IdP answered.",
                &["would", "idp"],
            ),
            token_refused: r.counters(
                TOKEN_REQUESTS_REFUSED_TOTAL,
                "Token-path requests refused as uncertain or malformed, by reason.",
                &["reason"],
            ),
            audit_suppressed: r.counters(
                AUDIT_SUPPRESSED_TOTAL,
                "Audit lines not written because their source passed its per-second cap.",
                &["event"],
            ),
            detached: r.gauge(
                DETACHED_EXCHANGES,
                "Refresh exchanges running whose clients left.",
            ),
            detached_refusals: r.counter(
                DETACHED_LIMIT_REFUSALS_TOTAL,
                "Refresh grants refused because their address had too many detached exchanges.",
            ),
            build_info: r.add(must(IntGaugeVec::new(
                Opts::new(BUILD_INFO, "Build information."),
                &["version"],
            ))),
            registry,
        };
        metrics.start_at_zero();
        metrics
    }

    /// Create every series of every label value (at 0, `store_up` at 1), so dashboards and
    /// alerts see them before any traffic.
    fn start_at_zero(&self) {
        self.store_up.set(1);
        for outcome in RefreshOutcome::ALL {
            self.refresh_requests.with_label_values(&[outcome.label()]);
        }
        for reason in RefusalReason::ALL {
            self.refused.with_label_values(&[reason.label()]);
        }
        for refusal in crate::oauth::grant::Refusal::ALL {
            self.token_refused.with_label_values(&[refusal.reason()]);
        }
        for event in [
            crate::observe::audit::TOKEN_REQUEST_REFUSED,
            crate::observe::audit::DETACHED_LIMIT_REACHED,
        ] {
            self.audit_suppressed.with_label_values(&[event]);
        }
        for kind in ["moved", "ask"] {
            self.store_redirects.with_label_values(&[kind]);
        }
        for outcome in ReplayDelayOutcome::ALL {
            self.replay_delay.with_label_values(&[outcome.label()]);
        }
        for would in crate::policy::observe::Would::LABELS {
            for idp in crate::policy::observe::IdpVerdict::LABELS {
                self.observed.with_label_values(&[would, idp]);
            }
        }
        for result in ["acknowledged", "missed"] {
            self.replication_acks.with_label_values(&[result]);
        }
        for kind in [UpstreamKind::Refresh, UpstreamKind::Passthrough] {
            self.upstream_duration.with_label_values(&[kind.label()]);
        }
        for route in [Route::Token, Route::Passthrough] {
            for class in CODE_CLASSES {
                self.requests.with_label_values(&[route.label(), class]);
            }
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Publish the store's health: up or down, its failures, the failovers and redirects
    /// it followed and the topology changes it saw so far, and its shards down now.
    pub fn store_health(&self, health: &crate::store::StoreHealth) {
        self.store_up.set(i64::from(health.available));
        self.store_shards_down
            .set(i64::try_from(health.shards_down).unwrap_or(i64::MAX));
        catch_up(&self.store_errors, health.errors);
        catch_up(&self.store_failovers, health.failovers);
        catch_up(&self.store_topology_changes, health.topology_changes);
        catch_up(&self.store_restored, health.restored);
        catch_up(
            &self.store_late_writes.with_label_values(&["written"]),
            health.ends_written_late,
        );
        catch_up(
            &self.store_late_writes.with_label_values(&["abandoned"]),
            health.ends_abandoned,
        );
        catch_up(&self.store_waits_unheard, health.waits_unheard);
        catch_up(
            &self.store_redirects.with_label_values(&["moved"]),
            health.redirects_moved,
        );
        catch_up(
            &self.store_redirects.with_label_values(&["ask"]),
            health.redirects_ask,
        );
    }

    /// Observe a presentation of an already-used token `seconds` after its first use.
    pub fn replay_delay(&self, outcome: ReplayDelayOutcome, seconds: f64) {
        self.replay_delay
            .with_label_values(&[outcome.label()])
            .observe(seconds);
    }

    /// Count one refresh grant forwarded in observe mode.
    pub fn observed(
        &self,
        would: crate::policy::observe::Would,
        idp: crate::policy::observe::IdpVerdict,
    ) {
        self.observed
            .with_label_values(&[would.label(), idp.label()])
            .inc();
    }

    /// Count one rotation's replication acknowledgement: `true` when acknowledged in time.
    pub fn replication_ack(&self, acknowledged: bool) {
        let result = if acknowledged {
            "acknowledged"
        } else {
            "missed"
        };
        self.replication_acks.with_label_values(&[result]).inc();
    }

    /// Count a success answer that did not rotate the refresh token.
    pub fn not_rotating(&self) {
        self.not_rotating.inc();
    }

    /// Count one token-path request's outcome, and its reason when the gate refused a
    /// refresh grant. Called once per answer, where the answer is written.
    pub fn refresh_outcome(&self, outcome: RefreshOutcome, refused: Option<RefusalReason>) {
        self.every_request.outcomes[outcome.index()].inc();
        if let Some(reason) = refused {
            self.refused.with_label_values(&[reason.label()]).inc();
        }
    }

    /// Count one token-path request refused as uncertain or malformed.
    pub fn token_request_refused(&self, refusal: crate::oauth::grant::Refusal) {
        self.token_refused
            .with_label_values(&[refusal.reason()])
            .inc();
    }

    /// Publish the number of detached exchanges running now.
    pub fn detached_exchanges(&self, running: u64) {
        self.detached
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// Count one refresh grant refused by `max_detached_per_source`.
    pub fn detached_limit_refused(&self) {
        self.detached_refusals.inc();
    }

    /// Count one audit line suppressed by the per-source cap.
    pub fn audit_suppressed(&self, event: &'static str) {
        self.audit_suppressed.with_label_values(&[event]).inc();
    }

    /// Time one upstream request.
    pub fn upstream_duration(&self, kind: UpstreamKind, seconds: f64) {
        self.every_request.upstream_duration[kind.index()].observe(seconds);
    }

    /// Count one answered request.
    pub fn request(&self, route: Route, status: u16) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.every_request.requests[route.index()][class].inc();
    }

    /// Publish the store's tombstone count and evictions so far.
    pub fn store_gauges(&self, tombstones: u64, evictions_so_far: u64) {
        self.tombstones.set(tombstones as i64);
        let seen = self.evictions.get();
        if evictions_so_far > seen {
            self.evictions.inc_by(evictions_so_far - seen);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for outcome in RefreshOutcome::ALL {
            let series = format!(
                "{REFRESH_REQUESTS_TOTAL}{{outcome=\"{}\"}} 0",
                outcome.label()
            );
            assert!(text.contains(&series), "missing {series}");
        }
        for reason in RefusalReason::ALL {
            let series = format!("{REFUSED_TOTAL}{{reason=\"{}\"}} 0", reason.label());
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains("refresh_gate_build_info{version=\""));
        assert!(text.contains(&format!("{TOMBSTONE_EVICTIONS_TOTAL} 0")));
        assert!(text.contains(&format!("{STORE_ERRORS_TOTAL} 0")));
        assert!(text.contains(&format!("{STORE_UP} 1")));
    }

    #[test]
    fn store_health_follows_the_store() {
        use crate::store::StoreHealth;
        let metrics = Metrics::new();
        let down = |errors| StoreHealth {
            available: false,
            errors,
            ..StoreHealth::default()
        };
        metrics.store_health(&down(3));
        metrics.store_health(&down(2));
        let text = metrics.render();
        assert!(text.contains(&format!("{STORE_ERRORS_TOTAL} 3")));
        assert!(text.contains(&format!("{STORE_UP} 0")));
        metrics.store_health(&StoreHealth {
            errors: 5,
            failovers: 2,
            redirects_ask: 1,
            topology_changes: 4,
            shards_down: 1,
            ..StoreHealth::default()
        });
        let text = metrics.render();
        assert!(text.contains(&format!("{STORE_ERRORS_TOTAL} 5")));
        assert!(text.contains(&format!("{STORE_UP} 1")));
        assert!(text.contains(&format!("{STORE_FAILOVERS_TOTAL} 2")));
        assert!(text.contains(&format!("{STORE_REDIRECTS_TOTAL}{{kind=\"ask\"}} 1")));
        assert!(text.contains(&format!("{STORE_REDIRECTS_TOTAL}{{kind=\"moved\"}} 0")));
        assert!(text.contains(&format!("{STORE_TOPOLOGY_CHANGES_TOTAL} 4")));
        assert!(text.contains(&format!("{STORE_SHARDS_DOWN} 1")));
        metrics.replication_ack(false);
        let text = metrics.render();
        assert!(text.contains(&format!(
            "{STORE_REPLICATION_ACKS_TOTAL}{{result=\"missed\"}} 1"
        )));
    }

    /// The series resolved once at start are the ones their labels name: each outcome,
    /// route, status class and upstream kind moves its own series and no other.
    #[test]
    fn every_request_series_is_the_one_its_labels_name() {
        for outcome in RefreshOutcome::ALL {
            let metrics = Metrics::new();
            metrics.refresh_outcome(outcome, None);
            let expected = format!(
                "{REFRESH_REQUESTS_TOTAL}{{outcome=\"{}\"}} 1",
                outcome.label()
            );
            assert_eq!(
                series_at_one(&metrics.render(), REFRESH_REQUESTS_TOTAL),
                [expected],
                "{outcome:?}"
            );
        }
        for route in Route::ALL {
            for (status, class) in [
                (101, "1xx"),
                (204, "2xx"),
                (302, "3xx"),
                (429, "4xx"),
                (502, "5xx"),
            ] {
                let metrics = Metrics::new();
                metrics.request(route, status);
                let expected = format!(
                    "{REQUESTS_TOTAL}{{code_class=\"{class}\",route=\"{}\"}} 1",
                    route.label()
                );
                assert_eq!(
                    series_at_one(&metrics.render(), REQUESTS_TOTAL),
                    [expected],
                    "{route:?} {status}"
                );
            }
        }
        for kind in UpstreamKind::ALL {
            let metrics = Metrics::new();
            metrics.upstream_duration(kind, 0.25);
            let count = format!("{UPSTREAM_DURATION_SECONDS}_count");
            let expected = format!("{count}{{kind=\"{}\"}} 1", kind.label());
            assert_eq!(
                series_at_one(&metrics.render(), &count),
                [expected],
                "{kind:?}"
            );
        }
    }

    /// The series of `family` whose value is 1, as exposition lines.
    fn series_at_one(text: &str, family: &str) -> Vec<String> {
        text.lines()
            .filter(|line| line.starts_with(&format!("{family}{{")) && line.ends_with(" 1"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn counting_moves_one_series() {
        let metrics = Metrics::new();
        metrics.refresh_outcome(RefreshOutcome::GraceReplay, None);
        metrics.refresh_outcome(RefreshOutcome::Refused, Some(RefusalReason::ReuseLimit));
        metrics.request(Route::Token, 400);
        metrics.store_gauges(5, 2);
        metrics.store_gauges(5, 3);
        let text = metrics.render();
        assert!(text.contains("refresh_gate_refresh_requests_total{outcome=\"grace_replay\"} 1"));
        assert!(text.contains("refresh_gate_refresh_requests_total{outcome=\"refused\"} 1"));
        assert!(text.contains("refresh_gate_refused_total{reason=\"reuse_limit\"} 1"));
        assert!(text.contains("refresh_gate_refresh_requests_total{outcome=\"internal_error\"} 0"));
        assert!(text.contains("refresh_gate_requests_total{code_class=\"4xx\",route=\"token\"} 1"));
        assert!(text.contains("refresh_gate_tombstones 5"));
        assert!(text.contains("refresh_gate_tombstone_evictions_total 3"));
    }
}
