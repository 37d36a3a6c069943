//! Sentinel and Cluster secured as in production, through the real gate: TLS to every
//! sentinel and data node (one self-signed CA given as `ca_file`), the data nodes'
//! password and the sentinels' own password from files. Two gates rotate on a secured
//! Sentinel set and follow a SIGKILL failover of its primary; two gates make one exchange
//! on a secured Cluster; a gate with a wrong or missing password reports the store down and
//! refuses fail-closed; and at `[log] level = "trace"` no password reaches any log line.

use crate::common;

use common::redis_server::RedisServer;
use common::redis_topology::{Access, RedisCluster, SentinelSet, TopologyOptions};
use common::rotations::*;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Long enough to outlast a failover and the checks after it.
const GRACE: Duration = Duration::from_secs(8);

/// A distinctive random password (letters and digits).
fn password(label: &str) -> String {
    format!(
        "{label}{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The secrets of one secured topology, and the files the gate reads them from.
struct Secrets {
    data: String,
    sentinel: String,
    dir: tempfile::TempDir,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets {
            data: password("DataPw"),
            sentinel: password("SentinelPw"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A file holding `secret` (with a trailing newline, as a mounted secret often has).
    fn file(&self, name: &str, secret: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{secret}\n")).unwrap();
        path
    }

    fn options(&self) -> TopologyOptions {
        TopologyOptions {
            password: Some(self.data.clone()),
            sentinel_password: Some(self.sentinel.clone()),
            tls: true,
        }
    }
}

/// The `[store]` of a gate on the secured Sentinel set: TLS with the set's CA, and the
/// given password files.
fn sentinel_store(
    set: &SentinelSet,
    key: &Path,
    password_file: Option<PathBuf>,
    sentinel_password_file: Option<PathBuf>,
) -> Store {
    Store {
        password_file,
        sentinel_password_file,
        tls: Some(true),
        ca_file: Some(set.ca_file().expect("a TLS set").to_owned()),
        ..Store::sentinel(set.sentinel_addrs(), set.master_name(), key)
            .key_prefix("rg:")
            .timeout(TLS_STORE_TIMEOUT)
            .on_store_error(OnStoreError::FailClosed)
            .wait_replicas(1)
    }
}

/// The store timeout of the gates that reach Redis over TLS: a TLS connection on this
/// loaded 2-core machine (the suite runs two tests at once) took over 300 ms in a CI run,
/// and the cluster client then went into recovery and a rotation got the fail-closed 503.
const TLS_STORE_TIMEOUT: Duration = Duration::from_secs(1);

fn gate_config(idp: &FakeIdp, store: Store) -> GateConfig {
    GateConfig::new(idp.url())
        .grace_period(GRACE)
        .max_reuses(1000)
        .log_level("trace")
        .store(store)
}

fn logs(gates: &[GateProcess]) -> String {
    gates
        .iter()
        .enumerate()
        .map(|(n, g)| {
            let log: String = g
                .log()
                .lines()
                .filter(|l| !l.contains("[ExpiredRefreshTokenUsed]"))
                .filter(|l| !l.contains(" TRACE "))
                .map(|l| format!("{l}\n"))
                .collect();
            format!("--- gate {n} log (grace replays and trace lines left out):\n{log}")
        })
        .collect()
}

/// No gate's log holds any of `secrets`; and each log has trace lines of the gate's own
/// targets, so the search covered the most verbose level.
fn assert_no_secret_logged(gates: &[GateProcess], secrets: &[&str]) {
    for (n, gate) in gates.iter().enumerate() {
        let log = gate.log();
        assert!(
            log.lines()
                .any(|l| l.contains(" TRACE ") && l.contains("refresh_gate")),
            "gate {n} wrote no trace line of its own: the scan would prove nothing\n{log}"
        );
        for secret in secrets {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
            assert!(
                lines.is_empty(),
                "gate {n} logged the password {secret}:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// The servers at `addrs` really are secured: plaintext is refused, TLS without the
/// password gets `NOAUTH`, and `access` (TLS with the CA, the password) is answered.
fn assert_secured(access: &Access, addrs: &[String]) {
    let without_password = Access {
        password: None,
        ..access.clone()
    };
    for addr in addrs {
        assert!(
            Access::default().query::<String>(addr, &["PING"]).is_err(),
            "{addr} answers plaintext"
        );
        let refused = without_password.query::<String>(addr, &["PING"]);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("NOAUTH")),
            "{addr} without the password: {refused:?}"
        );
        assert_eq!(
            access.query::<String>(addr, &["PING"]).ok().as_deref(),
            Some("PONG"),
            "{addr} over TLS with the password"
        );
    }
}

/// How long a gate with the right credentials may take to reach its store, at most (the
/// controls take well under a second).
const SETTLE: Duration = Duration::from_secs(3);

/// Each `(case, gate)` was started with credentials the store refuses: through `SETTLE`
/// its `refresh_gate_store_up` never turns 1 and ends 0; then a refresh is answered 503
/// `temporarily_unavailable` without reaching the IdP, the gate still runs, and none of
/// `secrets` is in its log.
async fn assert_down_for_good(idp: &FakeIdp, gates: &[(&str, GateProcess)], secrets: &[&str]) {
    let until = Instant::now() + SETTLE;
    let mut last = vec![f64::NAN; gates.len()];
    while Instant::now() < until {
        for (n, (case, gate)) in gates.iter().enumerate() {
            last[n] = gate
                .metric("refresh_gate_store_up")
                .await
                .unwrap_or(f64::NAN);
            assert!(
                last[n] != 1.0,
                "{case}: refresh_gate_store_up turned 1\n{}",
                logs(std::slice::from_ref(gate))
            );
        }
        tokio::time::sleep(ms(100)).await;
    }
    for ((case, gate), up) in gates.iter().zip(last) {
        assert_eq!(
            up,
            0.0,
            "{case}: refresh_gate_store_up (NaN: absent)\n{}",
            gate.log()
        );
        let token = idp.mint();
        let (status, body) = refresh(gate, &token, "kubernetes").await;
        assert!(
            is_unavailable(status, &body),
            "{case}: a refresh answered {status} {body}, not 503 temporarily_unavailable\n{}",
            gate.log()
        );
        assert_eq!(
            idp.calls_for(&token),
            0,
            "{case}: the token reached the IdP"
        );
        assert!(
            running(gate.pid()),
            "{case}: the gate exited\n{}",
            gate.log()
        );
        let log = gate.log();
        if std::env::var("SHOW_GATE_LOG").is_ok() {
            eprintln!("--- {case}:\n{}", logs(std::slice::from_ref(gate)));
        }
        for secret in secrets {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
            assert!(
                lines.is_empty(),
                "{case}: the gate logged the password {secret}:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// A metric, polled until `ok` holds (up to `timeout`); its last value.
async fn metric_until(
    gate: &GateProcess,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = gate.metric(series).await.unwrap_or(f64::NAN);
        if ok(value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 20 concurrent refreshes of one fresh token split across `bases` (the IdP slowed to
/// 300 ms): every answer 200 and the IdP's one answer, after exactly one exchange.
async fn one_exchange_for_concurrent_refreshes(
    idp: &FakeIdp,
    gates: &[GateProcess],
    bases: &[String],
) {
    idp.set_latency(ms(300));
    let token = idp.mint();
    let requests: Vec<_> = (0..20)
        .map(|n| {
            let base = bases[n % bases.len()].clone();
            let token = token.clone();
            tokio::spawn(async move { refresh_at(&base, &token).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", logs(gates));
        bodies.push(body);
    }
    idp.set_latency(Duration::ZERO);
    assert_eq!(
        idp.calls_for(&token),
        1,
        "exactly one upstream exchange\n{}",
        logs(gates)
    );
    let first = idp.answer_for(&token).expect("the IdP answered");
    assert!(
        bodies.iter().all(|b| *b == first),
        "every answer is the IdP's one answer: {bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_over_tls_with_both_passwords_rotates_and_follows_a_failover() {
    let secrets = Secrets::new();
    let set = Arc::new(block_in_place(|| {
        SentinelSet::start_with(secrets.options())
    }));
    block_in_place(|| {
        assert_secured(set.data_access(), &set.data_addrs());
        assert_secured(set.sentinel_access(), &set.sentinel_addrs());
    });
    let idp = FakeIdp::start().await;
    let key = RedisServer::shared_key();
    let store = sentinel_store(
        &set,
        key.path(),
        Some(secrets.file("data-password", &secrets.data)),
        Some(secrets.file("sentinel-password", &secrets.sentinel)),
    );
    let config = gate_config(&idp, store);
    let gates = vec![
        GateProcess::start(&config).await,
        GateProcess::start(&config).await,
    ];
    let bases: Vec<String> = gates.iter().map(|g| g.url("")).collect();
    for gate in &gates {
        let up = metric_until(gate, "refresh_gate_store_up", secs(5), |v| v == 1.0).await;
        assert_eq!(up, 1.0, "refresh_gate_store_up\n{}", logs(&gates));
    }

    one_exchange_for_concurrent_refreshes(&idp, &gates, &bases).await;
    let mut rotated = Vec::new();
    for n in 0..10 {
        let token = idp.mint();
        let (status, answer) = refresh(&gates[n % 2], &token, "kubernetes").await;
        assert_eq!(status, 200, "rotation {n}: {answer}\n{}", logs(&gates));
        rotated.push(Rotated {
            token,
            answer,
            at: Instant::now(),
        });
    }

    let old = block_in_place(|| set.kill_primary());
    let new = {
        let (set, old) = (set.clone(), old.clone());
        tokio::task::spawn_blocking(move || set.wait_for_new_primary(&old, secs(15)))
            .await
            .unwrap()
    };
    eprintln!("primary {old} killed; {new} promoted");

    // Replays inside the window: the identical answer (a 503 while a gate finds the new
    // primary is retried for up to 5 s).
    let (checked, mismatches) =
        replays_inside_window(&rotated, &bases, GRACE, ms(1500), secs(5)).await;
    assert_eq!(
        checked,
        rotated.len(),
        "the failover outlasted the window: lengthen GRACE"
    );
    assert!(
        mismatches.is_empty(),
        "replays inside the window after the failover: {mismatches:?}\n{}",
        logs(&gates)
    );
    for gate in &gates {
        let failovers = metric_until(gate, "refresh_gate_store_failovers_total", secs(3), |v| {
            v >= 1.0
        })
        .await;
        assert!(
            failovers >= 1.0,
            "refresh_gate_store_failovers_total = {failovers}\n{}",
            logs(&gates)
        );
    }
    // The new primary takes writes over TLS with the password: successors rotate.
    for (n, r) in rotated.iter().enumerate().take(4) {
        let next = successor(&r.answer);
        // A claim waits out the fence after a followed failover: the client retries a 503.
        let (status, body) = refresh_retrying(&bases[n % 2], &next, secs(4)).await;
        assert_eq!(
            status,
            200,
            "the successor of rotation {n}: {body}\n{}",
            logs(&gates)
        );
    }

    let accepted = refused_after_window(&rotated, &bases, GRACE, ms(300)).await;
    assert!(
        accepted.is_empty(),
        "old tokens accepted after their window: {accepted:?}\n{}",
        logs(&gates)
    );
    let twice = exchanged_twice(&idp, &rotated);
    assert!(twice.is_empty(), "exchanged twice: {twice:?}");
    for gate in &gates {
        assert!(running(gate.pid()), "a gate exited\n{}", gate.log());
    }
    assert_no_secret_logged(&gates, &[&secrets.data, &secrets.sentinel]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_over_tls_with_a_password_makes_one_exchange_for_concurrent_refreshes() {
    let secrets = Secrets::new();
    let cluster = block_in_place(|| {
        RedisCluster::start_with(TopologyOptions {
            sentinel_password: None,
            ..secrets.options()
        })
    });
    block_in_place(|| assert_secured(cluster.access(), &cluster.nodes()));
    let idp = FakeIdp::start().await;
    let key = RedisServer::shared_key();
    let store = Store {
        password_file: Some(secrets.file("data-password", &secrets.data)),
        tls: Some(true),
        ca_file: Some(cluster.ca_file().expect("a TLS cluster").to_owned()),
        ..Store::cluster(cluster.nodes(), key.path())
            .key_prefix("rg:")
            .timeout(TLS_STORE_TIMEOUT)
            .on_store_error(OnStoreError::FailClosed)
            .wait_replicas(1)
    };
    let config = gate_config(&idp, store);
    let gates = vec![
        GateProcess::start(&config).await,
        GateProcess::start(&config).await,
    ];
    let bases: Vec<String> = gates.iter().map(|g| g.url("")).collect();
    let started = Instant::now();
    for gate in &gates {
        let up = metric_until(gate, "refresh_gate_store_up", secs(10), |v| v == 1.0).await;
        assert_eq!(up, 1.0, "refresh_gate_store_up\n{}", logs(&gates));
    }
    eprintln!("both gates up after {:?}", started.elapsed());

    one_exchange_for_concurrent_refreshes(&idp, &gates, &bases).await;
    // A few more tokens, replayed on the other gate: the keys land on several shards.
    for n in 0..10 {
        let token = idp.mint();
        let (status, answer) = refresh(&gates[n % 2], &token, "kubernetes").await;
        assert_eq!(status, 200, "rotation {n}: {answer}\n{}", logs(&gates));
        let (status, replay) = refresh(&gates[(n + 1) % 2], &token, "kubernetes").await;
        assert_eq!(
            (status, replay),
            (200, answer),
            "a replay on the other gate"
        );
        assert_eq!(idp.calls_for(&token), 1);
    }
    let keys = block_in_place(|| cluster.keys_per_primary());
    assert!(
        keys.iter().filter(|(_, n)| *n > 0).count() >= 2,
        "the keys sit on one shard only: {keys:?}"
    );
    for gate in &gates {
        assert_eq!(
            gate.metric("refresh_gate_store_up").await,
            Some(1.0),
            "refresh_gate_store_up\n{}",
            logs(&gates)
        );
        assert!(running(gate.pid()), "a gate exited\n{}", gate.log());
    }
    assert_no_secret_logged(&gates, &[&secrets.data]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_or_missing_password_reports_the_store_down_and_refuses() {
    let secrets = Secrets::new();
    let set = block_in_place(|| SentinelSet::start_with(secrets.options()));
    let idp = FakeIdp::start().await;
    let key = RedisServer::shared_key();
    let wrong = password("WrongPw");
    let data_file = secrets.file("data-password", &secrets.data);
    let sentinel_file = secrets.file("sentinel-password", &secrets.sentinel);
    let wrong_file = secrets.file("wrong-password", &wrong);

    // The control: with both passwords right the store is up.
    let right = GateProcess::start(&gate_config(
        &idp,
        sentinel_store(
            &set,
            key.path(),
            Some(data_file.clone()),
            Some(sentinel_file.clone()),
        ),
    ))
    .await;
    let up = metric_until(&right, "refresh_gate_store_up", secs(5), |v| v == 1.0).await;
    assert_eq!(up, 1.0, "the control gate\n{}", right.log());
    let (status, body) = refresh(&right, &idp.mint(), "kubernetes").await;
    assert_eq!(status, 200, "the control gate: {body}");

    let cases = [
        (
            "a wrong sentinel password",
            Some(data_file.clone()),
            Some(wrong_file.clone()),
        ),
        ("no sentinel password", Some(data_file.clone()), None),
        (
            "a wrong data password",
            Some(wrong_file.clone()),
            Some(sentinel_file.clone()),
        ),
        (
            "TLS without the CA (the system roots do not know it)",
            Some(data_file.clone()),
            Some(sentinel_file.clone()),
        ),
    ];
    let mut refused = Vec::new();
    for (case, password_file, sentinel_password_file) in cases {
        let mut store = sentinel_store(&set, key.path(), password_file, sentinel_password_file);
        if case.starts_with("TLS without the CA") {
            store.ca_file = None;
        }
        refused.push((case, GateProcess::start(&gate_config(&idp, store)).await));
    }
    assert_down_for_good(&idp, &refused, &[&secrets.data, &secrets.sentinel, &wrong]).await;
    assert_no_secret_logged(
        std::slice::from_ref(&right),
        &[&secrets.data, &secrets.sentinel],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_gate_with_a_wrong_password_reports_the_store_down_and_refuses() {
    let secrets = Secrets::new();
    let cluster = block_in_place(|| {
        RedisCluster::start_with(TopologyOptions {
            sentinel_password: None,
            ..secrets.options()
        })
    });
    let idp = FakeIdp::start().await;
    let key = RedisServer::shared_key();
    let wrong = password("WrongPw");
    let store = |password: &str, file: &str| Store {
        password_file: Some(secrets.file(file, password)),
        tls: Some(true),
        ca_file: Some(cluster.ca_file().expect("a TLS cluster").to_owned()),
        ..Store::cluster(cluster.nodes(), key.path())
            .key_prefix("rg:")
            .timeout(ms(300))
            .on_store_error(OnStoreError::FailClosed)
    };
    // The control: the right password is up.
    let right = GateProcess::start(&gate_config(&idp, store(&secrets.data, "data-password"))).await;
    let up = metric_until(&right, "refresh_gate_store_up", secs(10), |v| v == 1.0).await;
    assert_eq!(up, 1.0, "the control gate\n{}", right.log());

    let gate = GateProcess::start(&gate_config(&idp, store(&wrong, "wrong-password"))).await;
    assert_down_for_good(
        &idp,
        &[("a wrong password", gate)],
        &[&secrets.data, &wrong],
    )
    .await;
}
