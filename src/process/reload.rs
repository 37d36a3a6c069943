//! Configuration reload (SIGHUP, or a changed file as when Kubernetes updates a mounted
//! ConfigMap): what can change safely (grace, reuse caps, binding, on_replay, per-client
//! policy, spacing, log level) is applied at once, keeping every remembered token; what
//! needs a restart is refused with a clear log line.

use super::telemetry::LogLevel;
use super::tls::ReloadingCert;
use crate::config::{self, Config};
use crate::proxy::refresh::RefreshHandler;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Re-reads the configuration file and the TLS certificate.
pub struct Reloader {
    path: PathBuf,
    running: Mutex<(Config, Option<SystemTime>)>,
    refresh: Arc<RefreshHandler>,
    log_level: Option<LogLevel>,
    certificate: Option<Arc<ReloadingCert>>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    /// A reloader for the gate started from `config` (the file as written) read at `path`.
    pub fn new(
        path: PathBuf,
        config: Config,
        refresh: Arc<RefreshHandler>,
        log_level: Option<LogLevel>,
        certificate: Option<Arc<ReloadingCert>>,
    ) -> Self {
        let stamp = modified(&path);
        Reloader {
            path,
            running: Mutex::new((config, stamp)),
            refresh,
            log_level,
            certificate,
        }
    }

    /// Reload everything (SIGHUP).
    pub fn reload(&self) {
        self.reload_config();
        if let Some(certificate) = &self.certificate {
            match certificate.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(error) => {
                    tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one")
                }
            }
        }
    }

    /// Reload what changed on disk (the periodic check).
    pub fn reload_if_changed(&self) {
        let changed = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            modified(&self.path) != running.1
        };
        if changed {
            self.reload_config();
        }
        if let Some(result) = self
            .certificate
            .as_ref()
            .and_then(|c| c.reload_if_changed())
        {
            match result {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(error) => {
                    tracing::error!(%error, "TLS certificate not reloaded; still serving the previous one")
                }
            }
        }
    }

    fn reload_config(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.1 = modified(&self.path);
        let config::Loaded { file, settings } = match config::load(&self.path) {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::error!(%error, "configuration not reloaded; the running configuration stays in force");
                return;
            }
        };
        let refused = running.0.restart_only_changes(&file);
        if !refused.is_empty() {
            tracing::error!(
                keys = refused.join(", "),
                "configuration reload: these keys changed but need a restart; their running values stay in force"
            );
        }
        self.refresh.set_policy(settings.rotation.policy);
        self.refresh.set_client_keys(settings.client_keys);
        if let Some(level) = &self.log_level {
            if let Err(error) = level.set(&settings.log.level) {
                tracing::error!(%error, "configuration reload: log level not changed");
            }
        }
        let mut observed: Vec<&str> = file
            .clients
            .iter()
            .filter(|(_, client)| client.mode == Some(crate::policy::observe::Mode::Observe))
            .map(|(id, _)| id.as_str())
            .collect();
        observed.sort_unstable();
        tracing::info!(
            mode = ?file.rotation.mode,
            observed_clients = ?observed,
            grace_period = ?file.rotation.grace_period,
            max_reuses = file.rotation.max_reuses,
            clients = file.clients.len(),
            log_level = file.log.level.as_str(),
            "configuration reloaded"
        );
        running.0.adopt_reloadable(file);
    }
}
