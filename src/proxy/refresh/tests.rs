//! The refresh handler's sequencing, without sockets: a scripted fake IdP behind
//! [`TokenEndpoint`], the memory store, a [`ManualClock`] for the policy and paused Tokio
//! time for waits, spacing and timeouts.

use super::*;
use crate::clock::ManualClock;
use crate::config::ClientKeys;
use crate::http::answer::Freshness;
use crate::oauth::credentials::ClientCredentials;
use crate::policy::Rules;
use crate::proxy::exchange::ExchangeFailure;
use crate::seal::secret::ClientSecret;
use crate::store::{MemoryStore, MemoryStoreLimits, StoreHealth};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::time::Instant as TokioInstant;

mod observe;

const START: UnixMillis = UnixMillis(1_800_000_000_000);
const GRACE: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const SPACING: Duration = Duration::from_millis(50);

/// What the fake IdP does with one exchange.
enum Step {
    /// Answer after `delay` with `status` and a JSON body; a 200 carries a new refresh
    /// token `rt-<n>`.
    Answer { delay: Duration, status: u16 },
    /// Fail after `delay`.
    Fail {
        delay: Duration,
        failure: ExchangeFailure,
    },
    /// Never answer.
    Hang,
    /// Panic (a bug in the exchange): the claim must still be released.
    Panic,
}

/// A scripted IdP: steps in order, then 200s without delay.
#[derive(Default)]
struct FakeIdp {
    steps: Mutex<VecDeque<Step>>,
    calls: AtomicUsize,
    bodies: Mutex<Vec<Bytes>>,
    headers: Mutex<Vec<RequestHeader>>,
}

impl FakeIdp {
    fn scripted(steps: impl IntoIterator<Item = Step>) -> Arc<FakeIdp> {
        Arc::new(FakeIdp {
            steps: Mutex::new(steps.into_iter().collect()),
            ..FakeIdp::default()
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn token_answer(status: u16, n: usize) -> Answer {
    let body = if status == 200 {
        format!(
            r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":60,"refresh_token":"rt-{n}"}}"#
        )
    } else {
        r#"{"error":"invalid_client"}"#.to_owned()
    };
    Answer {
        status,
        headers: vec![
            ("content-type".to_owned(), b"application/json".to_vec()),
            ("date".to_owned(), b"Mon, 01 Jan 2024 00:00:00 GMT".to_vec()),
        ],
        body: Bytes::from(body),
    }
}

#[async_trait]
impl TokenEndpoint for FakeIdp {
    async fn send(&self, header: RequestHeader, body: Bytes) -> Result<Answer, ExchangeFailure> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.headers.lock().unwrap().push(header);
        self.bodies.lock().unwrap().push(body);
        let step = self.steps.lock().unwrap().pop_front();
        match step.unwrap_or(Step::Answer {
            delay: Duration::ZERO,
            status: 200,
        }) {
            Step::Answer { delay, status } => {
                tokio::time::sleep(delay).await;
                Ok(token_answer(status, n))
            }
            Step::Fail { delay, failure } => {
                tokio::time::sleep(delay).await;
                Err(failure)
            }
            Step::Hang => std::future::pending().await,
            Step::Panic => panic!("the fake IdP's deliberate panic"),
        }
    }
}

/// A store that is down: every call fails as unavailable.
struct DownStore;

#[async_trait]
impl TokenStore for DownStore {
    async fn present(
        &self,
        _: &TokenFingerprint,
        _: &Presenter<'_>,
        _: &Policy,
        _: UnixMillis,
    ) -> Result<Presented, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn complete(
        &self,
        _: &TokenFingerprint,
        _: ExchangeOutcome,
        _: &Policy,
    ) -> Result<crate::store::Replication, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn decide_after_wait(
        &self,
        _: &TokenFingerprint,
        _: &Arc<TokenRecord>,
        _: &Presenter<'_>,
        _: &Policy,
        _: UnixMillis,
    ) -> Result<AfterWait, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn is_spent(&self, _: &TokenFingerprint, _: UnixMillis) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    fn tombstone_count(&self) -> u64 {
        0
    }
    fn eviction_count(&self) -> u64 {
        0
    }
    fn health(&self) -> StoreHealth {
        StoreHealth {
            available: false,
            errors: 1,
            ..StoreHealth::default()
        }
    }
}

struct Fixture {
    handler: Arc<RefreshHandler>,
    idp: Arc<FakeIdp>,
    clock: Arc<ManualClock>,
}

fn settings() -> RefreshSettings {
    RefreshSettings {
        request_timeout: REQUEST_TIMEOUT,
        exchange_timeout: Duration::from_secs(10),
        subject_claim: "sub".to_owned(),
        revocation_path: None,
        on_store_error: OnStoreError::FailClosed,
        max_detached_per_source: 64,
        client_keys: ClientKeys::new(),
        public_url: None,
        max_in_flight: 100,
    }
}

fn fixture_with(
    idp: Arc<FakeIdp>,
    store: Option<Arc<dyn TokenStore>>,
    settings: RefreshSettings,
) -> Fixture {
    let clock = Arc::new(ManualClock::new(START));
    let store = store.unwrap_or_else(|| {
        Arc::new(MemoryStore::new(
            &MemoryStoreLimits {
                tombstone_ttl: Duration::from_secs(900),
                max_tombstones: 1000,
                max_in_flight: 100,
            },
            clock.clone(),
        ))
    });
    let mut policy = Policy::uniform(Rules {
        grace_period: GRACE,
        ..Rules::default()
    });
    policy.replay_spacing = SPACING;
    let handler = RefreshHandler::new(
        RefreshParts {
            policy,
            store,
            fingerprinter: Fingerprinter::new(&[7u8; 32]),
            clock: clock.clone(),
            auditor: Arc::new(Auditor::new(Metrics::new())),
            endpoint: idp.clone(),
            grace_advice: Arc::new(crate::observe::grace::GraceAdvice::new(
                Vec::new(),
                clock.clone(),
            )),
            observations: Observations::new(1000, Duration::from_secs(900)),
        },
        settings,
    );
    Fixture {
        handler: Arc::new(handler),
        idp,
        clock,
    }
}

/// A fixture whose IdP reads its tokens as base64 (`token_encoding = "base64"`).
fn base64_fixture(idp: Arc<FakeIdp>) -> Fixture {
    let mut f = fixture(idp.clone());
    let clock = f.clock.clone();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryStore::new(
        &MemoryStoreLimits {
            tombstone_ttl: Duration::from_secs(900),
            max_tombstones: 1000,
            max_in_flight: 100,
        },
        clock.clone(),
    ));
    f.handler = Arc::new(RefreshHandler::new(
        RefreshParts {
            policy: f.handler.policy().as_ref().clone(),
            store,
            fingerprinter: Fingerprinter::new(&[7u8; 32])
                .with_token_encoding(crate::oauth::token_spelling::TokenEncoding::Base64),
            grace_advice: Arc::new(crate::observe::grace::GraceAdvice::new(
                Vec::new(),
                clock.clone(),
            )),
            clock,
            auditor: Arc::new(Auditor::new(Metrics::new())),
            endpoint: idp,
            observations: Observations::new(1000, Duration::from_secs(900)),
        },
        settings(),
    ));
    f
}

fn fixture(idp: Arc<FakeIdp>) -> Fixture {
    fixture_with(idp, None, settings())
}

/// A refresh grant of `token` by `client_id` (with `secret`, if any) from 10.0.0.1.
fn grant(token: &str, client_id: &str, secret: Option<&str>) -> RefreshRequest {
    let mut header = RequestHeader::build("POST", b"/token", None).unwrap();
    header.insert_header("host", "idp.example.com").unwrap();
    header.insert_header("accept-encoding", "gzip").unwrap();
    header
        .insert_header("content-type", "application/x-www-form-urlencoded")
        .unwrap();
    let body = format!("grant_type=refresh_token&refresh_token={token}&client_id={client_id}");
    RefreshRequest {
        grant: RefreshGrant {
            token: RefreshToken::new(token),
            client: ClientCredentials {
                client_id: client_id.to_owned(),
                secret: secret.map(ClientSecret::new),
                assertion: None,
            },
            dpop: None,
        },
        header,
        body: Bytes::from(body),
        origin: Origin {
            source: Some("10.0.0.1".parse().unwrap()),
            peer: Some("10.0.0.1".parse().unwrap()),
            proto: "https",
            request_id: "req-1".to_owned(),
            token_url: "https://idp.example.com/token".to_owned(),
            endpoint: Some(Endpoint {
                origin: Some("https://idp.example.com".to_owned()),
                path: "/token".to_owned(),
            }),
        },
    }
}

async fn present(handler: &Arc<RefreshHandler>, request: RefreshRequest) -> Reply {
    handler.handle(request, &mut Unwatched).await
}

fn body(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.answer.body).into_owned()
}

/// A client that closes its connection after `after`.
struct LeavesAfter(Duration);

#[async_trait]
impl ClientLink for LeavesAfter {
    async fn closed(&mut self) -> bool {
        tokio::time::sleep(self.0).await;
        true
    }
}

#[tokio::test(start_paused = true)]
async fn first_use_is_sent_once_cleaned_and_answered_verbatim() {
    let f = fixture(FakeIdp::scripted([]));
    let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.outcome, RefreshOutcome::Forwarded);
    assert_eq!(reply.freshness, Freshness::Verbatim);
    assert_eq!(reply.refused, None);
    assert!(body(&reply).contains("at-1"));
    assert_eq!(f.idp.calls(), 1);
    let sent = f.idp.headers.lock().unwrap()[0].clone();
    let sent_body = f.idp.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        sent_body,
        "grant_type=refresh_token&refresh_token=rt-0&client_id=kubectl"
    );
    assert!(sent.headers.get("accept-encoding").is_none());
    assert_eq!(
        sent.headers.get("content-length").unwrap(),
        &sent_body.len().to_string()
    );
    assert_eq!(sent.headers.get("x-forwarded-proto").unwrap(), "https");
}

#[tokio::test(start_paused = true)]
async fn racing_presenters_share_one_exchange_and_are_released_apart() {
    let f = fixture(FakeIdp::scripted([Step::Answer {
        delay: Duration::from_millis(100),
        status: 200,
    }]));
    let started = TokioInstant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let handler = f.handler.clone();
        tasks.push(tokio::spawn(async move {
            let reply = present(&handler, grant("rt-0", "kubectl", None)).await;
            (reply, started.elapsed())
        }));
        // Arrive in order, all while the exchange is in flight.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    assert_eq!(f.idp.calls(), 1, "one upstream call for three presenters");
    let outcomes: Vec<_> = replies.iter().map(|(r, _)| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            RefreshOutcome::Forwarded,
            RefreshOutcome::Coalesced,
            RefreshOutcome::Coalesced
        ]
    );
    for (reply, _) in &replies {
        assert_eq!(reply.status(), 200);
        assert!(body(reply).contains("\"refresh_token\":\"rt-1\""));
    }
    // The first gets the answer when it comes; the waiters (in whichever order they wake)
    // one spacing apart after it.
    let mut at: Vec<_> = replies.iter().map(|(_, at)| at.as_millis()).collect();
    assert_eq!(at[0], 100);
    at[1..].sort_unstable();
    assert_eq!(at[1..], [150, 200]);
    assert_eq!(replies[1].0.freshness, Freshness::FreshDate);
}

#[tokio::test(start_paused = true)]
async fn a_replay_is_answered_inside_the_window_and_refused_after_it() {
    let f = fixture(FakeIdp::scripted([]));
    let first = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    f.clock.advance(GRACE - Duration::from_millis(1));
    let replay = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(replay.outcome, RefreshOutcome::GraceReplay);
    assert_eq!(replay.answer.body, first.answer.body);
    assert_eq!(replay.freshness, Freshness::FreshDate);
    f.clock.advance(Duration::from_millis(2));
    let late = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(late.status(), 400);
    assert_eq!(late.outcome, RefreshOutcome::Refused);
    assert_eq!(late.refused, Some(RefusalReason::AfterGrace));
    assert!(body(&late).contains("\"error\":\"invalid_grant\""));
    assert_eq!(f.idp.calls(), 1, "refusals and replays never reach the IdP");
}

#[tokio::test(start_paused = true)]
async fn the_answer_goes_only_to_the_client_that_rotated_it() {
    let f = fixture(FakeIdp::scripted([]));
    present(&f.handler, grant("rt-0", "kubectl", Some("s1"))).await;
    let other_secret = present(&f.handler, grant("rt-0", "kubectl", Some("s2"))).await;
    assert_eq!(other_secret.outcome, RefreshOutcome::Refused);
    assert_eq!(other_secret.refused, Some(RefusalReason::ClientMismatch));
    assert!(!body(&other_secret).contains("at-1"));
    let other_client = present(&f.handler, grant("rt-0", "k9s", Some("s1"))).await;
    assert_eq!(other_client.refused, Some(RefusalReason::ClientMismatch));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_idp_tombstones_nothing() {
    let f = fixture(FakeIdp::scripted([Step::Fail {
        delay: Duration::ZERO,
        failure: ExchangeFailure::NotSent,
    }]));
    let failed = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(failed.status(), 502);
    assert_eq!(failed.outcome, RefreshOutcome::UpstreamError);
    let retry = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(
        retry.outcome,
        RefreshOutcome::Forwarded,
        "the token is still fresh"
    );
    assert_eq!(f.idp.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_idp_that_never_answers_gets_504_at_the_request_timeout() {
    let f = fixture(FakeIdp::scripted([Step::Hang]));
    let started = TokioInstant::now();
    let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(reply.status(), 504);
    assert_eq!(reply.outcome, RefreshOutcome::UpstreamError);
    assert_eq!(started.elapsed(), REQUEST_TIMEOUT);
    // The exchange still owns the claim: a waiter arriving now waits its own deadline.
    let waiter = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(waiter.status(), 504);
    assert_eq!(f.idp.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failure_owned_by_another_client_sends_the_waiter_to_present_again() {
    // The claimant's exchange fails (its secret is wrong); a waiter with another secret
    // must not get that answer: it presents again, claims, and is forwarded itself.
    let f = fixture(FakeIdp::scripted([
        Step::Answer {
            delay: Duration::from_millis(100),
            status: 401,
        },
        Step::Answer {
            delay: Duration::ZERO,
            status: 200,
        },
    ]));
    let handler = f.handler.clone();
    let claimant =
        tokio::spawn(
            async move { present(&handler, grant("rt-0", "kubectl", Some("wrong"))).await },
        );
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = present(&f.handler, grant("rt-0", "kubectl", Some("right"))).await;
    let claimant = claimant.await.unwrap();
    assert_eq!(claimant.status(), 401);
    assert_eq!(claimant.outcome, RefreshOutcome::UpstreamError);
    assert_eq!(waiter.status(), 200);
    assert_eq!(waiter.outcome, RefreshOutcome::Forwarded);
    assert_eq!(f.idp.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_shared_with_a_waiter_of_the_same_client() {
    let f = fixture(FakeIdp::scripted([Step::Answer {
        delay: Duration::from_millis(100),
        status: 401,
    }]));
    let handler = f.handler.clone();
    let claimant =
        tokio::spawn(async move { present(&handler, grant("rt-0", "kubectl", None)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(claimant.await.unwrap().status(), 401);
    assert_eq!(waiter.status(), 401);
    assert_eq!(waiter.outcome, RefreshOutcome::UpstreamError);
    assert_eq!(f.idp.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_exchange_is_an_internal_error_and_releases_its_claim() {
    let f = fixture(FakeIdp::scripted([Step::Panic]));
    let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(reply.outcome, RefreshOutcome::InternalError);
    assert_eq!(reply.status(), 502, "retryable: nothing was rotated");
    // The guard gives the claim back on its own task; let it run.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let retry = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(retry.outcome, RefreshOutcome::Forwarded);
}

#[tokio::test(start_paused = true)]
async fn fail_closed_refuses_while_the_store_is_down() {
    let f = fixture_with(FakeIdp::scripted([]), Some(Arc::new(DownStore)), settings());
    let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(reply.status(), 503);
    assert_eq!(reply.outcome, RefreshOutcome::Refused);
    assert_eq!(reply.refused, Some(RefusalReason::StoreUnavailable));
    assert_eq!(f.idp.calls(), 0);
    let check = f.handler.check_forwarded(&[RefreshToken::new("x")]).await;
    assert!(matches!(check, ForwardCheck::Answer(reply) if reply.status() == 503));
}

#[tokio::test(start_paused = true)]
async fn fail_open_forwards_unguarded_while_the_store_is_down() {
    let open = RefreshSettings {
        on_store_error: OnStoreError::FailOpen,
        ..settings()
    };
    let f = fixture_with(FakeIdp::scripted([]), Some(Arc::new(DownStore)), open);
    for _ in 0..2 {
        let reply = present(&f.handler, grant("rt-0", "kubectl", None)).await;
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.outcome, RefreshOutcome::Unguarded);
        assert_eq!(reply.freshness, Freshness::Verbatim);
    }
    assert_eq!(f.idp.calls(), 2, "no one-time use without the store");
    let check = f.handler.check_forwarded(&[RefreshToken::new("x")]).await;
    assert!(matches!(check, ForwardCheck::Forward));
}

#[tokio::test(start_paused = true)]
async fn a_spent_token_inside_another_grant_is_found() {
    let f = fixture(FakeIdp::scripted([]));
    present(&f.handler, grant("rt-0", "kubectl", None)).await;
    let spent = f
        .handler
        .check_forwarded(&[RefreshToken::new("rt-0")])
        .await;
    assert!(matches!(spent, ForwardCheck::Spent));
    let fresh = f
        .handler
        .check_forwarded(&[RefreshToken::new("rt-1")])
        .await;
    assert!(matches!(fresh, ForwardCheck::Forward));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_keeps_its_rotation_and_counts_against_its_address() {
    let one_detached = RefreshSettings {
        max_detached_per_source: 1,
        ..settings()
    };
    let f = fixture_with(
        FakeIdp::scripted([Step::Answer {
            delay: Duration::from_secs(1),
            status: 200,
        }]),
        None,
        one_detached,
    );
    // The client closes after 10 ms; the exchange runs on, detached.
    let handler = f.handler.clone();
    let first = tokio::spawn(async move {
        handler
            .handle(
                grant("rt-0", "kubectl", None),
                &mut LeavesAfter(Duration::from_millis(10)),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The same address with another token: over its share of detached exchanges.
    let busy = present(&f.handler, grant("other", "kubectl", None)).await;
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.outcome, RefreshOutcome::UpstreamError);
    // The detached exchange completes, and its rotation is kept: a replay is answered.
    let first = first.await.unwrap();
    assert_eq!(first.outcome, RefreshOutcome::Forwarded);
    let replay = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(replay.outcome, RefreshOutcome::GraceReplay);
    // And the refused token was given back: it can be exchanged now.
    let later = present(&f.handler, grant("other", "kubectl", None)).await;
    assert_eq!(later.outcome, RefreshOutcome::Forwarded);
}

// Binding beyond the secret: client assertions and DPoP proofs (issue 16).

use crate::oauth::assertion::AssertionKeys;
use crate::oauth::dpop::tests::TestKey;
use serde_json::json;

const TOKEN_URL: &str = "https://idp.example.com/token";

fn now_s() -> u64 {
    START.0 / 1000
}

/// A `private_key_jwt` assertion of `client_id` for `aud`, signed by `key`.
fn assertion(key: &TestKey, client_id: &str, aud: &str, jti: &str) -> String {
    key.sign(
        json!({"typ": "JWT"}),
        json!({"iss": client_id, "sub": client_id, "aud": aud, "jti": jti,
               "iat": now_s(), "exp": now_s() + 60}),
    )
}

/// A DPoP proof by `key` for a POST to `htu`.
fn proof(key: &TestKey, htu: &str, jti: &str) -> String {
    key.sign(
        json!({"typ": "dpop+jwt", "jwk": key.jwk}),
        json!({"jti": jti, "htm": "POST", "htu": htu, "iat": now_s()}),
    )
}

fn with_assertion(token: &str, client_id: &str, jwt: Option<String>) -> RefreshRequest {
    let mut request = grant(token, client_id, None);
    request.grant.client.assertion = jwt.map(ClientSecret::new);
    request
}

fn with_proof(token: &str, proof: Option<String>) -> RefreshRequest {
    let mut request = grant(token, "kubectl", None);
    request.grant.dpop = proof.map(ClientSecret::new);
    request
}

fn keyed(client_id: &str, key: &TestKey) -> RefreshSettings {
    let jwks = serde_json::to_vec(&json!({"keys": [key.jwk]})).unwrap();
    let mut client_keys = ClientKeys::new();
    client_keys.insert(
        client_id.to_owned(),
        Arc::new(AssertionKeys::from_jwks(&jwks).unwrap()),
    );
    RefreshSettings {
        client_keys,
        ..settings()
    }
}

#[tokio::test(start_paused = true)]
async fn an_assertion_client_is_replayed_only_with_a_fresh_assertion_the_gate_verifies() {
    let key = TestKey::es256();
    let f = fixture_with(FakeIdp::scripted([]), None, keyed("ci", &key));
    let first = assertion(&key, "ci", TOKEN_URL, "j1");
    let rotated = present(
        &f.handler,
        with_assertion("rt-0", "ci", Some(first.clone())),
    )
    .await;
    assert_eq!(rotated.outcome, RefreshOutcome::Forwarded);
    let mismatch = Some(RefusalReason::ClientMismatch);
    // The captured request, assertion and all: its jti is spent.
    let captured = present(&f.handler, with_assertion("rt-0", "ci", Some(first))).await;
    assert_eq!(
        captured.refused, mismatch,
        "a captured assertion was replayed"
    );
    // Only the client id.
    let bare = present(&f.handler, with_assertion("rt-0", "ci", None)).await;
    assert_eq!(bare.refused, mismatch);
    // An assertion for another audience, or by another key.
    let elsewhere = assertion(&key, "ci", "https://elsewhere.example/token", "j2");
    let moved = present(&f.handler, with_assertion("rt-0", "ci", Some(elsewhere))).await;
    assert_eq!(moved.refused, mismatch);
    let forged = assertion(&TestKey::es256(), "ci", TOKEN_URL, "j3");
    let forged = present(&f.handler, with_assertion("rt-0", "ci", Some(forged))).await;
    assert_eq!(forged.refused, mismatch);
    // A fresh assertion the gate verifies: the same client, answered from the window.
    let fresh = assertion(&key, "ci", TOKEN_URL, "j4");
    let replay = present(&f.handler, with_assertion("rt-0", "ci", Some(fresh))).await;
    assert_eq!(replay.outcome, RefreshOutcome::GraceReplay);
    assert_eq!(replay.answer.body, rotated.answer.body);
    assert_eq!(f.idp.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_keys_an_assertion_client_is_never_replayed() {
    let key = TestKey::es256();
    let f = fixture(FakeIdp::scripted([]));
    let first = assertion(&key, "ci", TOKEN_URL, "j1");
    present(&f.handler, with_assertion("rt-0", "ci", Some(first))).await;
    let fresh = assertion(&key, "ci", TOKEN_URL, "j2");
    let replay = present(&f.handler, with_assertion("rt-0", "ci", Some(fresh))).await;
    assert_eq!(replay.refused, Some(RefusalReason::ClientMismatch));
}

#[tokio::test(start_paused = true)]
async fn a_dpop_bound_refresh_is_replayed_only_with_a_fresh_proof_of_the_same_key() {
    let key = TestKey::es256();
    let f = fixture(FakeIdp::scripted([]));
    let first = proof(&key, TOKEN_URL, "p1");
    let rotated = present(&f.handler, with_proof("rt-0", Some(first.clone()))).await;
    assert_eq!(rotated.outcome, RefreshOutcome::Forwarded);
    let mismatch = Some(RefusalReason::ClientMismatch);
    let none = present(&f.handler, with_proof("rt-0", None)).await;
    assert_eq!(none.refused, mismatch, "replayed without a proof");
    let other_key = proof(&TestKey::ed25519(), TOKEN_URL, "p2");
    let other = present(&f.handler, with_proof("rt-0", Some(other_key))).await;
    assert_eq!(other.refused, mismatch, "replayed with another key's proof");
    let same = present(&f.handler, with_proof("rt-0", Some(first))).await;
    assert_eq!(same.refused, mismatch, "the first proof replayed");
    let wrong_url = proof(&key, "https://idp.example.com/other", "p3");
    let moved = present(&f.handler, with_proof("rt-0", Some(wrong_url))).await;
    assert_eq!(moved.refused, mismatch);
    let fresh = proof(&key, TOKEN_URL, "p4");
    let replay = present(&f.handler, with_proof("rt-0", Some(fresh))).await;
    assert_eq!(replay.outcome, RefreshOutcome::GraceReplay);
    assert_eq!(replay.answer.body, rotated.answer.body);
}

#[tokio::test(start_paused = true)]
async fn the_public_url_is_the_endpoint_proofs_must_name() {
    let key = TestKey::es256();
    let behind_ingress = RefreshSettings {
        public_url: Some("https://login.example.com".to_owned()),
        ..settings()
    };
    let f = fixture_with(FakeIdp::scripted([]), None, behind_ingress);
    let public = "https://login.example.com/token";
    present(
        &f.handler,
        with_proof("rt-0", Some(proof(&key, public, "p1"))),
    )
    .await;
    let internal = proof(&key, TOKEN_URL, "p2");
    let refused = present(&f.handler, with_proof("rt-0", Some(internal))).await;
    assert_eq!(refused.refused, Some(RefusalReason::ClientMismatch));
    let fresh = present(
        &f.handler,
        with_proof("rt-0", Some(proof(&key, public, "p3"))),
    )
    .await;
    assert_eq!(fresh.outcome, RefreshOutcome::GraceReplay);
}

#[tokio::test(start_paused = true)]
async fn a_revocation_at_the_idp_closes_the_window() {
    let f = fixture(FakeIdp::scripted([]));
    present(&f.handler, grant("rt-0", "kubectl", None)).await;
    f.handler.revoked(&RefreshToken::new("rt-0"), "req-9").await;
    let replay = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(replay.refused, Some(RefusalReason::Revoked));
}

#[tokio::test(start_paused = true)]
async fn the_successors_use_closes_the_parents_window_but_not_before_the_minimum() {
    let f = fixture(FakeIdp::scripted([]));
    // rt-0 rotates to rt-1 (the fake IdP's first answer).
    present(&f.handler, grant("rt-0", "kubectl", None)).await;
    f.clock.advance(Duration::from_millis(500));
    let successor = present(&f.handler, grant("rt-1", "kubectl", None)).await;
    assert_eq!(successor.outcome, RefreshOutcome::Forwarded);
    // Inside the minimum replay window a straggler still gets the parent's answer.
    f.clock.advance(Duration::from_millis(500));
    let straggler = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(straggler.outcome, RefreshOutcome::GraceReplay);
    // After it, the parent is superseded (still inside its grace period).
    f.clock.advance(Duration::from_millis(1500));
    let late = present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(late.refused, Some(RefusalReason::Superseded));
}

#[tokio::test(start_paused = true)]
async fn grace_replays_right_after_the_rotation_are_answered_a_spacing_apart() {
    let f = fixture(FakeIdp::scripted([]));
    present(&f.handler, grant("rt-0", "kubectl", None)).await;
    let started = TokioInstant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let handler = f.handler.clone();
        tasks.push(tokio::spawn(async move {
            let reply = present(&handler, grant("rt-0", "kubectl", None)).await;
            (reply.outcome, started.elapsed().as_millis())
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        answered.push(task.await.unwrap());
    }
    answered.sort_by_key(|(_, at)| *at);
    assert!(answered
        .iter()
        .all(|(outcome, _)| *outcome == RefreshOutcome::GraceReplay));
    let at: Vec<_> = answered.iter().map(|(_, at)| *at).collect();
    assert_eq!(at, [50, 100, 150], "replays of one token answered together");
    // Later than its slot, a replay is answered at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.clock.advance(Duration::from_secs(1));
    let late = TokioInstant::now();
    present(&f.handler, grant("rt-0", "kubectl", None)).await;
    assert_eq!(late.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn another_spelling_of_the_token_opens_the_remembered_answer() {
    // The IdP reads base64 and base64url alike: "+/8=" and "-_8" are one token to it.
    let f = base64_fixture(FakeIdp::scripted([]));
    let first = present(&f.handler, grant("+/8=", "kubectl", None)).await;
    assert_eq!(first.outcome, RefreshOutcome::Forwarded);
    let replay = present(&f.handler, grant("-_8", "kubectl", None)).await;
    assert_eq!(
        replay.outcome,
        RefreshOutcome::GraceReplay,
        "{}",
        body(&replay)
    );
    assert_eq!(replay.answer.body, first.answer.body);
    assert_eq!(f.idp.calls(), 1);
}
