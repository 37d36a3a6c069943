//! Who a request comes from, as the glue reads it: the client's address and scheme
//! (forwarding headers believed only from trusted proxies), the request id, and the token
//! endpoint URL that audit events name.

use crate::http::client_ip;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::net::IpAddr;

/// The header carrying the request id, received or generated, and forwarded upstream.
pub(super) const REQUEST_ID: &str = "x-request-id";

/// A request id the gate accepts from a client: short printable ASCII.
pub(super) fn acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 128 && value.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh request id: 128 random bits in hex.
pub(super) fn generate_request_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The `Host` as sent, when it is printable ASCII (for logs), else `-`.
pub(super) fn printable_host(header: &RequestHeader) -> &str {
    header
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("-")
}

/// The `Host` when it is a plain `host[:port]` (letters, digits, `-`, `.`, a bracketed IPv6
/// address, a numeric port): what a token endpoint URL may be built from. Anything else
/// (`/`, `?`, `#`, `@`, ...) could retarget the URL an assertion's `aud` or a DPoP proof's
/// `htu` must name.
pub(super) fn endpoint_host(header: &RequestHeader) -> Option<&str> {
    let host = header.headers.get("host")?.to_str().ok()?;
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (name_ok && port_ok).then_some(host)
}

/// The token endpoint URL a client used, for audit events (no query, no `;` parameters).
pub(super) fn token_url(header: &RequestHeader, proto: &str) -> String {
    let path = crate::http::path::without_parameters(header.uri.path());
    format!("{proto}://{}{path}", printable_host(header))
}

/// The client's address and scheme, believing forwarding headers only from trusted
/// proxies.
pub(super) fn client_of(
    session: &Session,
    trusted_proxies: &[IpNet],
) -> (Option<IpAddr>, &'static str) {
    let Some(peer) = session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
    else {
        return (None, "http");
    };
    let headers = &session.req_header().headers;
    let joined = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let ip = client_ip::client_ip(
        peer,
        trusted_proxies,
        joined("forwarded").as_deref(),
        joined("x-forwarded-for").as_deref(),
    );
    let forwarded_https = client_ip::is_trusted_proxy(peer, trusted_proxies)
        && headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let own_tls = session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some());
    (
        Some(ip),
        if forwarded_https || own_tls {
            "https"
        } else {
            "http"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> RequestHeader {
        let mut header = RequestHeader::build("POST", b"/token", None).unwrap();
        header.insert_header("host", host).unwrap();
        header
    }

    #[test]
    fn only_plain_hosts_make_endpoint_urls() {
        for good in [
            "login.example.com",
            "login.example.com:8443",
            "127.0.0.1:9480",
            "[::1]:9480",
            "[::1]",
        ] {
            assert_eq!(endpoint_host(&with_host(good)), Some(good), "{good}");
        }
        for bad in [
            "api.example.net/orders#",
            "a?b",
            "user@host",
            "host:",
            "host:99999x",
            "",
            "ho st",
            "[::1]x",
        ] {
            assert_eq!(endpoint_host(&with_host(bad)), None, "{bad}");
        }
    }
}
