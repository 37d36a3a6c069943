//! The command-line contract: `--config`, `--check-config`, `REFRESH_GATE_CONFIG`.

use crate::common;

use std::process::Command;

fn run(args: &[&str], env: Option<(&str, &str)>) -> (i32, String, String) {
    let mut command = Command::new(common::gate::binary());
    command.args(args).env_remove("REFRESH_GATE_CONFIG");
    if let Some((k, v)) = env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shipped() -> String {
    format!("{}/conf/refresh-gate.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let (code, out, err) = run(&["--config", &shipped(), "--check-config"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is valid"));
}

#[test]
fn the_environment_variable_stands_in_for_the_flag() {
    let (code, out, err) = run(
        &["--check-config"],
        Some(("REFRESH_GATE_CONFIG", &shipped())),
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_bad_key_is_named_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(shipped())
        .unwrap()
        .replace("grace_period = \"5s\"", "grace_period = \"90s\"");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(
        &["--config", path.to_str().unwrap(), "--check-config"],
        None,
    );
    assert_eq!(code, 64);
    assert!(err.contains("rotation.grace_period"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");

    std::fs::write(&path, "[listen]\naddress = \"127.0.0.1:1\"\nport = 3\n").unwrap();
    let (code, _, err) = run(
        &["--config", path.to_str().unwrap(), "--check-config"],
        None,
    );
    assert_eq!(code, 64);
    assert!(err.contains("port"), "{err}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let (code, _, err) = run(
        &[
            "--config",
            "/nonexistent/refresh-gate.toml",
            "--check-config",
        ],
        None,
    );
    assert_eq!(code, 64);
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn a_redis_store_without_the_shared_fingerprint_key_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redis.toml");
    let text = std::fs::read_to_string(shipped()).unwrap().replace(
        "backend = \"memory\"",
        "backend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"",
    );
    std::fs::write(&path, &text).unwrap();
    for flags in [vec!["--check-config"], vec![]] {
        let mut args = vec!["--config", path.to_str().unwrap()];
        args.extend(flags);
        let (code, _, err) = run(&args, None);
        assert_eq!(code, 64, "{err}");
        assert!(err.contains("store.fingerprint_key_file"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one clear message: {err}");
    }
    // With a key that is too short, the same.
    let key = dir.path().join("short.key");
    std::fs::write(&key, "short").unwrap();
    std::fs::write(
        &path,
        text.replace(
            "# fingerprint_key_file = \"/etc/refresh-gate/fingerprint.key\"",
            &format!("fingerprint_key_file = \"{}\"", key.display()),
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["--config", path.to_str().unwrap()], None);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("at least 32 are required"), "{err}");
}

#[test]
fn check_config_lists_every_problem_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(shipped())
        .unwrap()
        .replace("address = \"127.0.0.1:9480\"", "address = \"localhost\"")
        .replace("url = \"http://127.0.0.1:8080\"", "url = \"ftp://idp\"")
        .replace("grace_period = \"5s\"", "grace_period = \"90s\"")
        .replace("level = \"info\"", "level = \"info,=\"");
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = run(
        &["--config", path.to_str().unwrap(), "--check-config"],
        None,
    );
    assert_eq!(code, 64, "{out}{err}");
    let lines: Vec<&str> = err.trim().lines().collect();
    let keys = [
        "listen.address",
        "upstream.url",
        "rotation.grace_period",
        "log.level",
    ];
    assert_eq!(lines.len(), keys.len(), "one line per problem: {err}");
    for (line, key) in lines.iter().zip(keys) {
        assert!(line.contains(key), "{key}: {line}");
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The shipped file with its listeners on `listen` and a free port, and `upstream` as the
/// IdP.
fn shipped_on(dir: &std::path::Path, listen: &str, upstream: &str) -> std::path::PathBuf {
    let path = dir.join("gate.toml");
    let text = std::fs::read_to_string(shipped())
        .unwrap()
        .replace("127.0.0.1:9480", listen)
        .replace("127.0.0.1:9481", &free_port())
        .replace("http://127.0.0.1:8080", upstream);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_valid_configuration_that_cannot_start_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = shipped_on(
        dir.path(),
        &free_port(),
        "http://refresh-gate-test.invalid:8080",
    );
    let path = path.to_str().unwrap();
    let (code, _, err) = run(&["--config", path, "--check-config"], None);
    assert_eq!(code, 0, "the configuration itself is valid: {err}");
    let (code, _, err) = run(&["--config", path], None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refresh-gate-test.invalid"), "{err}");
}

#[test]
fn a_taken_listener_address_is_waited_for_then_taken_over() {
    // As when a restarted gate starts while the old process still drains: the address is
    // retried (up to 30 s), not given up on at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let idp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", idp.local_addr().unwrap());
    let path = shipped_on(dir.path(), &listen, &upstream);
    let mut gate = Command::new(common::gate::binary())
        .args(["--config", path.to_str().unwrap()])
        .env_remove("REFRESH_GATE_CONFIG")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        gate.try_wait().unwrap().is_none(),
        "gave up on a taken address"
    );
    drop(taken);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let served = loop {
        if std::net::TcpStream::connect(&listen).is_ok() {
            break true;
        }
        if std::time::Instant::now() > deadline || gate.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = gate.kill();
    let _ = gate.wait();
    assert!(
        served,
        "the gate did not take the address over once it was free"
    );
}

#[test]
fn a_redis_url_the_client_refuses_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("fingerprint.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let path = dir.path().join("redis.toml");
    let text = std::fs::read_to_string(shipped())
        .unwrap()
        .replace(
            "backend = \"memory\"",
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:notaport/0\"",
        )
        .replace(
            "# fingerprint_key_file = \"/etc/refresh-gate/fingerprint.key\"",
            &format!("fingerprint_key_file = \"{}\"", key.display()),
        );
    std::fs::write(&path, text).unwrap();
    for flags in [vec!["--check-config"], vec![]] {
        let mut args = vec!["--config", path.to_str().unwrap()];
        args.extend(flags);
        let (code, _, err) = run(&args, None);
        assert_eq!(code, 64, "{err}");
        assert!(
            err.contains("store.url") && err.contains("does not parse"),
            "{err}"
        );
    }
}

#[test]
fn a_certificate_that_does_not_load_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let path = shipped_on(dir.path(), &free_port(), "http://127.0.0.1:8080");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "trusted_proxies = []",
        &format!(
            "trusted_proxies = []\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(&["--config", path.to_str().unwrap()], None);
    assert_eq!(code, 64, "{err}");
}
