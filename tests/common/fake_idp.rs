//! A fake OpenID Connect IdP for tests: rotates refresh tokens like a strict IdP (a reused
//! token is refused), with knobs for latency and failures, plus echo and WebSocket routes
//! for pass-through tests.

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the token endpoint answers refresh grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdpMode {
    /// Rotate: a new refresh token each time; a reused token gets 400 invalid_grant.
    Rotate,
    /// Answer with this status and an error body.
    Status(u16),
    /// Answer 200 without a refresh token (an IdP that does not rotate).
    NoRotation,
}

#[derive(Debug)]
struct Knobs {
    mode: IdpMode,
    latency: Duration,
    /// Answer this many refresh grants with 503 first.
    fail_next: u32,
    /// When set, answer `authorization_code` grants with this JSON body (status 200)
    /// instead of echoing the request.
    code_answer: Option<String>,
    /// When set, pass-through (echo) answers carry this `Set-Cookie` value.
    echo_set_cookie: Option<String>,
    /// The status revocation calls are answered with (200 unless set).
    revoke_status: u16,
}

/// One call the token endpoint saw.
#[derive(Debug, Clone)]
pub struct TokenCall {
    /// The form body, raw.
    pub body: Vec<u8>,
    /// The request headers.
    pub headers: Vec<(String, String)>,
    /// The refresh token presented, when it was a refresh grant.
    pub refresh_token: Option<String>,
}

#[derive(Debug, Default)]
struct Record {
    calls: Vec<TokenCall>,
    revocations: Vec<TokenCall>,
    used: HashSet<String>,
    issued: Vec<String>,
    answers: HashMap<String, String>,
}

struct Shared {
    knobs: Mutex<Knobs>,
    record: Mutex<Record>,
    counter: AtomicU64,
    prefix: String,
}

/// A running fake IdP.
pub struct FakeIdp {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIdp {
    /// Start on 127.0.0.1 port 0.
    pub async fn start() -> FakeIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        FakeIdp::serve(listener)
    }

    /// Reserve a loopback port (bound on port 0, not listening: connections are refused)
    /// for an IdP that starts later with [`FakeIdp::start_on`].
    pub fn reserve() -> (tokio::net::TcpSocket, SocketAddr) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        (socket, addr)
    }

    /// Start listening on a reserved socket.
    pub fn start_on(socket: tokio::net::TcpSocket) -> FakeIdp {
        FakeIdp::serve(socket.listen(1024).unwrap())
    }

    /// Start on 127.0.0.1 port 0 over TLS, with a certificate for `names` signed by itself;
    /// returns the IdP and the certificate's PEM (to trust it as a CA).
    pub async fn start_tls(names: &[&str]) -> (FakeIdp, String) {
        let certified = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = FakeIdp::shared();
        let task = super::serve_tls(listener, Arc::new(config), FakeIdp::app(shared.clone()));
        (FakeIdp { addr, shared, task }, pem)
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            knobs: Mutex::new(Knobs {
                mode: IdpMode::Rotate,
                latency: Duration::ZERO,
                fail_next: 0,
                code_answer: None,
                echo_set_cookie: None,
                revoke_status: 200,
            }),
            record: Mutex::new(Record::default()),
            counter: AtomicU64::new(0),
            prefix: format!("{:016x}", rand_u64()),
        })
    }

    fn app(shared: Arc<Shared>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/token", any(token))
            .route("/revoke", axum::routing::post(revoke))
            .route("/ws", get(websocket))
            .route("/watch", get(watch))
            .fallback(echo)
            .with_state(shared)
    }

    fn serve(listener: tokio::net::TcpListener) -> FakeIdp {
        let shared = FakeIdp::shared();
        let app = FakeIdp::app(shared.clone());
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeIdp { addr, shared, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Mint a fresh refresh token the IdP will accept once.
    pub fn mint(&self) -> String {
        let n = self.shared.counter.fetch_add(1, Ordering::SeqCst);
        let token = format!("rt-{}-{n}", self.shared.prefix);
        self.shared
            .record
            .lock()
            .unwrap()
            .issued
            .push(token.clone());
        token
    }

    pub fn set_mode(&self, mode: IdpMode) {
        self.shared.knobs.lock().unwrap().mode = mode;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.knobs.lock().unwrap().latency = latency;
    }

    pub fn fail_next(&self, count: u32) {
        self.shared.knobs.lock().unwrap().fail_next = count;
    }

    /// Answer `authorization_code` grants with this JSON body (`None`: echo them, the default).
    pub fn set_code_answer(&self, body: Option<String>) {
        self.shared.knobs.lock().unwrap().code_answer = body;
    }

    /// Add this `Set-Cookie` to pass-through (echo) answers (`None`: none, the default).
    pub fn set_echo_cookie(&self, value: Option<String>) {
        self.shared.knobs.lock().unwrap().echo_set_cookie = value;
    }

    /// Answer revocation calls with `status` (200 by default), with an error body unless 200.
    pub fn set_revoke_status(&self, status: u16) {
        self.shared.knobs.lock().unwrap().revoke_status = status;
    }

    /// Every RFC 7009 revocation call so far (`refresh_token` holds the revoked token).
    pub fn revocations(&self) -> Vec<TokenCall> {
        self.shared.record.lock().unwrap().revocations.clone()
    }

    /// Every token-endpoint call so far.
    pub fn calls(&self) -> Vec<TokenCall> {
        self.shared.record.lock().unwrap().calls.clone()
    }

    /// How many refresh grants presented `token`.
    pub fn calls_for(&self, token: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.refresh_token.as_deref() == Some(token))
            .count()
    }

    /// The body the IdP answered to the successful exchange of `token`.
    pub fn answer_for(&self, token: &str) -> Option<String> {
        self.shared
            .record
            .lock()
            .unwrap()
            .answers
            .get(token)
            .cloned()
    }

    /// Every token this IdP minted or issued (to check logs for leaks).
    pub fn all_tokens(&self) -> Vec<String> {
        self.shared.record.lock().unwrap().issued.clone()
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

async fn discovery(State(s): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let _ = s;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    axum::Json(serde_json::json!({
        "issuer": format!("http://{host}"),
        "token_endpoint": format!("http://{host}/token"),
    }))
}

fn id_token(sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"fake-idp"),
    )
    .unwrap()
}

/// Request headers as (name, value) strings.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    refresh_gate::oauth::form::parse(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn json_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("set-cookie", "idp-session=1")
        .body(axum::body::Body::from(body))
        .unwrap()
}

async fn token(
    State(s): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refresh_token = match form_value(&body, "grant_type").as_deref() {
        Some("refresh_token") => form_value(&body, "refresh_token"),
        _ => None,
    };
    s.record.lock().unwrap().calls.push(TokenCall {
        body: body.to_vec(),
        headers: header_pairs(&headers),
        refresh_token: refresh_token.clone(),
    });
    let (mode, latency, fail, code_answer) = {
        let mut knobs = s.knobs.lock().unwrap();
        let fail = knobs.fail_next > 0;
        if fail {
            knobs.fail_next -= 1;
        }
        (
            knobs.mode.clone(),
            knobs.latency,
            fail,
            knobs.code_answer.clone(),
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(answer) = code_answer.filter(|_| {
        refresh_token.is_none()
            && form_value(&body, "grant_type").as_deref() == Some("authorization_code")
    }) {
        return json_response(200, answer);
    }
    let Some(presented) = refresh_token else {
        // Another grant: echo what arrived, so tests can check it byte for byte.
        return axum::Json(serde_json::json!({
            "grant": form_value(&body, "grant_type"),
            "method": method.as_str(),
            "host": headers.get("host").and_then(|h| h.to_str().ok()),
            "body_b64": base64::engine::general_purpose::STANDARD.encode(&body),
        }))
        .into_response();
    };
    if fail {
        return json_response(503, r#"{"error":"temporarily_unavailable"}"#.to_owned());
    }
    match mode {
        IdpMode::Status(code) => json_response(code, r#"{"error":"server_error"}"#.to_owned()),
        IdpMode::NoRotation => json_response(
            200,
            serde_json::json!({
                "access_token": format!("at-{}", s.counter.fetch_add(1, Ordering::SeqCst)),
                "id_token": id_token("alice"),
                "token_type": "Bearer",
                "expires_in": 60,
            })
            .to_string(),
        ),
        IdpMode::Rotate => {
            let mut record = s.record.lock().unwrap();
            if !record.used.insert(presented.clone()) {
                return json_response(
                    400,
                    r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#
                        .to_owned(),
                );
            }
            let n = s.counter.fetch_add(1, Ordering::SeqCst);
            let next = format!("rt-{}-{n}", s.prefix);
            let access = format!("at-{}-{n}", s.prefix);
            record.issued.push(next.clone());
            record.issued.push(access.clone());
            let body = serde_json::json!({
                "access_token": access,
                "refresh_token": next,
                "id_token": id_token("alice"),
                "token_type": "Bearer",
                "expires_in": 60,
            })
            .to_string();
            record.answers.insert(presented, body.clone());
            json_response(200, body)
        }
    }
}

async fn revoke(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.record.lock().unwrap().revocations.push(TokenCall {
        refresh_token: form_value(&body, "token"),
        body: body.to_vec(),
        headers: header_pairs(&headers),
    });
    match s.knobs.lock().unwrap().revoke_status {
        200 => StatusCode::OK.into_response(),
        code => json_response(code, r#"{"error":"invalid_request"}"#.to_owned()),
    }
}

async fn echo(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cookie = s.knobs.lock().unwrap().echo_set_cookie.clone();
    let echoed = axum::Json(serde_json::json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "headers": headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect::<Vec<_>>(),
        "body_len": body.len(),
        "body_sha256": hex::encode(Sha256::digest(&body)),
    }));
    match cookie {
        Some(cookie) => ([(axum::http::header::SET_COOKIE, cookie)], echoed).into_response(),
        None => echoed.into_response(),
    }
}

/// A long-lived streaming answer, like a Kubernetes watch: four lines, 300 ms apart.
async fn watch() -> Response {
    let lines = futures_util::stream::unfold(0u32, |n| async move {
        if n == 4 {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Some((Ok::<_, std::io::Error>(format!("event {n}\n")), n + 1))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(lines))
        .unwrap()
}

async fn websocket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message {
                let reply = format!("echo:{}", text.as_str());
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
        }
    })
}

/// A status code helper for tests.
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}
