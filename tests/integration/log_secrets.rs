//! No secret reaches the log at any level: with `RUST_LOG=trace`, and with the level raised
//! to trace by a configuration reload. Every secret below is a distinct random marker; the
//! traffic covers a code grant and its token response, pass-through requests with
//! credentials, cookies and a secret query, refresh grants (first use and grace replay,
//! Basic and `client_secret_post`, DPoP) and Pingora's error line for a dead upstream.

use crate::common;

use common::*;
use std::net::SocketAddr;

/// Every secret sent or answered, by label.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// A new random marker (letters and digits: valid raw in forms, queries and headers).
    fn add(&mut self, label: &str) -> String {
        let value = format!(
            "Mk{label}{:016x}{:08x}",
            rand::random::<u64>(),
            rand::random::<u32>()
        );
        self.0.push((label.to_owned(), value.clone()));
        value
    }

    fn known(&mut self, label: &str, value: impl Into<String>) {
        self.0.push((label.to_owned(), value.into()));
    }

    fn assert_absent_from(&self, log: &str, which: &str) {
        assert!(self.0.len() >= 30, "{} secrets only", self.0.len());
        for (label, value) in &self.0 {
            assert!(
                !log.contains(value.as_str()),
                "the {which} log contains the secret {label} ({value}):\n{}",
                log.lines()
                    .filter(|l| l.contains(value.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

fn form(request: reqwest::RequestBuilder, body: String) -> reqwest::RequestBuilder {
    request
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
}

async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The traffic through a gate in front of the fake IdP.
async fn traffic(gate: &GateProcess, idp: &FakeIdp, secrets: &mut Secrets) {
    // An authorization_code grant, forwarded, whose token response carries tokens.
    let code = secrets.add("Code");
    let verifier = secrets.add("CodeVerifier");
    let code_client_secret = secrets.add("CodeClientSecret");
    let access = secrets.add("CodeAccessToken");
    let answer = serde_json::json!({
        "access_token": access,
        "id_token": secrets.add("CodeIdToken"),
        "refresh_token": secrets.add("CodeRefreshToken"),
        "token_type": "Bearer",
        "expires_in": 60,
    })
    .to_string();
    idp.set_code_answer(Some(answer));
    let (status, _, body) = send(form(
        client().post(gate.url("/token")),
        format!(
            "grant_type=authorization_code&code={code}&code_verifier={verifier}&client_id=k\
             &client_secret={code_client_secret}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb"
        ),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&access), "the code grant's answer: {body}");
    idp.set_code_answer(None);

    // A pass-through GET with a bearer token, a cookie and a secret query, answered with a
    // secret cookie.
    let set_cookie = secrets.add("SetCookie");
    idp.set_echo_cookie(Some(format!("sid={set_cookie}; Path=/; HttpOnly")));
    let (status, headers, body) = send(
        client()
            .get(gate.url(&format!(
                "/api/v1/pods?watch=1&code={}&access_token={}",
                secrets.add("QueryCode"),
                secrets.add("QueryAccessToken")
            )))
            .header("authorization", format!("Bearer {}", secrets.add("Bearer")))
            .header("cookie", format!("session={}", secrets.add("Cookie")))
            .header("dpop", secrets.add("PassthroughDpop")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echoed = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(echoed.contains(&set_cookie), "{headers:?}");
    idp.set_echo_cookie(None);

    // A pass-through form post with a password (a login page behind the gate).
    let (status, _, _) = send(form(
        client().post(gate.url("/login")),
        format!("username=alice&password={}", secrets.add("Password")),
    ))
    .await;
    assert_eq!(status, 200);

    // Refresh grants: first use with Basic and a DPoP proof, then a grace replay with
    // client_secret_post and a fresh proof of the same key (the same client: the same id,
    // secret and key); and the other way round.
    for (first_basic, label) in [(true, "A"), (false, "B")] {
        let token = idp.mint();
        let client_secret = secrets.add(&format!("ClientSecret{label}"));
        let basic_credentials = basic("k", &client_secret);
        secrets.known(
            &format!("BasicCredentials{label}"),
            basic_credentials.trim_start_matches("Basic "),
        );
        // A real proof each time (the gate verifies a replay's proof against the first's
        // key): the whole proof and its signature must not be logged.
        let dpop_key = common::jose::SigningKey::es256();
        for basic_now in [first_basic, !first_basic] {
            let proof = dpop_key.proof(&gate.url("/token"));
            let signature = proof.rsplit('.').next().unwrap().to_owned();
            secrets.known(&format!("Dpop{label}{basic_now}"), proof.as_str());
            secrets.known(&format!("DpopSignature{label}{basic_now}"), signature);
            let request = client().post(gate.url("/token")).header("dpop", proof);
            let request = if basic_now {
                form(
                    request.header("authorization", basic_credentials.as_str()),
                    refresh_body(&token),
                )
            } else {
                form(
                    request,
                    format!(
                        "{}&client_id=k&client_secret={client_secret}",
                        refresh_body(&token)
                    ),
                )
            };
            let (status, _, body) = send(request).await;
            assert_eq!(status, 200, "refresh {label} (basic: {basic_now}): {body}");
        }
        assert_eq!(
            idp.calls_for(&token),
            1,
            "the replay was answered by the gate"
        );
        let answer: serde_json::Value =
            serde_json::from_str(&idp.answer_for(&token).unwrap()).unwrap();
        for field in ["access_token", "refresh_token", "id_token"] {
            secrets.known(
                &format!("Idp{label}{field}"),
                answer[field].as_str().unwrap(),
            );
        }
    }
    for (n, token) in idp.all_tokens().into_iter().enumerate() {
        secrets.known(&format!("IdpToken{n}"), token);
    }
}

/// The traffic through a gate whose upstream refuses connections.
async fn dead_traffic(gate: &GateProcess, secrets: &mut Secrets) {
    let (status, _, _) = send(
        client()
            .get(gate.url(&format!(
                "/api/v1/secrets?code={}&state=s1",
                secrets.add("DeadQueryCode")
            )))
            .header(
                "authorization",
                format!("Bearer {}", secrets.add("DeadBearer")),
            )
            .header("cookie", format!("session={}", secrets.add("DeadCookie"))),
    )
    .await;
    assert!(status >= 500, "{status}");
    let client_secret = secrets.add("DeadClientSecret");
    let (status, _, _) = send(form(
        client()
            .post(gate.url("/token"))
            .header("authorization", basic("k", &client_secret)),
        refresh_body(&secrets.add("DeadRefreshToken")),
    ))
    .await;
    assert!(status >= 500, "{status}");
}

/// The level and target of each log line (plain or JSON).
fn records(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => Some((
                    v["level"].as_str()?.to_owned(),
                    v["target"].as_str()?.to_owned(),
                )),
                Err(_) => {
                    let mut words = line.split_whitespace().skip(1);
                    let level = words.next()?.to_owned();
                    let target = words.next()?.trim_end_matches(':').to_owned();
                    Some((level, target))
                }
            },
        )
        .filter(|(level, _)| {
            matches!(
                level.as_str(),
                "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR"
            )
        })
        .collect()
}

/// What every captured log must show, whatever else it holds.
fn assert_log_shape(log: &str, which: &str) {
    if std::env::var("SHOW_GATE_LOG").is_ok() {
        eprintln!("--- {which} log ---\n{log}");
    }
    let records = records(log);
    assert!(records.len() > 5, "the {which} log is nearly empty:\n{log}");
    assert!(
        records
            .iter()
            .any(|(level, target)| level == "TRACE" && target.starts_with("refresh_gate")),
        "no trace record of the gate's own targets in the {which} log:\n{log}"
    );
    assert!(
        records
            .iter()
            .any(|(_, target)| target.starts_with("pingora")),
        "no Pingora record at all in the {which} log:\n{log}"
    );
    let verbose_third_party: Vec<_> = records
        .iter()
        .filter(|(level, target)| {
            matches!(level.as_str(), "TRACE" | "DEBUG")
                && target != "audit"
                && !target.starts_with("refresh_gate")
        })
        .collect();
    assert!(
        verbose_third_party.is_empty(),
        "third-party debug/trace records in the {which} log: {verbose_third_party:?}"
    );
}

/// The audit lines are intact (plain: the OpenUnison line; JSON: the fields).
fn assert_audit_intact(log: &str, gate: &GateProcess, json: bool) {
    let token_url = gate.url("/token");
    if json {
        let events: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["target"] == "audit")
            .collect();
        let rotated: Vec<_> = events
            .iter()
            .filter(|v| v["event"] == "RefreshTokenRotated")
            .collect();
        assert_eq!(rotated.len(), 2, "{log}");
        let used: Vec<_> = events
            .iter()
            .filter(|v| v["event"] == "ExpiredRefreshTokenUsed")
            .collect();
        assert_eq!(used.len(), 2, "{log}");
        for event in used {
            let token = event["token"].as_str().unwrap();
            assert_eq!(token.len(), 12, "{event}");
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{event}");
            assert_eq!(event["token_url"], token_url.as_str(), "{event}");
            assert_eq!(event["client_id"], "k", "{event}");
            assert_eq!(event["client_ip"], "127.0.0.1", "{event}");
            assert_eq!(event["subject"], "alice", "{event}");
            assert_eq!(
                event["message"],
                format!(
                    "[ExpiredRefreshTokenUsed] - {token_url} - alice - Expired token used within grace period [127.0.0.1] - [{token}]"
                ),
                "{event}"
            );
        }
    } else {
        let prefix = format!(
            "[ExpiredRefreshTokenUsed] - {token_url} - alice - Expired token used within grace period [127.0.0.1] - ["
        );
        let used: Vec<&str> = log.lines().filter(|l| l.contains(&prefix)).collect();
        assert_eq!(used.len(), 2, "{log}");
        for line in used {
            let rest = &line[line.find(&prefix).unwrap() + prefix.len()..];
            let token = &rest[..12];
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
            assert!(rest[12..].starts_with(']'), "{line}");
            assert!(line.contains(&format!("token={token}")), "{line}");
            assert!(
                line.contains("client_id=\"k\"") || line.contains("client_id=k"),
                "{line}"
            );
            assert!(!line.contains(redact_mask()), "{line}");
        }
        let rotated = log
            .lines()
            .filter(|l| l.contains("[RefreshTokenRotated] - ") && l.contains(" DEBUG audit: "))
            .count();
        assert_eq!(rotated, 2, "{log}");
    }
    let mangled = log
        .lines()
        .filter(|l| l.contains("audit") && l.contains(redact_mask()))
        .collect::<Vec<_>>();
    assert!(mangled.is_empty(), "{mangled:?}");
}

fn redact_mask() -> &'static str {
    refresh_gate::observe::redact::MASK
}

/// Pingora's error line for the dead upstream is there; its request summary (the gate's own)
/// names the path and the request id, never the query.
fn assert_pingora_error_masked(log: &str) {
    let line = log
        .lines()
        .find(|l| l.contains("Fail to proxy") && l.contains("/api/v1/secrets"))
        .unwrap_or_else(|| panic!("no Pingora error line for the dead upstream:\n{log}"));
    assert!(!line.contains("code="), "{line}");
    assert!(
        !line.contains("state=s1"),
        "the query is not summarised: {line}"
    );
    assert!(line.contains("request id"), "{line}");
}

fn dead_upstream() -> (tokio::net::TcpSocket, SocketAddr) {
    // Bound on port 0 but not listening: connections are refused.
    FakeIdp::reserve()
}

enum Trace {
    /// `RUST_LOG=trace` at start-up.
    FromEnv,
    /// `log.level = "info"` at start-up, raised to `trace` by a reload (SIGHUP).
    ByReload,
}

async fn start(upstream: String, trace: &Trace, json: bool) -> GateProcess {
    let options = GateConfig::new(upstream)
        .log_format(if json {
            LogFormat::Json
        } else {
            LogFormat::Plain
        })
        .log_level("info");
    let env: &[(&str, &str)] = match trace {
        Trace::FromEnv => &[("RUST_LOG", "trace")],
        _ => &[],
    };
    let gate = GateProcess::start_with_env(&options, env).await;
    if let Trace::ByReload = trace {
        gate.reconfigure(|config| config.log.level = "trace".to_owned());
        gate.signal("HUP");
        gate.wait_for_log("configuration reloaded").await;
        gate.wait_for_log("log filter in force").await;
    }
    gate
}

async fn no_secret_in_the_log(trace: Trace, json: bool) {
    let idp = FakeIdp::start().await;
    let (_dead_socket, dead) = dead_upstream();
    let gate = start(idp.url(), &trace, json).await;
    let dead_gate = start(format!("http://{dead}"), &trace, json).await;
    let mut secrets = Secrets::default();
    traffic(&gate, &idp, &mut secrets).await;
    dead_traffic(&dead_gate, &mut secrets).await;

    let log = gate.log();
    let dead_log = dead_gate.log();
    secrets.assert_absent_from(&log, "gate");
    secrets.assert_absent_from(&dead_log, "dead-upstream gate");
    assert_log_shape(&log, "gate");
    assert_log_shape(&dead_log, "dead-upstream gate");
    assert_audit_intact(&log, &gate, json);
    assert_pingora_error_masked(&dead_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_log_trace_writes_no_secret_plain() {
    no_secret_in_the_log(Trace::FromEnv, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_log_trace_writes_no_secret_json() {
    no_secret_in_the_log(Trace::FromEnv, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_raised_by_a_reload_writes_no_secret_json() {
    no_secret_in_the_log(Trace::ByReload, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_raised_by_a_reload_writes_no_secret_plain() {
    no_secret_in_the_log(Trace::ByReload, false).await;
}
