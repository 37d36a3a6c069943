//! The fast fake IdP (hyper, on the benchmark's own runtime): `/token` answers a ~1.5 KB
//! token JSON after an adjustable latency, every other path a short status JSON.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The fake IdP's counters and knobs.
pub struct Idp {
    /// Calls to `/token` so far.
    pub token_calls: AtomicU64,
    /// How long `/token` waits before answering.
    pub latency_ms: AtomicU64,
    token_body: Bytes,
}

fn token_body() -> Bytes {
    // A realistic ~1.5 KB token response (three JWT-sized strings).
    let jwt = |n: usize| "eyJhbGciOiJSUzI1NiJ9.".to_owned() + &"A".repeat(n);
    Bytes::from(
        serde_json::json!({
            "access_token": jwt(400),
            "id_token": jwt(700),
            "refresh_token": format!("rt-next-{}", "B".repeat(200)),
            "token_type": "Bearer",
            "expires_in": 60,
        })
        .to_string(),
    )
}

async fn handle(
    idp: Arc<Idp>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let is_token = req.uri().path() == "/token";
    let _ = req.into_body().collect().await?;
    if is_token {
        idp.token_calls.fetch_add(1, Ordering::Relaxed);
        let latency = idp.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(Full::new(idp.token_body.clone()))
            .unwrap());
    }
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"kind\":\"Status\",\"status\":\"Success\"}",
        )))
        .unwrap())
}

/// Start the IdP on `runtime`, on a free port.
pub fn start(runtime: &tokio::runtime::Runtime) -> (SocketAddr, Arc<Idp>) {
    let idp = Arc::new(Idp {
        token_calls: AtomicU64::new(0),
        latency_ms: AtomicU64::new(0),
        token_body: token_body(),
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = idp.clone();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let idp = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(idp.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, idp)
}
