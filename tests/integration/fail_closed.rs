//! Fail closed on the token path, through the real gate: refusals are counted, audited as
//! `TokenRequestRefused` (capped per source), a spent token inside another grant is
//! refused, every router reading of the token path is guarded, and `forward_grant_types`
//! decides which other grants pass.

use crate::common;

use common::*;

async fn post_form(gate: &GateProcess, path: &str, body: String) -> (u16, String) {
    let response = client()
        .post(gate.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic("k", "secret"))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A gate with grace 0 (and `token_encoding`, if given) and a token rotated through it: the
/// IdP, the gate, the spent token and the IdP's call count so far.
async fn spent_token(
    token_encoding: Option<TokenEncoding>,
) -> (FakeIdp, GateProcess, String, usize) {
    let idp = FakeIdp::start().await;
    let mut options = GateConfig::new(idp.url()).grace_period(secs(0));
    options.upstream.token_encoding = token_encoding;
    let gate = GateProcess::start(&options).await;
    let spent = idp.mint();
    assert_eq!(refresh(&gate, &spent, "k").await.0, 200);
    let calls = idp.calls().len();
    (idp, gate, spent, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_counted_and_audited_without_the_token() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).log_format(LogFormat::Json);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();

    let (status, body) = post_form(
        &gate,
        "/token",
        format!("grant_type=refresh_token%20&refresh_token={token}"),
    )
    .await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_request")
    );
    let (status, body) = post_form(&gate, "/token", "grant_type=magic".to_owned()).await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "unsupported_grant_type")
    );
    assert!(idp.calls().is_empty(), "nothing refused reached the IdP");

    let series = |s: &str| format!("refresh_gate_refresh_requests_total{{outcome=\"{s}\"}}");
    assert!(gate.metric(&series("invalid_request")).await >= Some(1.0));
    assert_eq!(gate.metric(&series("unsupported_grant")).await, Some(1.0));
    let by_reason = "refresh_gate_token_requests_refused_total{reason=\"disguised_grant_type\"}";
    assert_eq!(gate.metric(by_reason).await, Some(1.0));
    let line = gate
        .wait_for_log("\"reason\":\"unsupported_grant_type\"")
        .await;
    assert!(line.contains("TokenRequestRefused"), "{line}");
    let log = gate.wait_for_log("disguised_grant_type").await;
    assert!(!log.contains(&token), "the refused token is not logged");
    // A session id in a path parameter is not logged either.
    let (status, _) = post_form(
        &gate,
        "/token;jsessionid=SESSIONSECRET9",
        "grant_type=REFRESH_TOKEN".to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let log = loop {
        let log = gate.log();
        let lines = log.matches("\"reason\":\"disguised_grant_type\"").count();
        if lines >= 2 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        log.matches("\"reason\":\"disguised_grant_type\"").count() >= 2,
        "the refusal was logged"
    );
    assert!(!log.contains("SESSIONSECRET9"), "{log}");
    // The token itself was never consumed.
    assert_eq!(refresh(&gate, &token, "k").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_refusals_writes_a_capped_number_of_audit_lines() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).log_format(LogFormat::Json);
    let gate = GateProcess::start(&options).await;
    let sent = 40;
    for _ in 0..sent {
        let (status, _) = post_form(&gate, "/token", "grant_type=REFRESH_TOKEN".to_owned()).await;
        assert_eq!(status, 400);
    }
    let suppressed = gate
        .metric("refresh_gate_audit_suppressed_total{event=\"TokenRequestRefused\"}")
        .await
        .unwrap();
    // The suppressed count is final once every answer is in; the lines are written by the
    // log thread, so wait for the last one to show.
    let written = sent as f64 - suppressed;
    assert!(suppressed > 0.0, "the cap suppressed nothing");
    let expected = written as usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let lines = gate
            .log()
            .matches("\"event\":\"TokenRequestRefused\"")
            .count();
        if lines >= expected || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(lines, expected, "every line is either written or counted");
    // At most 5 a second from one source: 40 requests take well under 8 seconds here.
    assert!(lines <= 5 * 8, "{lines} lines");
    assert!(lines < sent, "{lines} lines for {sent} refusals");
    assert_eq!(
        gate.metric("refresh_gate_refresh_requests_total{outcome=\"invalid_request\"}")
            .await,
        Some(sent as f64),
        "every refusal is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spent_refresh_token_inside_a_token_exchange_is_refused() {
    let (idp, gate, spent, calls) = spent_token(None).await;
    let exchange = |subject: &str| {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={subject}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Arefresh_token"
        )
    };
    let (status, body) = post_form(&gate, "/token", exchange(&spent)).await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_request")
    );
    assert_eq!(
        idp.calls().len(),
        calls,
        "the spent token never reached the IdP"
    );
    gate.wait_for_log("spent_token").await;
    // A token the gate never rotated is forwarded untouched.
    let fresh = idp.mint();
    let (status, _) = post_form(&gate, "/token", exchange(&fresh)).await;
    assert_ne!(status, 400);
    assert_eq!(idp.calls().len(), calls + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_router_reading_of_the_token_path_is_guarded() {
    let (idp, gate, spent, calls) = spent_token(None).await;
    for path in [
        "/TOKEN",
        "/Token/",
        "/token.",
        "/token%20",
        "/token.json",
        "/token.a.b",
        "/token.x-y",
        "/%2574oken",
        "/token;x=1",
        "//token",
    ] {
        let (status, body) = post_form(
            &gate,
            path,
            format!("grant_type=refresh_token&refresh_token={spent}"),
        )
        .await;
        assert_eq!(
            (status, oauth_error(&body).as_str()),
            (400, "invalid_grant"),
            "{path}: the gate decides the grant"
        );
    }
    assert_eq!(idp.calls().len(), calls, "no replay reached the IdP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_grant_types_decides_which_other_grants_pass() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).forward_grant_types(["client_credentials"]);
    let gate = GateProcess::start(&options).await;
    let (status, _) = post_form(&gate, "/token", "grant_type=client_credentials".to_owned()).await;
    assert_ne!(status, 400);
    let (status, body) = post_form(
        &gate,
        "/token",
        "grant_type=authorization_code&code=x".to_owned(),
    )
    .await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "unsupported_grant_type")
    );
    assert_eq!(idp.calls().len(), 1);
    // Body-less requests on the token path (CORS preflight, a probe) still pass.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, gate.url("/token"))
        .send()
        .await
        .unwrap();
    assert_ne!(preflight.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn padding_cannot_push_a_spent_token_past_the_check() {
    let (idp, gate, spent, calls) = spent_token(None).await;
    let mut body =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange".to_owned();
    for n in 0..12 {
        body.push_str(&format!("&p{n}=padpadpadpadpad{n:02}"));
    }
    body.push_str(&format!("&subject_token={spent}"));
    let (status, answer) = post_form(&gate, "/token", body).await;
    assert_eq!(
        (status, oauth_error(&answer).as_str()),
        (400, "invalid_request")
    );
    assert_eq!(idp.calls().len(), calls);
    gate.wait_for_log("too_many_token_values").await;
}

/// A spelling of `token` that a base64 decoder reads as the same bytes.
fn base64_respelling(token: &str) -> String {
    format!("{token}=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_base64_tokens_every_spelling_of_a_spent_token_is_the_spent_token() {
    let (idp, gate, spent, calls) = spent_token(Some(TokenEncoding::Base64)).await;
    let (status, body) = refresh(&gate, &base64_respelling(&spent), "k").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(
        idp.calls().len(),
        calls,
        "the respelt token never reached the IdP"
    );

    // Opaque tokens (the default): another spelling is another token, for the IdP to judge.
    let (idp, gate, spent, calls) = spent_token(None).await;
    refresh(&gate, &base64_respelling(&spent), "k").await;
    assert_eq!(idp.calls().len(), calls + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_to_an_assertion_client_goes_only_to_the_same_assertion() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    let grant = |extra: &str| {
        format!("grant_type=refresh_token&refresh_token={token}&client_id=jwtclient{extra}")
    };
    let assertion = "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqd3RjbGllbnQifQ.c2ln";
    let (status, first) = send_form(&gate, grant(assertion)).await;
    assert_eq!(status, 200, "{first}");
    // Inside the window, without the assertion: another client.
    let (status, body) = send_form(&gate, grant("")).await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert!(!body.contains("access_token"));
    let (status, body) = send_form(&gate, grant(&assertion.replace("c2ln", "b3RoZXI"))).await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert_eq!(
        gate.metric("refresh_gate_refused_total{reason=\"client_mismatch\"}")
            .await,
        Some(2.0)
    );
}

/// POST a form without client authentication headers.
async fn send_form(gate: &GateProcess, body: String) -> (u16, String) {
    let response = client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
