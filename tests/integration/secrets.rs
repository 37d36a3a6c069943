//! No raw token ever reaches the gate's output, even at debug level and through refusals,
//! replays, failures and ambiguous requests.

use crate::common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_contains_none_of_the_raw_tokens() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .log_level("trace")
        .grace_period(ms(300));
    let gate = GateProcess::start(&options).await;

    let token = idp.mint();
    refresh(&gate, &token, "k").await; // forwarded
    refresh(&gate, &token, "k").await; // replay
    refresh(&gate, &token, "intruder").await; // refused: client
    tokio::time::sleep(Duration::from_millis(400)).await;
    refresh(&gate, &token, "k").await; // refused: after grace
    idp.fail_next(1);
    let failing = idp.mint();
    refresh(&gate, &failing, "k").await; // upstream failure
    let dup = idp.mint();
    client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={dup}&refresh_token={dup}"
        ))
        .send()
        .await
        .unwrap(); // ambiguous

    let log = gate.log();
    if std::env::var("SHOW_GATE_LOG").is_ok() {
        eprintln!("{log}");
    }
    assert!(
        log.contains("ExpiredRefreshTokenUsed"),
        "audit events are logged"
    );
    let tokens = idp.all_tokens();
    assert!(tokens.len() >= 5, "{tokens:?}");
    let basic_credentials = basic("k", "secret");
    let basic_credentials = basic_credentials.trim_start_matches("Basic ");
    for secret in tokens
        .iter()
        .map(String::as_str)
        .chain(["secret", basic_credentials])
    {
        assert!(!log.contains(secret), "the log contains {secret}");
    }
}
