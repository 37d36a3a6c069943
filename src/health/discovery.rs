//! The discovery check: does every token endpoint the IdP names (`token_endpoint`, and
//! `mtls_endpoint_aliases.token_endpoint` of RFC 8705) lie on a configured token path?
//! If not, a typo has silently switched the gate off, and readiness says so.

use serde::Deserialize;

/// What the last discovery check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryVerdict {
    /// Not checked yet, or the check is off.
    Unchecked,
    /// The token endpoint's path is one of the token paths.
    Matches,
    /// The IdP names a token endpoint the gate does not guard.
    Mismatch {
        /// The path the IdP names.
        token_endpoint_path: String,
    },
    /// The document could not be fetched or read (readiness is not affected).
    Unavailable(String),
}

impl DiscoveryVerdict {
    /// Whether this verdict makes the gate not ready.
    pub fn blocks_readiness(&self) -> bool {
        matches!(self, DiscoveryVerdict::Mismatch { .. })
    }
}

#[derive(Deserialize)]
struct Document {
    token_endpoint: Option<String>,
    #[serde(default)]
    mtls_endpoint_aliases: Option<Aliases>,
}

#[derive(Deserialize)]
struct Aliases {
    token_endpoint: Option<String>,
}

/// Judge a discovery document against the normalised token paths.
pub fn judge(document: &[u8], token_paths: &[String]) -> DiscoveryVerdict {
    let Ok(doc) = serde_json::from_slice::<Document>(document) else {
        return DiscoveryVerdict::Unavailable("discovery document is not JSON".to_owned());
    };
    let Some(endpoint) = doc.token_endpoint else {
        return DiscoveryVerdict::Unavailable(
            "discovery document has no token_endpoint".to_owned(),
        );
    };
    let alias = doc.mtls_endpoint_aliases.and_then(|a| a.token_endpoint);
    for endpoint in std::iter::once(endpoint).chain(alias) {
        let path = crate::http::path::url_path(&endpoint);
        if crate::http::path::match_token_path(path, token_paths)
            != crate::http::path::PathMatch::Token
        {
            return DiscoveryVerdict::Mismatch {
                token_endpoint_path: path.split(['?', '#']).next().unwrap_or(path).to_owned(),
            };
        }
    }
    DiscoveryVerdict::Matches
}

/// The discovery document's path for the first token path: its parent (the issuer) plus
/// `/.well-known/openid-configuration` (OpenUnison: `/auth/idp/k8sIdp/token` →
/// `/auth/idp/k8sIdp/.well-known/openid-configuration`).
pub fn default_discovery_path(token_path: &str) -> String {
    let trimmed = token_path.trim_end_matches('/');
    let parent = trimmed.rsplit_once('/').map_or("", |(parent, _)| parent);
    format!("{parent}/.well-known/openid-configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        vec!["/auth/idp/k8sIdp/token".to_owned()]
    }

    #[test]
    fn the_mtls_alias_is_checked_too() {
        let doc = br#"{"token_endpoint":"https://idp/auth/idp/k8sIdp/token","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp/oauth2/token"}}"#;
        assert_eq!(
            judge(doc, &paths()),
            DiscoveryVerdict::Mismatch {
                token_endpoint_path: "/oauth2/token".to_owned()
            }
        );
        let doc = br#"{"token_endpoint":"https://idp/auth/idp/k8sIdp/token","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.idp/auth/idp/k8sIdp/token"}}"#;
        assert_eq!(judge(doc, &paths()), DiscoveryVerdict::Matches);
    }

    #[test]
    fn matching_endpoint() {
        let doc =
            br#"{"issuer":"x","token_endpoint":"https://login.example.com/auth/idp/k8sIdp/token"}"#;
        assert_eq!(judge(doc, &paths()), DiscoveryVerdict::Matches);
    }

    #[test]
    fn a_typo_is_a_mismatch_that_blocks_readiness() {
        let doc = br#"{"token_endpoint":"https://login.example.com/auth/idp/k8s-idp/token"}"#;
        let verdict = judge(doc, &paths());
        assert_eq!(
            verdict,
            DiscoveryVerdict::Mismatch {
                token_endpoint_path: "/auth/idp/k8s-idp/token".to_owned()
            }
        );
        assert!(verdict.blocks_readiness());
    }

    #[test]
    fn unreadable_documents_do_not_block() {
        for doc in [&b"<html>"[..], br#"{"issuer":"x"}"#] {
            let verdict = judge(doc, &paths());
            assert!(matches!(verdict, DiscoveryVerdict::Unavailable(_)));
            assert!(!verdict.blocks_readiness());
        }
    }

    #[test]
    fn default_path_is_the_issuers_well_known() {
        assert_eq!(
            default_discovery_path("/auth/idp/k8sIdp/token"),
            "/auth/idp/k8sIdp/.well-known/openid-configuration"
        );
        assert_eq!(
            default_discovery_path("/token"),
            "/.well-known/openid-configuration"
        );
    }
}
