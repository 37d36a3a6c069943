//! The gate assembled from validated settings: [`App::build`] makes every part (store,
//! fingerprints, metrics, peers, the Pingora server and its services) and [`App::run`]
//! serves until a signal stops the process. Nothing here parses or checks the
//! configuration again. A failure here is the environment (a name that does not resolve, an
//! address still taken after 30 s, a thread that does not start), except what only a
//! library can judge: a certificate or key that does not load, a Redis CA the client
//! refuses ([`StartError::is_configuration`], exit 64).

use super::admin::AdminApp;
use super::background::{self, DiscoveryCheck};
use super::reload::Reloader;
use super::signal::DrainingShutdown;
use super::telemetry::LogLevel;
use super::tls::{CertError, ReloadingCert};
use crate::clock::{Clock, SystemClock};
use crate::config::{
    ListenSettings, Loaded, RedisSettings, Settings, StoreBackend, UpstreamSettings,
};
use crate::health::readiness::Readiness;
use crate::observe::audit::Auditor;
use crate::observe::grace::GraceAdvice;
use crate::observe::metrics::Metrics;
use crate::proxy::exchange::Exchanger;
use crate::proxy::gate::{GateProxy, GateSettings};
use crate::proxy::refresh::{RefreshHandler, RefreshParts, RefreshSettings};
use crate::proxy::upstream::{UpstreamError, UpstreamPeers};
use crate::seal::fingerprint::Fingerprinter;
use crate::store::{MemoryStore, Observations, RedisStore, RedisStoreConfig, TokenStore};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why the gate could not start although its configuration is valid.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream did not resolve.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The listener's certificate did not load.
    #[error(transparent)]
    Tls(#[from] CertError),
    /// A listener's address is taken or not ours.
    #[error("cannot listen on {address} (`{key}`): {source}")]
    Listen {
        /// The configuration key of the address.
        key: &'static str,
        /// The address.
        address: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// A thread could not start.
    #[error("cannot start the background thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The shared store could not be set up.
    #[error("cannot set up the token store (Redis, [store]): {0}")]
    Store(String),
}

impl StartError {
    /// Whether the configuration is at fault (exit 64): a certificate or key file that
    /// does not load, a Redis URL or CA the Redis client refuses. Anything else (an address
    /// still taken, a name that does not resolve, a thread) is the machine's (exit 1).
    pub fn is_configuration(&self) -> bool {
        matches!(self, StartError::Tls(_) | StartError::Store(_))
    }
}

/// The token store, and the runtime that drives a shared store's connection (kept for
/// the life of the process).
struct StoreParts {
    store: Arc<dyn TokenStore>,
    _runtime: Option<tokio::runtime::Runtime>,
}

/// Everything the background thread runs.
struct Background {
    discovery: Option<DiscoveryCheck>,
    reloader: Arc<Reloader>,
    metrics: Metrics,
}

/// The assembled gate, ready to serve.
pub struct App {
    server: Server,
    settings: Settings,
    readiness: Arc<Readiness>,
    store: StoreParts,
    background: Background,
    upstream_address: SocketAddr,
}

impl App {
    /// Build every part from a validated configuration read at `config_path` (read again
    /// on a reload). `log_level` lets a reload change the level.
    pub fn build(
        loaded: Loaded,
        config_path: PathBuf,
        log_level: Option<LogLevel>,
    ) -> Result<App, StartError> {
        let Loaded { file, settings } = loaded;
        for (key, address) in listeners(&settings) {
            probe_listener(key, address)?;
        }
        let peers = UpstreamPeers::from_settings(&settings.upstream)?;
        let metrics = Metrics::new();
        let readiness = Arc::new(Readiness::default());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = build_store(&settings, clock.clone())?;

        let mut server = Server::new_with_opt_and_conf(None, server_conf(&settings));
        server.bootstrap();
        let server_conf = server.configuration.clone();
        let connector = || Connector::new(Some(ConnectorOptions::from_server_conf(&server_conf)));

        let exchanger = Exchanger::new(connector(), peers.exchange.clone());
        let grace_advice = Arc::new(GraceAdvice::new(Vec::new(), clock.clone()));
        let refresh = Arc::new(refresh_handler(
            &settings,
            &store,
            &metrics,
            clock,
            exchanger,
            grace_advice.clone(),
        ));
        let gate = GateProxy::new(
            refresh.clone(),
            peers.clone(),
            GateSettings {
                token_paths: settings.upstream.token_paths.clone(),
                request_timeout: settings.upstream.request_timeout,
                trusted_proxies: settings.listen.trusted_proxies.clone(),
                rules: settings.upstream.grant_rules.clone(),
                revocation_path: settings.upstream.revocation_path.clone(),
            },
        );
        let mut proxy = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            gate,
            "refresh-gate",
        );
        let certificate = add_listener(&mut proxy, &settings.listen)?;
        server.add_service(proxy);
        match settings.admin {
            Some(address) => {
                let app = AdminApp::new(
                    metrics.clone(),
                    readiness.clone(),
                    store.store.clone(),
                    grace_advice.clone(),
                );
                let mut service = Service::new("refresh-gate-admin".to_owned(), app);
                service.add_tcp(&address.to_string());
                server.add_service(service);
            }
            None => {
                tracing::warn!("no [admin] section: /metrics, /livez and /readyz are not served")
            }
        }
        let discovery = discovery_check(&settings.upstream, connector(), &peers);
        let reloader = Arc::new(Reloader::new(
            config_path,
            file,
            refresh,
            log_level,
            certificate,
        ));
        Ok(App {
            server,
            readiness,
            store,
            background: Background {
                discovery,
                reloader,
                metrics,
            },
            upstream_address: peers.address,
            settings,
        })
    }

    /// Start the background thread and serve until SIGTERM (after the drain) or SIGINT.
    pub fn run(self) -> Result<(), StartError> {
        let App {
            server,
            settings,
            readiness,
            store,
            background,
            upstream_address,
        } = self;
        background::spawn(
            background.discovery,
            background.reloader,
            readiness.clone(),
            store.store.clone(),
            background.metrics,
        )?;
        tracing::info!(
            listen = %settings.listen.address,
            admin = settings.admin.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            upstream = %settings.upstream.target,
            upstream_address = %upstream_address,
            grace_period = ?settings.rotation.policy.defaults.grace_period,
            max_reuses = settings.rotation.policy.defaults.max_reuses,
            store = store_name(&settings.store.backend),
            "refresh-gate starting"
        );
        server.run(RunArgs {
            shutdown_signal: Box::new(DrainingShutdown {
                readiness,
                drain: settings.listen.drain,
            }),
        });
        tracing::info!("refresh-gate stopped");
        drop(store);
        Ok(())
    }
}

/// The proxy's listener: plain TCP, or TLS with a certificate that reloads.
fn add_listener<A>(
    proxy: &mut Service<A>,
    listen: &ListenSettings,
) -> Result<Option<Arc<ReloadingCert>>, CertError> {
    let endpoint = super::engine::tcp_listener(&listen.address.to_string());
    match &listen.tls {
        Some(tls) => {
            let certificate = ReloadingCert::load(&tls.cert_file, &tls.key_file)?;
            proxy.add_listener(endpoint.tls(super::tls::settings(certificate.clone())));
            Ok(Some(certificate))
        }
        None => {
            proxy.add_listener(endpoint);
            Ok(None)
        }
    }
}

/// The discovery check, unless `discovery_interval` is zero.
fn discovery_check(
    upstream: &UpstreamSettings,
    connector: Connector,
    peers: &UpstreamPeers,
) -> Option<DiscoveryCheck> {
    (!upstream.discovery_interval.is_zero()).then(|| DiscoveryCheck {
        exchanger: Exchanger::new(connector, peers.token.clone()),
        path: upstream.discovery_path.clone(),
        host: upstream.host_header(),
        token_paths: crate::http::path::normalize_all(&upstream.token_paths),
        interval: upstream.discovery_interval,
        timeout: upstream.request_timeout,
    })
}

/// Every listener: the proxy's and the admin one.
fn listeners(settings: &Settings) -> impl Iterator<Item = (&'static str, SocketAddr)> {
    let admin = settings.admin.map(|a| ("admin.address", a));
    [("listen.address", settings.listen.address)]
        .into_iter()
        .chain(admin)
}

/// Bind `address` once and let it go, as Pingora will (`SO_REUSEADDR`), so that a taken
/// port is a clear start-up error: Pingora binds inside its services' threads, retries for
/// 30 s and then panics in that thread, leaving a process that serves nothing.
/// How many times a taken listener address is tried, a second apart, before start-up fails
/// (as Pingora itself retries: a previous process may still be draining).
const LISTEN_ATTEMPTS: u32 = 30;

fn probe_listener(key: &'static str, address: SocketAddr) -> Result<(), StartError> {
    let bind = || {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }?;
        socket.set_reuseaddr(true)?;
        socket.bind(address)
    };
    let mut attempt = 1;
    loop {
        match bind() {
            Ok(_) => return Ok(()),
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && attempt < LISTEN_ATTEMPTS =>
            {
                if attempt == 1 {
                    tracing::warn!(%address, key, "the address is taken; retrying for up to 30s");
                }
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(source) => {
                return Err(StartError::Listen {
                    key,
                    address,
                    source,
                })
            }
        }
    }
}

fn store_name(backend: &StoreBackend) -> &'static str {
    match backend {
        StoreBackend::Memory => "Memory",
        StoreBackend::Redis(_) => "Redis",
    }
}

fn server_conf(settings: &Settings) -> ServerConf {
    let shutdown_secs = settings.listen.shutdown_grace.as_secs();
    ServerConf {
        grace_period_seconds: Some(shutdown_secs),
        graceful_shutdown_timeout_seconds: Some(shutdown_secs.max(1)),
        ca_file: settings
            .upstream
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ..super::engine::engine_conf()
    }
}

/// The refresh handler, from the settings it needs.
fn refresh_handler(
    settings: &Settings,
    store: &StoreParts,
    metrics: &Metrics,
    clock: Arc<dyn Clock>,
    exchanger: Exchanger,
    grace_advice: Arc<GraceAdvice>,
) -> RefreshHandler {
    let fingerprinter = match &settings.store.fingerprinter {
        Some(fingerprinter) => fingerprinter.clone(),
        None => {
            tracing::info!(
                "no store.fingerprint_key_file: using a random fingerprint key for this process"
            );
            Fingerprinter::random()
        }
    }
    .with_token_encoding(settings.upstream.token_encoding);
    RefreshHandler::new(
        RefreshParts {
            policy: settings.rotation.policy.clone(),
            store: store.store.clone(),
            fingerprinter,
            clock,
            auditor: Arc::new(Auditor::new(metrics.clone())),
            endpoint: Arc::new(exchanger),
            grace_advice,
            observations: Observations::new(
                settings.rotation.limits.max_tombstones,
                settings.rotation.limits.tombstone_ttl,
            ),
        },
        RefreshSettings {
            request_timeout: settings.upstream.request_timeout,
            exchange_timeout: settings.upstream.exchange_timeout,
            subject_claim: settings.audit.subject_claim.clone(),
            revocation_path: settings.upstream.revocation_path.clone(),
            on_store_error: settings.store.on_store_error,
            max_detached_per_source: settings.rotation.max_detached_per_source,
            client_keys: settings.client_keys.clone(),
            public_url: settings.listen.public_url.clone(),
            max_in_flight: settings.rotation.limits.max_in_flight,
        },
    )
}

/// The token store the settings name, on the gate's clock.
fn build_store(settings: &Settings, clock: Arc<dyn Clock>) -> Result<StoreParts, StartError> {
    match &settings.store.backend {
        StoreBackend::Memory => Ok(StoreParts {
            store: Arc::new(MemoryStore::new(&settings.rotation.limits, clock)),
            _runtime: None,
        }),
        StoreBackend::Redis(redis) => redis_store(settings, redis, clock),
    }
}

fn redis_store(
    settings: &Settings,
    redis: &RedisSettings,
    clock: Arc<dyn Clock>,
) -> Result<StoreParts, StartError> {
    let config = RedisStoreConfig {
        topology: redis.topology.clone(),
        tls: redis.tls,
        wait_replicas: redis.wait_replicas,
        wait_timeout: redis.wait_timeout,
        username: redis.username.clone(),
        password: redis.password.clone(),
        ca_pem: redis.ca_pem.clone(),
        key_prefix: redis.key_prefix.clone(),
        timeout: redis.timeout,
        tombstone_ttl: settings.rotation.limits.tombstone_ttl,
        claim_ttl: settings.upstream.exchange_timeout + redis.timeout * 2 + Duration::from_secs(1),
        max_in_flight: settings.rotation.limits.max_in_flight,
    };
    // The connection and its pub/sub deliveries run on their own thread, whatever the
    // Pingora services' runtimes do.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("refresh-gate-store")
        .enable_all()
        .build()?;
    let store = {
        let _entered = runtime.enter();
        RedisStore::connect(&config, clock).map_err(|e| StartError::Store(e.to_string()))?
    };
    let probe = store.clone();
    let topology = redis.topology.kind();
    let wait_replicas = redis.wait_replicas;
    runtime.spawn(async move {
        // Sentinel and Cluster connect in the background: give them a moment.
        let mut answer = probe.ping().await;
        for _ in 0..20 {
            if answer.is_ok() || topology == "single" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = probe.ping().await;
        }
        match answer {
            Ok(()) => tracing::info!(
                topology,
                wait_replicas,
                "connected to the token store (Redis)"
            ),
            Err(error) => {
                tracing::warn!(%error, topology, "the token store (Redis) does not answer yet")
            }
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
        store: Arc::new(store),
        _runtime: Some(runtime),
    })
}
