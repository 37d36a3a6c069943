//! Reuse detection and binding through the real gate: token families and their
//! revocation, source binding behind trusted proxies, per-client policy.

use crate::common;

use common::*;
use std::time::Duration;

async fn refresh_from(
    gate: &GateProcess,
    token: &str,
    client_id: &str,
    xff: &str,
) -> (u16, String) {
    refresh_with(gate, token, client_id, &[("x-forwarded-for", xff)]).await
}

fn next_token(answer: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(answer).unwrap();
    value["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_family_refuses_the_legitimate_holders_next_refresh_and_revokes_at_the_idp() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(ms(300))
        .on_replay(OnReplay::RevokeFamily)
        .revocation_path("/revoke");
    let gate = GateProcess::start(&options).await;
    let t0 = idp.mint();
    let (_, first) = refresh(&gate, &t0, "kubernetes").await;
    let t1 = next_token(&first);
    // An attacker replays the spent t0 after the window.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = refresh(&gate, &t0, "kubernetes").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    // The legitimate holder's next refresh is refused by the gate, without an exchange.
    let (status, body) = refresh(&gate, &t1, "kubernetes").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant"),
        "{body}"
    );
    assert!(body.contains("family revoked"), "{body}");
    assert_eq!(
        idp.calls_for(&t1),
        0,
        "the revoked family's token reached the IdP"
    );
    // The gate revoked the family at the IdP with t1 and the client's own credentials.
    let mut revoked = Vec::new();
    for _ in 0..50 {
        revoked = idp.revocations();
        if revoked
            .iter()
            .any(|r| r.refresh_token.as_deref() == Some(t1.as_str()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let call = revoked
        .iter()
        .find(|r| r.refresh_token.as_deref() == Some(t1.as_str()))
        .expect("t1 revoked at the IdP");
    assert!(call
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && *v == basic("kubernetes", "secret")));
    let log = gate.log();
    assert!(log.contains("RefreshTokenFamilyRevoked"), "{log}");
    assert!(log.contains("family_revoked"));
    assert!(log.contains("RefreshTokenRevokedAtIdp"));
    assert_eq!(
        gate.metric("refresh_gate_refused_total{reason=\"family_revoked\"}")
            .await,
        Some(1.0)
    );
    for token in [&t0, &t1] {
        assert!(!log.contains(token.as_str()), "a raw token in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuse_is_the_default_and_keeps_the_legitimate_session() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(ms(300))
        .revocation_path("/revoke");
    let gate = GateProcess::start(&options).await;
    let t0 = idp.mint();
    let (_, first) = refresh(&gate, &t0, "kubernetes").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(refresh(&gate, &t0, "kubernetes").await.0, 400);
    assert_eq!(
        refresh(&gate, &next_token(&first), "kubernetes").await.0,
        200
    );
    assert!(idp.revocations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_from_another_source_is_refused_behind_a_trusted_proxy() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .trusted_proxies(["127.0.0.1/32"])
        .bind_source(BindSource::Ip);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    let (status, first) = refresh_from(&gate, &token, "k", "198.51.100.7").await;
    assert_eq!(status, 200);
    // A forged left-most entry does not matter: the proxy appended the real client.
    let (status, replay) = refresh_from(&gate, &token, "k", "6.6.6.6, 198.51.100.7").await;
    assert_eq!((status, replay.as_str()), (200, first.as_str()));
    let (status, body) = refresh_from(&gate, &token, "k", "198.51.100.8").await;
    assert_eq!(
        (status, oauth_error(&body).as_str()),
        (400, "invalid_grant")
    );
    assert!(body.contains("another source"), "{body}");
    let log = gate.log();
    let line = log
        .lines()
        .find(|l| l.contains("source_mismatch"))
        .expect("audited");
    assert!(
        line.contains("198.51.100.8") && line.contains("198.51.100.7"),
        "{line}"
    );
    assert_eq!(idp.calls_for(&token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subnet_binding_with_ipv6_clients() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .trusted_proxies(["127.0.0.1"])
        .bind_source(BindSource::Subnet)
        .subnet_ipv6_prefix(64);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(
        refresh_from(&gate, &token, "k", "2001:db8:1:2::10").await.0,
        200
    );
    assert_eq!(
        refresh_from(&gate, &token, "k", "2001:db8:1:2::99").await.0,
        200,
        "same /64"
    );
    let (status, _) = refresh_from(&gate, &token, "k", "2001:db8:1:3::10").await;
    assert_eq!(status, 400, "another /64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_headers_from_untrusted_peers_are_ignored() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).bind_source(BindSource::Ip);
    let gate = GateProcess::start(&options).await;
    let token = idp.mint();
    assert_eq!(
        refresh_from(&gate, &token, "k", "198.51.100.7").await.0,
        200
    );
    // The peer is not a trusted proxy: a spoofed header changes nothing either way.
    assert_eq!(
        refresh_from(&gate, &token, "k", "203.0.113.66").await.0,
        200
    );
    let log = gate.log();
    assert!(
        !log.contains("203.0.113.66"),
        "a spoofed address reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_client_policy_overrides_the_defaults() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(ms(200))
        .client(
            "k9s",
            ClientOverrides {
                grace_period: Some(secs(3)),
                ..Default::default()
            },
        )
        .client(
            "strict",
            ClientOverrides {
                max_reuses: Some(0),
                ..Default::default()
            },
        );
    let gate = GateProcess::start(&options).await;
    let slow = idp.mint();
    let fast = idp.mint();
    let strict = idp.mint();
    assert_eq!(refresh(&gate, &slow, "k9s").await.0, 200);
    assert_eq!(refresh(&gate, &fast, "kubectl").await.0, 200);
    assert_eq!(refresh(&gate, &strict, "strict").await.0, 200);
    assert_eq!(
        refresh(&gate, &strict, "strict").await.0,
        400,
        "no reuse for this client"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        refresh(&gate, &slow, "k9s").await.0,
        200,
        "k9s has a 3 s window"
    );
    assert_eq!(
        refresh(&gate, &fast, "kubectl").await.0,
        400,
        "the default window passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_rotating_idp_is_counted() {
    let idp = FakeIdp::start().await;
    idp.set_mode(IdpMode::NoRotation);
    let gate = GateProcess::start(&GateConfig::new(idp.url())).await;
    let token = idp.mint();
    refresh(&gate, &token, "k").await;
    refresh(&gate, &token, "k").await;
    assert_eq!(
        gate.metric("refresh_gate_upstream_not_rotating_total")
            .await,
        Some(2.0)
    );
}
