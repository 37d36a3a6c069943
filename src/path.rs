//! Path normalisation, so that `/token/`, `//token`, `/%74oken` and `/token;jsessionid=x`
//! are all recognised as the token path `/token`.

/// Normalise a request target's path for matching: drop the query and fragment, drop `;`
/// path parameters of each segment, percent-decode, resolve `.` and `..`, collapse empty
/// segments (duplicate and trailing slashes). Returns `None` when the decoded path is not
/// UTF-8 or decodes to a `/` inside a segment (`%2F`), which the gate treats as ambiguous.
pub fn normalize(target: &str) -> Option<String> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let without_params = raw.split(';').next().unwrap_or("");
        let decoded = percent_encoding::percent_decode_str(without_params)
            .decode_utf8()
            .ok()?;
        if decoded.contains('/') || decoded.contains('\\') {
            return None;
        }
        match decoded.as_ref() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment.to_owned()),
        }
    }
    Some(format!("/{}", segments.join("/")))
}

/// Normalise each configured token path once, at start-up, the same way.
pub fn normalize_all(paths: &[String]) -> Vec<String> {
    paths.iter().filter_map(|p| normalize(p)).collect()
}

/// How a request target relates to the token paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// A token path.
    Token,
    /// Not a token path.
    Other,
    /// Only a lenient reading (`%2F` as `/`) makes it a token path: refuse it, since some
    /// servers decode encoded slashes.
    Ambiguous,
}

/// Match a request target against normalised token paths.
pub fn match_token_path(target: &str, token_paths: &[String]) -> PathMatch {
    let is_token = |p: &str| token_paths.iter().any(|t| t == p);
    match normalize(target) {
        Some(path) if is_token(&path) => PathMatch::Token,
        Some(_) => PathMatch::Other,
        None => {
            let path = target.split(['?', '#']).next().unwrap_or("");
            let loose = path
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%5C", "/")
                .replace("%5c", "/")
                .replace('\\', "/");
            let decoded = percent_encoding::percent_decode_str(&loose).decode_utf8_lossy();
            match normalize(&decoded.replace('%', "%25")) {
                Some(p) if is_token(&p) => PathMatch::Ambiguous,
                _ => PathMatch::Other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{match_token_path, normalize, PathMatch};

    #[test]
    fn variants_of_one_path_agree() {
        for variant in [
            "/auth/idp/k8sIdp/token",
            "/auth/idp/k8sIdp/token/",
            "//auth/idp//k8sIdp/token",
            "/auth/idp/k8sIdp/%74oken",
            "/auth/idp/k8sIdp/token;jsessionid=x",
            "/auth/idp/k8sIdp/token?refresh=1",
            "/auth/idp/x/../k8sIdp/./token",
            "/auth;a=b/idp/k8sIdp/token",
        ] {
            assert_eq!(
                normalize(variant).as_deref(),
                Some("/auth/idp/k8sIdp/token"),
                "{variant}"
            );
        }
    }

    #[test]
    fn dot_dot_cannot_climb_above_root() {
        assert_eq!(normalize("/../../token").as_deref(), Some("/token"));
        assert_eq!(normalize("").as_deref(), Some("/"));
    }

    #[test]
    fn encoded_slash_and_bad_utf8_are_ambiguous() {
        assert_eq!(normalize("/auth%2Ftoken"), None);
        assert_eq!(normalize("/auth%5Ctoken"), None);
        assert_eq!(normalize("/%ff%fe"), None);
    }

    #[test]
    fn token_path_matching() {
        let paths = vec!["/auth/idp/k8sIdp/token".to_owned()];
        assert_eq!(
            match_token_path("/auth/idp/k8sIdp/token/", &paths),
            PathMatch::Token
        );
        assert_eq!(
            match_token_path("/auth/idp/k8sIdp/userinfo", &paths),
            PathMatch::Other
        );
        assert_eq!(
            match_token_path("/auth/idp%2Fk8sIdp/token", &paths),
            PathMatch::Ambiguous
        );
        assert_eq!(match_token_path("/api%2Fv1/pods", &paths), PathMatch::Other);
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(normalize("/a/%2e%2e/token").as_deref(), Some("/token"));
    }
}
