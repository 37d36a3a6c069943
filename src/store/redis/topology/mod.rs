//! The three shapes of a shared store (`RedisTopology`): how commands reach the primary
//! that owns a key, how waiters hear that an exchange ended, and which node acknowledges a
//! rotation. Everything above this module (the scripts, the keys, the decisions) is the
//! same for all three.

pub(super) mod ack;
pub(super) mod cluster;
pub(super) mod node;
pub(super) mod pool;
pub(super) mod sentinel;

use crate::seal::fingerprint::TokenFingerprint;
use crate::store::RedisTopology;
use cluster::{ClusterLink, Watch};
use node::NodeAccess;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use sentinel::{FollowedPrimary, SentinelFollower};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

/// Wake-ups between a connection's push handler and the task that maintains it.
#[derive(Debug, Default)]
pub(super) struct Signals {
    /// Ask the maintaining task to look now.
    pub(super) wake: Notify,
    /// The waiters' subscription dropped: renew it.
    pub(super) subscription_lost: AtomicBool,
}

/// When a failover was last followed (set in the same step that counts it).
#[derive(Debug, Default)]
pub(super) struct Followed(std::sync::Mutex<Option<std::time::Instant>>);

impl Followed {
    /// A failover was followed now.
    pub(super) fn record(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// When the last one was.
    pub(super) fn last(&self) -> Option<std::time::Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How this replica reaches the shared store (one per store, so the variants' sizes do not
/// matter).
#[allow(clippy::large_enum_variant)]
pub(super) enum Link {
    /// One server, through connection managers that reconnect by themselves.
    Single {
        /// Commands: created on first use, on the runtime of the requests that use it (no
        /// hop to another thread per command).
        commands: OnceLock<ConnectionManager>,
        client: redis::Client,
        config: ConnectionManagerConfig,
        /// The subscription to the exchange channel, on the store's own runtime.
        subscription: ConnectionManager,
    },
    /// The primary Sentinel names, followed through failovers.
    Sentinel(Arc<SentinelFollower>),
    /// A Redis Cluster.
    Cluster(Arc<ClusterLink>),
}

/// A command connection of any topology (cheap to clone).
#[derive(Clone)]
pub(super) enum Commands {
    Single(ConnectionManager),
    Sentinel(FollowedPrimary),
    /// `None` until the cluster was first reached.
    Cluster(Option<ClusterConnection>),
}

impl Link {
    /// The link for `topology`: nothing is awaited (the gate starts while Redis is down);
    /// the tasks that maintain it are spawned on this runtime.
    pub(super) fn open(
        topology: &RedisTopology,
        data: &NodeAccess,
        sentinel_access: &NodeAccess,
        command_config: ConnectionManagerConfig,
        timeout: std::time::Duration,
        waiters: Arc<crate::store::redis::waiters::Waiters>,
        channel: &str,
    ) -> RedisResult<Link> {
        match topology {
            RedisTopology::Single { url } => {
                let client = data.client_for_url(url)?;
                let on_push = {
                    let waiters = waiters.clone();
                    move |push: redis::PushInfo| {
                        super::deliver(&waiters, push);
                        Ok::<(), std::convert::Infallible>(())
                    }
                };
                let subscription_config = command_config
                    .clone()
                    .set_push_sender(on_push)
                    .set_automatic_resubscription();
                let subscription =
                    ConnectionManager::new_lazy_with_config(client.clone(), subscription_config)?;
                Ok(Link::Single {
                    commands: OnceLock::new(),
                    client,
                    config: command_config,
                    subscription,
                })
            }
            RedisTopology::Sentinel {
                sentinels, master, ..
            } => {
                let follower = SentinelFollower::new(
                    sentinels,
                    sentinel_access,
                    master,
                    data.clone(),
                    timeout,
                    waiters,
                    channel.to_owned(),
                )?;
                follower.start();
                Ok(Link::Sentinel(follower))
            }
            RedisTopology::Cluster { nodes } => {
                let link = ClusterLink::new(nodes, data, timeout, waiters)?;
                link.start();
                Ok(Link::Cluster(link))
            }
        }
    }

    /// The command connection.
    pub(super) fn commands(&self) -> Commands {
        match self {
            Link::Single {
                commands,
                client,
                config,
                subscription,
            } => Commands::Single(
                commands
                    .get_or_init(|| {
                        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                            .unwrap_or_else(|_| subscription.clone())
                    })
                    .clone(),
            ),
            Link::Sentinel(follower) => Commands::Sentinel(follower.commands()),
            Link::Cluster(link) => Commands::Cluster(link.connection()),
        }
    }

    /// The command that announces the end of an exchange inside a script: `SPUBLISH` on
    /// the token's own sharded channel in a cluster (it reaches the token's shard only),
    /// `PUBLISH` on the one exchange channel otherwise.
    pub(super) fn publish_command(&self) -> &'static str {
        match self {
            Link::Cluster(_) => "SPUBLISH",
            _ => "PUBLISH",
        }
    }

    /// Whether this is one server (nothing to fail over to).
    pub(super) fn one_server(&self) -> bool {
        matches!(self, Link::Single { .. })
    }

    /// Whether every waiter hears of each exchange on one channel (not in a cluster).
    pub(super) fn one_channel(&self) -> bool {
        !matches!(self, Link::Cluster(_))
    }

    /// In a cluster, subscribe to `token`'s sharded channel while someone here waits.
    pub(super) async fn watch_exchange(
        &self,
        token: TokenFingerprint,
        channel: &str,
    ) -> Option<Watch> {
        match self {
            Link::Cluster(link) => Some(link.watch_exchange(token, channel.to_owned()).await),
            _ => None,
        }
    }

    /// The node whose replicas must acknowledge a write of `key`: `""` for the single
    /// server, the primary in use with Sentinel, the slot's primary in a cluster.
    pub(super) fn primary_of(&self, key: &str) -> Option<String> {
        match self {
            Link::Single { .. } => Some(String::new()),
            Link::Sentinel(follower) => follower.primary().map(|p| p.addr.clone()),
            Link::Cluster(link) => {
                let primary = link.primary_for(key);
                if primary.is_none() {
                    link.refresh.notify_one();
                }
                primary
            }
        }
    }

    /// Whether two keys' writes are acknowledged by one `WAIT` (one primary).
    pub(super) fn same_primary(&self, first: &str, second: &str) -> bool {
        match self {
            Link::Cluster(link) => {
                cluster::slot_of(first) == cluster::slot_of(second)
                    || (link.primary_for(first).is_some()
                        && link.primary_for(first) == link.primary_for(second))
            }
            _ => true,
        }
    }

    /// Failovers followed since start.
    pub(super) fn failovers(&self) -> u64 {
        match self {
            Link::Single { .. } => 0,
            Link::Sentinel(follower) => follower.failovers.load(Ordering::Relaxed),
            Link::Cluster(link) => link.failovers.load(Ordering::Relaxed),
        }
    }

    /// When a failover was last followed.
    pub(super) fn last_failover(&self) -> Option<std::time::Instant> {
        match self {
            Link::Single { .. } => None,
            Link::Sentinel(follower) => follower.followed.last(),
            Link::Cluster(link) => link.followed.last(),
        }
    }

    /// Topology changes seen since start (cluster slot maps).
    pub(super) fn topology_changes(&self) -> u64 {
        match self {
            Link::Cluster(link) => link.topology_changes.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Shards that do not answer now (cluster only).
    pub(super) fn shards_down(&self) -> u64 {
        match self {
            Link::Cluster(link) => link.shards_down.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Whether the topology itself is whole: a primary known (Sentinel), every shard
    /// answering (cluster). A single server has nothing to add to its operations' health.
    pub(super) fn whole(&self) -> bool {
        match self {
            Link::Single { .. } => true,
            Link::Sentinel(follower) => follower.primary().is_some(),
            Link::Cluster(link) => {
                link.mapped.load(Ordering::Relaxed) && link.shards_down.load(Ordering::Relaxed) == 0
            }
        }
    }

    /// The single server's subscription connection, if that is the topology.
    pub(super) fn single_subscription(&self) -> Option<ConnectionManager> {
        match self {
            Link::Single { subscription, .. } => Some(subscription.clone()),
            _ => None,
        }
    }
}

fn not_connected() -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "not connected",
        "the Redis Cluster was not reached yet".to_owned(),
    ))
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(connection) => connection.req_packed_command(cmd),
            Commands::Sentinel(connection) => connection.req_packed_command(cmd),
            Commands::Cluster(Some(connection)) => connection.req_packed_command(cmd),
            Commands::Cluster(None) => Box::pin(async { Err(not_connected()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Commands::Sentinel(connection) => connection.req_packed_commands(cmd, offset, count),
            Commands::Cluster(Some(connection)) => {
                connection.req_packed_commands(cmd, offset, count)
            }
            Commands::Cluster(None) => Box::pin(async { Err(not_connected()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(connection) => connection.get_db(),
            _ => 0,
        }
    }
}
