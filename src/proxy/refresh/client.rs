//! The first client's side of an exchange: watching its connection while it waits, and
//! counting the exchange as detached once the client has gone.

use super::RefreshHandler;
use crate::policy::detached::ExchangeLife;
use async_trait::async_trait;
use std::sync::Arc;

/// The client's connection, as the refresh handler watches it while an exchange runs.
#[async_trait]
pub trait ClientLink: Send {
    /// Resolves at the first sign of life on the connection: `true` when it closed (or
    /// half-closed), `false` when the client sent more bytes (a pipelined request).
    /// Never resolving is allowed: the handler then just waits for the answer.
    async fn closed(&mut self) -> bool;
}

/// A client whose connection is not watched (it never closes, as far as the handler
/// knows).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unwatched;

#[async_trait]
impl ClientLink for Unwatched {
    async fn closed(&mut self) -> bool {
        std::future::pending().await
    }
}

/// The first client's wait for its exchange's answer: if the client closes its connection
/// (or the request is dropped) before the answer, the exchange is detached.
pub(super) struct ClientWait {
    pub(super) life: Arc<ExchangeLife>,
    pub(super) handler: Arc<RefreshHandler>,
    pub(super) answered: bool,
}

impl ClientWait {
    /// The client left: the exchange runs on detached.
    pub(super) fn detach(&self) {
        self.life.detach();
        self.handler
            .metrics()
            .detached_exchanges(self.handler.detached.total());
    }
}

impl Drop for ClientWait {
    fn drop(&mut self) {
        // Dropped without an answer: the request was dropped (the client is gone).
        if !self.answered {
            self.detach();
        }
    }
}
