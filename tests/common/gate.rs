//! The real `refresh-gate` binary, started per test on a free loopback port.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::GateConfig;

/// A running gate; killed on drop.
pub struct GateProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    log_path: PathBuf,
    config_path: PathBuf,
    /// What `config_path` holds (the addresses filled in).
    config: Mutex<GateConfig>,
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
    /// Start the gate with `config` and wait until it accepts connections.
    pub async fn start(config: &GateConfig) -> GateProcess {
        GateProcess::start_with_env(config, &[]).await
    }

    /// Start the gate with `config` and these environment variables (`RUST_LOG` is removed
    /// unless set here), and wait until it accepts connections.
    pub async fn start_with_env(config: &GateConfig, env: &[(&str, &str)]) -> GateProcess {
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let addr = config.listen.address.unwrap_or_else(free_port);
            let admin = free_port();
            let mut written = config.clone();
            written.listen.address = Some(addr);
            written.admin.address = Some(admin);
            let config_path = dir.path().join("refresh-gate.toml");
            std::fs::write(&config_path, written.to_toml()).unwrap();
            let log_path = dir.path().join("gate.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(binary())
                .arg("--config")
                .arg(&config_path)
                .env_remove("RUST_LOG")
                .envs(env.iter().copied())
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
                        config_path,
                        config: Mutex::new(written),
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

    /// Change the gate's configuration file with `edit` (then send SIGHUP to reload, or let
    /// the gate notice the file changed).
    pub fn reconfigure(&self, edit: impl FnOnce(&mut GateConfig)) {
        let mut config = self.config.lock().unwrap();
        edit(&mut config);
        std::fs::write(&self.config_path, config.to_toml()).unwrap();
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
