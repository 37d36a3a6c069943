//! Connections of the gate's own to single nodes, by `host:port`: each is used by one
//! caller at a time (a `WAIT` blocks its connection), kept for the next when it ends well,
//! dropped when it failed.

use super::node::NodeAccess;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Idle connections kept per node.
const MAX_IDLE_PER_NODE: usize = 64;

/// Pinned connections to single nodes.
pub(in crate::store::redis) struct NodePool {
    access: NodeAccess,
    timeout: Duration,
    /// The client of a single server (its URL, with its database), used for the node `""`.
    single: Option<Client>,
    idle: Mutex<HashMap<String, Vec<MultiplexedConnection>>>,
}

impl NodePool {
    /// A pool for nodes reached with `access`; each operation bounded by `timeout`.
    pub(in crate::store::redis) fn new(access: NodeAccess, timeout: Duration) -> Self {
        NodePool {
            access,
            timeout,
            single: None,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// A pool whose node `""` is the single server of `client`.
    pub(in crate::store::redis) fn for_single(client: Client, timeout: Duration) -> Self {
        NodePool {
            single: Some(client),
            ..NodePool::new(NodeAccess::default(), timeout)
        }
    }

    /// A connection to `node` for one caller, whose commands may take up to `response`;
    /// a kept one unless `fresh`. Says whether it is new.
    pub(in crate::store::redis) async fn take(
        &self,
        node: &str,
        response: Duration,
        fresh: bool,
    ) -> Result<(MultiplexedConnection, bool), String> {
        if !fresh {
            if let Some(connection) = self.lock().get_mut(node).and_then(Vec::pop) {
                return Ok((connection, false));
            }
        }
        let client = match (&self.single, node) {
            (Some(client), "") => client.clone(),
            _ => self.access.client_for(node).map_err(|e| e.to_string())?,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response));
        match tokio::time::timeout(
            self.timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(connection)) => Ok((connection, true)),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connecting timed out".into()),
        }
    }

    /// Keep `connection` to `node` for the next caller.
    pub(in crate::store::redis) fn give_back(&self, node: &str, connection: MultiplexedConnection) {
        let mut idle = self.lock();
        let kept = idle.entry(node.to_owned()).or_default();
        if kept.len() < MAX_IDLE_PER_NODE {
            kept.push(connection);
        }
    }

    /// Whether `node` answers `PING` within the timeout.
    pub(in crate::store::redis) async fn ping(&self, node: &str) -> bool {
        let Ok((mut connection, _)) = self.take(node, self.timeout, false).await else {
            return false;
        };
        let answered = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        let ok = matches!(answered, Ok(Ok(_)));
        if ok {
            self.give_back(node, connection);
        }
        ok
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<MultiplexedConnection>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
