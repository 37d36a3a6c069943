//! What counts as a refresh grant on the token path, through the real gate: ambiguous
//! requests are refused and never reach the IdP; path variants are recognised; bodies
//! over the cap are refused whole.

use crate::common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORM: &str = "application/x-www-form-urlencoded";

async fn post(
    gate: &GateProcess,
    path: &str,
    content_type: &str,
    auth: Option<String>,
    body: String,
) -> (u16, String) {
    let mut request = client()
        .post(gate.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ambiguous_requests_are_refused_and_never_reach_the_idp() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let t = idp.mint();
    let cases: Vec<(&str, &str, Option<String>, String)> = vec![
        (
            "/token",
            FORM,
            None,
            format!("grant_type=refresh_token&grant_type=refresh_token&refresh_token={t}"),
        ),
        (
            "/token",
            FORM,
            None,
            format!("grant_type=refresh_token&refresh_token={t}&refresh_token={t}"),
        ),
        (
            "/token",
            FORM,
            None,
            format!("grant_type=authorization_code&grant_type=refresh_token&refresh_token={t}"),
        ),
        (
            &*Box::leak(format!("/token?refresh_token={t}").into_boxed_str()),
            FORM,
            None,
            "grant_type=authorization_code&code=x".to_owned(),
        ),
        (
            "/token",
            "application/json",
            None,
            format!(r#"{{"grant_type":"refresh_token","refresh_token":"{t}"}}"#),
        ),
        ("/token", "text/plain", None, refresh_body(&t)),
        (
            "/token",
            FORM,
            Some(basic("alice", "s")),
            format!("grant_type=refresh_token&refresh_token={t}&client_id=bob"),
        ),
        (
            "/token",
            FORM,
            Some("Basic not-base64!".to_owned()),
            refresh_body(&t),
        ),
        (
            "/token",
            FORM,
            None,
            format!("grant_type=refresh_token&refresh_token={t}%zz"),
        ),
        (
            "/token",
            FORM,
            None,
            "grant_type=refresh_token&refresh_token=".to_owned(),
        ),
        (
            "/token",
            FORM,
            None,
            format!("grant_type=refresh_token&refresh_token={t}&client_id=a&client_id=b"),
        ),
        ("/idp%2Ftoken/../token%2F", FORM, None, refresh_body(&t)),
    ];
    for (path, content_type, auth, body) in cases {
        let (status, answer) = post(&gate, path, content_type, auth, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(oauth_error(&answer), "invalid_request", "{path} {body}");
    }
    assert!(
        idp.calls().is_empty(),
        "the IdP saw an ambiguous request: {:?}",
        idp.calls().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_variants_are_recognised_as_the_token_path() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    for path in ["/token/", "//token", "/%74oken", "/token;jsessionid=x"] {
        let token = idp.mint();
        // The first use goes through (the IdP sees the original path)...
        let first = post(
            &gate,
            "/token",
            FORM,
            Some(basic("k", "s")),
            refresh_body(&token),
        )
        .await;
        assert_eq!(first.0, 200, "{first:?}");
        // ...and a variant of the path is still the token path: replayed, not forwarded.
        let (status, body) = post(
            &gate,
            path,
            FORM,
            Some(basic("k", "s")),
            refresh_body(&token),
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, first.1, "{path}");
        assert_eq!(idp.calls_for(&token), 1, "{path} reached the IdP");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_grants_are_forwarded_byte_identical() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let body = "grant_type=authorization_code&code=abc%2Bdef&redirect_uri=http%3A%2F%2Flocalhost";
    let response = client()
        .post(gate.url("/token"))
        .header("host", "idp.example.com")
        .header("content-type", FORM)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value = response.json().await.unwrap();
    use base64::Engine;
    let received = base64::engine::general_purpose::STANDARD
        .decode(echoed["body_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(received, body.as_bytes());
    assert_eq!(
        echoed["host"], "idp.example.com",
        "the client's Host is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_kib_refresh_body_is_refused_with_413() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let body = format!(
        "grant_type=refresh_token&refresh_token={}",
        "a".repeat(100 * 1024)
    );
    let (status, answer) = post(&gate, "/token", FORM, None, body.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(oauth_error(&answer), "invalid_request");
    // Chunked, without a Content-Length: refused the same way.
    let stream = futures_util::stream::iter(
        body.into_bytes()
            .chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = client()
        .post(gate.url("/token"))
        .header("content-type", FORM)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(idp.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expect_100_continue_is_answered_promptly() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    let body = refresh_body(&token);
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: {FORM}\r\nAuthorization: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        basic("k", "s"),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_millis(500), stream.read(&mut buf))
        .await
        .expect("no 100 Continue within 500 ms")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"));
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&rest).contains("access_token") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early");
        rest.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&rest).contains("200"));
    assert_eq!(idp.calls_for(&token), 1);
}
