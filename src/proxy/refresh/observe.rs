//! Observe mode for one refresh grant: forwarded untouched, whatever enforce would have
//! done, and that decision recorded beside the IdP's answer (a metric, the replay delay,
//! an audit event for every presentation of an already-used token). Nothing is answered
//! from the store and nothing is written to it: the observations are this replica's own
//! (`store::Observations`), so observe keeps forwarding while the store is down. No
//! revocation is written and no RFC 7009 call is made for a would-be family revocation.

use super::{failed_as, RefreshHandler, Reply, Request};
use crate::http::respond::GateReply;
use crate::oauth::token_response;
use crate::observe::audit::{FirstUse, ReplayObserved};
use crate::observe::metrics::{RefreshOutcome, ReplayDelayOutcome, UpstreamKind};
use crate::policy::observe::{IdpVerdict, Would};
use crate::seal::fingerprint::TokenFingerprint;
use crate::store::{Observations, ObservedPresentation};
use std::sync::Arc;
use std::time::Instant;

/// Forgets a first use whose exchange ended without an answer (the client left and the
/// request future was dropped): as in enforce, nothing stays "in flight".
struct FirstUseGuard<'a> {
    observations: &'a Observations,
    token: TokenFingerprint,
    armed: bool,
}

impl Drop for FirstUseGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.observations.abandoned(&self.token);
        }
    }
}

impl RefreshHandler {
    /// Forward `request` untouched and record what enforce would have done with it.
    pub(super) async fn observe(self: &Arc<Self>, request: &Request) -> Reply {
        // Protocol hygiene holds in observe too: the in-flight cap.
        let Ok(_permit) = self.observing.try_acquire() else {
            tracing::warn!("refresh grant not forwarded: too many in flight (observe mode)");
            return failed_as(GateReply::Busy, RefreshOutcome::UpstreamError);
        };
        let seen = self.observations.present(
            &request.fingerprint,
            &request.presenter(),
            &self.policy(),
            self.clock.now(),
        );
        let mut guard = FirstUseGuard {
            observations: &self.observations,
            token: request.fingerprint,
            armed: seen.first(),
        };
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
        let (reply, idp_status) = match result {
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
        };
        let idp = idp_status.map_or(IdpVerdict::Error, IdpVerdict::of_status);
        let successor = self.successor(request, &reply, idp, &seen);
        self.observations
            .answered(&request.fingerprint, &seen, successor, self.clock.now());
        guard.armed = false;
        self.metrics().observed(seen.would, idp);
        self.report_observed(request, &seen, idp, idp_status);
        reply
    }

    /// The fingerprint of the new refresh token of a success answer, if it rotated.
    fn successor(
        &self,
        request: &Request,
        reply: &Reply,
        idp: IdpVerdict,
        seen: &ObservedPresentation,
    ) -> Option<TokenFingerprint> {
        if idp != IdpVerdict::Success {
            return None;
        }
        let response = token_response::parse(&reply.answer, &self.settings.subject_claim)?;
        match response.refresh_token {
            Some(next) if next != request.token => Some(self.fingerprinter.token(&next)),
            _ => {
                if seen.first() {
                    self.metrics().not_rotating();
                    self.warn_not_rotating(&request.client);
                }
                None
            }
        }
    }

    /// The audit event and the replay delay of a presentation of an already-used token.
    fn report_observed(
        &self,
        request: &Request,
        seen: &ObservedPresentation,
        idp: IdpVerdict,
        idp_status: Option<u16>,
    ) {
        let Some(before) = &seen.before else {
            return;
        };
        let first_use = before.first_use_at();
        self.replay_delay(
            request,
            (&before.client, before.source, first_use),
            ReplayDelayOutcome::Observed,
        );
        let replays = before.replays + u32::from(seen.would.answers_from_store());
        ReplayObserved {
            request: request.audit_facts(),
            first: FirstUse {
                client_id: &before.client.client_id,
                client_ip: before.source,
                subject: None,
                at: first_use,
                family: seen.family.display(),
                replays,
            },
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
            now: self.clock.now(),
        }
        .emit(&self.auditor);
    }
}
