//! Every answer to its owner: an exchange's outcome that rotated nothing (an IdP error, a
//! non-rotating answer) is handed only to waiters that authenticated as its claimant did;
//! any other waiter presents on its own.

use crate::common;

use common::*;
use std::time::Duration;

async fn post(gate: &GateProcess, token: &str, authorization: Option<String>) -> (u16, String) {
    let mut request = client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(refresh_body(token));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Start `first`, then `second` 50 ms later while the first's exchange is in flight.
async fn race(
    gate: &GateProcess,
    token: &str,
    first: Option<String>,
    second: Option<String>,
) -> ((u16, String), (u16, String)) {
    let lead = post(gate, token, first);
    let follow = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        post(gate, token, second).await
    };
    tokio::join!(lead, follow)
}

async fn gate_for(idp: &FakeIdp) -> GateProcess {
    let options = GateConfig::new(idp.url()).request_timeout(secs(3));
    GateProcess::start(&options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_rotating_answer_is_not_handed_to_a_waiter_without_the_credentials() {
    let idp = FakeIdp::start().await;
    idp.set_mode(IdpMode::NoRotation);
    idp.set_latency(Duration::from_millis(300));
    let gate = gate_for(&idp).await;
    let token = idp.mint();
    let (victim, intruder) = race(&gate, &token, Some(basic("k", "secret")), None).await;
    assert_eq!(victim.0, 200, "{}", victim.1);
    // The intruder joined the victim's exchange but was not handed its answer: it made its
    // own exchange, which the IdP judges by its own client authentication.
    assert_eq!(
        idp.calls_for(&token),
        2,
        "the intruder presented on its own"
    );
    let calls = idp.calls();
    assert!(
        calls
            .iter()
            .any(|c| !c.headers.iter().any(|(name, _)| name == "authorization")),
        "the IdP saw the intruder's own request (no credentials)"
    );
    assert_eq!(
        intruder.0, 200,
        "the fake IdP checks no secret: {}",
        intruder.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_secret_in_front_cannot_spoil_the_real_clients_refresh() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(300));
    idp.fail_next(1);
    let gate = gate_for(&idp).await;
    let token = idp.mint();
    let (wrong, real) = race(
        &gate,
        &token,
        Some(basic("k", "wrong")),
        Some(basic("k", "secret")),
    )
    .await;
    assert_eq!(wrong.0, 503, "the first exchange failed: {}", wrong.1);
    assert_eq!(
        real.0, 200,
        "the real client exchanged on its own: {}",
        real.1
    );
    assert_eq!(idp.calls_for(&token), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_of_the_same_client_still_share_a_failure() {
    let idp = FakeIdp::start().await;
    idp.set_latency(Duration::from_millis(300));
    idp.fail_next(1);
    let gate = gate_for(&idp).await;
    let token = idp.mint();
    let credentials = Some(basic("k", "secret"));
    let (first, second) = race(&gate, &token, credentials.clone(), credentials).await;
    assert_eq!((first.0, second.0), (503, 503));
    assert_eq!(idp.calls_for(&token), 1, "one exchange, its outcome shared");
}
