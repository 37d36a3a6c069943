//! Configuration reload on SIGHUP: safe changes apply at once and keep every remembered
//! token; changes that need a restart are refused with a clear log line.

use crate::common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_longer_grace_period_applies_on_sighup_and_keeps_the_tombstones() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).grace_period(ms(300));
    let gate = GateProcess::start(&options).await;
    let before = idp.mint();
    assert_eq!(refresh(&gate, &before, "k").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        refresh(&gate, &before, "k").await.0,
        400,
        "the 300 ms window passed"
    );

    gate.reconfigure(|config| config.rotation.grace_period = secs(3));
    gate.signal("HUP");
    gate.wait_for_log("configuration reloaded").await;

    let after = idp.mint();
    assert_eq!(refresh(&gate, &after, "k").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        refresh(&gate, &after, "k").await.0,
        200,
        "the new 3 s window applies"
    );
    // The tombstone from before the reload still refuses its token: nothing was forgotten.
    assert_eq!(refresh(&gate, &before, "k").await.0, 400);
    assert_eq!(idp.calls_for(&before), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_that_need_a_restart_are_refused_with_a_clear_line() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    gate.reconfigure(|config| {
        config.rotation.max_tombstones = 5;
        config.listen.address = Some("127.0.0.1:1".parse().unwrap());
    });
    gate.signal("HUP");
    let log = gate.wait_for_log("need a restart").await;
    let line = log.lines().find(|l| l.contains("need a restart")).unwrap();
    assert!(
        line.contains("listen") && line.contains("rotation.max_tombstones"),
        "{line}"
    );
    assert_eq!(
        refresh(&gate, &idp.mint(), "k").await.0,
        200,
        "still serving where it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_file_on_reload_keeps_the_running_configuration() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    gate.reconfigure(|config| config.rotation.grace_period = secs(3600));
    gate.signal("HUP");
    let log = gate.wait_for_log("configuration not reloaded").await;
    assert!(log.contains("rotation.grace_period"), "{log}");
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    assert_eq!(
        refresh(&gate, &token, "k").await.0,
        200,
        "the 5 s window still applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_file_is_reloaded_without_a_signal() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).grace_period(ms(300));
    let gate = GateProcess::start(&options).await;
    // Kubernetes updates a mounted ConfigMap in place; the gate notices within ~10 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    gate.reconfigure(|config| config.rotation.grace_period = secs(3));
    for _ in 0..150 {
        if gate.log().contains("configuration reloaded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gate.log().contains("configuration reloaded"),
        "not reloaded within 15 s"
    );
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        refresh(&gate, &token, "k").await.0,
        200,
        "the new window applies"
    );
}
