//! An https IdP: the gate verifies its certificate (with `ca_file` replacing the system
//! roots, and `tls_server_name` when connecting by address) and never turns verification off.

use crate::common;

use common::*;

async fn gate_to(idp: &FakeIdp, ca: Option<&std::path::Path>, name: Option<&str>) -> GateProcess {
    let mut options = GateConfig::new(format!("https://127.0.0.1:{}", idp.addr.port()));
    options.upstream.ca_file = ca.map(std::path::Path::to_owned);
    options.upstream.tls_server_name = name.map(str::to_owned);
    GateProcess::start(&options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verified_https_idp_by_address_with_its_name() {
    let (idp, pem) = FakeIdp::start_tls(&["idp.example.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let gate = gate_to(&idp, Some(&ca), Some("idp.example.test")).await;
    let token = idp.mint();
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(refresh(&gate, &token, "k").await.1, body, "replayed");
    let passthrough = client()
        .get(gate.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(passthrough.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_for_another_name_is_refused() {
    let (idp, pem) = FakeIdp::start_tls(&["idp.example.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let gate = gate_to(&idp, Some(&ca), Some("other.example.test")).await;
    let token = idp.mint();
    let (status, body) = refresh(&gate, &token, "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (502, "temporarily_unavailable")
    );
    assert_eq!(
        idp.calls_for(&token),
        0,
        "the request reached an unverified server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_untrusted_certificate_is_refused() {
    let (idp, _pem) = FakeIdp::start_tls(&["127.0.0.1"]).await;
    // No ca_file: the system roots do not know this certificate.
    let gate = gate_to(&idp, None, None).await;
    let token = idp.mint();
    assert_eq!(refresh(&gate, &token, "k").await.0, 502);
    let passthrough = client()
        .get(gate.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(passthrough.status(), 502);
    assert_eq!(idp.calls_for(&token), 0);
}
