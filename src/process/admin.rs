//! The admin listener: `/metrics`, `/grace-advice`, `/livez`, `/readyz`, on its own address.

use crate::health::readiness::Readiness;
use crate::observe::grace::GraceAdvice;
use crate::observe::metrics::Metrics;
use crate::store::TokenStore;
use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// Serves the admin endpoints.
pub struct AdminApp {
    metrics: Metrics,
    readiness: Arc<Readiness>,
    store: Arc<dyn TokenStore>,
    grace_advice: Arc<GraceAdvice>,
}

impl AdminApp {
    /// An admin app over these parts.
    pub fn new(
        metrics: Metrics,
        readiness: Arc<Readiness>,
        store: Arc<dyn TokenStore>,
        grace_advice: Arc<GraceAdvice>,
    ) -> Self {
        AdminApp {
            metrics,
            readiness,
            store,
            grace_advice,
        }
    }
}

fn response(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> http::Response<Vec<u8>> {
    let body = body.into();
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let header = session.req_header();
        if header.method != http::Method::GET && header.method != http::Method::HEAD {
            return response(405, "text/plain", "method not allowed\n");
        }
        match header.uri.path() {
            "/metrics" => {
                self.metrics
                    .store_gauges(self.store.tombstone_count(), self.store.eviction_count());
                let health = self.store.health();
                self.metrics.store_health(&health);
                response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            "/grace-advice" => response(200, "application/json", self.grace_advice.report()),
            "/livez" => response(200, "text/plain", "ok\n"),
            "/readyz" => match self.readiness.check() {
                Ok(()) => response(200, "text/plain", "ready\n"),
                Err(reason) => response(503, "text/plain", format!("not ready: {reason}\n")),
            },
            _ => response(404, "text/plain", "not found\n"),
        }
    }
}
