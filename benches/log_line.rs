//! The CPU one audit line costs the gate's process, whichever thread spends it: the gate's
//! log pipeline (`telemetry::log_pipeline`: captured where emitted, formatted, redacted and
//! written by the log thread) against two baselines in the same run: the line formatted and
//! redacted on the emitting thread into a buffer (no hand-over at all: the floor), and the
//! pipeline the gate had before (`tracing-appender`: formatted where emitted, redacted and
//! written by its worker, which is woken for every line). Lines go to /dev/null.
//!
//! Two rates: a flood (lines back to back) and a paced stream (a 30 µs sleep between lines,
//! as on a gate answering replays among other requests), where a wake-up of the log
//! thread per line shows. CPU is utime + stime of the whole process from /proc, so time
//! spent on the log thread counts. Medians (min-max) over `RUNS` (default 5) alternating
//! runs. The first row, a loop that writes nothing, is what the loop and pacing cost alone.
//! `cargo bench --bench log_line`; `cargo test --benches` runs it once, briefly.

#[path = "load/cpu.rs"]
#[allow(dead_code)]
mod cpu;

use refresh_gate::clock::UnixMillis;
use refresh_gate::config::LogFormat;
use refresh_gate::observe::audit::{Auditor, FirstUse, ReplayAnswered, RequestFacts};
use refresh_gate::observe::metrics::Metrics;
use refresh_gate::observe::redact::RedactingWriter;
use refresh_gate::process::log_thread::SharedWriter;
use refresh_gate::process::telemetry::log_pipeline;
use refresh_gate::seal::fingerprint::DisplayFingerprint;
use std::fs::File;
use std::io::BufWriter;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;

const PACE: Duration = Duration::from_micros(30);

/// One answered replay's audit line, as the gate emits it.
fn emit_one(auditor: &Auditor, n: u32) {
    let request = RequestFacts {
        request_id: "0193b1c2d3e4f5a6b7c8d9e0f1a2b3c4",
        token_url: "http://127.0.0.1:8080/auth/idp/k8sIdp/token",
        client_id: "kubernetes",
        client_ip: [10, 1, 2, 3].into(),
        token: DisplayFingerprint([0xab, 0xcd, 0xef, 0x01, 0x23, 0x45]),
    };
    let first = FirstUse {
        client_id: "kubernetes",
        client_ip: [10, 1, 2, 3].into(),
        subject: Some("alice"),
        at: UnixMillis(1_800_000_000_000),
        family: DisplayFingerprint([0x01, 0x23, 0x45, 0x67, 0x89, 0xab]),
        replays: n,
    };
    ReplayAnswered {
        request,
        first,
        coalesced: false,
        now: UnixMillis(1_800_000_000_042),
    }
    .emit(auditor);
}

fn dev_null() -> File {
    File::create("/dev/null").expect("open /dev/null")
}

#[derive(Clone, Copy, PartialEq)]
enum Pipeline {
    Nothing,
    EmittingThread,
    TracingAppender,
    Gate,
}

impl Pipeline {
    fn name(self) -> &'static str {
        match self {
            Pipeline::Nothing => "no subscriber (the loop and its pacing alone)",
            Pipeline::EmittingThread => "formatted and redacted on the emitting thread (floor)",
            Pipeline::TracingAppender => "tracing-appender worker (the gate before)",
            Pipeline::Gate => "the gate's log thread (`log_pipeline`)",
        }
    }
}

/// CPU µs of the process per line for `lines` lines through `pipeline`.
fn run(pipeline: Pipeline, lines: u32, paced: bool) -> f64 {
    let auditor = Auditor::new(Metrics::new());
    let emit = || {
        for n in 0..lines {
            emit_one(&auditor, n);
            if paced {
                std::thread::sleep(PACE);
            }
        }
    };
    let me = std::process::id();
    let before = cpu::ticks(me);
    match pipeline {
        Pipeline::Nothing => emit(),
        Pipeline::EmittingThread => {
            let output = RedactingWriter::new(BufWriter::with_capacity(64 * 1024, dev_null()));
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(SharedWriter(Arc::new(Mutex::new(output))));
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        }
        Pipeline::TracingAppender => {
            let output = RedactingWriter::new(BufWriter::with_capacity(64 * 1024, dev_null()));
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .buffered_lines_limit(65_536)
                .finish(output);
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer);
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
            drop(guard);
        }
        Pipeline::Gate => {
            let (capture, guard) =
                log_pipeline(LogFormat::Plain, false, dev_null()).expect("start the log thread");
            tracing::subscriber::with_default(tracing_subscriber::registry().with(capture), emit);
            drop(guard);
        }
    }
    let spent = cpu::ticks(me) - before;
    spent as f64 * 1e6 / cpu::ticks_per_second() as f64 / f64::from(lines)
}

fn median_and_range(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 5 } else { 1 });
    let (flood_lines, paced_lines) = if benchmarking {
        (200_000, 40_000)
    } else {
        (2_000, 500)
    };
    let started = Instant::now();
    println!(
        "| CPU µs per audit line (median (min-max) of {runs}) | flood | paced (30 µs apart) |"
    );
    println!("|---|---:|---:|");
    let pipelines = [
        Pipeline::Nothing,
        Pipeline::EmittingThread,
        Pipeline::TracingAppender,
        Pipeline::Gate,
    ];
    let mut figures = vec![(Vec::new(), Vec::new()); pipelines.len()];
    for _ in 0..runs {
        for (i, &pipeline) in pipelines.iter().enumerate() {
            figures[i].0.push(run(pipeline, flood_lines, false));
            figures[i].1.push(run(pipeline, paced_lines, true));
        }
    }
    for (pipeline, (flood, paced)) in pipelines.iter().zip(figures) {
        let (fm, fl, fh) = median_and_range(flood);
        let (pm, pl, ph) = median_and_range(paced);
        println!(
            "| {} | {fm:.1} ({fl:.1}-{fh:.1}) | {pm:.1} ({pl:.1}-{ph:.1}) |",
            pipeline.name()
        );
    }
    println!("({:.0} s)", started.elapsed().as_secs_f64());
}
