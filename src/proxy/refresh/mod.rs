//! Handling one refresh grant: present the token to the store, then forward (owning the
//! exchange), wait for the exchange under way, replay, or refuse. Decisions come from the
//! store and the pure policy; this module only sequences them and returns a [`Reply`],
//! which the glue writes and counts. The IdP sits behind [`TokenEndpoint`] and the client's
//! connection behind [`ClientLink`], so every sequence is unit-tested without sockets.

mod binding;
mod client;
mod exchange_task;
mod observe;
mod reply;
mod revoke;
mod spacing;
#[cfg(test)]
mod tests;

pub use binding::{MAX_ASSERTION_LIFETIME, MAX_PROOF_SKEW};
pub use client::{ClientLink, Unwatched};
pub use reply::Reply;

use crate::clock::{Clock, UnixMillis};
use crate::config::{ClientKeys, OnStoreError};
use crate::http::answer::Answer;
use crate::http::respond::GateReply;
use crate::oauth::credentials::{ClientCredentials, ClientIdentity, DpopBinding};
use crate::oauth::dpop::peek_proof_thumbprint;
use crate::oauth::grant::RefreshGrant;
use crate::observe::audit::{
    Auditor, DetachedLimitReached, FamilyRevoked, FirstUse, ForwardedUnguarded, ReplayAnswered,
    ReplayRefused, RequestFacts, RotationUnacknowledged,
};
use crate::observe::grace::GraceAdvice;
use crate::observe::metrics::{Metrics, RefreshOutcome, ReplayDelayOutcome, UpstreamKind};
use crate::policy::detached::{DetachedExchanges, ExchangeLife};
use crate::policy::observe::Mode;
use crate::policy::{Policy, Presenter, RefusalReason};
use crate::proxy::exchange::TokenEndpoint;
use crate::proxy::write::exchange_request;
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::{Fingerprinter, TokenFingerprint};
use crate::seal::secret::RefreshToken;
use crate::store::{
    AfterWait, ExchangeOutcome, Observations, Presented, Refusal, Released, Replication,
    StoreError, TokenRecord, TokenStore, Waiter,
};
use bytes::Bytes;
use client::ClientWait;
use exchange_task::{Exchange, FirstAnswer};
use pingora::http::RequestHeader;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How many times one request presents its token. A presentation is repeated only when
/// the exchange it waited for ended with nothing it may share (the claimant gave the claim
/// back, or the outcome belongs to another client); the request deadline bounds them all.
const MAX_PRESENTATIONS: usize = 3;

/// The refresh handler's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// How long a client waits for its answer (`[upstream] request_timeout`).
    pub request_timeout: Duration,
    /// How long an exchange may run in all, its client gone or not.
    pub exchange_timeout: Duration,
    /// The id_token claim reported as the subject (`[audit] subject_claim`).
    pub subject_claim: String,
    /// The IdP's RFC 7009 revocation path, for revoking families there.
    pub revocation_path: Option<String>,
    /// What refresh grants get while the store is unavailable.
    pub on_store_error: OnStoreError,
    /// Exchanges whose clients left that one address may have running
    /// (`[rotation] max_detached_per_source`).
    pub max_detached_per_source: u32,
    /// The keys that verify each client's assertions (`[clients."<id>"]
    /// assertion_jwks_file` / `assertion_secret_file`).
    pub client_keys: ClientKeys,
    /// The gate's URL as clients see it (`[listen] public_url`, e.g. behind an ingress):
    /// the token endpoint assertions and DPoP proofs must name. Without it, the scheme and
    /// `Host` of each request.
    pub public_url: Option<String>,
    /// Refresh grants forwarded at once in observe mode (`[rotation] max_in_flight`).
    pub max_in_flight: usize,
}

/// The shared parts the refresh handler works with.
pub struct RefreshParts {
    /// The rotation rules at start-up (replaced on reload by [`RefreshHandler::set_policy`]).
    pub policy: Policy,
    /// The state of every fingerprint.
    pub store: Arc<dyn TokenStore>,
    /// Keys the fingerprints.
    pub fingerprinter: Fingerprinter,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Audit events and the metrics they count into.
    pub auditor: Arc<Auditor>,
    /// Where exchanges go.
    pub endpoint: Arc<dyn TokenEndpoint>,
    /// The grace advice fed by every replay of the same client and source.
    pub grace_advice: Arc<GraceAdvice>,
    /// What observe mode remembers (this replica's own).
    pub observations: Observations,
}

/// Decides and answers refresh grants; shared by all requests.
pub struct RefreshHandler {
    policy: arc_swap::ArcSwap<Policy>,
    store: Arc<dyn TokenStore>,
    fingerprinter: Fingerprinter,
    clock: Arc<dyn Clock>,
    auditor: Arc<Auditor>,
    grace_advice: Arc<GraceAdvice>,
    endpoint: Arc<dyn TokenEndpoint>,
    settings: RefreshSettings,
    client_keys: arc_swap::ArcSwap<ClientKeys>,
    spacing: spacing::AnswerSpacing,
    revoked_at_idp: moka::sync::Cache<TokenFingerprint, ()>,
    warned_clients: moka::sync::Cache<Box<str>, ()>,
    detached: Arc<DetachedExchanges>,
    observations: Observations,
    observing: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for RefreshHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshHandler")
            .field("policy", &self.policy.load())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
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
    /// The token endpoint URL that assertions and DPoP proofs must name, as far as the
    /// request shows it (its scheme, a plain `Host`, its path); `None` when its `Host` is not
    /// a plain host. `[listen] public_url` takes precedence for scheme and host.
    pub endpoint: Option<Endpoint>,
}

/// Where the client sent its refresh grant, from the request itself.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host[:port]` or `https://...`, from the scheme and a plain `Host`; `None` when
    /// the `Host` is not plain.
    pub origin: Option<String>,
    /// The request's path, without `;` parameters.
    pub path: String,
}

/// One refresh grant as the glue hands it over.
pub struct RefreshRequest {
    /// The classified grant: token and client credentials.
    pub grant: RefreshGrant,
    /// The client's request header (sent upstream, cleaned, on first use).
    pub header: RequestHeader,
    /// The body as received (sent upstream unchanged).
    pub body: Bytes,
    /// Where it came from.
    pub origin: Origin,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body carries the token and the client's credentials: never printed.
        f.debug_struct("RefreshRequest")
            .field("client_id", &self.grant.client.client_id)
            .field("body_len", &self.body.len())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// What the gate does with a grant it forwards untouched, once its token-like values are
/// checked against the tombstones.
#[derive(Debug)]
pub enum ForwardCheck {
    /// None of them is a spent refresh token: forward.
    Forward,
    /// One is a spent refresh token: refuse the request.
    Spent,
    /// The check could not be made and the store policy is fail-closed: answer this.
    Answer(Reply),
}

/// The facts of one refresh request.
struct Request {
    token: RefreshToken,
    /// What answers are sealed under: every spelling the IdP reads as this token opens them.
    sealing_token: RefreshToken,
    credentials: ClientCredentials,
    fingerprint: TokenFingerprint,
    /// Who presents it, as far as the gate can tell now (compared with the record).
    client: ClientIdentity,
    /// Who a first use records (the IdP verifies the first use).
    recorded_client: ClientIdentity,
    /// One-time keys spent once a first use rotates.
    spend_on_rotation: Vec<([u8; 32], Duration)>,
    source: IpAddr,
    peer: Option<IpAddr>,
    header: RequestHeader,
    body: Bytes,
    proto: &'static str,
    request_id: String,
    token_url: String,
}

impl Request {
    fn audit_facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            request_id: &self.request_id,
            token_url: &self.token_url,
            client_id: &self.client.client_id,
            client_ip: self.source,
            token: self.fingerprint.display(),
        }
    }

    fn presenter(&self) -> Presenter<'_> {
        Presenter {
            client: &self.client,
            source: self.source,
        }
    }

    /// The request sent upstream: the client's, cleaned.
    fn upstream_header(&self) -> Option<RequestHeader> {
        exchange_request(&self.header, self.body.len(), self.peer, self.proto).ok()
    }
}

impl RefreshHandler {
    /// A refresh handler over these parts.
    pub fn new(parts: RefreshParts, settings: RefreshSettings) -> Self {
        parts
            .grace_advice
            .set_configured(parts.policy.per_client.keys().cloned().collect());
        RefreshHandler {
            policy: arc_swap::ArcSwap::from_pointee(parts.policy),
            store: parts.store,
            fingerprinter: parts.fingerprinter,
            clock: parts.clock,
            auditor: parts.auditor,
            endpoint: parts.endpoint,
            grace_advice: parts.grace_advice,
            revoked_at_idp: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            warned_clients: moka::sync::Cache::new(10_000),
            detached: DetachedExchanges::new(settings.max_detached_per_source),
            client_keys: arc_swap::ArcSwap::from_pointee(settings.client_keys.clone()),
            spacing: spacing::AnswerSpacing::new(),
            observations: parts.observations,
            observing: Arc::new(tokio::sync::Semaphore::new(settings.max_in_flight)),
            settings,
        }
    }

    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replace the rules (configuration reload); requests already deciding keep theirs.
    /// A client switched from observe back to enforce gets its `observed_until` mark.
    pub fn set_policy(&self, mut policy: Policy) {
        self.grace_advice
            .set_configured(policy.per_client.keys().cloned().collect());
        crate::policy::observe::carry_mode_switches(&self.policy(), &mut policy, self.clock.now());
        self.policy.store(Arc::new(policy));
    }

    /// A presentation of an already-used token, `outcome`: its delay since the first use
    /// (`first`: its client, address and time) is observed, and fed to the grace advice
    /// when the client and source are the first use's.
    fn replay_delay(
        &self,
        presenter: (&ClientIdentity, IpAddr),
        first: (&ClientIdentity, IpAddr, UnixMillis),
        outcome: ReplayDelayOutcome,
    ) {
        let (client, source, first_use) = first;
        let now = self.clock.now();
        let delay = now.since(first_use);
        self.metrics().replay_delay(outcome, delay.as_secs_f64());
        if client.client_id == presenter.0.client_id && source == presenter.1 {
            self.grace_advice.record(&presenter.0.client_id, delay, now);
        }
    }

    /// Replace the clients' assertion keys (configuration reload).
    pub fn set_client_keys(&self, keys: ClientKeys) {
        self.client_keys.store(Arc::new(keys));
    }

    /// The audit events' sink, shared with the glue.
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.auditor
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        self.auditor.metrics()
    }

    /// The time now, by the injected clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Decide one refresh grant and return its answer.
    pub async fn handle(
        self: &Arc<Self>,
        refresh: RefreshRequest,
        client: &mut dyn ClientLink,
    ) -> Reply {
        let RefreshRequest {
            grant,
            header,
            body,
            origin,
        } = refresh;
        if self.policy().rules_for(&grant.client.client_id).mode == Mode::Observe {
            let request = self.observed_request(grant, header, body, origin);
            return self.observe(request, client).await;
        }
        let endpoint = self.endpoint_url(origin.endpoint.as_ref());
        let bound = match self
            .bind(&grant.client, grant.dpop.as_ref(), endpoint.as_deref())
            .await
        {
            Ok(bound) => bound,
            Err(error) => {
                tracing::warn!(%error, "could not tell whether a one-time value is new");
                return store_unavailable();
            }
        };
        let request = self.request(grant, header, body, origin, bound);
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        for _ in 0..MAX_PRESENTATIONS {
            let presented = self
                .store
                .present(
                    &request.fingerprint,
                    &request.presenter(),
                    &self.policy(),
                    self.clock.now(),
                )
                .await;
            match presented {
                Err(error) => return self.store_failure(&request, error).await,
                Ok(Presented::Claimed { .. }) if !self.detached.admits(request.source) => {
                    return self.source_busy(&request).await;
                }
                Ok(Presented::Claimed { family }) => {
                    return self.forward(&request, family, client).await;
                }
                Ok(Presented::Wait(waiter)) => {
                    if let Some(reply) = self.wait(&request, waiter, deadline).await {
                        return reply;
                    }
                }
                Ok(Presented::Replay { answer, record }) => {
                    // The nth answer of the token (waiters and replays, on every replica) is
                    // due n spacings after the rotation.
                    let due = record
                        .first_use
                        .plus(self.policy().release_delay(record.replays()))
                        .since(self.clock.now());
                    spacing::pause(self.answer_delay(&request.fingerprint, due)).await;
                    return self.replay(&request, &answer, &record, false);
                }
                Ok(Presented::Refused(refusal)) => {
                    return self.refuse(&request, &refusal, false);
                }
            }
        }
        failed(GateReply::Unreachable)
    }

    /// A request in observe mode: nothing is verified and no one-time value spent (the IdP
    /// verifies what it receives); the identity compared is the client's as presented,
    /// an assertion taken as its client's, a DPoP proof bound to the key it names.
    fn observed_request(
        &self,
        grant: RefreshGrant,
        header: RequestHeader,
        body: Bytes,
        origin: Origin,
    ) -> Request {
        let dpop = grant.dpop.as_ref().map_or(DpopBinding::Absent, |proof| {
            let proof = String::from_utf8_lossy(proof.expose());
            peek_proof_thumbprint(&proof)
                .map_or(DpopBinding::Unproven, |jkt| DpopBinding::Key(jkt.0))
        });
        let identity = grant.client.bound_identity(&self.fingerprinter, true, dpop);
        let bound = binding::Bound {
            presented: identity.clone(),
            recorded: identity,
            spend_on_rotation: Vec::new(),
        };
        self.request(grant, header, body, origin, bound)
    }

    /// The facts of one refresh request, with its identities.
    fn request(
        &self,
        grant: RefreshGrant,
        header: RequestHeader,
        body: Bytes,
        origin: Origin,
        bound: binding::Bound,
    ) -> Request {
        Request {
            fingerprint: self.fingerprinter.token(&grant.token),
            client: bound.presented,
            recorded_client: bound.recorded,
            spend_on_rotation: bound.spend_on_rotation,
            credentials: grant.client,
            sealing_token: self.fingerprinter.sealing_token(&grant.token),
            token: grant.token,
            source: origin.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            peer: origin.peer,
            header,
            body,
            proto: origin.proto,
            request_id: origin.request_id,
            token_url: origin.token_url,
        }
    }

    /// Wait for the exchange under way; `None` sends the request to present again.
    ///
    /// Every answer to its owner: an outcome that rotated nothing (an IdP error, a
    /// non-rotating answer, a gate error) is handed only to a waiter that authenticated as the
    /// claimant did; another presents on its own, so a wrong secret in front of it cannot
    /// spoil its refresh. A rotation is decided by the policy (`client_mismatch`).
    async fn wait(
        self: &Arc<Self>,
        request: &Request,
        waiter: Waiter,
        deadline: tokio::time::Instant,
    ) -> Option<Reply> {
        let owner = waiter.claimant.as_ref() == Some(&request.client);
        match tokio::time::timeout_at(deadline, waiter.outcome).await {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(ExchangeOutcome::Released(_)))) if !owner => None,
            Ok(Ok(Some(outcome))) => Some(self.after_wait(request, waiter.slot, outcome).await),
            // The token was in flight: never forward it unguarded.
            Ok(Err(error)) => {
                tracing::warn!(%error, "the exchange waited for is unknown");
                Some(store_unavailable())
            }
            Err(_) => Some(failed(GateReply::Timeout)),
        }
    }

    /// The IdP answered 200 to a revocation of `token` that passed through the gate:
    /// close its replay window and its family's (later replays are refused `revoked`).
    pub async fn revoked(&self, token: &RefreshToken, request_id: &str) {
        let fingerprint = self.fingerprinter.token(token);
        match self
            .store
            .close_window(&fingerprint, RefusalReason::Revoked, self.clock.now())
            .await
        {
            Ok(()) => tracing::info!(
                token = %fingerprint.display(),
                request_id,
                "token revoked at the IdP: its replay window is closed"
            ),
            Err(error) => tracing::warn!(
                %error,
                token = %fingerprint.display(),
                request_id,
                "token revoked at the IdP, but its replay window could not be closed"
            ),
        }
    }

    /// Check a grant forwarded untouched: is one of its token-like values a token the gate
    /// tombstoned (a spent refresh token as a token exchange's `subject_token`)?
    pub async fn check_forwarded(&self, suspects: &[RefreshToken]) -> ForwardCheck {
        let now = self.clock.now();
        for suspect in suspects {
            let fingerprint = self.fingerprinter.token(suspect);
            match self.store.is_spent(&fingerprint, now).await {
                Ok(false) => {}
                Ok(true) => return ForwardCheck::Spent,
                Err(error) => {
                    tracing::warn!(%error, "could not check a forwarded grant against the tombstones");
                    // As for refresh grants: fail-closed answers 503; fail-open forwards,
                    // and the IdP decides the grant itself.
                    return match self.settings.on_store_error {
                        OnStoreError::FailClosed => ForwardCheck::Answer(store_unavailable()),
                        OnStoreError::FailOpen => ForwardCheck::Forward,
                    };
                }
            }
        }
        ForwardCheck::Forward
    }

    async fn store_failure(&self, request: &Request, error: StoreError) -> Reply {
        match error {
            StoreError::InFlightFull | StoreError::Contended => {
                tracing::warn!(%error, "refresh grant not decided");
                Reply::gate(GateReply::Busy, RefreshOutcome::UpstreamError)
            }
            StoreError::Unavailable(_) => match self.settings.on_store_error {
                OnStoreError::FailOpen => self.forward_unguarded(request).await,
                OnStoreError::FailClosed => store_unavailable(),
            },
        }
    }

    /// This address already has its share of exchanges whose clients left: give the
    /// claim back and ask it to retry.
    async fn source_busy(&self, request: &Request) -> Reply {
        self.complete(
            &request.fingerprint,
            ExchangeOutcome::Released(Released::Unreachable),
        )
        .await;
        DetachedLimitReached {
            request: request.audit_facts(),
            now: self.clock.now(),
        }
        .emit(&self.auditor);
        Reply::gate(GateReply::SourceBusy, RefreshOutcome::UpstreamError)
    }

    /// `fail-open` while the store is unavailable: forward the grant as it came and answer
    /// the IdP's answer verbatim, remembering nothing; the IdP's own rules apply.
    async fn forward_unguarded(&self, request: &Request) -> Reply {
        ForwardedUnguarded {
            request: request.audit_facts(),
            now: self.clock.now(),
        }
        .emit(&self.auditor);
        let Some(header) = request.upstream_header() else {
            return Reply::internal();
        };
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.settings.request_timeout,
            self.endpoint.send(header, request.body.clone()),
        )
        .await;
        self.metrics()
            .upstream_duration(UpstreamKind::Refresh, started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(answer)) => Reply::upstream(answer, RefreshOutcome::Unguarded),
            Ok(Err(_)) => failed(GateReply::Unreachable),
            Err(_) => failed(GateReply::Timeout),
        }
    }

    /// First use: start the exchange as its own task (it belongs to the claim), then wait
    /// for its answer up to `request_timeout`, watching the client meanwhile.
    async fn forward(
        self: &Arc<Self>,
        request: &Request,
        family: TokenFingerprint,
        client: &mut dyn ClientLink,
    ) -> Reply {
        let Some(upstream_header) = request.upstream_header() else {
            // Nothing was sent: release the claim so the client can retry.
            self.complete(
                &request.fingerprint,
                ExchangeOutcome::Released(Released::Unreachable),
            )
            .await;
            return Reply::internal();
        };
        let (life, receiver) = self.start_exchange(request, family, upstream_header);
        match self.first_answer(life, receiver, client).await {
            Ok(Ok(FirstAnswer::Upstream { answer, success })) => {
                let outcome = if success {
                    RefreshOutcome::Forwarded
                } else {
                    RefreshOutcome::UpstreamError
                };
                Reply::upstream(answer, outcome)
            }
            Ok(Ok(FirstAnswer::Failed(reply))) => failed(reply),
            // The exchange task ended without an answer (a panic): its guard released the
            // claim, so a retry can succeed.
            Ok(Err(_)) => Reply::gate(GateReply::Unreachable, RefreshOutcome::InternalError),
            Err(_) => failed(GateReply::Timeout),
        }
    }

    /// The first client's wait, up to `request_timeout`, for the answer of an exchange that
    /// runs on its own task, watching the client's connection meanwhile: Pingora does not
    /// read it while a filter runs, so a client that closes would otherwise be noticed only
    /// at the timeout. Until the answer arrives, the client may leave (this future is
    /// dropped) or give up (the timeout): the exchange then runs on detached, counted for
    /// its address.
    async fn first_answer<T>(
        self: &Arc<Self>,
        life: Arc<ExchangeLife>,
        receiver: oneshot::Receiver<T>,
        client: &mut dyn ClientLink,
    ) -> Result<Result<T, oneshot::error::RecvError>, tokio::time::error::Elapsed> {
        let mut waiting = ClientWait {
            life,
            handler: self.clone(),
            answered: false,
        };
        let wait = tokio::time::timeout(self.settings.request_timeout, receiver);
        tokio::pin!(wait);
        let answer = tokio::select! {
            answer = &mut wait => answer,
            closed = client.closed() => {
                if closed {
                    // Closed, or only half-closed (a client may still read the answer):
                    // the exchange counts as detached from now on, and the answer is still
                    // returned if it comes in time.
                    waiting.detach();
                }
                // Otherwise: bytes of a pipelined request; nothing to watch any more.
                wait.await
            }
        };
        // A client that waited its whole `request_timeout` was answered (504): it is not
        // counted as detached; only a client that left before is.
        waiting.answered = true;
        answer
    }

    /// Spawn the exchange of a claimed token on its own task, tracked for its address; the
    /// receiver gets the first client's answer.
    fn start_exchange(
        self: &Arc<Self>,
        request: &Request,
        family: TokenFingerprint,
        header: RequestHeader,
    ) -> (Arc<ExchangeLife>, oneshot::Receiver<FirstAnswer>) {
        let (sender, receiver) = oneshot::channel();
        let life = self.detached.track(request.source);
        let exchange = Exchange {
            life: life.clone(),
            handler: self.clone(),
            token: request.token.clone(),
            sealing_token: request.sealing_token.clone(),
            fingerprint: request.fingerprint,
            client: request.recorded_client.clone(),
            source: request.source,
            family,
            header,
            body: request.body.clone(),
            request_id: request.request_id.clone(),
            token_url: request.token_url.clone(),
            spend_on_rotation: request.spend_on_rotation.clone(),
        };
        tokio::spawn(exchange.run(sender));
        (life, receiver)
    }

    /// A waiter's answer, once the exchange it waited for ended.
    async fn after_wait(
        self: &Arc<Self>,
        request: &Request,
        slot: u32,
        outcome: ExchangeOutcome,
    ) -> Reply {
        match outcome {
            ExchangeOutcome::Rotated { record, answer, .. } => {
                let policy = self.policy();
                // Waiters are released a few ms apart, so kubectl processes sharing one
                // kubeconfig do not collide on its lock.
                // The store numbers the waiters of every replica: the slot is the place.
                let due = policy.release_delay(slot);
                self.spacing
                    .placed(&request.fingerprint, due, policy.replay_spacing);
                spacing::pause(due).await;
                let decision = self
                    .store
                    .decide_after_wait(
                        &request.fingerprint,
                        &record,
                        &request.presenter(),
                        &policy,
                        self.clock.now(),
                    )
                    .await;
                match decision {
                    Ok(AfterWait::Replay(record)) => self.replay(request, &answer, &record, true),
                    Ok(AfterWait::Refuse(refusal)) => self.refuse(request, &refusal, true),
                    // The token rotated: never forward it unguarded, whatever the policy.
                    Err(error) => {
                        tracing::warn!(%error, "replay not decided");
                        store_unavailable()
                    }
                }
            }
            ExchangeOutcome::Released(Released::Answered { answer, success }) => {
                match answer.open(&request.sealing_token) {
                    Ok(answer) => {
                        let outcome = if success {
                            RefreshOutcome::Coalesced
                        } else {
                            RefreshOutcome::UpstreamError
                        };
                        Reply::remembered(answer, outcome)
                    }
                    Err(_) => Reply::internal(),
                }
            }
            ExchangeOutcome::Released(Released::Unreachable) => failed(GateReply::Unreachable),
            ExchangeOutcome::Released(Released::TimedOut) => failed(GateReply::Timeout),
        }
    }

    fn replay(
        &self,
        request: &Request,
        sealed: &SealedAnswer,
        record: &TokenRecord,
        coalesced: bool,
    ) -> Reply {
        let Ok(answer): Result<Answer, _> = sealed.open(&request.sealing_token) else {
            return Reply::internal();
        };
        ReplayAnswered {
            request: request.audit_facts(),
            first: first_use(record),
            coalesced,
            now: self.clock.now(),
        }
        .emit(&self.auditor);
        let (outcome, delay) = if coalesced {
            (RefreshOutcome::Coalesced, ReplayDelayOutcome::Coalesced)
        } else {
            (RefreshOutcome::GraceReplay, ReplayDelayOutcome::GraceReplay)
        };
        self.replay_delay((&request.client, request.source), first_of(record), delay);
        Reply::remembered(answer, outcome)
    }

    fn refuse(self: &Arc<Self>, request: &Request, refusal: &Refusal, coalesced: bool) -> Reply {
        let now = self.clock.now();
        if let Some(record) = &refusal.record {
            self.replay_delay(
                (&request.client, request.source),
                first_of(record),
                ReplayDelayOutcome::Refused,
            );
        }
        ReplayRefused {
            request: request.audit_facts(),
            first: refusal.record.as_deref().map(first_use),
            reason: refusal.reason,
            coalesced,
            now,
        }
        .emit(&self.auditor);
        if refusal.revoked_family {
            FamilyRevoked {
                request: request.audit_facts(),
                family: refusal.family.display(),
                reason: refusal.reason,
                now,
            }
            .emit(&self.auditor);
        }
        if refusal.revoked_family || refusal.reason == RefusalReason::FamilyRevoked {
            self.revoke_at_idp(request, refusal.family);
        }
        Reply::refused(
            GateReply::InvalidGrant(refusal.reason.description()),
            refusal.reason,
        )
    }

    /// How long to hold an answer for `token`: at least `at_least` (its place among every
    /// replica's answers), and `replay_spacing` after this replica's previous one (at most
    /// `max_replay_delay`); reserves its time.
    fn answer_delay(&self, token: &TokenFingerprint, at_least: Duration) -> Duration {
        let policy = self.policy();
        self.spacing.delay(
            token,
            at_least,
            policy.replay_spacing,
            policy.max_replay_delay,
        )
    }

    /// The token endpoint URL as the client sees it: `public_url` with the request's path,
    /// or the request's own scheme, plain `Host` and path; `None` when neither is known.
    fn endpoint_url(&self, endpoint: Option<&Endpoint>) -> Option<String> {
        let endpoint = endpoint?;
        let origin = match &self.settings.public_url {
            Some(base) => base.trim_end_matches('/'),
            None => endpoint.origin.as_deref()?,
        };
        Some(format!("{origin}{}", endpoint.path))
    }

    async fn complete(&self, fingerprint: &TokenFingerprint, outcome: ExchangeOutcome) {
        let rotated = match &outcome {
            ExchangeOutcome::Rotated { record, .. } => Some(record.clone()),
            ExchangeOutcome::Released(_) => None,
        };
        match self
            .store
            .complete(fingerprint, outcome, &self.policy())
            .await
        {
            Err(error) => {
                tracing::error!(%error, token = %fingerprint.display(), "could not record the end of an exchange");
            }
            Ok(Replication::NotAsked) => {}
            Ok(Replication::Acknowledged { .. }) => self.metrics().replication_ack(true),
            Ok(Replication::Missed {
                wanted,
                replicas,
                reason,
            }) => {
                let (family, client_id) = rotated.as_ref().map_or((*fingerprint, ""), |record| {
                    (record.family, &*record.client.client_id)
                });
                RotationUnacknowledged {
                    token: fingerprint.display(),
                    family: family.display(),
                    client_id,
                    wanted,
                    replicas,
                    reason,
                    now: self.clock.now(),
                }
                .emit(&self.auditor);
            }
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

/// An exchange that failed at or on the way to the IdP.
fn failed(reply: GateReply) -> Reply {
    Reply::gate(reply, RefreshOutcome::UpstreamError)
}

/// `503 temporarily_unavailable`: the store cannot decide this grant.
fn store_unavailable() -> Reply {
    Reply::refused(GateReply::StoreUnavailable, RefusalReason::StoreUnavailable)
}

/// The first use's client, address and time, for the replay delay.
fn first_of(record: &TokenRecord) -> (&ClientIdentity, IpAddr, UnixMillis) {
    (&record.client, record.source, record.first_use)
}

/// A failure the gate reports itself, counted as `outcome`.
fn failed_as(reply: GateReply, outcome: RefreshOutcome) -> Reply {
    Reply::gate(reply, outcome)
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
