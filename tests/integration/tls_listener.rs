//! The gate terminating TLS: refresh grants and pass-through over https, ALPN offering
//! HTTP/1.1 only, and a renewed certificate picked up on SIGHUP without a restart.

use crate::common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

const NAME: &str = "gate.example.test";

fn write_certificate(dir: &std::path::Path) -> rcgen::CertifiedKey {
    let certified = rcgen::generate_simple_self_signed(vec![NAME.to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    certified
}

async fn tls_gate(idp: &FakeIdp, dir: &std::path::Path) -> GateProcess {
    let options = GateConfig::new(idp.url()).tls(dir.join("cert.pem"), dir.join("key.pem"));
    GateProcess::start(&options).await
}

/// The certificate the gate serves now, and the ALPN protocol it chose from h2 + http/1.1.
async fn handshake(
    gate: &GateProcess,
    trusted: &rcgen::CertifiedKey,
) -> (Vec<u8>, Option<Vec<u8>>) {
    try_handshake(gate, trusted).await.expect("TLS handshake")
}

/// A handshake that trusts only `trusted`: fails while the gate serves another certificate.
async fn try_handshake(
    gate: &GateProcess,
    trusted: &rcgen::CertifiedKey,
) -> std::io::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let tls = connector.connect(name, stream).await?;
    let (_, connection) = tls.get_ref();
    let served = connection.peer_certificates().unwrap()[0].to_vec();
    Ok((served, connection.alpn_protocol().map(<[u8]>::to_vec)))
}

fn https_client(trusted: &rcgen::CertifiedKey, gate: &GateProcess) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(trusted.cert.pem().as_bytes()).unwrap(),
        )
        .resolve(NAME, gate.addr)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_grants_and_pass_through_over_https() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certificate = write_certificate(dir.path());
    let gate = tls_gate(&idp, dir.path()).await;
    let client = https_client(&certificate, &gate);
    let base = format!("https://{NAME}:{}", gate.addr.port());
    let token = idp.mint();
    let send = || {
        client
            .post(format!("{base}/token"))
            .header("authorization", basic("k", "s"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(refresh_body(&token))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first = first.text().await.unwrap();
    assert_eq!(
        send().await.unwrap().text().await.unwrap(),
        first,
        "replayed over TLS"
    );
    let echoed: serde_json::Value = client
        .get(format!("{base}/api/v1/namespaces"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(echoed["headers"].clone()).unwrap();
    assert!(headers.contains(&("x-forwarded-proto".to_owned(), "https".to_owned())));
    assert!(gate
        .log()
        .contains(&format!("https://{NAME}:{}/token", gate.addr.port())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alpn_offers_http_1_1_only() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certificate = write_certificate(dir.path());
    let gate = tls_gate(&idp, dir.path()).await;
    let (_, alpn) = handshake(&gate, &certificate).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewed_certificate_is_served_after_sighup_without_a_restart() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let old = write_certificate(dir.path());
    let gate = tls_gate(&idp, dir.path()).await;
    let (served, _) = handshake(&gate, &old).await;
    assert_eq!(served, old.cert.der().to_vec());
    let renewed = write_certificate(dir.path());
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &gate.pid().to_string()])
        .status()
        .unwrap()
        .success());
    let mut now_served = Vec::new();
    for _ in 0..40 {
        now_served = try_handshake(&gate, &renewed)
            .await
            .map(|h| h.0)
            .unwrap_or_default();
        if now_served == renewed.cert.der().to_vec() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        now_served,
        renewed.cert.der().to_vec(),
        "the renewed certificate is not served"
    );
    assert!(gate.log().contains("TLS certificate reloaded"));
    assert_eq!(
        gate.admin_get("/livez").await.0,
        200,
        "still running: no restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewed_certificate_file_is_picked_up_without_a_signal() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let old = write_certificate(dir.path());
    let gate = tls_gate(&idp, dir.path()).await;
    assert_eq!(handshake(&gate, &old).await.0, old.cert.der().to_vec());
    // A renewed Secret: the files change in place; the gate checks every 10 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = write_certificate(dir.path());
    let mut served = Vec::new();
    for _ in 0..150 {
        served = try_handshake(&gate, &renewed)
            .await
            .map(|h| h.0)
            .unwrap_or_default();
        if served == renewed.cert.der().to_vec() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served,
        renewed.cert.der().to_vec(),
        "not picked up within 15 s"
    );
}
