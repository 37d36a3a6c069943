//! Real replicated Redis topologies, started per test on free loopback ports with no
//! persistence, killed on drop:
//!
//! - [`SentinelSet`]: one primary, two replicas and three sentinels (quorum 2) monitoring
//!   them as [`SENTINEL_MASTER`], tuned to fail over within a few seconds;
//! - [`RedisCluster`]: six nodes, three primaries each with one replica, joined by
//!   `redis-cli --cluster create`, with a one-second node timeout.
//!
//! Every method blocks (processes, polling): from an async test call them inside
//! `tokio::task::block_in_place` or `spawn_blocking` so the test's own servers keep running.
//! A timeout panics with what the topology looked like and the tail of every server's log.

use super::gate::free_port;
use super::prereq::require;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The master name the sentinels of a [`SentinelSet`] monitor.
pub const SENTINEL_MASTER: &str = "gate-primary";

const INSTALL_SERVER: &str = "Install Debian's redis-server (apt-get install redis-server).";
const INSTALL_SENTINEL: &str = "Install Debian's redis-sentinel (apt-get install redis-sentinel).";
const INSTALL_CLI: &str = "Install Debian's redis-tools (apt-get install redis-tools).";

/// One server process (a data node or a sentinel) and its log file.
struct Proc {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!(
            "--- {} ({})\n{}",
            self.addr(),
            self.log.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a topology is secured: `requirepass` on the data nodes (and `masterauth`, so replicas
/// sync), `requirepass` on the sentinels, and TLS everywhere (clients, replication, the
/// cluster bus, sentinel links) with one self-signed certificate for 127.0.0.1 that is also
/// the CA. The default is what `start()` runs: no password, no TLS.
#[derive(Debug, Clone, Default)]
pub struct TopologyOptions {
    /// The data nodes' `requirepass` (and `masterauth`; the sentinels' `auth-pass`).
    pub password: Option<String>,
    /// The sentinels' own `requirepass` (Sentinel only).
    pub sentinel_password: Option<String>,
    /// TLS only: `port 0`, `tls-port` on the chosen port, `tls-auth-clients no`.
    pub tls: bool,
}

/// The certificate and key every TLS server of a topology presents.
struct TlsFiles {
    /// The certificate (PEM), also the CA clients trust.
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

impl TlsFiles {
    /// A self-signed certificate for 127.0.0.1 and localhost, written under `dir`.
    fn create(dir: &Path) -> TlsFiles {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let cert = dir.join("redis.crt");
        let key = dir.join("redis.key");
        let pem = certified.cert.pem();
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        TlsFiles { cert, key, pem }
    }

    /// The server directives (without dashes) that make it serve TLS only on `port` and
    /// replicate (and, for sentinels, reach every instance) over TLS.
    fn directives(&self, port: u16) -> Vec<(String, String)> {
        [
            ("port", "0".to_owned()),
            ("tls-port", port.to_string()),
            ("tls-cert-file", self.cert.display().to_string()),
            ("tls-key-file", self.key.display().to_string()),
            ("tls-ca-cert-file", self.cert.display().to_string()),
            ("tls-auth-clients", "no".to_owned()),
            ("tls-replication", "yes".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// How the harness itself reaches a set of servers: the password to `AUTH` with, and the
/// CA to verify TLS with (TLS when set).
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub password: Option<String>,
    pub ca_pem: Option<String>,
    /// The CA as a file, for `redis-cli --cacert`.
    pub ca_file: Option<PathBuf>,
}

impl Access {
    /// One command to the server at `addr` on a fresh connection with short timeouts
    /// (after `AUTH`, when there is a password).
    pub fn query<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        args: &[&str],
    ) -> redis::RedisResult<T> {
        let client = match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                format!("rediss://{addr}"),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.as_bytes().to_vec()),
                },
            )?,
            None => redis::Client::open(format!("redis://{addr}"))?,
        };
        let mut connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
        connection.set_read_timeout(Some(Duration::from_secs(2)))?;
        connection.set_write_timeout(Some(Duration::from_secs(2)))?;
        if let Some(password) = &self.password {
            redis::cmd("AUTH")
                .arg(password)
                .query::<()>(&mut connection)?;
        }
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    /// `INFO <section>` as `field → value`.
    fn info(
        &self,
        addr: &str,
        section: &str,
    ) -> redis::RedisResult<std::collections::HashMap<String, String>> {
        let text: String = self.query(addr, &["INFO", section])?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// `role:` of INFO replication (`"master"` or `"slave"`), `None` when it does not answer.
    pub fn role(&self, addr: &str) -> Option<String> {
        self.info(addr, "replication").ok()?.get("role").cloned()
    }

    /// The `redis-cli` arguments that reach these servers (`--tls --cacert`, `-a`).
    fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(ca) = &self.ca_file {
            args.extend(["--tls".to_owned(), "--cacert".to_owned()]);
            args.push(ca.display().to_string());
        }
        if let Some(password) = &self.password {
            args.extend([
                "-a".to_owned(),
                password.clone(),
                "--no-auth-warning".to_owned(),
            ]);
        }
        args
    }
}

/// Start `program args…` whose config makes it listen on `port`, and wait until it answers
/// PING through `access`; `None` if it exits first (the port was taken) or never answers.
fn spawn(
    program: &Path,
    args: &[String],
    port: u16,
    log: PathBuf,
    access: &Access,
) -> Option<Proc> {
    let stdout = std::fs::File::create(&log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    let mut proc = Proc {
        port,
        child: Some(child),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !proc.alive() {
            proc.child = None;
            return None;
        }
        if access.query::<String>(&proc.addr(), &["PING"]).is_ok() {
            return Some(proc);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One command to the unsecured server at `addr` on a fresh connection with short timeouts.
pub fn query<T: redis::FromRedisValue>(addr: &str, args: &[&str]) -> redis::RedisResult<T> {
    Access::default().query(addr, args)
}

/// `role:` of an unsecured server's INFO replication, `None` when it does not answer.
pub fn role(addr: &str) -> Option<String> {
    Access::default().role(addr)
}

/// Poll `check` every 50 ms until it returns `Some`, or panic after `timeout` with `what`
/// and the diagnostics `explain` returns.
fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting until {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn data_node_args(
    port: u16,
    dir: &Path,
    tls: Option<&TlsFiles>,
    password: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--replica-announce-ip",
        "127.0.0.1",
        // A replica's full sync starts at once, not after Redis's default 5 s wait for
        // more replicas to join it.
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    match tls {
        Some(tls) => {
            for (directive, value) in tls.directives(port) {
                args.push(format!("--{directive}"));
                args.push(value);
            }
        }
        None => args.extend(["--port".to_owned(), port.to_string()]),
    }
    if let Some(password) = password {
        for directive in ["--requirepass", "--masterauth"] {
            args.extend([directive.to_owned(), password.to_owned()]);
        }
    }
    args
}

/// Every live replica in `replicas` caught up with the `primary`'s replication offset as it
/// was when called: `Some(())`, else `None`.
fn replicas_caught_up(access: &Access, primary: &str, replicas: &[String]) -> Option<()> {
    let target: u64 = access
        .info(primary, "replication")
        .ok()?
        .get("master_repl_offset")?
        .parse()
        .ok()?;
    let (primary_host, primary_port) = primary.split_once(':')?;
    for replica in replicas {
        let replication = access.info(replica, "replication").ok()?;
        let follows = replication.get("role").map(String::as_str) == Some("slave")
            && replication.get("master_host").map(String::as_str) == Some(primary_host)
            && replication.get("master_port").map(String::as_str) == Some(primary_port)
            && replication.get("master_link_status").map(String::as_str) == Some("up");
        let offset: u64 = replication.get("slave_repl_offset")?.parse().ok()?;
        if !follows || offset < target {
            return None;
        }
    }
    Some(())
}

// ---------------------------------------------------------------------------------------
// Sentinel
// ---------------------------------------------------------------------------------------

/// How long a sentinel waits for a node's PING reply before it calls the node down. 500 ms
/// made the sentinels call a just-promoted primary down while it was being reconfigured
/// (redis/redis#8607): over TLS they failed over back and forth every second, and a claim
/// waited out fence after fence. 1 s keeps a failover around 1.5 s.
const SENTINEL_DOWN_AFTER_MS: u64 = 1000;

/// One primary, two replicas and three sentinels (quorum 2, `down-after-milliseconds`
/// [`SENTINEL_DOWN_AFTER_MS`], `failover-timeout` 2000); every process killed on drop.
pub struct SentinelSet {
    data: Mutex<Vec<Proc>>,
    sentinels: Mutex<Vec<Proc>>,
    redis_cli: PathBuf,
    /// How the harness reaches the data nodes, and the sentinels.
    data_access: Access,
    sentinel_access: Access,
    dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Start the data nodes, then the sentinels, and wait until every sentinel knows the
    /// primary, both replicas and the two other sentinels, and the replicas are in sync.
    pub fn start() -> SentinelSet {
        SentinelSet::start_with(TopologyOptions::default())
    }

    /// [`SentinelSet::start`] with passwords and TLS.
    pub fn start_with(options: TopologyOptions) -> SentinelSet {
        let server = require("redis-server", INSTALL_SERVER);
        let sentinel = require("redis-sentinel", INSTALL_SENTINEL);
        let redis_cli = require("redis-cli", INSTALL_CLI);
        let dir = tempfile::tempdir().unwrap();
        let tls = options.tls.then(|| TlsFiles::create(dir.path()));
        let access = |password: &Option<String>| Access {
            password: password.clone(),
            ca_pem: tls.as_ref().map(|t| t.pem.clone()),
            ca_file: tls.as_ref().map(|t| t.cert.clone()),
        };
        let data_access = access(&options.password);
        let sentinel_access = access(&options.sentinel_password);

        let mut data = Vec::new();
        for n in 0..3 {
            let node_dir = dir.path().join(format!("data-{n}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let proc = (0..5)
                .find_map(|_| {
                    let port = free_port().port();
                    let mut args =
                        data_node_args(port, &node_dir, tls.as_ref(), options.password.as_deref());
                    if let Some(primary) = data.first() {
                        let primary: &Proc = primary;
                        args.extend([
                            "--replicaof".to_owned(),
                            "127.0.0.1".to_owned(),
                            primary.port.to_string(),
                        ]);
                    }
                    spawn(
                        &server,
                        &args,
                        port,
                        node_dir.join("redis.log"),
                        &data_access,
                    )
                })
                .unwrap_or_else(|| panic!("redis-server (data node {n}) did not start"));
            data.push(proc);
        }
        let primary_port = data[0].port;

        let mut sentinels = Vec::new();
        for n in 0..3 {
            let sentinel_dir = dir.path().join(format!("sentinel-{n}"));
            std::fs::create_dir_all(&sentinel_dir).unwrap();
            let proc = (0..5)
                .find_map(|_| {
                    let port = free_port().port();
                    let conf = sentinel_dir.join("sentinel.conf");
                    let listen: String = match &tls {
                        Some(tls) => tls
                            .directives(port)
                            .iter()
                            .map(|(k, v)| format!("{k} {v}\n"))
                            .collect(),
                        None => format!("port {port}\n"),
                    };
                    let mut secured = String::new();
                    if let Some(password) = &options.sentinel_password {
                        secured += &format!("requirepass {password}\n");
                    }
                    if let Some(password) = &options.password {
                        secured += &format!("sentinel auth-pass {SENTINEL_MASTER} {password}\n");
                    }
                    std::fs::write(
                        &conf,
                        format!(
                            "{listen}\
                             bind 127.0.0.1\n\
                             protected-mode no\n\
                             daemonize no\n\
                             dir {dir}\n\
                             sentinel announce-ip 127.0.0.1\n\
                             sentinel resolve-hostnames no\n\
                             sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary_port} 2\n\
                             sentinel down-after-milliseconds {SENTINEL_MASTER} {SENTINEL_DOWN_AFTER_MS}\n\
                             sentinel failover-timeout {SENTINEL_MASTER} 2000\n\
                             sentinel parallel-syncs {SENTINEL_MASTER} 2\n\
                             {secured}",
                            dir = sentinel_dir.display(),
                        ),
                    )
                    .unwrap();
                    spawn(
                        &sentinel,
                        &[conf.to_str().unwrap().to_owned()],
                        port,
                        sentinel_dir.join("sentinel.log"),
                        &sentinel_access,
                    )
                })
                .unwrap_or_else(|| panic!("redis-sentinel {n} did not start"));
            sentinels.push(proc);
        }

        let set = SentinelSet {
            data: Mutex::new(data),
            sentinels: Mutex::new(sentinels),
            redis_cli,
            data_access,
            sentinel_access,
            dir,
        };
        let sentinel_addrs = set.sentinel_addrs();
        wait_until(
            Duration::from_secs(20),
            "every sentinel sees 2 replicas and 2 other sentinels",
            || {
                sentinel_addrs
                    .iter()
                    .all(|s| {
                        let fields = set.sentinel_master_fields(s);
                        fields.get("num-slaves").map(String::as_str) == Some("2")
                            && fields.get("num-other-sentinels").map(String::as_str) == Some("2")
                            && fields.get("flags").map(String::as_str) == Some("master")
                    })
                    .then_some(())
            },
            || set.explain(),
        );
        set.wait_until_replicas_synced();
        set
    }

    /// How the harness reaches the data nodes (their password, the CA).
    pub fn data_access(&self) -> &Access {
        &self.data_access
    }

    /// How the harness reaches the sentinels (their own password, the CA).
    pub fn sentinel_access(&self) -> &Access {
        &self.sentinel_access
    }

    /// The CA (PEM file) the servers' TLS certificate verifies against, with TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.data_access.ca_file.as_deref()
    }

    /// `SENTINEL MASTER <name>` as `field → value` (empty when the sentinel does not answer).
    fn sentinel_master_fields(&self, sentinel: &str) -> std::collections::HashMap<String, String> {
        let flat: Vec<String> = self
            .sentinel_access
            .query(sentinel, &["SENTINEL", "MASTER", SENTINEL_MASTER])
            .unwrap_or_default();
        flat.chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect()
    }

    /// `"127.0.0.1:port"` of the three sentinels.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .lock()
            .unwrap()
            .iter()
            .map(Proc::addr)
            .collect()
    }

    /// `"127.0.0.1:port"` of the three data nodes (dead ones included).
    pub fn data_addrs(&self) -> Vec<String> {
        self.data.lock().unwrap().iter().map(Proc::addr).collect()
    }

    /// The data nodes whose process still runs.
    pub fn live_data_addrs(&self) -> Vec<String> {
        self.data
            .lock()
            .unwrap()
            .iter_mut()
            .filter_map(|p| p.alive().then(|| p.addr()))
            .collect()
    }

    pub fn master_name(&self) -> &'static str {
        SENTINEL_MASTER
    }

    /// What one sentinel answers to `SENTINEL GET-MASTER-ADDR-BY-NAME`.
    pub fn primary_addr_from(&self, sentinel: &str) -> Option<String> {
        let reply: Option<Vec<String>> = self
            .sentinel_access
            .query(
                sentinel,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
            )
            .ok()?;
        match reply?.as_slice() {
            [host, port] => Some(format!("{host}:{port}")),
            _ => None,
        }
    }

    /// The primary as the first sentinel that answers reports it.
    pub fn primary_addr(&self) -> String {
        self.sentinel_addrs()
            .iter()
            .find_map(|s| self.primary_addr_from(s))
            .unwrap_or_else(|| panic!("no sentinel answers\n{}", self.explain()))
    }

    /// SIGKILL the current primary's process (its unreplicated writes are lost with it);
    /// returns its address.
    pub fn kill_primary(&self) -> String {
        let primary = self.primary_addr();
        let mut data = self.data.lock().unwrap();
        let proc = data
            .iter_mut()
            .find(|p| p.addr() == primary)
            .unwrap_or_else(|| panic!("the primary {primary} is none of this set's processes"));
        proc.kill();
        primary
    }

    /// A graceful `SENTINEL FAILOVER <name>` (through `redis-cli`) on the first sentinel;
    /// returns the primary it fails over from. Does not wait for the promotion.
    pub fn failover(&self) -> String {
        let primary = self.primary_addr();
        let sentinel = self.sentinel_addrs()[0].clone();
        let (host, port) = sentinel.split_once(':').unwrap();
        let output = Command::new(&self.redis_cli)
            .args(self.sentinel_access.cli_args())
            .args([
                "-h",
                host,
                "-p",
                port,
                "SENTINEL",
                "FAILOVER",
                SENTINEL_MASTER,
            ])
            .output()
            .expect("run redis-cli");
        let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success() && said == "OK",
            "SENTINEL FAILOVER answered {said:?} {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.explain()
        );
        primary
    }

    /// Wait until a majority of the sentinels report a primary other than `old` and that
    /// node answers `role:master`; returns it.
    pub fn wait_for_new_primary(&self, old: &str, timeout: Duration) -> String {
        let sentinels = self.sentinel_addrs();
        wait_until(
            timeout,
            &format!("the sentinels promote a new primary instead of {old}"),
            || {
                let reported: Vec<String> = sentinels
                    .iter()
                    .filter_map(|s| self.primary_addr_from(s))
                    .collect();
                let candidate = reported.iter().find(|a| a.as_str() != old)?;
                let agree = reported.iter().filter(|a| *a == candidate).count();
                (agree >= 2 && self.data_access.role(candidate).as_deref() == Some("master"))
                    .then(|| candidate.clone())
            },
            || self.explain(),
        )
    }

    /// Wait until every live data node other than the primary replicates it, link up,
    /// caught up with its offset.
    pub fn wait_until_replicas_synced(&self) {
        // Sentinel reconfigures a demoted primary at its next INFO round (up to 10 s), then
        // the full sync runs: a loaded machine needs more than 20 s for both.
        wait_until(
            Duration::from_secs(40),
            "every live replica is in sync with the primary",
            || {
                let primary = self
                    .sentinel_addrs()
                    .iter()
                    .find_map(|s| self.primary_addr_from(s))?;
                let replicas: Vec<String> = self
                    .live_data_addrs()
                    .into_iter()
                    .filter(|a| *a != primary)
                    .collect();
                replicas_caught_up(&self.data_access, &primary, &replicas)
            },
            || self.explain(),
        )
    }

    /// What every process says of itself, and the tail of every log.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for sentinel in self.sentinel_addrs() {
            out += &format!(
                "sentinel {sentinel}: primary {:?}\n",
                self.primary_addr_from(&sentinel)
            );
        }
        for node in self.data_addrs() {
            let replication = self
                .data_access
                .info(&node, "replication")
                .map(|i| {
                    [
                        "role",
                        "master_port",
                        "master_link_status",
                        "connected_slaves",
                    ]
                    .iter()
                    .filter_map(|k| i.get(*k).map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ")
                })
                .unwrap_or_else(|e| format!("down ({e})"));
            out += &format!("data {node}: {replication}\n");
        }
        for proc in self.data.lock().unwrap().iter() {
            out += &proc.log_tail();
            out += "\n";
        }
        for proc in self.sentinels.lock().unwrap().iter() {
            out += &proc.log_tail();
            out += "\n";
        }
        out
    }

    /// The directory holding every configuration file and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    /// `"127.0.0.1:port"`.
    pub addr: String,
    pub primary: bool,
    /// Flagged `fail` (or `fail?` by the node asked).
    pub failed: bool,
    /// The primary's id, for a replica.
    pub primary_id: Option<String>,
    /// Inclusive slot ranges served, for a primary.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|(a, b)| usize::from(*b) - usize::from(*a) + 1)
            .sum()
    }

    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }
}

fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next()?.to_owned();
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => {
                        let slot = s.parse().ok()?;
                        Some((slot, slot))
                    }
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                addr,
                primary: flags.contains(&"master"),
                failed: flags.contains(&"fail") || flags.contains(&"fail?"),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// Six nodes: three primaries with one replica each, `cluster-node-timeout` 1000 and
/// `cluster-require-full-coverage no` (the shards that are up keep serving when one is down);
/// every process killed on drop.
pub struct RedisCluster {
    nodes: Mutex<Vec<Proc>>,
    redis_cli: PathBuf,
    /// How the harness reaches the nodes (the password, the CA).
    access: Access,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Start six nodes, create the cluster, and wait until every node says
    /// `cluster_state:ok`, sees every slot served, and every replica is in sync.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(TopologyOptions::default())
    }

    /// [`RedisCluster::start`] with a password (`requirepass` and `masterauth` on every
    /// node) and TLS (clients, replication and the cluster bus); `sentinel_password` is
    /// ignored.
    pub fn start_with(options: TopologyOptions) -> RedisCluster {
        let server = require("redis-server", INSTALL_SERVER);
        let redis_cli = require("redis-cli", INSTALL_CLI);
        let dir = tempfile::tempdir().unwrap();
        let tls = options.tls.then(|| TlsFiles::create(dir.path()));
        let access = Access {
            password: options.password.clone(),
            ca_pem: tls.as_ref().map(|t| t.pem.clone()),
            ca_file: tls.as_ref().map(|t| t.cert.clone()),
        };
        let mut nodes = Vec::new();
        for n in 0..6 {
            let node_dir = dir.path().join(format!("node-{n}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let proc = (0..5)
                .find_map(|_| {
                    let port = free_port().port();
                    let bus_port = free_port().port();
                    if bus_port == port {
                        return None;
                    }
                    let mut args =
                        data_node_args(port, &node_dir, tls.as_ref(), options.password.as_deref());
                    if tls.is_some() {
                        args.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
                    }
                    args.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-port",
                            &bus_port.to_string(),
                            "--cluster-config-file",
                            node_dir.join("nodes.conf").to_str().unwrap(),
                            "--cluster-node-timeout",
                            "1000",
                            "--cluster-require-full-coverage",
                            "no",
                            "--cluster-announce-ip",
                            "127.0.0.1",
                        ]
                        .iter()
                        .map(|s| (*s).to_owned()),
                    );
                    spawn(&server, &args, port, node_dir.join("redis.log"), &access)
                })
                .unwrap_or_else(|| panic!("redis-server (cluster node {n}) did not start"));
            nodes.push(proc);
        }
        let cluster = RedisCluster {
            nodes: Mutex::new(nodes),
            redis_cli,
            access,
            dir,
        };
        let mut create = Command::new(&cluster.redis_cli);
        create.args(cluster.access.cli_args());
        create.arg("--cluster").arg("create");
        create.args(cluster.nodes());
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = create.output().expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            cluster.explain()
        );
        cluster.wait_until_healthy(Duration::from_secs(20), "the new cluster is healthy");
        cluster
    }

    /// `"127.0.0.1:port"` of all six nodes (dead ones included), in start order.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.lock().unwrap().iter().map(Proc::addr).collect()
    }

    /// The nodes whose process still runs.
    pub fn live_nodes(&self) -> Vec<String> {
        self.nodes
            .lock()
            .unwrap()
            .iter_mut()
            .filter_map(|p| p.alive().then(|| p.addr()))
            .collect()
    }

    /// `CLUSTER NODES` as the first live node that answers sees it.
    pub fn topology(&self) -> Vec<ClusterNode> {
        self.live_nodes()
            .iter()
            .find_map(|a| self.access.query::<String>(a, &["CLUSTER", "NODES"]).ok())
            .map(|text| parse_cluster_nodes(&text))
            .unwrap_or_default()
    }

    /// The primaries serving slots (not failed), ordered by their lowest slot: index `i`
    /// names the same shard across a failover.
    pub fn primary_nodes(&self) -> Vec<ClusterNode> {
        let mut primaries: Vec<ClusterNode> = self
            .topology()
            .into_iter()
            .filter(|n| n.primary && !n.failed && !n.slots.is_empty())
            .collect();
        primaries.sort_by_key(|n| n.slots.iter().map(|s| s.0).min());
        primaries
    }

    /// `"127.0.0.1:port"` of [`RedisCluster::primary_nodes`].
    pub fn primaries(&self) -> Vec<String> {
        self.primary_nodes().into_iter().map(|n| n.addr).collect()
    }

    /// The node id of `addr`.
    pub fn node_id(&self, addr: &str) -> String {
        self.access
            .query::<String>(addr, &["CLUSTER", "MYID"])
            .unwrap_or_else(|e| panic!("CLUSTER MYID on {addr}: {e}"))
    }

    /// Each primary's slot ranges.
    pub fn slot_ranges(&self) -> Vec<(String, Vec<(u16, u16)>)> {
        self.primary_nodes()
            .into_iter()
            .map(|n| (n.addr, n.slots))
            .collect()
    }

    /// `DBSIZE` of each primary: keys spread over the shards show up on every one.
    pub fn keys_per_primary(&self) -> Vec<(String, u64)> {
        self.primaries()
            .into_iter()
            .map(|p| {
                let size = self
                    .access
                    .query::<u64>(&p, &["DBSIZE"])
                    .unwrap_or_else(|e| panic!("DBSIZE on {p}: {e}"));
                (p, size)
            })
            .collect()
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        let live = self.live_nodes();
        self.access
            .query::<u16>(&live[0], &["CLUSTER", "KEYSLOT", key])
            .unwrap()
    }

    /// Move `slots` slots from the primary `from_id` to the primary `to_id` (node ids) with
    /// `redis-cli --cluster reshard`, keys included; blocks until done and the cluster is
    /// healthy again.
    pub fn reshard(&self, from_id: &str, to_id: &str, slots: u32) {
        let entry = self.live_nodes()[0].clone();
        let output = reshard_command(&self.redis_cli, &self.access, &entry, from_id, to_id, slots)
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.explain()
        );
        self.wait_until_healthy(
            Duration::from_secs(20),
            "the cluster is healthy after a reshard",
        );
    }

    /// [`RedisCluster::reshard`] in a background thread (to run during traffic): the
    /// thread returns `redis-cli`'s output; call [`RedisCluster::wait_until_healthy`] after
    /// joining it.
    pub fn reshard_in_background(
        &self,
        from_id: &str,
        to_id: &str,
        slots: u32,
    ) -> std::thread::JoinHandle<std::process::Output> {
        let mut command = reshard_command(
            &self.redis_cli,
            &self.access,
            &self.live_nodes()[0],
            from_id,
            to_id,
            slots,
        );
        std::thread::spawn(move || command.output().expect("run redis-cli --cluster reshard"))
    }

    /// A live replica of the primary `primary_id`.
    fn replica_of(&self, primary_id: &str) -> Option<ClusterNode> {
        let live = self.live_nodes();
        self.topology().into_iter().find(|n| {
            !n.primary
                && !n.failed
                && n.primary_id.as_deref() == Some(primary_id)
                && live.contains(&n.addr)
        })
    }

    /// Graceful `CLUSTER FAILOVER` on a replica of the `i`th primary; waits until the
    /// replica is primary, the old primary its replica, and the cluster healthy. Returns
    /// (old primary, new primary).
    pub fn failover_primary(&self, i: usize) -> (String, String) {
        let shard = self.primary_nodes()[i].clone();
        let replica = self.replica_of(&shard.id).unwrap_or_else(|| {
            panic!(
                "primary {} has no live replica\n{}",
                shard.addr,
                self.explain()
            )
        });
        let said: String = self
            .access
            .query(&replica.addr, &["CLUSTER", "FAILOVER"])
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on {}: {e}", replica.addr));
        assert_eq!(said, "OK");
        wait_until(
            Duration::from_secs(15),
            &format!("{} takes over from {}", replica.addr, shard.addr),
            || {
                (self.access.role(&replica.addr).as_deref() == Some("master")
                    && self.access.role(&shard.addr).as_deref() == Some("slave"))
                .then_some(())
            },
            || self.explain(),
        );
        self.wait_until_healthy(
            Duration::from_secs(15),
            "the cluster is healthy after a failover",
        );
        (shard.addr, replica.addr)
    }

    /// SIGKILL the `i`th primary; waits until one of its replicas is primary and every live
    /// node sees every slot served again. Returns (old primary, new primary).
    pub fn kill_primary(&self, i: usize) -> (String, String) {
        let shard = self.primary_nodes()[i].clone();
        let replica = self.replica_of(&shard.id).unwrap_or_else(|| {
            panic!(
                "primary {} has no live replica\n{}",
                shard.addr,
                self.explain()
            )
        });
        self.kill(&shard.addr);
        wait_until(
            Duration::from_secs(15),
            &format!("{} replaces the killed {}", replica.addr, shard.addr),
            || (self.access.role(&replica.addr).as_deref() == Some("master")).then_some(()),
            || self.explain(),
        );
        self.wait_until_healthy(
            Duration::from_secs(15),
            "the cluster is healthy after a kill",
        );
        (shard.addr, replica.addr)
    }

    /// SIGKILL the `i`th primary and all its replicas (a whole shard down); waits until every
    /// live node flags that primary `fail`. Returns the dead shard's slot ranges.
    pub fn kill_shard(&self, i: usize) -> Vec<(u16, u16)> {
        let shard = self.primary_nodes()[i].clone();
        let replicas: Vec<String> = self
            .topology()
            .into_iter()
            .filter(|n| n.primary_id.as_deref() == Some(shard.id.as_str()))
            .map(|n| n.addr)
            .collect();
        self.kill(&shard.addr);
        for replica in &replicas {
            self.kill(replica);
        }
        wait_until(
            Duration::from_secs(15),
            &format!("every live node flags the dead shard {} fail", shard.addr),
            || {
                self.live_nodes()
                    .iter()
                    .all(|a| {
                        self.access
                            .query::<String>(a, &["CLUSTER", "NODES"])
                            .map(|t| {
                                parse_cluster_nodes(&t)
                                    .iter()
                                    .any(|n| n.id == shard.id && n.failed)
                            })
                            .unwrap_or(false)
                    })
                    .then_some(())
            },
            || self.explain(),
        );
        shard.slots
    }

    /// SIGKILL the node at `addr`.
    pub fn kill(&self, addr: &str) {
        let mut nodes = self.nodes.lock().unwrap();
        let proc = nodes
            .iter_mut()
            .find(|p| p.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is none of this cluster's nodes"));
        proc.kill();
    }

    /// Wait until every live node says `cluster_state:ok` and sees all 16384 slots served by
    /// primaries it does not flag failed, with no slot migrating, and every live replica is
    /// in sync with its primary.
    pub fn wait_until_healthy(&self, timeout: Duration, what: &str) {
        wait_until(
            timeout,
            what,
            || {
                let live = self.live_nodes();
                for addr in &live {
                    let state = info_cluster_state(&self.access, addr)?;
                    if state != "ok" {
                        return None;
                    }
                    let text: String = self.access.query(addr, &["CLUSTER", "NODES"]).ok()?;
                    if text.contains("->-") || text.contains("-<-") {
                        return None; // a slot is still migrating or importing
                    }
                    let nodes = parse_cluster_nodes(&text);
                    let served: usize = nodes
                        .iter()
                        .filter(|n| n.primary && !n.failed)
                        .map(ClusterNode::slot_count)
                        .sum();
                    if served != 16384 {
                        return None;
                    }
                }
                let topology = self.topology();
                for primary in topology.iter().filter(|n| n.primary && !n.failed) {
                    let replicas: Vec<String> = topology
                        .iter()
                        .filter(|n| n.primary_id.as_deref() == Some(primary.id.as_str()))
                        .filter(|n| live.contains(&n.addr))
                        .map(|n| n.addr.clone())
                        .collect();
                    if live.contains(&primary.addr) {
                        replicas_caught_up(&self.access, &primary.addr, &replicas)?;
                    }
                }
                Some(())
            },
            || self.explain(),
        )
    }

    /// Every live node's view: `CLUSTER NODES`, and the tail of every log.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        for addr in self.live_nodes() {
            out += &format!(
                "{addr} cluster_state={:?}\n{}\n",
                info_cluster_state(&self.access, &addr),
                self.access
                    .query::<String>(&addr, &["CLUSTER", "NODES"])
                    .unwrap_or_default()
            );
        }
        for proc in self.nodes.lock().unwrap().iter() {
            out += &proc.log_tail();
            out += "\n";
        }
        out
    }

    /// How the harness reaches the nodes (the password, the CA).
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The CA (PEM file) the nodes' TLS certificate verifies against, with TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.access.ca_file.as_deref()
    }

    /// The directory holding every node's files and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn info_cluster_state(access: &Access, addr: &str) -> Option<String> {
    let text: String = access.query(addr, &["CLUSTER", "INFO"]).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("cluster_state:"))
        .map(|s| s.trim().to_owned())
}

fn reshard_command(
    redis_cli: &Path,
    access: &Access,
    entry: &str,
    from_id: &str,
    to_id: &str,
    slots: u32,
) -> Command {
    let mut command = Command::new(redis_cli);
    command.args(access.cli_args());
    command.args([
        "--cluster",
        "reshard",
        entry,
        "--cluster-from",
        from_id,
        "--cluster-to",
        to_id,
        "--cluster-slots",
        &slots.to_string(),
        "--cluster-yes",
    ]);
    command
}
