//! The `ProxyHttp` implementation: route token paths to the grant classifier and the
//! refresh handler, forward everything else untouched.

use super::body::{read_body, BodyError};
use super::origin::{
    acceptable_request_id, client_of, endpoint_host, generate_request_id, printable_host,
    token_url, REQUEST_ID,
};
use super::refresh::{
    ClientLink, Endpoint, ForwardCheck, Origin, RefreshHandler, RefreshRequest, Reply,
};
use super::revocation::RevocationWatch;
use super::upstream::UpstreamPeers;
use super::write::{add_forwarded, strip_hop_by_hop, write_answer};
use crate::config::MAX_TOKEN_BODY_BYTES;
use crate::http::answer::Freshness;
use crate::http::path::{match_request, PathMatch, PATH_OVERRIDES};
use crate::http::respond::GateReply;
use crate::oauth::grant::{self, Classification, Forwarded, GrantRules, Refusal, TokenHeaders};
use crate::observe::audit::{RefusedRequest, TokenRequestRefused};
use crate::observe::metrics::{Metrics, RefreshOutcome, Route, UpstreamKind};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy: token paths decided by the gate, everything else forwarded.
pub struct GateProxy {
    refresh: Arc<RefreshHandler>,
    peers: UpstreamPeers,
    token_paths: Vec<String>,
    request_timeout: Duration,
    trusted_proxies: Vec<ipnet::IpNet>,
    rules: GrantRules,
    revocation_paths: Vec<String>,
}

/// The proxy's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// The token paths (`[upstream] token_paths`), normalised by [`GateProxy::new`].
    pub token_paths: Vec<String>,
    /// How long a token-path body may take to arrive (`[upstream] request_timeout`).
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which grants are forwarded untouched (`[upstream] forward_grant_types`).
    pub rules: GrantRules,
    /// The IdP's RFC 7009 revocation path (`[upstream] revocation_path`): a revocation the
    /// IdP answers 200 closes the revoked token's replay window.
    pub revocation_path: Option<String>,
}

/// The client's connection while a refresh exchange runs: closed, or sending more.
struct SessionLink<'a>(&'a mut Session);

#[async_trait]
impl ClientLink for SessionLink<'_> {
    async fn closed(&mut self) -> bool {
        self.0.read_body_or_idle(true).await.is_err()
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    route: Route,
    client_ip: Option<IpAddr>,
    /// The scheme the client used: the gate's own, or a trusted proxy's `X-Forwarded-Proto`.
    proto: &'static str,
    upstream_started: Option<Instant>,
    request_id: String,
    /// The body of a revocation request, watched as it is forwarded.
    revocation: Option<RevocationWatch>,
}

/// Where a refresh grant came from, for the refresh handler.
fn refresh_origin(session: &Session, ctx: &RequestCtx) -> Origin {
    Origin {
        source: ctx.client_ip,
        peer: session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip()),
        proto: ctx.proto,
        request_id: ctx.request_id.clone(),
        token_url: token_url(session.req_header(), ctx.proto),
        endpoint: Some(Endpoint {
            origin: endpoint_host(session.req_header())
                .map(|host| format!("{}://{host}", ctx.proto)),
            path: crate::http::path::without_parameters(session.req_header().uri.path())
                .into_owned(),
        }),
    }
}

impl GateProxy {
    /// The proxy over the refresh handler and the IdP's peers.
    pub fn new(refresh: Arc<RefreshHandler>, peers: UpstreamPeers, settings: GateSettings) -> Self {
        GateProxy {
            refresh,
            peers,
            token_paths: crate::http::path::normalize_all(&settings.token_paths),
            request_timeout: settings.request_timeout,
            trusted_proxies: settings.trusted_proxies,
            rules: settings.rules,
            revocation_paths: crate::http::path::normalize_all(settings.revocation_path.as_slice()),
        }
    }

    fn metrics(&self) -> &Metrics {
        self.refresh.metrics()
    }

    /// Write an answer the gate gives outside any decision on a token (not counted as an
    /// outcome).
    async fn reply(&self, session: &mut Session, reply: GateReply) -> pingora::Result<bool> {
        write_answer(session, &reply.to_answer(), Freshness::FreshDate).await?;
        Ok(true)
    }

    /// Write a decided answer and count its outcome: the one place outcomes are counted.
    async fn answer(&self, session: &mut Session, reply: Reply) -> pingora::Result<bool> {
        self.metrics().refresh_outcome(reply.outcome, reply.refused);
        write_answer(session, &reply.answer, reply.freshness).await?;
        Ok(true)
    }

    /// Refuse a token-path request: count it, audit it (capped per source), answer RFC 6749
    /// JSON. Never forwarded.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        refusal: Refusal,
    ) -> pingora::Result<bool> {
        let token_url = token_url(session.req_header(), ctx.proto);
        TokenRequestRefused {
            request: RefusedRequest {
                request_id: &ctx.request_id,
                token_url: &token_url,
                client_ip: ctx
                    .client_ip
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            },
            refusal,
            now: self.refresh.now(),
        }
        .emit(self.refresh.auditor());
        let reply = match refusal {
            Refusal::BodyTooLarge => GateReply::BodyTooLarge(MAX_TOKEN_BODY_BYTES),
            refusal => GateReply::Refused(refusal),
        };
        let outcome = match refusal {
            Refusal::UnsupportedGrant => RefreshOutcome::UnsupportedGrant,
            _ => RefreshOutcome::InvalidRequest,
        };
        self.answer(session, Reply::gate(reply, outcome)).await
    }

    async fn token_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        // Every method's body is read: a grant in a PUT or a `post` body is seen, not
        // classified on an empty body.
        let body = match read_body(session, self.request_timeout).await {
            Ok(body) => body,
            Err(error) => return self.unreadable_body(session, ctx, error).await,
        };
        match self.classify(session, &body) {
            Classification::Forward(forwarded) => {
                self.forward_checked(session, ctx, forwarded).await
            }
            Classification::Refuse(refusal) => self.refuse(session, ctx, refusal).await,
            Classification::Refresh(grant) => {
                let refresh = RefreshRequest {
                    grant,
                    header: session.req_header().clone(),
                    body,
                    origin: refresh_origin(session, ctx),
                };
                let reply = self
                    .refresh
                    .handle(refresh, &mut SessionLink(&mut *session))
                    .await;
                self.answer(session, reply).await
            }
        }
    }

    /// A token-path body that could not be read whole: never forwarded.
    async fn unreadable_body(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        error: BodyError,
    ) -> pingora::Result<bool> {
        session.set_keepalive(None);
        match error {
            BodyError::TooLarge => self.refuse(session, ctx, Refusal::BodyTooLarge).await,
            BodyError::TimedOut => self.reply(session, GateReply::BodyTimeout).await,
            BodyError::Client(error) => {
                // A malformed or truncated body (bad chunk framing, a client that went
                // away): answer 400 if anyone is still listening.
                tracing::debug!(error = ?error.etype(), "unreadable token-path body");
                match self.refuse(session, ctx, Refusal::UnreadableBody).await {
                    Ok(answered) => Ok(answered),
                    Err(_) => Err(error),
                }
            }
        }
    }

    /// Classify the request with every header value the classifier reads.
    fn classify(&self, session: &Session, body: &[u8]) -> Classification {
        let header = session.req_header();
        let headers = TokenHeaders::collect(|name| {
            header
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect()
        });
        let upgrade = header.headers.contains_key("upgrade")
            || header.headers.contains_key("http2-settings")
            || session.is_upgrade_req();
        let request = headers.request(header.method.as_str(), header.uri.query(), upgrade, body);
        grant::classify(&request, &self.rules)
    }

    /// Forward a grant untouched unless one of its token-like values is a token the gate
    /// tombstoned (a spent refresh token as a token exchange's `subject_token`).
    async fn forward_checked(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        forwarded: Forwarded,
    ) -> pingora::Result<bool> {
        match self.refresh.check_forwarded(&forwarded.suspects).await {
            ForwardCheck::Forward => Ok(false),
            ForwardCheck::Spent => self.refuse(session, ctx, Refusal::SpentToken).await,
            ForwardCheck::Answer(reply) => self.answer(session, reply).await,
        }
    }
}

#[async_trait]
impl ProxyHttp for GateProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: Route::Passthrough,
            client_ip: None,
            proto: "http",
            upstream_started: None,
            request_id: String::new(),
            revocation: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        (ctx.client_ip, ctx.proto) = client_of(session, &self.trusted_proxies);
        // Serve pipelined HTTP/1.1 requests in order instead of dropping the ones after the
        // first (RFC 9112 9.3.2).
        session.set_pipelining_enabled(true);
        ctx.request_id = match session.req_header().headers.get(REQUEST_ID) {
            Some(value) if acceptable_request_id(value.as_bytes()) => {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            }
            _ => {
                let id = generate_request_id();
                session.req_header_mut().insert_header(REQUEST_ID, &id)?;
                id
            }
        };
        let header = session.req_header();
        let overrides = PATH_OVERRIDES
            .iter()
            .flat_map(|name| header.headers.get_all(*name))
            .map(|value| value.as_bytes());
        match match_request(header.uri.path(), overrides, &self.token_paths) {
            PathMatch::Other => {
                let revocation = match_request(
                    header.uri.path(),
                    std::iter::empty(),
                    &self.revocation_paths,
                );
                if revocation != PathMatch::Other && header.method == http::Method::POST {
                    ctx.revocation = Some(RevocationWatch::default());
                }
                Ok(false)
            }
            PathMatch::Ambiguous => {
                ctx.route = Route::Token;
                self.refuse(session, ctx, Refusal::AmbiguousPath).await
            }
            PathMatch::Token => {
                ctx.route = Route::Token;
                self.token_request(session, ctx).await
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let (Some(watch), Some(chunk)) = (ctx.revocation.as_mut(), body.as_ref()) {
            watch.push(chunk);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if upstream_response.status.as_u16() == 200 {
            if let Some(token) = ctx.revocation.take().and_then(|watch| watch.token()) {
                self.refresh.revoked(&token, &ctx.request_id).await;
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let peer = match ctx.route {
            Route::Token => &self.peers.token,
            Route::Passthrough => &self.peers.passthrough,
        };
        Ok(Box::new(peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        strip_hop_by_hop(upstream_request, session.is_upgrade_req());
        let peer = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        add_forwarded(upstream_request, peer, ctx.proto)?;
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let written = if ctx.route == Route::Token && code == 502 {
                let timed_out = matches!(
                    e.etype(),
                    ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                );
                let reply = if timed_out {
                    GateReply::Timeout
                } else {
                    GateReply::Unreachable
                };
                write_answer(session, &reply.to_answer(), Freshness::FreshDate).await
            } else {
                session.respond_error(code).await
            };
            if let Err(error) = written {
                tracing::debug!(%error, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own error lines say about a request: method, path and Host, never the
    /// query (it may carry a `code` or a token under any name).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let header = session.req_header();
        format!(
            "{} {}, Host: {}, request id {}",
            header.method,
            crate::http::path::without_parameters(header.uri.path()),
            printable_host(header),
            ctx.request_id
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        if status > 0 {
            self.metrics().request(ctx.route, status);
        }
        if let Some(started) = ctx.upstream_started {
            self.metrics()
                .upstream_duration(UpstreamKind::Passthrough, started.elapsed().as_secs_f64());
        }
    }
}
