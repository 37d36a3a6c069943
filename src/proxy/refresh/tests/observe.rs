//! Observe mode in the handler: every grant forwarded, the would-be decision counted beside
//! the IdP's answer, nothing answered from (or dependent on) the store, and the switch to
//! enforce starting from enforce's own state.

use super::*;
use crate::policy::observe::Mode;

fn observing(f: &Fixture) {
    let mut policy = f.handler.policy().as_ref().clone();
    policy.defaults.mode = Mode::Observe;
    f.handler.set_policy(policy);
}

fn observed(f: &Fixture, would: &str, idp: &str) -> f64 {
    let text = f.handler.metrics().render();
    let series =
        format!("refresh_gate_observed_refreshes_total{{idp=\"{idp}\",would=\"{would}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(-1.0, |value| value.trim().parse().unwrap())
}

#[tokio::test(start_paused = true)]
async fn every_presentation_is_forwarded_and_its_would_be_decision_counted() {
    // The IdP accepts the first use, accepts a replay inside the window (it does not
    // enforce one-time use) and refuses one after it.
    let f = fixture(FakeIdp::scripted([
        Step::Answer {
            delay: Duration::from_millis(100),
            status: 200,
        },
        Step::Answer {
            delay: Duration::ZERO,
            status: 200,
        },
        Step::Answer {
            delay: Duration::ZERO,
            status: 400,
        },
    ]));
    observing(&f);
    let first = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(
        (first.status(), first.outcome),
        (200, RefreshOutcome::Observed)
    );
    assert_eq!(first.freshness, Freshness::Verbatim);
    f.clock.advance(Duration::from_secs(1));
    let replay = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(
        (replay.status(), replay.outcome),
        (200, RefreshOutcome::Observed)
    );
    assert!(
        body(&replay).contains("at-2"),
        "the IdP's own answer, not a replay"
    );
    f.clock.advance(GRACE);
    let late = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(
        (late.status(), late.outcome),
        (400, RefreshOutcome::Observed)
    );
    assert_eq!(late.refused, None, "observe refuses nothing itself");
    assert_eq!(f.idp.calls(), 3);
    assert_eq!(observed(&f, "forward", "success"), 1.0);
    assert_eq!(observed(&f, "replay", "success"), 1.0);
    assert_eq!(observed(&f, "refuse", "refused"), 1.0);
    assert_eq!(observed(&f, "refuse", "success"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn racing_presentations_are_each_forwarded_and_the_later_would_coalesce() {
    let f = fixture(FakeIdp::scripted([
        Step::Answer {
            delay: Duration::from_millis(300),
            status: 200,
        },
        Step::Answer {
            delay: Duration::from_millis(100),
            status: 400,
        },
    ]));
    observing(&f);
    let handler = f.handler.clone();
    let first =
        tokio::spawn(async move { present(&handler, grant("rt-0", "kubectl", None)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(second.status(), 400, "the IdP's refusal reaches the client");
    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(f.idp.calls(), 2);
    // The session enforce would have saved.
    assert_eq!(observed(&f, "coalesce", "refused"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn observe_forwards_while_the_store_is_down_even_fail_closed() {
    let f = fixture_with(FakeIdp::scripted([]), Some(Arc::new(DownStore)), settings());
    observing(&f);
    let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(
        (reply.status(), reply.outcome),
        (200, RefreshOutcome::Observed)
    );
    assert_eq!(f.idp.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_presenting_clients_mode_applies() {
    let f = fixture(FakeIdp::scripted([]));
    let mut policy = f.handler.policy().as_ref().clone();
    policy.per_client.insert(
        "k9s".to_owned(),
        Rules {
            mode: Mode::Observe,
            ..policy.defaults.clone()
        },
    );
    f.handler.set_policy(policy);
    let observed = present(&f.handler, grant("rt-a", "k9s", None)).await;
    assert_eq!(observed.outcome, RefreshOutcome::Observed);
    let enforced = present(&f.handler, grant("rt-b", "kubectl", None)).await;
    assert_eq!(enforced.outcome, RefreshOutcome::Forwarded);
}

#[tokio::test(start_paused = true)]
async fn switching_to_enforce_neither_replays_nor_refuses_what_observe_saw() {
    let f = fixture(FakeIdp::scripted([]));
    observing(&f);
    for _ in 0..3 {
        let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
        assert_eq!(reply.outcome, RefreshOutcome::Observed);
    }
    let mut policy = f.handler.policy().as_ref().clone();
    policy.defaults.mode = Mode::Enforce;
    f.handler.set_policy(policy);
    // The observe period remembered no answer and tombstoned nothing: enforce sees a first
    // use (the IdP decides it) and from then on decides as always.
    let first = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(first.outcome, RefreshOutcome::Forwarded);
    assert!(body(&first).contains("at-4"));
    let replay = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(replay.outcome, RefreshOutcome::GraceReplay);
    assert!(body(&replay).contains("at-4"));
    assert_eq!(f.idp.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn back_to_enforce_an_answer_remembered_before_the_observe_period_is_never_replayed() {
    let f = fixture(FakeIdp::scripted([]));
    let first = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(first.outcome, RefreshOutcome::Forwarded);
    // Observe for a second: the successor is used at the IdP, which the gate only forwards.
    observing(&f);
    f.clock.advance(Duration::from_millis(500));
    let successor = present(&f.handler, grant("rt-1", "kubectl", None)).await;
    assert_eq!(successor.outcome, RefreshOutcome::Observed);
    let mut policy = f.handler.policy().as_ref().clone();
    policy.defaults.mode = Mode::Enforce;
    f.clock.advance(Duration::from_millis(500));
    f.handler.set_policy(policy);
    // Still inside rt-0's window, but its answer (rt-1) was superseded at the IdP.
    f.clock.advance(Duration::from_millis(100));
    let stale = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(stale.refused, Some(RefusalReason::Superseded));
    assert!(!body(&stale).contains("rt-1"));
}

#[tokio::test(start_paused = true)]
async fn an_exchange_outlives_a_client_that_gave_up_and_its_rotation_is_recorded() {
    // The IdP answers after the client's request_timeout.
    let f = fixture(FakeIdp::scripted([Step::Answer {
        delay: REQUEST_TIMEOUT + Duration::from_secs(1),
        status: 200,
    }]));
    observing(&f);
    let gave_up = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(
        (gave_up.status(), gave_up.outcome),
        (504, RefreshOutcome::Observed)
    );
    // The exchange ran on and rotated the token; the retry is one enforce would replay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retry = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(retry.outcome, RefreshOutcome::Observed);
    assert_eq!(observed(&f, "forward", "success"), 1.0);
    assert_eq!(observed(&f, "replay", "success"), 1.0);
}
