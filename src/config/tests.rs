//! Validation as the file's author sees it: each problem named by its key, every problem
//! reported at once, and typed settings out of a valid file.

use super::*;
use crate::policy::{BindSource, OnReplay, SubnetPrefixes};
use crate::store::RedisTopology;
use std::net::SocketAddr;
use std::time::Duration;

const MINIMAL: &str = r#"
[listen]
address = "127.0.0.1:9480"
[upstream]
url = "http://127.0.0.1:8080"
token_paths = ["/auth/idp/k8sIdp/token"]
"#;

fn with(extra: &str) -> Result<Settings, ConfigErrors> {
    Config::parse(&format!("{MINIMAL}{extra}"))?.validate()
}

fn errors_of(text: &str) -> Vec<String> {
    match Config::parse(text)
        .map_err(ConfigErrors::from)
        .and_then(|c| c.validate())
    {
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
        Ok(_) => panic!("accepted: {text}"),
    }
}

fn error_of(text: &str) -> String {
    errors_of(text).join("\n")
}

fn key_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [7u8; 32]).unwrap();
    file
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let settings = with("").unwrap();
    let policy = &settings.rotation.policy;
    assert_eq!(policy.defaults.grace_period, Duration::from_secs(5));
    assert_eq!(policy.defaults.max_reuses, 10);
    assert_eq!(policy.defaults.bind_source, BindSource::Off);
    assert_eq!(policy.defaults.subnet, SubnetPrefixes { v4: 24, v6: 64 });
    assert_eq!(policy.defaults.on_replay, OnReplay::Refuse);
    assert_eq!(policy.replay_spacing, Duration::from_millis(50));
    assert_eq!(policy.max_replay_delay, Duration::from_secs(2));
    assert!(policy.defaults.close_on_successor_use);
    assert_eq!(policy.defaults.min_replay_window, Duration::from_secs(2));
    assert_eq!(*policy, crate::policy::Policy::default());
    let limits = &settings.rotation.limits;
    assert_eq!(limits.tombstone_ttl, Duration::from_secs(900));
    assert_eq!(
        (limits.max_tombstones, limits.max_in_flight),
        (1_000_000, 10_000)
    );
    assert_eq!(settings.rotation.max_detached_per_source, 64);
    assert!(matches!(settings.store.backend, StoreBackend::Memory));
    assert!(settings.store.fingerprinter.is_none());
    assert_eq!(settings.store.on_store_error, OnStoreError::FailOpen);
    assert_eq!(settings.admin, None);
    assert_eq!(settings.audit.subject_claim, "sub");
    assert_eq!(settings.listen.drain, Duration::from_secs(5));
    assert_eq!(settings.listen.shutdown_grace, Duration::from_secs(10));
    assert_eq!(settings.listen.tls, None);
    assert_eq!(
        settings.upstream.discovery_interval,
        Duration::from_secs(60)
    );
    assert_eq!(
        settings.upstream.grant_rules,
        crate::oauth::grant::GrantRules::default()
    );
}

#[test]
fn the_shipped_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/refresh-gate.toml");
    let loaded = load(&path).unwrap();
    assert_eq!(
        loaded.settings.admin,
        Some("127.0.0.1:9481".parse().unwrap())
    );
}

#[test]
fn values_come_out_typed() {
    let key = key_file();
    let settings = with(&format!(
        "[admin]\naddress = \"[::1]:9481\"\n[store]\nfingerprint_key_file = \"{}\"\n",
        key.path().display()
    ))
    .unwrap();
    let address: SocketAddr = "127.0.0.1:9480".parse().unwrap();
    assert_eq!(settings.listen.address, address);
    assert_eq!(settings.admin, Some("[::1]:9481".parse().unwrap()));
    let target = &settings.upstream.target;
    assert_eq!(
        (target.tls, target.host.as_str(), target.port),
        (false, "127.0.0.1", 8080)
    );
    assert_eq!(settings.upstream.sni(), "");
    assert_eq!(settings.upstream.host_header(), "127.0.0.1:8080");
    assert_eq!(
        settings.upstream.discovery_path,
        "/auth/idp/k8sIdp/.well-known/openid-configuration"
    );
    assert!(
        settings.store.fingerprinter.is_some(),
        "the key is read once, here"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let errors = errors_of(
        "[listen]\naddress = \"localhost\"\ntrusted_proxies = [\"10.0.0.0/33\", \"nope\"]\n\
         [admin]\naddress = \"nowhere\"\n\
         [upstream]\nurl = \"ftp://idp\"\ntoken_paths = []\nconnect_timeout = \"0s\"\n\
         [rotation]\ngrace_period = \"90s\"\ntombstone_ttl = \"1m\"\nmax_tombstones = 0\n\
         [clients.k9s]\ngrace_period = \"6m\"\n\
         [store]\nurl = \"redis://r:6379\"\n\
         [audit]\nsubject_claim = \" \"\n",
    );
    let keys = [
        "listen.address",
        "listen.trusted_proxies",
        "listen.trusted_proxies",
        "admin.address",
        "upstream.url",
        "upstream.token_paths",
        "upstream.connect_timeout",
        "rotation.grace_period",
        "clients.<id>.grace_period",
        "rotation.tombstone_ttl",
        "rotation.max_tombstones",
        "store.url",
        "audit.subject_claim",
    ];
    assert_eq!(errors.len(), keys.len(), "{errors:#?}");
    for (error, key) in errors.iter().zip(keys) {
        assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
    }
    assert!(errors[1].contains("10.0.0.0/33") && errors[2].contains("nope"));
    assert!(errors[8].contains("k9s") && errors[8].contains("5m"));
}

#[test]
fn missing_required_keys_are_each_reported() {
    let errors = errors_of("");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("`listen.address`: is required"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("`upstream.url`: is required"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("`upstream.token_paths`"),
        "{}",
        errors[2]
    );
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
fn min_replay_window_follows_max_replay_delay_unless_set() {
    let policy = with("[rotation]\nmax_replay_delay = \"1s\"\n[clients.k9s]\nmax_reuses = 1\n")
        .unwrap()
        .rotation
        .policy;
    assert_eq!(policy.defaults.min_replay_window, Duration::from_secs(1));
    assert_eq!(
        policy.rules_for("k9s").min_replay_window,
        Duration::from_secs(1),
        "the same for every client"
    );
    let policy = with(
        "[rotation]\nmin_replay_window = \"0s\"\nclose_on_successor_use = false\n\
         [clients.k9s]\nmax_reuses = 1\n",
    )
    .unwrap()
    .rotation
    .policy;
    assert_eq!(policy.defaults.min_replay_window, Duration::ZERO);
    assert!(!policy.defaults.close_on_successor_use);
    assert!(!policy.rules_for("k9s").close_on_successor_use);
    assert!(!policy.closes_on_successor_use());
    // Above every grace period is allowed (the successor's use then never shortens a
    // window), above 5m is not.
    assert!(with("[rotation]\ngrace_period = \"0s\"\n").is_ok());
    let message = error_of(&format!(
        "{MINIMAL}[rotation]\nmin_replay_window = \"6m\"\n"
    ));
    assert!(message.contains("rotation.min_replay_window"), "{message}");
    let message = error_of(&format!("{MINIMAL}[rotation]\nmin_replay_window = 2\n"));
    assert!(message.contains("expected a duration"), "{message}");
}

#[test]
fn durations_are_humantime() {
    let message = error_of(&format!("{MINIMAL}[rotation]\ngrace_period = 5\n"));
    assert!(
        message.contains("grace_period") || message.contains("line"),
        "{message}"
    );
    let settings = with("[rotation]\ntombstone_ttl = \"1h 30m\"\n").unwrap();
    assert_eq!(
        settings.rotation.limits.tombstone_ttl,
        Duration::from_secs(5400)
    );
}

#[test]
fn tls_server_name_never_empty_and_only_for_https() {
    let message =
        error_of(&MINIMAL.replace("token_paths", "tls_server_name = \"idp\"\ntoken_paths"));
    assert!(message.contains("upstream.tls_server_name"), "{message}");
    let https = MINIMAL.replace("http://127.0.0.1:8080", "https://127.0.0.1:8443");
    let message = error_of(&https.replace("token_paths", "tls_server_name = \" \"\ntoken_paths"));
    assert!(message.contains("must not be empty"), "{message}");
    let settings = Config::parse(&https.replace(
        "token_paths",
        "tls_server_name = \"idp.example.com\"\ntoken_paths",
    ))
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(settings.upstream.sni(), "idp.example.com");
    assert_eq!(settings.upstream.host_header(), "idp.example.com");
}

#[test]
fn tombstone_ttl_must_cover_the_window() {
    let errors = errors_of(&format!(
        "{MINIMAL}[rotation]\ngrace_period = \"30s\"\ntombstone_ttl = \"10s\"\n"
    ));
    assert_eq!(errors.len(), 1, "one problem, one line: {errors:#?}");
    assert!(errors[0].contains("rotation.tombstone_ttl"), "{errors:?}");
    let message = error_of(&format!(
        "{MINIMAL}[rotation]\ntombstone_ttl = \"20s\"\n[clients.k9s]\ngrace_period = \"30s\"\n"
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
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "s3cret\n").unwrap();
    let settings = with(&format!(
        "[store]\nbackend = \"redis\"\nurl = \"rediss://redis.example:6380/2\"\nfingerprint_key_file = \"{key}\"\non_store_error = \"fail-closed\"\nkey_prefix = \"rg:\"\ntimeout = \"250ms\"\nusername = \"gate\"\npassword_file = \"{}\"\n",
        password.path().display()
    ))
    .unwrap();
    assert_eq!(settings.store.on_store_error, OnStoreError::FailClosed);
    let StoreBackend::Redis(redis) = &settings.store.backend else {
        panic!("not redis: {:?}", settings.store.backend);
    };
    assert_eq!(
        redis.topology,
        RedisTopology::Single {
            url: "rediss://redis.example:6380/2".into()
        }
    );
    assert!(redis.tls);
    assert_eq!(
        redis.wait_replicas, 0,
        "a single server waits for no replica"
    );
    assert_eq!(redis.wait_timeout, Duration::from_millis(100));
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert_eq!(redis.key_prefix, "rg:");
    assert_eq!(redis.username.as_deref(), Some("gate"));
    assert_eq!(
        redis.password.as_deref(),
        Some("s3cret"),
        "read once, newline off"
    );
    assert!(!format!("{redis:?}").contains("s3cret"), "never printed");
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
    let errors = errors_of(&format!(
        "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://r\"\nfingerprint_key_file = \"{key}\"\n\
         password_file = \"/nonexistent/pw\"\nca_file = \"/nonexistent/ca\"\ntimeout = \"0s\"\n"
    ));
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (error, key) in errors.iter().zip([
        "store.ca_file",
        "store.password_file",
        "store.ca_file",
        "store.timeout",
    ]) {
        assert!(error.contains(key), "{key}: {error}");
    }
}

#[test]
fn redis_keys_are_refused_with_the_memory_store() {
    let message = error_of(&format!("{MINIMAL}[store]\nurl = \"redis://r:6379\"\n"));
    assert!(message.contains("store.url"), "{message}");
    assert!(message.contains("backend = \"redis\""), "{message}");
}

#[test]
fn admin_settings() {
    let settings = with("[admin]\naddress = \"127.0.0.1:9481\"\n").unwrap();
    assert_eq!(settings.admin, Some("127.0.0.1:9481".parse().unwrap()));
    let message = error_of(&format!("{MINIMAL}[admin]\naddress = \"127.0.0.1:9480\"\n"));
    assert!(message.contains("admin.address"), "{message}");
    let message = error_of(&format!("{MINIMAL}[admin]\n"));
    assert!(
        message.contains("`admin.address`: is required"),
        "{message}"
    );
}

#[test]
fn per_client_overrides_and_binding() {
    let settings = with(
        "[rotation]\nbind_source = \"subnet\"\nsubnet_ipv4_prefix = 16\non_replay = \"revoke-family\"\n\
         [clients.k9s]\ngrace_period = \"30s\"\nbind_source = \"ip\"\n\
         [clients.\"ci-bot\"]\non_replay = \"refuse\"\nmax_reuses = 0\n",
    )
    .unwrap();
    let policy = &settings.rotation.policy;
    assert_eq!(policy.defaults.bind_source, BindSource::Subnet);
    assert_eq!(policy.defaults.subnet, SubnetPrefixes { v4: 16, v6: 64 });
    assert_eq!(policy.defaults.on_replay, OnReplay::RevokeFamily);
    let k9s = policy.rules_for("k9s");
    assert_eq!(k9s.grace_period, Duration::from_secs(30));
    assert_eq!(k9s.bind_source, BindSource::Ip);
    assert_eq!(k9s.subnet, SubnetPrefixes { v4: 16, v6: 64 });
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
    assert!(with("").unwrap().listen.trusted_proxies.is_empty());
    let settings = Config::parse(&MINIMAL.replace(
        "address = \"127.0.0.1:9480\"",
        "address = \"127.0.0.1:9480\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
    ))
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(
        settings.listen.trusted_proxies,
        [
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
    let message = error_of(&MINIMAL.replace(
        "address = \"127.0.0.1:9480\"",
        "address = \"127.0.0.1:9480\"\ntrusted_proxies = [\"10.0.0.0/33\"]",
    ));
    assert!(message.contains("listen.trusted_proxies"), "{message}");
}

#[test]
fn bad_listen_address_is_named() {
    let message = error_of(&MINIMAL.replace("127.0.0.1:9480", "localhost"));
    assert!(message.contains("listen.address"), "{message}");
}

#[test]
fn listener_tls_needs_both_files() {
    let message = error_of(&MINIMAL.replace(
        "address = \"127.0.0.1:9480\"",
        "address = \"127.0.0.1:9480\"\ntls_cert_file = \"/nonexistent/cert.pem\"",
    ));
    assert!(message.contains("listen.tls_key_file"), "{message}");
    let errors = errors_of(&MINIMAL.replace(
        "address = \"127.0.0.1:9480\"",
        "address = \"127.0.0.1:9480\"\ntls_cert_file = \"/nonexistent/c\"\ntls_key_file = \"/nonexistent/k\"",
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn load_names_the_file_of_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[listen]\nport = 3\n").unwrap();
    let message = load(&path).unwrap_err().to_string();
    assert!(
        message.contains("bad.toml") && message.contains("port"),
        "{message}"
    );
    let message = load(&dir.path().join("none.toml")).unwrap_err().to_string();
    assert!(message.contains("cannot read config file"), "{message}");
}

#[test]
fn sentinel_names_the_primary_and_awaits_one_replica_by_default() {
    let key = key_file();
    let sentinel_password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(sentinel_password.path(), "sentinel-s3cret\n").unwrap();
    let settings = with(&format!(
        "[store]\nbackend = \"redis\"\nsentinels = [\"10.0.0.1:26379\", \"[::1]:26380\", \"sentinel-2.example:26381\"]\n\
         sentinel_master = \"gate-primary\"\nsentinel_password_file = \"{}\"\nfingerprint_key_file = \"{}\"\ntls = true\n",
        sentinel_password.path().display(),
        key.path().display()
    ))
    .unwrap();
    let StoreBackend::Redis(redis) = &settings.store.backend else {
        panic!("not redis");
    };
    assert_eq!(
        redis.topology,
        RedisTopology::Sentinel {
            sentinels: vec![
                "10.0.0.1:26379".into(),
                "[::1]:26380".into(),
                "sentinel-2.example:26381".into()
            ],
            master: "gate-primary".into(),
            password: Some("sentinel-s3cret".into()),
        }
    );
    assert!(redis.tls);
    assert_eq!(redis.wait_replicas, 1);
    assert!(!format!("{redis:?}").contains("sentinel-s3cret"));
}

#[test]
fn a_cluster_is_found_through_its_nodes_and_awaits_one_replica_by_default() {
    let key = key_file();
    let settings = with(&format!(
        "[store]\nbackend = \"redis-cluster\"\nnodes = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\n\
         fingerprint_key_file = \"{}\"\nwait_timeout = \"250ms\"\n",
        key.path().display()
    ))
    .unwrap();
    let StoreBackend::Redis(redis) = &settings.store.backend else {
        panic!("not redis");
    };
    assert_eq!(
        redis.topology,
        RedisTopology::Cluster {
            nodes: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()]
        }
    );
    assert!(!redis.tls);
    assert_eq!(redis.wait_replicas, 1);
    assert_eq!(redis.wait_timeout, Duration::from_millis(250));
    let explicit = with(&format!(
        "[store]\nbackend = \"redis-cluster\"\nnodes = [\"127.0.0.1:7000\"]\nfingerprint_key_file = \"{}\"\nwait_replicas = 0\n",
        key.path().display()
    ))
    .unwrap();
    let StoreBackend::Redis(redis) = &explicit.store.backend else {
        panic!("not redis");
    };
    assert_eq!(redis.wait_replicas, 0, "0 turns the acknowledgement off");
}

#[test]
fn topologies_exclude_each_others_keys() {
    let key = key_file();
    let key = key.path().display();
    for (store, expected) in [
        (
            "backend = \"redis\"\nurl = \"redis://r\"\nsentinels = [\"s:26379\"]\nsentinel_master = \"m\"",
            "store.url",
        ),
        ("backend = \"redis\"\nsentinels = [\"s:26379\"]", "store.sentinel_master"),
        ("backend = \"redis\"\nsentinels = []\nsentinel_master = \"m\"", "store.sentinels"),
        (
            "backend = \"redis\"\nsentinels = [\"redis://s:26379\"]\nsentinel_master = \"m\"",
            "is not host:port",
        ),
        (
            "backend = \"redis\"\nsentinels = [\"s\"]\nsentinel_master = \"m\"",
            "is not host:port",
        ),
        (
            "backend = \"redis\"\nsentinels = [\"s:1\"]\nsentinel_master = \"two words\"",
            "store.sentinel_master",
        ),
        ("backend = \"redis\"\nurl = \"redis://r\"\nsentinel_master = \"m\"", "store.sentinel_master"),
        ("backend = \"redis\"\nurl = \"redis://r\"\ntls = true", "store.tls"),
        ("backend = \"redis\"\nurl = \"redis://r\"\nnodes = [\"n:1\"]", "store.nodes"),
        ("backend = \"redis-cluster\"\nurl = \"redis://r\"\nnodes = [\"n:1\"]", "store.url"),
        (
            "backend = \"redis-cluster\"\nnodes = [\"n:1\"]\nsentinel_master = \"m\"",
            "store.sentinel_master",
        ),
        ("backend = \"redis-cluster\"", "store.nodes"),
        ("backend = \"redis-cluster\"\nnodes = [\"n:1\"]\nca_file = \"/x\"", "store.ca_file"),
        ("backend = \"redis-cluster\"\nnodes = [\"n:1\"]\nwait_replicas = 17", "store.wait_replicas"),
        ("backend = \"redis-cluster\"\nnodes = [\"n:1\"]\nwait_timeout = \"0s\"", "store.wait_timeout"),
        ("backend = \"redis\"", "store.url"),
    ] {
        let message = error_of(&format!(
            "{MINIMAL}[store]\n{store}\nfingerprint_key_file = \"{key}\"\n"
        ));
        assert!(message.contains(expected), "{store}: {message}");
    }
    for store in [
        "sentinels = [\"s:1\"]",
        "nodes = [\"n:1\"]",
        "wait_replicas = 1",
        "tls = true",
    ] {
        let message = error_of(&format!("{MINIMAL}[store]\n{store}\n"));
        assert!(
            message.contains("applies only to backend"),
            "{store}: {message}"
        );
    }
}

#[test]
fn the_acknowledgement_must_fit_in_the_first_clients_wait() {
    let key = key_file();
    let message = error_of(&format!(
        "{MINIMAL}[store]\nbackend = \"redis-cluster\"\nnodes = [\"n:1\"]\n\
         fingerprint_key_file = \"{}\"\nwait_timeout = \"9s\"\ntimeout = \"1s\"\n",
        key.path().display()
    ));
    assert!(message.contains("store.wait_timeout"), "{message}");
    assert!(message.contains("request_timeout"), "{message}");
}
