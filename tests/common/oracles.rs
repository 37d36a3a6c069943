//! Oracles for the differential test: for a raw HTTP/1.1 request sent to an IdP's token
//! endpoint, would that IdP stack read it as a refresh grant? One long-lived program per stack,
//! each on the stack's real parsers (tests/oracles): Node (llhttp, node-oidc-provider 9's body
//! reading, `querystring`), Python (http.server, `parse_qsl`), Go (net/http: fosite, Dex), a
//! Java servlet container (Jetty 9.4), PHP (the SAPI's `$_POST` rules and `parse_str`) and Ruby
//! (Rack 2's `Rack::Request`, `parse_nested_query`). Protocol: JSON lines,
//! `{"id", "raw": base64}` in and `{"id", "refresh", "token", "note"}` out, in order.

use super::prereq::require;
use base64::Engine;
use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const SETUP_HINT: &str = "Run scripts/setup (it installs golang-go, default-jdk-headless, \
                          libjetty9-java, php-cli and ruby-rack and builds the oracles into \
                          target/oracles).";

/// One stack's reading of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The stack reads a refresh grant with a non-empty refresh token.
    pub refresh: bool,
    /// The `refresh_token` value it read.
    pub token: Option<String>,
    /// Why (which reading said so), or the parse error.
    pub note: String,
}

/// Every stack's reading of one request.
#[derive(Debug, Clone)]
pub struct Verdicts {
    pub node: Verdict,
    pub python: Verdict,
    pub go: Verdict,
    pub java: Verdict,
    pub php: Verdict,
    pub rack: Verdict,
}

impl Verdicts {
    /// The verdicts by stack name.
    pub fn all(&self) -> [(&'static str, &Verdict); 6] {
        [
            ("node", &self.node),
            ("python", &self.python),
            ("go", &self.go),
            ("java", &self.java),
            ("php", &self.php),
            ("rack", &self.rack),
        ]
    }

    /// Some stack reads a refresh grant.
    pub fn any_refresh(&self) -> bool {
        self.all().iter().any(|(_, v)| v.refresh)
    }

    /// The stacks that read a refresh grant.
    pub fn who(&self) -> Vec<&'static str> {
        self.all()
            .into_iter()
            .filter(|(_, v)| v.refresh)
            .map(|(name, _)| name)
            .collect()
    }
}

/// One oracle process.
struct Oracle {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

/// How long one batch may take an oracle (hundreds of requests take seconds).
const ORACLE_BATCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(180);

impl Oracle {
    fn spawn(name: &'static str, mut command: Command) -> Oracle {
        let log = oracles_dir().join(format!("{name}.stderr.log"));
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} oracle ({command:?}): {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Oracle {
            name,
            child,
            stdin,
            stdout,
            next_id: 0,
        }
    }

    /// Writes every request from a second thread (no pipe deadlock), reads the answers in order.
    fn judge(&mut self, raw: &[&[u8]]) -> Vec<Verdict> {
        let first = self.next_id;
        self.next_id += raw.len() as u64;
        let mut input = String::new();
        for (i, r) in raw.iter().enumerate() {
            let line = serde_json::json!({
                "id": first + i as u64,
                "raw": base64::engine::general_purpose::STANDARD.encode(r),
            });
            input.push_str(&line.to_string());
            input.push('\n');
        }
        let mut stdin = self.stdin.take().expect("oracle stdin");
        let name = self.name;
        let pid = self.child.id();
        // A stuck oracle must fail the test, not hang it: past the deadline it is killed,
        // and the read below reports it.
        let (finished, watch) = std::sync::mpsc::channel::<()>();
        let deadline = ORACLE_BATCH_DEADLINE;
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(deadline) {
                eprintln!("the {name} oracle did not answer within {deadline:?}: killed");
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        });
        let _finished = finished;
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                stdin
                    .write_all(input.as_bytes())
                    .and_then(|()| stdin.flush())
                    .unwrap_or_else(|e| panic!("write to the {name} oracle: {e}"));
                stdin
            });
            let verdicts = (0..raw.len() as u64)
                .map(|i| self.read_answer(first + i))
                .collect();
            self.stdin = Some(writer.join().expect("oracle writer thread"));
            verdicts
        })
    }

    fn read_answer(&mut self, id: u64) -> Verdict {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap_or(0);
        let log = oracles_dir().join(format!("{}.stderr.log", self.name));
        assert!(
            n > 0,
            "the {} oracle exited (status {:?}); its stderr is in {}",
            self.name,
            self.child.try_wait().ok().flatten(),
            log.display()
        );
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the {} oracle answered {line:?}: {e}", self.name));
        assert_eq!(
            answer["id"].as_u64(),
            Some(id),
            "{} oracle: {line}",
            self.name
        );
        Verdict {
            refresh: answer["refresh"].as_bool().unwrap_or(false),
            token: answer["token"].as_str().map(str::to_owned),
            note: answer["note"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of input: the oracle exits
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The six oracle processes.
pub struct Oracles {
    node: Oracle,
    python: Oracle,
    go: Oracle,
    java: Oracle,
    php: Oracle,
    rack: Oracle,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where scripts/setup builds the Go binary and the Java class.
fn oracles_dir() -> PathBuf {
    root().join("target/oracles")
}

/// `built` exists and is newer than every file of `sources`, else a panic naming scripts/setup.
fn require_built(built: &Path, sources: &[&str]) {
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let Some(built_at) = modified(built) else {
        panic!(
            "prerequisite missing: {} is not built. {SETUP_HINT}",
            built.display()
        );
    };
    for source in sources {
        let source = root().join(source);
        if modified(&source).is_some_and(|t| t > built_at) {
            panic!(
                "prerequisite stale: {} is older than {}. {SETUP_HINT}",
                built.display(),
                source.display()
            );
        }
    }
}

/// `program args…` runs and exits 0, else a panic naming what is missing and scripts/setup.
fn require_working(program: &Path, args: &[&str], missing: &str) {
    let ok = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        ok,
        "prerequisite missing: {missing} ({} {}). {SETUP_HINT}",
        program.display(),
        args.join(" ")
    );
}

impl Oracles {
    /// Starts the six oracles; panics naming what is missing and scripts/setup.
    pub fn start() -> Oracles {
        let dir = oracles_dir();
        let node = super::e2e::node();
        let python = require("python3", "Install python3.");
        let go = dir.join("go-oracle");
        require_built(
            &go,
            &["tests/oracles/go/main.go", "tests/oracles/go/go.mod"],
        );
        let java = require("java", "Install default-jdk-headless.");
        require_built(
            &dir.join("java/Oracle.class"),
            &["tests/oracles/java/Oracle.java"],
        );
        let classpath = std::fs::read_to_string(dir.join("java.classpath")).unwrap_or_else(|_| {
            panic!("prerequisite missing: target/oracles/java.classpath. {SETUP_HINT}")
        });
        for jar in classpath.trim().split(':') {
            assert!(
                Path::new(jar).is_file(),
                "prerequisite missing: {jar} (libjetty9-java). {SETUP_HINT}"
            );
        }
        let php = require("php", "Install php-cli.");
        require_working(
            &php,
            &["-n", "-r", "exit(PHP_VERSION_ID >= 80000 ? 0 : 1);"],
            "PHP 8 (php-cli)",
        );
        let ruby = require("ruby", "Install ruby and ruby-rack.");
        require_working(
            &ruby,
            &[
                "-e",
                "require 'rack'; exit(Rack.release.start_with?('2.') ? 0 : 1)",
            ],
            "Rack 2 for Ruby (ruby-rack)",
        );

        let mut node_cmd = Command::new(node);
        node_cmd.arg(root().join("tests/oracles/node.mjs"));
        let mut python_cmd = Command::new(python);
        python_cmd.arg(root().join("tests/oracles/python.py"));
        let mut java_cmd = Command::new(java);
        java_cmd
            .arg("-cp")
            .arg(format!(
                "{}:{}",
                dir.join("java").display(),
                classpath.trim()
            ))
            .arg("Oracle");
        // -n: PHP's built-in ini defaults (arg_separator.input "&", max_input_vars 1000).
        let mut php_cmd = Command::new(php);
        php_cmd.arg("-n").arg(root().join("tests/oracles/php.php"));
        let mut rack_cmd = Command::new(ruby);
        rack_cmd.arg(root().join("tests/oracles/rack.rb"));
        Oracles {
            node: Oracle::spawn("node", node_cmd),
            python: Oracle::spawn("python", python_cmd),
            go: Oracle::spawn("go", Command::new(go)),
            java: Oracle::spawn("java", java_cmd),
            php: Oracle::spawn("php", php_cmd),
            rack: Oracle::spawn("rack", rack_cmd),
        }
    }

    /// Every stack's reading of each raw request, in order (the six judge in parallel).
    pub fn judge(&mut self, raw: &[&[u8]]) -> Vec<Verdicts> {
        let Oracles {
            node,
            python,
            go,
            java,
            php,
            rack,
        } = self;
        let [node, python, go, java, php, rack] = std::thread::scope(|scope| {
            [node, python, go, java, php, rack]
                .map(|oracle| scope.spawn(move || oracle.judge(raw)))
                .map(|thread| thread.join().expect("oracle thread"))
        });
        node.into_iter()
            .zip(python)
            .zip(go)
            .zip(java)
            .zip(php)
            .zip(rack)
            .map(|(((((node, python), go), java), php), rack)| Verdicts {
                node,
                python,
                go,
                java,
                php,
                rack,
            })
            .collect()
    }
}
