//! Deciding whether a request on a token path is a refresh grant, another grant to forward,
//! or ambiguous (refused with `400 invalid_request`). Nothing the IdP could read as a
//! refresh grant may slip past as "something else".

use crate::credentials::{self, ClientCredentials};
use crate::form;
use crate::secret::{ClientSecret, RefreshToken};

/// The facts of one token-path request that classification needs.
#[derive(Debug, Clone, Copy)]
pub struct TokenPathRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a [u8]>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// The whole request body.
    pub body: &'a [u8],
}

/// What a token-path request is.
#[derive(Debug)]
pub enum Classification {
    /// A refresh grant: the gate decides it.
    Refresh(RefreshGrant),
    /// Not a refresh grant: forward it untouched.
    Forward,
    /// Ambiguous or malformed: refuse with `400 invalid_request`.
    Refuse(Ambiguity),
}

/// A refresh grant: the presented token and the client credentials that came with it.
#[derive(Debug)]
pub struct RefreshGrant {
    /// The decoded refresh token.
    pub token: RefreshToken,
    /// The client credentials (Basic or form).
    pub client: ClientCredentials,
}

/// Why a token-path request was refused as ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    /// `refresh_token` (or a refresh `grant_type`) in the query string.
    #[error("refresh_token must not be sent in the query string")]
    TokenInQuery,
    /// A refresh grant in a body that is not `application/x-www-form-urlencoded`.
    #[error("a refresh grant must use application/x-www-form-urlencoded")]
    NotForm,
    /// A form body that cannot be decoded unambiguously.
    #[error("the form body is not valid application/x-www-form-urlencoded UTF-8")]
    MalformedForm,
    /// `grant_type` more than once.
    #[error("grant_type is repeated")]
    DuplicateGrantType,
    /// `refresh_token` more than once.
    #[error("refresh_token is repeated")]
    DuplicateRefreshToken,
    /// A refresh grant without a non-empty `refresh_token`.
    #[error("refresh_token is missing or empty")]
    MissingRefreshToken,
    /// `client_id` or `client_secret` repeated in the form.
    #[error("client credentials are repeated")]
    DuplicateClientCredentials,
    /// Basic and form credentials naming different clients.
    #[error("HTTP Basic and form credentials name different clients")]
    ConflictingClients,
    /// An `Authorization: Basic` header that cannot be decoded.
    #[error("malformed HTTP Basic client credentials")]
    MalformedBasic,
}

impl Ambiguity {
    /// The RFC 6749 `error_description`.
    pub fn description(&self) -> String {
        self.to_string()
    }
}

const REFRESH_GRANT: &str = "refresh_token";

fn mentions_refresh_token(bytes: &[u8]) -> bool {
    bytes
        .windows(REFRESH_GRANT.len())
        .any(|w| w.eq_ignore_ascii_case(REFRESH_GRANT.as_bytes()))
        || bytes
            .windows(15)
            .any(|w| w.eq_ignore_ascii_case(b"refresh%5ftoken"))
}

fn is_form(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media_type = value.split(|b| *b == b';').next().unwrap_or(b"");
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// Classify one request on a token path.
pub fn classify(req: &TokenPathRequest<'_>) -> Classification {
    if let Some(query) = req.query {
        let fields = form::parse_lenient(query.as_bytes());
        let suspicious = fields
            .iter()
            .any(|(k, v)| k == REFRESH_GRANT || (k == "grant_type" && v == REFRESH_GRANT));
        if suspicious || (fields.is_empty() && mentions_refresh_token(query.as_bytes())) {
            return Classification::Refuse(Ambiguity::TokenInQuery);
        }
    }
    if !req.method.eq_ignore_ascii_case("POST") {
        return Classification::Forward;
    }
    if !is_form(req.content_type) {
        return if mentions_refresh_token(req.body) {
            Classification::Refuse(Ambiguity::NotForm)
        } else {
            Classification::Forward
        };
    }
    let fields = match form::parse(req.body) {
        Ok(fields) => fields,
        Err(_) if mentions_refresh_token(req.body) => {
            return Classification::Refuse(Ambiguity::MalformedForm)
        }
        Err(_) => return Classification::Forward,
    };
    classify_form(&fields, req.authorization)
}

fn values<'f>(fields: &'f [(String, String)], name: &str) -> Vec<&'f str> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn classify_form(fields: &[(String, String)], authorization: Option<&[u8]>) -> Classification {
    let grant_types = values(fields, "grant_type");
    let tokens = values(fields, REFRESH_GRANT);
    if grant_types.len() > 1 {
        return Classification::Refuse(Ambiguity::DuplicateGrantType);
    }
    if tokens.len() > 1 {
        return Classification::Refuse(Ambiguity::DuplicateRefreshToken);
    }
    if grant_types.first() != Some(&REFRESH_GRANT) {
        return Classification::Forward;
    }
    let token = match tokens.first() {
        Some(token) if !token.is_empty() => RefreshToken::new(*token),
        _ => return Classification::Refuse(Ambiguity::MissingRefreshToken),
    };
    match client_credentials(fields, authorization) {
        Ok(client) => Classification::Refresh(RefreshGrant { token, client }),
        Err(reason) => Classification::Refuse(reason),
    }
}

fn client_credentials(
    fields: &[(String, String)],
    authorization: Option<&[u8]>,
) -> Result<ClientCredentials, Ambiguity> {
    let form_ids = values(fields, "client_id");
    let form_secrets = values(fields, "client_secret");
    if form_ids.len() > 1 || form_secrets.len() > 1 {
        return Err(Ambiguity::DuplicateClientCredentials);
    }
    let basic = match authorization {
        Some(header) => credentials::parse_basic(header).map_err(|_| Ambiguity::MalformedBasic)?,
        None => None,
    };
    let form_secret = form_secrets.first().map(|s| ClientSecret::new(*s));
    match basic {
        Some(basic) => {
            let id_conflict = form_ids.first().is_some_and(|id| *id != basic.client_id);
            let secret_conflict = form_secret
                .as_ref()
                .is_some_and(|s| Some(s) != basic.secret.as_ref());
            if id_conflict || secret_conflict {
                return Err(Ambiguity::ConflictingClients);
            }
            Ok(basic)
        }
        None => Ok(ClientCredentials {
            client_id: form_ids.first().copied().unwrap_or_default().to_owned(),
            secret: form_secret,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const FORM: &[u8] = b"application/x-www-form-urlencoded";

    fn post(body: &str) -> TokenPathRequest<'_> {
        TokenPathRequest {
            method: "POST",
            query: None,
            content_type: Some(FORM),
            authorization: None,
            body: body.as_bytes(),
        }
    }

    fn refused(req: &TokenPathRequest<'_>) -> Option<Ambiguity> {
        match classify(req) {
            Classification::Refuse(reason) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn plain_refresh_grant_with_form_client() {
        let req =
            post("grant_type=refresh_token&refresh_token=abc%2B1&client_id=k&client_secret=s");
        let Classification::Refresh(grant) = classify(&req) else {
            panic!("not a refresh grant")
        };
        assert_eq!(grant.token, RefreshToken::new("abc+1"));
        assert_eq!(grant.client.client_id, "k");
        assert_eq!(grant.client.secret, Some(ClientSecret::new("s")));
    }

    #[test]
    fn basic_client_matches_form_style_identity() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("k:s")
        );
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        req.authorization = Some(header.as_bytes());
        let Classification::Refresh(basic) = classify(&req) else {
            panic!()
        };
        let form = post("client_id=k&client_secret=s&grant_type=refresh_token&refresh_token=t");
        let Classification::Refresh(form) = classify(&form) else {
            panic!()
        };
        assert_eq!(basic.client, form.client);
    }

    #[test]
    fn charset_is_allowed_in_content_type() {
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        req.content_type = Some(b"Application/X-WWW-Form-Urlencoded; charset=UTF-8");
        assert!(matches!(classify(&req), Classification::Refresh(_)));
    }

    #[test]
    fn other_grants_and_methods_are_forwarded() {
        assert!(matches!(
            classify(&post("grant_type=authorization_code&code=x")),
            Classification::Forward
        ));
        assert!(matches!(
            classify(&post("grant_type=client_credentials")),
            Classification::Forward
        ));
        let mut get = post("");
        get.method = "GET";
        assert!(matches!(classify(&get), Classification::Forward));
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let cases: &[(&str, Ambiguity)] = &[
            (
                "grant_type=refresh_token&grant_type=refresh_token&refresh_token=t",
                Ambiguity::DuplicateGrantType,
            ),
            (
                "grant_type=authorization_code&grant_type=refresh_token&refresh_token=t",
                Ambiguity::DuplicateGrantType,
            ),
            (
                "grant_type=refresh_token&refresh_token=a&refresh_token=b",
                Ambiguity::DuplicateRefreshToken,
            ),
            (
                "grant_type=refresh_token&refresh_token=",
                Ambiguity::MissingRefreshToken,
            ),
            ("grant_type=refresh_token", Ambiguity::MissingRefreshToken),
            (
                "grant_type=refresh_token&refresh_token=%zz",
                Ambiguity::MalformedForm,
            ),
            (
                "grant_type=refresh_token&refresh_token=t&client_id=a&client_id=b",
                Ambiguity::DuplicateClientCredentials,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(refused(&post(body)), Some(*expected), "{body}");
        }
    }

    #[test]
    fn token_in_query_is_refused_even_on_get() {
        let mut req = post("grant_type=authorization_code&code=x");
        req.query = Some("refresh_token=t");
        assert_eq!(refused(&req), Some(Ambiguity::TokenInQuery));
        req.method = "GET";
        req.query = Some("grant_type=refresh_token");
        assert_eq!(refused(&req), Some(Ambiguity::TokenInQuery));
        req.query = Some("foo=bar");
        assert_eq!(refused(&req), None);
    }

    #[test]
    fn refresh_grant_in_other_content_types_is_refused() {
        for content_type in [
            Some(&b"application/json"[..]),
            Some(&b"multipart/form-data; boundary=x"[..]),
            None,
        ] {
            let mut req = post(r#"{"grant_type":"refresh_token","refresh_token":"t"}"#);
            req.content_type = content_type;
            assert_eq!(refused(&req), Some(Ambiguity::NotForm));
        }
        let mut json_code = post(r#"{"grant_type":"authorization_code"}"#);
        json_code.content_type = Some(b"application/json");
        assert!(matches!(classify(&json_code), Classification::Forward));
    }

    #[test]
    fn basic_and_form_naming_different_clients_is_refused() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s")
        );
        let mut req = post("grant_type=refresh_token&refresh_token=t&client_id=bob");
        req.authorization = Some(header.as_bytes());
        assert_eq!(refused(&req), Some(Ambiguity::ConflictingClients));
        let mut req = post("grant_type=refresh_token&refresh_token=t&client_secret=other");
        req.authorization = Some(header.as_bytes());
        assert_eq!(refused(&req), Some(Ambiguity::ConflictingClients));
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        req.authorization = Some(b"Basic %%%");
        assert_eq!(refused(&req), Some(Ambiguity::MalformedBasic));
    }

    #[test]
    fn refusal_descriptions_never_echo_the_token() {
        let req = post("grant_type=refresh_token&refresh_token=SECRET1&refresh_token=SECRET2");
        let reason = refused(&req).unwrap();
        assert!(!reason.description().contains("SECRET"));
    }
}
