//! The cluster link's sharded subscriptions against a real one-node cluster (Debian's
//! `redis-server`, started here on a free loopback port): a waiter that joins right after
//! the last one left is still subscribed when the exchange ends.

use super::*;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    _dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools) must be installed: scripts/setup installs it");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A one-node cluster serving every slot.
fn one_node_cluster() -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("refresh-gate-cluster-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
        ])
        .arg("--cluster-config-file")
        .arg(dir.join("nodes.conf"))
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "redis-server (Debian's redis-server) must be installed: scripts/setup installs it",
        );
    let server = Server { child, _dir: dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cli(port, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    for _ in 0..100 {
        if cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            return (server, port);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the one-node cluster on {port} never reached cluster_state:ok");
}

// One thread: the last waiter's unsubscription is spawned and runs only after the next
// waiter's subscription was sent, the order that once left that waiter deaf.
#[tokio::test(flavor = "current_thread")]
async fn a_waiter_joining_right_after_the_last_one_left_is_still_woken() {
    let (_server, port) = one_node_cluster();
    let waiters = Arc::new(Waiters::default());
    let link = ClusterLink::new(
        &[format!("127.0.0.1:{port}")],
        &NodeAccess::default(),
        Duration::from_millis(500),
        waiters.clone(),
    )
    .unwrap();
    link.start();
    for _ in 0..100 {
        if link.connection().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = TokenFingerprint([0x42; 32]);
    let channel = format!("rg:{{{}}}:exchange", token.to_hex());
    let first = link.watch_exchange(token, channel.clone()).await;
    assert!(first.confirmed);
    drop(first);
    let second = link.watch_exchange(token, channel.clone()).await;
    assert!(second.confirmed);
    let registration = waiters.register(token);
    let notified = registration.notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let receivers = cli(port, &["SPUBLISH", &channel, &token.to_hex()]);
    let heard = tokio::time::timeout(Duration::from_secs(2), notified)
        .await
        .is_ok();
    assert!(heard, "not woken: SPUBLISH reached {receivers} subscribers");
    drop(second);
    // The last waiter gone, the subscription goes too.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cli(port, &["PUBSUB", "SHARDNUMSUB", &channel]).ends_with('0') {
            return;
        }
    }
    panic!("the subscription outlived its last waiter");
}
