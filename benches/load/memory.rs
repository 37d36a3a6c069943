//! P5, memory: bytes per tombstone in the in-process store, and the gate's RSS under a
//! flood of unique tokens with `max_tombstones` set.

use crate::cpu;
use crate::procs::Gates;
use crate::report::Report;
use crate::settings::Shape;
use crate::wrk;
use bytes::Bytes;
use refresh_gate::clock::{SystemClock, UnixMillis};
use refresh_gate::oauth::credentials::ClientIdentity;
use refresh_gate::policy::{Policy, Presenter, Rules};
use refresh_gate::seal::envelope::SealedAnswer;
use refresh_gate::seal::fingerprint::Fingerprinter;
use refresh_gate::seal::secret::RefreshToken;
use refresh_gate::store::{
    ExchangeOutcome, MemoryStore, MemoryStoreLimits, TokenRecord, TokenStore,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Run P5.
pub fn run(
    report: &mut Report,
    runtime: &tokio::runtime::Runtime,
    gates: &Gates,
    shape: Shape,
    first_use: &Path,
) {
    const N: u64 = 1_000_000;
    let store = MemoryStore::new(
        &MemoryStoreLimits {
            tombstone_ttl: Duration::from_secs(900),
            max_tombstones: N + 1000,
            max_in_flight: 10_000,
        },
        Arc::new(SystemClock),
    );
    let policy = Policy::uniform(Rules {
        grace_period: Duration::ZERO,
        ..Rules::default()
    });
    let fingerprinter = Fingerprinter::new(&[9u8; 32]);
    let client = ClientIdentity {
        client_id: "kubernetes".into(),
        secret: Some(
            fingerprinter.client_secret(&refresh_gate::seal::secret::ClientSecret::new("s")),
        ),
    };
    let source: std::net::IpAddr = "10.20.30.40".parse().unwrap();
    let who = Presenter {
        client: &client,
        source,
    };
    let answer = Arc::new(SealedAnswer::seal(
        &RefreshToken::new("x"),
        &refresh_gate::http::answer::Answer {
            status: 200,
            headers: vec![],
            body: Bytes::new(),
        },
    ));
    let now = UnixMillis(1_800_000_000_000);
    let before = cpu::rss_kib(std::process::id());
    runtime.block_on(async {
        for n in 0..N {
            let fp = fingerprinter.token(&RefreshToken::new(format!("rt-{n}")));
            let successor = fingerprinter.token(&RefreshToken::new(format!("rt-{n}-next")));
            store.present(&fp, &who, &policy, now).await.unwrap();
            let record = TokenRecord::new(
                now,
                client.clone(),
                source,
                Some("alice@example.com".into()),
                fp,
            );
            let outcome = ExchangeOutcome::Rotated {
                record: Arc::new(record),
                answer: answer.clone(),
                successor: Some(successor),
            };
            store.complete(&fp, outcome, &policy).await.unwrap();
        }
    });
    store.run_maintenance();
    let after = cpu::rss_kib(std::process::id());
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / N as f64;
    report.line("\nP5 memory\n");
    report.line(&format!(
        "in-process store, {N} live tombstones (client id + secret fingerprint, source, subject, family, first use, replay count) with their family links: \
         RSS +{} MiB = {per:.0} bytes per tombstone (target <= 300)",
        (after - before) / 1024
    ));
    drop(store);

    // A flood of unique tokens through the gate with max_tombstones set: RSS stays flat.
    let gate = gates.start("grace_period = \"5s\"\nmax_tombstones = 20000", "");
    let target = gate.target("refresh-gate");
    let mut samples = vec![cpu::rss_kib(gate.pid())];
    for _ in 0..3 {
        wrk::run(&target, first_use, &wrk::run_id(), shape);
        samples.push(cpu::rss_kib(gate.pid()));
    }
    report.line(&format!(
        "flood of unique tokens through the gate, max_tombstones = 20000, RSS after each {}s wrk run (KiB): {:?}",
        shape.seconds, samples
    ));
}
