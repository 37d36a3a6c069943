//! A minimal Sentinel on a free loopback port that names one fixed primary for any master
//! and never announces a failover: a stale Sentinel (on the minority side of a partition,
//! or restarted with an old configuration), or a lying one.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Start a Sentinel that names `host:port`; returns its `host:port`.
pub async fn naming(host: &str, port: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (host, port) = (host.to_owned(), port.to_string());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (host, port) = (host.clone(), port.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some(count) = line
                        .trim()
                        .strip_prefix('*')
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        return;
                    };
                    let mut args = Vec::new();
                    for _ in 0..count {
                        let mut length = String::new();
                        if read.read_line(&mut length).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let Ok(length) = length.trim().trim_start_matches('$').parse::<usize>()
                        else {
                            return;
                        };
                        let mut buffer = vec![0; length + 2];
                        if read.read_exact(&mut buffer).await.is_err() {
                            return;
                        }
                        buffer.truncate(length);
                        args.push(String::from_utf8_lossy(&buffer).to_uppercase());
                    }
                    let reply = match args.first().map(String::as_str) {
                        Some("HELLO") => {
                            "%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n".to_owned()
                        }
                        Some("SENTINEL") => format!(
                            "*2\r\n${}\r\n{host}\r\n${}\r\n{port}\r\n",
                            host.len(),
                            port.len()
                        ),
                        Some("SUBSCRIBE") => {
                            ">3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n".to_owned()
                        }
                        Some("PING") => "+PONG\r\n".to_owned(),
                        _ => "+OK\r\n".to_owned(),
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
