//! One exchange, owned by its claim: it runs on its own task to its end, even if the
//! client leaves, judges the IdP's answer (a rotation or a release) and completes the claim.

use super::RefreshHandler;
use crate::http::answer::Answer;
use crate::http::respond::{replayable, GateReply};
use crate::oauth::credentials::ClientIdentity;
use crate::oauth::token_response;
use crate::observe::audit::{RequestFacts, Rotated};
use crate::observe::metrics::UpstreamKind;
use crate::policy::detached::ExchangeLife;
use crate::proxy::exchange::ExchangeFailure;
use crate::seal::envelope::SealedAnswer;
#[cfg(doc)]
use crate::seal::fingerprint::Fingerprinter;
use crate::seal::fingerprint::TokenFingerprint;
use crate::seal::secret::RefreshToken;
use crate::store::{ExchangeOutcome, Released, TokenRecord};
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// What the first client of an exchange gets.
pub(super) enum FirstAnswer {
    /// The upstream's answer, verbatim; `success` when it was a token response.
    Upstream { answer: Answer, success: bool },
    /// A failure the gate reports itself.
    Failed(GateReply),
}

/// One exchange, owned by the claim.
pub(super) struct Exchange {
    pub(super) life: Arc<ExchangeLife>,
    pub(super) handler: Arc<RefreshHandler>,
    pub(super) token: RefreshToken,
    /// What the answer is sealed under ([`Fingerprinter::sealing_token`]).
    pub(super) sealing_token: RefreshToken,
    pub(super) fingerprint: TokenFingerprint,
    pub(super) client: ClientIdentity,
    pub(super) source: IpAddr,
    pub(super) family: TokenFingerprint,
    pub(super) header: RequestHeader,
    pub(super) body: Bytes,
    pub(super) request_id: String,
    pub(super) token_url: String,
    pub(super) spend_on_rotation: Vec<([u8; 32], std::time::Duration)>,
}

/// Releases a claim whose exchange ended without completing it (a panic, a cancelled
/// task), so no token stays "in flight" and its waiters are woken.
struct ClaimGuard {
    handler: Arc<RefreshHandler>,
    fingerprint: TokenFingerprint,
    life: Arc<ExchangeLife>,
    armed: bool,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        // However the exchange ended, it no longer counts as detached.
        self.life.finish();
        self.handler
            .metrics()
            .detached_exchanges(self.handler.detached.total());
        if !self.armed {
            return;
        }
        tracing::error!(
            token = %self.fingerprint.display(),
            "a refresh exchange ended without an outcome; its claim is released"
        );
        let (handler, fingerprint) = (self.handler.clone(), self.fingerprint);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                handler
                    .complete(
                        &fingerprint,
                        ExchangeOutcome::Released(Released::Unreachable),
                    )
                    .await;
            });
        }
    }
}

impl Exchange {
    /// Send the exchange, complete the claim with its outcome, then hand the first client
    /// its answer (if it is still there).
    pub(super) async fn run(self, first: oneshot::Sender<FirstAnswer>) {
        let handler = self.handler.clone();
        let mut guard = ClaimGuard {
            handler: handler.clone(),
            fingerprint: self.fingerprint,
            life: self.life.clone(),
            armed: true,
        };
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
        let rotated = matches!(outcome, ExchangeOutcome::Rotated { .. });
        if rotated {
            handler.spend(&self.spend_on_rotation).await;
        }
        handler.complete(&self.fingerprint, outcome).await;
        guard.armed = false;
        // The first client may have gone: its answer is remembered all the same.
        let _ = first.send(answer);
    }

    /// Decide what an upstream answer means: a rotation, or a release.
    fn judge(&self, answer: Answer) -> (ExchangeOutcome, FirstAnswer) {
        let handler = &self.handler;
        let parsed = token_response::parse(&answer, &handler.settings.subject_claim);
        let Some(response) = parsed else {
            let sealed = Arc::new(SealedAnswer::seal(&self.sealing_token, &answer));
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
                handler.metrics().not_rotating();
                handler.warn_not_rotating(&self.client);
                let sealed = Arc::new(SealedAnswer::seal(
                    &self.sealing_token,
                    &replayable(&answer),
                ));
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
        let now = handler.clock.now();
        Rotated {
            request: RequestFacts {
                request_id: &self.request_id,
                token_url: &self.token_url,
                client_id: &self.client.client_id,
                client_ip: self.source,
                token: self.fingerprint.display(),
            },
            subject: response.subject.as_deref(),
            family: self.family.display(),
            now,
        }
        .emit(&handler.auditor);
        let record = TokenRecord::new(
            now,
            self.client.clone(),
            self.source,
            response.subject.map(String::into_boxed_str),
            self.family,
        );
        let sealed = Arc::new(SealedAnswer::seal(
            &self.sealing_token,
            &replayable(&answer),
        ));
        (
            ExchangeOutcome::Rotated {
                record: Arc::new(record),
                answer: sealed,
                successor: Some(handler.fingerprinter.token(successor)),
            },
            FirstAnswer::Upstream {
                answer,
                success: true,
            },
        )
    }
}
