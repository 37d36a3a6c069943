//! How the gate reaches any one Redis node (a server, a Sentinel, a cluster node, a
//! primary for acknowledgements): its credentials, TLS and TCP settings, RESP3.

use redis::{Client, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisResult};
use std::time::Duration;

/// Credentials and transport for the nodes of one role (data nodes, or Sentinels).
#[derive(Clone, Default)]
pub(in crate::store::redis) struct NodeAccess {
    /// The ACL user.
    pub(in crate::store::redis) username: Option<String>,
    /// The password.
    pub(in crate::store::redis) password: Option<String>,
    /// TLS to every node reached by `host:port`.
    pub(in crate::store::redis) tls: bool,
    /// PEM roots instead of the system's.
    pub(in crate::store::redis) ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for NodeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAccess")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl NodeAccess {
    /// The connection settings for `url` (`redis://` or `rediss://`): RESP3, the
    /// credentials, no Nagle delay, and keepalive to find a dead node behind a silent
    /// network.
    pub(in crate::store::redis) fn connection_info(
        &self,
        url: &str,
    ) -> RedisResult<ConnectionInfo> {
        let info = url.into_connection_info()?;
        let mut settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let tcp = redis::io::tcp::TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive);
        Ok(info.set_redis_settings(settings).set_tcp_settings(tcp))
    }

    /// The URL of the node at `host:port`, with this access's scheme.
    pub(in crate::store::redis) fn url(&self, host_port: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{host_port}")
    }

    /// A client for `url`, trusting `ca_pem` when given.
    pub(in crate::store::redis) fn client_for_url(&self, url: &str) -> RedisResult<Client> {
        let info = self.connection_info(url)?;
        match &self.ca_pem {
            Some(pem) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info),
        }
    }

    /// A client for the node at `host:port`.
    pub(in crate::store::redis) fn client_for(&self, host_port: &str) -> RedisResult<Client> {
        self.client_for_url(&self.url(host_port))
    }
}

/// The node answered `-READONLY`: it is a replica (a demoted primary), and wrote nothing.
pub(in crate::store::redis) fn is_read_only(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        || error.code() == Some("READONLY")
}

/// `host:port` of a node as Redis reports it (`ip`, `port`), IPv6 in brackets.
pub(in crate::store::redis) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_reached_with_the_scheme_of_their_access() {
        let plain = NodeAccess::default();
        let tls = NodeAccess {
            tls: true,
            ..NodeAccess::default()
        };
        assert_eq!(plain.url("127.0.0.1:7000"), "redis://127.0.0.1:7000");
        assert_eq!(tls.url("10.0.0.1:7000"), "rediss://10.0.0.1:7000");
        assert_eq!(host_port("::1", 7000), "[::1]:7000");
        assert_eq!(host_port("127.0.0.1", 7000), "127.0.0.1:7000");
    }

    #[test]
    fn the_password_never_prints() {
        let access = NodeAccess {
            password: Some("hunter2-data".into()),
            ..NodeAccess::default()
        };
        assert!(!format!("{access:?}").contains("hunter2"));
    }
}
