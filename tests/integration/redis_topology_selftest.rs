//! The replicated-Redis harness itself (`tests/common/redis_topology.rs`), before any gate
//! relies on it: a Sentinel set promotes a replica within a few seconds of a SIGKILL and on
//! a graceful `SENTINEL FAILOVER`, keeping what was replicated; a cluster is created with
//! three shards, reshards keys and all, and fails over gracefully and by SIGKILL.

use crate::common;

use common::redis_topology::{query, role, RedisCluster, SentinelSet};
use std::time::{Duration, Instant};

#[test]
fn sentinel_promotes_a_replica_within_seconds_of_a_sigkill() {
    let set = SentinelSet::start();
    assert_eq!(set.sentinel_addrs().len(), 3);
    let primary = set.primary_addr();
    assert_eq!(role(&primary).as_deref(), Some("master"));
    let _: () = query(&primary, &["SET", "before-the-kill", "kept"]).unwrap();
    let acked: i64 = query(&primary, &["WAIT", "2", "1000"]).unwrap();
    assert_eq!(acked, 2, "both replicas acknowledge the write");

    let killed_at = Instant::now();
    let old = set.kill_primary();
    assert_eq!(old, primary);
    let new = set.wait_for_new_primary(&old, Duration::from_secs(10));
    let took = killed_at.elapsed();
    eprintln!("sentinel failover after SIGKILL took {took:?}: {old} -> {new}");
    assert_ne!(new, old);
    assert!(took < Duration::from_secs(6), "the failover took {took:?}");
    let kept: String = query(&new, &["GET", "before-the-kill"]).unwrap();
    assert_eq!(kept, "kept", "the acknowledged write survives the failover");
    let _: () = query(&new, &["SET", "after-the-kill", "1"]).unwrap();
    set.wait_until_replicas_synced();
    let replicas: Vec<String> = set
        .live_data_addrs()
        .into_iter()
        .filter(|a| *a != new)
        .collect();
    assert_eq!(replicas.len(), 1, "one replica is left");
    let copied: String = query(&replicas[0], &["GET", "after-the-kill"]).unwrap();
    assert_eq!(copied, "1", "the other replica follows the new primary");
}

#[test]
fn sentinel_fails_over_gracefully_on_request() {
    let set = SentinelSet::start();
    let started = Instant::now();
    let old = set.failover();
    let new = set.wait_for_new_primary(&old, Duration::from_secs(10));
    eprintln!(
        "graceful sentinel failover took {:?}: {old} -> {new}",
        started.elapsed()
    );
    assert_ne!(new, old);
    // The old primary, alive, is demoted to a replica of the new one.
    set.wait_until_replicas_synced();
    eprintln!("replicas in sync after {:?}", started.elapsed());
    assert_eq!(role(&old).as_deref(), Some("slave"));
    assert_eq!(set.live_data_addrs().len(), 3);
}

#[test]
fn cluster_starts_with_three_shards_and_spreads_keys() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.nodes().len(), 6);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{}", cluster.explain());
    let ranges = cluster.slot_ranges();
    let served: usize = ranges
        .iter()
        .flat_map(|(_, r)| r.iter())
        .map(|(a, b)| usize::from(*b) - usize::from(*a) + 1)
        .sum();
    assert_eq!(served, 16384);
    // Keys written on the node serving their slot spread over every primary.
    let nodes = cluster.primary_nodes();
    for n in 0..60 {
        let key = format!("selftest-{n}");
        let slot = cluster.slot_of(&key);
        let owner = nodes.iter().find(|p| p.serves(slot)).unwrap();
        let _: () = query(&owner.addr, &["SET", &key, "v"]).unwrap();
    }
    let counts = cluster.keys_per_primary();
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 60);
}

#[test]
fn cluster_reshards_and_fails_over_gracefully_and_by_sigkill() {
    let cluster = RedisCluster::start();
    let nodes = cluster.primary_nodes();
    for n in 0..300 {
        let key = format!("selftest-{n}");
        let slot = cluster.slot_of(&key);
        let owner = nodes.iter().find(|p| p.serves(slot)).unwrap();
        let _: () = query(&owner.addr, &["SET", &key, "v"]).unwrap();
    }
    let before = cluster.primary_nodes();

    // A reshard in a background thread moves 1000 slots and their keys.
    let started = Instant::now();
    let reshard = cluster.reshard_in_background(&before[0].id, &before[1].id, 1000);
    let output = reshard.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    cluster.wait_until_healthy(Duration::from_secs(20), "healthy after the reshard");
    eprintln!("reshard of 1000 slots took {:?}", started.elapsed());
    let after: Vec<_> = cluster.primary_nodes();
    let count = |id: &str| {
        after
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.slot_count())
            .unwrap()
    };
    assert_eq!(count(&before[0].id), before[0].slot_count() - 1000);
    assert_eq!(count(&before[1].id), before[1].slot_count() + 1000);
    let total: u64 = cluster.keys_per_primary().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 300, "the keys moved with their slots");

    // Graceful failover of shard 1.
    let started = Instant::now();
    let (old, new) = cluster.failover_primary(1);
    eprintln!(
        "graceful cluster failover took {:?}: {old} -> {new}",
        started.elapsed()
    );
    assert!(cluster.primaries().contains(&new));
    assert!(!cluster.primaries().contains(&old));
    assert_eq!(role(&old).as_deref(), Some("slave"));

    // SIGKILL of shard 2's primary.
    let started = Instant::now();
    let (old, new) = cluster.kill_primary(2);
    let took = started.elapsed();
    eprintln!("cluster failover after SIGKILL took {took:?}: {old} -> {new}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(cluster.primaries().contains(&new));
    assert_eq!(cluster.live_nodes().len(), 5);
    let total: u64 = cluster.keys_per_primary().iter().map(|(_, n)| n).sum();
    assert_eq!(total, 300, "the replicated keys survive the kill");
}

#[test]
fn cluster_with_a_whole_shard_down_keeps_the_other_shards_serving() {
    let cluster = RedisCluster::start();
    let nodes = cluster.primary_nodes();
    let dead = cluster.kill_shard(0);
    assert_eq!(cluster.live_nodes().len(), 4);
    assert!(!dead.is_empty());
    // A key on a live shard is still written; one on the dead shard has no owner.
    let live_owner = &nodes[1];
    let key = (0..)
        .map(|n| format!("k{n}"))
        .find(|k| live_owner.serves(cluster.slot_of(k)))
        .unwrap();
    let _: () = query(&live_owner.addr, &["SET", &key, "v"]).unwrap();
    let dead_key = (0..)
        .map(|n| format!("k{n}"))
        .find(|k| nodes[0].serves(cluster.slot_of(k)))
        .unwrap();
    let refused = query::<()>(&live_owner.addr, &["SET", &dead_key, "v"]);
    assert!(refused.is_err(), "a key of the dead shard is refused");
}
