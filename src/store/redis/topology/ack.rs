//! Replication acknowledgement of a rotation (`[store] wait_replicas`): after the
//! tombstone and the family link are written, and before the first client gets the new
//! token, `WAIT` for that many replicas on a pinned connection to the primary that took the
//! write. `WAIT` only counts its own connection's writes, so the pinned connection first
//! renews the TTL of the key just written (`PEXPIRE`, a write that replicates after the
//! rotation's own): the acknowledgement of it covers every earlier write to that primary.
//! A key already moved by a reshard answers `MOVED`/`ASK` and is followed (counted).

use super::node::is_read_only;
use super::pool::NodePool;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Redirects followed per node before giving up.
const MAX_REDIRECTS: usize = 3;
/// Acknowledgements under way at once on this replica: each holds a connection of its own
/// while `WAIT` blocks it, so this bounds the connections a burst of rotations opens.
pub(in crate::store::redis) const MAX_CONCURRENT_ACKS: usize = 64;

/// What became of one acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store::redis) enum Acked {
    /// At least the asked number of replicas acknowledged; how many did.
    Yes(u32),
    /// Fewer did (`replicas` of them) within the timeout, or the primary could not be
    /// asked (`reason`).
    No { replicas: u32, reason: &'static str },
}

/// Acknowledgements of rotations by replicas.
pub(in crate::store::redis) struct Acknowledger {
    /// Replicas that must acknowledge (at least 1 here).
    pub(in crate::store::redis) replicas: u32,
    /// How long `WAIT` waits.
    pub(in crate::store::redis) wait: Duration,
    pool: NodePool,
    timeout: Duration,
    /// One permit per acknowledgement under way.
    permits: tokio::sync::Semaphore,
    /// `MOVED` redirects followed since start.
    pub(in crate::store::redis) moved: AtomicU64,
    /// `ASK` redirects followed since start.
    pub(in crate::store::redis) asked: AtomicU64,
}

impl Acknowledger {
    /// Acknowledgements by `replicas` within `wait`, on connections from `pool`.
    pub(in crate::store::redis) fn new(
        replicas: u32,
        wait: Duration,
        pool: NodePool,
        timeout: Duration,
    ) -> Self {
        Acknowledger {
            replicas,
            wait,
            pool,
            timeout,
            permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_ACKS),
            moved: AtomicU64::new(0),
            asked: AtomicU64::new(0),
        }
    }

    /// Renew `key`'s TTL (`ttl_ms`) on `node`, then `WAIT` for the replicas.
    pub(in crate::store::redis) async fn acknowledge(
        &self,
        node: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Acked {
        let wait_ms = self.wait.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        let response = self.wait + self.timeout;
        // A burst waits its turn, for at most as long as one acknowledgement may take.
        let Ok(Ok(_permit)) = tokio::time::timeout(response, self.permits.acquire()).await else {
            return Acked::No {
                replicas: 0,
                reason: "busy",
            };
        };
        let mut target = node.to_owned();
        let mut asking = false;
        let mut fresh = false;
        for _ in 0..=MAX_REDIRECTS + 1 {
            let (mut connection, new) = match self.pool.take(&target, response, fresh).await {
                Ok(taken) => taken,
                Err(_) => {
                    return Acked::No {
                        replicas: 0,
                        reason: "unreachable",
                    }
                }
            };
            let mut pipe = redis::pipe();
            if asking {
                pipe.cmd("ASKING").ignore();
            }
            pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms);
            pipe.cmd("WAIT").arg(self.replicas).arg(wait_ms);
            let answer =
                tokio::time::timeout(response, pipe.query_async::<(i64, i64)>(&mut connection))
                    .await;
            match answer {
                Ok(Ok((renewed, acked))) => {
                    self.pool.give_back(&target, connection);
                    let acked = u32::try_from(acked.max(0)).unwrap_or(u32::MAX);
                    return if renewed != 1 {
                        // The key is not there: the write cannot be vouched for.
                        Acked::No {
                            replicas: acked,
                            reason: "missing",
                        }
                    } else if acked >= self.replicas {
                        Acked::Yes(acked)
                    } else {
                        Acked::No {
                            replicas: acked,
                            reason: "timeout",
                        }
                    };
                }
                Ok(Err(error)) => match redirect(&error) {
                    Some((to, ask)) => {
                        self.pool.give_back(&target, connection);
                        let counter = if ask { &self.asked } else { &self.moved };
                        counter.fetch_add(1, Ordering::Relaxed);
                        target = to;
                        asking = ask;
                    }
                    None if is_read_only(&error) => {
                        return Acked::No {
                            replicas: 0,
                            reason: "not_primary",
                        }
                    }
                    // A kept connection may have died with its node's restart: once more
                    // on a new one.
                    None if !new && (error.is_io_error() || error.is_connection_dropped()) => {
                        fresh = true;
                    }
                    None => {
                        return Acked::No {
                            replicas: 0,
                            reason: "error",
                        }
                    }
                },
                Err(_) => {
                    return Acked::No {
                        replicas: 0,
                        reason: "timeout",
                    }
                }
            }
        }
        Acked::No {
            replicas: 0,
            reason: "redirected",
        }
    }
}

/// The node a `MOVED` or `ASK` error sends to, and whether it was `ASK`.
fn redirect(error: &RedisError) -> Option<(String, bool)> {
    let ask = error.kind() == ErrorKind::Server(ServerErrorKind::Ask);
    error
        .redirect_node()
        .map(|(node, _slot)| (node.to_owned(), ask))
}
