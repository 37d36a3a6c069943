//! Everything off the refresh path is forwarded untouched: discovery, streaming bodies
//! with the client's Host, and protocol upgrades.

use crate::common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_get_reaches_the_idp_with_the_clients_host() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let response = client()
        .get(gate.url("/.well-known/openid-configuration"))
        .header("host", "login.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_eq!(doc["token_endpoint"], "http://login.example.com/token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_1_mib_post_arrives_byte_identical() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let expected = hex::encode(Sha256::digest(&payload));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        payload.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = client()
        .post(gate.url("/api/v1/namespaces/default/configmaps?dryRun=All"))
        .header("host", "k8s.example.com")
        .header("x-custom", "Value With  Spaces")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "for the next hop only")
        .header("keep-alive", "timeout=5")
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["body_len"], 1024 * 1024);
    assert_eq!(echoed["body_sha256"], expected);
    assert_eq!(
        echoed["uri"],
        "/api/v1/namespaces/default/configmaps?dryRun=All"
    );
    let headers: Vec<(String, String)> = serde_json::from_value(echoed["headers"].clone()).unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("host").as_deref(), Some("k8s.example.com"));
    assert_eq!(get("x-custom").as_deref(), Some("Value With  Spaces"));
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        get("x-hop-secret"),
        None,
        "a header named by Connection is hop-by-hop"
    );
    assert_eq!(get("keep-alive"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_lived_watch_is_not_cut_by_the_token_path_timeout() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(200))
        .max_replay_delay(ms(100));
    let gate = GateProcess::start(&options).await;
    let response = client().get(gate.url("/watch")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Four events over ~900 ms, far beyond request_timeout: all arrive.
    let body = response.text().await.unwrap();
    assert_eq!(body, "event 0\nevent 1\nevent 2\nevent 3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_upgrade_passes_through() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let (mut socket, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gate.addr))
        .await
        .expect("WebSocket handshake through the gate");
    assert_eq!(response.status(), 101);
    for n in 0..3 {
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                format!("hello {n}").into(),
            ))
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert_eq!(
            reply.into_text().unwrap().as_str(),
            format!("echo:hello {n}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_post_requests_on_the_token_path_are_forwarded() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let response = client()
        .get(gate.url("/token?foo=bar"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(idp.calls().len(), 1);
}
