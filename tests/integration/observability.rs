//! Metrics, audit events and the admin endpoints, asserted after scripted traffic through
//! the real gate.

use crate::common;

use common::*;
use refresh_gate::observe::metrics::RefreshOutcome;
use refresh_gate::policy::RefusalReason;
use std::sync::Arc;
use std::time::Duration;

fn outcome(label: &str) -> String {
    format!("refresh_gate_refresh_requests_total{{outcome=\"{label}\"}}")
}

fn reason(label: &str) -> String {
    format!("refresh_gate_refused_total{{reason=\"{label}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_series_exists_at_zero_before_any_traffic() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    for o in RefreshOutcome::ALL {
        assert_eq!(
            gate.metric(&outcome(o.label())).await,
            Some(0.0),
            "{}",
            o.label()
        );
    }
    for r in RefusalReason::ALL {
        assert_eq!(
            gate.metric(&reason(r.label())).await,
            Some(0.0),
            "{}",
            r.label()
        );
    }
    assert_eq!(gate.metric("refresh_gate_tombstones").await, Some(0.0));
    assert_eq!(
        gate.metric("refresh_gate_tombstone_evictions_total").await,
        Some(0.0)
    );
    let version = format!(
        "refresh_gate_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(gate.metric(&version).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripted_traffic_moves_exactly_the_expected_series() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(1))
        .max_reuses(3);
    let gate = Arc::new(GateProcess::start(&options).await);

    // 1 forwarded + 2 coalesced (three racing on a slow IdP).
    idp.set_latency(Duration::from_millis(300));
    let a = idp.mint();
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let gate = gate.clone();
            let a = a.clone();
            tokio::spawn(async move { refresh(&gate, &a, "k").await.0 })
        })
        .collect();
    for racer in racers {
        assert_eq!(racer.await.unwrap(), 200);
    }
    idp.set_latency(Duration::ZERO);
    // 1 grace replay, then the cap (3 reuses: 2 coalesced + 1 replay) refuses the next.
    assert_eq!(refresh(&gate, &a, "k").await.0, 200);
    assert_eq!(refresh(&gate, &a, "k").await.0, 400);
    // Another client.
    assert_eq!(refresh(&gate, &a, "intruder").await.0, 400);
    // After the window.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(refresh(&gate, &a, "k").await.0, 400);
    // An upstream error and an ambiguous request.
    idp.fail_next(1);
    assert_eq!(refresh(&gate, &idp.mint(), "k").await.0, 503);
    let response = client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&grant_type=refresh_token&refresh_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A pass-through request.
    client()
        .get(gate.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();

    let expected = [
        (outcome("forwarded"), 1.0),
        (outcome("coalesced"), 2.0),
        (outcome("grace_replay"), 1.0),
        (outcome("refused"), 3.0),
        (outcome("upstream_error"), 1.0),
        (outcome("invalid_request"), 1.0),
        (reason("reuse_limit"), 1.0),
        (reason("client_mismatch"), 1.0),
        (reason("after_grace"), 1.0),
        (
            "refresh_gate_requests_total{code_class=\"2xx\",route=\"token\"}".to_owned(),
            4.0,
        ),
        (
            "refresh_gate_requests_total{code_class=\"4xx\",route=\"token\"}".to_owned(),
            4.0,
        ),
        (
            "refresh_gate_requests_total{code_class=\"5xx\",route=\"token\"}".to_owned(),
            1.0,
        ),
        (
            "refresh_gate_requests_total{code_class=\"2xx\",route=\"passthrough\"}".to_owned(),
            1.0,
        ),
        (
            "refresh_gate_upstream_request_duration_seconds_count{kind=\"refresh\"}".to_owned(),
            2.0,
        ),
        (
            "refresh_gate_upstream_request_duration_seconds_count{kind=\"passthrough\"}".to_owned(),
            1.0,
        ),
        ("refresh_gate_tombstones".to_owned(), 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(gate.metric(&series).await, Some(value), "{series}");
    }
    let (_, text) = gate.admin_get("/metrics").await;
    for token in idp.all_tokens() {
        assert!(!text.contains(&token), "a token in /metrics");
    }
    assert!(!text.contains("127.0.0.1"), "an IP in a metric label");
    assert!(!text.contains("alice"), "a subject in a metric label");
}

fn audit_lines(log: &str, event: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_events_carry_every_field() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .log_format(LogFormat::Json)
        .log_level("info,audit=debug");
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    let send = |request_id: &'static str, client_id: &'static str| {
        let token = token.clone();
        let url = gate.url("/token");
        async move {
            client()
                .post(url)
                .header("host", "login.example.com")
                .header("x-request-id", request_id)
                .header("authorization", basic(client_id, "secret"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(refresh_body(&token))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send("req-first", "kubernetes").await, 200);
    assert_eq!(send("req-replay", "kubernetes").await, 200);
    assert_eq!(send("req-intruder", "intruder").await, 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gate.log();

    // The request id reached the IdP with the exchange.
    let call = &idp.calls()[0];
    assert!(call
        .headers
        .iter()
        .any(|(k, v)| k == "x-request-id" && v == "req-first"));

    let rotated = audit_lines(&log, "RefreshTokenRotated");
    assert_eq!(rotated.len(), 1, "{log}");
    assert_eq!(rotated[0]["level"], "DEBUG");
    let fingerprint = rotated[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 12);

    let used = audit_lines(&log, "ExpiredRefreshTokenUsed");
    assert_eq!(used.len(), 1, "{log}");
    let event = &used[0];
    assert_eq!(event["schema_version"], 1);
    assert_eq!(event["request_id"], "req-replay");
    assert_eq!(event["token_url"], "http://login.example.com/token");
    assert_eq!(event["client_id"], "kubernetes");
    assert_eq!(event["client_ip"], "127.0.0.1");
    assert_eq!(event["subject"], "alice");
    assert_eq!(event["token"], fingerprint.as_str());
    assert_eq!(event["replay_count"], 1);
    assert_eq!(event["coalesced"], false);
    assert!(event["since_first_use_ms"].as_u64().unwrap() < 5000);
    assert!(humantime::parse_rfc3339(event["ts"].as_str().unwrap()).is_ok());
    assert_eq!(
        event["message"],
        format!(
            "[ExpiredRefreshTokenUsed] - http://login.example.com/token - alice - Expired token used within grace period [127.0.0.1] - [{fingerprint}]"
        )
    );

    let refused = audit_lines(&log, "RefreshTokenReplayRefused");
    assert_eq!(refused.len(), 1, "{log}");
    let event = &refused[0];
    assert_eq!(event["reason"], "client_mismatch");
    assert_eq!(event["request_id"], "req-intruder");
    assert_eq!(event["client_id"], "intruder");
    assert_eq!(event["first_client_id"], "kubernetes");
    assert_eq!(event["subject"], "alice");
    assert_eq!(event["schema_version"], 1);
    assert_eq!(event["level"], "WARN");

    for token in idp.all_tokens() {
        assert!(!log.contains(&token), "a raw token in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generated_request_id_is_forwarded_upstream() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    refresh(&gate, &idp.mint(), "k").await;
    let ids: Vec<_> = idp.calls()[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].len(), 32, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_is_503_while_the_idp_names_an_unguarded_token_endpoint() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        // A typo: the IdP's token endpoint is /token.
        .token_paths(["/tokn"])
        .discovery_interval(ms(200));
    let gate = GateProcess::start(&options).await;
    let mut status = (0, String::new());
    for _ in 0..50 {
        status = gate.admin_get("/readyz").await;
        if status.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status.0, 503, "{status:?}");
    assert!(status.1.contains("/token"), "{status:?}");
    assert!(gate.log().contains("NOT GUARDING THE TOKEN ENDPOINT"));
    assert_eq!(gate.admin_get("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_is_200_when_the_token_endpoint_is_guarded() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).discovery_interval(ms(200));
    let gate = GateProcess::start(&options).await;
    for _ in 0..50 {
        if gate.log().contains("token_endpoint is guarded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gate.log().contains("token_endpoint is guarded"),
        "{}",
        gate.log()
    );
    assert_eq!(gate.admin_get("/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(gate.admin_get("/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_flips_readiness_at_once_and_keeps_serving_during_the_drain() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).drain(secs(3));
    let gate = GateProcess::start(&options).await;
    assert_eq!(gate.admin_get("/readyz").await.0, 200);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gate.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut ready = 200;
    for _ in 0..20 {
        ready = gate.admin_get("/readyz").await.0;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ready, 503, "not-ready right after SIGTERM");
    // Still serving refreshes while draining.
    assert_eq!(refresh(&gate, &idp.mint(), "k").await.0, 200);
}
