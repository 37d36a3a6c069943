//! Path normalisation, so that `/token/`, `//token`, `/%74oken` and `/token;jsessionid=x`
//! are all recognised as the token path `/token`, and the loose key under which every form
//! some IdP router maps to a path is one path: case (`/TOKEN`), escapes decoded twice or as
//! `%uXXXX`, trailing spaces and dots (`/token.`, `/token%20`), a NUL that ends a C string,
//! and a file extension (`/token.json`, Spring's suffix matching).

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

/// The path of a URL (`https://host:port/a/b?q` → `/a/b`).
pub fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => "/",
    }
}

/// Headers by which some frameworks route a request to another path than its target (IIS
/// and Symfony honour `X-Original-URL` and `X-Rewrite-URL`).
pub const PATH_OVERRIDES: [&str; 4] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
];

/// Match a request against the token paths by its target, or else by the value of a
/// path-override header (a path or a URL), so a grant sent to another path cannot reach
/// the token endpoint untouched.
pub fn match_request<'v>(
    target: &str,
    overrides: impl IntoIterator<Item = &'v [u8]>,
    token_paths: &[String],
) -> PathMatch {
    let by_target = match_token_path(target, token_paths);
    if by_target != PathMatch::Other {
        return by_target;
    }
    overrides
        .into_iter()
        .map(|value| {
            let value = String::from_utf8_lossy(value);
            let path = if value.contains("://") {
                url_path(&value)
            } else {
                &value
            };
            match_token_path(path, token_paths)
        })
        .find(|m| *m != PathMatch::Other)
        .unwrap_or(PathMatch::Other)
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
    let strict = normalize(target);
    if strict.as_deref().is_some_and(is_token) {
        return PathMatch::Token;
    }
    let keys: Vec<String> = token_paths.iter().map(|p| loose_key(p)).collect();
    let path = target.split(['?', '#']).next().unwrap_or("");
    let request = loose_key(path);
    let is_loose_token = |key: &str| keys.iter().any(|k| k == key);
    if is_loose_token(&request) || without_extension(&request).any(is_loose_token) {
        return if strict.is_some() {
            PathMatch::Token
        } else {
            PathMatch::Ambiguous
        };
    }
    if strict.is_none() {
        let loose = path
            .replace("%2F", "/")
            .replace("%2f", "/")
            .replace("%5C", "/")
            .replace("%5c", "/")
            .replace('\\', "/");
        let key = loose_key(&loose);
        if is_loose_token(&key) || without_extension(&key).any(is_loose_token) {
            return PathMatch::Ambiguous;
        }
    }
    PathMatch::Other
}

/// The loose key of a path (see the module documentation). Paths with equal keys are one
/// token path to the gate.
pub fn loose_key(path: &str) -> String {
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let without_params = raw.split(';').next().unwrap_or("");
        let once = crate::oauth::grant::readings::lenient_decode(without_params.as_bytes(), false);
        let twice = crate::oauth::grant::readings::lenient_decode(&once, false);
        let decoded = String::from_utf8_lossy(&twice);
        let until_nul = decoded.split('\0').next().unwrap_or("");
        let trimmed = crate::oauth::grant::skeleton::fold(
            until_nul
                .trim_start_matches(crate::oauth::grant::skeleton::is_ignorable)
                .trim_end_matches(|c| c == '.' || crate::oauth::grant::skeleton::is_ignorable(c)),
        );
        match trimmed.as_str() {
            "" if until_nul.starts_with("..") => {
                segments.pop();
            }
            "" => {}
            segment => segments.push(segment.to_owned()),
        }
    }
    format!("/{}", segments.join("/"))
}

/// The key with everything from a `.` of its last segment on removed (`/token.json`,
/// `/token.a.b` -> `/token`: Spring's suffix pattern matching maps `/token.*` to `/token`),
/// at each `.` in turn.
fn without_extension(key: &str) -> impl Iterator<Item = &str> {
    let last = key.rfind('/').map_or(0, |i| i + 1);
    key[last..]
        .match_indices('.')
        .map(move |(i, _)| &key[..last + i])
        .filter(|stem| !stem.ends_with('/'))
}

/// A path without its `;` parameters (`/a;x=1/token;jsessionid=s` -> `/a/token`), for logs:
/// a session id travels there.
pub fn without_parameters(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect();
    std::borrow::Cow::Owned(segments.join("/"))
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
    fn every_router_reading_of_the_token_path_is_a_token_path() {
        let paths = vec!["/auth/idp/k8sIdp/token".to_owned()];
        for variant in [
            "/auth/idp/k8sidp/token",
            "/AUTH/IDP/K8SIDP/TOKEN",
            "/auth/idp/k8sIdp/token.",
            "/auth/idp/k8sIdp/token..",
            "/auth/idp/k8sIdp/token%20",
            "/auth/idp/k8sIdp/token%09",
            "/auth/idp/k8sIdp/token%00.png",
            "/auth/idp/k8sIdp/token.json",
            "/auth/idp/k8sIdp/token.a.b",
            "/auth/idp/k8sIdp/token.x-y",
            "/auth/idp/k8sIdp/token.~",
            "/auth/idp/k8sIdp/token.12345678901",
            "/auth/idp/k8sIdp/Token.JSON.bak",
            "/auth/idp/k8sIdp/%2574oken",
            "/auth/idp/k8sIdp/%u0074oken",
            "/auth/idp/k8%C5%BFIdp/to%E2%84%AAen",
            "/auth/idp/%EF%BD%8B8sIdp/token",
            "/auth/idp/k8sIdp/token;x=y/",
            "/auth/idp/k8sIdp/token/.",
            "/auth/idp/k8sIdp/./token//",
        ] {
            assert_eq!(
                match_token_path(variant, &paths),
                PathMatch::Token,
                "{variant}"
            );
        }
        for other in [
            "/auth/idp/k8sIdp/tokens",
            "/auth/idp/k8sIdp/token/x",
            "/auth/idp/k8sIdp/userinfo",
            "/auth/idp/token",
        ] {
            assert_eq!(match_token_path(other, &paths), PathMatch::Other, "{other}");
        }
        assert_eq!(
            match_token_path("/auth\\idp/k8sIdp/TOKEN", &paths),
            PathMatch::Ambiguous
        );
    }

    #[test]
    fn parameters_are_left_out_of_logged_paths() {
        assert_eq!(
            super::without_parameters("/a;x=1/token;jsessionid=s"),
            "/a/token"
        );
        assert_eq!(super::without_parameters("/token"), "/token");
    }

    #[test]
    fn a_path_override_naming_the_token_path_is_a_token_path() {
        let paths = vec!["/token".to_owned()];
        let matched =
            |values: &[&[u8]]| super::match_request("/other", values.iter().copied(), &paths);
        assert_eq!(matched(&[b"/token"]), PathMatch::Token);
        assert_eq!(
            matched(&[b"/x", b"https://idp/TOKEN?a=1"]),
            PathMatch::Token
        );
        assert_eq!(matched(&[b"/a%2Ftoken"]), PathMatch::Other);
        assert_eq!(matched(&[b"/x%2F..%2Ftoken"]), PathMatch::Ambiguous);
        assert_eq!(matched(&[b"/userinfo"]), PathMatch::Other);
        assert_eq!(matched(&[]), PathMatch::Other);
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(normalize("/a/%2e%2e/token").as_deref(), Some("/token"));
    }
}
