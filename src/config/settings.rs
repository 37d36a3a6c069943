//! The validated configuration as typed values: addresses as `SocketAddr`, the upstream
//! URL parsed, proxies as networks, key and secret files read, the rules as a [`Policy`].
//! Start-up builds every part from these; nothing is parsed or read again.
//! Only [`super::validate`] makes them.

use super::schema::{AuditSection, LogSection, OnStoreError};
use super::upstream_url::UpstreamTarget;
use crate::oauth::grant::GrantRules;
use crate::oauth::token_spelling::TokenEncoding;
use crate::policy::Policy;
use crate::seal::fingerprint::Fingerprinter;
use crate::store::{MemoryStoreLimits, RedisTopology};
use ipnet::IpNet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The keys that verify each client's assertions, by client id.
pub type ClientKeys =
    std::collections::HashMap<String, std::sync::Arc<crate::oauth::assertion::AssertionKeys>>;

/// Everything the gate runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[listen]`.
    pub listen: ListenSettings,
    /// `[admin] address` (none: no admin listener).
    pub admin: Option<SocketAddr>,
    /// `[upstream]`.
    pub upstream: UpstreamSettings,
    /// `[rotation]` and `[clients.*]`.
    pub rotation: RotationSettings,
    /// `[store]`.
    pub store: StoreSettings,
    /// `[audit]`.
    pub audit: AuditSection,
    /// `[log]` (the level is checked by the binary, which owns the filter syntax).
    pub log: LogSection,
    /// `[clients."<id>"] assertion_jwks_file` / `assertion_secret_file`, loaded.
    pub client_keys: ClientKeys,
}

/// `[listen]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenSettings {
    /// `address`.
    pub address: SocketAddr,
    /// `tls_cert_file` and `tls_key_file` (both or neither; both are files).
    pub tls: Option<TlsFiles>,
    /// `trusted_proxies`, as networks (an address is its own /32 or /128).
    pub trusted_proxies: Vec<IpNet>,
    /// `drain`.
    pub drain: Duration,
    /// `shutdown_grace`.
    pub shutdown_grace: Duration,
    /// `public_url`, without a trailing `/`.
    pub public_url: Option<String>,
}

/// The listener's certificate files, loaded (and reloaded) by the TLS layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// `url`, parsed.
    pub target: UpstreamTarget,
    /// `tls_server_name` (only with an https target; never blank).
    pub tls_server_name: Option<String>,
    /// `token_paths` as written (absolute; at least one).
    pub token_paths: Vec<String>,
    /// `connect_timeout` (above 0).
    pub connect_timeout: Duration,
    /// `request_timeout` (above 0).
    pub request_timeout: Duration,
    /// `exchange_timeout` (at least `request_timeout`).
    pub exchange_timeout: Duration,
    /// `ca_file` (a file; only with an https target).
    pub ca_file: Option<PathBuf>,
    /// `discovery_path`, or its default from the first token path.
    pub discovery_path: String,
    /// `discovery_interval` (zero: no discovery check).
    pub discovery_interval: Duration,
    /// `revocation_path`.
    pub revocation_path: Option<String>,
    /// `forward_grant_types`, as the grant classifier takes them.
    pub grant_rules: GrantRules,
    /// `token_encoding`.
    pub token_encoding: TokenEncoding,
}

impl UpstreamSettings {
    /// The name verified in the IdP's certificate (empty for an http upstream).
    pub fn sni(&self) -> String {
        if self.target.tls {
            self.target.server_name(self.tls_server_name.as_deref())
        } else {
            String::new()
        }
    }

    /// The `Host` header of the discovery check.
    pub fn host_header(&self) -> String {
        self.target.host_header(self.tls_server_name.as_deref())
    }
}

/// `[rotation]` and `[clients.*]`: the rules, and the capacities that need a restart.
#[derive(Debug, Clone)]
pub struct RotationSettings {
    /// Every rule: the defaults, per-client rules, the spacing (reloadable).
    pub policy: Policy,
    /// `tombstone_ttl`, `max_tombstones`, `max_in_flight`.
    pub limits: MemoryStoreLimits,
    /// `max_detached_per_source` (at least 1).
    pub max_detached_per_source: u32,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The key of `fingerprint_key_file`, read once (none: a random key per process).
    pub fingerprinter: Option<Fingerprinter>,
    /// The backend and its settings.
    pub backend: StoreBackend,
    /// `on_store_error`.
    pub on_store_error: OnStoreError,
}

/// `[store] backend`, with what it needs.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// The embedded, per-process store.
    Memory,
    /// Redis, shared by every replica.
    Redis(Box<RedisSettings>),
}

/// The Redis keys of `[store]`, files read.
#[derive(Clone)]
pub struct RedisSettings {
    /// One server (`url`), Sentinel (`sentinels`, `sentinel_master`) or Cluster (`nodes`).
    pub topology: RedisTopology,
    /// `tls` (Sentinel and Cluster; a single server's URL scheme says it).
    pub tls: bool,
    /// `wait_replicas`, its default applied.
    pub wait_replicas: u32,
    /// `wait_timeout`.
    pub wait_timeout: Duration,
    /// `username`.
    pub username: Option<String>,
    /// The content of `password_file`, trailing newlines removed.
    pub password: Option<String>,
    /// The content of `ca_file` (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// `key_prefix` (no braces).
    pub key_prefix: String,
    /// `timeout` (1 ms to 10 s).
    pub timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}
