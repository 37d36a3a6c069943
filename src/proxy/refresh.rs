//! Handling one refresh grant: present the token to the store, then forward (owning the
//! exchange), wait for the exchange under way, replay, or refuse. Decisions come from the
//! store and the pure policy; this module only sequences them and writes answers.

use super::exchange::{ExchangeFailure, Exchanger};
use super::write::{exchange_request, write_answer, Freshness};
use crate::clock::Clock;
use crate::config::OnStoreError;
use crate::http::answer::Answer;
use crate::http::respond::{replayable, GateReply};
use crate::oauth::credentials::{ClientCredentials, ClientIdentity};
use crate::oauth::grant::RefreshGrant;
use crate::oauth::token_response;
use crate::observe::audit::{self, FirstUse, RequestFacts};
use crate::observe::metrics::{Metrics, RefreshOutcome, UpstreamKind};
use crate::policy::detached::{DetachedExchanges, ExchangeLife};
use crate::policy::{Policy, Presenter, RefusalReason};
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::{Fingerprinter, TokenFingerprint};
use crate::seal::secret::RefreshToken;
use crate::store::{
    AfterWait, ExchangeOutcome, Presented, Refusal, Released, StoreError, TokenRecord, TokenStore,
};
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// `[rotation] max_detached_per_source` unless configured.
const DEFAULT_MAX_DETACHED_PER_SOURCE: u32 = 64;

/// Everything a refresh grant needs, shared by all requests.
pub struct RefreshGate {
    /// The rotation rules; replaced whole on a configuration reload.
    policy: arc_swap::ArcSwap<Policy>,
    /// The state of every fingerprint.
    pub store: Arc<dyn TokenStore>,
    /// Keys the fingerprints.
    pub fingerprinter: Fingerprinter,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// The metrics.
    pub metrics: Metrics,
    /// Sends exchanges to the IdP.
    pub exchanger: Exchanger,
    /// How long a client waits for its answer.
    pub request_timeout: Duration,
    /// How long an exchange may run in all.
    pub exchange_timeout: Duration,
    /// The id_token claim reported as the subject.
    pub subject_claim: String,
    /// The IdP's RFC 7009 revocation path, for revoking families there.
    pub revocation_path: Option<String>,
    /// What refresh grants get while the store is unavailable.
    pub on_store_error: OnStoreError,
    revoked_at_idp: moka::sync::Cache<TokenFingerprint, ()>,
    warned_clients: moka::sync::Cache<Box<str>, ()>,
    detached: Arc<DetachedExchanges>,
    audit_cap: crate::policy::source_cap::SourceCap,
}

impl std::fmt::Debug for RefreshGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshGate")
            .field("policy", &self.policy.load())
            .finish()
    }
}

/// What the first client of an exchange gets.
enum FirstAnswer {
    /// The upstream's answer, verbatim; `success` when it was a token response.
    Upstream { answer: Answer, success: bool },
    /// A failure the gate reports itself.
    Failed(GateReply),
}

/// Where a refresh request came from, as the glue saw it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address (through trusted proxies).
    pub source: Option<IpAddr>,
    /// The socket peer (appended to `X-Forwarded-For`).
    pub peer: Option<IpAddr>,
    /// `http` or `https`, as the client connected.
    pub proto: &'static str,
    /// The request id (received or generated), forwarded upstream.
    pub request_id: String,
    /// The token endpoint URL the client used, for audit events.
    pub token_url: String,
}

/// The facts of one refresh request.
struct Request<'a> {
    token: RefreshToken,
    credentials: ClientCredentials,
    fingerprint: TokenFingerprint,
    client: ClientIdentity,
    source: IpAddr,
    peer: Option<IpAddr>,
    header: &'a RequestHeader,
    body: Bytes,
    proto: &'static str,
    request_id: String,
    token_url: String,
}

impl Request<'_> {
    fn audit_facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            request_id: &self.request_id,
            token_url: &self.token_url,
            client_id: &self.client.client_id,
            client_ip: self.source,
            token: self.fingerprint.display(),
        }
    }
}

impl RefreshGate {
    /// A refresh gate with these parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Policy,
        store: Arc<dyn TokenStore>,
        fingerprinter: Fingerprinter,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        exchanger: Exchanger,
        request_timeout: Duration,
        exchange_timeout: Duration,
    ) -> Self {
        RefreshGate {
            policy: arc_swap::ArcSwap::from_pointee(policy),
            store,
            fingerprinter,
            clock,
            metrics,
            exchanger,
            request_timeout,
            exchange_timeout,
            subject_claim: "sub".to_owned(),
            revocation_path: None,
            on_store_error: OnStoreError::default(),
            revoked_at_idp: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            warned_clients: moka::sync::Cache::new(10_000),
            detached: DetachedExchanges::new(DEFAULT_MAX_DETACHED_PER_SOURCE),
            audit_cap: crate::policy::source_cap::SourceCap::new(
                audit::REFUSALS_PER_SOURCE_PER_SECOND,
                4096,
            ),
        }
    }

    /// Refuse new exchanges from an address with this many detached ones running
    /// (`[rotation] max_detached_per_source`).
    pub fn with_max_detached_per_source(mut self, per_source: u32) -> Self {
        self.detached = DetachedExchanges::new(per_source);
        self
    }

    /// Report `claim` of the id_token as the subject in audit events.
    pub fn with_subject_claim(mut self, claim: &str) -> Self {
        self.subject_claim = claim.to_owned();
        self
    }

    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replace the rules (configuration reload); requests already deciding keep theirs.
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Answer refresh grants this way while the store is unavailable.
    pub fn with_on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_store_error = policy;
        self
    }

    /// Revoke families at the IdP too, through its RFC 7009 endpoint at `path`.
    pub fn with_revocation_path(mut self, path: Option<String>) -> Self {
        self.revocation_path = path;
        self
    }

    /// Decide and answer one refresh grant. Writes the whole response.
    pub async fn handle(
        self: &Arc<Self>,
        session: &mut Session,
        grant: RefreshGrant,
        body: Bytes,
        origin: Origin,
    ) -> pingora::Result<()> {
        let header = session.req_header().clone();
        let request = Request {
            fingerprint: self.fingerprinter.token(&grant.token),
            client: grant.client.identity(&self.fingerprinter),
            credentials: grant.client,
            token: grant.token,
            source: origin.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            peer: origin.peer,
            header: &header,
            body,
            proto: origin.proto,
            request_id: origin.request_id,
            token_url: origin.token_url,
        };
        let who = Presenter {
            client: &request.client,
            source: request.source,
        };
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        // An exchange that ended with nothing to share (its claimant gave the claim back),
        // or whose outcome belongs to another client, sends its waiters back to present
        // again (a few times at most, within the deadline).
        for _ in 0..3 {
            let presented = self
                .store
                .present(&request.fingerprint, &who, &self.policy(), self.clock.now())
                .await;
            return match presented {
                Err(error) => self.store_failure(session, &request, error).await,
                Ok(Presented::Claimed { .. }) if !self.detached.admits(request.source) => {
                    // This address already has its share of exchanges whose clients left:
                    // give the claim back and ask it to retry.
                    self.complete(
                        &request.fingerprint,
                        ExchangeOutcome::Released(Released::Unreachable),
                    )
                    .await;
                    audit::detached_limit_reached(
                        &self.metrics,
                        &self.audit_cap,
                        &request.audit_facts(),
                        self.clock.now(),
                    );
                    let reply = GateReply::SourceBusy.to_answer();
                    write_answer(session, &reply, Freshness::FreshDate).await
                }
                Ok(Presented::Claimed { family }) => self.forward(session, &request, family).await,
                Ok(Presented::Wait(waiter)) => {
                    // Every answer to its owner: an outcome that rotated nothing (an IdP
                    // error, a non-rotating answer, a gate error) is handed only to a waiter
                    // that authenticated as the claimant did; another presents on its own,
                    // so a wrong secret in front of it cannot spoil its refresh. A rotation
                    // is decided by the policy (`client_mismatch`).
                    let owner = waiter.claimant.as_ref() == Some(&request.client);
                    let outcome = match tokio::time::timeout_at(deadline, waiter.outcome).await {
                        Ok(Ok(None)) => continue,
                        Ok(Ok(Some(ExchangeOutcome::Released(_)))) if !owner => continue,
                        // The token was in flight: never forward it unguarded.
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "the exchange waited for is unknown");
                            return self.store_unavailable(session).await;
                        }
                        Ok(Ok(Some(outcome))) => Ok(Some(outcome)),
                        Err(elapsed) => Err(elapsed),
                    };
                    self.after_wait(session, &request, waiter.slot, outcome)
                        .await
                }
                Ok(Presented::Replay { answer, record }) => {
                    self.replay(session, &request, &answer, &record, false)
                        .await
                }
                Ok(Presented::Refused(refusal)) => {
                    self.refuse(session, &request, &refusal, false).await
                }
            };
        }
        self.fail(session, GateReply::Unreachable).await
    }

    async fn store_failure(
        &self,
        session: &mut Session,
        request: &Request<'_>,
        error: StoreError,
    ) -> pingora::Result<()> {
        match error {
            StoreError::InFlightFull | StoreError::Contended => {
                tracing::warn!(%error, "refresh grant not decided");
                self.metrics.refresh_outcome(RefreshOutcome::UpstreamError);
                write_answer(session, &GateReply::Busy.to_answer(), Freshness::FreshDate).await
            }
            StoreError::Unavailable(_) => match self.on_store_error {
                OnStoreError::FailOpen => self.forward_unguarded(session, request).await,
                OnStoreError::FailClosed => self.store_unavailable(session).await,
            },
        }
    }

    /// `503 temporarily_unavailable`: the store cannot decide this grant.
    pub(super) async fn store_unavailable(&self, session: &mut Session) -> pingora::Result<()> {
        self.metrics.refresh_outcome(RefreshOutcome::Refused);
        self.metrics.refused(RefusalReason::StoreUnavailable);
        let reply = GateReply::StoreUnavailable.to_answer();
        write_answer(session, &reply, Freshness::FreshDate).await
    }

    /// `fail-open` while the store is unavailable: forward the grant as it came and answer
    /// the IdP's answer verbatim, remembering nothing; the IdP's own rules apply.
    async fn forward_unguarded(
        &self,
        session: &mut Session,
        request: &Request<'_>,
    ) -> pingora::Result<()> {
        audit::forwarded_unguarded(&request.audit_facts(), self.clock.now());
        let header = match exchange_request(
            request.header,
            request.body.len(),
            request.peer,
            request.proto,
        ) {
            Ok(header) => header,
            Err(_) => return self.fail(session, GateReply::Internal).await,
        };
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.request_timeout,
            self.exchanger.send(header, request.body.clone()),
        )
        .await;
        self.metrics
            .upstream_duration(UpstreamKind::Refresh, started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(answer)) => {
                self.metrics.refresh_outcome(RefreshOutcome::Unguarded);
                write_answer(session, &answer, Freshness::Verbatim).await
            }
            Ok(Err(_)) => self.fail(session, GateReply::Unreachable).await,
            Err(_) => self.fail(session, GateReply::Timeout).await,
        }
    }

    /// First use: start the exchange as its own task (it belongs to the claim), then wait
    /// for its answer up to `request_timeout`.
    async fn forward(
        self: &Arc<Self>,
        session: &mut Session,
        request: &Request<'_>,
        family: TokenFingerprint,
    ) -> pingora::Result<()> {
        let (sender, receiver) = oneshot::channel();
        let upstream_header = match exchange_request(
            request.header,
            request.body.len(),
            request.peer,
            request.proto,
        ) {
            Ok(header) => header,
            Err(_) => {
                // Nothing was sent: release the claim so the client can retry.
                self.complete(
                    &request.fingerprint,
                    ExchangeOutcome::Released(Released::Unreachable),
                )
                .await;
                return self.fail(session, GateReply::Internal).await;
            }
        };
        let life = self.detached.track(request.source);
        let exchange = Exchange {
            life: life.clone(),
            gate: self.clone(),
            token: request.token.clone(),
            fingerprint: request.fingerprint,
            client: request.client.clone(),
            source: request.source,
            family,
            header: upstream_header,
            body: request.body.clone(),
            request_id: request.request_id.clone(),
            token_url: request.token_url.clone(),
        };
        tokio::spawn(exchange.run(sender));
        // Until its answer arrives, the client may leave (this future is dropped) or give up
        // (the timeout): the exchange then runs on detached, counted for its address.
        let mut waiting = ClientWait {
            life,
            gate: self.clone(),
            answered: false,
        };
        let wait = tokio::time::timeout(self.request_timeout, receiver);
        tokio::pin!(wait);
        // Watch the client's connection meanwhile: Pingora does not read it while a filter
        // runs, so a client that closes would otherwise be noticed only at the timeout.
        let answer = tokio::select! {
            answer = &mut wait => answer,
            closed = session.read_body_or_idle(true) => {
                if closed.is_err() {
                    // Closed, or only half-closed (a client may still read the answer):
                    // the exchange counts as detached from now on, and the answer is still
                    // written if it comes in time.
                    waiting.detach();
                }
                // Otherwise: bytes of a pipelined request; nothing to watch any more.
                wait.await
            }
        };
        // A client that waited its whole `request_timeout` was answered (504): it is not
        // counted as detached; only a client that left before is.
        waiting.answered = true;
        drop(waiting);
        match answer {
            Ok(Ok(FirstAnswer::Upstream { answer, success })) => {
                let outcome = if success {
                    RefreshOutcome::Forwarded
                } else {
                    RefreshOutcome::UpstreamError
                };
                self.metrics.refresh_outcome(outcome);
                write_answer(session, &answer, Freshness::Verbatim).await
            }
            Ok(Ok(FirstAnswer::Failed(reply))) => self.fail(session, reply).await,
            Ok(Err(_)) => self.fail(session, GateReply::Unreachable).await,
            Err(_) => self.fail(session, GateReply::Timeout).await,
        }
    }

    async fn after_wait(
        self: &Arc<Self>,
        session: &mut Session,
        request: &Request<'_>,
        slot: u32,
        outcome: Result<Option<ExchangeOutcome>, tokio::time::error::Elapsed>,
    ) -> pingora::Result<()> {
        let outcome = match outcome {
            Err(_) => return self.fail(session, GateReply::Timeout).await,
            Ok(None) => return self.fail(session, GateReply::Unreachable).await,
            Ok(Some(outcome)) => outcome,
        };
        match outcome {
            ExchangeOutcome::Rotated { record, answer, .. } => {
                let policy = self.policy();
                tokio::time::sleep(policy.release_delay(slot)).await;
                let who = Presenter {
                    client: &request.client,
                    source: request.source,
                };
                let decision = self
                    .store
                    .decide_after_wait(
                        &request.fingerprint,
                        &record,
                        &who,
                        &policy,
                        self.clock.now(),
                    )
                    .await;
                match decision {
                    Ok(AfterWait::Replay(record)) => {
                        self.replay(session, request, &answer, &record, true).await
                    }
                    Ok(AfterWait::Refuse(refusal)) => {
                        self.refuse(session, request, &refusal, true).await
                    }
                    // The token rotated: never forward it unguarded, whatever the policy.
                    Err(error) => {
                        tracing::warn!(%error, "replay not decided");
                        self.store_unavailable(session).await
                    }
                }
            }
            ExchangeOutcome::Released(Released::Answered { answer, success }) => {
                match answer.open(&request.token) {
                    Ok(answer) => {
                        let outcome = if success {
                            RefreshOutcome::Coalesced
                        } else {
                            RefreshOutcome::UpstreamError
                        };
                        self.metrics.refresh_outcome(outcome);
                        write_answer(session, &answer, Freshness::FreshDate).await
                    }
                    Err(_) => self.fail(session, GateReply::Internal).await,
                }
            }
            ExchangeOutcome::Released(Released::Unreachable) => {
                self.fail(session, GateReply::Unreachable).await
            }
            ExchangeOutcome::Released(Released::TimedOut) => {
                self.fail(session, GateReply::Timeout).await
            }
        }
    }

    async fn replay(
        &self,
        session: &mut Session,
        request: &Request<'_>,
        sealed: &SealedAnswer,
        record: &TokenRecord,
        coalesced: bool,
    ) -> pingora::Result<()> {
        let Ok(answer) = sealed.open(&request.token) else {
            return self.fail(session, GateReply::Internal).await;
        };
        audit::replay_answered(
            &self.metrics,
            &request.audit_facts(),
            &first_use(record),
            coalesced,
            self.clock.now(),
        );
        write_answer(session, &answer, Freshness::FreshDate).await
    }

    async fn refuse(
        self: &Arc<Self>,
        session: &mut Session,
        request: &Request<'_>,
        refusal: &Refusal,
        coalesced: bool,
    ) -> pingora::Result<()> {
        let now = self.clock.now();
        let facts = request.audit_facts();
        let first = refusal.record.as_deref().map(first_use);
        audit::replay_refused(
            &self.metrics,
            &facts,
            first.as_ref(),
            refusal.reason,
            coalesced,
            now,
        );
        if refusal.revoked_family {
            audit::family_revoked(&facts, refusal.family.display(), refusal.reason, now);
        }
        if refusal.revoked_family || refusal.reason == RefusalReason::FamilyRevoked {
            self.revoke_at_idp(request, refusal.family);
        }
        let reply = GateReply::InvalidGrant(refusal.reason.description());
        write_answer(session, &reply.to_answer(), Freshness::FreshDate).await
    }

    /// Ask the IdP (RFC 7009) to revoke the presented token of a revoked family, with the
    /// presenting client's own credentials (the gate holds no client secrets). Each token is
    /// sent once; revoking any live member revokes the grant at IdPs that tie tokens to it.
    fn revoke_at_idp(self: &Arc<Self>, request: &Request<'_>, family: TokenFingerprint) {
        let Some(path) = self.revocation_path.clone() else {
            return;
        };
        if self.revoked_at_idp.contains_key(&request.fingerprint) {
            return;
        }
        self.revoked_at_idp.insert(request.fingerprint, ());
        let encode = |v: &[u8]| {
            percent_encoding::percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut body = format!(
            "token={}&token_type_hint=refresh_token",
            encode(request.token.expose())
        );
        let authorization = request.header.headers.get("authorization").cloned();
        if authorization.is_none() {
            body.push_str("&client_id=");
            body.push_str(&encode(request.credentials.client_id.as_bytes()));
            if let Some(secret) = &request.credentials.secret {
                body.push_str("&client_secret=");
                body.push_str(&encode(secret.expose()));
            }
        }
        let header = RequestHeader::build("POST", path.as_bytes(), None).and_then(|mut h| {
            if let Some(host) = request.header.headers.get("host") {
                h.insert_header("host", host.clone())?;
            }
            if let Some(authorization) = authorization {
                h.insert_header("authorization", authorization)?;
            }
            h.insert_header("content-type", "application/x-www-form-urlencoded")?;
            h.insert_header("content-length", body.len().to_string())?;
            h.insert_header("x-request-id", request.request_id.as_str())?;
            Ok(h)
        });
        let Ok(header) = header else {
            return;
        };
        let gate = self.clone();
        let request_id = request.request_id.clone();
        let token_url = request.token_url.clone();
        let client_id = request.client.client_id.clone();
        let (source, fingerprint) = (request.source, request.fingerprint);
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                gate.request_timeout,
                gate.exchanger.send(header, Bytes::from(body)),
            )
            .await;
            let status = match result {
                Ok(Ok(answer)) => Some(answer.status),
                _ => None,
            };
            let facts = RequestFacts {
                request_id: &request_id,
                token_url: &token_url,
                client_id: &client_id,
                client_ip: source,
                token: fingerprint.display(),
            };
            audit::idp_revocation(&facts, family.display(), status, gate.clock.now());
        });
    }

    async fn fail(&self, session: &mut Session, reply: GateReply) -> pingora::Result<()> {
        self.metrics.refresh_outcome(RefreshOutcome::UpstreamError);
        write_answer(session, &reply.to_answer(), Freshness::FreshDate).await
    }

    async fn complete(&self, fingerprint: &TokenFingerprint, outcome: ExchangeOutcome) {
        if let Err(error) = self
            .store
            .complete(fingerprint, outcome, &self.policy())
            .await
        {
            tracing::error!(%error, token = %fingerprint.display(), "could not record the end of an exchange");
        }
    }

    fn warn_not_rotating(&self, client: &ClientIdentity) {
        if !self.warned_clients.contains_key(&client.client_id) {
            self.warned_clients.insert(client.client_id.clone(), ());
            tracing::warn!(
                client_id = %client.client_id,
                "the IdP answered a refresh grant without a new refresh token: nothing is \
                 tombstoned for this client (one-time use needs rotation at the IdP)"
            );
        }
    }
}

fn first_use(record: &TokenRecord) -> FirstUse<'_> {
    FirstUse {
        client_id: &record.client.client_id,
        client_ip: record.source,
        subject: record.subject.as_deref(),
        at: record.first_use,
        family: record.family.display(),
        replays: record.replays(),
    }
}

/// The first client's wait for its exchange's answer: if the client closes its connection
/// (or the request is dropped) before the answer, the exchange is detached.
struct ClientWait {
    life: Arc<ExchangeLife>,
    gate: Arc<RefreshGate>,
    answered: bool,
}

impl ClientWait {
    /// The client left: the exchange runs on detached.
    fn detach(&self) {
        self.life.detach();
        self.gate
            .metrics
            .detached_exchanges(self.gate.detached.total());
    }
}

impl Drop for ClientWait {
    fn drop(&mut self) {
        // Dropped without an answer: Pingora dropped this request (the client is gone).
        if !self.answered {
            self.detach();
        }
    }
}

/// One exchange, owned by the claim: it runs to its end even if the client leaves.
struct Exchange {
    life: Arc<ExchangeLife>,
    gate: Arc<RefreshGate>,
    token: RefreshToken,
    fingerprint: TokenFingerprint,
    client: ClientIdentity,
    source: IpAddr,
    family: TokenFingerprint,
    header: RequestHeader,
    body: Bytes,
    request_id: String,
    token_url: String,
}

/// Releases a claim whose exchange ended without completing it (a panic, a cancelled
/// task), so no token stays "in flight" and its waiters are woken.
struct ClaimGuard {
    gate: Arc<RefreshGate>,
    fingerprint: TokenFingerprint,
    life: Arc<ExchangeLife>,
    armed: bool,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        // However the exchange ended, it no longer counts as detached.
        self.life.finish();
        self.gate
            .metrics
            .detached_exchanges(self.gate.detached.total());
        if !self.armed {
            return;
        }
        tracing::error!(
            token = %self.fingerprint.display(),
            "a refresh exchange ended without an outcome; its claim is released"
        );
        let (gate, fingerprint) = (self.gate.clone(), self.fingerprint);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                gate.complete(
                    &fingerprint,
                    ExchangeOutcome::Released(Released::Unreachable),
                )
                .await;
            });
        }
    }
}

impl Exchange {
    async fn run(self, first: oneshot::Sender<FirstAnswer>) {
        let gate = self.gate.clone();
        let mut guard = ClaimGuard {
            gate: gate.clone(),
            fingerprint: self.fingerprint,
            life: self.life.clone(),
            armed: true,
        };
        let started = Instant::now();
        let result = tokio::time::timeout(
            gate.exchange_timeout,
            gate.exchanger.send(self.header.clone(), self.body.clone()),
        )
        .await;
        gate.metrics
            .upstream_duration(UpstreamKind::Refresh, started.elapsed().as_secs_f64());
        let (outcome, answer) = match result {
            Err(_) => (
                ExchangeOutcome::Released(Released::TimedOut),
                FirstAnswer::Failed(GateReply::Timeout),
            ),
            Ok(Err(ExchangeFailure::NotSent)) => (
                ExchangeOutcome::Released(Released::Unreachable),
                FirstAnswer::Failed(GateReply::Unreachable),
            ),
            Ok(Err(ExchangeFailure::AfterSend)) => {
                tracing::warn!(
                    token = %self.fingerprint.display(),
                    "refresh exchange failed after the request was sent; the outcome at the IdP is unknown"
                );
                (
                    ExchangeOutcome::Released(Released::Unreachable),
                    FirstAnswer::Failed(GateReply::Unreachable),
                )
            }
            Ok(Ok(answer)) => self.judge(answer),
        };
        gate.complete(&self.fingerprint, outcome).await;
        guard.armed = false;
        // The first client may have gone: its answer is remembered all the same.
        let _ = first.send(answer);
    }

    /// Decide what an upstream answer means: a rotation, or a release.
    fn judge(&self, answer: Answer) -> (ExchangeOutcome, FirstAnswer) {
        let parsed = token_response::parse(&answer, &self.gate.subject_claim);
        let Some(response) = parsed else {
            let sealed = Arc::new(SealedAnswer::seal(&self.token, &answer));
            return (
                ExchangeOutcome::Released(Released::Answered {
                    answer: sealed,
                    success: false,
                }),
                FirstAnswer::Upstream {
                    answer,
                    success: false,
                },
            );
        };
        let successor = match &response.refresh_token {
            Some(next) if *next != self.token => next,
            _ => {
                self.gate.metrics.not_rotating();
                self.gate.warn_not_rotating(&self.client);
                let sealed = Arc::new(SealedAnswer::seal(&self.token, &replayable(&answer)));
                return (
                    ExchangeOutcome::Released(Released::Answered {
                        answer: sealed,
                        success: true,
                    }),
                    FirstAnswer::Upstream {
                        answer,
                        success: true,
                    },
                );
            }
        };
        let now = self.gate.clock.now();
        audit::rotated(
            &RequestFacts {
                request_id: &self.request_id,
                token_url: &self.token_url,
                client_id: &self.client.client_id,
                client_ip: self.source,
                token: self.fingerprint.display(),
            },
            response.subject.as_deref(),
            self.family.display(),
            now,
        );
        let record = TokenRecord::new(
            now,
            self.client.clone(),
            self.source,
            response.subject.map(String::into_boxed_str),
            self.family,
        );
        let sealed = Arc::new(SealedAnswer::seal(&self.token, &replayable(&answer)));
        (
            ExchangeOutcome::Rotated {
                record: Arc::new(record),
                answer: sealed,
                successor: Some(self.gate.fingerprinter.token(successor)),
            },
            FirstAnswer::Upstream {
                answer,
                success: true,
            },
        )
    }
}
