//! Validation: every value of a parsed [`Config`] checked, every problem collected (not
//! only the first), and on success the typed [`Settings`] start-up uses. The files the
//! configuration names (the fingerprint key, the Redis password and CA) are read here,
//! once. The same code runs at start-up, for `--check-config` and on a reload.

use super::error::{ConfigError, ConfigErrors};
use super::schema::{
    Backend, ClientOverrides, Config, RotationSection, StoreSection, UpstreamSection,
};
use super::settings::{
    ListenSettings, RedisSettings, RotationSettings, Settings, StoreBackend, StoreSettings,
    TlsFiles, UpstreamSettings,
};
use super::upstream_url::UpstreamTarget;
use super::ClientKeys;
use crate::oauth::assertion::AssertionKeys;
use crate::oauth::grant::GrantRules;
use crate::policy::{Policy, Rules, SubnetPrefixes};
use crate::seal::fingerprint::Fingerprinter;
use crate::store::{MemoryStoreLimits, RedisTopology};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The longest grace period accepted without `allow_long_grace`.
pub const LONG_GRACE: Duration = Duration::from_secs(60);
/// The longest grace period accepted at all.
pub const MAX_GRACE: Duration = Duration::from_secs(300);
/// The longest `[store] timeout` accepted.
const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most replicas `[store] wait_replicas` may ask to acknowledge a rotation.
const MAX_WAIT_REPLICAS: u32 = 16;

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn add(&mut self, key: &'static str, message: impl Into<String>) {
        self.0.push(ConfigError::invalid(key, message));
    }

    /// Record a problem unless `ok`.
    fn require(&mut self, ok: bool, key: &'static str, message: impl Into<String>) {
        if !ok {
            self.add(key, message);
        }
    }

    /// The value, or `None` with its error recorded.
    fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    /// The content of a file the configuration names.
    fn read(&mut self, key: &'static str, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path)
            .map_err(|e| {
                self.add(
                    key,
                    format!("{} is not a readable file ({e})", path.display()),
                )
            })
            .ok()
    }
}

impl Config {
    /// Check every value and return the typed settings, or every problem found (in the
    /// order of the file's sections).
    pub fn validate(&self) -> Result<Settings, ConfigErrors> {
        let mut problems = Problems::default();
        let listen = listen(self, &mut problems);
        let admin = admin(self, listen.as_ref().map(|l| l.address), &mut problems);
        let upstream = upstream(&self.upstream, &mut problems);
        let rotation = rotation(self, &mut problems);
        let store = store(self, &mut problems);
        let client_keys = client_keys(self, &mut problems);
        problems.require(
            !self.audit.subject_claim.trim().is_empty(),
            "audit.subject_claim",
            "must name a claim",
        );
        if let Some(errors) = ConfigErrors::new(problems.0) {
            return Err(errors);
        }
        match (listen, admin, upstream, store) {
            (Some(listen), Some(admin), Some(upstream), Some(store)) => Ok(Settings {
                listen,
                admin,
                upstream,
                rotation,
                store,
                audit: self.audit.clone(),
                log: self.log.clone(),
                client_keys,
            }),
            _ => unreachable!("a section without settings recorded a problem"),
        }
    }
}

fn socket_address(key: &'static str, text: &str, example: &str) -> Result<SocketAddr, ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("is required: IP:port, e.g. {example}"),
        ));
    }
    text.parse()
        .map_err(|_| ConfigError::invalid(key, format!("must be IP:port, e.g. {example}")))
}

fn listen(config: &Config, problems: &mut Problems) -> Option<ListenSettings> {
    let listen = &config.listen;
    let address = problems.take(socket_address(
        "listen.address",
        &listen.address,
        "127.0.0.1:9480",
    ));
    let trusted_proxies: Vec<IpNet> = listen
        .trusted_proxies
        .iter()
        .filter_map(|entry| {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::invalid(
                        "listen.trusted_proxies",
                        format!("{entry:?} is not a CIDR or an IP address"),
                    )
                });
            problems.take(net)
        })
        .collect();
    let tls = match (&listen.tls_cert_file, &listen.tls_key_file) {
        (None, None) => None,
        (Some(cert_file), Some(key_file)) => {
            for (key, path) in [
                ("listen.tls_cert_file", cert_file),
                ("listen.tls_key_file", key_file),
            ] {
                problems.require(
                    path.is_file(),
                    key,
                    format!("{} is not a readable file", path.display()),
                );
            }
            Some(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })
        }
        (Some(_), None) => {
            problems.add(
                "listen.tls_key_file",
                "is required with listen.tls_cert_file",
            );
            None
        }
        (None, Some(_)) => {
            problems.add(
                "listen.tls_cert_file",
                "is required with listen.tls_key_file",
            );
            None
        }
    };
    let public_url = listen
        .public_url
        .as_deref()
        .and_then(|url| problems.take(public_url(url)));
    Some(ListenSettings {
        address: address?,
        tls,
        trusted_proxies,
        drain: listen.drain,
        shutdown_grace: listen.shutdown_grace,
        public_url,
    })
}

/// `listen.public_url`: `http(s)://host[:port]`, no path, query or credentials.
fn public_url(url: &str) -> Result<String, ConfigError> {
    let invalid = |message: &str| ConfigError::invalid("listen.public_url", message);
    let trimmed = url.trim_end_matches('/');
    let authority = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with https:// or http://"))?;
    if authority.is_empty() {
        return Err(invalid("names no host"));
    }
    if authority.contains(['/', '?', '#', '@']) || !authority.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "must be scheme and host only (e.g. https://login.example.com)",
        ));
    }
    Ok(trimmed.to_owned())
}

/// The assertion keys of `[clients."<id>"]`, read and parsed once.
fn client_keys(config: &Config, problems: &mut Problems) -> ClientKeys {
    let mut keys = ClientKeys::new();
    let mut clients: Vec<_> = config.clients.iter().collect();
    clients.sort_by(|a, b| a.0.cmp(b.0));
    for (id, client) in clients {
        let loaded = match (&client.assertion_jwks_file, &client.assertion_secret_file) {
            (None, None) => continue,
            (Some(_), Some(_)) => {
                problems.add(
                    "clients.<id>.assertion_jwks_file",
                    format!(
                        "client {id:?}: set assertion_jwks_file or assertion_secret_file, not both"
                    ),
                );
                continue;
            }
            (Some(path), None) => {
                problems
                    .read("clients.<id>.assertion_jwks_file", path)
                    .map(|bytes| {
                        (
                            AssertionKeys::from_jwks(&bytes),
                            "clients.<id>.assertion_jwks_file",
                        )
                    })
            }
            (None, Some(path)) => problems
                .read("clients.<id>.assertion_secret_file", path)
                .map(|bytes| {
                    (
                        AssertionKeys::from_secret(bytes.trim_ascii()),
                        "clients.<id>.assertion_secret_file",
                    )
                }),
        };
        match loaded {
            Some((Ok(loaded), _)) => {
                keys.insert(id.clone(), std::sync::Arc::new(loaded));
            }
            Some((Err(error), key)) => problems.add(key, format!("client {id:?}: {error}")),
            None => {}
        }
    }
    keys
}

fn admin(
    config: &Config,
    listen: Option<SocketAddr>,
    problems: &mut Problems,
) -> Option<Option<SocketAddr>> {
    let Some(admin) = &config.admin else {
        return Some(None);
    };
    let address = problems.take(socket_address(
        "admin.address",
        &admin.address,
        "127.0.0.1:9481",
    ))?;
    if listen == Some(address) {
        problems.add("admin.address", "must differ from listen.address");
        return None;
    }
    Some(Some(address))
}

fn absolute(problems: &mut Problems, key: &'static str, path: &Option<String>) {
    if let Some(path) = path {
        problems.require(path.starts_with('/'), key, "must be an absolute path");
    }
}

/// `token_paths` absolute and normalisable, `forward_grant_types` forwardable.
fn upstream_paths_and_grants(upstream: &UpstreamSection, problems: &mut Problems) {
    problems.require(
        !upstream.token_paths.is_empty(),
        "upstream.token_paths",
        "must name at least one path",
    );
    for path in &upstream.token_paths {
        problems.require(
            path.starts_with('/') && crate::http::path::normalize(path).is_some(),
            "upstream.token_paths",
            format!("{path:?} is not an absolute path"),
        );
    }
    for grant in &upstream.forward_grant_types {
        let printable = !grant.is_empty() && grant.bytes().all(|b| b.is_ascii_graphic());
        problems.require(
            printable && grant != crate::oauth::grant::names::REFRESH_TOKEN,
            "upstream.forward_grant_types",
            format!("{grant:?} is not a grant type the gate can forward"),
        );
    }
}

/// Every timeout above 0, the exchange's no shorter than the client's.
fn upstream_timeouts(upstream: &UpstreamSection, problems: &mut Problems) {
    problems.require(
        !upstream.connect_timeout.is_zero(),
        "upstream.connect_timeout",
        "must be above 0",
    );
    problems.require(
        !upstream.request_timeout.is_zero(),
        "upstream.request_timeout",
        "must be above 0",
    );
    problems.require(
        upstream.exchange_timeout >= upstream.request_timeout,
        "upstream.exchange_timeout",
        "must be at least upstream.request_timeout",
    );
}

/// TLS options only for an `https://` upstream (`https` is unknown when the URL is bad).
fn upstream_tls(upstream: &UpstreamSection, https: Option<bool>, problems: &mut Problems) {
    if let Some(name) = &upstream.tls_server_name {
        if https == Some(false) {
            problems.add(
                "upstream.tls_server_name",
                "only applies to an https:// upstream",
            );
        } else {
            problems.require(
                !name.trim().is_empty(),
                "upstream.tls_server_name",
                "must not be empty (an empty name would turn certificate verification off)",
            );
        }
    }
    if let Some(ca) = &upstream.ca_file {
        if https == Some(false) {
            problems.add("upstream.ca_file", "only applies to an https:// upstream");
        } else {
            problems.require(
                ca.is_file(),
                "upstream.ca_file",
                format!("{} is not a readable file", ca.display()),
            );
        }
    }
}

fn upstream(upstream: &UpstreamSection, problems: &mut Problems) -> Option<UpstreamSettings> {
    let target = problems.take(UpstreamTarget::parse(&upstream.url));
    upstream_paths_and_grants(upstream, problems);
    upstream_timeouts(upstream, problems);
    upstream_tls(upstream, target.as_ref().map(|t| t.tls), problems);
    absolute(
        problems,
        "upstream.discovery_path",
        &upstream.discovery_path,
    );
    absolute(
        problems,
        "upstream.revocation_path",
        &upstream.revocation_path,
    );
    let discovery_path = match &upstream.discovery_path {
        Some(path) => path.clone(),
        None => crate::health::discovery::default_discovery_path(
            upstream
                .token_paths
                .first()
                .map(String::as_str)
                .unwrap_or("/"),
        ),
    };
    Some(UpstreamSettings {
        target: target?,
        tls_server_name: upstream.tls_server_name.clone(),
        token_paths: upstream.token_paths.clone(),
        connect_timeout: upstream.connect_timeout,
        request_timeout: upstream.request_timeout,
        exchange_timeout: upstream.exchange_timeout,
        ca_file: upstream.ca_file.clone(),
        discovery_path,
        discovery_interval: upstream.discovery_interval,
        revocation_path: upstream.revocation_path.clone(),
        grant_rules: GrantRules {
            forward_grant_types: upstream.forward_grant_types.clone(),
        },
        token_encoding: upstream.token_encoding,
    })
}

/// A grace period's bounds; `client` names the client of a `[clients."id"]` value.
fn grace(
    problems: &mut Problems,
    key: &'static str,
    client: Option<&str>,
    grace: Duration,
    allow_long: bool,
) {
    let problem = if grace > MAX_GRACE {
        "must not exceed 5m"
    } else if grace > LONG_GRACE && !allow_long {
        "above 60s requires allow_long_grace = true"
    } else {
        return;
    };
    match client {
        Some(id) => problems.add(key, format!("client {id:?}: {problem}")),
        None => problems.add(key, problem),
    }
}

fn rotation(config: &Config, problems: &mut Problems) -> RotationSettings {
    let r = &config.rotation;
    grace(
        problems,
        "rotation.grace_period",
        None,
        r.grace_period,
        r.allow_long_grace,
    );
    let mut clients: Vec<_> = config.clients.iter().collect();
    clients.sort_by(|a, b| a.0.cmp(b.0));
    for (id, client) in &clients {
        if let Some(period) = client.grace_period {
            let allow = client.allow_long_grace.unwrap_or(r.allow_long_grace);
            grace(
                problems,
                "clients.<id>.grace_period",
                Some(id),
                period,
                allow,
            );
        }
    }
    problems.require(
        r.subnet_ipv4_prefix <= 32,
        "rotation.subnet_ipv4_prefix",
        "must be 0 to 32",
    );
    problems.require(
        r.subnet_ipv6_prefix <= 128,
        "rotation.subnet_ipv6_prefix",
        "must be 0 to 128",
    );
    let longest_grace = clients
        .iter()
        .filter_map(|(_, c)| c.grace_period)
        .fold(r.grace_period, Duration::max);
    problems.require(
        !r.tombstone_ttl.is_zero() && r.tombstone_ttl >= longest_grace,
        "rotation.tombstone_ttl",
        "must be above 0 and at least every grace_period (set it to at least the IdP's \
         refresh-token lifetime)",
    );
    problems.require(
        r.max_replay_delay <= config.upstream.request_timeout,
        "rotation.max_replay_delay",
        "must not exceed upstream.request_timeout",
    );
    problems.require(
        r.min_replay_window() <= MAX_GRACE,
        "rotation.min_replay_window",
        "must not exceed 5m (at or above a client's grace_period, the successor's use never \
         shortens that client's window)",
    );
    problems.require(
        r.max_tombstones > 0,
        "rotation.max_tombstones",
        "must be at least 1",
    );
    problems.require(
        r.max_detached_per_source > 0,
        "rotation.max_detached_per_source",
        "must be at least 1",
    );
    problems.require(
        r.max_in_flight > 0,
        "rotation.max_in_flight",
        "must be at least 1",
    );

    RotationSettings {
        policy: policy(r, &clients),
        limits: MemoryStoreLimits {
            tombstone_ttl: r.tombstone_ttl,
            max_tombstones: r.max_tombstones,
            max_in_flight: r.max_in_flight,
        },
        max_detached_per_source: r.max_detached_per_source,
    }
}

/// The rules of `[rotation]`, and of each client with its overrides on top.
fn policy(r: &RotationSection, clients: &[(&String, &ClientOverrides)]) -> Policy {
    let defaults = Rules {
        grace_period: r.grace_period,
        max_reuses: r.max_reuses,
        bind_source: r.bind_source,
        subnet: SubnetPrefixes {
            v4: r.subnet_ipv4_prefix,
            v6: r.subnet_ipv6_prefix,
        },
        on_replay: r.on_replay,
        close_on_successor_use: r.close_on_successor_use,
        min_replay_window: r.min_replay_window(),
        mode: r.mode,
        observed_until: None,
    };
    let per_client = clients
        .iter()
        .map(|(id, o)| {
            let rules = Rules {
                grace_period: o.grace_period.unwrap_or(defaults.grace_period),
                max_reuses: o.max_reuses.unwrap_or(defaults.max_reuses),
                bind_source: o.bind_source.unwrap_or(defaults.bind_source),
                subnet: defaults.subnet,
                on_replay: o.on_replay.unwrap_or(defaults.on_replay),
                close_on_successor_use: defaults.close_on_successor_use,
                min_replay_window: defaults.min_replay_window,
                mode: o.mode.unwrap_or(defaults.mode),
                observed_until: None,
            };
            ((*id).clone(), rules)
        })
        .collect();
    Policy {
        defaults,
        per_client,
        replay_spacing: r.replay_spacing,
        max_replay_delay: r.max_replay_delay,
    }
}

fn store(config: &Config, problems: &mut Problems) -> Option<StoreSettings> {
    let store = &config.store;
    // `Some(None)`: the file named could not be used (its problem is recorded).
    let fingerprinter = store.fingerprint_key_file.as_ref().map(|path| {
        problems.take(
            Fingerprinter::from_file(path)
                .map_err(|e| ConfigError::invalid("store.fingerprint_key_file", e.to_string())),
        )
    });
    let backend = match store.backend {
        Backend::Memory => Some({
            for (key, set) in redis_keys_set(store) {
                problems.require(
                    !set,
                    key,
                    "applies only to backend = \"redis\" or \"redis-cluster\"",
                );
            }
            StoreBackend::Memory
        }),
        Backend::Redis | Backend::RedisCluster => {
            redis(config, problems).map(|redis| StoreBackend::Redis(Box::new(redis)))
        }
    };
    Some(StoreSettings {
        fingerprinter: read_or_none(fingerprinter)?,
        backend: backend?,
        on_store_error: store.on_store_error,
    })
}

/// Every key that only a Redis backend reads, and whether it is set.
fn redis_keys_set(store: &StoreSection) -> [(&'static str, bool); 10] {
    [
        ("store.url", store.url.is_some()),
        ("store.sentinels", store.sentinels.is_some()),
        ("store.sentinel_master", store.sentinel_master.is_some()),
        (
            "store.sentinel_password_file",
            store.sentinel_password_file.is_some(),
        ),
        ("store.nodes", store.nodes.is_some()),
        ("store.tls", store.tls),
        ("store.wait_replicas", store.wait_replicas.is_some()),
        ("store.username", store.username.is_some()),
        ("store.password_file", store.password_file.is_some()),
        ("store.ca_file", store.ca_file.is_some()),
    ]
}

fn redis(config: &Config, problems: &mut Problems) -> Option<RedisSettings> {
    let store = &config.store;
    problems.require(
        store.fingerprint_key_file.is_some(),
        "store.fingerprint_key_file",
        "is required with a Redis backend: every replica must compute the same fingerprints",
    );
    let topology = redis_topology(store, problems);
    let tls = match &topology {
        Some(Some(RedisTopology::Single { url })) => url.starts_with("rediss://"),
        _ => store.tls,
    };
    if store.ca_file.is_some() {
        problems.require(
            tls,
            "store.ca_file",
            "applies only with TLS (a rediss:// url, or tls = true)",
        );
    }
    let password = store
        .password_file
        .as_ref()
        .map(|path| read_secret(problems, "store.password_file", path));
    let ca_pem = store
        .ca_file
        .as_ref()
        .map(|path| problems.read("store.ca_file", path));
    problems.require(
        !store.key_prefix.contains(['{', '}']),
        "store.key_prefix",
        "must not contain braces (keys carry their own hash tag)",
    );
    problems.require(
        !store.timeout.is_zero() && store.timeout <= MAX_STORE_TIMEOUT,
        "store.timeout",
        "must be between 1ms and 10s",
    );
    problems.require(
        !store.wait_timeout.is_zero() && store.wait_timeout <= MAX_STORE_TIMEOUT,
        "store.wait_timeout",
        "must be between 1ms and 10s",
    );
    let topology = topology??;
    let wait_replicas = store
        .wait_replicas
        .unwrap_or_else(|| topology.default_wait_replicas());
    problems.require(
        wait_replicas <= MAX_WAIT_REPLICAS,
        "store.wait_replicas",
        "must be at most 16",
    );
    // The first client's answer waits for the acknowledgement (and its connection):
    // it must fit in the client's own wait for an answer.
    problems.require(
        wait_replicas == 0
            || store.wait_timeout + store.timeout * 2 < config.upstream.request_timeout,
        "store.wait_timeout",
        "plus twice store.timeout must stay below upstream.request_timeout (the first client's answer waits for the acknowledgement)",
    );
    Some(RedisSettings {
        topology,
        tls,
        wait_replicas,
        wait_timeout: store.wait_timeout,
        username: store.username.clone(),
        password: read_or_none(password)?,
        ca_pem: read_or_none(ca_pem)?,
        key_prefix: store.key_prefix.clone(),
        timeout: store.timeout,
    })
}

/// A password file's text, trailing newlines removed; `None` when it cannot be used.
fn read_secret(problems: &mut Problems, key: &'static str, path: &Path) -> Option<String> {
    let text = String::from_utf8(problems.read(key, path)?);
    let text = text.map_err(|_| problems.add(key, "is not UTF-8")).ok()?;
    Some(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Where the data lives: `url`, `sentinels` with `sentinel_master`, or (with
/// `backend = "redis-cluster"`) `nodes`; each excludes the others' keys. `Some(None)`: a
/// problem was recorded.
fn redis_topology(store: &StoreSection, problems: &mut Problems) -> Option<Option<RedisTopology>> {
    let refuse = |problems: &mut Problems, keys: &[(&'static str, bool)], why: &str| {
        for (key, set) in keys {
            problems.require(!set, key, why);
        }
    };
    let sentinel_keys = [
        ("store.sentinel_master", store.sentinel_master.is_some()),
        (
            "store.sentinel_password_file",
            store.sentinel_password_file.is_some(),
        ),
    ];
    if store.backend == Backend::RedisCluster {
        refuse(
            problems,
            &[
                ("store.url", store.url.is_some()),
                ("store.sentinels", store.sentinels.is_some()),
            ],
            "does not apply to backend = \"redis-cluster\" (use store.nodes)",
        );
        refuse(
            problems,
            &sentinel_keys,
            "does not apply to backend = \"redis-cluster\"",
        );
        let nodes = host_ports(problems, "store.nodes", store.nodes.as_deref())?;
        return Some(Some(RedisTopology::Cluster { nodes }));
    }
    refuse(
        problems,
        &[("store.nodes", store.nodes.is_some())],
        "applies only to backend = \"redis-cluster\"",
    );
    match (&store.url, &store.sentinels) {
        (Some(_), Some(_)) => {
            problems.add(
                "store.url",
                "and store.sentinels exclude each other: name one",
            );
            Some(None)
        }
        (Some(url), None) => {
            refuse(
                problems,
                &sentinel_keys,
                "applies only with store.sentinels",
            );
            problems.require(
                !store.tls,
                "store.tls",
                "does not apply with store.url (its scheme, redis:// or rediss://, says it)",
            );
            let url = problems.take(redis_url(Some(url)));
            Some(url.map(|url| RedisTopology::Single { url }))
        }
        (None, Some(_)) => {
            let sentinels = host_ports(problems, "store.sentinels", store.sentinels.as_deref());
            let master = store.sentinel_master.clone().filter(|m| {
                !m.is_empty() && !m.chars().any(|c| c.is_whitespace() || c.is_control())
            });
            if master.is_none() {
                problems.add(
                    "store.sentinel_master",
                    "is required with store.sentinels: the name Sentinel monitors the primary under (no spaces)",
                );
            }
            let password = store
                .sentinel_password_file
                .as_ref()
                .map(|path| read_secret(problems, "store.sentinel_password_file", path));
            Some(Some(RedisTopology::Sentinel {
                sentinels: sentinels?,
                master: master?,
                password: read_or_none(password)?,
            }))
        }
        (None, None) => {
            problems.add(
                "store.url",
                "is required with backend = \"redis\" (or name store.sentinels and store.sentinel_master)",
            );
            Some(None)
        }
    }
}

/// A non-empty list of `host:port` (a name, an IPv4 address or `[v6]`, and a port).
fn host_ports(
    problems: &mut Problems,
    key: &'static str,
    list: Option<&[String]>,
) -> Option<Vec<String>> {
    let Some(list) = list.filter(|list| !list.is_empty()) else {
        problems.add(key, "is required: a list of \"host:port\"");
        return None;
    };
    let mut valid = true;
    for entry in list {
        if !is_host_port(entry) {
            problems.add(
                key,
                format!("{entry:?} is not host:port (no scheme, credentials or path)"),
            );
            valid = false;
        }
    }
    valid.then(|| list.to_vec())
}

fn is_host_port(entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        }
    };
    port_ok && host_ok
}

/// An optional file's content: `None` when a file was named but could not be used,
/// `Some(None)` when none was named.
fn read_or_none<T>(read: Option<Option<T>>) -> Option<Option<T>> {
    match read {
        None => Some(None),
        Some(content) => content.map(Some),
    }
}

fn redis_url(url: Option<&str>) -> Result<String, ConfigError> {
    let invalid = |message: &str| ConfigError::invalid("store.url", message);
    let url = url.ok_or_else(|| invalid("is required with backend = \"redis\""))?;
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or_else(|| invalid("must start with redis:// or rediss://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            "must not hold credentials: use store.username and store.password_file",
        ));
    }
    if authority.is_empty() {
        return Err(invalid("names no host"));
    }
    // The Redis client's own reading (port, database, query options), so a URL it refuses
    // is a configuration error found here, not a start-up failure.
    #[cfg(feature = "redis")]
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
        invalid(&format!(
            "does not parse: {}",
            e.detail().unwrap_or("invalid URL")
        ))
    })?;
    Ok(url.to_owned())
}
