//! Observe mode for one refresh grant: forwarded untouched, whatever enforce would have
//! done, and that decision recorded beside the IdP's answer (a metric, the replay delay,
//! an audit event for every presentation of an already-used token). Nothing is answered
//! from the store and nothing is written to it: the observations are this replica's own
//! (`store::Observations`), so observe keeps forwarding while the store is down. No
//! revocation is written and no RFC 7009 call is made for a would-be family revocation.
//!
//! As in enforce, the exchange runs on its own task up to `exchange_timeout`, so a client
//! that gives up at `request_timeout` does not cut off a rotation the IdP is making (it
//! is recorded when it comes), and exchanges whose clients left count against
//! `max_detached_per_source`.

use super::{failed_as, ClientLink, RefreshHandler, Reply, Request};
use crate::http::answer::Answer;
use crate::http::respond::GateReply;
use crate::oauth::credentials::ClientIdentity;
use crate::oauth::token_response;
use crate::observe::audit::{DetachedLimitReached, FirstUse, ReplayObserved, RequestFacts};
use crate::observe::metrics::{RefreshOutcome, ReplayDelayOutcome, UpstreamKind};
use crate::policy::detached::ExchangeLife;
use crate::policy::observe::{IdpVerdict, Would};
use crate::policy::Presenter;
use crate::proxy::exchange::ExchangeFailure;
use crate::seal::fingerprint::TokenFingerprint;
use crate::seal::secret::RefreshToken;
use crate::store::{Answered, ObservedPresentation};
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// One observed exchange, on its own task.
struct ObservedExchange {
    handler: Arc<RefreshHandler>,
    seen: ObservedPresentation,
    token: RefreshToken,
    fingerprint: TokenFingerprint,
    client: ClientIdentity,
    source: IpAddr,
    request_id: String,
    token_url: String,
    header: RequestHeader,
    body: Bytes,
}

/// Ends an observed exchange however it ends: its in-flight permit is returned, it stops
/// counting as detached, and a first use that got no answer is released (as in enforce,
/// nothing stays "in flight").
struct ExchangeGuard {
    handler: Arc<RefreshHandler>,
    seen: ObservedPresentation,
    life: Arc<ExchangeLife>,
    _permit: OwnedSemaphorePermit,
    answered: bool,
}

impl Drop for ExchangeGuard {
    fn drop(&mut self) {
        self.life.finish();
        self.handler
            .metrics()
            .detached_exchanges(self.handler.detached.total());
        if !self.answered {
            self.handler.observations.abandoned(&self.seen);
        }
    }
}

impl RefreshHandler {
    /// Forward `request` untouched and record what enforce would have done with it.
    pub(super) async fn observe(
        self: &Arc<Self>,
        request: Request,
        client: &mut dyn ClientLink,
    ) -> Reply {
        // Protocol hygiene holds in observe too: the in-flight and detached caps.
        if !self.detached.admits(request.source) {
            DetachedLimitReached {
                request: request.audit_facts(),
                now: self.clock.now(),
            }
            .emit(&self.auditor);
            return failed_as(GateReply::SourceBusy, RefreshOutcome::UpstreamError);
        }
        let Ok(permit) = self.observing.clone().try_acquire_owned() else {
            tracing::warn!("refresh grant not forwarded: too many in flight (observe mode)");
            return failed_as(GateReply::Busy, RefreshOutcome::UpstreamError);
        };
        let Some(header) = request.upstream_header() else {
            return Reply::internal();
        };
        let seen = self.observations.present(
            &request.fingerprint,
            &request.presenter(),
            &self.policy(),
            self.clock.now(),
        );
        let life = self.detached.track(request.source);
        let guard = ExchangeGuard {
            handler: self.clone(),
            seen: seen.clone(),
            life: life.clone(),
            _permit: permit,
            answered: false,
        };
        let exchange = ObservedExchange {
            handler: self.clone(),
            seen,
            token: request.token,
            fingerprint: request.fingerprint,
            client: request.client,
            source: request.source,
            request_id: request.request_id,
            token_url: request.token_url,
            header,
            body: request.body,
        };
        let (sender, receiver) = oneshot::channel();
        tokio::spawn(exchange.run(guard, sender));
        match self.first_answer(life, receiver, client).await {
            Ok(Ok(reply)) => reply,
            // The exchange task ended without an answer (a panic): its guard released the
            // first use.
            Ok(Err(_)) => Reply::gate(GateReply::Unreachable, RefreshOutcome::InternalError),
            Err(_) => failed_as(GateReply::Timeout, RefreshOutcome::Observed),
        }
    }
}

impl ObservedExchange {
    /// Send the grant, record the IdP's answer beside the would-be decision, then hand the
    /// client its answer (if it still waits).
    async fn run(self, mut guard: ExchangeGuard, client: oneshot::Sender<Reply>) {
        let handler = self.handler.clone();
        let started = Instant::now();
        let result = tokio::time::timeout(
            handler.settings.exchange_timeout,
            handler
                .endpoint
                .send(self.header.clone(), self.body.clone()),
        )
        .await;
        handler
            .metrics()
            .upstream_duration(UpstreamKind::Refresh, started.elapsed().as_secs_f64());
        let (reply, idp_status) = answer(result);
        let idp = idp_status.map_or(IdpVerdict::Error, IdpVerdict::of_status);
        let successor = self.successor(&reply, idp);
        let presenter = Presenter {
            client: &self.client,
            source: self.source,
        };
        let answered = Answered {
            successor,
            refused_by_idp: idp == IdpVerdict::Refused,
            presenter: &presenter,
        };
        handler
            .observations
            .answered(&self.fingerprint, &self.seen, answered, handler.clock.now());
        guard.answered = true;
        drop(guard);
        handler.metrics().observed(self.seen.would, idp);
        self.report(idp, idp_status);
        let _ = client.send(reply);
    }

    /// The fingerprint of the new refresh token of a success answer, if it rotated.
    fn successor(&self, reply: &Reply, idp: IdpVerdict) -> Option<TokenFingerprint> {
        if idp != IdpVerdict::Success {
            return None;
        }
        let handler = &self.handler;
        let response = token_response::parse(&reply.answer, &handler.settings.subject_claim)?;
        match response.refresh_token {
            Some(next) if next != self.token => Some(handler.fingerprinter.token(&next)),
            _ => {
                if self.seen.first() {
                    handler.metrics().not_rotating();
                    handler.warn_not_rotating(&self.client);
                }
                None
            }
        }
    }

    /// The audit event and the replay delay of a presentation of an already-used token
    /// (or of an unseen member of a family enforce would have revoked).
    fn report(&self, idp: IdpVerdict, idp_status: Option<u16>) {
        let handler = &self.handler;
        let seen = &self.seen;
        if seen.first() && seen.would.reason().is_none() {
            return;
        }
        let first = seen.before.as_ref().map(|before| {
            let first_use = before.first_use_at();
            handler.replay_delay(
                (&self.client, self.source),
                (&before.client, before.source, first_use),
                ReplayDelayOutcome::Observed,
            );
            FirstUse {
                client_id: &before.client.client_id,
                client_ip: before.source,
                subject: None,
                at: first_use,
                family: seen.family.display(),
                replays: before.replays + u32::from(seen.would.answers_from_store()),
            }
        });
        ReplayObserved {
            request: RequestFacts {
                request_id: &self.request_id,
                token_url: &self.token_url,
                client_id: &self.client.client_id,
                client_ip: self.source,
                token: self.fingerprint.display(),
            },
            first,
            family: seen.family.display(),
            would: seen.would.label(),
            reason: seen.would.reason(),
            revoke_family: matches!(
                seen.would,
                Would::Refuse {
                    revoke_family: true,
                    ..
                }
            ),
            idp_status,
            idp: idp.label(),
            now: handler.clock.now(),
        }
        .emit(&handler.auditor);
    }
}

/// The client's answer and the IdP's status, from the exchange's result.
fn answer(
    result: Result<Result<Answer, ExchangeFailure>, tokio::time::error::Elapsed>,
) -> (Reply, Option<u16>) {
    match result {
        Ok(Ok(answer)) => {
            let status = answer.status;
            (
                Reply::upstream(answer, RefreshOutcome::Observed),
                Some(status),
            )
        }
        Ok(Err(_)) => (
            failed_as(GateReply::Unreachable, RefreshOutcome::Observed),
            None,
        ),
        Err(_) => (
            failed_as(GateReply::Timeout, RefreshOutcome::Observed),
            None,
        ),
    }
}
