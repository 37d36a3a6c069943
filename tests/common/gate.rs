//! The real `refresh-gate` binary, started per test on a free loopback port.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings a test varies; the rest are the shipped defaults.
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub upstream: String,
    /// Listen here (a port reserved earlier) instead of a fresh free port.
    pub listen: Option<SocketAddr>,
    pub grace_period: &'static str,
    pub max_reuses: u32,
    pub replay_spacing: &'static str,
    pub max_replay_delay: &'static str,
    pub request_timeout: &'static str,
    pub exchange_timeout: &'static str,
    pub max_tombstones: u64,
    pub max_in_flight: usize,
    pub log_level: &'static str,
    pub log_format: &'static str,
    pub token_paths: &'static str,
    pub discovery_interval: &'static str,
    pub drain: &'static str,
    /// Extra lines for `[listen]`, `[upstream]`, `[rotation]`, and extra tables at the end.
    pub listen_extra: String,
    pub upstream_extra: String,
    pub rotation_extra: String,
    pub extra: String,
    /// Environment variables for the gate process (`RUST_LOG` is removed unless set here).
    pub env: Vec<(&'static str, String)>,
}

impl GateOptions {
    /// Defaults for a gate in front of `upstream`.
    pub fn new(upstream: impl Into<String>) -> Self {
        GateOptions {
            upstream: upstream.into(),
            listen: None,
            grace_period: "5s",
            max_reuses: 10,
            replay_spacing: "0s",
            max_replay_delay: "2s",
            request_timeout: "5s",
            exchange_timeout: "30s",
            max_tombstones: 100_000,
            max_in_flight: 10_000,
            log_level: "info",
            log_format: "plain",
            token_paths: r#"["/token"]"#,
            discovery_interval: "60s",
            drain: "1s",
            listen_extra: String::new(),
            upstream_extra: String::new(),
            rotation_extra: String::new(),
            extra: String::new(),
            env: Vec::new(),
        }
    }

    fn toml(&self, listen: SocketAddr, admin: SocketAddr) -> String {
        format!(
            r#"
[listen]
address = "{listen}"
drain = "{drain}"
shutdown_grace = "1s"
{listen_extra}
[admin]
address = "{admin}"
[upstream]
url = "{upstream}"
token_paths = {token_paths}
discovery_interval = "{discovery_interval}"
{upstream_extra}
connect_timeout = "1s"
request_timeout = "{request_timeout}"
exchange_timeout = "{exchange_timeout}"
[rotation]
grace_period = "{grace}"
max_reuses = {max_reuses}
replay_spacing = "{spacing}"
max_replay_delay = "{max_delay}"
tombstone_ttl = "15m"
max_tombstones = {max_tombstones}
max_in_flight = {max_in_flight}
{rotation_extra}
[log]
level = "{log_level}"
format = "{log_format}"
{extra}
"#,
            listen_extra = self.listen_extra,
            upstream_extra = self.upstream_extra,
            rotation_extra = self.rotation_extra,
            extra = self.extra,
            drain = self.drain,
            token_paths = self.token_paths,
            discovery_interval = self.discovery_interval,
            log_format = self.log_format,
            upstream = self.upstream,
            request_timeout = self.request_timeout,
            exchange_timeout = self.exchange_timeout,
            grace = self.grace_period,
            max_reuses = self.max_reuses,
            spacing = self.replay_spacing,
            max_delay = self.max_replay_delay,
            max_tombstones = self.max_tombstones,
            max_in_flight = self.max_in_flight,
            log_level = self.log_level,
        )
    }
}

/// A running gate; killed on drop.
pub struct GateProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    log_path: PathBuf,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for GateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago (bound on port 0, then released).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The path of the binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_refresh-gate"))
}

impl GateProcess {
    /// Start the gate and wait until it accepts connections.
    pub async fn start(options: &GateOptions) -> GateProcess {
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr = options.listen.unwrap_or_else(free_port);
            let admin = free_port();
            let config = dir.path().join("refresh-gate.toml");
            std::fs::write(&config, options.toml(addr, admin)).unwrap();
            let log_path = dir.path().join("gate.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(binary())
                .arg("--config")
                .arg(&config)
                .env_remove("RUST_LOG")
                .envs(
                    options
                        .env
                        .iter()
                        .map(|(name, value)| (*name, value.as_str())),
                )
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start refresh-gate");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let live = reqwest::get(format!("http://{admin}/livez")).await;
                let proxy_up = tokio::net::TcpStream::connect(addr).await.is_ok();
                if proxy_up && live.is_ok_and(|r| r.status() == 200) {
                    // Another process may hold a port we picked: make sure ours is alive.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    return GateProcess {
                        addr,
                        admin,
                        child,
                        log_path,
                        config_path: config.clone(),
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    eprintln!(
                        "gate did not start on {addr}; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("refresh-gate did not start after 5 attempts");
    }

    /// `http://127.0.0.1:port<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://127.0.0.1:adminport<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Rewrite the gate's configuration file with `edit` (then send SIGHUP to reload).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, edit(text)).unwrap();
    }

    /// Send a signal (`"HUP"`, `"TERM"`) to the gate.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait until the log contains `needle` (up to 5 s); the whole log.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..50 {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gate never logged {needle:?}:\n{}", self.log());
    }

    /// The process id (to send signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET an admin path: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.admin_url(path)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The value of one series in `/metrics` (e.g. `refresh_gate_refused_total{reason="after_grace"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Everything the gate logged so far (its log lines are written by a background
    /// thread, so give it a moment first).
    pub fn log(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
