//! Writing answers to the client and shaping the request the gate sends upstream.

use crate::http::answer::{Answer, Freshness};
use crate::http::respond::is_hop_by_hop;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use std::net::IpAddr;

/// Write a complete answer and end the response.
pub async fn write_answer(
    session: &mut Session,
    answer: &Answer,
    freshness: Freshness,
) -> Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for (name, value) in &answer.headers {
        if is_hop_by_hop(name) || name == "content-length" {
            continue;
        }
        if freshness == Freshness::FreshDate && name == "date" {
            continue;
        }
        header.append_header(name.clone(), value.as_slice())?;
    }
    if freshness == Freshness::FreshDate {
        header.insert_header(
            "date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )?;
    }
    header.insert_header("content-length", answer.body.len().to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(answer.body.clone()), true)
        .await?;
    Ok(())
}

/// Append the client to `X-Forwarded-For` and set `X-Forwarded-Proto`.
pub fn add_forwarded(
    header: &mut RequestHeader,
    client: Option<IpAddr>,
    proto: &str,
) -> Result<()> {
    if let Some(ip) = client {
        let value = match header
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
            _ => ip.to_string(),
        };
        header.insert_header("x-forwarded-for", value)?;
    }
    header.insert_header("x-forwarded-proto", proto)?;
    Ok(())
}

/// Remove hop-by-hop headers (and those the `Connection` header names), except what an
/// upgrade (WebSocket, SPDY) needs to reach the upstream.
pub fn strip_hop_by_hop(header: &mut RequestHeader, keep_upgrade: bool) {
    let named: Vec<String> = header
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    for name in named {
        if keep_upgrade && name == "upgrade" {
            continue;
        }
        if name != "content-length" && name != "host" {
            header.remove_header(&name);
        }
    }
    for name in ["keep-alive", "proxy-connection", "te", "trailer"] {
        header.remove_header(name);
    }
    if !keep_upgrade {
        header.remove_header("connection");
        header.remove_header("upgrade");
    }
}

/// The request the gate sends for a refresh exchange: the client's request line and
/// headers (its `Host` kept), without `Accept-Encoding` (the answer must stay readable and
/// replayable), hop-by-hop headers or `Expect`, with the exact body length.
pub fn exchange_request(
    client_request: &RequestHeader,
    body_len: usize,
    client: Option<IpAddr>,
    proto: &str,
) -> Result<RequestHeader> {
    let mut header = client_request.clone();
    strip_hop_by_hop(&mut header, false);
    header.remove_header("transfer-encoding");
    header.remove_header("accept-encoding");
    header.remove_header("expect");
    header.insert_header("content-length", body_len.to_string())?;
    add_forwarded(&mut header, client, proto)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/token", None).unwrap();
        req.insert_header("host", "idp.example.com").unwrap();
        req.insert_header("accept-encoding", "gzip").unwrap();
        req.insert_header("connection", "keep-alive, x-secret-hop")
            .unwrap();
        req.insert_header("x-secret-hop", "1").unwrap();
        req.insert_header("transfer-encoding", "chunked").unwrap();
        req.insert_header("expect", "100-continue").unwrap();
        req.insert_header("x-forwarded-for", "10.0.0.1").unwrap();
        req
    }

    #[test]
    fn exchange_request_is_clean() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let out = exchange_request(&request(), 42, Some(ip), "http").unwrap();
        assert_eq!(out.headers.get("host").unwrap(), "idp.example.com");
        assert_eq!(out.headers.get("content-length").unwrap(), "42");
        assert_eq!(
            out.headers.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 127.0.0.1"
        );
        assert_eq!(out.headers.get("x-forwarded-proto").unwrap(), "http");
        for gone in [
            "accept-encoding",
            "connection",
            "x-secret-hop",
            "transfer-encoding",
            "expect",
        ] {
            assert!(out.headers.get(gone).is_none(), "{gone} kept");
        }
    }

    #[test]
    fn upgrade_headers_survive_for_upgrades() {
        let mut req = RequestHeader::build("GET", b"/ws", None).unwrap();
        req.insert_header("connection", "Upgrade").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        strip_hop_by_hop(&mut req, true);
        assert_eq!(req.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(req.headers.get("connection").unwrap(), "Upgrade");
        assert!(req.headers.get("keep-alive").is_none());
    }
}
