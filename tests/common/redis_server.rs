//! A real `redis-server` (Debian's), started per test on a free loopback port with no
//! persistence; stopped on drop. Can be stopped and started again on the same port.

use super::gate::free_port;
use super::prereq::require;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the server runs and how clients must reach it.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// Serve TLS only, with a self-signed certificate for 127.0.0.1 and localhost.
    pub tls: bool,
    /// More `redis-server` arguments.
    pub args: Vec<String>,
}

/// One redis-server process.
pub struct RedisServer {
    pub addr: SocketAddr,
    program: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    options: ServerOptions,
    /// The certificate (PEM) clients must trust, with TLS.
    pub ca_pem: Option<String>,
    key_pem: Option<String>,
}

/// One key as the tests inspect it: its type, every byte it holds, and its TTL.
#[derive(Debug)]
pub struct StoredKey {
    pub kind: String,
    pub bytes: Vec<u8>,
    pub pttl: i64,
}

impl RedisServer {
    /// Start on a fresh free port and wait until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(ServerOptions::default())
    }

    /// Start with a password, TLS or other arguments.
    pub fn start_with(options: ServerOptions) -> RedisServer {
        let program = require(
            "redis-server",
            "Install Debian's redis-server (apt-get install redis-server).",
        );
        let (ca_pem, key_pem) = if options.tls {
            let certified = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .unwrap();
            (
                Some(certified.cert.pem()),
                Some(certified.key_pair.serialize_pem()),
            )
        } else {
            (None, None)
        };
        for _attempt in 0..5 {
            let mut server = RedisServer {
                addr: free_port(),
                program: program.clone(),
                child: None,
                dir: tempfile::tempdir().unwrap(),
                options: options.clone(),
                ca_pem: ca_pem.clone(),
                key_pem: key_pem.clone(),
            };
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn launch(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let mut command = Command::new(&self.program);
        command.args(["--bind", "127.0.0.1"]);
        let port = self.addr.port().to_string();
        match (&self.ca_pem, &self.key_pem) {
            (Some(cert), Some(key)) => {
                let cert_file = self.dir.path().join("redis.crt");
                let key_file = self.dir.path().join("redis.key");
                std::fs::write(&cert_file, cert).unwrap();
                std::fs::write(&key_file, key).unwrap();
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&cert_file)
                    .arg("--tls-key-file")
                    .arg(&key_file)
                    .arg("--tls-ca-cert-file")
                    .arg(&cert_file)
                    .args(["--tls-auth-clients", "no"]);
            }
            _ => {
                command.args(["--port", &port]);
            }
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        command.args(&self.options.args);
        let child = command
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().unwrap().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    fn client(&self) -> redis::Client {
        let url = match &self.options.password {
            Some(password) => self.url().replacen("://", &format!("://:{password}@"), 1),
            None => self.url(),
        };
        match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.as_bytes().to_vec()),
                },
            )
            .unwrap(),
            None => redis::Client::open(url).unwrap(),
        }
    }

    fn ping(&self) -> bool {
        self.client()
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:port` (`rediss://` with TLS); never with the password.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr)
    }

    /// Kill the server (an outage); its data is gone with it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the process (`SIGSTOP`): connections stay open and nothing is answered, as in
    /// a stall; [`RedisServer::resume`] continues it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continue a paused process (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        for _attempt in 0..50 {
            if self.launch() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on {}", self.addr);
    }

    fn connection(&self) -> redis::Connection {
        self.client()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    /// Every key with everything it holds (values, hash fields and values) and its TTL.
    pub fn dump(&self) -> BTreeMap<String, StoredKey> {
        let mut connection = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
        let mut out = BTreeMap::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut connection).unwrap();
            let bytes = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query::<Vec<u8>>(&mut connection)
                    .unwrap_or_default(),
                "hash" => redis::cmd("HGETALL")
                    .arg(&key)
                    .query::<Vec<Vec<u8>>>(&mut connection)
                    .unwrap_or_default()
                    .concat(),
                other => panic!("unexpected key type {other} for {key}"),
            };
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut connection).unwrap();
            out.insert(key, StoredKey { kind, bytes, pttl });
        }
        out
    }

    /// The gate's `[store]` table for this server (the key file shared by every replica).
    pub fn store_section(
        &self,
        key_file: &std::path::Path,
        on_store_error: super::config::OnStoreError,
    ) -> super::config::Store {
        super::config::Store {
            key_prefix: Some("rg:".to_owned()),
            timeout: Some(std::time::Duration::from_millis(300)),
            on_store_error: Some(on_store_error),
            ..super::config::Store::redis(self.url(), key_file)
        }
    }

    /// A fingerprint key file for replicas to share.
    pub fn shared_key() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "replicas-share-this-fingerprint-key-0123456789",
        )
        .unwrap();
        file
    }

    /// Run one command (test setup and inspection).
    pub fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.connection()).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
