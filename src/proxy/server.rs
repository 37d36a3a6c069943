//! Assembling the gate: store, fingerprints, metrics, the Pingora server and its services.

use super::exchange::Exchanger;
use super::gate::Gate;
use super::refresh::RefreshGate;
use super::upstream::{UpstreamError, UpstreamPeers};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::fingerprint::{Fingerprinter, KeyError};
use crate::metrics::Metrics;
use crate::store::{MemoryStore, TokenStore};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use std::sync::Arc;
use std::time::Duration;

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The fingerprint key file.
    #[error("config key `store.fingerprint_key_file`: {0}")]
    Key(#[from] KeyError),
    /// The upstream.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// How often the store gauges are published.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Build every part from a validated config and serve until a signal stops the process.
pub fn run(config: Config) -> Result<(), StartError> {
    let fingerprinter = match &config.store.fingerprint_key_file {
        Some(path) => Fingerprinter::from_file(path)?,
        None => {
            tracing::info!(
                "no store.fingerprint_key_file: using a random fingerprint key for this process"
            );
            Fingerprinter::random()
        }
    };
    let peers = UpstreamPeers::from_config(&config)?;
    let metrics = Metrics::new();
    let store = Arc::new(MemoryStore::new(&config.store_limits()));

    let shutdown_secs = config.listen.shutdown_grace.as_secs();
    let server_conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(shutdown_secs),
        graceful_shutdown_timeout_seconds: Some(shutdown_secs.max(1)),
        ca_file: config
            .upstream
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, server_conf);
    server.bootstrap();

    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let refresh = Arc::new(RefreshGate::new(
        config.rules(),
        store.clone() as Arc<dyn TokenStore>,
        fingerprinter,
        Arc::new(SystemClock),
        metrics.clone(),
        Exchanger::new(connector, peers.exchange.clone()),
        config.upstream.request_timeout,
        config.upstream.exchange_timeout,
    ));
    let upstream_address = peers.address;
    let gate = Gate::new(
        refresh,
        peers,
        &config.upstream.token_paths,
        metrics.clone(),
        config.upstream.request_timeout,
    );
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gate, "refresh-gate");
    proxy.add_tcp(&config.listen.address);
    server.add_service(proxy);

    spawn_gauge_publisher(store, metrics);
    tracing::info!(
        listen = %config.listen.address,
        upstream = %config.upstream.url,
        upstream_address = %upstream_address,
        grace_period = ?config.rotation.grace_period,
        max_reuses = config.rotation.max_reuses,
        "refresh-gate starting"
    );
    server.run_forever();
}

fn spawn_gauge_publisher(store: Arc<MemoryStore>, metrics: Metrics) {
    std::thread::Builder::new()
        .name("store-gauges".to_owned())
        .spawn(move || {
            let mut evictions_seen = 0;
            loop {
                std::thread::sleep(GAUGE_INTERVAL);
                store.run_maintenance();
                let evictions = store.eviction_count();
                if evictions > evictions_seen {
                    tracing::warn!(
                        evicted = evictions - evictions_seen,
                        "tombstones evicted before their TTL: rotation.max_tombstones is too small for the load"
                    );
                    evictions_seen = evictions;
                }
                metrics.store_gauges(store.tombstone_count(), evictions);
            }
        })
        .expect("spawning a thread at start-up");
}
