//! Detached exchanges capped per source: one address that sends refresh grants and closes
//! each socket at once cannot hold every in-flight slot while the IdP is slow. The
//! exchanges still run to their end (a rotation is never lost) and other addresses are not
//! affected.

use crate::common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send a refresh grant from `source` (through the trusted-proxy header) and close the
/// socket at once.
async fn fire_and_forget(gate: &GateProcess, token: &str, source: &str) {
    let body = refresh_body(token);
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: {}\r\nX-Forwarded-For: {source}\r\nContent-Length: {}\r\n\r\n{body}",
        basic("k", "secret"),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    drop(stream);
}

async fn refresh_from(gate: &GateProcess, token: &str, source: &str) -> (u16, Option<String>) {
    let response = client()
        .post(gate.url("/token"))
        .header("authorization", basic("k", "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", source)
        .body(refresh_body(token))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_cannot_hold_the_slots_with_exchanges_it_abandoned() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(1500));
    let options = GateConfig::new(idp.url())
        .trusted_proxies(["127.0.0.1/32"])
        .max_detached_per_source(4)
        .request_timeout(secs(5))
        .exchange_timeout(secs(10));
    let gate = GateProcess::start(&options).await;

    let abandoned: Vec<String> = (0..6).map(|_| idp.mint()).collect();
    for token in &abandoned {
        fire_and_forget(&gate, token, "10.0.0.1").await;
    }
    // Wait until the gate has seen the clients leave and has dealt with every abandoned
    // grant: each is an exchange running detached or was refused at the cap (which, depends
    // on how fast the gate noticed the earlier ones leave), so no refusal of theirs lands in
    // the count below.
    let refusals = "refresh_gate_detached_limit_refusals_total";
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let detached = gate.metric("refresh_gate_detached_exchanges").await;
        let refused = gate.metric(refusals).await;
        let (detached, refused) = (detached.unwrap_or(0.0), refused.unwrap_or(0.0));
        if detached >= 4.0 && detached + refused >= abandoned.len() as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned grants were not all detached or refused: {detached} detached, {refused} refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The attacker's next exchange is refused; another address refreshes normally.
    let before = gate.metric(refusals).await.unwrap();
    let (status, retry_after) = refresh_from(&gate, &idp.mint(), "10.0.0.1").await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    assert_eq!(gate.metric(refusals).await, Some(before + 1.0));
    gate.wait_for_log("RefreshDetachedLimitReached").await;
    let (status, _) = refresh_from(&gate, &idp.mint(), "10.0.0.2").await;
    assert_eq!(status, 200, "another address is not affected");

    // The abandoned exchanges ran to their end: their rotations are remembered.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        gate.metric("refresh_gate_detached_exchanges").await,
        Some(0.0)
    );
    let exchanged = abandoned.iter().filter(|t| idp.calls_for(t) == 1).count();
    assert!(
        exchanged >= 4,
        "{exchanged} abandoned exchanges reached the IdP"
    );
    let replayed = refresh_from(&gate, &abandoned[0], "10.0.0.1").await;
    assert_eq!(
        replayed.0, 200,
        "the first abandoned rotation is remembered"
    );
    assert_eq!(idp.calls_for(&abandoned[0]), 1);
    // Once they ended, the address may start exchanges again.
    assert_eq!(refresh_from(&gate, &idp.mint(), "10.0.0.1").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_wait_or_half_close_are_answered_and_never_counted_as_gone() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(600));
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(300))
        .max_replay_delay(ms(100))
        .exchange_timeout(secs(5));
    let gate = GateProcess::start(&options).await;
    // A client that waits its whole request_timeout is answered (504), not detached.
    let (status, _) = refresh_from(&gate, &idp.mint(), "127.0.0.1").await;
    assert_eq!(status, 504);
    assert_eq!(
        gate.metric("refresh_gate_detached_exchanges").await,
        Some(0.0)
    );

    // A client that half-closes after its request still reads its answer.
    idp.set_latency(Duration::from_millis(100));
    let token = idp.mint();
    let body = refresh_body(&token);
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        basic("k", "secret"),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"), "{answer}");
}
