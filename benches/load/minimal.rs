//! The smallest Pingora proxy: one upstream peer (plain HTTP, keep-alive), no filters, on
//! the gate's own engine settings (`engine_conf()`, `tcp_listener()`) and allocator (this binary links the
//! gate's lib). The benchmark runs it as a child process of itself, so that its CPU is
//! measured like the gate's; the ratio between the two is the gate's own cost.

use async_trait::async_trait;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;

/// The variable that selects a role for this binary, and the value for this one.
pub const ROLE_VAR: &str = "LOAD_BENCH_ROLE";
/// The minimal proxy's role.
pub const ROLE: &str = "minimal-proxy";
/// Where it listens.
pub const LISTEN_VAR: &str = "LOAD_BENCH_LISTEN";
/// Its upstream.
pub const UPSTREAM_VAR: &str = "LOAD_BENCH_UPSTREAM";

struct Minimal {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Minimal {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Serve until killed.
pub fn serve() -> ! {
    let upstream = var(UPSTREAM_VAR).parse().expect("an upstream address");
    let mut server =
        Server::new_with_opt_and_conf(None, refresh_gate::process::engine::engine_conf());
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Minimal { upstream });
    proxy.add_listener(refresh_gate::process::engine::tcp_listener(&var(
        LISTEN_VAR,
    )));
    server.add_service(proxy);
    server.run_forever()
}
