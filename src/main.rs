//! The `refresh-gate` binary: parse flags and config, start logging, build, run.
//!
//! Exit codes: 0 after a clean stop (or a valid `--check-config`); 64 (EX_USAGE) for a bad
//! configuration, every problem printed, one per line; 1 when a valid configuration cannot
//! start (an upstream that does not resolve, a taken port, a certificate that does not
//! load, a store that cannot be set up); clap's 2 for an unknown flag.

use clap::Parser;
use refresh_gate::config::{self, ConfigError, ConfigErrors, Loaded};
use refresh_gate::process::app::App;
use refresh_gate::process::telemetry::{self, TelemetryError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// EX_USAGE: a bad configuration (or `RUST_LOG` filter).
const EXIT_USAGE: u8 = 64;
/// Any other start-up failure.
const EXIT_FAILURE: u8 = 1;

/// One-time refresh tokens with a short grace window, in front of an OpenID Connect IdP.
#[derive(Parser, Debug)]
#[command(name = "refresh-gate", version)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "REFRESH_GATE_CONFIG")]
    config: PathBuf,
    /// Validate the configuration, print every problem found, and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match load(&cli.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in errors.iter() {
                eprintln!("refresh-gate: {error}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if cli.check_config {
        println!("refresh-gate: {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let log_guard = match telemetry::init(&loaded.settings.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("refresh-gate: {e}");
            // `RUST_LOG` is part of the configuration of the run.
            let bad_filter = matches!(e, TelemetryError::Filter(_));
            return ExitCode::from(if bad_filter { EXIT_USAGE } else { EXIT_FAILURE });
        }
    };
    let started =
        App::build(loaded, cli.config.clone(), Some(log_guard.level_control())).and_then(App::run);
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refresh-gate: {e}");
            ExitCode::from(if e.is_configuration() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            })
        }
    }
}

/// The file read and validated, the log filter (whose syntax the binary owns) included.
fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = config::read(path)?;
    let filter = telemetry::check_filter(&file.log.level)
        .err()
        .map(|e| match e {
            TelemetryError::Filter(message) => ConfigError::invalid("log.level", message),
            other => ConfigError::invalid("log.level", other.to_string()),
        });
    match (file.validate(), filter) {
        (Ok(settings), None) => Ok(Loaded { file, settings }),
        (Ok(_), Some(filter)) => Err(filter.into()),
        (Err(mut errors), filter) => {
            errors.extend(filter);
            Err(errors)
        }
    }
}
