//! P6: the Redis store against the memory store, same binary and IdP, in the same run:
//! first-use latency from one client (one connection, sequential), and throughput under
//! the configured load. The gate's CPU excludes redis-server's.

use crate::idp::Idp;
use crate::procs::{start_redis, Gates};
use crate::report::{Goal, Report};
use crate::settings::Shape;
use crate::stats::ratios;
use crate::wrk::{self, Sample};
use std::path::Path;
use std::sync::atomic::Ordering;

/// Run P6 on two fresh gates.
pub fn run(
    report: &mut Report,
    gates: &Gates,
    idp: &Idp,
    runs: usize,
    shape: Shape,
    first_use: &Path,
) {
    let redis = start_redis(&gates.dir);
    let key = gates.dir.join("fingerprint.key");
    std::fs::write(&key, [42u8; 32]).unwrap();
    let rotation = "grace_period = \"60s\"\nmax_reuses = 4294967295\nreplay_spacing = \"0s\"";
    let memory_gate = gates.start(rotation, "");
    let redis_gate = gates.start(
        rotation,
        &format!(
            "[store]\nbackend = \"redis\"\nurl = \"redis://{}\"\nfingerprint_key_file = \"{}\"\non_store_error = \"fail-closed\"\n",
            redis.addr,
            key.display()
        ),
    );
    let targets = [
        memory_gate.target("memory store"),
        redis_gate.target("redis store"),
    ];
    let single_shape = Shape {
        threads: 1,
        connections: 1,
        ..shape
    };
    let mut single: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    let mut loaded: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, target) in targets.iter().enumerate() {
            single[i].push(wrk::run(target, first_use, &wrk::run_id(), single_shape));
            loaded[i].push(wrk::run(target, first_use, &wrk::run_id(), shape));
        }
    }
    let rows = |series: &[Vec<Sample>]| -> Vec<(&str, Vec<Sample>)> {
        targets
            .iter()
            .map(|t| t.name)
            .zip(series.iter().cloned())
            .collect()
    };
    let table = |report: &mut Report, title: &str, series: &[Vec<Sample>]| {
        let rows = rows(series);
        let rows: Vec<(&str, &[Sample])> = rows.iter().map(|(n, s)| (*n, s.as_slice())).collect();
        report.table(title, &rows);
    };
    table(
        report,
        "P6a first-use refreshes, one client (1 connection, sequential): store latency",
        &single,
    );
    table(
        report,
        &format!(
            "P6b first-use refreshes, {} connections: store throughput",
            shape.connections
        ),
        &loaded,
    );
    report.line("");
    report.ratio(
        "redis / memory first-use latency p50",
        &ratios(&single[1], &single[0], |s| Some(s.p50_ms)),
        Goal::AtMost(1.5),
    );
    report.ratio(
        "redis / memory first-use latency p99",
        &ratios(&single[1], &single[0], |s| Some(s.p99_ms)),
        Goal::AtMost(1.5),
    );
    report.ratio(
        "redis / memory throughput under load",
        &ratios(&loaded[1], &loaded[0], |s| Some(s.rps)),
        Goal::None,
    );
    // The same single-client comparison with an IdP that takes 20 ms per refresh (a fast
    // production IdP; the end-to-end IdP here takes 250 ms).
    idp.latency_ms.store(20, Ordering::Relaxed);
    let mut slow: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, target) in targets.iter().enumerate() {
            slow[i].push(wrk::run(target, first_use, &wrk::run_id(), single_shape));
        }
    }
    idp.latency_ms.store(0, Ordering::Relaxed);
    table(
        report,
        "P6c first-use refreshes, one client, IdP answering in 20 ms",
        &slow,
    );
    report.line("");
    report.ratio(
        "redis / memory first-use latency p50, 20 ms IdP",
        &ratios(&slow[1], &slow[0], |s| Some(s.p50_ms)),
        Goal::None,
    );
    report.ratio(
        "redis / memory first-use latency p99, 20 ms IdP",
        &ratios(&slow[1], &slow[0], |s| Some(s.p99_ms)),
        Goal::None,
    );
}
