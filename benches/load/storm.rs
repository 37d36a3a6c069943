//! P4, the coalescing storm: 1,000 concurrent refreshes of one token while the IdP takes
//! 500 ms; the gate should call the IdP once and answer everyone.

use crate::client;
use crate::idp::Idp;
use crate::procs::Gates;
use crate::report::Report;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Run P4 on a fresh gate.
pub fn run(report: &mut Report, runtime: &tokio::runtime::Runtime, gates: &Gates, idp: &Idp) {
    let gate = gates.start(
        "grace_period = \"60s\"\nmax_reuses = 5000\nreplay_spacing = \"1ms\"\nmax_replay_delay = \"2s\"",
        "",
    );
    let addr = gate.addr;
    idp.latency_ms.store(500, Ordering::SeqCst);
    let before = idp.token_calls.load(Ordering::SeqCst);
    let started = Instant::now();
    let statuses: Vec<u16> = runtime.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| tokio::spawn(async move { client::refresh(addr, "storm-token").await }))
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses
    });
    let elapsed = started.elapsed();
    idp.latency_ms.store(0, Ordering::SeqCst);
    let calls = idp.token_calls.load(Ordering::SeqCst) - before;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    report.line("\nP4 coalescing storm: 1,000 concurrent refreshes of one token, IdP latency 500 ms, replay_spacing 1ms (capped at 2s)\n");
    report.line(&format!(
        "upstream calls: {calls} (target: 1); answers 200: {ok}/1000; time to last answer: {:.2} s",
        elapsed.as_secs_f64()
    ));
}
