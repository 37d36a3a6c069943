//! The client's address: the socket peer, or, only when the peer is a trusted proxy, the
//! right-most untrusted address of `Forwarded` (RFC 7239) or `X-Forwarded-For`. Headers from
//! untrusted peers are ignored, so they cannot be spoofed.

use ipnet::IpNet;
use std::net::IpAddr;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&ip))
}

/// Parse one node of a forwarding chain: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:80`,
/// `2001:db8::1`, optionally quoted. `None` for `unknown`, obfuscated names or garbage.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

/// The `for=` nodes of a `Forwarded` header, in order.
fn forwarded_nodes(header: &str) -> Vec<&str> {
    header
        .split(',')
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then_some(value.trim())
        })
        .collect()
}

/// Who the client is. `forwarded` and `x_forwarded_for` are the header values (several
/// headers joined with `,`); `Forwarded` is used when present.
pub fn client_ip(
    peer: IpAddr,
    proxies: &[IpNet],
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let chain: Vec<&str> = match (forwarded, x_forwarded_for) {
        (Some(header), _) => forwarded_nodes(header),
        (None, Some(header)) => header.split(',').collect(),
        (None, None) => Vec::new(),
    };
    let mut current = peer;
    for node in chain.iter().rev() {
        if !trusted(current, proxies) {
            break;
        }
        match parse_node(node) {
            Some(ip) => current = ip,
            None => break,
        }
    }
    current
}

/// Whether headers from this peer are believed (for `X-Forwarded-Proto`).
pub fn is_trusted_proxy(peer: IpAddr, proxies: &[IpNet]) -> bool {
    trusted(peer, proxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &proxies, None, Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &proxies, Some("for=1.2.3.4"), None),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn right_most_untrusted_address_of_x_forwarded_for() {
        let proxies = nets(&["10.0.0.0/8"]);
        // A forged left-most entry is ignored: the first untrusted from the right wins.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                &proxies,
                None,
                Some("6.6.6.6, 198.51.100.7, 10.0.0.9")
            ),
            ip("198.51.100.7")
        );
        // All trusted: the left-most.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &proxies, None, Some("10.1.1.1, 10.0.0.9")),
            ip("10.1.1.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &proxies, None, None),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv6_and_forwarded() {
        let proxies = nets(&["fd00::/8", "10.0.0.0/8"]);
        assert_eq!(
            client_ip(
                ip("fd00::1"),
                &proxies,
                Some(r#"for="[2001:db8::7]:4711";proto=https, for=10.0.0.3"#),
                Some("9.9.9.9")
            ),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(ip("fd00::1"), &proxies, None, Some("2001:db8::8")),
            ip("2001:db8::8")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &proxies, Some("for=192.0.2.60:8080"), None),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn unparseable_nodes_stop_the_walk() {
        let proxies = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &proxies, Some("for=unknown"), None),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &proxies, None, Some("1.1.1.1, garbage")),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let proxies = nets(&["127.0.0.0/8"]);
        assert!(is_trusted_proxy(ip("::ffff:127.0.0.1"), &proxies));
        assert!(!is_trusted_proxy(ip("::1"), &proxies));
    }
}
