//! Redis Cluster: commands go through the `redis` crate's cluster client, which follows
//! `MOVED`, `ASK`, `TRYAGAIN` and topology changes. Beside it, a watcher reads the slot map
//! every second: it counts topology changes and failovers (a former replica now serving
//! slots), pings every primary (a shard whose primary does not answer is down), and tells
//! the acknowledgements which primary owns a slot. Waiters subscribe to their token's own
//! sharded channel (`SSUBSCRIBE`), which lives on the token's shard only; the client moves
//! the subscription when a reshard moves the slot.

use super::node::{host_port, NodeAccess};
use super::pool::NodePool;
use crate::seal::fingerprint::{FingerprintHashing, TokenFingerprint};
use crate::store::redis::waiters::Waiters;
use arc_swap::ArcSwapOption;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, RedisResult, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// How often the watcher reads the slot map and pings the primaries.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// One range of slots and the nodes serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store::redis) struct SlotRange {
    start: u16,
    end: u16,
    primary: String,
    replicas: Vec<String>,
}

/// The cluster's slot map as `CLUSTER SLOTS` reports it, sorted by slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(in crate::store::redis) struct SlotMap(Vec<SlotRange>);

impl SlotMap {
    /// Parse a `CLUSTER SLOTS` reply.
    pub(in crate::store::redis) fn parse(reply: &Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(parts) = range else {
                return None;
            };
            let start = u16::try_from(integer(parts.first()?)?).ok()?;
            let end = u16::try_from(integer(parts.get(1)?)?).ok()?;
            let mut nodes = parts[2..].iter().filter_map(node_address);
            let primary = nodes.next()?;
            map.push(SlotRange {
                start,
                end,
                primary,
                replicas: nodes.collect(),
            });
        }
        map.sort_by_key(|range| range.start);
        Some(SlotMap(map))
    }

    /// The primary serving `slot`.
    pub(in crate::store::redis) fn primary_for(&self, slot: u16) -> Option<&str> {
        self.0
            .iter()
            .find(|range| range.start <= slot && slot <= range.end)
            .map(|range| range.primary.as_str())
    }

    /// Every primary serving some slot.
    fn primaries(&self) -> BTreeSet<&str> {
        self.0.iter().map(|range| range.primary.as_str()).collect()
    }

    /// Whether every slot has a primary.
    fn covers_every_slot(&self) -> bool {
        let mut next = 0u32;
        for range in &self.0 {
            if u32::from(range.start) > next {
                return false;
            }
            next = next.max(u32::from(range.end) + 1);
        }
        next >= 16384
    }

    /// Primaries of `self` that were replicas in `before` (a failover promoted them).
    fn promoted_since(&self, before: &SlotMap) -> usize {
        let old_replicas: BTreeSet<&str> = before
            .0
            .iter()
            .flat_map(|range| range.replicas.iter().map(String::as_str))
            .collect();
        let old_primaries = before.primaries();
        self.primaries()
            .into_iter()
            .filter(|primary| old_replicas.contains(primary) && !old_primaries.contains(primary))
            .count()
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn node_address(value: &Value) -> Option<String> {
    let Value::Array(parts) = value else {
        return None;
    };
    let host = match parts.first()? {
        Value::BulkString(host) => String::from_utf8(host.clone()).ok()?,
        Value::SimpleString(host) => host.clone(),
        _ => return None,
    };
    let port = u16::try_from(integer(parts.get(1)?)?).ok()?;
    (!host.is_empty()).then(|| host_port(&host, port))
}

/// The cluster, as the gate uses it.
pub(in crate::store::redis) struct ClusterLink {
    client: ClusterClient,
    connection: ArcSwapOption<ClusterConnection>,
    connected: Notify,
    timeout: Duration,
    map: RwLock<Arc<SlotMap>>,
    /// Pings to each primary, on connections of the gate's own.
    probes: NodePool,
    /// Sharded subscriptions of this replica: one per token someone waits for.
    subscriptions: Mutex<HashMap<TokenFingerprint, Subscription, FingerprintHashing>>,
    /// Held while a `SSUBSCRIBE` or `SUNSUBSCRIBE` is sent and answered, so an
    /// unsubscription never overtakes a later subscription to the same channel.
    ordering: tokio::sync::Mutex<()>,
    /// Ask the watcher to read the slot map now.
    pub(in crate::store::redis) refresh: Notify,
    /// Slot map changes seen since start.
    pub(in crate::store::redis) topology_changes: AtomicU64,
    /// Replicas seen promoted to primary since start.
    pub(in crate::store::redis) failovers: AtomicU64,
    /// When the last promotion was seen.
    pub(in crate::store::redis) followed: super::Followed,
    /// Shards whose primary did not answer the last probe (plus one if some slot had no
    /// primary at all).
    pub(in crate::store::redis) shards_down: AtomicU64,
    /// The last probe could read the slot map.
    pub(in crate::store::redis) mapped: AtomicBool,
}

/// A sharded subscription and the waiters that use it (kept at 0 users until its
/// unsubscription, which re-checks under the ordering lock).
struct Subscription {
    confirmed: bool,
    users: usize,
}

/// A waiter's use of its token's sharded subscription; dropping it lets the subscription
/// go when no one else on this replica waits for the token.
pub(in crate::store::redis) struct Watch {
    link: Arc<ClusterLink>,
    token: TokenFingerprint,
    channel: String,
    /// Whether Redis confirmed the subscription (if not, the waiter checks more often).
    pub(in crate::store::redis) confirmed: bool,
}

impl ClusterLink {
    /// A cluster reached through `nodes`; `start` connects it (the gate starts while the
    /// cluster is down).
    pub(in crate::store::redis) fn new(
        nodes: &[String],
        access: &NodeAccess,
        timeout: Duration,
        waiters: Arc<Waiters>,
    ) -> RedisResult<Arc<Self>> {
        let infos = nodes
            .iter()
            .map(|node| access.connection_info(&access.url(node)))
            .collect::<RedisResult<Vec<_>>>()?;
        let on_push = move |push: PushInfo| {
            crate::store::redis::deliver(&waiters, push);
            Ok::<(), std::convert::Infallible>(())
        };
        let mut builder = ClusterClientBuilder::new(infos)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(400)
            .push_sender(on_push);
        if let Some(username) = &access.username {
            builder = builder.username(username);
        }
        if let Some(password) = &access.password {
            builder = builder.password(password);
        }
        if access.tls {
            builder = builder.tls(redis::TlsMode::Secure);
            if let Some(pem) = &access.ca_pem {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
        }
        Ok(Arc::new(ClusterLink {
            client: builder.build()?,
            connection: ArcSwapOption::empty(),
            connected: Notify::new(),
            timeout,
            map: RwLock::new(Arc::new(SlotMap::default())),
            probes: NodePool::new(access.clone(), timeout),
            subscriptions: Mutex::new(HashMap::with_hasher(FingerprintHashing)),
            ordering: tokio::sync::Mutex::new(()),
            refresh: Notify::new(),
            topology_changes: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            followed: super::Followed::default(),
            shards_down: AtomicU64::new(0),
            mapped: AtomicBool::new(false),
        }))
    }

    /// Connect (retrying until the cluster answers) and watch its topology, on this runtime.
    pub(in crate::store::redis) fn start(self: &Arc<Self>) {
        tokio::spawn(self.clone().watch_forever());
    }

    /// The command connection, once the cluster was reached.
    pub(in crate::store::redis) fn connection(&self) -> Option<ClusterConnection> {
        self.connection
            .load_full()
            .map(|connection| (*connection).clone())
    }

    /// The primary that serves `key`'s slot, as last read.
    pub(in crate::store::redis) fn primary_for(&self, key: &str) -> Option<String> {
        let slot = slot_of(key);
        self.slot_map().primary_for(slot).map(str::to_owned)
    }

    fn slot_map(&self) -> Arc<SlotMap> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn watch_forever(self: Arc<Self>) {
        loop {
            if self.connection.load().is_none() {
                match tokio::time::timeout(self.timeout * 4, self.client.get_async_connection())
                    .await
                {
                    Ok(Ok(connection)) => {
                        self.connection.store(Some(Arc::new(connection)));
                        self.connected.notify_waiters();
                        tracing::info!("connected to the token store (Redis Cluster)");
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "Redis Cluster not reached yet");
                    }
                    Err(_) => tracing::debug!("Redis Cluster not reached yet: timed out"),
                }
            }
            if let Some(connection) = self.connection() {
                self.watch_once(connection).await;
            } else {
                self.mapped.store(false, Ordering::Relaxed);
            }
            tokio::select! {
                _ = self.refresh.notified() => {}
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    /// Read the slot map, count what changed, ping every primary.
    async fn watch_once(&self, mut connection: ClusterConnection) {
        let reply = tokio::time::timeout(
            self.timeout,
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut connection),
        )
        .await;
        let Some(map) = reply
            .ok()
            .and_then(Result::ok)
            .as_ref()
            .and_then(SlotMap::parse)
        else {
            self.mapped.store(false, Ordering::Relaxed);
            return;
        };
        self.mapped.store(true, Ordering::Relaxed);
        let before = self.slot_map();
        if *before != map {
            if !before.0.is_empty() {
                self.topology_changes.fetch_add(1, Ordering::Relaxed);
                let promoted = map.promoted_since(&before);
                if promoted > 0 {
                    self.failovers.fetch_add(promoted as u64, Ordering::Relaxed);
                    self.followed.record();
                    tracing::warn!(
                        promoted,
                        "the token store (Redis Cluster) followed a failover"
                    );
                } else {
                    tracing::info!("the Redis Cluster slot map changed");
                }
            }
            *self
                .map
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(map.clone());
        }
        let primaries: Vec<String> = map.primaries().into_iter().map(str::to_owned).collect();
        let pings = primaries.iter().map(|primary| self.probes.ping(primary));
        let answered = futures_util::future::join_all(pings).await;
        let mut down = answered.iter().filter(|ok| !**ok).count() as u64;
        if !map.covers_every_slot() {
            down += 1;
        }
        let was = self.shards_down.swap(down, Ordering::Relaxed);
        if was != down {
            if down > 0 {
                tracing::error!(shards_down = down, "a Redis Cluster shard does not answer: refresh grants for its tokens follow store.on_store_error");
            } else {
                tracing::warn!("every Redis Cluster shard answers again");
            }
        }
    }

    /// Subscribe to `channel` (the token's sharded channel) while someone here waits for
    /// `token`; the first waiter's subscription is confirmed before any waiter reads the
    /// state, and later waiters share it.
    pub(in crate::store::redis) async fn watch_exchange(
        self: &Arc<Self>,
        token: TokenFingerprint,
        channel: String,
    ) -> Watch {
        let _order = self.ordering.lock().await;
        let subscribe = {
            let mut subscriptions = self.subscriptions();
            let entry = subscriptions.entry(token).or_insert(Subscription {
                confirmed: false,
                users: 0,
            });
            entry.users += 1;
            !entry.confirmed
        };
        if subscribe {
            let confirmed = match self.connection() {
                Some(mut connection) => matches!(
                    tokio::time::timeout(self.timeout, connection.ssubscribe(&channel)).await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            if let Some(entry) = self.subscriptions().get_mut(&token) {
                entry.confirmed = confirmed;
            }
        }
        let confirmed = self
            .subscriptions()
            .get(&token)
            .is_some_and(|entry| entry.confirmed);
        Watch {
            link: self.clone(),
            token,
            channel,
            confirmed,
        }
    }

    /// The last waiter for `token` left: unsubscribe, unless one joined meanwhile.
    async fn release(self: Arc<Self>, token: TokenFingerprint, channel: String) {
        let _order = self.ordering.lock().await;
        let unused = {
            let mut subscriptions = self.subscriptions();
            match subscriptions.get(&token) {
                Some(entry) if entry.users == 0 => {
                    subscriptions.remove(&token);
                    true
                }
                _ => false,
            }
        };
        if unused {
            if let Some(mut connection) = self.connection() {
                let _ = tokio::time::timeout(self.timeout, connection.sunsubscribe(channel)).await;
            }
        }
    }

    fn subscriptions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TokenFingerprint, Subscription, FingerprintHashing>>
    {
        self.subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let last = {
            let mut subscriptions = self.link.subscriptions();
            match subscriptions.get_mut(&self.token) {
                Some(entry) => {
                    entry.users = entry.users.saturating_sub(1);
                    entry.users == 0
                }
                None => false,
            }
        };
        if last {
            let channel = std::mem::take(&mut self.channel);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(self.link.clone().release(self.token, channel));
                }
                // No runtime to unsubscribe on: forget the entry (the next waiter
                // subscribes again).
                Err(_) => {
                    self.link.subscriptions().remove(&self.token);
                }
            }
        }
    }
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (or of the whole key), as
/// `CLUSTER KEYSLOT` computes it.
pub(in crate::store::redis) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

#[cfg(test)]
#[path = "cluster_server_tests.rs"]
mod server_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, nodes: Vec<Value>) -> Value {
        let mut parts = vec![Value::Int(start), Value::Int(end)];
        parts.extend(nodes);
        Value::Array(parts)
    }

    #[test]
    fn the_slot_map_names_the_primary_of_every_slot() {
        let reply = Value::Array(vec![
            range(
                5461,
                10922,
                vec![node("127.0.0.1", 7001), node("127.0.0.1", 7004)],
            ),
            range(
                0,
                5460,
                vec![node("127.0.0.1", 7000), node("127.0.0.1", 7003)],
            ),
            range(10923, 16383, vec![node("127.0.0.1", 7002)]),
        ]);
        let map = SlotMap::parse(&reply).unwrap();
        assert_eq!(map.primary_for(0), Some("127.0.0.1:7000"));
        assert_eq!(map.primary_for(5461), Some("127.0.0.1:7001"));
        assert_eq!(map.primary_for(16383), Some("127.0.0.1:7002"));
        assert!(map.covers_every_slot());
        let partial =
            SlotMap::parse(&Value::Array(vec![range(0, 100, vec![node("a", 1)])])).unwrap();
        assert!(!partial.covers_every_slot());
    }

    #[test]
    fn a_replica_that_now_serves_slots_counts_as_a_failover_and_a_reshard_does_not() {
        let before = SlotMap::parse(&Value::Array(vec![
            range(0, 8191, vec![node("h", 1), node("h", 3)]),
            range(8192, 16383, vec![node("h", 2), node("h", 4)]),
        ]))
        .unwrap();
        let failed_over = SlotMap::parse(&Value::Array(vec![
            range(0, 8191, vec![node("h", 3)]),
            range(8192, 16383, vec![node("h", 2), node("h", 4)]),
        ]))
        .unwrap();
        let resharded = SlotMap::parse(&Value::Array(vec![
            range(0, 9000, vec![node("h", 1), node("h", 3)]),
            range(9001, 16383, vec![node("h", 2), node("h", 4)]),
        ]))
        .unwrap();
        assert_eq!(failed_over.promoted_since(&before), 1);
        assert_eq!(resharded.promoted_since(&before), 0);
    }

    #[test]
    fn a_tokens_keys_share_one_slot_computed_as_redis_does() {
        // `CLUSTER KEYSLOT foo` is 12182; a hash tag decides the slot.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("rg:{foo}:state"), slot_of("rg:{foo}:claim"));
        assert_eq!(slot_of("rg:{foo}:state"), 12182);
    }
}
