//! One wrk run against a target: throughput, latency, how many requests completed and
//! failed, and the target's CPU per request over the run.

use crate::cpu;
use crate::procs::Target;
use crate::settings::Shape;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Answers neither 2xx nor 3xx, plus socket errors.
    pub errors: u64,
    /// The target's CPU time (utime + stime) per completed request, µs.
    pub cpu_us: Option<f64>,
}

fn parse_latency(value: &str) -> f64 {
    let value = value.trim();
    let (number, unit) = value.split_at(
        value
            .find(|c: char| c.is_alphabetic())
            .unwrap_or(value.len()),
    );
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => number,
    }
}

/// The sum of the numbers in `text` (wrk's "connect 0, read 0, write 0, timeout 0").
fn sum_numbers(text: &str) -> u64 {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// wrk's report (with `--latency`) as a sample, without CPU.
fn parse(text: &str) -> Sample {
    let mut sample = Sample::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            sample.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("50%") {
            sample.p50_ms = parse_latency(v);
        } else if let Some(v) = line.strip_prefix("99%") {
            sample.p99_ms = parse_latency(v);
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            sample.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            sample.errors += sum_numbers(v);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            sample.errors += sum_numbers(v);
        }
    }
    sample
}

/// A different id for every wrk run, so first-use scripts never repeat a token.
pub fn run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}{}", RUNS.fetch_add(1, Ordering::Relaxed))
}

/// Load `target` with `script` (given `arg` as its argument) and measure.
pub fn run(target: &Target, script: &Path, arg: &str, shape: Shape) -> Sample {
    let before = target.pid.map(cpu::ticks);
    let out = Command::new("wrk")
        .arg(format!("-t{}", shape.threads))
        .arg(format!("-c{}", shape.connections))
        .arg(format!("-d{}s", shape.seconds))
        .args(["--latency", "-s"])
        .arg(script)
        .arg(format!("http://{}", target.addr))
        .arg("--")
        .arg(arg)
        .output()
        .expect("wrk (scripts/bench installs it)");
    let after = target.pid.map(cpu::ticks);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sample = parse(&text);
    if let (Some(before), Some(after), true) = (before, after, sample.requests > 0) {
        let seconds = after.saturating_sub(before) as f64 / cpu::ticks_per_second() as f64;
        sample.cpu_us = Some(seconds * 1e6 / sample.requests as f64);
    }
    if sample.errors > 0 || sample.requests == 0 || !out.status.success() {
        eprintln!(
            "warning: {} with {}: {} errors of {} requests\n{text}{}",
            target.name,
            script.display(),
            sample.errors,
            sample.requests,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sample
}

/// The wrk scripts, written once per benchmark run.
pub struct Scripts {
    /// P1: GET of a non-token path.
    pub get: PathBuf,
    /// P1: POST of 200 bytes to a non-token path.
    pub post: PathBuf,
    /// P2: refresh grants, each for a new token (the argument makes them unique per run).
    pub first_use: PathBuf,
    /// P3: refresh grants for the one token given as the argument.
    pub replay: PathBuf,
}

const GRANT_HEADERS: &str = "{[\"Content-Type\"] = \"application/x-www-form-urlencoded\", \
     [\"Authorization\"] = \"Basic a3ViZXJuZXRlczpzZWNyZXQ=\"}";

impl Scripts {
    /// Write the scripts into `dir`.
    pub fn write(dir: &Path) -> Scripts {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let get = write(
            "get.lua",
            "wrk.method = \"GET\"\nwrk.path = \"/pass\"\n".into(),
        );
        let post = write(
            "post.lua",
            format!(
                "wrk.method = \"POST\"\nwrk.path = \"/pass\"\nwrk.body = \"{}\"\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n",
                "x".repeat(200)
            ),
        );
        let first_use = write(
            "first_use.lua",
            format!(
                "-- wrk's math.random is unseeded (the same numbers in every run): each run passes\n\
                 -- its own id as the script argument, each thread numbers itself.\n\
                 local counter = 0\nlocal threads = 0\nlocal prefix = \"\"\n\
                 function setup(thread) threads = threads + 1; thread:set(\"id\", tostring(threads)) end\n\
                 function init(args) prefix = tostring(args[1]) .. \"-\" .. tostring(id) end\n\
                 function request()\n  counter = counter + 1\n  return wrk.format(\"POST\", \"/token\", \
                 {GRANT_HEADERS}, \"grant_type=refresh_token&refresh_token=tok-\" .. prefix .. \"-\" .. counter)\nend\n"
            ),
        );
        // A static request (built once in init), so wrk spends nothing per request on it.
        let replay = write(
            "replay.lua",
            format!(
                "function init(args)\n  wrk.method = \"POST\"\n  wrk.path = \"/token\"\n  \
                 wrk.headers = {GRANT_HEADERS}\n  \
                 wrk.body = \"grant_type=refresh_token&refresh_token=\" .. args[1]\nend\n"
            ),
        );
        Scripts {
            get,
            post,
            first_use,
            replay,
        }
    }
}
