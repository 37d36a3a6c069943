//! The TOML configuration: a pure parse (serde defaults, unknown keys refused) and one
//! `validate` shared by start-up and `--check-config`.

use crate::policy::{OnReplay, Policy, Rules, SourceBinding};
use crate::store::MemoryStoreLimits;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest grace period accepted without `allow_long_grace`.
pub const LONG_GRACE: Duration = Duration::from_secs(60);
/// The longest grace period accepted at all.
pub const MAX_GRACE: Duration = Duration::from_secs(300);
/// The largest token-path request body the gate reads (Pingora's retry buffer).
pub const MAX_TOKEN_BODY_BYTES: usize = 64 * 1024;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has an unknown or mistyped key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// TOML's message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[listen]`.
    pub listen: Listen,
    /// `[upstream]`.
    pub upstream: Upstream,
    /// `[rotation]`.
    #[serde(default)]
    pub rotation: Rotation,
    /// `[store]`.
    #[serde(default)]
    pub store: Store,
    /// `[log]`.
    #[serde(default)]
    pub log: Log,
    /// `[admin]`: the metrics and health listener (absent: no admin listener).
    #[serde(default)]
    pub admin: Option<Admin>,
    /// `[audit]`.
    #[serde(default)]
    pub audit: Audit,
    /// `[clients."<client_id>"]`: per-client overrides of `[rotation]`.
    #[serde(default)]
    pub clients: HashMap<String, ClientOverrides>,
}

/// `bind_source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BindSource {
    /// No binding.
    #[default]
    Off,
    /// The same IP address.
    Ip,
    /// The same subnet (`subnet_ipv4_prefix`, `subnet_ipv6_prefix`).
    Subnet,
}

/// `on_replay` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnReplayConfig {
    /// Refuse the replay.
    #[default]
    Refuse,
    /// Refuse and revoke the token family.
    RevokeFamily,
}

impl From<OnReplayConfig> for OnReplay {
    fn from(value: OnReplayConfig) -> Self {
        match value {
            OnReplayConfig::Refuse => OnReplay::Refuse,
            OnReplayConfig::RevokeFamily => OnReplay::RevokeFamily,
        }
    }
}

/// `[clients."<client_id>"]`: any key left out keeps the `[rotation]` value.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientOverrides {
    /// `grace_period`.
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    /// `allow_long_grace`.
    #[serde(default)]
    pub allow_long_grace: Option<bool>,
    /// `max_reuses`.
    #[serde(default)]
    pub max_reuses: Option<u32>,
    /// `bind_source`.
    #[serde(default)]
    pub bind_source: Option<BindSource>,
    /// `on_replay`.
    #[serde(default)]
    pub on_replay: Option<OnReplayConfig>,
}

/// `[admin]`: `/metrics`, `/livez`, `/readyz` on their own listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `address`, e.g. "0.0.0.0:9481" in a pod.
    pub address: String,
}

/// `[audit]`: what audit events report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `subject_claim`: the id_token claim reported as the subject.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            subject_claim: default_subject_claim(),
        }
    }
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

/// `[listen]`: where the gate accepts clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `address`, e.g. "0.0.0.0:9480".
    pub address: String,
    /// `tls_cert_file`: PEM certificate chain; with `tls_key_file`, the gate terminates TLS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// `tls_key_file`: PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// `trusted_proxies`: CIDRs (or addresses) of proxies whose `X-Forwarded-For` /
    /// `Forwarded` headers name the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `drain`: after SIGTERM, how long the gate keeps serving while `/readyz` says 503,
    /// before it stops accepting connections.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
    /// `shutdown_grace`: after the drain, how long requests in flight may take to finish.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

fn default_drain() -> Duration {
    Duration::from_secs(5)
}

/// `[upstream]`: the IdP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `url`: "http://host:port" or "https://host:port".
    pub url: String,
    /// `token_paths`: the IdP's token endpoint paths.
    pub token_paths: Vec<String>,
    /// `connect_timeout`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `request_timeout`: how long a client waits for a token-path answer.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `exchange_timeout`: how long an exchange may run after its client gave up, so a
    /// late success is still remembered.
    #[serde(default = "default_exchange_timeout", with = "humantime_serde")]
    pub exchange_timeout: Duration,
    /// `ca_file`: PEM roots that replace the system roots for the IdP.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `tls_server_name`: the name to verify when connecting by address.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// `discovery_path`: the IdP's discovery document (default: the first token path's
    /// parent plus `/.well-known/openid-configuration`).
    #[serde(default)]
    pub discovery_path: Option<String>,
    /// `revocation_path`: the IdP's RFC 7009 revocation endpoint, used to revoke a family
    /// at the IdP under `on_replay = "revoke-family"`.
    #[serde(default)]
    pub revocation_path: Option<String>,
    /// `discovery_interval`: how often the discovery document is checked ("0s": never).
    #[serde(default = "default_discovery_interval", with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// `forward_grant_types`: the grant types forwarded untouched on a token path, compared
    /// exactly; any other grant type is refused with `unsupported_grant_type`.
    #[serde(default = "default_forward_grant_types")]
    pub forward_grant_types: Vec<String>,
    /// `token_encoding`: `"opaque"` (tokens compared as strings) or `"base64"` (the IdP
    /// decodes base64 / base64url / JWT tokens, so spellings it reads alike are one token).
    #[serde(default)]
    pub token_encoding: crate::oauth::token_spelling::TokenEncoding,
}

fn default_forward_grant_types() -> Vec<String> {
    crate::oauth::grant::GrantRules::default().forward_grant_types
}

impl Upstream {
    /// The discovery document's path.
    pub fn discovery_path(&self) -> String {
        match &self.discovery_path {
            Some(path) => path.clone(),
            None => crate::health::discovery::default_discovery_path(
                self.token_paths.first().map(String::as_str).unwrap_or("/"),
            ),
        }
    }
}

fn default_discovery_interval() -> Duration {
    Duration::from_secs(60)
}

/// `[rotation]`: the rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// `grace_period`.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace_period: Duration,
    /// `allow_long_grace`: permit a grace period above 60 s (never above 5 min).
    #[serde(default)]
    pub allow_long_grace: bool,
    /// `max_reuses`: replays allowed per token inside the window, waiters included.
    #[serde(default = "default_max_reuses")]
    pub max_reuses: u32,
    /// `replay_spacing`: delay between the answers to coalesced waiters.
    #[serde(default = "default_replay_spacing", with = "humantime_serde")]
    pub replay_spacing: Duration,
    /// `max_replay_delay`: cap on the delay spacing adds to any one waiter.
    #[serde(default = "default_max_replay_delay", with = "humantime_serde")]
    pub max_replay_delay: Duration,
    /// `tombstone_ttl`: at least the IdP's refresh-token lifetime.
    #[serde(default = "default_tombstone_ttl", with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// `max_tombstones`: the memory bound.
    #[serde(default = "default_max_tombstones")]
    pub max_tombstones: u64,
    /// `max_in_flight`: exchanges in flight at once; beyond it 503.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `max_detached_per_source`: exchanges running whose clients left, per client address,
    /// before new exchanges from that address get 503.
    #[serde(default = "default_max_detached_per_source")]
    pub max_detached_per_source: u32,
    /// `on_replay`: what a refused replay does beyond the refusal.
    #[serde(default)]
    pub on_replay: OnReplayConfig,
    /// `bind_source`: whether an in-window replay must come from the first use's source.
    #[serde(default)]
    pub bind_source: BindSource,
    /// `subnet_ipv4_prefix`: the IPv4 prefix length of `bind_source = "subnet"`.
    #[serde(default = "default_v4_prefix")]
    pub subnet_ipv4_prefix: u8,
    /// `subnet_ipv6_prefix`: the IPv6 prefix length of `bind_source = "subnet"`.
    #[serde(default = "default_v6_prefix")]
    pub subnet_ipv6_prefix: u8,
}

fn default_v4_prefix() -> u8 {
    24
}
fn default_v6_prefix() -> u8 {
    64
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            grace_period: default_grace(),
            allow_long_grace: false,
            max_reuses: default_max_reuses(),
            replay_spacing: default_replay_spacing(),
            max_replay_delay: default_max_replay_delay(),
            tombstone_ttl: default_tombstone_ttl(),
            max_tombstones: default_max_tombstones(),
            max_in_flight: default_max_in_flight(),
            max_detached_per_source: default_max_detached_per_source(),
            on_replay: OnReplayConfig::default(),
            bind_source: BindSource::default(),
            subnet_ipv4_prefix: default_v4_prefix(),
            subnet_ipv6_prefix: default_v6_prefix(),
        }
    }
}

/// The store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded, per-process store.
    #[default]
    Memory,
    /// A Redis server shared by every replica.
    Redis,
}

/// What a refresh grant gets while the shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreError {
    /// Forward refresh grants untouched: the IdP's own rules apply (no grace window, no
    /// replay detection at the gate) until the store is back.
    #[default]
    FailOpen,
    /// Answer `503 temporarily_unavailable`: nothing reaches the IdP unguarded.
    FailClosed,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// `backend`.
    #[serde(default)]
    pub backend: Backend,
    /// `fingerprint_key_file`: without it, a random key per process (required with Redis).
    #[serde(default)]
    pub fingerprint_key_file: Option<PathBuf>,
    /// `url`: `redis://host:port/db` or `rediss://` (Redis only; no password in it).
    #[serde(default)]
    pub url: Option<String>,
    /// `username`: the Redis ACL user (Redis only).
    #[serde(default)]
    pub username: Option<String>,
    /// `password_file`: a file holding the Redis password (Redis only).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `ca_file`: PEM roots for `rediss://` instead of the system's (Redis only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `key_prefix`: prepended to every Redis key and channel.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// `timeout`: the bound on one store operation (Redis only).
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `on_store_error`: `fail-open` or `fail-closed`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

fn default_key_prefix() -> String {
    "refresh-gate:".to_owned()
}

fn default_store_timeout() -> Duration {
    Duration::from_millis(500)
}

impl Default for Store {
    fn default() -> Self {
        Store {
            backend: Backend::default(),
            fingerprint_key_file: None,
            url: None,
            username: None,
            password_file: None,
            ca_file: None,
            key_prefix: default_key_prefix(),
            timeout: default_store_timeout(),
            on_store_error: OnStoreError::default(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `format`.
    #[serde(default)]
    pub format: LogFormat,
    /// `level`: a tracing filter, e.g. "info" or "info,audit=info".
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Plain,
            level: default_log_level(),
        }
    }
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_exchange_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}
fn default_max_reuses() -> u32 {
    10
}
fn default_replay_spacing() -> Duration {
    Duration::from_millis(50)
}
fn default_max_replay_delay() -> Duration {
    Duration::from_secs(2)
}
fn default_tombstone_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_max_tombstones() -> u64 {
    1_000_000
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_detached_per_source() -> u32 {
    64
}
fn default_log_level() -> String {
    "info".to_owned()
}

/// The parsed upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `https`?
    pub tls: bool,
    /// The host as written (brackets removed for IPv6).
    pub host: String,
    /// The port (default 80 / 443).
    pub port: u16,
}

impl UpstreamTarget {
    /// Parse "http://host[:port][/]" or "https://...".
    pub fn parse(url: &str) -> Result<UpstreamTarget, ConfigError> {
        let key = "upstream.url";
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(invalid(key, "must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/") {
            return Err(invalid(
                key,
                "must not have a path: the gate forwards each request's own path",
            ));
        }
        if authority.contains('@') {
            return Err(invalid(key, "must not carry credentials"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid(key, "unclosed IPv6 bracket"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| invalid(key, "invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(invalid(key, "invalid authority")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (
                    host.to_owned(),
                    port.parse().map_err(|_| invalid(key, "invalid port"))?,
                ),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(invalid(key, "has no host"));
        }
        Ok(UpstreamTarget { tls, host, port })
    }

    /// The name to verify in the IdP's certificate: `tls_server_name`, else the host.
    /// Never empty: Pingora turns verification off for an empty SNI.
    pub fn server_name(&self, tls_server_name: Option<&str>) -> String {
        tls_server_name.unwrap_or(&self.host).to_owned()
    }
}

impl Config {
    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parse TOML text (no validation).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".to_owned(),
            message: e.message().to_owned() + &location(text, e.span()),
        })
    }

    /// Check every value; the same code runs at start-up and for `--check-config`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .address
            .parse::<SocketAddr>()
            .map_err(|_| invalid("listen.address", "must be IP:port, e.g. 127.0.0.1:9480"))?;
        let target = UpstreamTarget::parse(&self.upstream.url)?;
        if self.upstream.token_paths.is_empty() {
            return Err(invalid(
                "upstream.token_paths",
                "must name at least one path",
            ));
        }
        for path in &self.upstream.token_paths {
            if !path.starts_with('/') || crate::http::path::normalize(path).is_none() {
                return Err(invalid(
                    "upstream.token_paths",
                    format!("{path:?} is not an absolute path"),
                ));
            }
        }
        for grant in &self.upstream.forward_grant_types {
            let printable = !grant.is_empty() && grant.bytes().all(|b| b.is_ascii_graphic());
            if !printable || grant == crate::oauth::grant::names::REFRESH_TOKEN {
                return Err(invalid(
                    "upstream.forward_grant_types",
                    format!("{grant:?} is not a grant type the gate can forward"),
                ));
            }
        }
        if self.upstream.connect_timeout.is_zero() {
            return Err(invalid("upstream.connect_timeout", "must be above 0"));
        }
        if self.upstream.request_timeout.is_zero() {
            return Err(invalid("upstream.request_timeout", "must be above 0"));
        }
        if self.upstream.exchange_timeout < self.upstream.request_timeout {
            return Err(invalid(
                "upstream.exchange_timeout",
                "must be at least upstream.request_timeout",
            ));
        }
        match (&self.upstream.tls_server_name, target.tls) {
            (Some(_), false) => {
                return Err(invalid(
                    "upstream.tls_server_name",
                    "only applies to an https:// upstream",
                ))
            }
            (Some(name), true) if name.trim().is_empty() => {
                return Err(invalid(
                    "upstream.tls_server_name",
                    "must not be empty (an empty name would turn certificate verification off)",
                ))
            }
            _ => {}
        }
        if let Some(ca) = &self.upstream.ca_file {
            if !target.tls {
                return Err(invalid(
                    "upstream.ca_file",
                    "only applies to an https:// upstream",
                ));
            }
            if !ca.is_file() {
                return Err(invalid(
                    "upstream.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        if let Some(path) = &self.upstream.discovery_path {
            if !path.starts_with('/') {
                return Err(invalid(
                    "upstream.discovery_path",
                    "must be an absolute path",
                ));
            }
        }
        if let Some(path) = &self.upstream.revocation_path {
            if !path.starts_with('/') {
                return Err(invalid(
                    "upstream.revocation_path",
                    "must be an absolute path",
                ));
            }
        }
        self.trusted_proxies()?;
        match (&self.listen.tls_cert_file, &self.listen.tls_key_file) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                for (name, path) in [("listen.tls_cert_file", cert), ("listen.tls_key_file", key)] {
                    if !path.is_file() {
                        return Err(invalid(
                            if name.ends_with("cert_file") {
                                "listen.tls_cert_file"
                            } else {
                                "listen.tls_key_file"
                            },
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
            }
            (Some(_), None) => {
                return Err(invalid(
                    "listen.tls_key_file",
                    "is required with listen.tls_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "listen.tls_cert_file",
                    "is required with listen.tls_key_file",
                ))
            }
        }
        if let Some(admin) = &self.admin {
            let address = admin
                .address
                .parse::<SocketAddr>()
                .map_err(|_| invalid("admin.address", "must be IP:port, e.g. 127.0.0.1:9481"))?;
            if self.listen.address.parse::<SocketAddr>().ok() == Some(address) {
                return Err(invalid("admin.address", "must differ from listen.address"));
            }
        }
        if self.audit.subject_claim.trim().is_empty() {
            return Err(invalid("audit.subject_claim", "must name a claim"));
        }
        self.validate_rotation()?;
        if let Some(key) = &self.store.fingerprint_key_file {
            crate::seal::fingerprint::Fingerprinter::from_file(key)
                .map_err(|e| invalid("store.fingerprint_key_file", e.to_string()))?;
        }
        self.validate_store()
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        if store.backend == Backend::Memory {
            let redis_only = [
                ("store.url", store.url.is_some()),
                ("store.username", store.username.is_some()),
                ("store.password_file", store.password_file.is_some()),
                ("store.ca_file", store.ca_file.is_some()),
            ];
            if let Some((key, _)) = redis_only.iter().find(|(_, set)| *set) {
                return Err(invalid(key, "applies only to backend = \"redis\""));
            }
            return Ok(());
        }
        if store.fingerprint_key_file.is_none() {
            return Err(invalid(
                "store.fingerprint_key_file",
                "is required with backend = \"redis\": every replica must compute the same fingerprints",
            ));
        }
        let url = store
            .url
            .as_deref()
            .ok_or_else(|| invalid("store.url", "is required with backend = \"redis\""))?;
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| invalid("store.url", "must start with redis:// or rediss://"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(invalid(
                "store.url",
                "must not hold credentials: use store.username and store.password_file",
            ));
        }
        if authority.is_empty() {
            return Err(invalid("store.url", "names no host"));
        }
        if store.ca_file.is_some() && !url.starts_with("rediss://") {
            return Err(invalid("store.ca_file", "applies only to a rediss:// url"));
        }
        for (key, path) in [
            ("store.password_file", &store.password_file),
            ("store.ca_file", &store.ca_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(invalid(
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        if store.key_prefix.contains(['{', '}']) {
            return Err(invalid(
                "store.key_prefix",
                "must not contain braces (keys carry their own hash tag)",
            ));
        }
        if store.timeout.is_zero() || store.timeout > Duration::from_secs(10) {
            return Err(invalid("store.timeout", "must be between 1ms and 10s"));
        }
        Ok(())
    }

    /// The trusted proxy networks.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.listen
            .trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "listen.trusted_proxies",
                            format!("{entry:?} is not a CIDR or an IP address"),
                        )
                    })
            })
            .collect()
    }

    fn validate_grace(
        key: &'static str,
        grace: Duration,
        allow_long: bool,
        tombstone_ttl: Duration,
    ) -> Result<(), ConfigError> {
        if grace > MAX_GRACE {
            return Err(invalid(key, "must not exceed 5m"));
        }
        if grace > LONG_GRACE && !allow_long {
            return Err(invalid(key, "above 60s requires allow_long_grace = true"));
        }
        if tombstone_ttl < grace {
            return Err(invalid(
                "rotation.tombstone_ttl",
                "must be at least every grace_period (set it to at least the IdP's refresh-token lifetime)",
            ));
        }
        Ok(())
    }

    fn validate_rotation(&self) -> Result<(), ConfigError> {
        let r = &self.rotation;
        Self::validate_grace(
            "rotation.grace_period",
            r.grace_period,
            r.allow_long_grace,
            r.tombstone_ttl,
        )?;
        for (id, client) in &self.clients {
            if let Some(grace) = client.grace_period {
                let allow = client.allow_long_grace.unwrap_or(r.allow_long_grace);
                Self::validate_grace("clients.<id>.grace_period", grace, allow, r.tombstone_ttl)
                    .map_err(|e| match e {
                        ConfigError::Invalid { key, message } => ConfigError::Invalid {
                            key,
                            message: format!("client {id:?}: {message}"),
                        },
                        other => other,
                    })?;
            }
        }
        if r.subnet_ipv4_prefix > 32 {
            return Err(invalid("rotation.subnet_ipv4_prefix", "must be 0 to 32"));
        }
        if r.subnet_ipv6_prefix > 128 {
            return Err(invalid("rotation.subnet_ipv6_prefix", "must be 0 to 128"));
        }
        if r.tombstone_ttl.is_zero() || r.tombstone_ttl < r.grace_period {
            return Err(invalid(
                "rotation.tombstone_ttl",
                "must be above 0 and at least rotation.grace_period (set it to at least the IdP's refresh-token lifetime)",
            ));
        }
        if r.max_replay_delay > self.upstream.request_timeout {
            return Err(invalid(
                "rotation.max_replay_delay",
                "must not exceed upstream.request_timeout",
            ));
        }
        if r.max_tombstones == 0 {
            return Err(invalid("rotation.max_tombstones", "must be at least 1"));
        }
        if r.max_detached_per_source == 0 {
            return Err(invalid(
                "rotation.max_detached_per_source",
                "must be at least 1",
            ));
        }
        if r.max_in_flight == 0 {
            return Err(invalid("rotation.max_in_flight", "must be at least 1"));
        }
        Ok(())
    }

    fn source_binding(&self, bind: BindSource) -> SourceBinding {
        match bind {
            BindSource::Off => SourceBinding::Off,
            BindSource::Ip => SourceBinding::Ip,
            BindSource::Subnet => SourceBinding::Subnet {
                v4: self.rotation.subnet_ipv4_prefix,
                v6: self.rotation.subnet_ipv6_prefix,
            },
        }
    }

    /// The default rules (`[rotation]`).
    pub fn rules(&self) -> Rules {
        Rules {
            grace_period: self.rotation.grace_period,
            max_reuses: self.rotation.max_reuses,
            bind_source: self.source_binding(self.rotation.bind_source),
            on_replay: self.rotation.on_replay.into(),
        }
    }

    /// Every rule: defaults, per-client overrides, spacing.
    pub fn policy(&self) -> Policy {
        let defaults = self.rules();
        let per_client = self
            .clients
            .iter()
            .map(|(id, o)| {
                let rules = Rules {
                    grace_period: o.grace_period.unwrap_or(defaults.grace_period),
                    max_reuses: o.max_reuses.unwrap_or(defaults.max_reuses),
                    bind_source: o
                        .bind_source
                        .map_or(defaults.bind_source, |b| self.source_binding(b)),
                    on_replay: o.on_replay.map_or(defaults.on_replay, Into::into),
                };
                (id.clone(), rules)
            })
            .collect();
        Policy {
            defaults,
            per_client,
            replay_spacing: self.rotation.replay_spacing,
            max_replay_delay: self.rotation.max_replay_delay,
        }
    }

    /// The keys that differ between `self` (running) and `new` and need a restart to change:
    /// listeners, upstream, store, admin, audit and the store's capacities.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |key, differs: bool| {
            if differs {
                changed.push(key);
            }
        };
        check("listen", self.listen != new.listen);
        check("upstream", self.upstream != new.upstream);
        check("store", self.store != new.store);
        check("admin", self.admin != new.admin);
        check("audit", self.audit != new.audit);
        check("log.format", self.log.format != new.log.format);
        check(
            "rotation.tombstone_ttl",
            self.rotation.tombstone_ttl != new.rotation.tombstone_ttl,
        );
        check(
            "rotation.max_tombstones",
            self.rotation.max_tombstones != new.rotation.max_tombstones,
        );
        check(
            "rotation.max_in_flight",
            self.rotation.max_in_flight != new.rotation.max_in_flight,
        );
        check(
            "rotation.max_detached_per_source",
            self.rotation.max_detached_per_source != new.rotation.max_detached_per_source,
        );
        changed
    }

    /// What the grant classifier lets through untouched.
    pub fn grant_rules(&self) -> crate::oauth::grant::GrantRules {
        crate::oauth::grant::GrantRules {
            forward_grant_types: self.upstream.forward_grant_types.clone(),
        }
    }

    /// The memory store's limits.
    pub fn store_limits(&self) -> MemoryStoreLimits {
        MemoryStoreLimits {
            tombstone_ttl: self.rotation.tombstone_ttl,
            max_tombstones: self.rotation.max_tombstones,
            max_in_flight: self.rotation.max_in_flight,
        }
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
address = "127.0.0.1:9480"
[upstream]
url = "http://127.0.0.1:8080"
token_paths = ["/auth/idp/k8sIdp/token"]
"#;

    fn with(extra: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(&format!("{MINIMAL}{extra}"))?;
        config.validate()?;
        Ok(config)
    }

    fn error_of(text: &str) -> String {
        match Config::parse(text).and_then(|c| c.validate()) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = with("").unwrap();
        let policy = config.policy();
        assert_eq!(policy.defaults.grace_period, Duration::from_secs(5));
        assert_eq!(policy.defaults.max_reuses, 10);
        assert_eq!(policy.defaults.bind_source, SourceBinding::Off);
        assert_eq!(policy.defaults.on_replay, OnReplay::Refuse);
        assert_eq!(policy.replay_spacing, Duration::from_millis(50));
        assert_eq!(config.rotation.tombstone_ttl, Duration::from_secs(900));
        assert_eq!(config.store.backend, Backend::Memory);
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/refresh-gate.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let message = error_of(&format!("{MINIMAL}[rotation]\ngrace_perod = \"5s\"\n"));
        assert!(message.contains("grace_perod"), "{message}");
    }

    #[test]
    fn grace_limits() {
        assert!(with("[rotation]\ngrace_period = \"0s\"\n").is_ok());
        assert!(with("[rotation]\ngrace_period = \"60s\"\n").is_ok());
        let message = error_of(&format!("{MINIMAL}[rotation]\ngrace_period = \"61s\"\n"));
        assert!(message.contains("rotation.grace_period"), "{message}");
        assert!(with("[rotation]\ngrace_period = \"2m\"\nallow_long_grace = true\n").is_ok());
        let message = error_of(&format!(
            "{MINIMAL}[rotation]\ngrace_period = \"6m\"\nallow_long_grace = true\n"
        ));
        assert!(message.contains("5m"), "{message}");
    }

    #[test]
    fn durations_are_humantime() {
        let message = error_of(&format!("{MINIMAL}[rotation]\ngrace_period = 5\n"));
        assert!(
            message.contains("grace_period") || message.contains("line"),
            "{message}"
        );
        let config = with("[rotation]\ntombstone_ttl = \"1h 30m\"\n").unwrap();
        assert_eq!(config.rotation.tombstone_ttl, Duration::from_secs(5400));
    }

    #[test]
    fn upstream_url_forms() {
        let t = UpstreamTarget::parse("https://idp.example.com").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port),
            (true, "idp.example.com", 443)
        );
        let t = UpstreamTarget::parse("http://[::1]:8080/").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "::1", 8080));
        assert!(UpstreamTarget::parse("ftp://x").is_err());
        assert!(UpstreamTarget::parse("http://x/auth").is_err());
        assert!(UpstreamTarget::parse("http://u:p@x").is_err());
        assert!(UpstreamTarget::parse("http://:80").is_err());
    }

    #[test]
    fn tls_server_name_never_empty_and_only_for_https() {
        let message =
            error_of(&MINIMAL.replace("token_paths", "tls_server_name = \"idp\"\ntoken_paths"));
        assert!(message.contains("upstream.tls_server_name"), "{message}");
        let https = MINIMAL.replace("http://127.0.0.1:8080", "https://127.0.0.1:8443");
        let message =
            error_of(&https.replace("token_paths", "tls_server_name = \" \"\ntoken_paths"));
        assert!(message.contains("must not be empty"), "{message}");
        let t = UpstreamTarget::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(t.server_name(None), "127.0.0.1");
        assert_eq!(t.server_name(Some("idp.example.com")), "idp.example.com");
    }

    #[test]
    fn tombstone_ttl_must_cover_the_window() {
        let message = error_of(&format!(
            "{MINIMAL}[rotation]\ngrace_period = \"30s\"\ntombstone_ttl = \"10s\"\n"
        ));
        assert!(message.contains("rotation.tombstone_ttl"), "{message}");
    }

    #[test]
    fn unknown_backend_is_refused() {
        let message = error_of(&format!("{MINIMAL}[store]\nbackend = \"etcd\"\n"));
        assert!(
            message.contains("etcd") || message.contains("backend"),
            "{message}"
        );
    }

    fn key_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), [7u8; 32]).unwrap();
        file
    }

    #[test]
    fn redis_needs_a_shared_fingerprint_key_and_a_url() {
        let message = error_of(&format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n"
        ));
        assert!(message.contains("store.fingerprint_key_file"), "{message}");
        let key = key_file();
        let key = key.path().display();
        let message = error_of(&format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nfingerprint_key_file = \"{key}\"\n"
        ));
        assert!(message.contains("store.url"), "{message}");
        let short = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(short.path(), b"too-short").unwrap();
        let message = error_of(&format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://r:6379\"\nfingerprint_key_file = \"{}\"\n",
            short.path().display()
        ));
        assert!(message.contains("at least 32"), "{message}");
        let config = with(&format!(
            "[store]\nbackend = \"redis\"\nurl = \"rediss://redis.example:6380/2\"\nfingerprint_key_file = \"{key}\"\non_store_error = \"fail-closed\"\nkey_prefix = \"rg:\"\ntimeout = \"250ms\"\n"
        ))
        .unwrap();
        assert_eq!(config.store.backend, Backend::Redis);
        assert_eq!(config.store.on_store_error, OnStoreError::FailClosed);
        assert_eq!(config.store.timeout, Duration::from_millis(250));
    }

    #[test]
    fn redis_urls_are_checked_and_hold_no_password() {
        let key = key_file();
        let key = key.path().display();
        for (url, expected) in [
            ("http://r:6379", "redis:// or rediss://"),
            ("redis://user:pw@r:6379", "must not hold credentials"),
            ("redis://", "names no host"),
        ] {
            let message = error_of(&format!(
                "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"{url}\"\nfingerprint_key_file = \"{key}\"\n"
            ));
            assert!(message.contains(expected), "{url}: {message}");
        }
        let message = error_of(&format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://r\"\nfingerprint_key_file = \"{key}\"\nkey_prefix = \"{{x}}\"\n"
        ));
        assert!(message.contains("store.key_prefix"), "{message}");
        let message = error_of(&format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://r\"\nfingerprint_key_file = \"{key}\"\non_store_error = \"ignore\"\n"
        ));
        assert!(message.contains("fail-open"), "{message}");
    }

    #[test]
    fn redis_keys_are_refused_with_the_memory_store() {
        let message = error_of(&format!("{MINIMAL}[store]\nurl = \"redis://r:6379\"\n"));
        assert!(message.contains("store.url"), "{message}");
        assert!(message.contains("backend = \"redis\""), "{message}");
    }

    #[test]
    fn admin_and_discovery_settings() {
        let config = with("[admin]\naddress = \"127.0.0.1:9481\"\n").unwrap();
        assert_eq!(config.admin.unwrap().address, "127.0.0.1:9481");
        assert_eq!(
            config.upstream.discovery_path(),
            "/auth/idp/k8sIdp/.well-known/openid-configuration"
        );
        let message = error_of(&format!("{MINIMAL}[admin]\naddress = \"127.0.0.1:9480\"\n"));
        assert!(message.contains("admin.address"), "{message}");
        assert_eq!(config.audit.subject_claim, "sub");
    }

    #[test]
    fn per_client_overrides_and_binding() {
        let config = with(
            "[rotation]\nbind_source = \"subnet\"\nsubnet_ipv4_prefix = 16\non_replay = \"revoke-family\"\n\
             [clients.k9s]\ngrace_period = \"30s\"\nbind_source = \"ip\"\n\
             [clients.\"ci-bot\"]\non_replay = \"refuse\"\nmax_reuses = 0\n",
        )
        .unwrap();
        let policy = config.policy();
        assert_eq!(
            policy.defaults.bind_source,
            SourceBinding::Subnet { v4: 16, v6: 64 }
        );
        assert_eq!(policy.defaults.on_replay, OnReplay::RevokeFamily);
        let k9s = policy.rules_for("k9s");
        assert_eq!(k9s.grace_period, Duration::from_secs(30));
        assert_eq!(k9s.bind_source, SourceBinding::Ip);
        assert_eq!(k9s.on_replay, OnReplay::RevokeFamily);
        let bot = policy.rules_for("ci-bot");
        assert_eq!((bot.max_reuses, bot.on_replay), (0, OnReplay::Refuse));
        assert_eq!(policy.longest_grace(), Duration::from_secs(30));
    }

    #[test]
    fn per_client_grace_is_validated_like_the_default() {
        let message = error_of(&format!("{MINIMAL}[clients.k9s]\ngrace_period = \"2m\"\n"));
        assert!(
            message.contains("k9s") && message.contains("allow_long_grace"),
            "{message}"
        );
        let message = error_of(&format!("{MINIMAL}[clients.k9s]\ngrace_perod = \"2s\"\n"));
        assert!(message.contains("grace_perod"), "{message}");
        let message = error_of(&format!("{MINIMAL}[rotation]\non_replay = \"revoke\"\n"));
        assert!(message.contains("revoke"), "{message}");
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        let config = with("").unwrap();
        assert!(config.trusted_proxies().unwrap().is_empty());
        let config = Config::parse(&MINIMAL.replace(
            "address = \"127.0.0.1:9480\"",
            "address = \"127.0.0.1:9480\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
        ))
        .unwrap();
        assert_eq!(config.trusted_proxies().unwrap().len(), 2);
        let message = error_of(&MINIMAL.replace(
            "address = \"127.0.0.1:9480\"",
            "address = \"127.0.0.1:9480\"\ntrusted_proxies = [\"10.0.0.0/33\"]",
        ));
        assert!(message.contains("listen.trusted_proxies"), "{message}");
    }

    #[test]
    fn reload_tells_safe_changes_from_restart_only_ones() {
        let running = with("").unwrap();
        let safe = with("[rotation]\ngrace_period = \"10s\"\nmax_reuses = 3\n[clients.k9s]\nmax_reuses = 1\n[log]\nlevel = \"warn\"\n").unwrap();
        assert!(running.restart_only_changes(&safe).is_empty());
        let unsafe_change = with("[rotation]\nmax_tombstones = 5\n").unwrap();
        assert_eq!(
            running.restart_only_changes(&unsafe_change),
            ["rotation.max_tombstones"]
        );
        let moved = Config::parse(&MINIMAL.replace("9480", "9490")).unwrap();
        assert_eq!(running.restart_only_changes(&moved), ["listen"]);
    }

    #[test]
    fn bad_listen_address_is_named() {
        let message = error_of(&MINIMAL.replace("127.0.0.1:9480", "localhost"));
        assert!(message.contains("listen.address"), "{message}");
    }
}
