//! The one place that turns the gate's own answers into HTTP: RFC 6749 §5.2 JSON errors on
//! the token path, and the allow-listed form of a replayed answer.

use crate::http::answer::Answer;
use bytes::Bytes;

/// An answer the gate writes itself on the token path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateReply {
    /// `400 invalid_request` or `unsupported_grant_type`: a token request the gate refused
    /// as uncertain or malformed.
    Refused(crate::oauth::grant::Refusal),
    /// `400 invalid_grant`: a refused replay.
    InvalidGrant(&'static str),
    /// `413`: a token-path body over the cap.
    BodyTooLarge(usize),
    /// `408`: the token-path body did not arrive in time.
    BodyTimeout,
    /// `502`: nothing reached the IdP.
    Unreachable,
    /// `504`: the IdP did not answer in time.
    Timeout,
    /// `503`: too many exchanges in flight.
    Busy,
    /// `503`: this address has `max_detached_per_source` exchanges running whose clients
    /// left.
    SourceBusy,
    /// `503`: the shared store cannot be reached (`on_store_error = "fail-closed"`).
    StoreUnavailable,
    /// `500`: an internal fault (never expected).
    Internal,
}

impl GateReply {
    fn parts(&self) -> (u16, &'static str, String) {
        match self {
            GateReply::Refused(refusal) => (400, refusal.error(), refusal.description()),
            GateReply::InvalidGrant(d) => (400, "invalid_grant", (*d).to_owned()),
            GateReply::BodyTooLarge(cap) => (
                413,
                "invalid_request",
                format!("request body exceeds {cap} bytes"),
            ),
            GateReply::BodyTimeout => (
                408,
                "invalid_request",
                "request body not received in time".to_owned(),
            ),
            GateReply::Unreachable => (
                502,
                "temporarily_unavailable",
                "the identity provider cannot be reached; retry".to_owned(),
            ),
            GateReply::Timeout => (
                504,
                "temporarily_unavailable",
                "the identity provider did not answer in time; retry".to_owned(),
            ),
            GateReply::Busy => (
                503,
                "temporarily_unavailable",
                "too many refresh exchanges in flight; retry".to_owned(),
            ),
            GateReply::SourceBusy => (
                503,
                "temporarily_unavailable",
                "too many refresh exchanges from this address are still running; retry".to_owned(),
            ),
            GateReply::StoreUnavailable => (
                503,
                "temporarily_unavailable",
                crate::policy::RefusalReason::StoreUnavailable
                    .description()
                    .to_owned(),
            ),
            GateReply::Internal => (500, "server_error", "internal error".to_owned()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.parts().0
    }

    /// The full answer: RFC 6749 JSON, never cached.
    pub fn to_answer(&self) -> Answer {
        let (status, error, description) = self.parts();
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut headers = vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("cache-control".into(), b"no-store".to_vec()),
            ("pragma".into(), b"no-cache".to_vec()),
        ];
        if status == 503 {
            headers.push(("retry-after".into(), b"1".to_vec()));
        }
        Answer {
            status,
            headers,
            body: Bytes::from(body.to_string()),
        }
    }
}

/// Headers of an upstream answer that a replay may carry.
const REPLAY_ALLOWED: &[&str] = &["content-type", "cache-control", "pragma"];

/// The form of an upstream answer the gate remembers for replays: status, body, and only
/// allow-listed headers (never `Set-Cookie`, `Content-Encoding` or hop-by-hop headers),
/// with `Cache-Control: no-store` and `Pragma: no-cache` added if missing.
pub fn replayable(upstream: &Answer) -> Answer {
    let mut headers: Vec<(String, Vec<u8>)> = upstream
        .headers
        .iter()
        .filter(|(name, _)| REPLAY_ALLOWED.contains(&name.as_str()))
        .cloned()
        .collect();
    if !headers.iter().any(|(n, _)| n == "cache-control") {
        headers.push(("cache-control".into(), b"no-store".to_vec()));
    }
    if !headers.iter().any(|(n, _)| n == "pragma") {
        headers.push(("pragma".into(), b"no-cache".to_vec()));
    }
    Answer {
        status: upstream.status,
        headers,
        body: upstream.body.clone(),
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and framing headers the gate recomputes.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for a header that must not be copied from one hop to the next.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_rfc6749_json() {
        let answer = GateReply::InvalidGrant("refresh token has already been used").to_answer();
        assert_eq!(answer.status, 400);
        assert_eq!(
            answer.header("content-type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(answer.header("cache-control"), Some(&b"no-store"[..]));
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(GateReply::Unreachable.status(), 502);
        assert_eq!(GateReply::Timeout.status(), 504);
        assert_eq!(GateReply::Busy.status(), 503);
        assert_eq!(GateReply::BodyTooLarge(65536).status(), 413);
    }

    #[test]
    fn replay_keeps_only_allowed_headers() {
        let upstream = Answer {
            status: 200,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("set-cookie".into(), b"JSESSIONID=1".to_vec()),
                ("content-encoding".into(), b"gzip".to_vec()),
                ("connection".into(), b"close".to_vec()),
                ("x-custom".into(), b"1".to_vec()),
            ],
            body: Bytes::from_static(b"{}"),
        };
        let replay = replayable(&upstream);
        let names: Vec<_> = replay.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "cache-control", "pragma"]);
        assert_eq!(replay.body, upstream.body);
    }
}
