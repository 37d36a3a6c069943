//! The replay delay histogram and `/grace-advice` after scripted replays with known delays,
//! through the real gate.

use crate::common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_with_known_delays_shape_the_histogram_and_the_advice() {
    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url())
        .grace_period(secs(5))
        .client("kubernetes", ClientOverrides::default());
    let gate = GateProcess::start(&options).await;
    let (status, body) = gate.admin_get("/grace-advice").await;
    assert_eq!(status, 200, "{body}");
    let before: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(before["clients"][0]["client_id"], "kubernetes");
    assert_eq!(before["clients"][0]["replays"], 0);
    assert_eq!(
        before["clients"][0]["recommended_grace_period"],
        serde_json::Value::Null
    );
    assert_eq!(before["period"], serde_json::Value::Null);

    let token = idp.mint();
    let (status, first) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200, "{first}");
    // The same client, from the same source, 0.3 s and 1.3 s after the first use.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, replay) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!((status, &replay), (200, &first));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, _) = refresh(&gate, &token, "kubernetes").await;
    assert_eq!(status, 200);
    // Another client: refused, counted in the histogram, not in the advice.
    let (status, _) = refresh(&gate, &token, "intruder").await;
    assert_eq!(status, 400);
    // A client without its own section: advised with the others.
    let other = idp.mint();
    assert_eq!(refresh(&gate, &other, "cli").await.0, 200);
    assert_eq!(refresh(&gate, &other, "cli").await.0, 200);

    let count =
        |outcome: &str| format!("refresh_gate_replay_delay_seconds_count{{outcome=\"{outcome}\"}}");
    assert_eq!(gate.metric(&count("grace_replay")).await, Some(3.0));
    assert_eq!(gate.metric(&count("refused")).await, Some(1.0));
    assert_eq!(gate.metric(&count("coalesced")).await, Some(0.0));
    assert_eq!(gate.metric(&count("observed")).await, Some(0.0));
    // The 0.3 s replay is at most 0.5 s; the 1.3 s one is not.
    let under = gate
        .metric("refresh_gate_replay_delay_seconds_bucket{outcome=\"grace_replay\",le=\"0.5\"}")
        .await
        .unwrap();
    assert!((1.0..=2.0).contains(&under), "{under}");
    let under_one = gate
        .metric("refresh_gate_replay_delay_seconds_bucket{outcome=\"grace_replay\",le=\"1\"}")
        .await
        .unwrap();
    assert_eq!(under_one, under, "nothing between 0.5 s and 1 s");

    let (status, body) = gate.admin_get("/grace-advice").await;
    assert_eq!(status, 200);
    let advice: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kubernetes = &advice["clients"][0];
    assert_eq!(kubernetes["client_id"], "kubernetes");
    assert_eq!(
        kubernetes["replays"], 2,
        "the intruder's replay is not advice: {body}"
    );
    let max = kubernetes["delay_seconds"]["max"].as_f64().unwrap();
    assert!((1.3..2.0).contains(&max), "{max}");
    let p50 = kubernetes["delay_seconds"]["p50"].as_f64().unwrap();
    assert!((0.3..=0.5).contains(&p50), "{p50}");
    assert_eq!(kubernetes["recommended_grace_period"], "2s", "{body}");
    let others = &advice["clients"][1];
    assert_eq!(others["client_id"], serde_json::Value::Null);
    assert_eq!(others["replays"], 1);
    assert_eq!(others["recommended_grace_period"], "1s", "the floor");
    assert!(advice["period"]["from"].is_string());
    assert!(advice["scope"].as_str().unwrap().contains("this replica"));
}
