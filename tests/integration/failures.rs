//! Failure and capacity behaviour through the real gate: nothing is consumed by a failure,
//! an exchange outlives its client, and a full store never causes a second exchange.

use crate::common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timeout_after_send_then_a_late_success_is_remembered_for_the_retry() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(1500));
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(400))
        .max_replay_delay(ms(100))
        .exchange_timeout(secs(10));
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();

    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(oauth_error(&body), "temporarily_unavailable");

    // The exchange goes on; once the IdP answered, the retry gets that answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(Some(body), idp.answer_for(&token));
    assert_eq!(idp.calls_for(&token), 1, "the retry did not reach the IdP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_during_a_slow_exchange_waits_for_it() {
    let idp = FakeIdp::start().await;
    // The exchange outlasts both requests' timeouts by a wide margin (a loaded machine may
    // start the second request late).
    idp.set_latency(Duration::from_millis(1500));
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(300))
        .max_replay_delay(ms(100));
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 504);
    // Still in flight: this one waits, times out too, and never starts a second exchange.
    assert_eq!(refresh(&gate, &token, "k").await.0, 504);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_client_disconnecting_does_not_cancel_the_exchange() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(300));
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    let body = refresh_body(&token);
    {
        let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        let request = format!(
            "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
            basic("k", "secret"),
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The client goes away mid-exchange.
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(idp.calls_for(&token), 1, "the exchange reached the IdP");
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        Some(body),
        idp.answer_for(&token),
        "the retry gets the exchange's answer"
    );
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_tombstone_store_still_protects_the_newest_tokens() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).max_tombstones(5);
    let gate = GateProcess::start(&options).await;
    for _ in 0..30 {
        let token = idp.mint();
        assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    }
    // The store is at capacity: a new token is still admitted and protected.
    let token = idp.mint();
    let (_, first) = refresh(&gate, &token, "k").await;
    let (status, replay) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 200);
    assert_eq!(replay, first);
    assert_eq!(idp.calls_for(&token), 1, "a live token was exchanged twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_in_flight_map_answers_503_and_never_a_second_exchange() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(400));
    let options = GateConfig::new(idp.url()).max_in_flight(1);
    let gate = Arc::new(GateProcess::start(&options).await);
    let busy = idp.mint();
    let other = idp.mint();
    let first = {
        let gate = gate.clone();
        let busy = busy.clone();
        tokio::spawn(async move { refresh(&gate, &busy, "k").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Same token: joins the exchange under way (no new claim needed).
    let same = {
        let gate = gate.clone();
        let busy = busy.clone();
        tokio::spawn(async move { refresh(&gate, &busy, "k").await })
    };
    // Another token: no room for a second claim.
    let (status, body) = refresh(&gate, &other, "k").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(oauth_error(&body), "temporarily_unavailable");
    let (first, same) = (first.await.unwrap(), same.await.unwrap());
    assert_eq!(first.0, 200);
    assert_eq!(same, first);
    assert_eq!(idp.calls_for(&busy), 1);
    assert_eq!(idp.calls_for(&other), 0);
    // Once the exchange ended there is room again.
    assert_eq!(refresh(&gate, &other, "k").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_get_the_failure_of_the_exchange_they_joined() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(300));
    idp.fail_next(1);
    let gate = Arc::new(GateProcess::start(&GateConfig::new(idp.url())).await);
    let token = idp.mint();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let gate = gate.clone();
            let token = token.clone();
            tokio::spawn(async move { refresh(&gate, &token, "k").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().0, 503);
    }
    assert_eq!(idp.calls_for(&token), 1);
    assert_eq!(
        refresh(&gate, &token, "k").await.0,
        200,
        "the token was not consumed"
    );
}
