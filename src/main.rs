//! The `refresh-gate` binary: parse flags and config, start logging, run.

use clap::Parser;
use refresh_gate::config::Config;
use refresh_gate::process::{server, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

/// EX_USAGE: a bad command line or configuration.
const EXIT_USAGE: u8 = 64;

/// One-time refresh tokens with a short grace window, in front of an OpenID Connect IdP.
#[derive(Parser, Debug)]
#[command(name = "refresh-gate", version)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, env = "REFRESH_GATE_CONFIG")]
    config: PathBuf,
    /// Validate the configuration and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            telemetry::check_filter(&c.log.level)
                .map(|_| c)
                .map_err(|e| e.to_string())
        }) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("refresh-gate: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if cli.check_config {
        println!("refresh-gate: {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let log_guard = match telemetry::init(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("refresh-gate: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match server::run(config, cli.config.clone(), Some(log_guard.level_control())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refresh-gate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
