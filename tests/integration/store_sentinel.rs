//! Two gate replicas on a real Sentinel set (one primary, two replicas, three sentinels):
//! with `wait_replicas = 1` a SIGKILL of the primary loses no rotation (replays inside the
//! window answered identically, successors refresh, refused after the window, one upstream
//! exchange per token) and the gates follow the promotion without a restart; with
//! `wait_replicas = 0` the same run is a figure; a graceful `SENTINEL FAILOVER` during
//! traffic never produces a wrong answer or a second exchange.

use crate::common;

use common::redis_server::RedisServer;
use common::redis_topology::SentinelSet;
use common::rotations::*;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

/// Long enough to outlast a failover and the checks after it.
const GRACE: Duration = Duration::from_secs(10);

fn sentinel_config(
    idp: &FakeIdp,
    set: &SentinelSet,
    key: &std::path::Path,
    wait: u32,
) -> GateConfig {
    GateConfig::new(idp.url())
        .grace_period(GRACE)
        .max_reuses(1000)
        .store(
            Store::sentinel(set.sentinel_addrs(), set.master_name(), key)
                .key_prefix("rg:")
                .timeout(ms(300))
                .on_store_error(OnStoreError::FailClosed)
                .wait_replicas(wait),
        )
}

fn urls(gates: &[GateProcess]) -> Vec<String> {
    gates.iter().map(|g| g.url("")).collect()
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
                .map(|l| format!("{l}\n"))
                .collect();
            format!("--- gate {n} log (grace replays left out):\n{log}")
        })
        .collect()
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

/// What a SIGKILL of the primary cost: (rotated, lost, failover time, answered during).
struct KillFigures {
    rotated: usize,
    lost: usize,
    failover: Duration,
    answered_during: usize,
    mismatches: Vec<Mismatch>,
    refused: Vec<Mismatch>,
    twice: Vec<(String, usize)>,
}

/// Rotate 40 tokens through two gates, SIGKILL the primary, wait for the promotion while
/// replaying, then check every rotation.
async fn rotate_then_kill_the_primary(
    idp: &FakeIdp,
    set: &Arc<SentinelSet>,
    gates: &[GateProcess],
) -> KillFigures {
    let bases = urls(gates);
    let mut rotated = Vec::new();
    for n in 0..40 {
        let token = idp.mint();
        let (status, answer) = refresh(&gates[n % 2], &token, "kubernetes").await;
        assert_eq!(status, 200, "rotation {n}: {answer}\n{}", logs(gates));
        rotated.push(Rotated {
            token,
            answer,
            at: Instant::now(),
        });
    }

    // SIGKILL at once, and replay while the sentinels promote a replica.
    let killed_at = Instant::now();
    let old = block_in_place(|| set.kill_primary());
    let during = {
        let (set, old) = (set.clone(), old.clone());
        tokio::task::spawn_blocking(move || {
            let new = set.wait_for_new_primary(&old, Duration::from_secs(15));
            (new, killed_at.elapsed())
        })
    };
    let mut answered_during = 0;
    let mut wrong_during = Vec::new();
    let mut n = 0;
    while !during.is_finished() {
        let r = &rotated[n % rotated.len()];
        let (status, body) = refresh_at(&bases[n % 2], &r.token).await;
        if status == 200 && body == r.answer {
            answered_during += 1;
        } else if !is_unavailable(status, &body) {
            wrong_during.push((r.token.clone(), status, body));
        }
        n += 1;
        tokio::time::sleep(ms(20)).await;
    }
    let (new, failover) = during.await.unwrap();
    eprintln!("primary {old} killed; {new} promoted after {failover:?}");
    assert!(
        wrong_during.is_empty(),
        "during the failover, replays got neither the answer nor 503: {wrong_during:?}\n{}",
        logs(gates)
    );

    // Inside the window: identical answers (a 503 while a gate finds the new primary is
    // retried for up to 4 s).
    let (checked, mismatches) =
        replays_inside_window(&rotated, &bases, GRACE, ms(1500), secs(4)).await;
    assert_eq!(
        checked,
        rotated.len(),
        "the failover outlasted the window: lengthen GRACE"
    );

    // Every successor refreshes (retrying a 503 for a moment).
    for (n, r) in rotated.iter().enumerate() {
        let next = successor(&r.answer);
        let (status, body) = refresh_retrying(&bases[n % 2], &next, secs(4)).await;
        assert_eq!(
            status,
            200,
            "the successor of rotation {n}: {body}\n{}",
            logs(gates)
        );
    }

    // After the window: refused.
    let refused = refused_after_window(&rotated, &bases, GRACE, ms(300)).await;
    let twice = exchanged_twice(idp, &rotated);
    let mut lost: Vec<&str> = mismatches
        .iter()
        .chain(refused.iter())
        .map(|m| m.0.as_str())
        .chain(twice.iter().map(|t| t.0.as_str()))
        .collect();
    lost.sort_unstable();
    lost.dedup();
    KillFigures {
        rotated: rotated.len(),
        lost: lost.len(),
        failover,
        answered_during,
        mismatches,
        refused,
        twice,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_primary_loses_no_acknowledged_rotation() {
    let set = Arc::new(block_in_place(SentinelSet::start));
    let idp = FakeIdp::start().await;
    let key = RedisServer::shared_key();
    let config = sentinel_config(&idp, &set, key.path(), 1);
    let gates = vec![
        GateProcess::start(&config).await,
        GateProcess::start(&config).await,
    ];
    let pids: Vec<u32> = gates.iter().map(GateProcess::pid).collect();

    let figures = rotate_then_kill_the_primary(&idp, &set, &gates).await;
    println!(
        "SENTINEL-FIGURES: rotated={} lost={} failover_ms={} answered_during={}",
        figures.rotated,
        figures.lost,
        figures.failover.as_millis(),
        figures.answered_during
    );
    assert!(
        figures.lost == 0,
        "lost rotations with wait_replicas = 1:\n replays inside the window: {:?}\n \
         accepted after the window: {:?}\n exchanged twice: {:?}\n{}",
        figures.mismatches,
        figures.refused,
        figures.twice,
        logs(&gates)
    );
    for (gate, pid) in gates.iter().zip(&pids) {
        assert_eq!(gate.pid(), *pid);
        assert!(running(*pid), "gate {pid} exited\n{}", gate.log());
        let failovers = metric_until(gate, "refresh_gate_store_failovers_total", secs(3), |v| {
            v >= 1.0
        })
        .await;
        assert!(
            failovers >= 1.0,
            "refresh_gate_store_failovers_total = {failovers}\n{}",
            gate.log()
        );
        let acked = gate
            .metric("refresh_gate_store_replication_acks_total{result=\"acknowledged\"}")
            .await
            .unwrap_or(0.0);
        assert!(
            acked >= 20.0,
            "each rotation waited for a replica: acknowledged = {acked}"
        );
        assert_eq!(gate.metric("refresh_gate_store_up").await, Some(1.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_primary_without_wait_is_a_figure_and_the_gates_recover() {
    let set = Arc::new(block_in_place(SentinelSet::start));
    let idp = FakeIdp::start().await;
    let key = RedisServer::shared_key();
    let config = sentinel_config(&idp, &set, key.path(), 0);
    let gates = vec![
        GateProcess::start(&config).await,
        GateProcess::start(&config).await,
    ];
    let pids: Vec<u32> = gates.iter().map(GateProcess::pid).collect();

    let figures = rotate_then_kill_the_primary(&idp, &set, &gates).await;
    println!(
        "SENTINEL-FIGURES wait_replicas=0: rotated={} lost={} failover_ms={} answered_during={}",
        figures.rotated,
        figures.lost,
        figures.failover.as_millis(),
        figures.answered_during
    );

    // The gates recovered: fresh tokens rotate, and replays get their answer.
    for n in 0..10 {
        let token = idp.mint();
        let (status, answer) = refresh(&gates[n % 2], &token, "kubernetes").await;
        assert_eq!(status, 200, "{answer}\n{}", logs(&gates));
        let (status, replay) = refresh(&gates[(n + 1) % 2], &token, "kubernetes").await;
        assert_eq!((status, replay), (200, answer));
        assert_eq!(idp.calls_for(&token), 1);
    }
    for (gate, pid) in gates.iter().zip(&pids) {
        assert!(running(*pid), "gate {pid} exited\n{}", gate.log());
        assert_eq!(
            gate.metric("refresh_gate_store_replication_acks_total{result=\"missed\"}")
                .await
                .unwrap_or(0.0),
            0.0,
            "nothing waits for a replica with wait_replicas = 0"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_failover_during_traffic_gives_no_wrong_answer_and_no_second_exchange() {
    let set = Arc::new(block_in_place(SentinelSet::start));
    let idp = Arc::new(FakeIdp::start().await);
    let key = RedisServer::shared_key();
    let config = sentinel_config(&idp, &set, key.path(), 1);
    let gates = vec![
        GateProcess::start(&config).await,
        GateProcess::start(&config).await,
    ];
    let bases = urls(&gates);

    let traffic = Traffic::start(idp.clone(), bases.clone(), 2);
    tokio::time::sleep(secs(1)).await;
    let started = Instant::now();
    let old = block_in_place(|| set.failover());
    let new = {
        let set = set.clone();
        tokio::task::spawn_blocking(move || set.wait_for_new_primary(&old, secs(15)))
            .await
            .unwrap()
    };
    let took = started.elapsed();
    tokio::time::sleep(secs(2)).await;
    let mut ledger = traffic.stop().await;
    let unavailable_during = ledger.count(503);
    let unsettled = settle_unanswered(&mut ledger, &bases, secs(5)).await;
    let rotated: Vec<Rotated> = ledger.rotated.values().cloned().collect();
    let mut all: Vec<String> = ledger.sent.iter().map(|s| s.token.clone()).collect();
    all.sort();
    all.dedup();
    let (_, mismatches) = replays_inside_window(&rotated, &bases, GRACE, ms(1500), secs(3)).await;
    let accepted = refused_after_window(&rotated, &bases, GRACE, ms(300)).await;
    let twice = any_exchanged_twice(&idp, &all);
    let missed = {
        let mut sum = 0.0;
        for gate in &gates {
            sum += gate
                .metric("refresh_gate_store_replication_acks_total{result=\"missed\"}")
                .await
                .unwrap_or(0.0);
        }
        sum
    };
    println!(
        "SENTINEL-FIGURES graceful: failover_ms={} requests={} rotated={} answered_200={} \
         answered_503={} wrong={} unexpected={} replay_mismatches={} accepted_after_window={} \
         exchanged_twice={} acks_missed={missed} new_primary={new}",
        took.as_millis(),
        ledger.sent.len(),
        rotated.len(),
        ledger.count(200),
        unavailable_during,
        ledger.wrong_answers().len(),
        ledger.unexpected().len(),
        mismatches.len(),
        accepted.len(),
        twice.len(),
    );
    assert!(
        ledger.wrong_answers().is_empty(),
        "wrong 200s:\n{}\n{}",
        ledger.describe(&ledger.wrong_answers(), started),
        logs(&gates)
    );
    assert!(
        ledger.unexpected().is_empty(),
        "answers neither 200 nor 503 temporarily_unavailable (times from SENTINEL FAILOVER; \
         the new primary was reported {}ms after it):\n{}exchanged twice: {twice:?}\n{}",
        took.as_millis(),
        ledger.describe(&ledger.unexpected(), started),
        logs(&gates)
    );
    assert!(
        unsettled.is_empty(),
        "tokens never answered after the failover: {unsettled:?}\n{}",
        logs(&gates)
    );
    assert!(rotated.len() >= 10, "too little traffic: {}", rotated.len());
    assert!(
        mismatches.is_empty(),
        "replays inside the window: {mismatches:?}\n{}",
        logs(&gates)
    );
    assert!(
        accepted.is_empty(),
        "accepted after the window: {accepted:?}\n{}",
        logs(&gates)
    );
    assert!(
        twice.is_empty(),
        "exchanged twice: {twice:?}\n{}",
        logs(&gates)
    );
}
