//! Where a shared store's data lives: one Redis server, the primary Sentinel names, or a
//! Redis Cluster. Plain data, read from `[store]` and handed to the Redis store.

use std::fmt;

/// The shape of the Redis deployment the gate shares its state through.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server at `url` (`redis://` or `rediss://`, no credentials).
    Single {
        /// The server's URL.
        url: String,
    },
    /// The primary that Sentinel names `master`, found through `sentinels`.
    Sentinel {
        /// `host:port` of each Sentinel.
        sentinels: Vec<String>,
        /// The name Sentinel monitors the primary under.
        master: String,
        /// The Sentinels' own password (`sentinel_password_file`).
        password: Option<String>,
    },
    /// A Redis Cluster, found through any of `nodes`.
    Cluster {
        /// `host:port` of some of its nodes.
        nodes: Vec<String>,
    },
}

impl RedisTopology {
    /// The name of the topology in logs and the README: `single`, `sentinel` or `cluster`.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisTopology::Single { .. } => "single",
            RedisTopology::Sentinel { .. } => "sentinel",
            RedisTopology::Cluster { .. } => "cluster",
        }
    }

    /// The default of `wait_replicas`: 1 where replicas are part of the design (Sentinel,
    /// Cluster), 0 for a single server.
    pub fn default_wait_replicas(&self) -> u32 {
        match self {
            RedisTopology::Single { .. } => 0,
            RedisTopology::Sentinel { .. } | RedisTopology::Cluster { .. } => 1,
        }
    }
}

impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTopology::Single { url } => f.debug_struct("Single").field("url", url).finish(),
            RedisTopology::Sentinel {
                sentinels,
                master,
                password,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
            RedisTopology::Cluster { nodes } => {
                f.debug_struct("Cluster").field("nodes", nodes).finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_awaited_by_default_only_where_they_are_part_of_the_design() {
        let single = RedisTopology::Single {
            url: "redis://127.0.0.1".into(),
        };
        let sentinel = RedisTopology::Sentinel {
            sentinels: vec!["127.0.0.1:26379".into()],
            master: "m".into(),
            password: Some("hunter2-sentinel".into()),
        };
        let cluster = RedisTopology::Cluster {
            nodes: vec!["127.0.0.1:7000".into()],
        };
        assert_eq!(single.default_wait_replicas(), 0);
        assert_eq!(sentinel.default_wait_replicas(), 1);
        assert_eq!(cluster.default_wait_replicas(), 1);
        assert_eq!(
            [single.kind(), sentinel.kind(), cluster.kind()],
            ["single", "sentinel", "cluster"]
        );
        assert!(!format!("{sentinel:?}").contains("hunter2"));
    }
}
