//! Upstream faults through the real gate: nothing is tombstoned for a failed exchange, and
//! no session is lost because of the gate.

use crate::common;

use common::fault_idp::{Fault, FaultIdp, SLOW};
use common::*;
use std::sync::Arc;
use std::time::Duration;

async fn gate_for(idp: &FaultIdp) -> GateProcess {
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(400))
        .max_replay_delay(ms(100))
        .exchange_timeout(secs(5))
        .grace_period(secs(30));
    GateProcess::start(&options).await
}

fn token(n: usize, fault: Fault) -> String {
    format!("rt-{n}~{}", fault.suffix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_before_the_answer_is_a_502_and_the_retry_succeeds() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    let t = token(1, Fault::ResetBeforeHeaders);
    let (status, body) = refresh(&gate, &t, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (502, "temporarily_unavailable")
    );
    assert_eq!(refresh(&gate, &t, "k").await.0, 200);
    assert_eq!(idp.calls_for(&t), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_mid_body_tombstones_nothing() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    let t = token(2, Fault::ResetMidBody);
    let (status, _) = refresh(&gate, &t, "k").await;
    assert_eq!(status, 502);
    // The IdP rotated but its answer was lost on the wire: the gate tombstoned nothing, so
    // the retry reaches the IdP, whose own rules decide (here: a reused token).
    let (status, body) = refresh(&gate, &t, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(idp.calls_for(&t), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_answer_is_a_504_and_the_late_success_is_remembered() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    let t = token(3, Fault::Slow);
    assert_eq!(refresh(&gate, &t, "k").await.0, 504);
    tokio::time::sleep(SLOW).await;
    let (status, body) = refresh(&gate, &t, "k").await;
    assert_eq!(status, 200);
    assert_eq!(Some(body), idp.rotation_of(&t));
    assert_eq!(idp.calls_for(&t), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_that_is_not_a_token_response_is_passed_through_and_consumes_nothing() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    for fault in [Fault::NotJson, Fault::NoAccessToken] {
        let t = token(4, fault);
        let (status, body) = refresh(&gate, &t, "k").await;
        assert_eq!(status, 200, "{fault:?}");
        assert!(!body.contains("access_token"), "{fault:?}: {body}");
        let (status, body) = refresh(&gate, &t, "k").await;
        assert_eq!(status, 200);
        assert_eq!(
            Some(body),
            idp.rotation_of(&t),
            "{fault:?}: the retry was exchanged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_over_the_cap_is_a_502_and_tombstones_nothing() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    let t = token(5, Fault::Oversize);
    let (status, body) = refresh(&gate, &t, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (502, "temporarily_unavailable")
    );
    assert_eq!(
        refresh(&gate, &t, "k").await.0,
        400,
        "the retry reached the IdP"
    );
    assert_eq!(idp.calls_for(&t), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_is_passed_through_and_the_retry_succeeds() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    let t = token(6, Fault::Unavailable);
    assert_eq!(refresh(&gate, &t, "k").await.0, 503);
    assert_eq!(refresh(&gate, &t, "k").await.0, 200);
}

/// 1,000 exchanges with mixed faults: every token whose exchange failed before the IdP
/// rotated it can still be exchanged, and every token the IdP rotated gets its remembered
/// answer on retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_mixed_faulty_exchanges_lose_no_session() {
    let idp = FaultIdp::start().await;
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(400))
        .max_replay_delay(ms(100))
        .exchange_timeout(secs(5))
        .grace_period(secs(60));
    let gate = Arc::new(GateProcess::start(&options).await);
    let faults = [
        Fault::Ok,
        Fault::Unavailable,
        Fault::ResetBeforeHeaders,
        Fault::NotJson,
        Fault::NoAccessToken,
        Fault::Slow,
    ];
    let tokens: Vec<(String, Fault)> = (0..1000)
        .map(|n| {
            let fault = faults[(n * 7 + n / 13) % faults.len()];
            (token(n, fault), fault)
        })
        .collect();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let run = |tokens: Vec<(String, Fault)>| {
        let gate = gate.clone();
        let semaphore = semaphore.clone();
        async move {
            let tasks: Vec<_> = tokens
                .into_iter()
                .map(|(t, fault)| {
                    let gate = gate.clone();
                    let semaphore = semaphore.clone();
                    tokio::spawn(async move {
                        let _permit = semaphore.acquire().await.unwrap();
                        let (status, body) = refresh(&gate, &t, "k").await;
                        (t, fault, status, body)
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        }
    };
    let first = run(tokens.clone()).await;
    let failed_first = first
        .iter()
        .filter(|r| r.2 != 200 || !r.3.contains("access_token"))
        .count();
    tokio::time::sleep(SLOW + Duration::from_millis(300)).await;
    let retries = run(tokens.clone()).await;
    let mut lost = Vec::new();
    for (t, fault, status, body) in &retries {
        let ok = if fault.rotates() {
            // Rotated at the IdP: the retry gets the remembered answer, from the gate.
            *status == 200 && Some(body) == idp.rotation_of(t).as_ref() && idp.calls_for(t) == 1
        } else {
            // Failed before rotation: the retry was exchanged for real.
            *status == 200 && Some(body) == idp.rotation_of(t).as_ref() && idp.calls_for(t) == 2
        };
        if !ok {
            lost.push(format!(
                "{t} ({fault:?}): {status} calls={}",
                idp.calls_for(t)
            ));
        }
    }
    assert!(
        failed_first > 500,
        "the faults did not happen: {failed_first}"
    );
    assert!(
        lost.is_empty(),
        "{} sessions lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(gate.admin_get("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn informational_answers_before_the_token_response_are_skipped() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    for (n, fault) in [(20, Fault::EarlyHints), (21, Fault::ManyInformational)] {
        let t = token(n, fault);
        let (status, first) = refresh(&gate, &t, "k").await;
        assert_eq!(status, 200, "{fault:?}: {first}");
        assert_eq!(Some(first.clone()), idp.rotation_of(&t), "{fault:?}");
        // The rotation was recorded: a replay gets the same answer, without the IdP.
        let (status, replay) = refresh(&gate, &t, "k").await;
        assert_eq!((status, replay), (200, first), "{fault:?}");
        assert_eq!(idp.calls_for(&t), 1, "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_101_is_an_error_that_holds_no_claim() {
    let idp = FaultIdp::start().await;
    let gate = gate_for(&idp).await;
    let t = token(22, Fault::SwitchingProtocols);
    let (status, body) = refresh(&gate, &t, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (502, "temporarily_unavailable")
    );
    // Claimable again at once: the retry is exchanged (the IdP behaves the second time).
    let started = std::time::Instant::now();
    assert_eq!(refresh(&gate, &t, "k").await.0, 200);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the claim was held"
    );
    assert_eq!(idp.calls_for(&t), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_kind_of_misbehaviour_leaves_a_claim_held_or_a_slot_taken() {
    let idp = FaultIdp::start().await;
    let options = GateConfig::new(idp.url())
        .request_timeout(secs(2))
        .exchange_timeout(secs(5))
        .max_in_flight(2);
    let gate = GateProcess::start(&options).await;
    let faults = [
        Fault::ResetBeforeHeaders,
        Fault::ResetMidBody,
        Fault::SwitchingProtocols,
        Fault::NotJson,
        Fault::NoAccessToken,
        Fault::Oversize,
        Fault::Unavailable,
        Fault::EarlyHints,
        Fault::ManyInformational,
    ];
    for (n, fault) in faults.iter().enumerate() {
        let t = token(100 + n, *fault);
        let busy = "too many refresh exchanges in flight";
        let (_, body) = refresh(&gate, &t, "k").await;
        assert!(!body.contains(busy), "{fault:?}: {body}");
        // Whatever happened, the token is not wedged: it is decided at once.
        let started = std::time::Instant::now();
        let (again, body) = refresh(&gate, &t, "k").await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{fault:?}: the claim was held ({again})"
        );
        assert!(!body.contains(busy), "{fault:?}: {body}");
    }
    // Both in-flight slots are free: two exchanges at once are claimed, not refused.
    let (a, b) = (token(200, Fault::Slow), token(201, Fault::Slow));
    let (first, second) = tokio::join!(refresh(&gate, &a, "k"), refresh(&gate, &b, "k"));
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
}
