//! The Redis store driven directly by three store instances (three replicas) on one real
//! redis-server: one claim across replicas, waiters on other replicas woken by pub/sub,
//! the reuse cap held under a compare-and-set, families revoked everywhere, every key with
//! a TTL, and no raw token anywhere in Redis.

use crate::common;

use common::redis_server::RedisServer;
use refresh_gate::clock::{SystemClock, UnixMillis};
use refresh_gate::http::answer::Answer;
use refresh_gate::oauth::credentials::ClientIdentity;
use refresh_gate::policy::{OnReplay, Policy, Presenter, RefusalReason, Rules};
use refresh_gate::seal::envelope::SealedAnswer;
use refresh_gate::seal::fingerprint::{Fingerprinter, TokenFingerprint};
use refresh_gate::seal::secret::RefreshToken;
use refresh_gate::store::{
    AfterWait, ExchangeOutcome, Presented, RedisStore, RedisStoreConfig, RedisTopology, Released,
    Replication, TokenRecord, TokenStore,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const NOW: UnixMillis = UnixMillis(1_800_000_000_000);
const ACCESS_TOKEN: &str = "AT-plaintext-access-token";

fn replicas(redis: &RedisServer, count: usize) -> Vec<Arc<RedisStore>> {
    (0..count)
        .map(|_| store_on(RedisTopology::Single { url: redis.url() }, 0))
        .collect()
}

/// One replica's store on `topology` (keys under `rg:`), awaiting `wait_replicas`.
pub(crate) fn store_on(topology: RedisTopology, wait_replicas: u32) -> Arc<RedisStore> {
    store_timed(topology, wait_replicas, Duration::from_secs(2))
}

/// The same with `timeout` on each store operation.
fn store_timed(topology: RedisTopology, wait_replicas: u32, timeout: Duration) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(
            &RedisStoreConfig {
                topology,
                tls: false,
                wait_replicas,
                // Long enough that a loaded machine's replica still acknowledges in time
                // (the tests that want a miss have no replica to acknowledge).
                wait_timeout: Duration::from_secs(1),
                username: None,
                password: None,
                ca_pem: None,
                key_prefix: "rg:".to_owned(),
                timeout,
                tombstone_ttl: Duration::from_secs(900),
                claim_ttl: Duration::from_secs(10),
                max_in_flight: 1000,
            },
            Arc::new(SystemClock),
        )
        .unwrap(),
    )
}

pub(crate) fn client() -> ClientIdentity {
    ClientIdentity {
        client_id: "kubernetes".into(),
        secret: None,
    }
}

pub(crate) fn source() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

pub(crate) fn fingerprint(token: &str) -> (RefreshToken, TokenFingerprint) {
    let token = RefreshToken::new(token);
    let fp = Fingerprinter::new(&[5u8; 32]).token(&token);
    (token, fp)
}

pub(crate) fn answer() -> Answer {
    Answer {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: bytes::Bytes::from(format!(
            "{{\"access_token\":\"{ACCESS_TOKEN}\",\"refresh_token\":\"RT-next-secret\"}}"
        )),
    }
}

pub(crate) fn rotated_into(
    token: &RefreshToken,
    family: TokenFingerprint,
    successor: Option<TokenFingerprint>,
) -> ExchangeOutcome {
    ExchangeOutcome::Rotated {
        record: Arc::new(TokenRecord::new(NOW, client(), source(), None, family)),
        answer: Arc::new(SealedAnswer::seal(token, &answer())),
        successor,
    }
}

pub(crate) async fn present(
    store: &RedisStore,
    fp: &TokenFingerprint,
    policy: &Policy,
) -> Presented {
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    store.present(fp, &who, policy, NOW).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_claim_across_replicas_and_waiters_everywhere_get_the_outcome() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 3);
    let replication = one_claim_and_waiters_everywhere(&stores, "rt-race").await;
    assert_eq!(
        replication,
        Replication::NotAsked,
        "a single server awaits no replica"
    );
}

/// Thirty presentations of one token on `stores` (three replicas of one shared store): one
/// claim, every other presenter waits wherever it is, is woken by the outcome's message
/// (not by the claim's expiry, nor by its own once-a-second check), and exactly `max_reuses` replays are counted across replicas. Returns
/// what came of the rotation's replication acknowledgement.
pub(crate) async fn one_claim_and_waiters_everywhere(
    stores: &[Arc<RedisStore>],
    token: &str,
) -> Replication {
    let (token, fp) = fingerprint(token);
    let policy = Policy::uniform(Rules {
        max_reuses: 7,
        ..Rules::default()
    });
    let tasks: Vec<_> = (0..30)
        .map(|n| {
            let stores_len = stores.len();
            let store = stores[n % stores_len].clone();
            let policy = policy.clone();
            tokio::spawn(async move {
                let presented = present(&store, &fp, &policy).await;
                (n % stores_len, presented)
            })
        })
        .collect();
    let mut claimant = None;
    let mut waiters = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (replica, Presented::Claimed { family }) => {
                assert!(claimant.is_none(), "a second claim");
                assert_eq!(family, fp);
                claimant = Some(replica);
            }
            (replica, Presented::Wait(waiter)) => waiters.push((replica, waiter)),
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    let claimant = claimant.expect("one claim");
    let mut slots: Vec<u32> = waiters.iter().map(|(_, w)| w.slot).collect();
    slots.sort();
    assert_eq!(
        slots,
        (1..=29).collect::<Vec<_>>(),
        "every waiter has its own slot"
    );
    assert!(
        waiters.iter().any(|(replica, _)| *replica != claimant),
        "some waiters are on other replicas"
    );
    // Every waiter checks and settles into its wait before the exchange ends.
    let waiting: Vec<_> = waiters
        .into_iter()
        .map(|(replica, waiter)| (replica, tokio::spawn(waiter.outcome)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replication = stores[claimant]
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    let tasks: Vec<_> = waiting
        .into_iter()
        .map(|(replica, waiting)| {
            let store = stores[replica].clone();
            let policy = policy.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
                    .await
                    .expect("woken long before the claim's expiry")
                    .unwrap()
                    .unwrap();
                let Some(ExchangeOutcome::Rotated { record, answer, .. }) = outcome else {
                    panic!("not rotated: {outcome:?}")
                };
                assert_eq!(answer.open(&token).unwrap(), self::answer());
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
    let mut capped = 0;
    for task in tasks {
        match task.await.unwrap() {
            AfterWait::Replay(_) => replays += 1,
            AfterWait::Refuse(r) if r.reason == RefusalReason::ReuseLimit => capped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (replays, capped),
        (7, 22),
        "exactly max_reuses replays across replicas"
    );
    for store in stores {
        match present(store, &fp, &policy).await {
            Presented::Refused(r) => assert_eq!(r.reason, RefusalReason::ReuseLimit),
            other => panic!("unexpected {other:?}"),
        }
    }
    // A waiter whose once-a-second check falls between the write and its message counts
    // too (rarely); a broken subscription would have all 29 find the end by their checks.
    let unheard: u64 = stores.iter().map(|s| s.health().waits_unheard).sum();
    assert!(
        unheard < 5,
        "{unheard} of 29 waiters found the end by their own check: messages did not wake them"
    );
    replication
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replays_on_three_replicas_never_exceed_the_cap() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 3);
    let (token, fp) = fingerprint("rt-cap");
    let policy = Policy::uniform(Rules {
        max_reuses: 5,
        ..Rules::default()
    });
    assert!(matches!(
        present(&stores[0], &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    stores[0]
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..60)
        .map(|n| {
            let store = stores[n % 3].clone();
            let policy = policy.clone();
            let token = token.clone();
            tokio::spawn(async move {
                match present(&store, &fp, &policy).await {
                    Presented::Replay { answer, record } => {
                        assert_eq!(answer.open(&token).unwrap(), self::answer());
                        Some(record.replays())
                    }
                    Presented::Refused(r) => {
                        assert_eq!(r.reason, RefusalReason::ReuseLimit);
                        None
                    }
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        if let Some(count) = task.await.unwrap() {
            counts.push(count);
        }
    }
    counts.sort();
    assert_eq!(
        counts,
        vec![1, 2, 3, 4, 5],
        "each replay counted once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_claim_reaches_waiters_on_other_replicas_and_can_be_retried() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let (token, fp) = fingerprint("rt-release");
    let policy = Policy::default();
    assert!(matches!(
        present(&stores[0], &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = present(&stores[1], &fp, &policy).await else {
        panic!("not waiting")
    };
    let error = Answer {
        status: 400,
        headers: vec![],
        body: bytes::Bytes::from_static(b"{\"error\":\"invalid_grant\"}"),
    };
    let sealed = Arc::new(SealedAnswer::seal(&token, &error));
    stores[0]
        .complete(
            &fp,
            ExchangeOutcome::Released(Released::Answered {
                answer: sealed,
                success: false,
            }),
            &policy,
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiter.outcome)
        .await
        .unwrap()
        .unwrap();
    match outcome {
        Some(ExchangeOutcome::Released(Released::Answered { answer, success })) => {
            assert!(!success);
            assert_eq!(answer.open(&token).unwrap(), error);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Nothing was tombstoned: the next presentation, anywhere, claims again.
    assert!(matches!(
        present(&stores[1], &fp, &policy).await,
        Presented::Claimed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_window_revokes_the_family_on_every_replica() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 3);
    let policy = Policy::uniform(Rules {
        grace_period: Duration::from_secs(5),
        on_replay: OnReplay::RevokeFamily,
        ..Rules::default()
    });
    let (t1, f1) = fingerprint("rt-family-1");
    let (t2, f2) = fingerprint("rt-family-2");
    let (_, f3) = fingerprint("rt-family-3");
    assert!(
        matches!(present(&stores[0], &f1, &policy).await, Presented::Claimed { family } if family == f1)
    );
    stores[0]
        .complete(&f1, rotated_into(&t1, f1, Some(f2)), &policy)
        .await
        .unwrap();
    // t2 joined t1's family, as any replica sees.
    assert!(
        matches!(present(&stores[1], &f2, &policy).await, Presented::Claimed { family } if family == f1)
    );
    stores[1]
        .complete(&f2, rotated_into(&t2, f1, Some(f3)), &policy)
        .await
        .unwrap();
    // t1 replayed after its window, on the third replica: refused, family revoked.
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let late = NOW.plus(Duration::from_secs(60));
    match stores[2].present(&f1, &who, &policy, late).await.unwrap() {
        Presented::Refused(r) => {
            assert_eq!(r.reason, RefusalReason::AfterGrace);
            assert!(r.revoked_family);
            assert_eq!(r.family, f1);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Every member, on every replica, is refused now; t3 (never presented) too.
    for store in &stores {
        for member in [f2, f3] {
            match store.present(&member, &who, &policy, late).await.unwrap() {
                Presented::Refused(r) => assert_eq!(r.reason, RefusalReason::FamilyRevoked),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_a_ttl_and_redis_holds_no_token() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::uniform(Rules {
        on_replay: OnReplay::RevokeFamily,
        ..Rules::default()
    });
    let (t1, f1) = fingerprint("RT-first-secret-token");
    let (_, f2) = fingerprint("RT-next-secret");
    let (t4, f4) = fingerprint("RT-failing-secret-token");
    assert!(matches!(
        present(&stores[0], &f1, &policy).await,
        Presented::Claimed { .. }
    ));
    let Presented::Wait(_waiter) = present(&stores[1], &f1, &policy).await else {
        panic!("not waiting")
    };
    stores[0]
        .complete(&f1, rotated_into(&t1, f1, Some(f2)), &policy)
        .await
        .unwrap();
    assert!(matches!(
        present(&stores[1], &f4, &policy).await,
        Presented::Claimed { .. }
    ));
    let failure = SealedAnswer::seal(&t4, &answer());
    stores[1]
        .complete(
            &f4,
            ExchangeOutcome::Released(Released::Answered {
                answer: Arc::new(failure),
                success: true,
            }),
            &policy,
        )
        .await
        .unwrap();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let late = NOW.plus(Duration::from_secs(600));
    assert!(matches!(
        stores[1].present(&f1, &who, &policy, late).await.unwrap(),
        Presented::Refused(r) if r.revoked_family
    ));
    stores[0]
        .close_window(&f1, RefusalReason::Revoked, late)
        .await
        .unwrap();
    assert!(stores[0]
        .first_sighting(&[7; 32], Duration::from_secs(60), late)
        .await
        .unwrap());
    let contents = redis.dump();
    let kinds: Vec<&str> = contents
        .keys()
        .map(|k| k.rsplit(':').next().unwrap())
        .collect();
    for expected in [
        "state", "answer", "family", "parent", "released", "revoked", "closed", "once",
    ] {
        assert!(kinds.contains(&expected), "no {expected} key in {kinds:?}");
    }
    for (key, stored) in &contents {
        if key.ends_with(":released") {
            assert!(
                stored.pttl <= 5_000,
                "a released outcome is kept only for its waiters: {key} {}",
                stored.pttl
            );
        }
        assert!(
            key.starts_with("rg:{"),
            "{key} lacks the prefix and hash tag"
        );
        assert!(
            stored.pttl > 0,
            "{key} ({}) has no TTL: {}",
            stored.kind,
            stored.pttl
        );
        for secret in [
            "RT-first-secret-token",
            "RT-next-secret",
            "RT-failing-secret-token",
            ACCESS_TOKEN,
        ] {
            let needle = secret.as_bytes();
            assert!(
                !key.as_bytes().windows(needle.len()).any(|w| w == needle)
                    && !stored.bytes.windows(needle.len()).any(|w| w == needle),
                "{key} holds {secret}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_an_error_and_the_store_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let stores = replicas(&redis, 1);
    let store = &stores[0];
    let policy = Policy::default();
    let (_, fp) = fingerprint("rt-outage");
    store.ping().await.unwrap();
    assert!(store.health().available);
    redis.stop();
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let failed = store.present(&fp, &who, &policy, NOW).await;
    assert!(
        failed.is_err(),
        "present during an outage must fail, got {failed:?}"
    );
    let health = store.health();
    assert!(!health.available);
    assert!(health.errors >= 1);
    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        if let Ok(Presented::Claimed { .. }) = store.present(&fp, &who, &policy, NOW).await {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store did not recover after Redis came back");
    assert!(store.health().available);
}

/// Two replicas on one redis-server, after `late` (300 ms store timeout) claimed a token
/// and failed to write the end of its exchange because Redis was stopped.
struct EndedWhileDown {
    redis: RedisServer,
    late: Arc<RedisStore>,
    /// Another replica (2 s store timeout).
    other: Arc<RedisStore>,
    policy: Policy,
    token: RefreshToken,
    fp: TokenFingerprint,
    /// Just before the failed write.
    ended: std::time::Instant,
}

impl EndedWhileDown {
    async fn start(
        token: &str,
        outcome: impl FnOnce(&RefreshToken, TokenFingerprint) -> ExchangeOutcome,
    ) -> EndedWhileDown {
        let mut redis = RedisServer::start();
        let single = || RedisTopology::Single { url: redis.url() };
        let late = store_timed(single(), 0, Duration::from_millis(300));
        let other = store_on(single(), 0);
        let policy = Policy::default();
        let (token, fp) = fingerprint(token);
        assert!(matches!(
            present(&late, &fp, &policy).await,
            Presented::Claimed { .. }
        ));
        redis.stop();
        let ended = std::time::Instant::now();
        let failed = late.complete(&fp, outcome(&token, fp), &policy).await;
        assert!(failed.is_err(), "Redis is down: {failed:?}");
        assert_eq!(late.health().ends_written_late, 0);
        EndedWhileDown {
            redis,
            late,
            other,
            policy,
            token,
            fp,
            ended,
        }
    }

    /// Wait until `late` has written the end again (5 s at most).
    async fn until_written_late(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.late.health().ends_written_late == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the end was not written again within 5 s of Redis coming back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A rotation Redis did not take (the server was down when the IdP answered) is written
/// again once Redis is back, before the claim's expiry: a presentation afterwards, on any
/// replica, is a replay of the same answer, never a second claim (a second exchange).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_redis_did_not_take_is_written_once_it_is_back() {
    let mut s =
        EndedWhileDown::start("rt-written-late", |token, fp| rotated_into(token, fp, None)).await;
    // Down for a second: the late answer must be kept only for what is left of the window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.redis.restart();
    s.until_written_late().await;
    let left = s.policy.rules_for("kubernetes").grace_period - s.ended.elapsed();
    let answers: Vec<i64> = s
        .redis
        .dump()
        .into_iter()
        .filter(|(key, _)| key.ends_with(":answer"))
        .map(|(_, stored)| stored.pttl)
        .collect();
    assert!(
        // (100 ms for the write's own round trip, counted from before the first try.)
        answers.len() == 1 && answers[0] <= left.as_millis() as i64 + 100,
        "the late answer outlives its window ({} ms left): {answers:?}",
        left.as_millis()
    );
    for store in [&s.other, &s.late] {
        match present(store, &s.fp, &s.policy).await {
            Presented::Replay { answer, .. } => {
                assert_eq!(answer.open(&s.token).unwrap(), self::answer())
            }
            unexpected => panic!("the rotation was lost: {unexpected:?}"),
        }
    }
    assert_eq!(s.late.health().ends_abandoned, 0);
}

/// A release whose write failed is retried only while its claim lives: once the claim is
/// gone (here with Redis's data), another replica may have claimed the token and released
/// it with its own outcome, which the late retry must not overwrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_release_never_overwrites_another_claims_outcome() {
    let mut s = EndedWhileDown::start("rt-released-late", |_, _| {
        ExchangeOutcome::Released(Released::Unreachable)
    })
    .await;
    // The retries back off to a try a second; the other replica's claim and release come
    // between two of them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.redis.restart();
    assert!(matches!(
        present(&s.other, &s.fp, &s.policy).await,
        Presented::Claimed { .. }
    ));
    let error = Answer {
        status: 400,
        headers: vec![],
        body: bytes::Bytes::from_static(b"{\"error\":\"invalid_grant\"}"),
    };
    s.other
        .complete(
            &s.fp,
            ExchangeOutcome::Released(Released::Answered {
                answer: Arc::new(SealedAnswer::seal(&s.token, &error)),
                success: false,
            }),
            &s.policy,
        )
        .await
        .unwrap();
    s.until_written_late().await;
    let released: Vec<_> = s
        .redis
        .dump()
        .into_iter()
        .filter(|(key, _)| key.ends_with(":released"))
        .collect();
    assert_eq!(released.len(), 1, "{released:?}");
    let held = String::from_utf8_lossy(&released[0].1.bytes).into_owned();
    assert!(
        held.contains("answered_error") && !held.contains("unreachable"),
        "the other claim's outcome was overwritten: {held}"
    );
}

/// A write that lands twice (a retry after a reply that was lost) keeps the tombstone the
/// first one wrote: replays counted meanwhile stay counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_a_rotation_again_keeps_its_replay_count() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 1);
    let store = &stores[0];
    let policy = Policy::uniform(Rules {
        max_reuses: 1,
        ..Rules::default()
    });
    let (token, fp) = fingerprint("rt-written-twice");
    assert!(matches!(
        present(store, &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    store
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    assert!(matches!(
        present(store, &fp, &policy).await,
        Presented::Replay { .. }
    ));
    store
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    match present(store, &fp, &policy).await {
        Presented::Refused(refusal) => assert_eq!(refusal.reason, RefusalReason::ReuseLimit),
        unexpected => panic!("the replay count was reset: {unexpected:?}"),
    }
}

/// A waiter's own periodic check that fails in a stall of Redis (the server stopped, its
/// connections open) does not end the wait: once Redis answers again and the exchange ends,
/// the waiter has its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_redis_does_not_end_a_wait() {
    let redis = RedisServer::start();
    let single = || RedisTopology::Single { url: redis.url() };
    let claimant = store_on(single(), 0);
    let waiting_store = store_timed(single(), 0, Duration::from_millis(300));
    let policy = Policy::default();
    let (token, fp) = fingerprint("rt-waiting-through-a-stall");
    assert!(matches!(
        present(&claimant, &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = present(&waiting_store, &fp, &policy).await else {
        panic!("not waiting")
    };
    let waiting = tokio::spawn(waiter.outcome);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Longer than a waiter's longest pause between checks, and than its store timeout.
    redis.pause();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    claimant
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiter has the outcome once Redis answers again")
        .unwrap();
    match outcome {
        Ok(Some(ExchangeOutcome::Rotated { answer, .. })) => {
            assert_eq!(answer.open(&token).unwrap(), self::answer())
        }
        other => panic!("the stall ended the wait: {other:?}"),
    }
    assert!(
        waiting_store.health().errors >= 1,
        "no check failed in the stall"
    );
}

/// A waiter whose exchange's message never comes (here the tombstone appears without one)
/// finds the end by its own check within about a second, long before the claim's 10 s
/// expiry, and counts it in `waits_unheard`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_finds_an_end_whose_message_was_lost() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::default();
    let (_, fp) = fingerprint("rt-message-lost");
    let (elsewhere, fp_elsewhere) = fingerprint("rt-rotated-elsewhere");
    assert!(matches!(
        present(&stores[0], &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = present(&stores[1], &fp, &policy).await else {
        panic!("not waiting")
    };
    let waiting = tokio::spawn(waiter.outcome);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Rotate another token, then move its tombstone onto this one's: nothing is published.
    assert!(matches!(
        present(&stores[0], &fp_elsewhere, &policy).await,
        Presented::Claimed { .. }
    ));
    stores[0]
        .complete(
            &fp_elsewhere,
            rotated_into(&elsewhere, fp_elsewhere, None),
            &policy,
        )
        .await
        .unwrap();
    let state = |fp: &TokenFingerprint| format!("rg:{{{}}}:state", fp.to_hex());
    redis.command::<()>(&["RENAME", &state(&fp_elsewhere), &state(&fp)]);
    let outcome = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the waiter's own check found the end within a second or two")
        .unwrap();
    assert!(
        matches!(outcome, Ok(Some(ExchangeOutcome::Rotated { .. }))),
        "{outcome:?}"
    );
    assert_eq!(stores[1].health().waits_unheard, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_learns_at_once_when_redis_goes_away() {
    let mut redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::default();
    let (_, fp) = fingerprint("rt-waiting-through-an-outage");
    assert!(matches!(
        present(&stores[0], &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = present(&stores[1], &fp, &policy).await else {
        panic!("not waiting")
    };
    let waiting = tokio::spawn(waiter.outcome);
    // Let the waiter subscribe and settle into its wait (the claim lives 10 s).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = std::time::Instant::now();
    redis.stop();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the lost connection woke the waiter, long before the claim's expiry")
        .unwrap();
    assert!(
        outcome.is_err(),
        "an unknown outcome is an error, not a release: {outcome:?}"
    );
    assert!(stopped.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_another_replica_learns_who_claimed_the_exchange() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let (_, fp) = fingerprint("rt-claimant");
    let policy = Policy::default();
    let claimant = ClientIdentity {
        client_id: "kube:netes".into(),
        secret: Some(refresh_gate::seal::fingerprint::SecretFingerprint([9; 16])),
    };
    let first = Presenter {
        client: &claimant,
        source: source(),
    };
    assert!(matches!(
        stores[0].present(&fp, &first, &policy, NOW).await.unwrap(),
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = present(&stores[1], &fp, &policy).await else {
        panic!("not waiting")
    };
    assert_eq!(waiter.claimant, Some(claimant));
    assert_ne!(waiter.claimant, Some(client()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_written_by_an_older_replica_still_makes_its_presenters_wait() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let (_, fp) = fingerprint("rt-old-claim");
    let policy = Policy::default();
    assert!(matches!(
        present(&stores[0], &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    // An older replica's claim has no claimant field.
    let claim = format!("rg:{{{}}}:claim", fp.to_hex());
    let removed: i64 = redis.command(&["HDEL", &claim, "client"]);
    assert_eq!(removed, 1, "the claim names its claimant");
    let Presented::Wait(waiter) = present(&stores[1], &fp, &policy).await else {
        panic!("not waiting: the in-flight token must never be exchanged twice")
    };
    assert_eq!(waiter.claimant, None, "an unknown claimant owns nothing");
}

async fn present_at(
    store: &RedisStore,
    fp: &TokenFingerprint,
    policy: &Policy,
    at: UnixMillis,
) -> Presented {
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    store.present(fp, &who, policy, at).await.unwrap()
}

/// t0 rotated into t1 at `NOW` on `store`.
async fn chain(
    store: &RedisStore,
    policy: &Policy,
    name: &str,
) -> (
    (RefreshToken, TokenFingerprint),
    (RefreshToken, TokenFingerprint),
) {
    let (t0, fp0) = fingerprint(&format!("{name}-0"));
    let (t1, fp1) = fingerprint(&format!("{name}-1"));
    assert!(matches!(
        present(store, &fp0, policy).await,
        Presented::Claimed { .. }
    ));
    store
        .complete(&fp0, rotated_into(&t0, fp0, Some(fp1)), policy)
        .await
        .unwrap();
    ((t0, fp0), (t1, fp1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_claimed_on_one_replica_closes_its_parent_on_every_replica() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::uniform(Rules {
        on_replay: OnReplay::RevokeFamily,
        ..Rules::default()
    });
    let ((_, fp0), (_, fp1)) = chain(&stores[0], &policy, "rt-superseded").await;
    // The successor is presented on replica 1, 100 ms after the rotation.
    let used = NOW.plus(Duration::from_millis(100));
    assert!(matches!(
        present_at(&stores[1], &fp1, &policy, used).await,
        Presented::Claimed { .. }
    ));
    // Replica 0 still replays the parent until min_replay_window, then refuses it.
    let last_open = NOW.plus(Duration::from_millis(1_999));
    assert!(matches!(
        present_at(&stores[0], &fp0, &policy, last_open).await,
        Presented::Replay { .. }
    ));
    let closed = NOW.plus(policy.defaults.min_replay_window);
    for store in &stores {
        let Presented::Refused(refusal) = present_at(store, &fp0, &policy, closed).await else {
            panic!("not refused")
        };
        assert_eq!(refusal.reason, RefusalReason::Superseded);
        assert!(!refusal.revoked_family, "superseded never revokes");
    }
    // Its window closed, the parent's family was not revoked: the successor's exchange
    // completes and its own successor is claimable.
    let (t1, _) = fingerprint("rt-superseded-1");
    let (_, fp2) = fingerprint("rt-superseded-2");
    stores[1]
        .complete(&fp1, rotated_into(&t1, fp0, Some(fp2)), &policy)
        .await
        .unwrap();
    assert!(matches!(
        present_at(&stores[0], &fp2, &policy, closed).await,
        Presented::Claimed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_close_on_successor_use_no_replica_closes_the_parent() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::uniform(Rules {
        close_on_successor_use: false,
        ..Rules::default()
    });
    let ((_, fp0), (_, fp1)) = chain(&stores[0], &policy, "rt-superseded-off").await;
    present_at(&stores[1], &fp1, &policy, NOW).await;
    let inside = NOW.plus(Duration::from_secs(4));
    assert!(matches!(
        present_at(&stores[0], &fp0, &policy, inside).await,
        Presented::Replay { .. }
    ));
    // Turned on by a reload: a successor presented from now on closes its parent.
    let on = Policy::default();
    let ((_, fp3), (_, fp4)) = chain(&stores[0], &on, "rt-superseded-on").await;
    present_at(&stores[1], &fp4, &on, NOW).await;
    assert!(matches!(
        present_at(&stores[0], &fp3, &on, inside).await,
        Presented::Refused(r) if r.reason == RefusalReason::Superseded
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_another_replica_keeps_the_open_window_after_the_successors_use() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::default();
    let (t0, fp0) = fingerprint("rt-waiter-0");
    let (_, fp1) = fingerprint("rt-waiter-1");
    assert!(matches!(
        present(&stores[0], &fp0, &policy).await,
        Presented::Claimed { .. }
    ));
    let Presented::Wait(waiter) = present(&stores[1], &fp0, &policy).await else {
        panic!("not waiting")
    };
    stores[0]
        .complete(&fp0, rotated_into(&t0, fp0, Some(fp1)), &policy)
        .await
        .unwrap();
    let Some(ExchangeOutcome::Rotated { record, .. }) = waiter.outcome.await.unwrap() else {
        panic!("not rotated")
    };
    assert!(matches!(
        present(&stores[0], &fp1, &policy).await,
        Presented::Claimed { .. }
    ));
    let c = client();
    let who = Presenter {
        client: &c,
        source: source(),
    };
    let late = NOW.plus(Duration::from_millis(2_500));
    assert!(matches!(
        stores[1]
            .decide_after_wait(&fp0, &record, &who, &policy, late)
            .await
            .unwrap(),
        AfterWait::Replay(_)
    ));
    assert!(matches!(
        present_at(&stores[1], &fp0, &policy, late).await,
        Presented::Refused(r) if r.reason == RefusalReason::Superseded
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_window_on_one_replica_refuses_the_family_as_revoked_on_the_others() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let policy = Policy::uniform(Rules {
        on_replay: OnReplay::RevokeFamily,
        close_on_successor_use: false,
        ..Rules::default()
    });
    // t0 -> t1 -> t2; t2 never presented.
    let ((_, fp0), (t1, fp1)) = chain(&stores[0], &policy, "rt-revoke").await;
    let (_, fp2) = fingerprint("rt-revoke-2");
    present(&stores[1], &fp1, &policy).await;
    stores[1]
        .complete(&fp1, rotated_into(&t1, fp0, Some(fp2)), &policy)
        .await
        .unwrap();
    let at = NOW.plus(Duration::from_secs(1));
    stores[0]
        .close_window(&fp1, RefusalReason::Revoked, at)
        .await
        .unwrap();
    assert!(matches!(
        present_at(
            &stores[1],
            &fp0,
            &policy,
            NOW.plus(Duration::from_millis(999))
        )
        .await,
        Presented::Replay { .. }
    ));
    let late = NOW.plus(Duration::from_secs(60));
    for when in [at, late] {
        for fp in [fp0, fp1] {
            let Presented::Refused(refusal) = present_at(&stores[1], &fp, &policy, when).await
            else {
                panic!("not refused")
            };
            assert_eq!(refusal.reason, RefusalReason::Revoked);
            assert!(!refusal.revoked_family, "the IdP revoked already");
        }
    }
    // An earlier closing does not undo a later one.
    stores[1]
        .close_window(&fp0, RefusalReason::Revoked, NOW)
        .await
        .unwrap();
    assert!(matches!(
        present_at(
            &stores[0],
            &fp1,
            &policy,
            NOW.plus(Duration::from_millis(500))
        )
        .await,
        Presented::Replay { .. }
    ));
    // The never-presented newest token is the IdP's to judge; revoking it (unknown but as
    // t1's successor) works too.
    stores[1]
        .close_window(&fp2, RefusalReason::Revoked, late)
        .await
        .unwrap();
    assert!(matches!(
        present_at(&stores[0], &fp2, &policy, late).await,
        Presented::Claimed { .. }
    ));
    // A token Redis knows nothing of closes nothing.
    let (_, stranger) = fingerprint("rt-revoke-stranger");
    stores[0]
        .close_window(&stranger, RefusalReason::Revoked, late)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sighting_is_shared_by_replicas_and_expires() {
    let redis = RedisServer::start();
    let stores = replicas(&redis, 2);
    let key = [0x42; 32];
    let ttl = Duration::from_millis(300);
    assert!(stores[0].first_sighting(&key, ttl, NOW).await.unwrap());
    assert!(!stores[1].first_sighting(&key, ttl, NOW).await.unwrap());
    assert!(!stores[0].first_sighting(&key, ttl, NOW).await.unwrap());
    assert!(stores[1]
        .first_sighting(&[0x43; 32], ttl, NOW)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        stores[1].first_sighting(&key, ttl, NOW).await.unwrap(),
        "expired: a new sighting"
    );
}
