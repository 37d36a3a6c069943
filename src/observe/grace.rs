//! `GET /grace-advice`: the grace advice of this replica (`policy::grace_advice`), fed by
//! every presentation of an already-used token by the client and source of its first use,
//! and served as JSON on the admin listener.

use crate::clock::{Clock, UnixMillis};
use crate::policy::grace_advice::{ClientAdvice, GraceAdvisor};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// The advice and the client ids it is kept for.
pub struct GraceAdvice {
    advisor: Mutex<GraceAdvisor>,
    configured: Mutex<Vec<String>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for GraceAdvice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraceAdvice").finish_non_exhaustive()
    }
}

/// The JSON answer of `/grace-advice`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    scope: &'static str,
    based_on: &'static str,
    period: Option<Period>,
    clients: &'a [ClientAdvice],
}

#[derive(Debug, Serialize)]
struct Period {
    from: String,
    to: String,
    seconds: u64,
}

fn rfc3339(at: UnixMillis) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(at.0)).to_string()
}

impl GraceAdvice {
    /// Advice for the clients `configured` under `[clients]` (and the others), on `clock`.
    pub fn new(configured: Vec<String>, clock: Arc<dyn Clock>) -> Self {
        GraceAdvice {
            advisor: Mutex::new(GraceAdvisor::default()),
            configured: Mutex::new(configured),
            clock,
        }
    }

    fn advisor(&self) -> std::sync::MutexGuard<'_, GraceAdvisor> {
        self.advisor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn configured(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.configured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `[clients]` ids changed (a reload).
    pub fn set_configured(&self, mut ids: Vec<String>) {
        ids.sort();
        *self.configured() = ids;
    }

    /// Count a presentation of a used token `delay` after its first use, by `client_id`.
    pub fn record(&self, client_id: &str, delay: Duration, now: UnixMillis) {
        let configured = self.configured().iter().any(|id| id == client_id);
        self.advisor().record(client_id, configured, delay, now);
    }

    /// The JSON document of `/grace-advice`, now.
    pub fn report(&self) -> String {
        let now = self.clock.now();
        let configured = self.configured().clone();
        let (clients, since) = self.advisor().advice(&configured, now);
        let period = since.map(|from| Period {
            from: rfc3339(from),
            to: rfc3339(now),
            seconds: now.since(from).as_secs(),
        });
        let report = Report {
            scope: "this replica: each replica advises from the requests it served; \
                    refresh_gate_replay_delay_seconds aggregates every replica in Prometheus",
            based_on: "presentations of an already-used refresh token by the client and from \
                       the source of its first use, over the last 24 h (since start when \
                       shorter); the recommended grace_period answers p99.9 of them, at least \
                       1s and at most 60s",
            period,
            clients: &clients,
        };
        serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".to_owned()) + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn the_report_names_each_configured_client_and_the_others() {
        let clock = Arc::new(ManualClock::new(UnixMillis(1_800_000_000_000)));
        let advice = GraceAdvice::new(vec!["kubernetes".into()], clock.clone());
        advice.record("kubernetes", Duration::from_millis(1_300), clock.now());
        advice.record("other", Duration::from_millis(20), clock.now());
        let report: serde_json::Value = serde_json::from_str(&advice.report()).unwrap();
        assert_eq!(report["clients"][0]["client_id"], "kubernetes");
        assert_eq!(report["clients"][0]["replays"], 1);
        assert_eq!(report["clients"][0]["recommended_grace_period"], "2s");
        assert_eq!(report["clients"][1]["client_id"], serde_json::Value::Null);
        assert_eq!(report["clients"][1]["replays"], 1);
        assert!(report["scope"].as_str().unwrap().contains("this replica"));
        assert_eq!(report["period"]["from"], "2027-01-15T08:00:00Z");
        advice.set_configured(vec![]);
        let report: serde_json::Value = serde_json::from_str(&advice.report()).unwrap();
        assert_eq!(report["clients"][0]["client_id"], serde_json::Value::Null);
        assert_eq!(
            report["clients"][0]["replays"], 2,
            "no longer configured: with the others"
        );
    }
}
