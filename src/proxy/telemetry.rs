//! Logging: plain or JSON lines on stderr, with Pingora's `log` records captured into the
//! same subscriber. Pingora's TRACE records print raw request headers (`Authorization`,
//! query strings), so they are dropped whatever the configured level.

use crate::config::{Log, LogFormat};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

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

/// True for records that may carry secrets and are never written.
pub fn is_secret_bearing(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::TRACE && metadata.target().starts_with("pingora")
}

/// Install the global subscriber (which also captures the `log` records Pingora writes).
/// `RUST_LOG`, when set, overrides `log.level`.
pub fn init(log: &Log) -> Result<LogGuard, TelemetryError> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match &from_env {
        Some(value) => EnvFilter::try_new(value),
        None => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let (filter, level) = reload::Layer::new(filter);
    let redact = filter_fn(|metadata| !is_secret_bearing(metadata));
    // Lines are formatted on the request path but written by a dedicated thread, so a burst
    // of audit events does not stall requests on write(2). Not lossy: when the queue is
    // full, the request waits rather than drop an audit line.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(65_536)
        .thread_name("refresh-gate-log")
        .finish(std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let layer = match log.format {
        LogFormat::Plain => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(redact))
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(LogGuard {
        _writer: guard,
        level,
        fixed_by_env: from_env.is_some(),
    })
}

/// Keeps the log writer thread alive; dropping it flushes every pending line.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
    level: reload::Handle<EnvFilter, Registry>,
    fixed_by_env: bool,
}

impl LogGuard {
    /// A handle that changes the log level at run time (configuration reload).
    pub fn level_control(&self) -> LogLevel {
        LogLevel {
            handle: self.level.clone(),
            fixed_by_env: self.fixed_by_env,
        }
    }
}

/// Changes the log level of the running subscriber.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<EnvFilter, Registry>,
    fixed_by_env: bool,
}

impl LogLevel {
    /// Apply `level` (a tracing filter). `RUST_LOG`, when set at start-up, stays in force.
    pub fn set(&self, level: &str) -> Result<(), TelemetryError> {
        if self.fixed_by_env {
            return Ok(());
        }
        let filter =
            EnvFilter::try_new(level).map_err(|e| TelemetryError::Filter(e.to_string()))?;
        self.handle
            .reload(filter)
            .map_err(|e| TelemetryError::Init(e.to_string()))
    }
}

/// Check a log filter without installing it (for `--check-config`).
pub fn check_filter(level: &str) -> Result<(), TelemetryError> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| TelemetryError::Filter(e.to_string()))
}
