//! Binding beyond the secret, and windows that close (issue 16), through the real gate:
//! a client that authenticated with a `private_key_jwt` assertion is replayed only with a
//! fresh assertion the gate verifies with the client's `assertion_jwks_file`; a DPoP-bound
//! refresh only with a fresh proof of the same key naming the token endpoint (`public_url`
//! behind an ingress); a revocation the IdP accepts closes the window (`revoked`); the
//! successor's use closes its parent's window after `min_replay_window` (`superseded`).

use crate::common;

use common::jose::{SigningKey, JWT_BEARER};
use common::*;
use std::time::{Duration, Instant};

/// POST a form to the token endpoint with extra headers; (status, body).
async fn post_token(gate: &GateProcess, body: String, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = client()
        .post(gate.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A refresh grant of `token` by `client_id` in the form, with `assertion` if any.
fn assertion_grant(token: &str, client_id: &str, assertion: Option<&str>) -> String {
    let mut body = format!("{}&client_id={client_id}", refresh_body(token));
    if let Some(jwt) = assertion {
        let kind: String = url_encode(JWT_BEARER);
        body.push_str(&format!(
            "&client_assertion_type={kind}&client_assertion={jwt}"
        ));
    }
    body
}

fn url_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A refresh grant of `token` by the public client `kubectl`, with a `DPoP` proof if any.
async fn dpop_refresh(gate: &GateProcess, token: &str, proof: Option<&str>) -> (u16, String) {
    let body = format!("{}&client_id=kubectl", refresh_body(token));
    match proof {
        Some(proof) => post_token(gate, body, &[("dpop", proof)]).await,
        None => post_token(gate, body, &[]).await,
    }
}

fn next_token(answer: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(answer).unwrap();
    value["refresh_token"].as_str().unwrap().to_owned()
}

fn assert_invalid_grant(answer: &(u16, String), what: &str) {
    assert_eq!(
        (answer.0, oauth_error(&answer.1).as_str()),
        (400, "invalid_grant"),
        "{what}: {}",
        answer.1
    );
}

async fn refused(gate: &GateProcess, reason: &str) -> f64 {
    gate.metric(&format!(
        "refresh_gate_refused_total{{reason=\"{reason}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

/// POST an RFC 7009 revocation of `token` through the gate to `/revoke`; the status.
async fn revoke_through_gate(gate: &GateProcess, token: &str) -> u16 {
    client()
        .post(gate.url("/revoke"))
        .header("authorization", basic("kubernetes", "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&token_type_hint=refresh_token"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A gate whose client `ci` has `key`'s public half as its `assertion_jwks_file`.
async fn gate_with_client_keys(
    idp: &FakeIdp,
    key: &SigningKey,
    dir: &std::path::Path,
) -> GateProcess {
    let jwks = dir.join("ci.jwks.json");
    std::fs::write(&jwks, key.jwks()).unwrap();
    let options = GateConfig::new(idp.url())
        .client("ci", ClientOverrides::default().assertion_jwks_file(&jwks));
    GateProcess::start(&options).await
}

// Client assertions (private_key_jwt).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_key_jwt_client_is_replayed_only_with_a_fresh_assertion_by_its_key() {
    let idp = FakeIdp::start().await;
    let key = SigningKey::es256();
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_with_client_keys(&idp, &key, dir.path()).await;
    // The audience is the token endpoint as the gate sees it: scheme, Host, path.
    let endpoint = gate.url("/token");
    let t0 = idp.mint();
    let captured = key.assertion("ci", &endpoint);
    let first = post_token(&gate, assertion_grant(&t0, "ci", Some(&captured)), &[]).await;
    assert_eq!(first.0, 200, "{}", first.1);

    // (a) The captured request, assertion and all: its jti is spent.
    let replayed = post_token(&gate, assertion_grant(&t0, "ci", Some(&captured)), &[]).await;
    assert_invalid_grant(&replayed, "the captured assertion was answered");
    // (b) Only the client id.
    let bare = post_token(&gate, assertion_grant(&t0, "ci", None), &[]).await;
    assert_invalid_grant(&bare, "a replay with only the client id was answered");
    // Another key's assertion, fresh and well-formed.
    let forged = SigningKey::es256().assertion("ci", &endpoint);
    let forged = post_token(&gate, assertion_grant(&t0, "ci", Some(&forged)), &[]).await;
    assert_invalid_grant(&forged, "another key's assertion was answered");
    // (c) A fresh assertion by the configured key: the same client, answered from the window.
    let fresh = key.assertion("ci", &endpoint);
    let replay = post_token(&gate, assertion_grant(&t0, "ci", Some(&fresh)), &[]).await;
    assert_eq!(replay.0, 200, "a fresh verified assertion: {}", replay.1);
    assert_eq!(replay.1, first.1, "the remembered answer");

    assert_eq!(idp.calls_for(&t0), 1, "the IdP saw one exchange");
    assert_eq!(refused(&gate, "client_mismatch").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_assertion_for_another_audience_is_not_the_clients_on_replay() {
    let idp = FakeIdp::start().await;
    let key = SigningKey::es256();
    let dir = tempfile::tempdir().unwrap();
    let gate = gate_with_client_keys(&idp, &key, dir.path()).await;
    let endpoint = gate.url("/token");
    let t0 = idp.mint();
    let first = key.assertion("ci", &endpoint);
    let first = post_token(&gate, assertion_grant(&t0, "ci", Some(&first)), &[]).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let elsewhere = key.assertion("ci", "https://elsewhere.example/token");
    let moved = post_token(&gate, assertion_grant(&t0, "ci", Some(&elsewhere)), &[]).await;
    assert_invalid_grant(&moved, "an assertion for another endpoint was answered");
    // Signed by the right key for the right endpoint, but naming another client.
    let other = key.assertion("other", &endpoint);
    let other = post_token(&gate, assertion_grant(&t0, "ci", Some(&other)), &[]).await;
    assert_invalid_grant(&other, "an assertion naming another client was answered");
    assert_eq!(idp.calls_for(&t0), 1);
    assert_eq!(refused(&gate, "client_mismatch").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_assertion_keys_an_assertion_client_is_never_replayed() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let key = SigningKey::es256();
    let endpoint = gate.url("/token");
    let t0 = idp.mint();
    let captured = key.assertion("ci", &endpoint);
    let first = post_token(&gate, assertion_grant(&t0, "ci", Some(&captured)), &[]).await;
    assert_eq!(first.0, 200, "{}", first.1);
    // The gate cannot verify any assertion of this client: a fresh one is refused...
    let fresh = key.assertion("ci", &endpoint);
    let fresh = post_token(&gate, assertion_grant(&t0, "ci", Some(&fresh)), &[]).await;
    assert_invalid_grant(&fresh, "an unverifiable fresh assertion was answered");
    // ...and so is the captured one (byte for byte the first request's).
    let replayed = post_token(&gate, assertion_grant(&t0, "ci", Some(&captured)), &[]).await;
    assert_invalid_grant(&replayed, "the captured assertion was answered");
    assert_eq!(idp.calls_for(&t0), 1);
    assert_eq!(refused(&gate, "client_mismatch").await, 2.0);
}

// DPoP (RFC 9449).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpop_bound_refresh_is_replayed_only_with_a_fresh_proof_of_the_same_key() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let key = SigningKey::es256();
    let endpoint = gate.url("/token");
    let t0 = idp.mint();
    let captured = key.proof(&endpoint);
    let first = dpop_refresh(&gate, &t0, Some(&captured)).await;
    assert_eq!(first.0, 200, "{}", first.1);

    let none = dpop_refresh(&gate, &t0, None).await;
    assert_invalid_grant(&none, "a replay without a proof was answered");
    let other = SigningKey::es256().proof(&endpoint);
    let other = dpop_refresh(&gate, &t0, Some(&other)).await;
    assert_invalid_grant(&other, "a replay with another key's proof was answered");
    let again = dpop_refresh(&gate, &t0, Some(&captured)).await;
    assert_invalid_grant(&again, "the first proof, replayed, was answered");
    let fresh = key.proof(&endpoint);
    let replay = dpop_refresh(&gate, &t0, Some(&fresh)).await;
    assert_eq!(replay.0, 200, "a fresh proof of the same key: {}", replay.1);
    assert_eq!(replay.1, first.1, "the remembered answer");

    assert_eq!(idp.calls_for(&t0), 1, "the IdP saw one exchange");
    assert_eq!(refused(&gate, "client_mismatch").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_an_ingress_proofs_must_name_the_public_url() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).public_url("https://login.example.com");
    let gate = GateProcess::start(&options).await;
    let key = SigningKey::es256();
    let public = "https://login.example.com/token";
    let t0 = idp.mint();
    let first = dpop_refresh(&gate, &t0, Some(&key.proof(public))).await;
    assert_eq!(first.0, 200, "{}", first.1);
    // The URL the gate itself listens on is not the one clients address.
    let internal = key.proof(&gate.url("/token"));
    let internal = dpop_refresh(&gate, &t0, Some(&internal)).await;
    assert_invalid_grant(&internal, "a proof naming the internal URL was answered");
    let replay = dpop_refresh(&gate, &t0, Some(&key.proof(public))).await;
    assert_eq!(replay.0, 200, "a proof naming the public URL: {}", replay.1);
    assert_eq!(replay.1, first.1);
    assert_eq!(idp.calls_for(&t0), 1);
    assert_eq!(refused(&gate, "client_mismatch").await, 1.0);
}

// Revocation (RFC 7009) through the gate.

async fn gate_with_revocation(idp: &FakeIdp) -> GateProcess {
    let options = GateConfig::new(idp.url()).revocation_path("/revoke");
    GateProcess::start(&options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_the_idp_accepts_closes_the_revoked_tokens_window() {
    let idp = FakeIdp::start().await;
    let gate = gate_with_revocation(&idp).await;
    let t0 = idp.mint();
    let (status, body) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(revoke_through_gate(&gate, &t0).await, 200);
    assert_eq!(idp.revocations().len(), 1, "the revocation reached the IdP");
    let replay = refresh(&gate, &t0, "kubernetes").await;
    assert_invalid_grant(&replay, "a revoked token was replayed inside its window");
    assert_eq!(refused(&gate, "revoked").await, 1.0);
    assert_eq!(idp.calls_for(&t0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_the_current_token_closes_its_parents_window() {
    let idp = FakeIdp::start().await;
    let gate = gate_with_revocation(&idp).await;
    let t0 = idp.mint();
    let (status, body) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(status, 200, "{body}");
    // The client logs out: it revokes the token it holds now, t0's successor.
    let t1 = next_token(&body);
    assert_eq!(revoke_through_gate(&gate, &t1).await, 200);
    let replay = refresh(&gate, &t0, "kubernetes").await;
    assert_invalid_grant(&replay, "the spent parent of a revoked token was replayed");
    assert_eq!(refused(&gate, "revoked").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_the_idp_refuses_closes_nothing() {
    let idp = FakeIdp::start().await;
    let gate = gate_with_revocation(&idp).await;
    let t0 = idp.mint();
    let (status, first) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    idp.set_revoke_status(400);
    assert_eq!(revoke_through_gate(&gate, &t0).await, 400);
    let (status, replay) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(
        status, 200,
        "a refused revocation closed the window: {replay}"
    );
    assert_eq!(replay, first);
    assert_eq!(refused(&gate, "revoked").await, 0.0);
    // The same revocation, accepted this time, closes it.
    idp.set_revoke_status(200);
    assert_eq!(revoke_through_gate(&gate, &t0).await, 200);
    let replay = refresh(&gate, &t0, "kubernetes").await;
    assert_invalid_grant(&replay, "an accepted revocation left the window open");
    assert_eq!(refused(&gate, "revoked").await, 1.0);
}

// The successor's use closes its parent's window (close_on_successor_use, default on).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_successors_use_supersedes_the_parent_after_the_minimum_window() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(5))
        .min_replay_window(ms(200));
    let gate = GateProcess::start(&options).await;
    let t0 = idp.mint();
    let (status, body) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(status, 200, "{body}");
    let t1 = next_token(&body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, next) = refresh(&gate, &t1, "kubernetes").await;
    assert_eq!(status, 200, "the successor: {next}");
    // Still inside t0's grace period, but its successor is in use.
    let replay = refresh(&gate, &t0, "kubernetes").await;
    assert_invalid_grant(&replay, "a superseded parent was replayed");
    assert_eq!(refused(&gate, "superseded").await, 1.0);
    assert_eq!(idp.calls_for(&t0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_straggler_inside_the_minimum_window_still_gets_the_parents_answer() {
    let idp = FakeIdp::start().await;
    let min_window = ms(1500);
    let options = GateConfig::new(idp.url())
        .grace_period(secs(5))
        .min_replay_window(min_window);
    let gate = GateProcess::start(&options).await;
    let t0 = idp.mint();
    let (status, first) = refresh(&gate, &t0, "kubernetes").await;
    let rotated = Instant::now();
    assert_eq!(status, 200, "{first}");
    // A fast process presents the successor at once...
    let (status, next) = refresh(&gate, &next_token(&first), "kubernetes").await;
    assert_eq!(status, 200, "the successor: {next}");
    // ...while a slower one still presents the parent: answered, as before.
    let (status, straggler) = refresh(&gate, &t0, "kubernetes").await;
    assert!(
        rotated.elapsed() < min_window,
        "the straggler came too late to test anything"
    );
    assert_eq!(status, 200, "a straggler was refused: {straggler}");
    assert_eq!(straggler, first, "the remembered answer");
    // Past the minimum window (still inside the grace period) the parent is superseded.
    tokio::time::sleep((min_window + ms(300)).saturating_sub(rotated.elapsed())).await;
    let late = refresh(&gate, &t0, "kubernetes").await;
    assert_invalid_grant(&late, "the parent outlived its minimum window");
    assert_eq!(refused(&gate, "superseded").await, 1.0);
    assert_eq!(idp.calls_for(&t0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_superseded_replay_never_revokes_the_family() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(5))
        .min_replay_window(ms(200))
        .on_replay(OnReplay::RevokeFamily)
        .revocation_path("/revoke");
    let gate = GateProcess::start(&options).await;
    let t0 = idp.mint();
    let (_, body) = refresh(&gate, &t0, "kubernetes").await;
    let t1 = next_token(&body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = refresh(&gate, &t1, "kubernetes").await;
    assert_eq!(status, 200, "the successor: {body}");
    let t2 = next_token(&body);
    let replay = refresh(&gate, &t0, "kubernetes").await;
    assert_invalid_grant(&replay, "a superseded parent was replayed");
    assert_eq!(refused(&gate, "superseded").await, 1.0);
    // The holder of the newest token carries on; nothing was revoked at the IdP.
    let (status, body) = refresh(&gate, &t2, "kubernetes").await;
    assert_eq!(status, 200, "the family was revoked: {body}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(idp.revocations().is_empty(), "{:?}", idp.revocations());
    assert_eq!(refused(&gate, "family_revoked").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_close_on_successor_use_off_the_parent_stays_replayable() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(5))
        .min_replay_window(ms(200))
        .close_on_successor_use(false);
    let gate = GateProcess::start(&options).await;
    let t0 = idp.mint();
    let (_, first) = refresh(&gate, &t0, "kubernetes").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, next) = refresh(&gate, &next_token(&first), "kubernetes").await;
    assert_eq!(status, 200, "the successor: {next}");
    let (status, replay) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay, first);
    assert_eq!(refused(&gate, "superseded").await, 0.0);
}

/// A first use whose assertion the gate cannot verify (no keys yet) spends its `jti` once it
/// rotates, so a captured copy of the request is refused even after keys arrive on reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_captured_assertion_stays_spent_when_the_clients_keys_arrive_on_reload() {
    let idp = FakeIdp::start().await;
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let key = SigningKey::es256();
    let endpoint = gate.url("/token");
    let t0 = idp.mint();
    let captured = key.assertion("ci", &endpoint);
    let first = post_token(&gate, assertion_grant(&t0, "ci", Some(&captured)), &[]).await;
    assert_eq!(first.0, 200, "{}", first.1);
    // Inside t0's window the operator adds the client's keys (re-read on reload).
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("ci.jwks.json");
    std::fs::write(&jwks, key.jwks()).unwrap();
    gate.reconfigure(|config| {
        config.clients.insert(
            "ci".to_owned(),
            ClientOverrides::default().assertion_jwks_file(&jwks),
        );
    });
    gate.signal("HUP");
    gate.wait_for_log("configuration reloaded").await;
    // The first request, captured: its assertion now verifies, but it was used already.
    let replayed = post_token(&gate, assertion_grant(&t0, "ci", Some(&captured)), &[]).await;
    assert_invalid_grant(
        &replayed,
        "the captured assertion was answered after the reload",
    );
    // A fresh one by the client's key is the client.
    let fresh = key.assertion("ci", &endpoint);
    let replay = post_token(&gate, assertion_grant(&t0, "ci", Some(&fresh)), &[]).await;
    assert_eq!(replay.0, 200, "a fresh verified assertion: {}", replay.1);
    assert_eq!(replay.1, first.1);
    assert_eq!(idp.calls_for(&t0), 1);
}
