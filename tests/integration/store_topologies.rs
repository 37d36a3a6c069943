//! The Redis store on Sentinel and on Cluster, driven directly by store instances (the
//! replicas of the gate) against real deployments: one claim and every waiter woken through
//! the token's own shard, rotations acknowledged by replicas (and a miss reported, never an
//! error), and a rotation the new primary lacks after a failover written again from the
//! journal of the replica that made it.

use crate::common;
use crate::store_redis::{
    fingerprint, one_claim_and_waiters_everywhere, present, rotated_into, store_on,
};

use common::redis_server::RedisServer;
use common::redis_topology::{query, RedisCluster, SentinelSet};
use refresh_gate::policy::{Policy, Rules};
use refresh_gate::seal::fingerprint::TokenFingerprint;
use refresh_gate::store::{Presented, RedisStore, RedisTopology, Replication, TokenStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sentinel_topology(set: &SentinelSet) -> RedisTopology {
    RedisTopology::Sentinel {
        sentinels: set.sentinel_addrs(),
        master: set.master_name().to_owned(),
        password: None,
    }
}

/// Wait until `check` holds for every store, or fail after `limit`.
async fn until(
    stores: &[Arc<RedisStore>],
    limit: Duration,
    what: &str,
    check: impl Fn(&RedisStore) -> bool,
) {
    let started = Instant::now();
    while !stores.iter().all(|store| check(store)) {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `store` answers, or fail after `limit` saying `what`.
async fn answering(store: &RedisStore, limit: Duration, what: &str) {
    let started = Instant::now();
    while store.ping().await.is_err() {
        assert!(started.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Present `fp` as the usual client once the store takes presentations (it refuses them
/// while it has no primary, and claims just after a followed failover).
async fn present_when_ready(
    store: &RedisStore,
    fp: &TokenFingerprint,
    policy: &Policy,
) -> Presented {
    let (client, source) = (crate::store_redis::client(), crate::store_redis::source());
    let who = refresh_gate::policy::Presenter {
        client: &client,
        source,
    };
    let started = Instant::now();
    loop {
        match store
            .present(fp, &who, policy, crate::store_redis::NOW)
            .await
        {
            Ok(presented) => return presented,
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(5), "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A store on the Sentinels at `sentinels` (fakes, here), monitoring `gate-primary`.
fn on_sentinels(sentinels: Vec<String>) -> Arc<RedisStore> {
    store_on(
        RedisTopology::Sentinel {
            sentinels,
            master: "gate-primary".into(),
            password: None,
        },
        0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_one_token_has_one_claim_and_its_shard_wakes_every_waiter() {
    let cluster = RedisCluster::start();
    let stores: Vec<_> = (0..3)
        .map(|_| {
            store_on(
                RedisTopology::Cluster {
                    nodes: cluster.nodes(),
                },
                1,
            )
        })
        .collect();
    until(
        &stores,
        Duration::from_secs(10),
        "the cluster is reached and mapped",
        |store| store.health().available,
    )
    .await;
    // Waiters are woken by the sharded message within the race's 5 s (the claim would only
    // expire after 10 s), and the rotation is acknowledged by the shard's replica.
    let replication = one_claim_and_waiters_everywhere(&stores, "rt-cluster-race").await;
    assert!(
        matches!(replication, Replication::Acknowledged { replicas } if replicas >= 1),
        "{replication:?}"
    );
    // Once every waiter is gone, no replica keeps the token's sharded subscription.
    let (_, fp) = fingerprint("rt-cluster-race");
    let channel = format!("rg:{{{}}}:exchange", fp.to_hex());
    let started = Instant::now();
    loop {
        let subscribed: u64 = cluster
            .primaries()
            .iter()
            .map(|node| {
                let reply: Vec<redis::Value> =
                    query(node, &["PUBSUB", "SHARDNUMSUB", &channel]).unwrap();
                match reply.get(1) {
                    Some(redis::Value::Int(n)) => *n as u64,
                    _ => 0,
                }
            })
            .sum();
        if subscribed == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{subscribed} subscriptions left on {channel}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sentinel_one_token_has_one_claim_and_its_rotation_is_acknowledged() {
    let set = SentinelSet::start();
    let stores: Vec<_> = (0..3)
        .map(|_| store_on(sentinel_topology(&set), 1))
        .collect();
    for store in &stores {
        answering(store, Duration::from_secs(10), "no primary found").await;
    }
    let replication = one_claim_and_waiters_everywhere(&stores, "rt-sentinel-race").await;
    assert!(
        matches!(replication, Replication::Acknowledged { replicas } if replicas >= 1),
        "{replication:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_no_replica_gives_is_a_reported_miss_and_the_rotation_stands() {
    // A single server with no replica, asked for one: the rotation is written, the client
    // would get its token, and the miss says why.
    let redis = RedisServer::start();
    let store = store_on(RedisTopology::Single { url: redis.url() }, 1);
    let policy = Policy::uniform(Rules::default());
    let (token, fp) = fingerprint("rt-no-replica");
    assert!(matches!(
        present(&store, &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    let started = Instant::now();
    let replication = store
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    assert_eq!(
        replication,
        Replication::Missed {
            wanted: 1,
            replicas: 0,
            reason: "timeout"
        }
    );
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "WAIT waited its wait_timeout"
    );
    assert!(
        matches!(
            present(&store, &fp, &policy).await,
            Presented::Replay { .. }
        ),
        "the tombstone and the answer were written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_the_new_primary_lacks_is_written_again_from_the_journal() {
    let set = SentinelSet::start();
    let maker = store_on(sentinel_topology(&set), 1);
    let other = store_on(sentinel_topology(&set), 1);
    for store in [&maker, &other] {
        answering(store, Duration::from_secs(10), "no primary found").await;
    }
    let policy = Policy::uniform(Rules {
        grace_period: Duration::from_secs(60),
        ..Rules::default()
    });
    let (token, fp) = fingerprint("rt-journal");
    assert!(matches!(
        present(&maker, &fp, &policy).await,
        Presented::Claimed { .. }
    ));
    maker
        .complete(&fp, rotated_into(&token, fp, None), &policy)
        .await
        .unwrap();
    // The write is lost as a failover loses it: gone from the primary and its replicas.
    let primary = set.primary_addr();
    let state = format!("rg:{{{}}}:state", fp.to_hex());
    let answer = format!("rg:{{{}}}:answer", fp.to_hex());
    let deleted: i64 = query(&primary, &["DEL", &state, &answer]).unwrap();
    assert_eq!(deleted, 2);
    set.wait_until_replicas_synced();
    let old = set.failover();
    let new = set.wait_for_new_primary(&old, Duration::from_secs(15));
    until(
        std::slice::from_ref(&maker),
        Duration::from_secs(10),
        "the maker restores its rotation on the new primary",
        |store| store.health().restored >= 1,
    )
    .await;
    let exists: i64 = query(&new, &["EXISTS", &state, &answer]).unwrap();
    assert_eq!(exists, 2, "tombstone and answer on {new}");
    // Any replica now sees the token as rotated: a replay inside the window, not a claim.
    until(
        std::slice::from_ref(&other),
        Duration::from_secs(10),
        "the other replica follows",
        |store| store.health().failovers >= 1,
    )
    .await;
    // Claims right after a followed failover are fenced off (503) while every replica
    // writes back what the new primary lost; this is a replay, answered at once.
    let presented = present_when_ready(&other, &fp, &policy).await;
    match presented {
        Presented::Replay { answer, .. } => {
            assert_eq!(answer.open(&token).unwrap(), crate::store_redis::answer());
        }
        other => panic!("not a replay: {other:?}"),
    }
}

/// Sentinels that each name `primaries[i]` (`host:port`), the first one stale.
async fn sentinels_naming(primaries: &[std::net::SocketAddr]) -> Vec<String> {
    let mut sentinels = Vec::new();
    for primary in primaries {
        sentinels
            .push(common::fake_sentinel::naming(&primary.ip().to_string(), primary.port()).await);
    }
    sentinels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sentinel_naming_a_dead_primary_is_outvoted() {
    let live = RedisServer::start();
    let dead = common::gate::free_port();
    let sentinels = sentinels_naming(&[dead, live.addr, live.addr]).await;
    let store = on_sentinels(sentinels);
    answering(
        &store,
        Duration::from_secs(5),
        "two of three Sentinels name a live master",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_sentinel_naming_a_live_old_primary_cannot_split_the_gates() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let sentinels = sentinels_naming(&[old.addr, new.addr, new.addr]).await;
    let store = on_sentinels(sentinels);
    let policy = Policy::uniform(Rules::default());
    let (_, fp) = fingerprint("rt-majority");
    let presented = present_when_ready(&store, &fp, &policy).await;
    assert!(
        matches!(presented, Presented::Claimed { .. }),
        "{presented:?}"
    );
    let claim = format!("rg:{{{}}}:claim", fp.to_hex());
    let on_new: i64 = query(&new.addr.to_string(), &["EXISTS", &claim]).unwrap();
    let on_old: i64 = query(&old.addr.to_string(), &["EXISTS", &claim]).unwrap();
    assert_eq!(
        (on_new, on_old),
        (1, 0),
        "the majority's primary took the claim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_no_primary_is_taken() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let dead = common::gate::free_port();
    let sentinels = sentinels_naming(&[first.addr, second.addr, dead]).await;
    let store = on_sentinels(sentinels);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        store.ping().await.is_err(),
        "three Sentinels, three answers: no majority"
    );
    assert!(!store.health().available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn just_after_a_failover_no_token_is_claimed_but_replays_are_answered_and_nothing_stays_held()
{
    let set = SentinelSet::start();
    let store = store_on(sentinel_topology(&set), 1);
    answering(&store, Duration::from_secs(10), "no primary found").await;
    let policy = Policy::uniform(Rules {
        grace_period: Duration::from_secs(60),
        ..Rules::default()
    });
    let (token, rotated) = fingerprint("rt-fence-rotated");
    assert!(matches!(
        present(&store, &rotated, &policy).await,
        Presented::Claimed { .. }
    ));
    store
        .complete(&rotated, rotated_into(&token, rotated, None), &policy)
        .await
        .unwrap();
    set.wait_until_replicas_synced();
    set.failover();
    // Present as soon as the store has followed (the fence runs from that moment).
    let started = Instant::now();
    while store.health().failovers == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the store never followed the failover"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Within the fence: an unknown token is not claimed (it may be a rotation another
    // replica is still writing back), a rotated one is replayed.
    let (_, unknown) = fingerprint("rt-fence-unknown");
    let (client, source) = (crate::store_redis::client(), crate::store_redis::source());
    let who = refresh_gate::policy::Presenter {
        client: &client,
        source,
    };
    let fenced = store
        .present(&unknown, &who, &policy, crate::store_redis::NOW)
        .await;
    assert!(fenced.is_err(), "claimed inside the fence: {fenced:?}");
    let replayed = store
        .present(&rotated, &who, &policy, crate::store_redis::NOW)
        .await;
    assert!(
        matches!(replayed, Ok(Presented::Replay { .. })),
        "a replay inside the fence: {replayed:?}"
    );
    // After it, the refused presentation left nothing held: the token is claimed, not waited for.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(matches!(
        present_when_ready(&store, &unknown, &policy).await,
        Presented::Claimed { .. }
    ));
}
