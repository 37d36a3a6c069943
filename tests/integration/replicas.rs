//! Several gate replicas (the real binary) sharing one real redis-server behave as one
//! gate: one upstream exchange however the requests spread, identical answers on every
//! replica, refusals everywhere after the window, tombstones that outlive a restart, and the
//! configured policy while Redis is down, with recovery when it returns.

use crate::common;

use common::redis_server::{RedisServer, ServerOptions};
use common::*;
use std::time::Duration;

fn shared_key() -> tempfile::NamedTempFile {
    RedisServer::shared_key()
}

fn replica_options(
    idp: &FakeIdp,
    redis: &RedisServer,
    key: &tempfile::NamedTempFile,
    on_store_error: OnStoreError,
) -> GateConfig {
    GateConfig::new(idp.url()).store(redis.store_section(key.path(), on_store_error))
}

async fn start_replicas(options: &GateConfig, count: usize) -> Vec<GateProcess> {
    let mut gates = Vec::new();
    for _ in 0..count {
        gates.push(GateProcess::start(options).await);
    }
    gates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_make_one_exchange_and_answer_identically() {
    let redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(300));
    let key = shared_key();
    let options = replica_options(&idp, &redis, &key, OnStoreError::FailClosed)
        .grace_period(secs(2))
        .max_reuses(100);
    let gates = start_replicas(&options, 3).await;
    let token = idp.mint();

    let requests: Vec<_> = (0..30)
        .map(|n| {
            let url = gates[n % 3].url("/token");
            let token = token.clone();
            tokio::spawn(async move {
                let response = client()
                    .post(url)
                    .header("authorization", basic("kubernetes", "secret"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(refresh_body(&token))
                    .send()
                    .await
                    .unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        if status != 200 {
            for gate in &gates {
                eprintln!("{}", gate.log());
            }
        }
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
    }
    assert_eq!(idp.calls_for(&token), 1, "exactly one upstream exchange");
    let first = idp.answer_for(&token).expect("the IdP answered");
    assert!(
        bodies.iter().all(|b| *b == first),
        "every answer is the IdP's one answer"
    );

    // Inside the window, a replay on any replica gets the identical answer.
    for gate in &gates {
        let (status, body) = refresh(gate, &token, "kubernetes").await;
        assert_eq!((status, body.as_str()), (200, first.as_str()));
    }
    assert_eq!(idp.calls_for(&token), 1);
    let coalesced: f64 = {
        let mut total = 0.0;
        for gate in &gates {
            total += gate
                .metric("refresh_gate_refresh_requests_total{outcome=\"coalesced\"}")
                .await
                .unwrap_or(0.0)
                + gate
                    .metric("refresh_gate_refresh_requests_total{outcome=\"grace_replay\"}")
                    .await
                    .unwrap_or(0.0);
        }
        total
    };
    assert_eq!(coalesced, 32.0, "29 coalesced or replayed, then 3 replays");

    // Redis holds fingerprints and sealed bytes only.
    let contents = redis.dump();
    assert!(!contents.is_empty());
    let answer: serde_json::Value = serde_json::from_str(&first).unwrap();
    let mut secrets = vec![token.clone()];
    for field in ["access_token", "refresh_token", "id_token"] {
        if let Some(value) = answer[field].as_str() {
            secrets.push(value.to_owned());
        }
    }
    for (name, stored) in &contents {
        assert!(stored.pttl > 0, "{name} has no TTL");
        for secret in &secrets {
            let needle = secret.as_bytes();
            assert!(
                !name.contains(secret.as_str())
                    && !stored.bytes.windows(needle.len()).any(|w| w == needle),
                "Redis key {name} holds a token"
            );
        }
        assert!(
            !stored.bytes.windows(12).any(|w| w == b"access_token"),
            "{name} holds a plaintext token response"
        );
    }

    // The tombstone gauge counts what each replica wrote: one tombstone in all.
    let mut tombstones = 0.0;
    for gate in &gates {
        tombstones += gate.metric("refresh_gate_tombstones").await.unwrap();
    }
    assert_eq!(
        tombstones, 1.0,
        "sum over replicas of the tombstones they wrote"
    );

    // After the window: refused on every replica, and still one exchange.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for gate in &gates {
        let (status, body) = refresh(gate, &token, "kubernetes").await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(oauth_error(&body), "invalid_grant");
    }
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_replica_keeps_every_tombstone() {
    let redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let options =
        replica_options(&idp, &redis, &key, OnStoreError::FailClosed).grace_period(secs(30));
    let gate = GateProcess::start(&options).await;
    let inside = idp.mint();
    let (status, first) = refresh(&gate, &inside, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    assert!(
        !gate.log().contains("maxmemory-policy"),
        "a noeviction Redis draws no warning"
    );
    let short = options.clone().grace_period(secs(0));
    drop(gate);

    // The same replica, restarted: the window and the answer are still there.
    let gate = GateProcess::start(&options).await;
    let (status, replay) = refresh(&gate, &inside, "kubernetes").await;
    assert_eq!((status, replay.as_str()), (200, first.as_str()));
    // Another client is refused: the tombstone kept its client.
    let (status, body) = refresh(&gate, &inside, "kubectl-other").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    drop(gate);

    // Restarted with an empty window: the tombstone refuses the replay outright.
    let gate = GateProcess::start(&short).await;
    let (status, body) = refresh(&gate, &inside, "kubernetes").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(idp.calls_for(&inside), 1, "no replay ever reached the IdP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_closed_answers_503_while_redis_is_down_and_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let options = replica_options(&idp, &redis, &key, OnStoreError::FailClosed);
    let gate = GateProcess::start(&options).await;
    let before = idp.mint();
    assert_eq!(refresh(&gate, &before, "kubernetes").await.0, 200);

    redis.stop();
    let token = idp.mint();
    let response = client()
        .post(gate.url("/token"))
        .header("authorization", basic("kubernetes", "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(refresh_body(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body = response.text().await.unwrap();
    assert_eq!(oauth_error(&body), "temporarily_unavailable");
    assert_eq!(
        idp.calls_for(&token),
        0,
        "nothing reached the IdP unguarded"
    );
    assert_eq!(
        gate.metric("refresh_gate_refused_total{reason=\"store_unavailable\"}")
            .await,
        Some(1.0)
    );
    assert!(
        gate.metric("refresh_gate_store_errors_total")
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(gate.metric("refresh_gate_store_up").await, Some(0.0));
    // A forwarded grant whose token-like values cannot be checked is not forwarded either.
    let exchange = client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={before}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(exchange.status().as_u16(), 503);
    assert_eq!(idp.calls().len(), 1, "only the refresh before the outage");
    assert_eq!(
        gate.metric("refresh_gate_refresh_requests_total{outcome=\"upstream_error\"}")
            .await,
        Some(0.0),
        "a store outage is not an upstream error"
    );
    gate.wait_for_log("THE TOKEN STORE (Redis) IS UNAVAILABLE")
        .await;
    // Passthrough traffic does not depend on the store.
    let status = client()
        .get(gate.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_ne!(status.as_u16(), 503);

    redis.restart();
    let mut recovered = None;
    for _ in 0..100 {
        let (status, body) = refresh(&gate, &token, "kubernetes").await;
        if status == 200 {
            recovered = Some(body);
            break;
        }
        assert_eq!(status, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = recovered.expect("the gate recovered when Redis returned");
    assert_eq!(idp.calls_for(&token), 1);
    let (status, replay) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(
        (status, replay),
        (200, first),
        "guarded again: the replay is answered"
    );
    assert_eq!(idp.calls_for(&token), 1);
    assert_eq!(gate.metric("refresh_gate_store_up").await, Some(1.0));
    gate.wait_for_log("answers again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_forwards_untouched_while_redis_is_down_and_says_so() {
    let mut redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let options = replica_options(&idp, &redis, &key, OnStoreError::FailOpen);
    let gate = GateProcess::start(&options).await;
    redis.stop();

    let token = idp.mint();
    let (status, first) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(Some(first), idp.answer_for(&token));
    // Unguarded: the replay goes to the IdP, whose own rules apply.
    let (status, body) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        idp.calls_for(&token),
        2,
        "no grace window while the store is down"
    );
    assert_eq!(
        gate.metric("refresh_gate_refresh_requests_total{outcome=\"unguarded\"}")
            .await,
        Some(2.0)
    );
    assert!(
        gate.metric("refresh_gate_store_errors_total")
            .await
            .unwrap()
            >= 2.0
    );
    let log = gate.wait_for_log("RefreshForwardedUnguarded").await;
    assert!(!log.contains(&token), "the raw token was logged");

    redis.restart();
    // Recovery needs no restart: soon a fresh token is guarded again.
    let mut guarded = None;
    for _ in 0..100 {
        let next = idp.mint();
        let (status, body) = refresh(&gate, &next, "kubernetes").await;
        assert_eq!(status, 200, "{body}");
        let forwarded = gate
            .metric("refresh_gate_refresh_requests_total{outcome=\"forwarded\"}")
            .await
            .unwrap();
        if forwarded >= 1.0 {
            guarded = Some((next, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (next, body) = guarded.expect("the gate guarded refreshes again when Redis returned");
    let (status, replay) = refresh(&gate, &next, "kubernetes").await;
    assert_eq!((status, replay), (200, body));
    assert_eq!(
        idp.calls_for(&next),
        1,
        "the replay was answered by the gate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_reach_redis_over_tls_with_the_password_from_a_file() {
    let redis = RedisServer::start_with(ServerOptions {
        password: Some("s3cret-redis-password".to_owned()),
        tls: true,
        args: Vec::new(),
    });
    assert!(redis.url().starts_with("rediss://"));
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, redis.ca_pem.as_ref().unwrap()).unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "s3cret-redis-password\n").unwrap();
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, "not-the-password\n").unwrap();
    let options_with = |password: &std::path::Path| {
        let mut options = replica_options(&idp, &redis, &key, OnStoreError::FailClosed);
        let store = options.store.as_mut().unwrap();
        store.password_file = Some(password.to_owned());
        store.ca_file = Some(ca_file.clone());
        options
    };
    let gates = start_replicas(&options_with(&password_file), 2).await;
    let token = idp.mint();
    let (status, first) = refresh(&gates[0], &token, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    let (status, replay) = refresh(&gates[1], &token, "kubernetes").await;
    assert_eq!(
        (status, replay),
        (200, first),
        "shared through Redis over TLS"
    );
    assert_eq!(idp.calls_for(&token), 1);
    let log = gates[0].log();
    assert!(
        !log.contains("s3cret-redis-password"),
        "the Redis password was logged"
    );

    // The password is enforced: a replica with the wrong one cannot use the store.
    let wrong = GateProcess::start(&options_with(&wrong_file)).await;
    let (status, body) = refresh(&wrong, &idp.mint(), "kubernetes").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (503, "temporarily_unavailable")
    );
    assert!(
        !wrong.log().contains("not-the-password"),
        "the Redis password was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_reported_at_start_up() {
    let redis = RedisServer::start_with(ServerOptions {
        args: vec!["--maxmemory-policy".to_owned(), "allkeys-lru".to_owned()],
        ..ServerOptions::default()
    });
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let gate =
        GateProcess::start(&replica_options(&idp, &redis, &key, OnStoreError::FailOpen)).await;
    gate.wait_for_log("maxmemory-policy noeviction").await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "kubernetes").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gate_starts_while_redis_is_down_and_guards_once_it_is_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let gate = GateProcess::start(&replica_options(
        &idp,
        &redis,
        &key,
        OnStoreError::FailClosed,
    ))
    .await;
    let (status, body) = gate.admin_get("/livez").await;
    assert_eq!(status, 200, "{body}");
    let token = idp.mint();
    let (status, body) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (503, "temporarily_unavailable")
    );
    assert_eq!(idp.calls_for(&token), 0);

    redis.restart();
    let mut first = None;
    for _ in 0..100 {
        let (status, body) = refresh(&gate, &token, "kubernetes").await;
        if status == 200 {
            first = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("the gate used Redis once it came up, without a restart");
    let (status, replay) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!((status, replay), (200, first));
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_successor_used_on_one_replica_closes_its_parent_on_the_others() {
    let redis = RedisServer::start();
    let idp = FakeIdp::start().await;
    let key = shared_key();
    let options = replica_options(&idp, &redis, &key, OnStoreError::FailClosed)
        .grace_period(secs(30))
        .min_replay_window(ms(300))
        .on_replay(OnReplay::RevokeFamily);
    let gates = start_replicas(&options, 2).await;
    let token = idp.mint();
    let (status, first) = refresh(&gates[0], &token, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    // Before the successor is used, the parent replays on any replica.
    let (status, replay) = refresh(&gates[1], &token, "kubernetes").await;
    assert_eq!((status, replay.as_str()), (200, first.as_str()));

    let answer: serde_json::Value = serde_json::from_str(&first).unwrap();
    let successor = answer["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = refresh(&gates[1], &successor, "kubernetes").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(ms(400)).await;

    // Past min_replay_window, replica 0 refuses the parent: superseded, no family revoked.
    let (status, body) = refresh(&gates[0], &token, "kubernetes").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant"),
        "{body}"
    );
    assert!(body.contains("superseded"), "{body}");
    assert_eq!(
        gates[0]
            .metric("refresh_gate_refused_total{reason=\"superseded\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(idp.calls_for(&token), 1, "no replay reached the IdP");
    // The session goes on: the successor's own answer still replays.
    let (status, again) = refresh(&gates[0], &successor, "kubernetes").await;
    assert_eq!(
        (status, again.as_str()),
        (200, body_of_successor(&idp, &successor).as_str())
    );
}

fn body_of_successor(idp: &FakeIdp, successor: &str) -> String {
    idp.answer_for(successor)
        .expect("the IdP answered the successor")
}
