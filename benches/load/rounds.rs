//! P1-P3, interleaved: each run loads every (scenario, target) pair once, starting one
//! further along the list each run, so per-run ratios (gate over its engine, P2 or P3 over
//! the gate's own P1) compare runs taken side by side.

use crate::client;
use crate::idp::Idp;
use crate::procs::Target;
use crate::report::{Goal, Report};
use crate::settings::Settings;
use crate::stats::ratios;
use crate::wrk::{self, Sample, Scripts};
use std::sync::atomic::Ordering;

/// The targets of P1-P3.
pub struct Targets {
    /// The IdP itself (no proxy).
    pub direct: Target,
    /// The minimal Pingora proxy.
    pub minimal: Target,
    /// nginx, one worker.
    pub nginx: Target,
    /// The gate.
    pub gate: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    GetPass,
    PostPass,
    FirstUse,
    Replay,
}

struct Job {
    load: Load,
    target: Target,
    samples: Vec<Sample>,
    /// The IdP's `/token` calls during the wrk runs (a first use makes one, a replay none).
    idp_calls: u64,
}

fn jobs(settings: &Settings, t: &Targets) -> Vec<Job> {
    let (p1, p2, p3) = (
        settings.wants("p1"),
        settings.wants("p2"),
        settings.wants("p3"),
    );
    let mut list = Vec::new();
    // The gate's P1 GET is the baseline of P2's and P3's ratios.
    match (p1, p2 || p3) {
        (true, _) => {
            list.extend([t.direct, t.minimal, t.nginx, t.gate].map(|x| (Load::GetPass, x)))
        }
        (false, true) => list.push((Load::GetPass, t.gate)),
        _ => {}
    }
    if p1 {
        list.extend([t.minimal, t.nginx, t.gate].map(|x| (Load::PostPass, x)));
    }
    if p2 {
        list.extend([t.minimal, t.nginx, t.gate].map(|x| (Load::FirstUse, x)));
    }
    if p3 {
        list.push((Load::Replay, t.gate));
    }
    list.into_iter()
        .map(|(load, target)| Job {
            load,
            target,
            samples: Vec::new(),
            idp_calls: 0,
        })
        .collect()
}

/// What the runs use.
pub struct Bench<'a> {
    /// The benchmark's runtime (the IdP runs on it).
    pub runtime: &'a tokio::runtime::Runtime,
    /// The knobs.
    pub settings: &'a Settings,
    /// The wrk scripts.
    pub scripts: &'a Scripts,
    /// The IdP, to count its `/token` calls.
    pub idp: &'a Idp,
}

/// One wrk run of `job`, its sample kept and the IdP's calls during it counted.
fn run_job(job: &mut Job, bench: &Bench) {
    let scripts = bench.scripts;
    let (script, arg) = match job.load {
        Load::GetPass => (&scripts.get, wrk::run_id()),
        Load::PostPass => (&scripts.post, wrk::run_id()),
        Load::FirstUse => (&scripts.first_use, wrk::run_id()),
        Load::Replay => {
            // A fresh token each run, used once here: the run replays it inside its window.
            let token = format!("bench-replay-{}", wrk::run_id());
            let status = bench
                .runtime
                .block_on(client::refresh(job.target.addr, &token));
            assert_eq!(status, 200, "the first use of the replay token");
            (&scripts.replay, token)
        }
    };
    let calls = || bench.idp.token_calls.load(Ordering::SeqCst);
    let before = calls();
    let sample = wrk::run(&job.target, script, &arg, bench.settings.shape);
    job.idp_calls += calls() - before;
    job.samples.push(sample);
}

/// The samples of `load` on the target called `name`, if that pair ran.
fn series<'a>(jobs: &'a [Job], load: Load, name: &str) -> Option<&'a [Sample]> {
    jobs.iter()
        .find(|j| j.load == load && j.target.name == name)
        .map(|j| j.samples.as_slice())
}

fn cpu(s: &Sample) -> Option<f64> {
    s.cpu_us
}

/// Run P1-P3 as `SCENARIOS` asks and report their tables and ratios.
pub fn run(report: &mut Report, bench: &Bench, targets: &Targets) {
    let mut jobs = jobs(bench.settings, targets);
    if jobs.is_empty() {
        return;
    }
    for run in 0..bench.settings.runs {
        for k in 0..jobs.len() {
            let i = (k + run) % jobs.len();
            run_job(&mut jobs[i], bench);
        }
    }
    let titles = [
        (Load::GetPass, "P1 pass-through GET (non-token path)"),
        (Load::PostPass, "P1 pass-through POST, 200-byte body"),
        (Load::FirstUse, "P2 first-use refreshes (every request a new token; nginx and the minimal proxy pass them through)"),
        (Load::Replay, "P3 grace replays from memory (one token inside its window, each audited; a new token each run)"),
    ];
    for (load, title) in titles {
        let rows: Vec<(&str, &[Sample])> = jobs
            .iter()
            .filter(|j| j.load == load)
            .map(|j| (j.target.name, j.samples.as_slice()))
            .collect();
        if !rows.is_empty() {
            report.table(title, &rows);
        }
    }
    idp_lines(report, &jobs);
    ratio_lines(report, &jobs, targets);
}

/// The IdP's `/token` calls per completed request of the refresh loads: a check that a
/// first use reached the IdP once and a replay never.
fn idp_lines(report: &mut Report, jobs: &[Job]) {
    let checked: Vec<String> = jobs
        .iter()
        .filter(|j| matches!(j.load, Load::FirstUse | Load::Replay))
        .map(|j| {
            let requests: u64 = j.samples.iter().map(|s| s.requests).sum();
            let scenario = if j.load == Load::Replay { "P3" } else { "P2" };
            let per = j.idp_calls as f64 / requests.max(1) as f64;
            format!("{scenario} {} {per:.3}", j.target.name)
        })
        .collect();
    if !checked.is_empty() {
        report.line(&format!(
            "\nIdP /token calls per completed request (a first use makes one, a replay none): {}",
            checked.join(", ")
        ));
    }
}

fn ratio_lines(report: &mut Report, jobs: &[Job], t: &Targets) {
    report.line(
        "\nRatios, each over the runs (run i over run i: they alternate), median (min-max):\n",
    );
    let gate = |load| series(jobs, load, t.gate.name);
    let minimal = |load| series(jobs, load, t.minimal.name);
    let nginx = |load| series(jobs, load, t.nginx.name);
    let mut line = |label: &str,
                    a: Option<&[Sample]>,
                    b: Option<&[Sample]>,
                    f: fn(&Sample) -> Option<f64>,
                    goal| {
        if let (Some(a), Some(b)) = (a, b) {
            report.ratio(label, &ratios(a, b, f), goal);
        }
    };
    use Load::*;
    line(
        "P1 GET CPU/request, gate / minimal Pingora",
        gate(GetPass),
        minimal(GetPass),
        cpu,
        Goal::AtMost(1.05),
    );
    line(
        "P1 GET CPU/request, gate / nginx (long-term goal: below 1)",
        gate(GetPass),
        nginx(GetPass),
        cpu,
        Goal::None,
    );
    line(
        "P1 GET throughput, gate / nginx",
        gate(GetPass),
        nginx(GetPass),
        |s| Some(s.rps),
        Goal::None,
    );
    line(
        "P1 GET p99, gate / nginx",
        gate(GetPass),
        nginx(GetPass),
        |s| Some(s.p99_ms),
        Goal::None,
    );
    line(
        "P1 POST CPU/request, gate / minimal Pingora",
        gate(PostPass),
        minimal(PostPass),
        cpu,
        Goal::None,
    );
    line(
        "P2 CPU/request, gate P2 / gate P1 GET",
        gate(FirstUse),
        gate(GetPass),
        cpu,
        Goal::AtMost(1.3),
    );
    line(
        "P2 CPU/request, gate / minimal Pingora passing the same requests",
        gate(FirstUse),
        minimal(FirstUse),
        cpu,
        Goal::None,
    );
    line(
        "P3 CPU/request, gate P3 / gate P1 GET",
        gate(Replay),
        gate(GetPass),
        cpu,
        Goal::AtMost(0.6),
    );
    line(
        "P3 / P2 throughput, gate",
        gate(Replay),
        gate(FirstUse),
        |s| Some(s.rps),
        Goal::AtLeast(3.0),
    );
}
