//! The memory store under concurrency, driven directly (no sockets): one claim however
//! many presentations race, waiters woken with the outcome, the reuse cap never exceeded,
//! evictions counted.

use refresh_gate::clock::{ManualClock, UnixMillis};
use refresh_gate::http::answer::Answer;
use refresh_gate::oauth::credentials::ClientIdentity;
use refresh_gate::policy::{OnReplay, Policy, Presenter, RefusalReason, Rules};
use refresh_gate::seal::envelope::SealedAnswer;
use refresh_gate::seal::fingerprint::{Fingerprinter, TokenFingerprint};
use refresh_gate::seal::secret::RefreshToken;
use refresh_gate::store::{
    AfterWait, ExchangeOutcome, MemoryStore, MemoryStoreLimits, Presented, Released, StoreError,
    TokenRecord, TokenStore,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn store(max_tombstones: u64) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(
        &MemoryStoreLimits {
            tombstone_ttl: Duration::from_secs(900),
            max_tombstones,
            max_in_flight: 1000,
        },
        Arc::new(ManualClock::new(NOW)),
    ))
}

/// Present a token the store must refuse; the refusal.
async fn refused(
    store: &MemoryStore,
    token: &TokenFingerprint,
    who: &Presenter<'_>,
    policy: &Policy,
    at: UnixMillis,
) -> refresh_gate::store::Refusal {
    match store.present(token, who, policy, at).await.unwrap() {
        Presented::Refused(refusal) => refusal,
        other => panic!("not refused: {other:?}"),
    }
}

fn client() -> ClientIdentity {
    ClientIdentity {
        client_id: "kubernetes".into(),
        secret: None,
    }
}

fn source() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn fingerprint(token: &str) -> (RefreshToken, TokenFingerprint) {
    let token = RefreshToken::new(token);
    let fp = Fingerprinter::new(&[5u8; 32]).token(&token);
    (token, fp)
}

fn rotated(token: &RefreshToken, fp: TokenFingerprint) -> ExchangeOutcome {
    rotated_into(token, fp, None)
}

fn rotated_into(
    token: &RefreshToken,
    family: TokenFingerprint,
    successor: Option<TokenFingerprint>,
) -> ExchangeOutcome {
    let answer = Answer {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: bytes::Bytes::from_static(b"{\"access_token\":\"a\"}"),
    };
    ExchangeOutcome::Rotated {
        record: Arc::new(TokenRecord::new(NOW, client(), source(), None, family)),
        answer: Arc::new(SealedAnswer::seal(token, &answer)),
        successor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_presentations_make_exactly_one_claim() {
    let store = store(1000);
    let (_, fp) = fingerprint("rt-race");
    let policy = Policy::default();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                let c = client();
                let who = Presenter {
                    client: &c,
                    source: source(),
                };
                match store.present(&fp, &who, &policy, NOW).await.unwrap() {
                    Presented::Claimed { .. } => (1, 0),
                    Presented::Wait(w) => (0, w.slot),
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut claims = 0;
    let mut slots = Vec::new();
    for task in tasks {
        let (claim, slot) = task.await.unwrap();
        claims += claim;
        if claim == 0 {
            slots.push(slot);
        }
    }
    assert_eq!(claims, 1);
    slots.sort();
    assert_eq!(
        slots,
        (1..=199).collect::<Vec<_>>(),
        "every waiter has its own slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_are_woken_with_the_outcome_and_the_cap_holds() {
    let store = store(1000);
    let (token, fp) = fingerprint("rt-wake");
    let policy = Policy::uniform(Rules {
        max_reuses: 7,
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    assert!(matches!(
        store.present(&fp, &who, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let mut waiters = Vec::new();
    for _ in 0..20 {
        match store.present(&fp, &who, &policy, NOW).await.unwrap() {
            Presented::Wait(w) => waiters.push(w),
            other => panic!("unexpected {other:?}"),
        }
    }
    store
        .complete(&fp, rotated(&token, fp), &policy)
        .await
        .unwrap();
    assert_eq!(store.in_flight_count(), 0);
    let tasks: Vec<_> = waiters
        .into_iter()
        .map(|w| {
            let store = store.clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                let Ok(Some(ExchangeOutcome::Rotated { record, .. })) = w.outcome.await else {
                    panic!("not rotated")
                };
                let c = client();
                let who = Presenter {
                    client: &c,
                    source: source(),
                };
                store
                    .decide_after_wait(&fp, &record, &who, &policy, NOW)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut replays = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            AfterWait::Replay(_) => replays += 1,
            AfterWait::Refuse(refusal) if refusal.reason == RefusalReason::ReuseLimit => {
                refused += 1
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((replays, refused), (7, 13), "exactly max_reuses replays");
    // A later presentation sees the tombstone and the exhausted cap.
    match store.present(&fp, &who, &policy, NOW).await.unwrap() {
        Presented::Refused(refusal) => assert_eq!(refusal.reason, RefusalReason::ReuseLimit),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_released_claim_lets_the_next_presentation_claim_again() {
    let store = store(1000);
    let (_, fp) = fingerprint("rt-release");
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    assert!(matches!(
        store.present(&fp, &who, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = store.present(&fp, &who, &policy, NOW).await.unwrap() else {
        panic!("not waiting")
    };
    store
        .complete(
            &fp,
            ExchangeOutcome::Released(Released::Unreachable),
            &policy,
        )
        .await
        .unwrap();
    assert!(matches!(
        waiter.outcome.await.unwrap(),
        Some(ExchangeOutcome::Released(Released::Unreachable))
    ));
    assert!(matches!(
        store.present(&fp, &who, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
}

#[tokio::test]
async fn replay_inside_and_after_the_window() {
    let store = store(1000);
    let (token, fp) = fingerprint("rt-window");
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    store.present(&fp, &who, &policy, NOW).await.unwrap();
    store
        .complete(&fp, rotated(&token, fp), &policy)
        .await
        .unwrap();
    let inside = NOW.plus(policy.defaults.grace_period - Duration::from_millis(1));
    let Presented::Replay { answer, .. } = store.present(&fp, &who, &policy, inside).await.unwrap()
    else {
        panic!("not a replay")
    };
    assert_eq!(answer.open(&token).unwrap().status, 200);
    let after = NOW.plus(policy.defaults.grace_period);
    match store.present(&fp, &who, &policy, after).await.unwrap() {
        Presented::Refused(refusal) => assert_eq!(refusal.reason, RefusalReason::AfterGrace),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_full_store_evicts_the_oldest_and_counts_it() {
    let store = store(100);
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    for n in 0..1000 {
        let (token, fp) = fingerprint(&format!("rt-flood-{n}"));
        store.present(&fp, &who, &policy, NOW).await.unwrap();
        store
            .complete(&fp, rotated(&token, fp), &policy)
            .await
            .unwrap();
    }
    store.run_maintenance();
    assert!(
        store.tombstone_count() <= 100,
        "{}",
        store.tombstone_count()
    );
    assert!(store.eviction_count() >= 900, "{}", store.eviction_count());
    // The newest token is still protected.
    let (_, newest) = fingerprint("rt-flood-999");
    assert!(matches!(
        store.present(&newest, &who, &policy, NOW).await.unwrap(),
        Presented::Replay { .. }
    ));
}

#[tokio::test]
async fn a_late_replay_under_revoke_family_blocks_every_member() {
    let store = store(1000);
    let policy = Policy::uniform(Rules {
        on_replay: OnReplay::RevokeFamily,
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let (t0, fp0) = fingerprint("rt-family-0");
    let (t1, fp1) = fingerprint("rt-family-1");
    let (_, fp2) = fingerprint("rt-family-2");
    // t0 -> t1 -> t2: one family rooted at t0.
    let Presented::Claimed { family } = store.present(&fp0, &who, &policy, NOW).await.unwrap()
    else {
        panic!("not claimed")
    };
    assert_eq!(family, fp0);
    store
        .complete(&fp0, rotated_into(&t0, fp0, Some(fp1)), &policy)
        .await
        .unwrap();
    let Presented::Claimed { family } = store.present(&fp1, &who, &policy, NOW).await.unwrap()
    else {
        panic!("not claimed")
    };
    assert_eq!(family, fp0, "the successor joined the family");
    store
        .complete(&fp1, rotated_into(&t1, fp0, Some(fp2)), &policy)
        .await
        .unwrap();

    // t0 replayed after the window: refused, and the family is revoked.
    let late = NOW.plus(std::time::Duration::from_secs(60));
    let refusal = refused(&store, &fp0, &who, &policy, late).await;
    assert_eq!(refusal.reason, RefusalReason::AfterGrace);
    assert!(refusal.revoked_family);
    // The newest token, never presented yet, is refused without an exchange.
    let refusal = refused(&store, &fp2, &who, &policy, late).await;
    assert_eq!(refusal.reason, RefusalReason::FamilyRevoked);
    assert!(refusal.record.is_none());
    // And t1, inside its own window, is refused too.
    let refusal = refused(&store, &fp1, &who, &policy, NOW).await;
    assert_eq!(refusal.reason, RefusalReason::FamilyRevoked);
}

#[tokio::test]
async fn under_refuse_a_late_replay_revokes_nothing() {
    let store = store(1000);
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let (t0, fp0) = fingerprint("rt-keep-0");
    let (_, fp1) = fingerprint("rt-keep-1");
    store.present(&fp0, &who, &policy, NOW).await.unwrap();
    store
        .complete(&fp0, rotated_into(&t0, fp0, Some(fp1)), &policy)
        .await
        .unwrap();
    let late = NOW.plus(std::time::Duration::from_secs(60));
    let refusal = refused(&store, &fp0, &who, &policy, late).await;
    assert!(!refusal.revoked_family);
    assert!(matches!(
        store.present(&fp1, &who, &policy, late).await.unwrap(),
        Presented::Claimed { .. }
    ));
}

#[tokio::test]
async fn remembered_answers_leave_memory_with_their_window() {
    let store = store(10_000);
    let policy = Policy::uniform(Rules {
        grace_period: Duration::from_secs(5),
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    for n in 0..3000 {
        let (token, fp) = fingerprint(&format!("rt-window-{n}"));
        store.present(&fp, &who, &policy, NOW).await.unwrap();
        store
            .complete(&fp, rotated(&token, fp), &policy)
            .await
            .unwrap();
    }
    assert_eq!(store.answer_count(), 3000);
    store.sweep(NOW.plus(Duration::from_millis(4_999)));
    assert_eq!(store.answer_count(), 3000, "inside the window nothing goes");
    store.sweep(NOW.plus(Duration::from_secs(5)));
    assert_eq!(store.answer_count(), 0, "every answer left with its window");
    // The tombstones stay: a replay is now refused, not forwarded.
    let (_, fp) = fingerprint("rt-window-7");
    let refusal = refused(&store, &fp, &who, &policy, NOW.plus(Duration::from_secs(6))).await;
    assert_eq!(refusal.reason, RefusalReason::AfterGrace);
}

#[tokio::test]
async fn each_presentation_sweeps_a_few_expired_answers() {
    let store = store(10_000);
    let policy = Policy::uniform(Rules {
        grace_period: Duration::from_secs(5),
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    for n in 0..320 {
        let (token, fp) = fingerprint(&format!("rt-wave-{n}"));
        store.present(&fp, &who, &policy, NOW).await.unwrap();
        store
            .complete(&fp, rotated(&token, fp), &policy)
            .await
            .unwrap();
    }
    // The window has passed for all 320: no background, only the requests sweep them, a
    // bounded few each.
    let later = NOW.plus(Duration::from_secs(6));
    let (_, unknown) = fingerprint("rt-wave-new-0");
    store.present(&unknown, &who, &policy, later).await.ok();
    let after_one = store.answer_count();
    assert!(
        (320 - 64..320).contains(&after_one),
        "one presentation swept a few, not the wave: {after_one} left"
    );
    for n in 1..40 {
        let (_, unknown) = fingerprint(&format!("rt-wave-new-{n}"));
        store.present(&unknown, &who, &policy, later).await.ok();
    }
    assert_eq!(
        store.answer_count(),
        0,
        "the requests that follow sweep the wave"
    );
}

#[tokio::test]
async fn a_waiter_learns_who_claimed_the_exchange() {
    let store = store(100);
    let (_, fp) = fingerprint("rt-claimant");
    let policy = Policy::default();
    let claimant = ClientIdentity {
        client_id: "kubernetes".into(),
        secret: Some(refresh_gate::seal::fingerprint::SecretFingerprint([9; 16])),
    };
    let other = client();
    let first = Presenter {
        client: &claimant,
        source: source(),
    };
    let second = Presenter {
        client: &other,
        source: source(),
    };
    assert!(matches!(
        store.present(&fp, &first, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = store.present(&fp, &second, &policy, NOW).await.unwrap() else {
        panic!("not waiting")
    };
    assert_eq!(waiter.claimant, Some(claimant));
}

/// t0 rotated into t1 at `NOW` (the family rooted at t0); returns both.
async fn chain(
    store: &MemoryStore,
    policy: &Policy,
    name: &str,
) -> (
    (RefreshToken, TokenFingerprint),
    (RefreshToken, TokenFingerprint),
) {
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let (t0, fp0) = fingerprint(&format!("{name}-0"));
    let (t1, fp1) = fingerprint(&format!("{name}-1"));
    assert!(matches!(
        store.present(&fp0, &who, policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    store
        .complete(&fp0, rotated_into(&t0, fp0, Some(fp1)), policy)
        .await
        .unwrap();
    ((t0, fp0), (t1, fp1))
}

#[tokio::test]
async fn the_successors_first_use_closes_its_parent_after_min_replay_window() {
    let store = store(1000);
    // Under revoke-family: a superseded replay must still revoke nothing.
    let policy = Policy::uniform(Rules {
        on_replay: OnReplay::RevokeFamily,
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let ((_, fp0), (_, fp1)) = chain(&store, &policy, "rt-superseded").await;
    // The first client presents the successor 100 ms after the rotation.
    let used = NOW.plus(Duration::from_millis(100));
    assert!(matches!(
        store.present(&fp1, &who, &policy, used).await.unwrap(),
        Presented::Claimed { .. }
    ));
    // A slower process still holding t0 gets the answer until min_replay_window (2 s).
    let last_open = NOW.plus(Duration::from_millis(1_999));
    assert!(matches!(
        store.present(&fp0, &who, &policy, last_open).await.unwrap(),
        Presented::Replay { .. }
    ));
    let closed = NOW.plus(policy.defaults.min_replay_window);
    let refusal = refused(&store, &fp0, &who, &policy, closed).await;
    assert_eq!(refusal.reason, RefusalReason::Superseded);
    assert!(!refusal.revoked_family, "superseded never revokes");
    // The family lives on: the successor's exchange is still the caller's.
    assert_eq!(store.in_flight_count(), 1);
}

#[tokio::test]
async fn a_successor_used_after_min_replay_window_closes_its_parent_at_once() {
    let store = store(1000);
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let ((_, fp0), (_, fp1)) = chain(&store, &policy, "rt-superseded-late").await;
    let used = NOW.plus(Duration::from_secs(3));
    assert!(matches!(
        store.present(&fp0, &who, &policy, used).await.unwrap(),
        Presented::Replay { .. }
    ));
    assert!(matches!(
        store.present(&fp1, &who, &policy, used).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let refusal = refused(&store, &fp0, &who, &policy, used).await;
    assert_eq!(refusal.reason, RefusalReason::Superseded);
}

#[tokio::test]
async fn without_close_on_successor_use_the_parent_stays_replayable() {
    let store = store(1000);
    let policy = Policy::uniform(Rules {
        close_on_successor_use: false,
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let ((_, fp0), (_, fp1)) = chain(&store, &policy, "rt-superseded-off").await;
    store.present(&fp1, &who, &policy, NOW).await.unwrap();
    let inside = NOW.plus(Duration::from_secs(4));
    assert!(matches!(
        store.present(&fp0, &who, &policy, inside).await.unwrap(),
        Presented::Replay { .. }
    ));
}

#[tokio::test]
async fn waiters_joined_before_the_successors_use_keep_the_open_window() {
    let store = store(1000);
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let (t0, fp0) = fingerprint("rt-waiter-0");
    let (_, fp1) = fingerprint("rt-waiter-1");
    assert!(matches!(
        store.present(&fp0, &who, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = store.present(&fp0, &who, &policy, NOW).await.unwrap() else {
        panic!("not waiting")
    };
    store
        .complete(&fp0, rotated_into(&t0, fp0, Some(fp1)), &policy)
        .await
        .unwrap();
    let Some(ExchangeOutcome::Rotated { record, .. }) = waiter.outcome.await.unwrap() else {
        panic!("not rotated")
    };
    // The first client moves on at once; the waiter is decided late (a slow release).
    assert!(matches!(
        store.present(&fp1, &who, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let late = NOW.plus(Duration::from_millis(2_500));
    assert!(matches!(
        store
            .decide_after_wait(&fp0, &record, &who, &policy, late)
            .await
            .unwrap(),
        AfterWait::Replay(_)
    ));
    // A new presentation at the same moment is no waiter: superseded.
    let refusal = refused(&store, &fp0, &who, &policy, late).await;
    assert_eq!(refusal.reason, RefusalReason::Superseded);
}

#[tokio::test]
async fn close_window_refuses_later_replays_of_the_token_and_its_family_as_revoked() {
    let store = store(1000);
    let policy = Policy::uniform(Rules {
        on_replay: OnReplay::RevokeFamily,
        close_on_successor_use: false,
        ..Rules::default()
    });
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    // t0 -> t1 -> t2; t2 never presented.
    let ((_, fp0), (t1, fp1)) = chain(&store, &policy, "rt-revoke").await;
    let (_, fp2) = fingerprint("rt-revoke-2");
    store.present(&fp1, &who, &policy, NOW).await.unwrap();
    store
        .complete(&fp1, rotated_into(&t1, fp0, Some(fp2)), &policy)
        .await
        .unwrap();
    // The client revokes t1 at the IdP through the gate, 1 s after the rotations.
    let at = NOW.plus(Duration::from_secs(1));
    store
        .close_window(&fp1, RefusalReason::Revoked, at)
        .await
        .unwrap();
    // A replay decided before the revocation was answered.
    assert!(matches!(
        store
            .present(&fp0, &who, &policy, NOW.plus(Duration::from_millis(999)))
            .await
            .unwrap(),
        Presented::Replay { .. }
    ));
    for fp in [fp1, fp0] {
        let refusal = refused(&store, &fp, &who, &policy, at).await;
        assert_eq!(refusal.reason, RefusalReason::Revoked);
        assert!(!refusal.revoked_family, "the IdP revoked already");
        // After the window too: still revoked, never after_grace (no second revocation).
        let late = NOW.plus(Duration::from_secs(60));
        let refusal = refused(&store, &fp, &who, &policy, late).await;
        assert_eq!(refusal.reason, RefusalReason::Revoked);
        assert!(!refusal.revoked_family);
    }
    // The never-presented newest token is the IdP's to judge.
    assert!(matches!(
        store.present(&fp2, &who, &policy, at).await.unwrap(),
        Presented::Claimed { .. }
    ));
}

#[tokio::test]
async fn revoking_the_unused_newest_token_closes_its_family_and_its_waiters() {
    let store = store(1000);
    let policy = Policy::default();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let ((_, fp0), (_, fp1)) = chain(&store, &policy, "rt-revoke-newest").await;
    // Unknown to the gate but as t0's successor: closes t0.
    store
        .close_window(&fp1, RefusalReason::Revoked, NOW)
        .await
        .unwrap();
    let refusal = refused(&store, &fp0, &who, &policy, NOW).await;
    assert_eq!(refusal.reason, RefusalReason::Revoked);
    // A token the store knows nothing of closes nothing (and is no error).
    let (_, stranger) = fingerprint("rt-revoke-stranger");
    store
        .close_window(&stranger, RefusalReason::Revoked, NOW)
        .await
        .unwrap();

    // A waiter decided after a revocation of its token is refused too.
    let (t5, fp5) = fingerprint("rt-revoke-waited");
    store.present(&fp5, &who, &policy, NOW).await.unwrap();
    let Presented::Wait(waiter) = store.present(&fp5, &who, &policy, NOW).await.unwrap() else {
        panic!("not waiting")
    };
    store
        .complete(&fp5, rotated_into(&t5, fp5, None), &policy)
        .await
        .unwrap();
    let Some(ExchangeOutcome::Rotated { record, .. }) = waiter.outcome.await.unwrap() else {
        panic!("not rotated")
    };
    store
        .close_window(&fp5, RefusalReason::Revoked, NOW)
        .await
        .unwrap();
    let AfterWait::Refuse(refusal) = store
        .decide_after_wait(&fp5, &record, &who, &policy, NOW)
        .await
        .unwrap()
    else {
        panic!("replayed after the revocation")
    };
    assert_eq!(refusal.reason, RefusalReason::Revoked);
}

#[tokio::test]
async fn first_sighting_is_true_once_then_false_until_its_ttl() {
    let store = store(1000);
    let ttl = Duration::from_secs(60);
    let key = [0x42; 32];
    assert!(store.first_sighting(&key, ttl, NOW).await.unwrap());
    assert!(!store.first_sighting(&key, ttl, NOW).await.unwrap());
    let last = NOW.plus(Duration::from_millis(59_999));
    assert!(!store.first_sighting(&key, ttl, last).await.unwrap());
    assert!(store.first_sighting(&[0x43; 32], ttl, last).await.unwrap());
    assert!(
        store
            .first_sighting(&key, ttl, NOW.plus(ttl))
            .await
            .unwrap(),
        "expired: a new sighting"
    );
    assert_eq!(store.one_time_key_count(), 2);
}

#[tokio::test]
async fn a_memory_store_full_of_one_time_keys_fails_closed() {
    let store = store(1000);
    let ttl = Duration::from_secs(60);
    for n in 0..refresh_gate::store::MAX_ONE_TIME_KEYS as u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        assert!(store.first_sighting(&key, ttl, NOW).await.unwrap());
    }
    let result = store.first_sighting(&[0xff; 32], ttl, NOW).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    // A key already held is still refused as seen, and room returns with the TTL.
    assert!(!store.first_sighting(&[0; 32], ttl, NOW).await.unwrap());
    assert!(store
        .first_sighting(&[0xff; 32], ttl, NOW.plus(ttl))
        .await
        .unwrap());
}
