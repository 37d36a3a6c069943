//! Test harness: a fake IdP with knobs, and the real `refresh-gate` binary started on
//! ephemeral loopback ports.
#![allow(dead_code, unused_imports)]

pub mod config;
pub mod e2e;
pub mod fake_idp;
pub mod fake_sentinel;
pub mod fault_idp;
pub mod gate;
pub mod jose;
pub mod oracles;
pub mod prereq;
pub mod redis_server;
pub mod redis_topology;
pub mod rotations;

pub use config::{
    ms, secs, BindSource, ClientOverrides, GateConfig, LogFormat, Mode, OnReplay, OnStoreError,
    Store, TokenEncoding,
};
#[allow(unused_imports)]
pub use fake_idp::{FakeIdp, IdpMode};
pub use gate::GateProcess;

use base64::Engine;

/// An HTTP client that never pools connections across tests and follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `Authorization: Basic` for a client id and secret.
pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// A refresh grant body.
pub fn refresh_body(token: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={token}")
}

/// POST a refresh grant with Basic credentials; returns (status, body).
pub async fn refresh(gate: &GateProcess, token: &str, client_id: &str) -> (u16, String) {
    refresh_with(gate, token, client_id, &[]).await
}

/// POST a refresh grant with Basic credentials and extra headers; returns (status, body).
pub async fn refresh_with(
    gate: &GateProcess,
    token: &str,
    client_id: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = client()
        .post(gate.url("/token"))
        .header("authorization", basic(client_id, "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(refresh_body(token));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The `error` field of an RFC 6749 error body.
pub fn oauth_error(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    value["error"].as_str().unwrap_or_default().to_owned()
}

/// Serve an axum router over TLS on `listener` (HTTP/1.1 and HTTP/2) until aborted.
pub fn serve_tls(
    listener: tokio::net::TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    app: axum::Router,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    })
}
