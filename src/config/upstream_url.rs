//! `[upstream] url`: `http://host[:port][/]` or `https://...`, parsed once by validation
//! into an [`UpstreamTarget`] that start-up uses as it is.

use super::error::ConfigError;

const KEY: &str = "upstream.url";

/// The parsed upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `https`?
    pub tls: bool,
    /// The host as written (brackets removed for IPv6).
    pub host: String,
    /// The port (default 80 / 443).
    pub port: u16,
}

impl UpstreamTarget {
    /// Parse `http://host[:port][/]` or `https://...`.
    pub fn parse(url: &str) -> Result<UpstreamTarget, ConfigError> {
        let invalid = |message: &str| ConfigError::invalid(KEY, message);
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if url.is_empty() {
            return Err(invalid(
                "is required: http://host:port or https://host:port of the IdP",
            ));
        } else {
            return Err(invalid("must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/") {
            return Err(invalid(
                "must not have a path: the gate forwards each request's own path",
            ));
        }
        if authority.contains('@') {
            return Err(invalid("must not carry credentials"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed IPv6 bracket"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| invalid("invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(invalid("invalid authority")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (
                    host.to_owned(),
                    port.parse().map_err(|_| invalid("invalid port"))?,
                ),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        Ok(UpstreamTarget { tls, host, port })
    }

    /// The name to verify in the IdP's certificate: `tls_server_name`, else the host.
    /// Never empty: Pingora turns verification off for an empty SNI.
    pub fn server_name(&self, tls_server_name: Option<&str>) -> String {
        tls_server_name.unwrap_or(&self.host).to_owned()
    }

    /// The `Host` header of the gate's own requests (the discovery check):
    /// `tls_server_name` when set, else the URL's authority (the port left out when it is
    /// the scheme's default).
    pub fn host_header(&self, tls_server_name: Option<&str>) -> String {
        match tls_server_name {
            Some(name) => name.to_owned(),
            None if self.port == if self.tls { 443 } else { 80 } => self.host.clone(),
            None if self.host.contains(':') => format!("[{}]:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// The URL in its canonical form, e.g. `https://idp.example.com:443`.
impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_url_forms() {
        let t = UpstreamTarget::parse("https://idp.example.com").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port),
            (true, "idp.example.com", 443)
        );
        assert_eq!(t.to_string(), "https://idp.example.com:443");
        let t = UpstreamTarget::parse("http://[::1]:8080/").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "::1", 8080));
        assert_eq!(t.to_string(), "http://[::1]:8080");
        for bad in [
            "ftp://x",
            "http://x/auth",
            "http://u:p@x",
            "http://:80",
            "http://[::1",
            "http://x:port",
            "",
        ] {
            let error = UpstreamTarget::parse(bad).unwrap_err().to_string();
            assert!(error.contains("upstream.url"), "{bad}: {error}");
        }
        let error = UpstreamTarget::parse("").unwrap_err().to_string();
        assert!(error.contains("is required"), "{error}");
    }

    #[test]
    fn server_name_and_host_header() {
        let t = UpstreamTarget::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(t.server_name(None), "127.0.0.1");
        assert_eq!(t.server_name(Some("idp.example.com")), "idp.example.com");
        assert_eq!(t.host_header(None), "127.0.0.1:8443");
        assert_eq!(t.host_header(Some("idp.example.com")), "idp.example.com");
        let t = UpstreamTarget::parse("https://idp.example.com").unwrap();
        assert_eq!(t.host_header(None), "idp.example.com");
        let t = UpstreamTarget::parse("http://[::1]:8080").unwrap();
        assert_eq!(t.host_header(None), "[::1]:8080");
    }
}
