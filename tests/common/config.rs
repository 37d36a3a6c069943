//! The gate's configuration file as typed values: one struct per TOML section, serialised
//! with the gate's own key names (README "Configuration", `src/config`). A test states what it
//! varies with the builder methods (named after the keys) and the rest are the harness
//! defaults; a typo is a compile error, not a key the gate refuses or a template that
//! silently keeps its old value. Tests that write broken or hostile files on purpose keep
//! raw strings.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A whole configuration file. `listen.address` and `admin.address` left at `None` are
/// filled with free loopback ports when the gate starts.
#[derive(Debug, Clone, Serialize)]
pub struct GateConfig {
    pub listen: Listen,
    pub admin: Admin,
    pub upstream: Upstream,
    pub rotation: Rotation,
    pub log: Log,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<Store>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// `[clients."<client_id>"]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub clients: BTreeMap<String, ClientOverrides>,
    /// Write `[rotation]` with no keys, so every rotation key is the gate's own default
    /// (`rotation` is then ignored): see [`GateConfig::gate_rotation_defaults`].
    #[serde(skip)]
    pub gate_rotation_defaults: bool,
}

/// `[listen]`.
#[derive(Debug, Clone, Serialize)]
pub struct Listen {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
}

/// `[upstream]`.
#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    pub url: String,
    pub token_paths: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub exchange_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_path: Option<String>,
    #[serde(with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// `None`: the gate's default list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_grant_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_encoding: Option<TokenEncoding>,
}

/// `[rotation]`.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_long_grace: Option<bool>,
    pub max_reuses: u32,
    #[serde(with = "humantime_serde")]
    pub replay_spacing: Duration,
    #[serde(with = "humantime_serde")]
    pub max_replay_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    pub max_tombstones: u64,
    pub max_in_flight: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_detached_per_source: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_replay: Option<OnReplay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_source: Option<BindSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_ipv4_prefix: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_ipv6_prefix: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_on_successor_use: Option<bool>,
    /// `None`: the value of `max_replay_delay`.
    #[serde(
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub min_replay_window: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// `mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Observe,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize)]
pub struct Log {
    /// A tracing filter, e.g. `"info"` or `"info,audit=debug"`.
    pub level: String,
    pub format: LogFormat,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Store {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreError>,
    /// Sentinels (`"127.0.0.1:26379"`), instead of `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinels: Option<Vec<String>>,
    /// The master name the sentinels monitor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password_file: Option<PathBuf>,
    /// Cluster nodes (`"127.0.0.1:7000"`), instead of `url`, with `backend = "redis-cluster"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// TLS to sentinels or cluster nodes (with `url`, the `rediss://` scheme says it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Replicas that must acknowledge each rotation (`WAIT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_replicas: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub wait_timeout: Option<Duration>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_claim: Option<String>,
}

/// `[clients."<client_id>"]`: a key left out keeps the `[rotation]` value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientOverrides {
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub grace_period: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_long_grace: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_reuses: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_source: Option<BindSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_replay: Option<OnReplay>,
    /// A JWKS with the public keys of the client's `private_key_jwt` assertions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_jwks_file: Option<PathBuf>,
    /// The shared secret of the client's `client_secret_jwt` assertions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_secret_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

impl ClientOverrides {
    /// `assertion_jwks_file`: the client's `private_key_jwt` keys are in `path`.
    pub fn assertion_jwks_file(mut self, path: impl AsRef<Path>) -> Self {
        self.assertion_jwks_file = Some(path.as_ref().to_owned());
        self
    }

    /// `assertion_secret_file`: the client's `client_secret_jwt` secret is in `path`.
    pub fn assertion_secret_file(mut self, path: impl AsRef<Path>) -> Self {
        self.assertion_secret_file = Some(path.as_ref().to_owned());
        self
    }
}

/// `on_replay` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnReplay {
    Refuse,
    RevokeFamily,
}

/// `bind_source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindSource {
    Off,
    Ip,
    Subnet,
}

/// `[log] format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// `[store] backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Memory,
    Redis,
    RedisCluster,
}

/// `[store] on_store_error` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreError {
    FailOpen,
    FailClosed,
}

/// `[upstream] token_encoding` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenEncoding {
    Opaque,
    Base64,
}

impl GateConfig {
    /// A gate in front of `upstream` with the harness defaults: short drains and timeouts,
    /// no replay spacing, `/token` as the token path.
    pub fn new(upstream: impl Into<String>) -> Self {
        GateConfig {
            listen: Listen {
                address: None,
                tls_cert_file: None,
                tls_key_file: None,
                trusted_proxies: Vec::new(),
                drain: secs(1),
                shutdown_grace: secs(1),
                public_url: None,
            },
            admin: Admin { address: None },
            upstream: Upstream {
                url: upstream.into(),
                token_paths: vec!["/token".to_owned()],
                connect_timeout: secs(1),
                request_timeout: secs(5),
                exchange_timeout: secs(30),
                ca_file: None,
                tls_server_name: None,
                discovery_path: None,
                revocation_path: None,
                discovery_interval: secs(60),
                forward_grant_types: None,
                token_encoding: None,
            },
            rotation: Rotation {
                grace_period: secs(5),
                allow_long_grace: None,
                max_reuses: 10,
                replay_spacing: Duration::ZERO,
                max_replay_delay: secs(2),
                tombstone_ttl: Duration::from_secs(15 * 60),
                max_tombstones: 100_000,
                max_in_flight: 10_000,
                max_detached_per_source: None,
                on_replay: None,
                bind_source: None,
                subnet_ipv4_prefix: None,
                subnet_ipv6_prefix: None,
                close_on_successor_use: None,
                min_replay_window: None,
                mode: None,
            },
            log: Log {
                level: "info".to_owned(),
                format: LogFormat::Plain,
            },
            store: None,
            audit: None,
            clients: BTreeMap::new(),
            gate_rotation_defaults: false,
        }
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        if !self.gate_rotation_defaults {
            return toml::to_string(self).expect("a gate configuration serialises to TOML");
        }
        let mut table =
            toml::Table::try_from(self).expect("a gate configuration serialises to TOML");
        table.insert("rotation".to_owned(), toml::Table::new().into());
        toml::to_string(&table).expect("a gate configuration serialises to TOML")
    }

    // `[listen]`

    /// Listen on `address` (a port reserved earlier) instead of a fresh free port.
    pub fn listen_on(mut self, address: SocketAddr) -> Self {
        self.listen.address = Some(address);
        self
    }

    /// `tls_cert_file` and `tls_key_file`: the gate terminates TLS.
    pub fn tls(mut self, cert_file: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Self {
        self.listen.tls_cert_file = Some(cert_file.as_ref().to_owned());
        self.listen.tls_key_file = Some(key_file.as_ref().to_owned());
        self
    }

    pub fn trusted_proxies<const N: usize>(mut self, proxies: [&str; N]) -> Self {
        self.listen.trusted_proxies = proxies.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    pub fn drain(mut self, drain: Duration) -> Self {
        self.listen.drain = drain;
        self
    }

    /// `public_url`: the gate's URL as clients see it (behind an ingress).
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.listen.public_url = Some(url.into());
        self
    }

    // `[upstream]`

    pub fn token_paths<const N: usize>(mut self, paths: [&str; N]) -> Self {
        self.upstream.token_paths = paths.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.upstream.request_timeout = timeout;
        self
    }

    pub fn exchange_timeout(mut self, timeout: Duration) -> Self {
        self.upstream.exchange_timeout = timeout;
        self
    }

    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.upstream.ca_file = Some(path.as_ref().to_owned());
        self
    }

    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.upstream.tls_server_name = Some(name.into());
        self
    }

    pub fn revocation_path(mut self, path: impl Into<String>) -> Self {
        self.upstream.revocation_path = Some(path.into());
        self
    }

    pub fn discovery_interval(mut self, interval: Duration) -> Self {
        self.upstream.discovery_interval = interval;
        self
    }

    pub fn forward_grant_types<const N: usize>(mut self, grants: [&str; N]) -> Self {
        self.upstream.forward_grant_types = Some(grants.iter().map(|g| (*g).to_owned()).collect());
        self
    }

    // `[rotation]`

    /// Leave every `[rotation]` key out of the file: the gate's documented defaults, including
    /// keys this harness does not know yet, rather than the harness's values.
    pub fn gate_rotation_defaults(mut self) -> Self {
        self.gate_rotation_defaults = true;
        self
    }

    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.rotation.grace_period = grace;
        self
    }

    pub fn max_reuses(mut self, reuses: u32) -> Self {
        self.rotation.max_reuses = reuses;
        self
    }

    pub fn replay_spacing(mut self, spacing: Duration) -> Self {
        self.rotation.replay_spacing = spacing;
        self
    }

    pub fn max_replay_delay(mut self, delay: Duration) -> Self {
        self.rotation.max_replay_delay = delay;
        self
    }

    pub fn close_on_successor_use(mut self, close: bool) -> Self {
        self.rotation.close_on_successor_use = Some(close);
        self
    }

    /// `[rotation] mode`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.rotation.mode = Some(mode);
        self
    }

    pub fn min_replay_window(mut self, window: Duration) -> Self {
        self.rotation.min_replay_window = Some(window);
        self
    }

    pub fn max_tombstones(mut self, tombstones: u64) -> Self {
        self.rotation.max_tombstones = tombstones;
        self
    }

    pub fn max_in_flight(mut self, exchanges: usize) -> Self {
        self.rotation.max_in_flight = exchanges;
        self
    }

    pub fn max_detached_per_source(mut self, exchanges: u32) -> Self {
        self.rotation.max_detached_per_source = Some(exchanges);
        self
    }

    pub fn on_replay(mut self, on_replay: OnReplay) -> Self {
        self.rotation.on_replay = Some(on_replay);
        self
    }

    pub fn bind_source(mut self, bind_source: BindSource) -> Self {
        self.rotation.bind_source = Some(bind_source);
        self
    }

    pub fn subnet_ipv6_prefix(mut self, prefix: u8) -> Self {
        self.rotation.subnet_ipv6_prefix = Some(prefix);
        self
    }

    /// `[clients."<client_id>"]`.
    pub fn client(mut self, client_id: &str, overrides: ClientOverrides) -> Self {
        self.clients.insert(client_id.to_owned(), overrides);
        self
    }

    // `[store]`, `[log]`

    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log.level = level.into();
        self
    }

    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log.format = format;
        self
    }
}

impl Store {
    /// A Redis store at `url` keyed by `fingerprint_key_file`.
    pub fn redis(url: impl Into<String>, fingerprint_key_file: impl AsRef<Path>) -> Self {
        Store {
            backend: Some(Backend::Redis),
            url: Some(url.into()),
            fingerprint_key_file: Some(fingerprint_key_file.as_ref().to_owned()),
            ..Store::default()
        }
    }

    /// A Redis store found through `sentinels` (`"127.0.0.1:port"`) monitoring `master`.
    pub fn sentinel(
        sentinels: Vec<String>,
        master: impl Into<String>,
        fingerprint_key_file: impl AsRef<Path>,
    ) -> Self {
        Store {
            backend: Some(Backend::Redis),
            sentinels: Some(sentinels),
            sentinel_master: Some(master.into()),
            fingerprint_key_file: Some(fingerprint_key_file.as_ref().to_owned()),
            ..Store::default()
        }
    }

    /// A Redis Cluster store seeded with `nodes` (`"127.0.0.1:port"`).
    pub fn cluster(nodes: Vec<String>, fingerprint_key_file: impl AsRef<Path>) -> Self {
        Store {
            backend: Some(Backend::RedisCluster),
            nodes: Some(nodes),
            fingerprint_key_file: Some(fingerprint_key_file.as_ref().to_owned()),
            ..Store::default()
        }
    }

    /// `wait_replicas`.
    pub fn wait_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = Some(replicas);
        self
    }

    /// `wait_timeout`.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// `on_store_error`.
    pub fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_store_error = Some(policy);
        self
    }

    /// `key_prefix`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}
