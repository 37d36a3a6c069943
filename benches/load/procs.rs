//! The processes under load: the gate, the minimal Pingora proxy, nginx, redis-server.
//! Each is killed when its [`Proc`] drops.

use crate::cpu;
use crate::minimal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free local port (bound once and let go).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running server process and where it listens.
pub struct Proc {
    child: Child,
    /// Its listener.
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Its children too: nginx's worker outlives a killed master.
        let children = cpu::children(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in children {
            // SAFETY: kill(2) on a pid that was our child's child a moment ago.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// What wrk loads: an address and, when it is a process of ours, the pid whose CPU
/// (with its children's) is the target's cost.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name in the tables.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process to measure; none for the IdP itself (it runs inside the benchmark).
    pub pid: Option<u32>,
}

impl Proc {
    /// Spawn `command` and wait until it listens on `addr`; `log` names its stderr file.
    fn spawn(mut command: Command, addr: SocketAddr, log: &Path) -> Proc {
        let stderr = std::fs::File::create(log).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let mut proc = Proc { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = proc.child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{command:?} exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "{addr} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        proc
    }

    /// The pid (nginx: its master).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This process as a load target.
    pub fn target(&self, name: &'static str) -> Target {
        Target {
            name,
            addr: self.addr,
            pid: Some(self.pid()),
        }
    }
}

/// Starts gates: the binary under test (`GATE_BIN`), in front of the fake IdP, with
/// `GATE_EXTRA_TOML` laid over each configuration.
pub struct Gates {
    /// The binary.
    pub bin: PathBuf,
    /// Laid over every configuration.
    pub extra: String,
    /// Where configurations and logs go.
    pub dir: PathBuf,
    /// The IdP.
    pub upstream: SocketAddr,
}

impl Gates {
    /// A gate with `rotation` (the body of `[rotation]`) and `sections` (more TOML tables).
    pub fn start(&self, rotation: &str, sections: &str) -> Proc {
        let listen = free_port();
        let admin = free_port();
        let upstream = self.upstream;
        let config = self.dir.join(format!("gate-{}.toml", listen.port()));
        let base = format!(
            "[listen]\naddress = \"{listen}\"\ndrain = \"0s\"\nshutdown_grace = \"1s\"\n\
             [admin]\naddress = \"{admin}\"\n\
             [upstream]\nurl = \"http://{upstream}\"\ntoken_paths = [\"/token\"]\ndiscovery_interval = \"0s\"\n\
             [rotation]\n{rotation}\n[log]\nlevel = \"info\"\n{sections}\n"
        );
        std::fs::write(&config, overlaid(&base, &self.extra)).unwrap();
        let mut command = Command::new(&self.bin);
        command.arg("--config").arg(&config);
        let log = self.dir.join(format!("gate-{}.log", listen.port()));
        Proc::spawn(command, listen, &log)
    }
}

/// `extra` laid over `base`, key by key: tables merge, other values replace.
fn overlaid(base: &str, extra: &str) -> String {
    fn overlay(base: &mut toml::Table, extra: toml::Table) {
        for (key, value) in extra {
            match (base.get_mut(&key), value) {
                (Some(toml::Value::Table(base)), toml::Value::Table(extra)) => overlay(base, extra),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    let mut table: toml::Table = base.parse().expect("the benchmark's gate configuration");
    let extra = extra
        .parse()
        .unwrap_or_else(|e| panic!("GATE_EXTRA_TOML is not TOML: {e}"));
    overlay(&mut table, extra);
    toml::to_string(&table).unwrap()
}

/// The minimal Pingora proxy: this benchmark binary again, in the minimal-proxy role.
pub fn start_minimal(dir: &Path, upstream: SocketAddr) -> Proc {
    let listen = free_port();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env(minimal::ROLE_VAR, minimal::ROLE)
        .env(minimal::LISTEN_VAR, listen.to_string())
        .env(minimal::UPSTREAM_VAR, upstream.to_string());
    Proc::spawn(command, listen, &dir.join("minimal.log"))
}

/// nginx with one worker (`worker_processes 1`), keep-alive to `upstream`.
pub fn start_nginx(dir: &Path, upstream: SocketAddr) -> Proc {
    let listen = free_port();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\npid {pid};\nerror_log {err} warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n\
               upstream idp {{ server {upstream}; keepalive 128; }}\n\
               server {{\n    listen {listen};\n    keepalive_requests 100000;\n\
                 location / {{\n      proxy_pass http://idp;\n      proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
            pid = prefix.join("nginx.pid").display(),
            err = prefix.join("logs/error.log").display(),
            tmp = prefix.join("tmp").display(),
        ),
    )
    .unwrap();
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    Proc::spawn(command, listen, &prefix.join("logs/stderr.log"))
}

/// A redis-server on a free port, without persistence (P6).
pub fn start_redis(dir: &Path) -> Proc {
    let addr = free_port();
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir);
    Proc::spawn(command, addr, &dir.join("redis.log"))
}
