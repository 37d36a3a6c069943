//! Logging: plain or JSON lines on stderr, with Pingora's `log` records captured into the
//! same subscriber.

use crate::config::{Log, LogFormat};
use tracing_subscriber::EnvFilter;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` is not a valid filter.
    #[error("config key `log.level`: {0}")]
    Filter(String),
    /// A subscriber was already installed.
    #[error("logging already initialised: {0}")]
    Init(String),
}

/// Install the global subscriber (which also captures the `log` records Pingora writes).
/// `RUST_LOG`, when set, overrides `log.level`.
pub fn init(log: &Log) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = match log.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| TelemetryError::Init(e.to_string()))
}

/// Check a log filter without installing it (for `--check-config`).
pub fn check_filter(level: &str) -> Result<(), TelemetryError> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| TelemetryError::Filter(e.to_string()))
}
