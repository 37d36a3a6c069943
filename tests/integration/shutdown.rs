//! SIGTERM for real: readiness flips at once, a refresh in flight completes with its answer,
//! and new connections are refused once the drain is over.

use crate::common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_in_flight_at_sigterm_completes() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(1500));
    let options = GateConfig::new(idp.url())
        .drain(ms(500))
        .request_timeout(secs(5));
    let gate = std::sync::Arc::new(GateProcess::start(&options).await);
    let token = idp.mint();
    let in_flight = {
        let gate = gate.clone();
        let token = token.clone();
        tokio::spawn(async move { refresh(&gate, &token, "k").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &gate.pid().to_string()])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gate.admin_get("/readyz").await.0, 503);

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        status, 200,
        "the refresh in flight at SIGTERM was lost: {body}"
    );
    assert_eq!(Some(body), idp.answer_for(&token));
    assert!(signalled.elapsed() >= Duration::from_millis(1000));

    // After the drain the listener is closed: new connections are refused.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refused = tokio::net::TcpStream::connect(gate.addr).await.is_err()
        || client().get(gate.url("/livez")).send().await.is_err();
    assert!(refused, "still accepting after the drain");
}
