//! One refresh grant sent to the gate on a fresh connection (P3's first use, P4's storm).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;

/// POST a refresh grant for `token` to `gate` and return the answer's status.
pub async fn refresh(gate: SocketAddr, token: &str) -> u16 {
    let stream = tokio::net::TcpStream::connect(gate).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::post("/token")
        .header("host", gate.to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", "Basic a3ViZXJuZXRlczpzZWNyZXQ=")
        .body(Full::new(Bytes::from(format!(
            "grant_type=refresh_token&refresh_token={token}"
        ))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}
