//! Work beside the request path, on its own thread: the discovery check and the store
//! gauges.

use super::reload::Reloader;
use crate::health::discovery::{self, DiscoveryVerdict};
use crate::health::readiness::Readiness;
use crate::observe::metrics::Metrics;
use crate::proxy::exchange::{Exchanger, TokenEndpoint};
use crate::store::TokenStore;
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::sync::Arc;
use std::time::Duration;

/// How often the store gauges are published and evictions logged.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// What the discovery check needs.
pub struct DiscoveryCheck {
    /// Sends the GET (its own connection pool, on this thread's runtime).
    pub exchanger: Exchanger,
    /// The document's path.
    pub path: String,
    /// The `Host` to send.
    pub host: String,
    /// Normalised token paths.
    pub token_paths: Vec<String>,
    /// Between checks.
    pub interval: Duration,
    /// Bound on one check.
    pub timeout: Duration,
}

impl DiscoveryCheck {
    async fn run_once(&self) -> DiscoveryVerdict {
        let header =
            match RequestHeader::build("GET", self.path.as_bytes(), None).and_then(|mut h| {
                h.insert_header("host", &self.host)?;
                h.insert_header("accept", "application/json")?;
                Ok(h)
            }) {
                Ok(header) => header,
                Err(e) => return DiscoveryVerdict::Unavailable(e.to_string()),
            };
        match tokio::time::timeout(self.timeout, self.exchanger.send(header, Bytes::new())).await {
            Ok(Ok(answer)) if answer.status == 200 => {
                discovery::judge(&answer.body, &self.token_paths)
            }
            Ok(Ok(answer)) => DiscoveryVerdict::Unavailable(format!("status {}", answer.status)),
            Ok(Err(e)) => DiscoveryVerdict::Unavailable(format!("{e:?}")),
            Err(_) => DiscoveryVerdict::Unavailable("timed out".to_owned()),
        }
    }
}

fn report(verdict: &DiscoveryVerdict, previous: &DiscoveryVerdict, path: &str) {
    match verdict {
        DiscoveryVerdict::Mismatch {
            token_endpoint_path,
        } => tracing::error!(
            discovery = path,
            token_endpoint_path = token_endpoint_path.as_str(),
            "THE GATE IS NOT GUARDING THE TOKEN ENDPOINT: the IdP's token_endpoint is not in \
             upstream.token_paths, so refresh grants bypass the gate; /readyz answers 503"
        ),
        DiscoveryVerdict::Matches if previous != verdict => {
            tracing::info!(discovery = path, "the IdP's token_endpoint is guarded")
        }
        DiscoveryVerdict::Unavailable(reason) if previous != verdict => tracing::warn!(
            discovery = path,
            reason = reason.as_str(),
            "cannot check the IdP's discovery document"
        ),
        _ => {}
    }
}

/// How often the configuration file and the TLS certificate are checked for a change.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Reload on SIGHUP, and when the configuration or certificate files change (a ConfigMap
/// or Secret updated by Kubernetes).
async fn watch_reloads(reloader: Arc<Reloader>) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = signalled => {
                tracing::info!("SIGHUP: reloading the configuration and the TLS certificate");
                reloader.reload();
            }
            _ = tokio::time::sleep(RELOAD_CHECK_INTERVAL) => reloader.reload_if_changed(),
        }
    }
}

/// Start the background thread.
pub fn spawn(
    discovery: Option<DiscoveryCheck>,
    reloader: Arc<Reloader>,
    readiness: Arc<Readiness>,
    store: Arc<dyn TokenStore>,
    metrics: Metrics,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("refresh-gate-background".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let gauges = tokio::spawn(publish_gauges(store, metrics));
                tokio::spawn(watch_reloads(reloader));
                if let Some(check) = discovery {
                    tokio::spawn(async move {
                        let mut previous = DiscoveryVerdict::Unchecked;
                        loop {
                            let verdict = check.run_once().await;
                            report(&verdict, &previous, &check.path);
                            readiness.set_discovery(verdict.clone());
                            previous = verdict;
                            tokio::time::sleep(check.interval).await;
                        }
                    });
                }
                let _ = gauges.await;
            })
        })?;
    Ok(())
}

async fn publish_gauges(store: Arc<dyn TokenStore>, metrics: Metrics) {
    let mut evictions_seen = 0;
    loop {
        tokio::time::sleep(GAUGE_INTERVAL).await;
        let evictions = store.eviction_count();
        if evictions > evictions_seen {
            tracing::warn!(
                evicted = evictions - evictions_seen,
                "tombstones evicted before their TTL: rotation.max_tombstones is too small for the load"
            );
            evictions_seen = evictions;
        }
        metrics.store_gauges(store.tombstone_count(), evictions);
        let health = store.health();
        metrics.store_health(&health);
    }
}
