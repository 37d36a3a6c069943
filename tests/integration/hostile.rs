//! Hostile and malformed input through the real gate: each request gets a clear 4xx or a
//! documented forward, nothing that should be refused reaches the IdP, and the gate keeps
//! serving after every one. The README's "Hostile input" table lists the same cases.

use crate::common;

use base64::Engine;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the gate must do with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answer with this status, without contacting the IdP.
    Refused(u16),
    /// Forward to the IdP (the IdP's answer comes back).
    Forwarded,
    /// Close the connection or answer 4xx, without contacting the IdP.
    RejectedOrClosed,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    expect: Expect,
}

fn form_request(path: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn basic_raw(raw: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn cases(t: &str) -> Vec<Case> {
    let grant = format!("grant_type=refresh_token&refresh_token={t}");
    let g = grant.as_bytes();
    let refused = |name, request| Case {
        name,
        request,
        expect: Expect::Refused(400),
    };
    let mut chunked_big = b"POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..9 {
        chunked_big.extend_from_slice(format!("2000\r\n{}\r\n", "a".repeat(0x2000)).as_bytes());
    }
    chunked_big.extend_from_slice(b"0\r\n\r\n");
    let mut headers_flood = String::new();
    for n in 0..150 {
        headers_flood.push_str(&format!("X-Flood-{n}: {n}\r\n"));
    }
    vec![
        Case {
            name: "body over the cap (Content-Length)",
            request: form_request("/token", "", format!("grant_type=refresh_token&refresh_token={}", "a".repeat(70_000)).as_bytes()),
            expect: Expect::Refused(413),
        },
        Case { name: "body over the cap (chunked)", request: chunked_big, expect: Expect::Refused(413) },
        Case {
            name: "Content-Length that lies (longer than the body)",
            request: {
                let mut r = form_request("/token", "", g);
                let text = String::from_utf8(r.clone()).unwrap().replace(&format!("Content-Length: {}", g.len()), "Content-Length: 500");
                r = text.into_bytes();
                r
            },
            expect: Expect::Refused(408),
        },
        Case {
            // RFC 9112 6.3: Transfer-Encoding wins; Pingora drops Content-Length and closes
            // the connection after the answer, so nothing can be smuggled behind the body.
            name: "both Content-Length and Transfer-Encoding (smuggling attempt)",
            request: format!(
                "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{grant}-te\r\n0\r\n\r\n",
                grant.len() + 3
            )
            .into_bytes(),
            expect: Expect::Forwarded,
        },
        refused("invalid percent-encoding", form_request("/token", "", format!("{grant}%zz").as_bytes())),
        refused("non-UTF-8 token", form_request("/token", "", &[g, b"\xff\xfe"].concat())),
        refused("non-UTF-8 percent-encoded token", form_request("/token", "", format!("{grant}%ff").as_bytes())),
        refused("duplicate grant_type", form_request("/token", "", format!("{grant}&grant_type=refresh_token").as_bytes())),
        refused("duplicate refresh_token", form_request("/token", "", format!("{grant}&refresh_token={t}").as_bytes())),
        refused("a refresh grant plus another grant_type", form_request("/token", "", format!("grant_type=authorization_code&{grant}").as_bytes())),
        refused("empty refresh_token", form_request("/token", "", b"grant_type=refresh_token&refresh_token=")),
        refused("missing refresh_token", form_request("/token", "", b"grant_type=refresh_token")),
        refused("duplicate client_id", form_request("/token", "", format!("{grant}&client_id=a&client_id=a").as_bytes())),
        refused("duplicate client_secret", form_request("/token", "", format!("{grant}&client_id=a&client_secret=x&client_secret=x").as_bytes())),
        refused("Basic that is not base64", form_request("/token", "Authorization: Basic !!notbase64!!\r\n", g)),
        refused("Basic without a colon", form_request("/token", &basic_raw("kubernetes"), g)),
        refused("Basic with bad form-encoding", form_request("/token", &basic_raw("a%zz:b"), g)),
        refused("client_id differs between Basic and form", form_request("/token", &basic_raw("alice:s"), format!("{grant}&client_id=bob").as_bytes())),
        refused("client_secret differs between Basic and form", form_request("/token", &basic_raw("alice:s"), format!("{grant}&client_secret=other").as_bytes())),
        refused("refresh_token in the query string", form_request(&format!("/token?refresh_token={t}"), "", b"grant_type=authorization_code&code=x")),
        refused("grant_type=refresh_token in the query of a GET", format!("GET /token?grant_type=refresh_token&refresh_token={t} HTTP/1.1\r\nHost: idp\r\n\r\n").into_bytes()),
        refused(
            "refresh grant as JSON",
            format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"grant_type\":\"refresh_token\",\"refresh_token\":\"{t}\"}}", 49 + t.len()).into_bytes(),
        ),
        refused(
            "refresh grant as multipart",
            {
                let body = format!("--b\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nrefresh_token\r\n--b\r\nContent-Disposition: form-data; name=\"refresh_token\"\r\n\r\n{t}\r\n--b--\r\n");
                format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
            },
        ),
        refused(
            "refresh grant without a Content-Type",
            format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Length: {}\r\n\r\n{grant}", grant.len()).into_bytes(),
        ),
        refused("encoded slash that decodes to the token path", form_request("/x%2F..%2Ftoken", "", g)),
        Case { name: "NUL byte in a header value", request: form_request("/token", "X-Bad: a\0b\r\n", g), expect: Expect::RejectedOrClosed },
        Case { name: "control byte in a header name", request: form_request("/token", "X\x01Bad: a\r\n", g), expect: Expect::RejectedOrClosed },
        Case { name: "oversize header block (over 1 MiB)", request: form_request("/token", &format!("X-Big: {}\r\n", "b".repeat(1100 * 1024)), g), expect: Expect::RejectedOrClosed },
        Case { name: "a 100 KiB header (under Pingora's 1 MiB limit)", request: form_request("/token", &format!("X-Big: {}\r\n", "b".repeat(100 * 1024)), b"grant_type=authorization_code&code=big"), expect: Expect::Forwarded },
        Case { name: "invalid chunk size", request: b"POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(), expect: Expect::Refused(400) },
        Case { name: "invalid method token", request: b"P@ST /token HTTP/1.1\r\nHost: idp\r\n\r\n".to_vec(), expect: Expect::RejectedOrClosed },
        Case { name: "HTTP/2 preface on the HTTP/1 port", request: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), expect: Expect::RejectedOrClosed },
        Case { name: "garbage request line", request: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), expect: Expect::RejectedOrClosed },
        Case { name: "a code grant (forwarded untouched)", request: form_request("/token", "", b"grant_type=authorization_code&code=abc"), expect: Expect::Forwarded },
        refused("grant_type empty, refresh_token present", form_request("/token", "", format!("grant_type=&refresh_token={t}").as_bytes())),
        refused("lenient percent-decoding (Node's querystring reads a refresh grant)", form_request("/token", &basic_raw("k:secret"), format!("grant_type=%72efresh_token&%72efresh_token={t}&x=%zz").as_bytes())),
        refused("UTF-16BE charset (a servlet container reads a refresh grant)", {
            let utf16 = |s: &str| s.encode_utf16().flat_map(|u| u.to_be_bytes()).map(|b| format!("%{b:02X}")).collect::<String>();
            let body = format!("{}={}&{}={}", utf16("grant_type"), utf16("refresh_token"), utf16("refresh_token"), utf16(t));
            format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded; charset=UTF-16BE\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        }),
        refused("grant_type with a trailing space (fosite splits on spaces)", form_request("/token", "", format!("grant_type=refresh_token+&refresh_token={t}").as_bytes())),
        refused("grant_type with a leading space", form_request("/token", "", format!("grant_type=%20refresh_token&refresh_token={t}").as_bytes())),
        refused("grant_type in upper case", form_request("/token", "", format!("grant_type=REFRESH_TOKEN&refresh_token={t}").as_bytes())),
        refused("grant_type with a long s (Go's EqualFold)", form_request("/token", "", format!("grant_type=refre%C5%BFh_token&refresh_token={t}").as_bytes())),
        refused("a name in another case (Refresh_Token)", form_request("/token", "", format!("grant_type=authorization_code&code=x&Refresh_Token={t}").as_bytes())),
        refused("Jetty's %u escapes", form_request("/token", "", format!("grant_type=%u0072efresh_token&refresh_token={t}").as_bytes())),
        refused("a second grant behind ';'", form_request("/token", "", format!("grant_type=authorization_code&code=x;grant_type=refresh_token;refresh_token={t}").as_bytes())),
        refused("method post (lower case) with a refresh body", form_request("/token", "", g).iter().skip(4).copied().fold(b"post".to_vec(), |mut v, b| { v.push(b); v })),
        refused("method Post with a refresh body", form_request("/token", "", g).iter().skip(4).copied().fold(b"Post".to_vec(), |mut v, b| { v.push(b); v })),
        refused("method PUT with a refresh body", form_request("/token", "", g).iter().skip(4).copied().fold(b"PUT".to_vec(), |mut v, b| { v.push(b); v })),
        refused("GET with a refresh body", form_request("/token", "", g).iter().skip(4).copied().fold(b"GET".to_vec(), |mut v, b| { v.push(b); v })),
        refused(
            "JSON whose names carry \\u005f escapes",
            {
                let body = format!("{{\"grant\\u005ftype\":\"refresh_token\",\"refresh\\u005ftoken\":\"{t}\"}}");
                format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
            },
        ),
        refused("a second Content-Type header", form_request("/token", "Content-Type: application/json\r\n", g)),
        refused("a second Authorization header", form_request("/token", &format!("{}{}", basic_raw("k:secret"), basic_raw("other:x")), g)),
        refused("Content-Encoding gzip", form_request("/token", "Content-Encoding: gzip\r\n", g)),
        refused("an Authorization scheme other than Basic on a refresh grant", form_request("/token", "Authorization: Bearer x\r\n", g)),
        refused("Transfer-Encoding gzip, chunked", format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n{grant}\r\n0\r\n\r\n", grant.len()).into_bytes()),
        refused("Transfer-Encoding chunked twice", format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{grant}\r\n0\r\n\r\n", grant.len()).into_bytes()),
        Case {
            name: "two different Content-Length headers",
            request: format!("POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nContent-Length: 3\r\n\r\n{grant}", grant.len()).into_bytes(),
            expect: Expect::RejectedOrClosed,
        },
        refused("Connection naming Content-Type (a hop-by-hop strip would change the reading)", form_request("/token", "Connection: Content-Type\r\n", g)),
        refused("a disguised grant sent elsewhere with X-Original-URL naming the token path", form_request("/other", "X-Original-URL: /token\r\n", format!("grant_type=REFRESH_TOKEN&refresh_token={t}").as_bytes())),
        refused("a disguised grant sent elsewhere with X-Rewrite-URL naming the token path", form_request("/other", "X-Rewrite-URL: http://idp/TOKEN?x=1\r\n", format!("grant_type=refresh_token+&refresh_token={t}").as_bytes())),
        refused("an unregistered grant type", form_request("/token", "", b"grant_type=magic")),
        refused("the token path in upper case with a disguised grant", form_request("/TOKEN", "", format!("grant_type=refresh_token%20&refresh_token={t}").as_bytes())),
        refused("the token path with a trailing dot and a form in UTF-16", form_request("/token.", "", b"grant_type=authorization_code&code=x&client_id=%FE%FF")),
        refused("Upgrade on the token path", b"GET /token HTTP/1.1\r\nHost: idp\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec()),
        Case { name: "a 64 KiB refresh body (at the cap)", request: form_request("/token", "", format!("grant_type=refresh_token&refresh_token={}", "c".repeat(65536 - 38)).as_bytes()), expect: Expect::Forwarded },
        Case { name: "header flood (150 headers)", request: form_request("/token", &headers_flood, format!("grant_type=refresh_token&refresh_token={t}-flood").as_bytes()), expect: Expect::Forwarded },
        Case { name: "absolute-form request target", request: form_request("http://idp/token", "", format!("grant_type=refresh_token&refresh_token={t}-abs").as_bytes()), expect: Expect::Forwarded },
        Case { name: "dot segments in the token path", request: form_request("/x/../token", "", format!("grant_type=refresh_token&refresh_token={t}-dots").as_bytes()), expect: Expect::Forwarded },
        Case { name: "HTTP/1.0 without Host (pass-through)", request: b"GET /.well-known/openid-configuration HTTP/1.0\r\n\r\n".to_vec(), expect: Expect::Forwarded },
        Case { name: "empty Basic credentials (':')", request: form_request("/token", &basic_raw(":"), format!("grant_type=refresh_token&refresh_token={t}-anon").as_bytes()), expect: Expect::Forwarded },
        refused("percent-encoded NUL inside the token", form_request("/token", "", format!("grant_type=refresh_token&refresh_token={t}%00nul").as_bytes())),
        Case {
            name: "charset in Content-Type",
            request: {
                let body = format!("grant_type=refresh_token&refresh_token={t}-cs");
                format!(
                    "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            },
            expect: Expect::Forwarded,
        },
    ]
}

/// Send raw bytes; the status of the first answer, or None if the connection closed or
/// nothing came within `wait`.
async fn send_raw(gate: &GateProcess, request: &[u8], wait: Duration) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(line) = text.lines().next().filter(|_| text.contains("\r\n")) {
                    let status = line.split_whitespace().nth(1)?.parse().ok()?;
                    if status != 100 {
                        return Some(status);
                    }
                    buf.clear();
                }
            }
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_hostile_case_gets_a_clear_answer_and_the_gate_keeps_serving() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(500))
        .max_replay_delay(ms(100));
    let gate = GateProcess::start(&options).await;
    let t = idp.mint();
    let all = cases(&t);
    assert!(all.len() >= 40, "{} cases", all.len());
    let mut failures = Vec::new();
    for case in &all {
        let calls_before = idp.calls().len();
        let status = send_raw(&gate, &case.request, Duration::from_secs(3)).await;
        let calls_after = idp.calls().len();
        let reached_idp = calls_after > calls_before;
        let ok = match case.expect {
            Expect::Refused(code) => status == Some(code) && !reached_idp,
            Expect::Forwarded => status.is_some_and(|s| s < 500),
            Expect::RejectedOrClosed => {
                !reached_idp && status.is_none_or(|s| (400..500).contains(&s))
            }
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {status:?}, reached the IdP: {reached_idp}",
                case.name, case.expect
            ));
        }
        // The gate keeps serving.
        let alive = client()
            .get(gate.url("/.well-known/openid-configuration"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(
            alive.ok(),
            Some(200),
            "the gate stopped serving after: {}",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The original token was never consumed by any of it.
    assert_eq!(refresh(&gate, &t, "k").await.0, 200);
    let log = gate.log();
    assert!(!log.contains(&t), "a raw token in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_are_answered_in_order() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let t = idp.mint();
    let mut both = form_request(
        "/token",
        &basic_raw("k:s"),
        format!("grant_type=refresh_token&refresh_token={t}").as_bytes(),
    );
    both.extend(form_request(
        "/token",
        &basic_raw("k:s"),
        format!("grant_type=refresh_token&refresh_token={t}").as_bytes(),
    ));
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    stream.write_all(&both).await.unwrap();
    let mut text = String::new();
    let mut chunk = [0u8; 8192];
    while text.matches("HTTP/1.1 200").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk))
            .await
            .expect("both answers within 3 s")
            .unwrap();
        assert!(n > 0, "closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert_eq!(idp.calls_for(&t), 1, "the second was the replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_bounded_by_timeouts() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .request_timeout(ms(500))
        .max_replay_delay(ms(100));
    let gate = GateProcess::start(&options).await;
    // A body trickled slower than request_timeout: 408, not a stuck task.
    let t = idp.mint();
    let body = format!("grant_type=refresh_token&refresh_token={t}");
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for byte in body.as_bytes().iter().take(10) {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("an answer to the slow body")
        .unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(idp.calls_for(&t), 0);
    // Many idle half-open connections do not stop the gate from serving others.
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        let _ = s.write_all(b"POST /token HTTP/1.1\r\nHost: idp\r\n").await;
        idle.push(s);
    }
    assert_eq!(refresh(&gate, &t, "k").await.0, 200);
    drop(idle);
    assert_eq!(gate.admin_get("/livez").await.0, 200);
}
