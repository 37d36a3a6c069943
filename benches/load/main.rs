//! The load benchmark: refresh-gate against its own engine (a minimal Pingora proxy on the
//! same settings and allocator), nginx and the IdP directly, side by side in one run with
//! the same load generator (wrk), reporting throughput, latency and the CPU each proxy
//! process spends per request.
//!
//! `scripts/bench` (installs wrk and nginx, then `cargo bench --bench load`). Environment:
//! - `RUNS` (default 5): alternating runs per scenario and target; medians with min-max.
//! - `SECONDS` (default 4): per wrk run. `WRK_THREADS` (1), `WRK_CONNECTIONS` (32).
//! - `SCENARIOS`: comma list of p1 … p6 (default all).
//! - `GATE_BIN`: another gate binary (default this build's); `GATE_EXTRA_TOML`: TOML laid
//!   over every gate's configuration (tables merge, keys replace: `[log]\nlevel = "warn"`
//!   works), for A/B trials without editing the benchmark. The minimal proxy keeps this
//!   build's `engine_conf()` and allocator whatever the gate binary is.
//!
//! Results: stdout and target/bench-results.md. Under `cargo test --benches` (no
//! `--bench` argument) it only prints a line.

mod client;
mod cpu;
mod idp;
mod memory;
mod minimal;
mod procs;
mod report;
mod rounds;
mod settings;
mod stats;
mod stores;
mod storm;
mod wrk;

use procs::{start_minimal, start_nginx, Gates, Target};
use report::Report;
use settings::Settings;
use std::path::Path;

/// The machine, the load, how CPU is measured, and what each target is.
fn header(settings: &Settings, nginx_workers: Option<usize>) -> String {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let nginx_version = std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    let engine = refresh_gate::process::engine::engine_conf();
    let s = settings.shape;
    let extra = match settings.gate_extra.trim() {
        "" => String::new(),
        extra => format!("; GATE_EXTRA_TOML: `{}`", extra.replace('\n', " ")),
    };
    format!(
        "# refresh-gate load benchmark\n\n\
         machine: {cores} cores, {cpu_model}; wrk -t{t} -c{c}, {secs}s per run, {runs} runs, targets alternating within each run; \
         cells are median (min-max) over the runs\n\n\
         CPU µs/req: utime+stime of the target process, all threads, and its children (from /proc/<pid>/stat, \
         {tck} ticks/s, so ±1 tick per run over its requests) over the wrk run, divided by the requests wrk completed; errors: non-2xx/3xx answers \
         and socket errors over all runs\n\n\
         targets: refresh-gate ({gate}{extra}); minimal Pingora 0.9.1 proxy (one peer, no filters, the gate's \
         engine_conf(): threads {threads}, work_stealing {stealing}; this build's global allocator, as the gate's); {nginx_version}, \
         worker_processes 1{workers}, keep-alive upstream; direct: the fake IdP \
         (Rust/hyper, 1 thread inside the benchmark, ~1.5 KB token JSON; no CPU figure)",
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        t = s.threads,
        c = s.connections,
        secs = s.seconds,
        runs = settings.runs,
        tck = cpu::ticks_per_second(),
        gate = settings.gate_bin.display(),
        threads = engine.threads,
        stealing = engine.work_stealing,
        workers = nginx_workers.map_or_else(String::new, |n| format!(" ({n} seen)")),
    )
}

fn main() {
    // The minimal proxy is this binary again: nothing else may run first.
    if std::env::var(minimal::ROLE_VAR).as_deref() == Ok(minimal::ROLE) {
        minimal::serve();
    }
    // `cargo test --benches` runs benches as tests: do nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load benchmark: run with `cargo bench --bench load` (scripts/bench)");
        return;
    }
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (upstream, idp) = idp::start(&runtime);
    let scripts = wrk::Scripts::write(dir.path());
    let gates = Gates {
        bin: settings.gate_bin.clone(),
        extra: settings.gate_extra.clone(),
        dir: dir.path().to_owned(),
        upstream,
    };
    let mut report = Report::default();

    if ["p1", "p2", "p3"].iter().any(|s| settings.wants(s)) {
        let minimal = start_minimal(dir.path(), upstream);
        let nginx = start_nginx(dir.path(), upstream);
        let gate = gates.start(
            "grace_period = \"60s\"\nmax_reuses = 4294967295\nreplay_spacing = \"0s\"",
            "",
        );
        report.line(&header(&settings, Some(cpu::child_count(nginx.pid()))));
        let targets = rounds::Targets {
            direct: Target {
                name: "direct (IdP)",
                addr: upstream,
                pid: None,
            },
            minimal: minimal.target("minimal Pingora"),
            nginx: nginx.target("nginx proxy_pass"),
            gate: gate.target("refresh-gate"),
        };
        let bench = rounds::Bench {
            runtime: &runtime,
            settings: &settings,
            scripts: &scripts,
            idp: &idp,
        };
        rounds::run(&mut report, &bench, &targets);
    } else {
        report.line(&header(&settings, None));
    }
    if settings.wants("p4") {
        storm::run(&mut report, &runtime, &gates, &idp);
    }
    if settings.wants("p6") {
        let shape = settings.shape;
        stores::run(
            &mut report,
            &gates,
            &idp,
            settings.runs,
            shape,
            &scripts.first_use,
        );
    }
    if settings.wants("p5") {
        let shape = settings.shape;
        memory::run(&mut report, &runtime, &gates, shape, &scripts.first_use);
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results.md");
    std::fs::write(&out, format!("{}\n", report.text())).unwrap();
    println!("\nwritten to {}", out.display());
}
