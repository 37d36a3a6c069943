//! Readiness: a latch that flips to not-ready when shutdown begins, and the discovery
//! verdict. `/readyz` answers from here.

use crate::health::discovery::DiscoveryVerdict;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether the gate should receive traffic.
#[derive(Debug)]
pub struct Readiness {
    shutting_down: AtomicBool,
    discovery: Mutex<DiscoveryVerdict>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            shutting_down: AtomicBool::new(false),
            discovery: Mutex::new(DiscoveryVerdict::Unchecked),
        }
    }
}

impl Readiness {
    /// Shutdown has begun: not ready from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Record the latest discovery verdict.
    pub fn set_discovery(&self, verdict: DiscoveryVerdict) {
        *self.discovery.lock().unwrap_or_else(|p| p.into_inner()) = verdict;
    }

    /// The latest discovery verdict.
    pub fn discovery(&self) -> DiscoveryVerdict {
        self.discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".to_owned());
        }
        match self.discovery() {
            DiscoveryVerdict::Mismatch {
                token_endpoint_path,
            } => Err(format!(
                "the IdP's token_endpoint {token_endpoint_path} is not in upstream.token_paths"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_and_mismatch_make_it_not_ready() {
        let readiness = Readiness::default();
        assert!(readiness.check().is_ok());
        readiness.set_discovery(DiscoveryVerdict::Mismatch {
            token_endpoint_path: "/x".into(),
        });
        assert!(readiness.check().unwrap_err().contains("/x"));
        readiness.set_discovery(DiscoveryVerdict::Matches);
        assert!(readiness.check().is_ok());
        readiness.begin_shutdown();
        assert_eq!(readiness.check().unwrap_err(), "shutting down");
    }
}
