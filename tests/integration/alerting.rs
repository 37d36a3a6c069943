//! Alert rules and dashboards: promtool unit tests, a real Prometheus server scraping the
//! real gate, and the dashboard's queries checked against the metric names.

use crate::common;

use common::prereq::require;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn conf(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(path)
}

const PROMETHEUS_HINT: &str = "Install Debian's `prometheus` package (apt-get install prometheus).";

#[test]
fn promtool_checks_and_unit_tests_pass() {
    let promtool = require("promtool", PROMETHEUS_HINT);
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(conf("prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn promtool_test_counters_start_at_zero_like_the_gate() {
    let text = std::fs::read_to_string(conf("prometheus/alerts_test.yml")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut counters = 0;
    for (i, line) in lines.iter().enumerate() {
        // Counters only (`_total`); gauges such as `refresh_gate_store_up` start anywhere.
        if line.starts_with("- series: 'refresh_gate_") && line.contains("_total{") {
            counters += 1;
            let values = lines[i + 1];
            assert!(
                values.starts_with("values: '0"),
                "counter series must start at 0 (as the gate exports them): {line} {values}"
            );
        }
    }
    assert!(counters >= 5);
}

#[test]
fn the_gate_metrics_pass_promtool_check_metrics() {
    let promtool = require("promtool", PROMETHEUS_HINT);
    let text = refresh_gate::observe::metrics::Metrics::new().render();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let binary = require("prometheus", PROMETHEUS_HINT);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: refresh-gate\n    static_configs:\n      - targets: ['{target}']\n",
                conf("prometheus/alerts.yml").display()
            ),
        )
        .unwrap();
        let listen = common::gate::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            url: format!("http://{listen}"),
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<serde_json::Value> {
        let response = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        response.json().await.ok()
    }

    async fn query(&self, expr: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let value = self.api(&path).await?;
        value["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    async fn eventually<T>(&self, what: &str, mut probe: impl AsyncFnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = probe(self).await {
                return found;
            }
            assert!(Instant::now() < deadline, "Prometheus never showed: {what}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_sees_replays_and_the_refused_replay_alert() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let prometheus = Prometheus::start(gate.admin);

    // The series are scraped at 0 before anything happens.
    let refused = r#"sum(refresh_gate_refused_total{job="refresh-gate"})"#;
    let replays =
        r#"refresh_gate_refresh_requests_total{job="refresh-gate",outcome="grace_replay"}"#;
    let zero = prometheus
        .eventually("the refused counter at 0", async |p| p.query(refused).await)
        .await;
    assert_eq!(zero, 0.0);

    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "kubernetes").await.0, 200);
    assert_eq!(
        refresh(&gate, &token, "kubernetes").await.0,
        200,
        "grace replay"
    );
    assert_eq!(
        refresh(&gate, &token, "intruder").await.0,
        400,
        "refused replay"
    );

    prometheus
        .eventually("a grace replay", async |p| {
            p.query(replays).await.filter(|v| *v == 1.0)
        })
        .await;
    prometheus
        .eventually("a refused replay", async |p| {
            p.query(refused).await.filter(|v| *v == 1.0)
        })
        .await;
    let state = prometheus
        .eventually("RefreshGateReplayRefused pending or firing", async |p| {
            let alerts = p.api("/api/v1/alerts").await?;
            alerts["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["labels"]["alertname"] == "RefreshGateReplayRefused")
                .and_then(|a| a["state"].as_str().map(str::to_owned))
        })
        .await;
    assert!(state == "firing" || state == "pending", "{state}");
}

/// Every `refresh_gate_*` name a dashboard query uses must be a metric the gate exports.
#[test]
fn the_grafana_dashboard_queries_only_known_metrics() {
    let text = std::fs::read_to_string(conf("grafana/refresh-gate.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exported = refresh_gate::observe::metrics::Metrics::new().render();
    let known: std::collections::HashSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 4, "{exprs:?}");
    let mut used = std::collections::HashSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                known.contains(&name),
                "dashboard query uses unknown metric {name}: {expr}"
            );
            used.insert(name);
        }
    }
    for required in [
        "refresh_gate_refresh_requests_total",
        "refresh_gate_refused_total",
        "refresh_gate_upstream_request_duration_seconds_bucket",
        "refresh_gate_tombstones",
    ] {
        assert!(
            used.contains(required),
            "the dashboard does not show {required}"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("refresh_gate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
