//! Observe mode through the real gate: every refresh grant forwarded, what enforce would
//! have done counted beside the IdP's answer and audited, the store never needed, the
//! fail-closed classifier still in force, and a reload to enforce applying the decisions
//! from the next request on.

use crate::common;

use common::*;
use std::time::Duration;

fn observed(would: &str, idp: &str) -> String {
    format!("refresh_gate_observed_refreshes_total{{idp=\"{idp}\",would=\"{would}\"}}")
}

fn outcome(name: &str) -> String {
    format!("refresh_gate_refresh_requests_total{{outcome=\"{name}\"}}")
}

/// The audit lines of `event`, as JSON.
fn audit_lines(log: &str, event: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["event"] == event || line["event"] == event)
        .collect()
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    if line["fields"].is_object() {
        &line["fields"][name]
    } else {
        &line[name]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn observe_forwards_every_grant_and_records_what_enforce_would_have_done() {
    // The IdP enforces one-time use itself: a reused token gets 400.
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(300));
    let options = GateConfig::new(idp.url())
        .grace_period(secs(2))
        .mode(Mode::Observe)
        .client("kubernetes", ClientOverrides::default())
        .log_level("info,audit=debug")
        .log_format(LogFormat::Json);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();

    // Two clients racing on one token: the IdP honours the first and refuses the second,
    // the session enforce would have saved by coalescing.
    let (first, racer) = tokio::join!(refresh(&gate, &token, "kubernetes"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        refresh(&gate, &token, "kubernetes").await
    });
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(
        racer.0, 400,
        "the IdP's own refusal, forwarded: {}",
        racer.1
    );
    assert!(racer.1.contains("invalid_grant"), "{}", racer.1);
    // Inside the window: enforce would replay; the IdP refuses.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refresh(&gate, &token, "kubernetes").await.0, 400);
    // Another client inside the window, and the same client after it: enforce would refuse.
    assert_eq!(refresh(&gate, &token, "intruder").await.0, 400);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(refresh(&gate, &token, "kubernetes").await.0, 400);
    // The IdP saw every one of them.
    assert_eq!(idp.calls_for(&token), 5);

    assert_eq!(gate.metric(&outcome("observed")).await, Some(5.0));
    for other in ["forwarded", "coalesced", "grace_replay", "refused"] {
        assert_eq!(gate.metric(&outcome(other)).await, Some(0.0), "{other}");
    }
    assert_eq!(
        gate.metric(&observed("forward", "success")).await,
        Some(1.0)
    );
    assert_eq!(
        gate.metric(&observed("coalesce", "refused")).await,
        Some(1.0)
    );
    assert_eq!(gate.metric(&observed("replay", "refused")).await, Some(1.0));
    assert_eq!(gate.metric(&observed("refuse", "refused")).await, Some(2.0));
    assert_eq!(gate.metric(&observed("refuse", "success")).await, Some(0.0));
    assert_eq!(
        gate.metric("refresh_gate_refused_total{reason=\"after_grace\"}")
            .await,
        Some(0.0),
        "observe refuses nothing"
    );
    assert_eq!(
        gate.metric("refresh_gate_replay_delay_seconds_count{outcome=\"observed\"}")
            .await,
        Some(4.0)
    );

    let log = gate.log();
    let events = audit_lines(&log, "RefreshTokenReplayObserved");
    assert_eq!(
        events.len(),
        4,
        "one per presentation of a used token:\n{log}"
    );
    let would: Vec<_> = events.iter().map(|e| field(e, "would").clone()).collect();
    assert_eq!(would, ["coalesce", "replay", "refuse", "refuse"]);
    let reasons: Vec<_> = events.iter().map(|e| field(e, "reason").clone()).collect();
    assert_eq!(reasons, ["", "", "client_mismatch", "after_grace"]);
    let levels: Vec<_> = events.iter().map(|e| e["level"].clone()).collect();
    assert_eq!(levels, ["INFO", "INFO", "WARN", "WARN"]);
    for event in &events {
        assert_eq!(field(event, "idp_status"), 400);
        assert_eq!(field(event, "idp"), "refused");
        assert_eq!(field(event, "first_client_id"), "kubernetes");
    }
    let delay = field(&events[1], "since_first_use_ms").as_u64().unwrap();
    assert!((400..1500).contains(&delay), "{delay}");
    assert!(!log.contains(&token), "a raw token in the log");
    assert!(audit_lines(&log, "RefreshTokenReplayRefused").is_empty());
    assert!(audit_lines(&log, "ExpiredRefreshTokenUsed").is_empty());

    // The advice learns from the same client's replays only (the racer and the replay).
    let (_, body) = gate.admin_get("/grace-advice").await;
    let advice: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(advice["clients"][0]["client_id"], "kubernetes");
    assert_eq!(advice["clients"][0]["replays"], 3, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spent_token_the_idp_accepts_is_counted_as_a_reuse_it_let_through() {
    // An IdP that does not enforce one-time use: every presentation gets new tokens.
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(1))
        .mode(Mode::Observe);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "kubernetes").await.0, 200);
    idp.set_mode(IdpMode::NoRotation);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200, "forwarded, and the IdP let it through");
    assert_eq!(gate.metric(&observed("refuse", "success")).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn observe_keeps_forwarding_while_the_store_is_down_even_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fingerprint.key");
    std::fs::write(&key, "k".repeat(48)).unwrap();
    let idp = FakeIdp::start().await;
    // Nothing listens where the store should be.
    let nowhere = common::gate::free_port();
    let store = Store {
        on_store_error: Some(OnStoreError::FailClosed),
        timeout: Some(ms(200)),
        ..Store::redis(format!("redis://{nowhere}/0"), &key)
    };
    let options = GateConfig::new(idp.url()).mode(Mode::Observe).store(store);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    let (status, body) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gate.metric(&outcome("observed")).await, Some(1.0));
    assert_eq!(
        gate.metric("refresh_gate_refused_total{reason=\"store_unavailable\"}")
            .await,
        Some(0.0)
    );
    // The classifier still refuses what it cannot be certain of, in observe too.
    let response = client()
        .post(gate.url("/token"))
        .header("authorization", basic("kubernetes", "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={token}&refresh_token=other"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        idp.calls_for(&token),
        1,
        "the ambiguous request never reached the IdP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_to_enforce_decides_from_the_next_request_and_only_the_clients_in_observe_observe()
{
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(5))
        .client(
            "k9s",
            ClientOverrides {
                mode: Some(Mode::Observe),
                ..Default::default()
            },
        )
        .mode(Mode::Observe);
    let gate = GateProcess::start(&options).await;
    let seen_in_observe = idp.mint();
    assert_eq!(refresh(&gate, &seen_in_observe, "kubectl").await.0, 200);
    assert_eq!(refresh(&gate, &seen_in_observe, "kubectl").await.0, 400);

    gate.reconfigure(|config| config.rotation.mode = Some(Mode::Enforce));
    gate.signal("HUP");
    gate.wait_for_log("configuration reloaded").await;

    // Enforce now: a fresh token's replay gets the identical answer, one exchange.
    let fresh = idp.mint();
    let (status, first) = refresh(&gate, &fresh, "kubectl").await;
    assert_eq!(status, 200);
    assert_eq!(refresh(&gate, &fresh, "kubectl").await, (200, first));
    assert_eq!(idp.calls_for(&fresh), 1);
    assert_eq!(gate.metric(&outcome("grace_replay")).await, Some(1.0));
    // A token observe saw is unknown to enforce: no answer of the observe period is replayed
    // and no observed reuse refuses it; it is forwarded for the IdP to judge (it refuses).
    let (status, body) = refresh(&gate, &seen_in_observe, "kubectl").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(idp.calls_for(&seen_in_observe), 3);
    assert_eq!(
        gate.metric("refresh_gate_refused_total{reason=\"reuse_limit\"}")
            .await,
        Some(0.0)
    );
    // k9s stays in observe: forwarded every time.
    let k9s = idp.mint();
    assert_eq!(refresh(&gate, &k9s, "k9s").await.0, 200);
    assert_eq!(refresh(&gate, &k9s, "k9s").await.0, 400);
    assert_eq!(idp.calls_for(&k9s), 2);
}
