//! The IdP as Pingora peers: resolved once at start-up, TLS verification never off.

use crate::config::UpstreamSettings;
use pingora::upstreams::peer::HttpPeer;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Why the upstream could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host did not resolve.
    #[error("upstream.url: cannot resolve {host}:{port}: {message}")]
    Resolve {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The resolver's message.
        message: String,
    },
}

/// The peers the gate sends to: one per kind of traffic, differing only in timeouts.
#[derive(Debug, Clone)]
pub struct UpstreamPeers {
    /// Anything off the token path: no read timeout (watches, exec, long polls).
    pub passthrough: HttpPeer,
    /// Token-path requests forwarded through the proxy: bounded by `request_timeout`.
    pub token: HttpPeer,
    /// Refresh exchanges: bounded by `exchange_timeout`.
    pub exchange: HttpPeer,
    /// The resolved address.
    pub address: SocketAddr,
}

/// How long an idle upstream connection is kept in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl UpstreamPeers {
    /// Resolve the IdP and build the peers.
    pub fn from_settings(upstream: &UpstreamSettings) -> Result<UpstreamPeers, UpstreamError> {
        let target = &upstream.target;
        let address = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| UpstreamError::Resolve {
                host: target.host.clone(),
                port: target.port,
                message: e.to_string(),
            })?
            .next()
            .ok_or_else(|| UpstreamError::Resolve {
                host: target.host.clone(),
                port: target.port,
                message: "no address".to_owned(),
            })?;
        let base = base_peer(
            address,
            target.tls,
            upstream.sni(),
            upstream.connect_timeout,
        );
        let mut token = base.clone();
        token.options.read_timeout = Some(upstream.request_timeout);
        token.options.write_timeout = Some(upstream.request_timeout);
        let mut exchange = base.clone();
        exchange.options.read_timeout = Some(upstream.exchange_timeout);
        exchange.options.write_timeout = Some(upstream.request_timeout);
        Ok(UpstreamPeers {
            passthrough: base,
            token,
            exchange,
            address,
        })
    }
}

/// One peer with verification on. Pingora disables verification for an empty SNI, so an
/// https peer always gets a name (the host, or `tls_server_name`).
fn base_peer(address: SocketAddr, tls: bool, sni: String, connect_timeout: Duration) -> HttpPeer {
    assert!(
        !tls || !sni.is_empty(),
        "an https upstream always has a server name to verify"
    );
    let mut peer = HttpPeer::new(address, tls, sni);
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    peer.options.connection_timeout = Some(connect_timeout);
    peer.options.idle_timeout = Some(IDLE_TIMEOUT);
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, name: Option<&str>) -> UpstreamSettings {
        let name = name
            .map(|n| format!("tls_server_name = \"{n}\"\n"))
            .unwrap_or_default();
        crate::config::Config::parse(&format!(
            "[listen]\naddress = \"127.0.0.1:1\"\n[upstream]\nurl = \"{url}\"\n{name}token_paths = [\"/token\"]\n"
        ))
        .unwrap()
        .validate()
        .unwrap()
        .upstream
    }

    #[test]
    fn https_peer_verifies_the_configured_name() {
        let peers = UpstreamPeers::from_settings(&config(
            "https://127.0.0.1:8443",
            Some("idp.example.com"),
        ))
        .unwrap();
        for peer in [&peers.passthrough, &peers.token, &peers.exchange] {
            assert_eq!(peer.sni, "idp.example.com");
            assert!(peer.options.verify_cert && peer.options.verify_hostname);
        }
    }

    #[test]
    fn https_peer_by_address_still_has_a_name() {
        let peers = UpstreamPeers::from_settings(&config("https://127.0.0.1:8443", None)).unwrap();
        assert_eq!(peers.passthrough.sni, "127.0.0.1");
    }

    #[test]
    fn only_the_token_peers_have_read_timeouts() {
        let peers = UpstreamPeers::from_settings(&config("http://127.0.0.1:8080", None)).unwrap();
        assert_eq!(peers.passthrough.options.read_timeout, None);
        assert_eq!(
            peers.token.options.read_timeout,
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            peers.exchange.options.read_timeout,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn unresolvable_host_is_a_clear_error() {
        let err = UpstreamPeers::from_settings(&config("http://no-such-host.invalid:80", None))
            .unwrap_err();
        assert!(err.to_string().contains("cannot resolve"), "{err}");
    }
}
