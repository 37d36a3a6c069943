//! The refresh-grant rules end to end: the real gate binary in front of a fake IdP.

use crate::common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_use_is_forwarded_and_replay_inside_the_window_is_identical() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();

    let (status, first) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(Some(first.clone()), idp.answer_for(&token));

    let (status, replay) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200);
    assert_eq!(replay, first, "a replay gets the identical body");
    assert_eq!(idp.calls_for(&token), 1, "the replay never reached the IdP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_headers_are_allow_listed() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    refresh(&gate, &token, "k").await;
    let response = client()
        .post(gate.url("/token"))
        .header("authorization", basic("k", "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(refresh_body(&token))
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert!(headers.contains_key("date"));
    assert!(
        !headers.contains_key("set-cookie"),
        "Set-Cookie is never replayed"
    );
    let body = response.text().await.unwrap();
    assert_eq!(headers["content-length"], body.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_window_the_gate_refuses_without_asking_the_idp() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).grace_period(ms(300));
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 400);
    assert_eq!(oauth_error(&body), "invalid_grant");
    assert_eq!(idp.calls_for(&token), 1);
    assert!(gate.log().contains("RefreshTokenReplayRefused"));
    assert!(gate.log().contains("after_grace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grace_zero_refuses_every_replay() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).grace_period(secs(0));
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_then_form_credentials_are_the_same_client() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    let (_, first) = refresh(&gate, &token, "kubernetes").await;
    // x/oauth2's retry: the same token, client_secret_post, no Authorization header.
    let response = client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id=kubernetes&client_secret=secret&grant_type=refresh_token&refresh_token={token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), first);
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_client_inside_the_window_is_refused() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "kubernetes").await.0, 200);
    let (status, body) = refresh(&gate, &token, "intruder").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert!(gate.log().contains("client_mismatch"));
    // Same id, other secret: another client too.
    let response = client()
        .post(gate.url("/token"))
        .header("authorization", basic("kubernetes", "wrong"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(refresh_body(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reuse_cap_refuses_the_replay_beyond_it() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).max_reuses(2);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert!(gate.log().contains("reuse_limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_refreshes_make_one_upstream_call_with_spaced_identical_answers() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(200));
    let options = GateConfig::new(idp.url())
        .max_reuses(60)
        .replay_spacing(ms(20))
        .max_replay_delay(secs(2));
    let gate = GateProcess::start(&options).await;
    let gate = std::sync::Arc::new(gate);
    let token = idp.mint();
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let gate = gate.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let answer = refresh(&gate, &token, "kubernetes").await;
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    let mut arrivals = Vec::new();
    for task in tasks {
        let ((status, body), at) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        bodies.push(body);
        arrivals.push(at);
    }
    assert_eq!(idp.calls_for(&token), 1, "exactly one upstream exchange");
    let expected = idp.answer_for(&token).unwrap();
    assert!(
        bodies.iter().all(|b| *b == expected),
        "all 50 bodies identical"
    );
    arrivals.sort();
    let spread = arrivals[49] - arrivals[0];
    // 49 waiters released 20 ms apart: the last answer comes at least ~49 x 20 ms after the
    // first (a lower bound: sleeps only ever run long).
    assert!(
        spread >= Duration::from_millis(900),
        "answers were not spaced: spread {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_503_tombstones_nothing_and_a_retry_succeeds() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    idp.fail_next(1);
    let (status, _) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 503, "the IdP's failure is passed through");
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.calls_for(&token), 2, "the retry was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_down_answers_502_json_and_a_later_retry_succeeds() {
    let (socket, addr) = FakeIdp::reserve();
    let gate = GateProcess::start(&GateConfig::new(format!("http://{addr}"))).await;
    let token = "rt-issued-before-the-outage";
    let (status, body) = refresh(&gate, token, "k").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(oauth_error(&body), "temporarily_unavailable");
    // The IdP comes back: the claim was released, so the retry is forwarded and succeeds.
    let idp = FakeIdp::start_on(socket);
    let (status, body) = refresh(&gate, token, "k").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.calls_for(token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_rotating_idp_is_passed_through_and_warned_about_once() {
    let idp = FakeIdp::start().await;
    idp.set_mode(IdpMode::NoRotation);
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    assert_eq!(
        idp.calls_for(&token),
        2,
        "nothing tombstoned without rotation"
    );
    let log = gate.log();
    assert_eq!(
        log.matches("without a new refresh token").count(),
        1,
        "{log}"
    );
}
