//! An IdP that misbehaves on the wire: raw TCP, so it can reset connections, stall, cut a
//! body short, or answer what a proxy must not trust. Each token decides its own fault:
//! the fault is the part of the token after the last `~` (e.g. `rt-17~reset`), so one server
//! can serve many kinds of fault at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the IdP does with a refresh grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Rotate and answer 200 (the first time; a reused token gets 400 invalid_grant).
    Ok,
    /// 503 with a JSON error (nothing rotated).
    Unavailable,
    /// Reset the connection before any answer (nothing rotated).
    ResetBeforeHeaders,
    /// Rotate, send the headers and half the body, then reset (the answer is lost).
    ResetMidBody,
    /// 200 with an HTML page (nothing rotated).
    NotJson,
    /// 200 JSON without access_token (nothing rotated).
    NoAccessToken,
    /// Rotate and answer 200 with a body over the gate's answer cap.
    Oversize,
    /// Rotate, but answer only after `SLOW` (beyond the client's timeout).
    Slow,
    /// Rotate and answer `103 Early Hints` before the 200.
    EarlyHints,
    /// Rotate and answer `100 Continue`, `102 Processing` and two `103`s before the 200.
    ManyInformational,
    /// Answer `101 Switching Protocols` (nothing rotated), then close.
    SwitchingProtocols,
}

/// How long a `Slow` answer takes.
pub const SLOW: Duration = Duration::from_millis(700);

impl Fault {
    fn parse(name: &str) -> Fault {
        match name {
            "unavailable" => Fault::Unavailable,
            "reset" => Fault::ResetBeforeHeaders,
            "midbody" => Fault::ResetMidBody,
            "html" => Fault::NotJson,
            "noaccess" => Fault::NoAccessToken,
            "oversize" => Fault::Oversize,
            "slow" => Fault::Slow,
            "hints" => Fault::EarlyHints,
            "informational" => Fault::ManyInformational,
            "switching" => Fault::SwitchingProtocols,
            _ => Fault::Ok,
        }
    }

    /// The token suffix that selects this fault.
    pub fn suffix(self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Unavailable => "unavailable",
            Fault::ResetBeforeHeaders => "reset",
            Fault::ResetMidBody => "midbody",
            Fault::NotJson => "html",
            Fault::NoAccessToken => "noaccess",
            Fault::Oversize => "oversize",
            Fault::Slow => "slow",
            Fault::EarlyHints => "hints",
            Fault::ManyInformational => "informational",
            Fault::SwitchingProtocols => "switching",
        }
    }

    /// Whether the IdP rotates the token when it answers with this fault.
    pub fn rotates(self) -> bool {
        matches!(
            self,
            Fault::Ok
                | Fault::ResetMidBody
                | Fault::Oversize
                | Fault::Slow
                | Fault::EarlyHints
                | Fault::ManyInformational
        )
    }
}

#[derive(Default)]
struct State {
    /// token -> the answer body of its rotation.
    rotated: HashMap<String, String>,
    /// token -> how many grants presented it.
    calls: HashMap<String, usize>,
    /// Faults apply to the first presentation only; later ones behave (`Ok`).
    faulted: std::collections::HashSet<String>,
    counter: u64,
}

/// A running faulty IdP.
pub struct FaultIdp {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultIdp {
    pub async fn start() -> FaultIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        FaultIdp { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many refresh grants presented `token`.
    pub fn calls_for(&self, token: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    /// The body of the rotation of `token`, if the IdP rotated it.
    pub fn rotation_of(&self, token: &str) -> Option<String> {
        self.state.lock().unwrap().rotated.get(token).cloned()
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0usize);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, buf[end + 4..end + 4 + length].to_vec()));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reset(stream: TcpStream) {
    // SO_LINGER 0: closing sends RST instead of FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    while let Some((_head, body)) = read_request(&mut stream).await {
        let token = refresh_gate::oauth::form::parse(&body)
            .ok()
            .and_then(|f| {
                f.into_iter()
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v)
            })
            .unwrap_or_default();
        let (fault, answer) = {
            let mut s = state.lock().unwrap();
            *s.calls.entry(token.clone()).or_default() += 1;
            let first = s.faulted.insert(token.clone());
            let fault = if first {
                Fault::parse(token.rsplit('~').next().unwrap_or(""))
            } else {
                Fault::Ok
            };
            let answer = if fault.rotates() {
                if s.rotated.contains_key(&token) {
                    None
                } else {
                    s.counter += 1;
                    let padding = if fault == Fault::Oversize {
                        "p".repeat(300 * 1024)
                    } else {
                        String::new()
                    };
                    let body = format!(
                        r#"{{"access_token":"at-{n}","refresh_token":"rt-next-{n}~ok","token_type":"Bearer","expires_in":60,"pad":"{padding}"}}"#,
                        n = s.counter
                    );
                    s.rotated.insert(token.clone(), body.clone());
                    Some(body)
                }
            } else {
                None
            };
            (fault, answer)
        };
        let reused = fault.rotates() && answer.is_none();
        if reused {
            let body =
                r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#;
            if stream
                .write_all(response("400 Bad Request", "application/json", body).as_bytes())
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        match fault {
            Fault::Ok | Fault::Oversize => {
                let wire = response("200 OK", "application/json", &answer.unwrap_or_default());
                if stream.write_all(wire.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Slow => {
                tokio::time::sleep(SLOW).await;
                let wire = response("200 OK", "application/json", &answer.unwrap_or_default());
                if stream.write_all(wire.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::Unavailable => {
                let wire = response(
                    "503 Service Unavailable",
                    "application/json",
                    r#"{"error":"temporarily_unavailable"}"#,
                );
                if stream.write_all(wire.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::NotJson => {
                let wire = response("200 OK", "text/html", "<html>login</html>");
                if stream.write_all(wire.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::NoAccessToken => {
                let wire = response("200 OK", "application/json", r#"{"token_type":"Bearer"}"#);
                if stream.write_all(wire.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::EarlyHints | Fault::ManyInformational => {
                let informational = if fault == Fault::EarlyHints {
                    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_owned()
                } else {
                    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
                     HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n"
                        .to_owned()
                };
                let wire = response("200 OK", "application/json", &answer.unwrap_or_default());
                if stream.write_all(informational.as_bytes()).await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                if stream.write_all(wire.as_bytes()).await.is_err() {
                    return;
                }
            }
            Fault::SwitchingProtocols => {
                let wire = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
                let _ = stream.write_all(wire.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
            Fault::ResetBeforeHeaders => return reset(stream),
            Fault::ResetMidBody => {
                let body = answer.unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body.as_bytes()[..body.len() / 2]).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                return reset(stream);
            }
        }
    }
}
