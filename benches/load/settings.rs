//! The benchmark's knobs, from the environment (documented in `main.rs`).

use std::path::PathBuf;

/// The shape of one wrk run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// wrk `-t`.
    pub threads: u32,
    /// wrk `-c`.
    pub connections: u32,
    /// wrk `-d`, seconds.
    pub seconds: u64,
}

/// Everything the environment sets.
pub struct Settings {
    /// Alternating runs per scenario and target.
    pub runs: usize,
    /// The wrk run's shape.
    pub shape: Shape,
    scenarios: String,
    /// The gate binary under test.
    pub gate_bin: PathBuf,
    /// TOML laid over every gate's configuration.
    pub gate_extra: String,
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    /// Read the environment.
    pub fn from_env() -> Settings {
        Settings {
            runs: number("RUNS", 5).max(1),
            shape: Shape {
                threads: number("WRK_THREADS", 1),
                connections: number("WRK_CONNECTIONS", 32),
                seconds: number("SECONDS", 4),
            },
            scenarios: std::env::var("SCENARIOS").unwrap_or_else(|_| "p1,p2,p3,p4,p5,p6".into()),
            gate_bin: std::env::var_os("GATE_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_refresh-gate").into()),
            gate_extra: std::env::var("GATE_EXTRA_TOML").unwrap_or_default(),
        }
    }

    /// Whether `SCENARIOS` names `scenario` (p1 … p6).
    pub fn wants(&self, scenario: &str) -> bool {
        self.scenarios
            .split(',')
            .any(|s| s.trim().eq_ignore_ascii_case(scenario))
    }
}
