//! Logging: plain or JSON lines on stderr, with the `log` records of Pingora, rustls and
//! redis captured into the same subscriber. No secret is written, at any level, in two
//! layers:
//!
//! 1. A filter: records of third-party targets (Pingora, h2, hyper, rustls, redis, tokio,
//!    everything but the gate's own modules and `audit`) are capped at INFO whatever the
//!    configured level. Their DEBUG and TRACE records print request and response headers
//!    (`Authorization`, `Cookie`), bodies (token responses) and URIs with their queries. The
//!    cap sits outside the reloadable level filter: `RUST_LOG=trace`, `log.level = "trace"`
//!    or a reload raising the level lift it for the gate's own targets only.
//! 2. A redaction of every written line ([`crate::observe::redact`]), plain or JSON, on the log
//!    thread ([`crate::process::log_thread`], which also formats them): Pingora's INFO to ERROR lines still carry the request summary (method,
//!    URI with its query, Host), e.g. `Fail to proxy: ..., GET /cb?code=..., Host: ...`.

use crate::config::{LogFormat, LogSection};
use crate::observe::redact::RedactingWriter;
use crate::process::log_thread::{self, CaptureLayer, CaptureTime, LogThreadGuard, SharedWriter};
use std::sync::{Arc, Mutex};
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

/// How many bytes of log lines the log thread gathers before a write(2).
const LOG_WRITE_BUFFER: usize = 64 * 1024;

/// How many captured events may wait for the log thread before an emitter waits.
const LOG_QUEUE_LINES: usize = 65_536;

/// The most verbose level written for third-party targets, whatever the configuration.
pub const THIRD_PARTY_MAX_LEVEL: Level = Level::INFO;

/// True for the gate's own targets (its modules, the binary and the audit events), which
/// follow the configured level; every other target is third-party.
pub fn is_own_target(target: &str) -> bool {
    target == crate::observe::audit::TARGET
        || target
            .strip_prefix("refresh_gate")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// True for records that may carry secrets and are never written: third-party records more
/// verbose than [`THIRD_PARTY_MAX_LEVEL`].
pub fn is_secret_bearing(metadata: &Metadata<'_>) -> bool {
    is_capped(metadata.level(), metadata.target())
}

fn is_capped(level: &Level, target: &str) -> bool {
    *level > THIRD_PARTY_MAX_LEVEL && !is_own_target(target)
}

// No "secret" in it: tests look for a client secret named so in the log.
const FILTER_IN_FORCE: &str = "log filter in force: the gate's own records follow it, \
     third-party records are capped at info, and every line is redacted";

/// The gate's log pipeline into `output`: events are captured where they are emitted and
/// formatted (`format`, with colours if `ansi`), redacted and written by the log thread
/// ([`log_thread`]). Not lossy: when its queue is full, the emitter waits rather than drop an
/// audit line. Lines leave in batches of up to 64 KiB, flushed whenever the queue is
/// drained, so an idle gate's lines are written at once. Put the returned layer under the
/// filters; keep the guard for as long as lines should be written.
pub fn log_pipeline<W: std::io::Write + Send + 'static>(
    format: LogFormat,
    ansi: bool,
    output: W,
) -> std::io::Result<(CaptureLayer, LogThreadGuard)> {
    let output = Arc::new(Mutex::new(RedactingWriter::new(
        std::io::BufWriter::with_capacity(LOG_WRITE_BUFFER, output),
    )));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(SharedWriter(output.clone()))
        .with_timer(CaptureTime)
        .with_ansi(ansi)
        .with_target(true);
    let layer = match format {
        LogFormat::Plain => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    log_thread::start(layer, output, LOG_QUEUE_LINES)
}

/// Install the global subscriber (which also captures the `log` records Pingora writes).
/// `RUST_LOG`, when set, overrides `log.level`.
pub fn init(log: &LogSection) -> Result<LogGuard, TelemetryError> {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match &from_env {
        Some(value) => EnvFilter::try_new(value),
        None => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let log_records = log_records_max_level(&filter);
    let (filter, level) = reload::Layer::new(filter);
    let cap = filter_fn(|metadata| !is_secret_bearing(metadata));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (capture, guard) = log_pipeline(log.format, ansi, std::io::stderr())
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    tracing_subscriber::registry()
        .with(capture.with_filter(filter).with_filter(cap))
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    // After `try_init`, which installs the `log` bridge at TRACE.
    log::set_max_level(log_records);
    tracing::trace!(
        filter = from_env.as_deref().unwrap_or(&log.level),
        "{FILTER_IN_FORCE}"
    );
    Ok(LogGuard {
        _writer: guard,
        level,
        fixed_by_env: from_env.is_some(),
    })
}

/// Keeps the log writer thread alive; dropping it flushes every pending line.
#[must_use = "logs stop when the guard is dropped"]
pub struct LogGuard {
    _writer: LogThreadGuard,
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
        let log_records = log_records_max_level(&filter);
        self.handle
            .reload(filter)
            .map_err(|e| TelemetryError::Init(e.to_string()))?;
        log::set_max_level(log_records);
        tracing::trace!(filter = level, "{FILTER_IN_FORCE}");
        Ok(())
    }
}

/// How verbose a `log` record (Pingora, rustls, redis: third-party, so capped at
/// [`THIRD_PARTY_MAX_LEVEL`]) may be and still be written under `filter`: anything more
/// verbose is dropped by the `log` macros themselves, before it is formatted and dispatched
/// into tracing only to be filtered out there (Pingora logs at DEBUG on every request).
fn log_records_max_level(filter: &EnvFilter) -> log::LevelFilter {
    let configured = match filter.max_level_hint() {
        Some(hint) => hint,
        None => tracing::level_filters::LevelFilter::TRACE,
    };
    let capped = configured.min(tracing::level_filters::LevelFilter::from_level(
        THIRD_PARTY_MAX_LEVEL,
    ));
    match capped.into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// Check a log filter without installing it (for `--check-config`).
pub fn check_filter(level: &str) -> Result<(), TelemetryError> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| TelemetryError::Filter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_records_stop_at_the_configured_level_and_never_pass_info() {
        let max = |filter: &str| log_records_max_level(&EnvFilter::try_new(filter).unwrap());
        assert_eq!(max("info"), log::LevelFilter::Info);
        assert_eq!(max("trace"), log::LevelFilter::Info);
        assert_eq!(max("info,audit=debug"), log::LevelFilter::Info);
        assert_eq!(max("warn"), log::LevelFilter::Warn);
        assert_eq!(max("error,pingora_core=warn"), log::LevelFilter::Warn);
        assert_eq!(max("off"), log::LevelFilter::Off);
    }

    #[test]
    fn the_gates_own_targets_follow_the_configured_level() {
        for target in [
            "audit",
            "refresh_gate",
            "refresh_gate::proxy::refresh",
            "refresh_gate::store::redis",
        ] {
            assert!(is_own_target(target), "{target}");
            assert!(!is_capped(&Level::TRACE, target), "{target}");
            assert!(!is_capped(&Level::DEBUG, target), "{target}");
        }
    }

    #[test]
    fn third_party_records_above_info_are_never_written() {
        for target in [
            "pingora_core::protocols::http::v1::client",
            "pingora_proxy",
            "h2::codec::framed_read",
            "hyper::proto::h1::io",
            "rustls::client::hs",
            "redis::aio",
            "tokio::task",
            "refresh_gatekeeper",
            "audit_log",
            "log",
        ] {
            assert!(!is_own_target(target), "{target}");
            assert!(is_capped(&Level::TRACE, target), "{target}");
            assert!(is_capped(&Level::DEBUG, target), "{target}");
            for level in [Level::INFO, Level::WARN, Level::ERROR] {
                assert!(!is_capped(&level, target), "{target} {level}");
            }
        }
    }
}
