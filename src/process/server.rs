//! Assembling the gate: store, fingerprints, metrics, the Pingora server and its services.

use super::admin::AdminApp;
use super::background::{self, DiscoveryCheck};
use super::reload::Reloader;
use super::signal::DrainingShutdown;
use super::telemetry::LogLevel;
use super::tls::{CertError, ReloadingCert};
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config, UpstreamTarget};
use crate::health::readiness::Readiness;
use crate::observe::audit::Auditor;
use crate::observe::metrics::Metrics;
use crate::proxy::exchange::Exchanger;
use crate::proxy::gate::{GateProxy, GateSettings};
use crate::proxy::refresh::{RefreshHandler, RefreshParts, RefreshSettings};
use crate::proxy::upstream::{UpstreamError, UpstreamPeers};
use crate::seal::fingerprint::{Fingerprinter, KeyError};
use crate::store::{MemoryStore, RedisStore, RedisStoreConfig, TokenStore};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use std::path::PathBuf;
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
    /// The TLS certificate.
    #[error(transparent)]
    Tls(#[from] CertError),
    /// A thread could not start.
    #[error("cannot start the background thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The shared store could not be set up.
    #[error("config key `{key}`: {message}")]
    Store {
        /// The key at fault.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The token store, and the runtime that drives a shared store's connection (kept for
/// the life of the process).
struct StoreParts {
    store: Arc<dyn TokenStore>,
    _runtime: Option<tokio::runtime::Runtime>,
}

fn read_file(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|e| StartError::Store {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

fn build_store(config: &Config, clock: Arc<dyn Clock>) -> Result<StoreParts, StartError> {
    let store = &config.store;
    if store.backend == Backend::Memory {
        return Ok(StoreParts {
            store: Arc::new(MemoryStore::new(&config.store_limits(), clock)),
            _runtime: None,
        });
    }
    let password = match &store.password_file {
        Some(path) => {
            let raw = read_file("store.password_file", path)?;
            let text = String::from_utf8(raw).map_err(|_| StartError::Store {
                key: "store.password_file",
                message: "is not UTF-8".to_owned(),
            })?;
            Some(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => None,
    };
    let ca_pem = match &store.ca_file {
        Some(path) => Some(read_file("store.ca_file", path)?),
        None => None,
    };
    let redis_config = RedisStoreConfig {
        url: store.url.clone().unwrap_or_default(),
        username: store.username.clone(),
        password,
        ca_pem,
        key_prefix: store.key_prefix.clone(),
        timeout: store.timeout,
        tombstone_ttl: config.rotation.tombstone_ttl,
        claim_ttl: config.upstream.exchange_timeout + store.timeout * 2 + Duration::from_secs(1),
        max_in_flight: config.rotation.max_in_flight,
    };
    // The connection and its pub/sub deliveries run on their own thread, whatever the
    // Pingora services' runtimes do.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("refresh-gate-store")
        .enable_all()
        .build()?;
    let redis = {
        let _entered = runtime.enter();
        RedisStore::connect(&redis_config, clock).map_err(|e| StartError::Store {
            key: "store.url",
            message: e.to_string(),
        })?
    };
    let probe = redis.clone();
    runtime.spawn(async move {
        match probe.ping().await {
            Ok(()) => tracing::info!("connected to the token store (Redis)"),
            Err(error) => tracing::warn!(%error, "the token store (Redis) does not answer yet"),
        }
        match probe.eviction_policy().await.as_deref() {
            Some("noeviction") | None => {}
            Some(policy) => tracing::warn!(
                maxmemory_policy = policy,
                "Redis may evict tombstones under memory pressure (a replay would then escape \
                 the gate): use maxmemory-policy noeviction for the gate's Redis"
            ),
        }
    });
    Ok(StoreParts {
        store: Arc::new(redis),
        _runtime: Some(runtime),
    })
}

/// Build every part from a validated config (read from `config_path`, for reloads) and
/// serve until a signal stops the process.
pub fn run(
    config: Config,
    config_path: PathBuf,
    log_level: Option<LogLevel>,
) -> Result<(), StartError> {
    let fingerprinter = match &config.store.fingerprint_key_file {
        Some(path) => Fingerprinter::from_file(path)?,
        None => {
            tracing::info!(
                "no store.fingerprint_key_file: using a random fingerprint key for this process"
            );
            Fingerprinter::random()
        }
    }
    .with_token_encoding(config.upstream.token_encoding);
    let peers = UpstreamPeers::from_config(&config)?;
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store_parts = build_store(&config, clock.clone())?;
    let store = store_parts.store.clone();

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
    let server_configuration = server.configuration.clone();
    let connector_options = || ConnectorOptions::from_server_conf(&server_configuration);

    let refresh = Arc::new(RefreshHandler::new(
        RefreshParts {
            policy: config.policy(),
            store: store.clone(),
            fingerprinter,
            clock,
            auditor: Arc::new(Auditor::new(metrics.clone())),
            endpoint: Arc::new(Exchanger::new(
                Connector::new(Some(connector_options())),
                peers.exchange.clone(),
            )),
        },
        RefreshSettings {
            request_timeout: config.upstream.request_timeout,
            exchange_timeout: config.upstream.exchange_timeout,
            subject_claim: config.audit.subject_claim.clone(),
            revocation_path: config.upstream.revocation_path.clone(),
            on_store_error: config.store.on_store_error,
            max_detached_per_source: config.rotation.max_detached_per_source,
        },
    ));
    let gate = GateProxy::new(
        refresh.clone(),
        peers.clone(),
        GateSettings {
            token_paths: config.upstream.token_paths.clone(),
            request_timeout: config.upstream.request_timeout,
            trusted_proxies: config.trusted_proxies().unwrap_or_default(),
            rules: config.grant_rules(),
        },
    );
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gate, "refresh-gate");
    let certificate = match (&config.listen.tls_cert_file, &config.listen.tls_key_file) {
        (Some(cert), Some(key)) => {
            let certificate = ReloadingCert::load(cert, key)?;
            proxy.add_tls_with_settings(
                &config.listen.address,
                None,
                super::tls::settings(certificate.clone()),
            );
            Some(certificate)
        }
        _ => {
            proxy.add_tcp(&config.listen.address);
            None
        }
    };
    server.add_service(proxy);

    match &config.admin {
        Some(admin) => {
            let mut service = Service::new(
                "refresh-gate-admin".to_owned(),
                AdminApp::new(metrics.clone(), readiness.clone(), store.clone()),
            );
            service.add_tcp(&admin.address);
            server.add_service(service);
        }
        None => tracing::warn!("no [admin] section: /metrics, /livez and /readyz are not served"),
    }

    let discovery = (!config.upstream.discovery_interval.is_zero()).then(|| {
        let target = UpstreamTarget::parse(&config.upstream.url).ok();
        let host = match (&config.upstream.tls_server_name, target) {
            (Some(name), _) => name.clone(),
            (None, Some(t)) if t.port == if t.tls { 443 } else { 80 } => t.host,
            (None, Some(t)) if t.host.contains(':') => format!("[{}]:{}", t.host, t.port),
            (None, Some(t)) => format!("{}:{}", t.host, t.port),
            (None, None) => String::new(),
        };
        DiscoveryCheck {
            exchanger: Exchanger::new(
                Connector::new(Some(connector_options())),
                peers.token.clone(),
            ),
            path: config.upstream.discovery_path(),
            host,
            token_paths: crate::http::path::normalize_all(&config.upstream.token_paths),
            interval: config.upstream.discovery_interval,
            timeout: config.upstream.request_timeout,
        }
    });
    let reloader = Arc::new(Reloader::new(
        config_path,
        config.clone(),
        refresh,
        log_level,
        certificate,
    ));
    background::spawn(discovery, reloader, readiness.clone(), store, metrics)?;

    tracing::info!(
        listen = %config.listen.address,
        admin = config.admin.as_ref().map(|a| a.address.as_str()).unwrap_or("-"),
        upstream = %config.upstream.url,
        upstream_address = %peers.address,
        grace_period = ?config.rotation.grace_period,
        max_reuses = config.rotation.max_reuses,
        store = ?config.store.backend,
        "refresh-gate starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingShutdown {
            readiness,
            drain: config.listen.drain,
        }),
    });
    tracing::info!("refresh-gate stopped");
    drop(store_parts);
    Ok(())
}
