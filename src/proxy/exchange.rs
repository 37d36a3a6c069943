//! One refresh exchange with the IdP, on the gate's own upstream connection: it belongs to
//! the claim, not to the client's connection, so it completes even if the client leaves.

use crate::http::answer::Answer;
use crate::http::respond::is_hop_by_hop;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

/// The most informational (1xx) answers skipped before the final answer.
const MAX_INFORMATIONAL: usize = 16;

/// The largest upstream answer to a refresh grant the gate accepts.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// How an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeFailure {
    /// The request never reached the IdP whole (connect refused, write failed): the IdP
    /// cannot have rotated the token.
    NotSent,
    /// The request was sent, then the connection failed or the answer was unusable
    /// (reset, truncated, over the size cap): the outcome at the IdP is unknown.
    AfterSend,
}

/// Where refresh exchanges go: the IdP's token endpoint ([`Exchanger`]), or a fake in the
/// refresh handler's unit tests.
#[async_trait]
pub trait TokenEndpoint: Send + Sync + 'static {
    /// Send one request and read the whole answer. The caller bounds the total time.
    async fn send(&self, header: RequestHeader, body: Bytes) -> Result<Answer, ExchangeFailure>;
}

/// Sends refresh exchanges to the IdP, pooling connections.
pub struct Exchanger {
    connector: Connector,
    peer: HttpPeer,
}

impl std::fmt::Debug for Exchanger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanger")
            .field("peer", &self.peer.to_string())
            .finish()
    }
}

impl Exchanger {
    /// An exchanger for `peer`, with the connector options (CA file) of the server.
    pub fn new(connector: Connector, peer: HttpPeer) -> Self {
        Exchanger { connector, peer }
    }
}

#[async_trait]
impl TokenEndpoint for Exchanger {
    async fn send(&self, header: RequestHeader, body: Bytes) -> Result<Answer, ExchangeFailure> {
        let (mut http, _reused) = self
            .connector
            .get_http_session(&self.peer)
            .await
            .map_err(|_| ExchangeFailure::NotSent)?;
        http.write_request_header(Box::new(header))
            .await
            .map_err(|_| ExchangeFailure::NotSent)?;
        if !body.is_empty() {
            http.write_body(&body)
                .await
                .map_err(|_| ExchangeFailure::NotSent)?;
        }
        http.finish_body()
            .await
            .map_err(|_| ExchangeFailure::NotSent)?;
        // From here on the IdP may have acted on the request. Informational answers (100,
        // 102, 103) come before the final one and are skipped; a 101 is no answer to a
        // token request.
        let mut informational = 0;
        let response = loop {
            http.read_response()
                .await
                .map_err(|_| ExchangeFailure::AfterSend)?;
            let response = http.resp_header().ok_or(ExchangeFailure::AfterSend)?;
            match response.status.as_u16() {
                101 => return Err(ExchangeFailure::AfterSend),
                100..=199 if informational < MAX_INFORMATIONAL => informational += 1,
                100..=199 => return Err(ExchangeFailure::AfterSend),
                _ => break response,
            }
        };
        let status = response.status.as_u16();
        let headers: Vec<(String, Vec<u8>)> = response
            .headers
            .iter()
            .filter(|(name, _)| !is_hop_by_hop(name.as_str()) && name.as_str() != "content-length")
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        let mut body = BytesMut::new();
        while let Some(chunk) = http
            .read_body_bytes()
            .await
            .map_err(|_| ExchangeFailure::AfterSend)?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ExchangeFailure::AfterSend);
            }
            body.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(http, &self.peer, self.peer.options.idle_timeout)
            .await;
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }
}
