//! Two gate replicas on a real Redis Cluster (three primaries, one replica each,
//! `backend = "redis-cluster"`): one upstream exchange for concurrent refreshes of a token
//! split across the gates, keys spread over every shard, nothing lost through a reshard or
//! a primary failover (graceful or SIGKILL) during traffic, and with a whole shard down the
//! other shards keep rotating while the dead shard's tokens are refused 503 (fail-closed).

use crate::common;

use common::redis_server::RedisServer;
use common::redis_topology::RedisCluster;
use common::rotations::*;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Long enough to outlast a failover and the checks after it.
const GRACE: Duration = Duration::from_secs(8);

fn cluster_config(idp: &FakeIdp, cluster: &RedisCluster, key: &std::path::Path) -> GateConfig {
    GateConfig::new(idp.url())
        .grace_period(GRACE)
        .max_reuses(1000)
        .store(
            Store::cluster(cluster.nodes(), key)
                .key_prefix("rg:")
                .timeout(ms(300))
                .on_store_error(OnStoreError::FailClosed)
                .wait_replicas(1),
        )
}

struct Setup {
    cluster: Arc<RedisCluster>,
    idp: Arc<FakeIdp>,
    gates: Vec<GateProcess>,
    bases: Vec<String>,
    _key: tempfile::NamedTempFile,
}

async fn setup() -> Setup {
    let cluster = Arc::new(block_in_place(RedisCluster::start));
    let idp = Arc::new(FakeIdp::start().await);
    let key = RedisServer::shared_key();
    let config = cluster_config(&idp, &cluster, key.path());
    let gates = vec![
        GateProcess::start(&config).await,
        GateProcess::start(&config).await,
    ];
    let bases = gates.iter().map(|g| g.url("")).collect();
    Setup {
        cluster,
        idp,
        gates,
        bases,
        _key: key,
    }
}

fn logs(gates: &[GateProcess]) -> String {
    gates
        .iter()
        .enumerate()
        .map(|(n, g)| format!("--- gate {n} log:\n{}", g.log()))
        .collect()
}

/// The sum of one series over the gates (absent counts 0).
async fn total(gates: &[GateProcess], series: &str) -> f64 {
    let mut sum = 0.0;
    for gate in gates {
        sum += gate.metric(series).await.unwrap_or(0.0);
    }
    sum
}

/// Rotate `count` fresh tokens, alternating gates; every one must be answered 200.
async fn rotate(s: &Setup, count: usize) -> Vec<Rotated> {
    let mut rotated = Vec::new();
    for n in 0..count {
        let token = s.idp.mint();
        let (status, answer) = refresh(&s.gates[n % 2], &token, "kubernetes").await;
        assert_eq!(status, 200, "rotation {n}: {answer}\n{}", logs(&s.gates));
        rotated.push(Rotated {
            token,
            answer,
            at: Instant::now(),
        });
    }
    rotated
}

/// After traffic through a topology change: no wrong 200, nothing but 200 or 503
/// `temporarily_unavailable`, every 503'd token answered once the cluster settled, replays
/// inside the window identical, every rotated token refused after its window, no token
/// exchanged twice. Prints `CLUSTER-FIGURES <what>: …`.
async fn check_nothing_lost(s: &Setup, mut ledger: Ledger, what: &str, took: Duration) {
    let unavailable = ledger.count(503);
    let unsettled = settle_unanswered(&mut ledger, &s.bases, secs(5)).await;
    let rotated: Vec<Rotated> = ledger.rotated.values().cloned().collect();
    let all: Vec<String> = ledger.sent.iter().map(|x| x.token.clone()).collect();
    let wrong = ledger.wrong_answers().len();
    let (checked, mismatches) =
        replays_inside_window(&rotated, &s.bases, GRACE, ms(1000), secs(3)).await;
    let accepted = refused_after_window(&rotated, &s.bases, GRACE, ms(300)).await;
    let twice = any_exchanged_twice(&s.idp, &all);
    let moved = total(
        &s.gates,
        "refresh_gate_store_redirects_total{kind=\"moved\"}",
    )
    .await;
    let ask = total(&s.gates, "refresh_gate_store_redirects_total{kind=\"ask\"}").await;
    let changes = total(&s.gates, "refresh_gate_store_topology_changes_total").await;
    println!(
        "CLUSTER-FIGURES {what}: took_ms={} requests={} rotated={} answered_503={} wrong={} \
         replays_checked={checked} replay_mismatches={} accepted_after_window={} \
         exchanged_twice={} unsettled={} redirects_moved={moved} redirects_ask={ask} \
         topology_changes={changes}",
        took.as_millis(),
        ledger.sent.len(),
        rotated.len(),
        unavailable,
        wrong,
        mismatches.len(),
        accepted.len(),
        twice.len(),
        unsettled.len(),
    );
    assert!(
        ledger.wrong_answers().is_empty(),
        "wrong 200s: {:?}\n{}",
        ledger.wrong_answers(),
        logs(&s.gates)
    );
    assert!(
        ledger.unexpected().is_empty(),
        "answers neither 200 nor 503 temporarily_unavailable: {:?}\n{}",
        ledger.unexpected(),
        logs(&s.gates)
    );
    assert!(
        unsettled.is_empty(),
        "tokens never answered once the cluster settled: {unsettled:?}\n{}",
        logs(&s.gates)
    );
    assert!(
        mismatches.is_empty(),
        "replays inside the window: {mismatches:?}\n{}",
        logs(&s.gates)
    );
    assert!(
        accepted.is_empty(),
        "accepted after the window: {accepted:?}\n{}",
        logs(&s.gates)
    );
    assert!(
        twice.is_empty(),
        "exchanged twice: {twice:?}\n{}",
        logs(&s.gates)
    );
    assert!(rotated.len() >= 20, "too little traffic: {}", rotated.len());
    assert!(
        changes >= 1.0,
        "refresh_gate_store_topology_changes_total = {changes}\n{}",
        logs(&s.gates)
    );
    for gate in &s.gates {
        assert!(running(gate.pid()), "a gate exited\n{}", gate.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_of_one_token_on_two_gates_make_one_exchange() {
    let s = setup().await;
    s.idp.set_latency(ms(300));
    let token = s.idp.mint();
    let requests: Vec<_> = (0..20)
        .map(|n| {
            let base = s.bases[n % 2].clone();
            let token = token.clone();
            tokio::spawn(async move { refresh_at(&base, &token).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}\n{}", logs(&s.gates));
        bodies.push(body);
    }
    assert_eq!(s.idp.calls_for(&token), 1, "exactly one upstream exchange");
    let first = s.idp.answer_for(&token).expect("the IdP answered");
    assert!(
        bodies.iter().all(|b| *b == first),
        "every answer is the IdP's one answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_land_on_every_primary() {
    let s = setup().await;
    let rotated = rotate(&s, 200).await;
    let keys = block_in_place(|| s.cluster.keys_per_primary());
    println!(
        "CLUSTER-FIGURES spread: rotated={} keys_per_primary={:?}",
        rotated.len(),
        keys.iter().map(|(_, n)| *n).collect::<Vec<_>>()
    );
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter().all(|(_, n)| *n > 0),
        "a primary holds no key: {keys:?}"
    );
    // Replays on the other gate find the answers wherever they landed.
    for (n, r) in rotated.iter().enumerate().take(50) {
        let (status, body) = refresh(&s.gates[(n + 1) % 2], &r.token, "kubernetes").await;
        assert_eq!((status, body.as_str()), (200, r.answer.as_str()));
    }
    let acked = total(
        &s.gates,
        "refresh_gate_store_replication_acks_total{result=\"acknowledged\"}",
    )
    .await;
    assert!(
        acked >= 200.0,
        "every rotation acknowledged by a replica: {acked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshard_during_traffic_loses_nothing() {
    let s = setup().await;
    // Keys on every shard first, so the reshard migrates some the traffic replays.
    let seed = rotate(&s, 60).await;
    let traffic = Traffic::start_seeded(s.idp.clone(), s.bases.clone(), 2, seed);
    tokio::time::sleep(secs(1)).await;
    let primaries = block_in_place(|| s.cluster.primary_nodes());
    let started = Instant::now();
    let reshard = s
        .cluster
        .reshard_in_background(&primaries[0].id, &primaries[1].id, 1000);
    let output = tokio::task::spawn_blocking(move || reshard.join().unwrap())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "reshard failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    {
        let cluster = s.cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster.wait_until_healthy(secs(20), "healthy after the reshard")
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(secs(1)).await;
    let ledger = traffic.stop().await;
    let after = block_in_place(|| s.cluster.primary_nodes());
    let moved_slots = primaries[0].slot_count()
        - after
            .iter()
            .find(|n| n.id == primaries[0].id)
            .unwrap()
            .slot_count();
    assert_eq!(moved_slots, 1000);
    check_nothing_lost(&s, ledger, "reshard", took).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_primary_failover_during_traffic_loses_nothing() {
    let s = setup().await;
    let seed = rotate(&s, 30).await;
    let traffic = Traffic::start_seeded(s.idp.clone(), s.bases.clone(), 2, seed);
    tokio::time::sleep(secs(1)).await;
    let started = Instant::now();
    let (old, new) = {
        let cluster = s.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.failover_primary(0))
            .await
            .unwrap()
    };
    let took = started.elapsed();
    eprintln!("graceful failover {old} -> {new} in {took:?}");
    tokio::time::sleep(secs(2)).await;
    let ledger = traffic.stop().await;
    check_nothing_lost(&s, ledger, "graceful failover", took).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_primary_during_traffic_loses_nothing() {
    let s = setup().await;
    let seed = rotate(&s, 30).await;
    let traffic = Traffic::start_seeded(s.idp.clone(), s.bases.clone(), 2, seed);
    tokio::time::sleep(secs(1)).await;
    let started = Instant::now();
    let (old, new) = {
        let cluster = s.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.kill_primary(0))
            .await
            .unwrap()
    };
    let took = started.elapsed();
    eprintln!("{old} killed, {new} promoted in {took:?}");
    tokio::time::sleep(secs(2)).await;
    let ledger = traffic.stop().await;
    check_nothing_lost(&s, ledger, "sigkill failover", took).await;
    // The promoted replica has no replica of its own: its rotations cannot be acknowledged,
    // and the gates say so.
    let missed = total(
        &s.gates,
        "refresh_gate_store_replication_acks_total{result=\"missed\"}",
    )
    .await;
    assert!(
        missed >= 1.0,
        "rotations on the shard without a replica: missed = {missed}\n{}",
        logs(&s.gates)
    );
    assert!(
        s.gates
            .iter()
            .any(|g| g.log().contains("RotationUnacknowledged")),
        "a missed acknowledgement writes an audit line\n{}",
        logs(&s.gates)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_shard_down_refuses_its_tokens_and_the_other_shards_keep_rotating() {
    let s = setup().await;
    rotate(&s, 10).await;
    let dead = block_in_place(|| s.cluster.kill_shard(0));
    let killed_at = Instant::now();

    // The gates notice within a few seconds (requests help them notice).
    let mut noticed = None;
    while killed_at.elapsed() < secs(6) {
        let token = s.idp.mint();
        let _ = refresh(&s.gates[0], &token, "kubernetes").await;
        let _ = refresh(&s.gates[1], &s.idp.mint(), "kubernetes").await;
        let up: Vec<Option<f64>> = futures_metric(&s.gates, "refresh_gate_store_up").await;
        let down: Vec<Option<f64>> =
            futures_metric(&s.gates, "refresh_gate_store_shards_down").await;
        if up.iter().all(|u| *u == Some(0.0)) && down.iter().all(|d| d.unwrap_or(0.0) >= 1.0) {
            noticed = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(ms(200)).await;
    }
    let noticed = noticed.unwrap_or_else(|| {
        panic!(
            "refresh_gate_store_up did not become 0 with refresh_gate_store_shards_down >= 1 on both gates \
             within 6 s of a whole shard dying\n{}",
            logs(&s.gates)
        )
    });

    // Fresh tokens: those on a live shard rotate, those on the dead shard get 503 and never
    // reach the IdP.
    let (mut rotated, mut refused) = (0, 0);
    for n in 0..30 {
        let token = s.idp.mint();
        let (status, body) = refresh(&s.gates[n % 2], &token, "kubernetes").await;
        match status {
            200 => {
                rotated += 1;
                assert_eq!(s.idp.calls_for(&token), 1);
                let (status, replay) = refresh(&s.gates[(n + 1) % 2], &token, "kubernetes").await;
                assert_eq!((status, replay), (200, body), "a replay on a live shard");
            }
            _ => {
                assert!(
                    is_unavailable(status, &body),
                    "{status} {body}\n{}",
                    logs(&s.gates)
                );
                assert_eq!(
                    s.idp.calls_for(&token),
                    0,
                    "nothing reached the IdP unguarded"
                );
                refused += 1;
            }
        }
    }
    println!(
        "CLUSTER-FIGURES shard down: noticed_ms={} dead_slots={:?} rotated={rotated} refused_503={refused}",
        noticed.as_millis(),
        dead
    );
    assert!(
        rotated >= 1,
        "no token rotated on the live shards\n{}",
        logs(&s.gates)
    );
    assert!(
        refused >= 1,
        "no token was on the dead shard?\n{}",
        logs(&s.gates)
    );
    for gate in &s.gates {
        assert!(running(gate.pid()), "a gate exited\n{}", gate.log());
    }
}

/// One series on every gate.
async fn futures_metric(gates: &[GateProcess], series: &str) -> Vec<Option<f64>> {
    let mut values = Vec::new();
    for gate in gates {
        values.push(gate.metric(series).await);
    }
    values
}
