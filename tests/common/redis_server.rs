//! A real `redis-server` (Debian's), started per test on a free loopback port with no
//! persistence; stopped on drop. Can be stopped and started again on the same port.

use super::gate::free_port;
use super::prereq::require;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One redis-server process.
pub struct RedisServer {
    pub addr: SocketAddr,
    program: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
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
        let program = require(
            "redis-server",
            "Install Debian's redis-server (apt-get install redis-server).",
        );
        for _attempt in 0..5 {
            let mut server = RedisServer {
                addr: free_port(),
                program: program.clone(),
                child: None,
                dir: tempfile::tempdir().unwrap(),
            };
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn launch(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new(&self.program)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
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

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kill the server (an outage); its data is gone with it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        redis::Client::open(self.url())
            .unwrap()
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
