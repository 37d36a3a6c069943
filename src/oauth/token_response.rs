//! Reading the IdP's answer to a refresh grant: is it a token response, did it rotate the
//! refresh token, and whose (`sub`) is it. Nothing here keeps the tokens.

use crate::http::answer::Answer;
use crate::seal::secret::RefreshToken;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// What the gate learns from a successful token response.
#[derive(Debug)]
pub struct TokenResponse {
    /// The new refresh token, when the IdP sent one.
    pub refresh_token: Option<RefreshToken>,
    /// The `sub` of the id_token, for audit events (signature not checked: the gate only
    /// reports it, it never authorises with it).
    pub subject: Option<String>,
}

/// Only the fields the gate reads, borrowed from the body where possible.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    access_token: Option<Field<'a>>,
    #[serde(borrow, default)]
    refresh_token: Option<Field<'a>>,
    #[serde(borrow, default)]
    id_token: Option<Field<'a>>,
}

/// A JSON value that is a string (borrowed, or owned when it had escapes) or anything else.
#[derive(Deserialize)]
#[serde(untagged)]
enum Field<'a> {
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

impl Field<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Field::Text(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media = value
        .split(|b| *b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    let media = String::from_utf8_lossy(media).to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Read a 2xx answer, taking the subject from `subject_claim` of the id_token. `None` when
/// it is not a JSON token response with an `access_token` (then the exchange counts as
/// failed and nothing is tombstoned).
pub fn parse(answer: &Answer, subject_claim: &str) -> Option<TokenResponse> {
    if !(200..300).contains(&answer.status) || !is_json(answer.header("content-type")) {
        return None;
    }
    let wire: Wire = serde_json::from_slice(&answer.body).ok()?;
    wire.access_token.as_ref().and_then(Field::text)?;
    let refresh_token = wire
        .refresh_token
        .as_ref()
        .and_then(Field::text)
        .map(RefreshToken::new);
    let subject = wire
        .id_token
        .as_ref()
        .and_then(Field::text)
        .and_then(|jwt| subject_of(jwt, subject_claim));
    Some(TokenResponse {
        refresh_token,
        subject,
    })
}

fn subject_of(jwt: &str, claim: &str) -> Option<String> {
    let header = jsonwebtoken::decode_header(jwt).ok()?;
    let mut validation = Validation::new(header.alg);
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.algorithms = vec![header.alg, Algorithm::HS256];
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        jwt,
        &DecodingKey::from_secret(&[]),
        &validation,
    )
    .ok()?;
    match data.claims.get(claim)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn json(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![(
                "content-type".into(),
                b"application/json; charset=utf-8".to_vec(),
            )],
            body: Bytes::from(body.to_owned()),
        }
    }

    fn parse_sub(answer: &Answer) -> Option<TokenResponse> {
        parse(answer, "sub")
    }

    fn id_token(sub: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": sub, "exp": 1}),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap()
    }

    #[test]
    fn rotation_with_subject() {
        let body = format!(
            r#"{{"access_token":"a","refresh_token":"r2","id_token":"{}"}}"#,
            id_token("alice")
        );
        let parsed = parse_sub(&json(200, &body)).unwrap();
        assert_eq!(parsed.refresh_token, Some(RefreshToken::new("r2")));
        assert_eq!(parsed.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn not_rotating_is_still_a_token_response() {
        let parsed = parse_sub(&json(200, r#"{"access_token":"a"}"#)).unwrap();
        assert!(parsed.refresh_token.is_none());
        assert!(parsed.subject.is_none());
    }

    #[test]
    fn failures_are_not_token_responses() {
        assert!(parse_sub(&json(400, r#"{"access_token":"a"}"#)).is_none());
        assert!(parse_sub(&json(200, r#"{"token":"a"}"#)).is_none());
        assert!(parse_sub(&json(200, r#"{"access_token":""}"#)).is_none());
        assert!(parse_sub(&json(200, "not json")).is_none());
        let mut html = json(200, r#"{"access_token":"a"}"#);
        html.headers[0].1 = b"text/html".to_vec();
        assert!(parse_sub(&html).is_none());
    }

    #[test]
    fn escaped_and_non_string_fields() {
        let parsed = parse_sub(&json(
            200,
            r#"{"access_token":"a\u0041","refresh_token":"r\/2"}"#,
        ))
        .unwrap();
        assert_eq!(parsed.refresh_token, Some(RefreshToken::new("r/2")));
        assert!(parse_sub(&json(200, r#"{"access_token":5}"#)).is_none());
        let parsed = parse_sub(&json(200, r#"{"access_token":"a","refresh_token":null}"#)).unwrap();
        assert!(parsed.refresh_token.is_none());
    }

    #[test]
    fn a_configured_claim_is_the_subject() {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "x1", "preferred_username": "alice"}),
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let body = format!(r#"{{"access_token":"a","id_token":"{token}"}}"#);
        let parsed = parse(&json(200, &body), "preferred_username").unwrap();
        assert_eq!(parsed.subject.as_deref(), Some("alice"));
    }
}
