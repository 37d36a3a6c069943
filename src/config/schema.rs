//! The TOML file as written: one struct per section, every section `#[serde(default)]`
//! with one `Default` impl holding its documented defaults, unknown keys refused. The
//! policy's defaults (`grace_period`, `max_reuses`, `bind_source`, the subnet prefixes,
//! `on_replay`, the spacing, `close_on_successor_use`) come from [`Rules`] and [`Policy`] themselves: one source of
//! truth. Nothing here checks a value; [`super::validate`] does, once.

use super::error::ConfigError;
use crate::oauth::grant::GrantRules;
use crate::oauth::token_spelling::TokenEncoding;
use crate::policy::observe::Mode;
use crate::policy::{BindSource, OnReplay, Policy, Rules};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file. `[listen] address`, `[upstream] url` and
/// `[upstream] token_paths` have no default: validation reports them when missing.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[listen]`.
    pub listen: ListenSection,
    /// `[upstream]`.
    pub upstream: UpstreamSection,
    /// `[rotation]`.
    pub rotation: RotationSection,
    /// `[store]`.
    pub store: StoreSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[admin]`: the metrics and health listener (absent: no admin listener).
    pub admin: Option<AdminSection>,
    /// `[audit]`.
    pub audit: AuditSection,
    /// `[clients."<client_id>"]`: per-client overrides of `[rotation]`.
    pub clients: HashMap<String, ClientOverrides>,
}

impl Config {
    /// Parse TOML text (no validation). A syntax error, an unknown key or a mistyped value
    /// is one error naming the key and line.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".to_owned(),
            message: e.message().to_owned() + &location(text, e.span()),
        })
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

/// `[listen]`: where the gate accepts clients.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSection {
    /// `address`, e.g. "0.0.0.0:9480" (required: empty when absent).
    pub address: String,
    /// `tls_cert_file`: PEM certificate chain; with `tls_key_file`, the gate terminates TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// `tls_key_file`: PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// `trusted_proxies`: CIDRs (or addresses) of proxies whose `X-Forwarded-For` /
    /// `Forwarded` headers name the client.
    pub trusted_proxies: Vec<String>,
    /// `drain`: after SIGTERM, how long the gate keeps serving while `/readyz` says 503,
    /// before it stops accepting connections.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    /// `shutdown_grace`: after the drain, how long requests in flight may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `public_url`: the gate's URL as clients see it (`https://login.example.com`), when
    /// an ingress in front changes scheme or host: the token endpoint URL that client
    /// assertions (`aud`) and DPoP proofs (`htu`) must name.
    pub public_url: Option<String>,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            address: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
            trusted_proxies: Vec::new(),
            drain: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            public_url: None,
        }
    }
}

/// `[admin]`: `/metrics`, `/livez`, `/readyz` on their own listener.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// `address`, e.g. "0.0.0.0:9481" in a pod (required in the section).
    pub address: String,
}

/// `[upstream]`: the IdP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSection {
    /// `url`: "http://host:port" or "https://host:port" (required: empty when absent).
    pub url: String,
    /// `token_paths`: the IdP's token endpoint paths (required: empty when absent).
    pub token_paths: Vec<String>,
    /// `connect_timeout`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `request_timeout`: how long a client waits for a token-path answer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `exchange_timeout`: how long an exchange may run after its client gave up, so a
    /// late success is still remembered.
    #[serde(with = "humantime_serde")]
    pub exchange_timeout: Duration,
    /// `ca_file`: PEM roots that replace the system roots for the IdP.
    pub ca_file: Option<PathBuf>,
    /// `tls_server_name`: the name to verify when connecting by address.
    pub tls_server_name: Option<String>,
    /// `discovery_path`: the IdP's discovery document (default: the first token path's
    /// parent plus `/.well-known/openid-configuration`).
    pub discovery_path: Option<String>,
    /// `revocation_path`: the IdP's RFC 7009 revocation endpoint, used to revoke a family
    /// at the IdP under `on_replay = "revoke-family"`.
    pub revocation_path: Option<String>,
    /// `discovery_interval`: how often the discovery document is checked ("0s": never).
    #[serde(with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// `forward_grant_types`: the grant types forwarded untouched on a token path, compared
    /// exactly; any other grant type is refused with `unsupported_grant_type`.
    pub forward_grant_types: Vec<String>,
    /// `token_encoding`: `"opaque"` (tokens compared as strings) or `"base64"` (the IdP
    /// decodes base64 / base64url / JWT tokens, so spellings it reads alike are one token).
    pub token_encoding: TokenEncoding,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            url: String::new(),
            token_paths: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            exchange_timeout: Duration::from_secs(60),
            ca_file: None,
            tls_server_name: None,
            discovery_path: None,
            revocation_path: None,
            discovery_interval: Duration::from_secs(60),
            forward_grant_types: GrantRules::default().forward_grant_types,
            token_encoding: TokenEncoding::default(),
        }
    }
}

/// `[rotation]`: the default rules and the store's capacities.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSection {
    /// `grace_period`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// `allow_long_grace`: permit a grace period above 60 s (never above 5 min).
    pub allow_long_grace: bool,
    /// `max_reuses`: replays allowed per token inside the window, waiters included.
    pub max_reuses: u32,
    /// `replay_spacing`: delay between the answers to coalesced waiters.
    #[serde(with = "humantime_serde")]
    pub replay_spacing: Duration,
    /// `max_replay_delay`: cap on the delay spacing adds to any one waiter.
    #[serde(with = "humantime_serde")]
    pub max_replay_delay: Duration,
    /// `tombstone_ttl`: at least the IdP's refresh-token lifetime.
    #[serde(with = "humantime_serde")]
    pub tombstone_ttl: Duration,
    /// `max_tombstones`: the memory bound.
    pub max_tombstones: u64,
    /// `max_in_flight`: exchanges in flight at once; beyond it 503.
    pub max_in_flight: usize,
    /// `max_detached_per_source`: exchanges running whose clients left, per client address,
    /// before new exchanges from that address get 503.
    pub max_detached_per_source: u32,
    /// `on_replay`: what a refused replay does beyond the refusal.
    pub on_replay: OnReplay,
    /// `bind_source`: whether an in-window replay must come from the first use's source.
    pub bind_source: BindSource,
    /// `subnet_ipv4_prefix`: the IPv4 prefix length of `bind_source = "subnet"`.
    pub subnet_ipv4_prefix: u8,
    /// `subnet_ipv6_prefix`: the IPv6 prefix length of `bind_source = "subnet"`.
    pub subnet_ipv6_prefix: u8,
    /// `close_on_successor_use`: the first presentation of a token's successor closes the
    /// token's window (replays refused `superseded`).
    pub close_on_successor_use: bool,
    /// `min_replay_window`: how long after a rotation the window stays open however early
    /// the successor is presented (`None`: the value of `max_replay_delay`).
    #[serde(with = "humantime_serde")]
    pub min_replay_window: Option<Duration>,
    /// `mode`: `"enforce"` applies the decisions, `"observe"` only records them.
    pub mode: Mode,
}

impl RotationSection {
    /// `min_replay_window` as in force: as written, or `max_replay_delay`.
    pub fn min_replay_window(&self) -> Duration {
        self.min_replay_window.unwrap_or(self.max_replay_delay)
    }
}

impl Default for RotationSection {
    fn default() -> Self {
        let rules = Rules::default();
        let policy = Policy::default();
        RotationSection {
            grace_period: rules.grace_period,
            allow_long_grace: false,
            max_reuses: rules.max_reuses,
            replay_spacing: policy.replay_spacing,
            max_replay_delay: policy.max_replay_delay,
            tombstone_ttl: Duration::from_secs(15 * 60),
            max_tombstones: 1_000_000,
            max_in_flight: 10_000,
            max_detached_per_source: crate::policy::detached::DEFAULT_PER_SOURCE,
            on_replay: rules.on_replay,
            bind_source: rules.bind_source,
            subnet_ipv4_prefix: rules.subnet.v4,
            subnet_ipv6_prefix: rules.subnet.v6,
            close_on_successor_use: rules.close_on_successor_use,
            min_replay_window: None,
            mode: rules.mode,
        }
    }
}

/// `[clients."<client_id>"]`: any key left out keeps the `[rotation]` value.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientOverrides {
    /// `grace_period`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    /// `allow_long_grace`.
    pub allow_long_grace: Option<bool>,
    /// `max_reuses`.
    pub max_reuses: Option<u32>,
    /// `bind_source`.
    pub bind_source: Option<BindSource>,
    /// `on_replay`.
    pub on_replay: Option<OnReplay>,
    /// `assertion_jwks_file`: a JWKS (RFC 7517) with the public keys of the client's
    /// `private_key_jwt` assertions, so the gate can verify them on replays.
    pub assertion_jwks_file: Option<PathBuf>,
    /// `assertion_secret_file`: the shared secret (at least 32 bytes) of the client's
    /// `client_secret_jwt` assertions.
    pub assertion_secret_file: Option<PathBuf>,
    /// `mode`.
    pub mode: Option<Mode>,
}

/// `[store] backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The embedded, per-process store.
    #[default]
    Memory,
    /// A Redis server shared by every replica: one server (`url`) or the primary that
    /// Sentinel names (`sentinels`, `sentinel_master`).
    Redis,
    /// A Redis Cluster (`nodes`).
    RedisCluster,
}

/// `[store] on_store_error`: what a refresh grant gets while the shared store cannot be
/// reached.
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
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `backend`.
    pub backend: Backend,
    /// `fingerprint_key_file`: without it, a random key per process (required with Redis).
    pub fingerprint_key_file: Option<PathBuf>,
    /// `url`: `redis://host:port/db` or `rediss://` (one Redis server; no password in it).
    pub url: Option<String>,
    /// `sentinels`: `host:port` of each Sentinel, instead of `url`.
    pub sentinels: Option<Vec<String>>,
    /// `sentinel_master`: the name Sentinel monitors the primary under.
    pub sentinel_master: Option<String>,
    /// `sentinel_password_file`: a file holding the Sentinels' own password.
    pub sentinel_password_file: Option<PathBuf>,
    /// `nodes`: `host:port` of some Redis Cluster nodes (`backend = "redis-cluster"`).
    pub nodes: Option<Vec<String>>,
    /// `tls`: TLS to every Sentinel and node (with `url`, its scheme says it).
    pub tls: bool,
    /// `wait_replicas`: replicas that must acknowledge a rotation's writes before its first
    /// client gets the new token (default 1 with Sentinel or Cluster, 0 with `url`).
    pub wait_replicas: Option<u32>,
    /// `wait_timeout`: how long a rotation waits for those acknowledgements.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// `username`: the Redis ACL user (Redis only).
    pub username: Option<String>,
    /// `password_file`: a file holding the Redis password (Redis only).
    pub password_file: Option<PathBuf>,
    /// `ca_file`: PEM roots for `rediss://` instead of the system's (Redis only).
    pub ca_file: Option<PathBuf>,
    /// `key_prefix`: prepended to every Redis key and channel.
    pub key_prefix: String,
    /// `timeout`: the bound on one store operation (Redis only).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `on_store_error`: `fail-open` or `fail-closed`.
    pub on_store_error: OnStoreError,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: Backend::default(),
            fingerprint_key_file: None,
            url: None,
            sentinels: None,
            sentinel_master: None,
            sentinel_password_file: None,
            nodes: None,
            tls: false,
            wait_replicas: None,
            wait_timeout: Duration::from_millis(100),
            username: None,
            password_file: None,
            ca_file: None,
            key_prefix: "refresh-gate:".to_owned(),
            timeout: Duration::from_millis(500),
            on_store_error: OnStoreError::default(),
        }
    }
}

/// `[audit]`: what audit events report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// `subject_claim`: the id_token claim reported as the subject.
    pub subject_claim: String,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            subject_claim: "sub".to_owned(),
        }
    }
}

/// `[log] format` values.
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
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `format`.
    pub format: LogFormat,
    /// `level`: a tracing filter, e.g. "info" or "info,audit=info".
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Plain,
            level: "info".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_every_section_at_its_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        for section in [
            "[listen]",
            "[upstream]",
            "[rotation]",
            "[store]",
            "[log]",
            "[audit]",
        ] {
            assert_eq!(
                Config::parse(section).unwrap(),
                Config::default(),
                "{section}"
            );
        }
    }

    #[test]
    fn each_section_has_its_documented_defaults() {
        let listen = ListenSection::default();
        assert_eq!(listen.address, "");
        assert!(listen.trusted_proxies.is_empty() && listen.tls_cert_file.is_none());
        assert_eq!(
            (listen.drain, listen.shutdown_grace),
            (Duration::from_secs(5), Duration::from_secs(10))
        );

        let upstream = UpstreamSection::default();
        assert_eq!(upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(upstream.request_timeout, Duration::from_secs(10));
        assert_eq!(upstream.exchange_timeout, Duration::from_secs(60));
        assert_eq!(upstream.discovery_interval, Duration::from_secs(60));
        assert_eq!(upstream.token_encoding, TokenEncoding::Opaque);
        assert!(upstream
            .forward_grant_types
            .iter()
            .any(|g| g == "authorization_code"));

        let rotation = RotationSection::default();
        assert_eq!(rotation.grace_period, Duration::from_secs(5));
        assert!(!rotation.allow_long_grace);
        assert_eq!(rotation.max_reuses, 10);
        assert_eq!(rotation.replay_spacing, Duration::from_millis(50));
        assert_eq!(rotation.max_replay_delay, Duration::from_secs(2));
        assert!(rotation.close_on_successor_use);
        assert_eq!(rotation.min_replay_window, None);
        assert_eq!(rotation.min_replay_window(), rotation.max_replay_delay);
        assert_eq!(
            rotation.min_replay_window(),
            Rules::default().min_replay_window
        );
        assert_eq!(rotation.tombstone_ttl, Duration::from_secs(900));
        assert_eq!(rotation.max_tombstones, 1_000_000);
        assert_eq!(rotation.max_in_flight, 10_000);
        assert_eq!(rotation.max_detached_per_source, 64);
        assert_eq!(rotation.on_replay, OnReplay::Refuse);
        assert_eq!(rotation.bind_source, BindSource::Off);
        assert_eq!(
            (rotation.subnet_ipv4_prefix, rotation.subnet_ipv6_prefix),
            (24, 64)
        );

        let store = StoreSection::default();
        assert_eq!(store.backend, Backend::Memory);
        assert_eq!(store.key_prefix, "refresh-gate:");
        assert_eq!(store.timeout, Duration::from_millis(500));
        assert_eq!(store.on_store_error, OnStoreError::FailOpen);
        assert!(store.url.is_none() && store.fingerprint_key_file.is_none());

        assert_eq!(AuditSection::default().subject_claim, "sub");
        let log = LogSection::default();
        assert_eq!((log.format, log.level.as_str()), (LogFormat::Plain, "info"));
        assert_eq!(ClientOverrides::default().grace_period, None);
        assert_eq!(Config::default().admin, None);
    }

    #[test]
    fn values_deserialize_straight_into_the_policy_types() {
        let config = Config::parse(
            "[rotation]\non_replay = \"revoke-family\"\nbind_source = \"subnet\"\n\
             [clients.k9s]\nbind_source = \"ip\"\non_replay = \"refuse\"\n",
        )
        .unwrap();
        assert_eq!(config.rotation.on_replay, OnReplay::RevokeFamily);
        assert_eq!(config.rotation.bind_source, BindSource::Subnet);
        let k9s = &config.clients["k9s"];
        assert_eq!(
            (k9s.bind_source, k9s.on_replay),
            (Some(BindSource::Ip), Some(OnReplay::Refuse))
        );
    }

    #[test]
    fn unknown_keys_and_mistyped_values_are_named_with_their_line() {
        let message = Config::parse("[rotation]\ngrace_perod = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("grace_perod") && message.contains("line 2"),
            "{message}"
        );
        let message = Config::parse("[rotation]\ngrace_period = 5\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("line"), "{message}");
        let message = Config::parse("[store]\nbackend = \"etcd\"\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("etcd"), "{message}");
        let message = Config::parse("[rotation]\non_replay = \"revoke\"\n")
            .unwrap_err()
            .to_string();
        assert!(message.contains("revoke"), "{message}");
    }
}
