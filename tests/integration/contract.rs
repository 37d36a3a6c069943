//! The README's contract tables against the code: the metric families the gate exposes
//! (all registered at 0 from start-up), the audit event names, and the configuration keys
//! (which the typed test harness, `common::config`, must spell exactly as the gate does).

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The rows of the first table under the `## <heading>` section, split into cells.
fn table(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no \"## {heading}\" section"));
    let section = &readme[start + heading.len() + 5..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and the |---| line
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The `backticked` words of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// `cell` without its parenthesised asides (nested ones too).
fn outside_parentheses(cell: &str) -> String {
    let mut depth = 0usize;
    cell.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    return false;
                }
                _ => {}
            }
            depth == 0
        })
        .collect()
}

/// Names only in `left` and only in `right`, for the assertion message.
fn difference(left: &BTreeSet<String>, right: &BTreeSet<String>) -> String {
    format!(
        "only in the README: {:?}; only in the code: {:?}",
        left.difference(right).collect::<Vec<_>>(),
        right.difference(left).collect::<Vec<_>>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_family_exposed_at_start_up_is_in_the_readme_table_and_back() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let (status, text) = gate.admin_get("/metrics").await;
    assert_eq!(status, 200);
    // family -> type, and the label names of its series.
    let mut exposed: BTreeMap<String, String> = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declaration.split_once(' ').unwrap();
            exposed.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with('#') {
            continue;
        } else if let Some((series, _)) = line.split_once('{') {
            let family = exposed
                .keys()
                .filter(|family| series.starts_with(family.as_str()))
                .max_by_key(|family| family.len())
                .unwrap_or_else(|| panic!("a series before its # TYPE: {line}"))
                .clone();
            let inside = &line[series.len() + 1..line.find('}').unwrap()];
            for pair in inside.split(',').filter(|pair| !pair.is_empty()) {
                let (label, _) = pair.split_once('=').unwrap();
                if label != "le" {
                    labels
                        .entry(family.clone())
                        .or_default()
                        .insert(label.to_owned());
                }
            }
        }
    }
    assert!(!exposed.is_empty(), "no metric families:\n{text}");

    let rows = table(&readme(), "Metrics");
    let documented: BTreeMap<String, (String, String)> = rows
        .iter()
        .map(|row| {
            let name = backticked(&row[0]).first().cloned().unwrap_or_default();
            (name, (row[1].clone(), row[2].clone()))
        })
        .collect();
    let (exposed_names, documented_names): (BTreeSet<String>, BTreeSet<String>) = (
        exposed.keys().cloned().collect(),
        documented.keys().cloned().collect(),
    );
    assert_eq!(
        documented_names,
        exposed_names,
        "README's metrics table and /metrics disagree: {}",
        difference(&documented_names, &exposed_names)
    );
    for (name, kind) in &exposed {
        let (documented_kind, documented_labels) = &documented[name];
        assert_eq!(documented_kind, kind, "the type of {name}");
        let documented_labels = backticked(documented_labels);
        for label in labels.get(name).into_iter().flatten() {
            assert!(
                documented_labels.contains(label),
                "{name}'s label {label:?} is not in README's metrics table"
            );
        }
    }
}

#[test]
fn every_audit_event_in_the_readme_table_is_in_event_names_and_back() {
    let documented: BTreeSet<String> = table(&readme(), "Audit events")
        .iter()
        .map(|row| backticked(&row[0]).first().cloned().unwrap_or_default())
        .collect();
    let emitted: BTreeSet<String> = refresh_gate::observe::audit::EVENT_NAMES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    assert_eq!(
        emitted.len(),
        refresh_gate::observe::audit::EVENT_NAMES.len(),
        "an event name twice in EVENT_NAMES"
    );
    assert_eq!(
        documented,
        emitted,
        "README's audit events table and EVENT_NAMES disagree: {}",
        difference(&documented, &emitted)
    );
}

/// A configuration with every key set (to valid values, with the files it names).
fn every_key(dir: &std::path::Path) -> GateConfig {
    for file in [
        "cert.pem",
        "key.pem",
        "idp-ca.pem",
        "redis-ca.pem",
        "redis-password",
    ] {
        std::fs::write(dir.join(file), "placeholder\n").unwrap();
    }
    std::fs::write(dir.join("fingerprint.key"), "k".repeat(48)).unwrap();
    // The assertion keys are parsed by --check-config: a real JWKS, a 32-byte secret.
    std::fs::write(
        dir.join("ci-jwks.json"),
        common::jose::SigningKey::es256().jwks(),
    )
    .unwrap();
    std::fs::write(dir.join("hmac-secret"), "s".repeat(32)).unwrap();
    let mut config = GateConfig::new("https://127.0.0.1:8443")
        .listen_on("127.0.0.1:9480".parse().unwrap())
        .tls(dir.join("cert.pem"), dir.join("key.pem"))
        .trusted_proxies(["10.0.0.0/8"])
        .public_url("https://login.example.com")
        .ca_file(dir.join("idp-ca.pem"))
        .tls_server_name("idp.example.test")
        .revocation_path("/revoke")
        .forward_grant_types(["client_credentials"])
        .max_detached_per_source(64)
        .on_replay(OnReplay::RevokeFamily)
        .bind_source(BindSource::Subnet)
        .subnet_ipv6_prefix(64)
        .client(
            "k9s",
            ClientOverrides {
                grace_period: Some(secs(3)),
                allow_long_grace: Some(false),
                max_reuses: Some(5),
                bind_source: Some(BindSource::Ip),
                on_replay: Some(OnReplay::Refuse),
                assertion_jwks_file: Some(dir.join("ci-jwks.json")),
                assertion_secret_file: None,
                mode: Some(Mode::Observe),
            },
        )
        // One client may not have both kinds of assertion keys.
        .client(
            "hmac-client",
            ClientOverrides::default().assertion_secret_file(dir.join("hmac-secret")),
        )
        .store(Store {
            username: Some("gate".to_owned()),
            password_file: Some(dir.join("redis-password")),
            ca_file: Some(dir.join("redis-ca.pem")),
            key_prefix: Some("rg:".to_owned()),
            timeout: Some(ms(300)),
            on_store_error: Some(OnStoreError::FailClosed),
            ..Store::redis("rediss://127.0.0.1:6380/0", dir.join("fingerprint.key"))
        });
    config.admin.address = Some("127.0.0.1:9481".parse().unwrap());
    config.upstream.discovery_path = Some("/.well-known/openid-configuration".to_owned());
    config.upstream.token_encoding = Some(TokenEncoding::Base64);
    config.rotation.allow_long_grace = Some(false);
    config.rotation.subnet_ipv4_prefix = Some(24);
    config.rotation.close_on_successor_use = Some(true);
    config.rotation.min_replay_window = Some(secs(2));
    config.rotation.mode = Some(Mode::Enforce);
    config.audit = Some(common::config::Audit {
        subject_claim: Some("email".to_owned()),
    });
    config
}

/// `[section] key` for every key of a TOML document (`[clients.*] key` for client tables).
fn keys(value: &toml::Value, section: &str, out: &mut BTreeSet<String>) {
    let toml::Value::Table(table) = value else {
        return;
    };
    for (key, value) in table {
        match (section, value) {
            ("", toml::Value::Table(_)) => keys(value, key, out),
            ("clients", toml::Value::Table(_)) => keys(value, "clients.*", out),
            ("", _) => panic!("a top-level key {key}"),
            _ => {
                out.insert(format!("[{section}] {key}"));
            }
        }
    }
}

#[test]
fn the_typed_harness_spells_every_configuration_key_as_the_gate_and_the_readme_do() {
    let dir = tempfile::tempdir().unwrap();
    // One server, Sentinel and Cluster exclude each other's keys: one file each, the same
    // but for `[store]`.
    let single = every_key(dir.path());
    std::fs::write(dir.path().join("sentinel-password"), "placeholder\n").unwrap();
    let fingerprint_key = dir.path().join("fingerprint.key");
    let sentinel = every_key(dir.path()).store(Store {
        sentinel_password_file: Some(dir.path().join("sentinel-password")),
        tls: Some(true),
        ca_file: Some(dir.path().join("redis-ca.pem")),
        wait_timeout: Some(ms(150)),
        ..Store::sentinel(
            vec!["127.0.0.1:26379".to_owned()],
            "gate-primary",
            &fingerprint_key,
        )
        .wait_replicas(1)
    });
    let cluster = every_key(dir.path()).store(Store::cluster(
        vec!["127.0.0.1:7000".to_owned()],
        &fingerprint_key,
    ));
    let mut written = BTreeSet::new();
    for config in [single, sentinel, cluster] {
        let text = config.to_toml();
        let path = dir.path().join("refresh-gate.toml");
        std::fs::write(&path, &text).unwrap();
        // The gate refuses unknown keys: every key the harness writes is one it reads.
        let out = std::process::Command::new(common::gate::binary())
            .arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env_remove("REFRESH_GATE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "--check-config refused the harness's file:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        keys(&text.parse::<toml::Value>().unwrap(), "", &mut written);
    }

    // And the harness covers every key of README's configuration table, and no other.
    let mut documented = BTreeSet::new();
    for row in table(&readme(), "Configuration") {
        let names = backticked(&row[0]);
        let Some(first) = names.first() else { continue };
        let Some((section, key)) = first
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] "))
        else {
            // `[clients."<client_id>"]`: its keys are listed in the meaning column; words
            // in parentheses explain a key (`for `private_key_jwt``) and are not keys.
            assert!(first.starts_with("[clients."), "{row:?}");
            let is_key = |word: &String| word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            for key in backticked(&outside_parentheses(&row[2]))
                .iter()
                .filter(|word| is_key(word))
            {
                documented.insert(format!("[clients.*] {key}"));
            }
            continue;
        };
        documented.insert(format!("[{section}] {key}"));
        for other in &names[1..] {
            documented.insert(format!("[{section}] {other}"));
        }
    }
    assert_eq!(
        documented,
        written,
        "README's configuration table and the harness disagree: {}",
        difference(&documented, &written)
    );
}
