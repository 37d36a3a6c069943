//! Shutdown on SIGTERM in two steps: readiness flips to 503 at once and the gate keeps
//! serving for `drain` (so Kubernetes stops routing to it), then Pingora stops accepting and
//! waits `shutdown_grace` for requests in flight. SIGINT stops at once.

use crate::health::readiness::Readiness;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The gate's shutdown signal handling.
pub struct DrainingShutdown {
    /// Flipped to not-ready when SIGTERM arrives.
    pub readiness: Arc<Readiness>,
    /// How long to keep serving, not ready, before closing the listeners.
    pub drain: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut terminate), Ok(mut interrupt), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; the gate stops only when killed");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = terminate.recv() => {},
            _ = quit.recv() => {},
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: stopping now");
                return ShutdownSignal::FastShutdown;
            }
        }
        self.readiness.begin_shutdown();
        tracing::info!(drain = ?self.drain, "SIGTERM: not ready; draining before closing the listeners");
        tokio::select! {
            _ = tokio::time::sleep(self.drain) => ShutdownSignal::GracefulTerminate,
            _ = interrupt.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
