//! Sentinel: the gate writes only to the primary Sentinel names, and follows a failover
//! without a restart. A resolver asks the Sentinels for the primary every second and at
//! once when one of them announces `+switch-master` for our primary, when a command meets
//! `-READONLY` (a demoted node) or a dropped connection. A node is taken only once it
//! answers `ROLE` as a master; the waiters' subscription moves with it.

use super::node::{host_port, is_read_only, NodeAccess};
use super::Signals;
use crate::store::redis::waiters::Waiters;
use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, PushInfo, PushKind, RedisError,
    RedisFuture, RedisResult, Value,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// How often the resolver asks the Sentinels even when nothing was announced (a missed
/// `+switch-master` costs at most this).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The pause before asking again after a failed pass.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The primary in use: its address, the command connection and the waiters' subscription.
pub(in crate::store::redis) struct Primary {
    /// `host:port` as Sentinel names it.
    pub(in crate::store::redis) addr: String,
    commands: MultiplexedConnection,
    /// Kept alive while this is the primary; its pushes wake waiters.
    _subscription: Option<MultiplexedConnection>,
}

/// Follows the primary that Sentinel names.
pub(in crate::store::redis) struct SentinelFollower {
    sentinels: Vec<(String, Client)>,
    /// A cached connection per Sentinel, for the resolver's questions.
    asked: Mutex<Vec<Option<MultiplexedConnection>>>,
    master: String,
    data: NodeAccess,
    timeout: Duration,
    current: ArcSwapOption<Primary>,
    /// Bumped at every change of `current`.
    generation: watch::Sender<u64>,
    /// The current connection failed: reconnect even if Sentinel names the same node.
    broken: AtomicBool,
    signals: Arc<Signals>,
    waiters: Arc<Waiters>,
    channel: String,
    /// Primaries replaced by another since start.
    pub(in crate::store::redis) failovers: AtomicU64,
    /// When the last one was followed.
    pub(in crate::store::redis) followed: super::Followed,
}

impl SentinelFollower {
    /// A follower of `master` through `sentinels`; `start` runs it.
    pub(in crate::store::redis) fn new(
        sentinels: &[String],
        sentinel_access: &NodeAccess,
        master: &str,
        data: NodeAccess,
        timeout: Duration,
        waiters: Arc<Waiters>,
        channel: String,
    ) -> RedisResult<Arc<Self>> {
        let sentinels = sentinels
            .iter()
            .map(|addr| Ok((addr.clone(), sentinel_access.client_for(addr)?)))
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Arc::new(SentinelFollower {
            asked: Mutex::new(vec![None; sentinels.len()]),
            sentinels,
            master: master.to_owned(),
            data,
            timeout,
            current: ArcSwapOption::empty(),
            generation: watch::channel(0).0,
            broken: AtomicBool::new(false),
            signals: Arc::new(Signals::default()),
            waiters,
            channel,
            failovers: AtomicU64::new(0),
            followed: super::Followed::default(),
        }))
    }

    /// Run the resolver and one `+switch-master` listener per Sentinel, on this runtime.
    pub(in crate::store::redis) fn start(self: &Arc<Self>) {
        tokio::spawn(self.clone().resolve_forever());
        for index in 0..self.sentinels.len() {
            tokio::spawn(self.clone().listen(index));
        }
    }

    /// The command connection that follows the primary.
    pub(in crate::store::redis) fn commands(self: &Arc<Self>) -> FollowedPrimary {
        FollowedPrimary {
            follower: self.clone(),
        }
    }

    /// The primary in use, if one was found.
    pub(in crate::store::redis) fn primary(&self) -> Option<Arc<Primary>> {
        self.current.load_full()
    }

    /// `addr` refused a write or dropped: ask the Sentinels now.
    pub(in crate::store::redis) fn suspect(&self, addr: &str, broken: bool) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|p| p.addr == addr) {
            if broken {
                self.broken.store(true, Ordering::Relaxed);
            }
            self.signals.wake.notify_one();
        }
    }

    /// Wait (at most the store timeout) until the primary is no longer `addr`.
    async fn moved_from(&self, addr: &str) {
        let mut generation = self.generation.subscribe();
        let moved = generation.wait_for(|_| {
            self.current
                .load()
                .as_ref()
                .is_some_and(|primary| primary.addr != addr)
        });
        let _ = tokio::time::timeout(self.timeout, moved).await;
    }

    async fn resolve_forever(self: Arc<Self>) {
        // Why no primary is taken, said once per new reason (or every half minute): a wrong
        // password or an untrusted certificate must be visible at the default level.
        let mut said: Option<(String, tokio::time::Instant)> = None;
        loop {
            let pause = match self.resolve().await {
                Ok(()) => {
                    said = None;
                    CHECK_INTERVAL
                }
                Err(error) => {
                    let repeat = said.as_ref().is_some_and(|(last, at)| {
                        *last == error && at.elapsed() < Duration::from_secs(30)
                    });
                    if repeat {
                        tracing::debug!(%error, "Sentinel: no primary taken on this pass");
                    } else {
                        tracing::warn!(%error, master = %self.master, "Sentinel: no primary taken");
                        said = Some((error, tokio::time::Instant::now()));
                    }
                    RETRY_PAUSE
                }
            };
            tokio::select! {
                _ = self.signals.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass: ask the Sentinels; take the node they name if it is not the one in use
    /// (or the one in use failed), once it answers as a master.
    async fn resolve(&self) -> Result<(), String> {
        let addr = self.ask_sentinels().await?;
        let current = self.current.load_full();
        let same = current.as_ref().is_some_and(|p| p.addr == addr);
        let broken = self.broken.swap(false, Ordering::Relaxed);
        let lost = self
            .signals
            .subscription_lost
            .swap(false, Ordering::Relaxed);
        if same && !broken && !lost {
            return Ok(());
        }
        let result = self
            .take(&addr, current.as_deref().filter(|_| same && !broken))
            .await;
        if result.is_err() {
            // Try again on the next pass.
            self.broken.store(broken, Ordering::Relaxed);
            self.signals
                .subscription_lost
                .store(lost || !same, Ordering::Relaxed);
        }
        let taken = result?;
        let previous = self.current.swap(Some(Arc::new(taken)));
        self.generation.send_modify(|generation| *generation += 1);
        // Messages may have been lost with the old subscription.
        self.waiters.wake_all();
        match previous {
            Some(previous) if previous.addr != addr => {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                self.followed.record();
                tracing::warn!(
                    from = %previous.addr,
                    to = %addr,
                    master = %self.master,
                    "the token store followed a Sentinel failover: writes go to the new primary"
                );
            }
            Some(_) => {}
            None => {
                tracing::info!(primary = %addr, master = %self.master, "the token store found its primary through Sentinel")
            }
        }
        Ok(())
    }

    /// Connect to `addr` (reusing `keep`'s command connection when only the subscription
    /// needs renewing), check that it is a master, and subscribe.
    async fn take(&self, addr: &str, keep: Option<&Primary>) -> Result<Primary, String> {
        let client = self.data.client_for(addr).map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut commands = match keep {
            Some(primary) => primary.commands.clone(),
            None => {
                bounded(
                    self.timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await?
            }
        };
        let role: Value =
            bounded(self.timeout, redis::cmd("ROLE").query_async(&mut commands)).await?;
        if !is_master(&role) {
            return Err(format!("{addr} is not a master yet"));
        }
        let signals = self.signals.clone();
        let waiters = self.waiters.clone();
        let on_push = move |push: PushInfo| {
            if push.kind == PushKind::Disconnection {
                signals.subscription_lost.store(true, Ordering::Relaxed);
                signals.wake.notify_one();
            }
            crate::store::redis::deliver(&waiters, push);
            Ok::<(), std::convert::Infallible>(())
        };
        let mut subscription = bounded(
            self.timeout,
            client.get_multiplexed_async_connection_with_config(&config.set_push_sender(on_push)),
        )
        .await?;
        bounded(self.timeout, subscription.subscribe(&self.channel)).await?;
        Ok(Primary {
            addr: addr.to_owned(),
            commands,
            _subscription: Some(subscription),
        })
    }

    /// The primary's address, as a majority of the configured Sentinels name it: every
    /// Sentinel is asked at once, so one stale or lying Sentinel can neither hold the gate
    /// on a dead primary nor send it to another node. Without a majority, no answer (the
    /// primary in use is kept).
    async fn ask_sentinels(&self) -> Result<String, String> {
        let mut asked = self.asked.lock().await;
        let questions = self
            .sentinels
            .iter()
            .enumerate()
            .map(|(index, (addr, client))| {
                let cached = asked[index].clone();
                async move {
                    let mut connection = match cached {
                        Some(connection) => connection,
                        None => {
                            let config = AsyncConnectionConfig::new()
                                .set_connection_timeout(Some(self.timeout))
                                .set_response_timeout(Some(self.timeout));
                            bounded(
                                self.timeout,
                                client.get_multiplexed_async_connection_with_config(&config),
                            )
                            .await
                            .map_err(|error| (format!("Sentinel {addr}: {error}"), false))?
                        }
                    };
                    let answer: Result<Option<(String, u16)>, String> = bounded(
                        self.timeout,
                        redis::cmd("SENTINEL")
                            .arg("get-master-addr-by-name")
                            .arg(&self.master)
                            .query_async(&mut connection),
                    )
                    .await;
                    match answer {
                        Ok(Some((host, port))) if is_plain_host(&host) && port > 0 => {
                            Ok((host_port(&host, port), connection))
                        }
                        Ok(Some(_)) => {
                            Err((format!("Sentinel {addr} named a malformed address"), true))
                        }
                        Ok(None) => Err((
                            format!("Sentinel {addr} does not monitor {}", self.master),
                            true,
                        )),
                        Err(error) => Err((format!("Sentinel {addr}: {error}"), false)),
                    }
                }
            });
        let answers = futures_util::future::join_all(questions).await;
        let mut votes: Vec<(String, usize)> = Vec::new();
        let mut last = String::from("no Sentinel configured");
        for (index, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok((primary, connection)) => {
                    asked[index] = Some(connection);
                    match votes.iter_mut().find(|(named, _)| *named == primary) {
                        Some((_, count)) => *count += 1,
                        None => votes.push((primary, 1)),
                    }
                }
                Err((error, answered)) => {
                    if !answered {
                        asked[index] = None;
                    }
                    last = error;
                }
            }
        }
        let majority = self.sentinels.len() / 2 + 1;
        match votes.into_iter().max_by_key(|(_, count)| *count) {
            Some((primary, count)) if count >= majority => Ok(primary),
            Some((primary, count)) => Err(format!(
                "only {count} of {} Sentinels name {primary} (a majority is {majority}); last error: {last}",
                self.sentinels.len()
            )),
            None => Err(last),
        }
    }

    /// Listen to one Sentinel's `+switch-master` announcements for our primary.
    async fn listen(self: Arc<Self>, index: usize) {
        let (addr, client) = &self.sentinels[index];
        loop {
            if let Ok(Ok(mut pubsub)) =
                tokio::time::timeout(self.timeout, client.get_async_pubsub()).await
            {
                if pubsub.subscribe("+switch-master").await.is_ok() {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let payload: String = message.get_payload().unwrap_or_default();
                        if payload.split(' ').next() == Some(self.master.as_str()) {
                            tracing::info!(sentinel = %addr, announcement = %payload, "Sentinel announced +switch-master");
                            self.signals.wake.notify_one();
                        }
                    }
                }
            }
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    }
}

/// A host as Sentinel may name it: an IP address or a DNS name, nothing that could
/// change the URL the gate builds from it.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// `ROLE` answered `master`.
fn is_master(role: &Value) -> bool {
    let Value::Array(parts) = role else {
        return false;
    };
    matches!(parts.first(), Some(Value::BulkString(kind)) if kind == b"master")
        || matches!(parts.first(), Some(Value::SimpleString(kind)) if kind == "master")
}

async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn no_primary() -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "no primary known yet",
        "Sentinel has not named a reachable master".to_owned(),
    ))
}

/// The command connection of a Sentinel deployment: every command goes to the primary in
/// use. A `-READONLY` answer (nothing was written) waits for the next primary and is sent
/// once more; a dropped connection is reported to the resolver and fails.
#[derive(Clone)]
pub(in crate::store::redis) struct FollowedPrimary {
    follower: Arc<SentinelFollower>,
}

impl ConnectionLike for FollowedPrimary {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut retried = false;
            loop {
                let primary = self.follower.primary().ok_or_else(no_primary)?;
                let mut connection = primary.commands.clone();
                match connection.req_packed_command(cmd).await {
                    Err(error) if is_read_only(&error) && !retried => {
                        retried = true;
                        self.follower.suspect(&primary.addr, true);
                        self.follower.moved_from(&primary.addr).await;
                    }
                    Err(error) => {
                        if is_read_only(&error)
                            || error.is_connection_dropped()
                            || error.is_io_error()
                        {
                            self.follower.suspect(&primary.addr, true);
                        }
                        return Err(error);
                    }
                    ok => return ok,
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let primary = self.follower.primary().ok_or_else(no_primary)?;
            let mut connection = primary.commands.clone();
            let result = connection.req_packed_commands(cmd, offset, count).await;
            if let Err(error) = &result {
                if is_read_only(error) || error.is_connection_dropped() || error.is_io_error() {
                    self.follower.suspect(&primary.addr, true);
                }
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_master_role_is_taken() {
        let master = Value::Array(vec![
            Value::BulkString(b"master".to_vec()),
            Value::Int(10),
            Value::Array(vec![]),
        ]);
        let replica = Value::Array(vec![
            Value::BulkString(b"slave".to_vec()),
            Value::BulkString(b"127.0.0.1".to_vec()),
        ]);
        assert!(is_master(&master));
        assert!(!is_master(&replica));
        assert!(!is_master(&Value::Nil));
    }

    #[test]
    fn only_plain_hosts_are_taken_from_a_sentinel() {
        for host in ["127.0.0.1", "::1", "redis-0.identity.svc"] {
            assert!(is_plain_host(host), "{host}");
        }
        for host in ["", "evil.example/#insecure", "a@b", "h?x=1", "a b"] {
            assert!(!is_plain_host(host), "{host}");
        }
    }
}
