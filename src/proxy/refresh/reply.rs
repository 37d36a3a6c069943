//! What the refresh handler returns: the answer to write and how the request is counted.
//! The glue writes it and counts it, once.

use crate::http::answer::{Answer, Freshness};
use crate::http::respond::GateReply;
use crate::observe::metrics::RefreshOutcome;
use crate::policy::RefusalReason;

/// The answer to one token-path request, and its outcome.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The answer to write.
    pub answer: Answer,
    /// Whether it keeps the upstream's `Date` or gets a fresh one.
    pub freshness: Freshness,
    /// `refresh_gate_refresh_requests_total{outcome}`.
    pub outcome: RefreshOutcome,
    /// `refresh_gate_refused_total{reason}`, when the gate refused a refresh grant.
    pub refused: Option<RefusalReason>,
}

impl Reply {
    /// The IdP's own answer, verbatim.
    pub fn upstream(answer: Answer, outcome: RefreshOutcome) -> Reply {
        Reply {
            answer,
            freshness: Freshness::Verbatim,
            outcome,
            refused: None,
        }
    }

    /// A remembered answer (a replay, or the answer of the exchange waited for).
    pub fn remembered(answer: Answer, outcome: RefreshOutcome) -> Reply {
        Reply {
            answer,
            freshness: Freshness::FreshDate,
            outcome,
            refused: None,
        }
    }

    /// An answer the gate writes itself.
    pub fn gate(reply: GateReply, outcome: RefreshOutcome) -> Reply {
        Reply::remembered(reply.to_answer(), outcome)
    }

    /// A refresh grant the gate refused, counted with its reason.
    pub fn refused(reply: GateReply, reason: RefusalReason) -> Reply {
        Reply {
            refused: Some(reason),
            ..Reply::gate(reply, RefreshOutcome::Refused)
        }
    }

    /// The gate's own failure (`500`, `outcome="internal_error"`).
    pub fn internal() -> Reply {
        Reply::gate(GateReply::Internal, RefreshOutcome::InternalError)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.answer.status
    }
}
