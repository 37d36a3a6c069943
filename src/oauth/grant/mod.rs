//! Deciding what a request on a token path is: a refresh grant (the gate decides it),
//! another grant or a body-less request the gate is certain no IdP reads as a refresh grant
//! (forwarded untouched), or anything else (refused, never forwarded). The rule, in the
//! README's "What the gate does": forwarding needs certainty, never a guess.
//!
//! "Certain" is checked against how real IdP stacks read a request: the strict reading of
//! `crate::oauth::form` must agree with every other reading in [`readings`], no name or
//! `grant_type` may only *fold* to a grant parameter ([`mod@skeleton`]), and the grant type must
//! be one the configuration forwards.

pub mod media;
pub mod names;
pub mod readings;
mod refusal;
pub mod skeleton;

pub use refusal::Refusal;

use crate::oauth::credentials::{self, ClientCredentials};
use crate::oauth::form;
use crate::seal::secret::{ClientSecret, RefreshToken};
use media::MediaType;
use names::{GRANT_TYPE, QUERY_FORBIDDEN, REFRESH_TOKEN};
use skeleton::{disguises, skeleton};

/// The facts of one token-path request that classification needs. Header fields hold
/// every value the request carried, so a repeated header is seen.
#[derive(Debug, Clone, Copy)]
pub struct TokenPathRequest<'a> {
    /// The HTTP method, as sent.
    pub method: &'a str,
    /// The raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// Every `Content-Type` value.
    pub content_type: &'a [&'a [u8]],
    /// Every `Authorization` value.
    pub authorization: &'a [&'a [u8]],
    /// Every `Content-Encoding` value.
    pub content_encoding: &'a [&'a [u8]],
    /// Every `Transfer-Encoding` value.
    pub transfer_encoding: &'a [&'a [u8]],
    /// Every `Connection` value.
    pub connection: &'a [&'a [u8]],
    /// Every `DPoP` value (RFC 9449: one proof at most).
    pub dpop: &'a [&'a [u8]],
    /// Whether the request asks for a protocol upgrade (`Upgrade`, h2c, WebSocket).
    pub upgrade: bool,
    /// The whole request body (read for every method).
    pub body: &'a [u8],
}

/// The header values classification reads, gathered once from any header map (the proxy's,
/// or a test's), so every caller builds [`TokenPathRequest`] the same way.
#[derive(Debug, Default)]
pub struct TokenHeaders<'a> {
    content_type: Vec<&'a [u8]>,
    authorization: Vec<&'a [u8]>,
    content_encoding: Vec<&'a [u8]>,
    transfer_encoding: Vec<&'a [u8]>,
    connection: Vec<&'a [u8]>,
    dpop: Vec<&'a [u8]>,
}

impl<'a> TokenHeaders<'a> {
    /// Gather every value of each header classification reads; `all(name)` returns the
    /// values of one (lower-case) header name in order.
    pub fn collect(mut all: impl FnMut(&str) -> Vec<&'a [u8]>) -> Self {
        TokenHeaders {
            content_type: all("content-type"),
            authorization: all("authorization"),
            content_encoding: all("content-encoding"),
            transfer_encoding: all("transfer-encoding"),
            connection: all("connection"),
            dpop: all("dpop"),
        }
    }

    /// The request to classify, with these headers.
    pub fn request<'r>(
        &'r self,
        method: &'r str,
        query: Option<&'r str>,
        upgrade: bool,
        body: &'r [u8],
    ) -> TokenPathRequest<'r> {
        TokenPathRequest {
            method,
            query,
            content_type: &self.content_type,
            authorization: &self.authorization,
            content_encoding: &self.content_encoding,
            transfer_encoding: &self.transfer_encoding,
            connection: &self.connection,
            dpop: &self.dpop,
            upgrade,
            body,
        }
    }
}

/// What the configuration lets through untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRules {
    /// `[upstream] forward_grant_types`: grant types forwarded untouched, compared exactly.
    pub forward_grant_types: Vec<String>,
}

impl Default for GrantRules {
    fn default() -> Self {
        GrantRules {
            forward_grant_types: names::DEFAULT_FORWARD_GRANT_TYPES
                .iter()
                .map(|g| (*g).to_owned())
                .collect(),
        }
    }
}

/// What a token-path request is.
#[derive(Debug)]
pub enum Classification {
    /// A refresh grant: the gate decides it.
    Refresh(RefreshGrant),
    /// Certainly not a refresh grant: forward it untouched (after checking `suspects`).
    Forward(Forwarded),
    /// Anything else: refused, never forwarded.
    Refuse(Refusal),
}

/// A request to forward, with the form values that could be tokens: the gate refuses it
/// if one of them is a token it tombstoned (a spent refresh token as a `subject_token`).
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Values of token length, at most [`MAX_SUSPECTS`].
    pub suspects: Vec<RefreshToken>,
}

/// The most parameters a token request may carry (Tomcat and Jetty stop reading at their
/// own limits, so a longer form reads differently there).
pub const MAX_PARAMETERS: usize = 128;
/// The most form values checked against the tombstones per forwarded request.
pub const MAX_SUSPECTS: usize = 8;
/// The shortest value checked against the tombstones.
pub const MIN_SUSPECT_LEN: usize = 16;
/// The longest value checked against the tombstones.
pub const MAX_SUSPECT_LEN: usize = 8192;

/// A refresh grant: the presented token and the client credentials that came with it.
#[derive(Debug)]
pub struct RefreshGrant {
    /// The decoded refresh token.
    pub token: RefreshToken,
    /// The client credentials (Basic, form or assertion).
    pub client: ClientCredentials,
    /// The `DPoP` proof (RFC 9449), if one was sent (a credential: never printed).
    pub dpop: Option<ClientSecret>,
}

/// Classify one request on a token path.
pub fn classify(req: &TokenPathRequest<'_>, rules: &GrantRules) -> Classification {
    match classify_inner(req, rules) {
        Ok(classification) => classification,
        Err(refusal) => Classification::Refuse(refusal),
    }
}

fn classify_inner(
    req: &TokenPathRequest<'_>,
    rules: &GrantRules,
) -> Result<Classification, Refusal> {
    if req.upgrade {
        return Err(Refusal::Upgrade);
    }
    check_framing(req)?;
    if let Some(query) = req.query {
        check_query(query)?;
    }
    if req.method != "POST" {
        // Nothing travels but the (checked) query: no stack reads a grant from it.
        return if req.body.is_empty() {
            Ok(Classification::Forward(Forwarded::default()))
        } else {
            Err(Refusal::NotPost)
        };
    }
    if req.content_type.len() > 1 || req.authorization.len() > 1 || req.dpop.len() > 1 {
        return Err(Refusal::RepeatedHeader);
    }
    let identity = |v: &&[u8]| v.trim_ascii().eq_ignore_ascii_case(b"identity");
    if !req.content_encoding.iter().all(identity) {
        return Err(Refusal::ContentEncoding);
    }
    let ascii_only = match req.content_type.first().map(|v| media::parse(v)) {
        Some(MediaType::FormUtf8) => false,
        Some(MediaType::FormAscii) => true,
        Some(MediaType::FormOtherCharset) => return Err(Refusal::Charset),
        Some(MediaType::Malformed) => return Err(Refusal::MalformedContentType),
        Some(MediaType::Other) | None if req.body.is_empty() => {
            return Err(Refusal::MissingGrantType)
        }
        Some(MediaType::Other) | None => return Err(Refusal::NotForm),
    };
    let fields = form::parse(req.body).map_err(|_| Refusal::MalformedForm)?;
    if fields.len() > MAX_PARAMETERS {
        return Err(Refusal::TooManyValues);
    }
    if ascii_only && fields.iter().any(|(k, v)| !k.is_ascii() || !v.is_ascii()) {
        return Err(Refusal::Charset);
    }
    check_names(&fields)?;
    let mut classification = classify_form(&fields, req.authorization.first().copied(), rules)?;
    check_readings(req.body, &fields)?;
    if let Classification::Refresh(grant) = &mut classification {
        grant.dpop = req
            .dpop
            .first()
            .map(|proof| ClientSecret::new(String::from_utf8_lossy(proof.trim_ascii())));
    }
    Ok(classification)
}

/// One `chunked` at most, and a `Connection` that names no end-to-end header.
fn check_framing(req: &TokenPathRequest<'_>) -> Result<(), Refusal> {
    let chunked_alone = match req.transfer_encoding {
        [] => true,
        [one] => one.trim_ascii().eq_ignore_ascii_case(b"chunked"),
        _ => false,
    };
    if !chunked_alone {
        return Err(Refusal::TransferEncoding);
    }
    let harmless = |option: &[u8]| {
        let option = option.trim_ascii();
        option.is_empty()
            || [&b"keep-alive"[..], b"close", b"te"]
                .iter()
                .any(|h| option.eq_ignore_ascii_case(h))
    };
    let only_harmless = req
        .connection
        .iter()
        .all(|value| value.split(|b| *b == b',').all(harmless));
    if only_harmless {
        Ok(())
    } else {
        Err(Refusal::ConnectionHeader)
    }
}

/// No grant parameter in the query, in any stack's reading of it.
fn check_query(query: &str) -> Result<(), Refusal> {
    let forbidden = readings::QUERY_READINGS.iter().any(|reading| {
        reading.pairs(query.as_bytes()).iter().any(|(name, _)| {
            QUERY_FORBIDDEN.contains(&skeleton(name).as_str())
                || skeleton::rewritten_names(name)
                    .iter()
                    .any(|r| QUERY_FORBIDDEN.contains(&skeleton(r).as_str()))
        })
    });
    if forbidden {
        Err(Refusal::TokenInQuery)
    } else {
        Ok(())
    }
}

/// No name is a grant parameter only after folding, or after another stack's rewrite of
/// separators and brackets (PHP, Rack).
fn check_names(fields: &[(String, String)]) -> Result<(), Refusal> {
    // A lower-case ASCII identifier reads the same everywhere: only others need a look.
    let ordinary = |name: &str| {
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let disguised = fields.iter().any(|(name, _)| {
        !names::is_grant_parameter(name)
            && !ordinary(name)
            && (names::is_grant_parameter(&skeleton(name))
                || skeleton::rewritten_names(name)
                    .iter()
                    .any(|r| names::is_grant_parameter(&skeleton(r))))
    });
    if disguised {
        Err(Refusal::DisguisedParameter)
    } else {
        Ok(())
    }
}

/// Every modelled reading of the body sees the grant the strict reading sees.
fn check_readings(body: &[u8], fields: &[(String, String)]) -> Result<(), Refusal> {
    // The usual body: no `;` to split on, nothing left to decode twice, nothing outside
    // ASCII for ISO-8859-1 to read differently. Every reading is then the strict one.
    let plain = !body.contains(&b';')
        && fields
            .iter()
            .all(|(k, v)| k.is_ascii() && v.is_ascii() && !k.contains('%') && !v.contains('%'));
    if plain {
        return Ok(());
    }
    let strict = readings::grant_view(fields);
    let agree = readings::BODY_READINGS
        .iter()
        .all(|reading| readings::grant_view(&reading.pairs(body)) == strict);
    if agree {
        Ok(())
    } else {
        Err(Refusal::AmbiguousForm)
    }
}

/// One parameter as classification needs it: its first value and how often it came.
#[derive(Debug, Default, Clone, Copy)]
struct Seen<'f> {
    first: Option<&'f str>,
    count: usize,
}

impl<'f> Seen<'f> {
    fn add(&mut self, value: &'f str) {
        self.first.get_or_insert(value);
        self.count += 1;
    }

    fn repeated(&self) -> bool {
        self.count > 1
    }
}

/// The parameters that decide a grant and its client, gathered in one pass over the form.
#[derive(Debug, Default)]
struct GrantParams<'f> {
    grant_type: Seen<'f>,
    refresh_token: Seen<'f>,
    client_id: Seen<'f>,
    client_secret: Seen<'f>,
    client_assertion: Seen<'f>,
    client_assertion_type: Seen<'f>,
}

impl<'f> GrantParams<'f> {
    fn gather(fields: &'f [(String, String)]) -> Self {
        let mut params = GrantParams::default();
        for (name, value) in fields {
            let seen = match name.as_str() {
                GRANT_TYPE => &mut params.grant_type,
                REFRESH_TOKEN => &mut params.refresh_token,
                "client_id" => &mut params.client_id,
                "client_secret" => &mut params.client_secret,
                "client_assertion" => &mut params.client_assertion,
                "client_assertion_type" => &mut params.client_assertion_type,
                _ => continue,
            };
            seen.add(value);
        }
        params
    }
}

/// A refresh token as issued: printable ASCII without spaces or `%` (what every stack
/// decodes, trims and compares the same way).
fn plausible_token(token: &str) -> bool {
    token
        .bytes()
        .all(|b| (b'!'..=b'~').contains(&b) && b != b'%')
}

fn classify_form(
    fields: &[(String, String)],
    authorization: Option<&[u8]>,
    rules: &GrantRules,
) -> Result<Classification, Refusal> {
    let params = GrantParams::gather(fields);
    if params.grant_type.repeated() {
        return Err(Refusal::DuplicateGrantType);
    }
    if params.refresh_token.repeated() {
        return Err(Refusal::DuplicateRefreshToken);
    }
    let grant_type = match params.grant_type.first {
        Some(g) if !g.is_empty() => g,
        _ => return Err(Refusal::MissingGrantType),
    };
    if grant_type != REFRESH_TOKEN {
        if disguises(grant_type, REFRESH_TOKEN) {
            return Err(Refusal::DisguisedGrantType);
        }
        if !rules.forward_grant_types.iter().any(|g| g == grant_type) {
            return Err(Refusal::UnsupportedGrant);
        }
        if params.refresh_token.first.is_some_and(|t| !t.is_empty()) {
            return Err(Refusal::TokenInOtherGrant);
        }
        return Ok(Classification::Forward(Forwarded {
            suspects: suspects(fields)?,
        }));
    }
    let token = match params.refresh_token.first {
        Some(token) if !token.is_empty() => token,
        _ => return Err(Refusal::MissingRefreshToken),
    };
    if !plausible_token(token) {
        return Err(Refusal::TokenCharacters);
    }
    let client = client_credentials(&params, authorization)?;
    Ok(Classification::Refresh(RefreshGrant {
        token: RefreshToken::new(token),
        client,
        dpop: None,
    }))
}

/// Form values that could be tokens, for the tombstone check of a forwarded grant. More
/// than [`MAX_SUSPECTS`] is refused rather than checked in part (padding must not push a
/// spent token past the check).
fn suspects(fields: &[(String, String)]) -> Result<Vec<RefreshToken>, Refusal> {
    let suspects: Vec<RefreshToken> = fields
        .iter()
        .filter(|(name, _)| name != GRANT_TYPE)
        .map(|(_, v)| v.as_str())
        .filter(|v| (MIN_SUSPECT_LEN..=MAX_SUSPECT_LEN).contains(&v.len()) && plausible_token(v))
        .map(RefreshToken::new)
        .collect();
    if suspects.len() > MAX_SUSPECTS {
        return Err(Refusal::TooManyValues);
    }
    Ok(suspects)
}

fn client_credentials(
    params: &GrantParams<'_>,
    authorization: Option<&[u8]>,
) -> Result<ClientCredentials, Refusal> {
    let repeated = [
        params.client_id,
        params.client_secret,
        params.client_assertion,
        params.client_assertion_type,
    ]
    .iter()
    .any(Seen::repeated);
    if repeated {
        return Err(Refusal::DuplicateClientCredentials);
    }
    let form_id = params.client_id.first;
    let form_secret = params.client_secret.first;
    if let Some(assertion) = params.client_assertion.first {
        // A client assertion (private_key_jwt, client_secret_jwt) is the client's
        // authentication: a replay must carry one the gate verifies (the refresh handler
        // binds it). One mechanism only (RFC 6749 §2.3).
        if authorization.is_some() || form_secret.is_some() {
            return Err(Refusal::ConflictingClients);
        }
        return Ok(ClientCredentials {
            client_id: form_id.unwrap_or_default().to_owned(),
            secret: None,
            assertion: Some(ClientSecret::new(assertion)),
        });
    }
    let basic = match authorization {
        Some(header) => match credentials::parse_basic(header) {
            Ok(Some(basic)) => Some(basic),
            Ok(None) => return Err(Refusal::AuthorizationScheme),
            Err(_) => return Err(Refusal::MalformedBasic),
        },
        None => None,
    };
    let form_secret = form_secret.map(ClientSecret::new);
    match basic {
        Some(basic) => {
            let id_conflict = form_id.is_some_and(|id| id != basic.client_id);
            let secret_conflict = form_secret
                .as_ref()
                .is_some_and(|s| Some(s) != basic.secret.as_ref());
            if id_conflict || secret_conflict {
                return Err(Refusal::ConflictingClients);
            }
            Ok(basic)
        }
        None => Ok(ClientCredentials {
            client_id: form_id.unwrap_or_default().to_owned(),
            secret: form_secret,
            assertion: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const FORM: &[&[u8]] = &[b"application/x-www-form-urlencoded"];

    fn post(body: &str) -> TokenPathRequest<'_> {
        TokenPathRequest {
            method: "POST",
            query: None,
            content_type: FORM,
            authorization: &[],
            content_encoding: &[],
            transfer_encoding: &[],
            connection: &[],
            dpop: &[],
            upgrade: false,
            body: body.as_bytes(),
        }
    }

    fn run(req: &TokenPathRequest<'_>) -> Classification {
        classify(req, &GrantRules::default())
    }

    fn refused(req: &TokenPathRequest<'_>) -> Option<Refusal> {
        match run(req) {
            Classification::Refuse(reason) => Some(reason),
            _ => None,
        }
    }

    fn forwarded(req: &TokenPathRequest<'_>) -> bool {
        matches!(run(req), Classification::Forward(_))
    }

    #[test]
    fn plain_refresh_grant_with_form_client() {
        let req =
            post("grant_type=refresh_token&refresh_token=abc%2B1&client_id=k&client_secret=s");
        let Classification::Refresh(grant) = run(&req) else {
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
        let authorization = [header.as_bytes()];
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        req.authorization = &authorization;
        let Classification::Refresh(basic) = run(&req) else {
            panic!()
        };
        let form = post("client_id=k&client_secret=s&grant_type=refresh_token&refresh_token=t");
        let Classification::Refresh(form) = run(&form) else {
            panic!()
        };
        assert_eq!(basic.client, form.client);
    }

    #[test]
    fn utf8_charsets_are_allowed_other_charsets_refused() {
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        let utf8: &[&[u8]] = &[b"Application/X-WWW-Form-Urlencoded; charset=\"UTF-8\""];
        req.content_type = utf8;
        assert!(matches!(run(&req), Classification::Refresh(_)));
        let utf16: &[&[u8]] = &[b"application/x-www-form-urlencoded; charset=UTF-16BE"];
        req.content_type = utf16;
        assert_eq!(refused(&req), Some(Refusal::Charset));
        let code = post("grant_type=authorization_code&code=x");
        let mut code = code;
        code.content_type = utf16;
        assert_eq!(refused(&code), Some(Refusal::Charset));
    }

    #[test]
    fn registered_grants_are_forwarded_others_unsupported() {
        assert!(forwarded(&post("grant_type=authorization_code&code=x")));
        assert!(forwarded(&post("grant_type=client_credentials")));
        assert!(forwarded(&post(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x"
        )));
        assert_eq!(
            refused(&post("grant_type=magic")),
            Some(Refusal::UnsupportedGrant)
        );
        assert_eq!(
            refused(&post("grant_type=Authorization_Code&code=x")),
            Some(Refusal::UnsupportedGrant)
        );
        let rules = GrantRules {
            forward_grant_types: vec!["magic".to_owned()],
        };
        assert!(matches!(
            classify(&post("grant_type=magic"), &rules),
            Classification::Forward(_)
        ));
        assert!(matches!(
            classify(&post("grant_type=authorization_code&code=x"), &rules),
            Classification::Refuse(Refusal::UnsupportedGrant)
        ));
    }

    #[test]
    fn empty_or_missing_grant_type_is_refused() {
        for body in ["", "grant_type=", "code=x", "grant_type"] {
            assert_eq!(
                refused(&post(body)),
                Some(Refusal::MissingGrantType),
                "{body}"
            );
        }
    }

    #[test]
    fn other_methods_are_forwarded_only_without_a_body() {
        for method in ["GET", "HEAD", "OPTIONS", "post"] {
            let mut req = post("");
            req.method = method;
            assert!(forwarded(&req), "{method}");
        }
        for method in ["post", "Post", "PUT", "PATCH", "GET", "DELETE", "POST "] {
            let mut req = post("grant_type=refresh_token&refresh_token=t");
            req.method = method;
            assert_eq!(refused(&req), Some(Refusal::NotPost), "{method}");
        }
    }

    #[test]
    fn disguised_grant_types_are_refused() {
        for body in [
            "grant_type=refresh_token+&refresh_token=t",
            "grant_type=%20refresh_token&refresh_token=t",
            "grant_type=REFRESH_TOKEN&refresh_token=t",
            "grant_type=refre%C5%BFh_token&refresh_token=t",
            "grant_type=refresh_to%E2%84%AAen&refresh_token=t",
            "grant_type=refresh_token%00&refresh_token=t",
            "grant_type=authorization_code+refresh_token&refresh_token=t",
            "grant_type=%EF%BB%BFrefresh_token&refresh_token=t",
        ] {
            assert_eq!(
                refused(&post(body)),
                Some(Refusal::DisguisedGrantType),
                "{body}"
            );
        }
    }

    #[test]
    fn disguised_parameter_names_are_refused() {
        for body in [
            "grant_type=authorization_code&code=x&Refresh_Token=t",
            "grant_type=authorization_code&code=x&GRANT_TYPE=refresh_token",
            "grant_type=authorization_code&code=x&grant_type%20=refresh_token",
            "grant_type=authorization_code&code=x&%EF%BB%BFgrant_type=refresh_token",
            "grant_type=refresh_token&refresh_token=t&Client_Id=other",
            "grant_type=authorization_code&code=x&subject_token%09=t",
            "grant_type=authorization_code&code=x&cl%C4%B1ent_id=x",
            "grant_type=authorization_code&code=c&grant.type=refresh_token&refresh.token=t",
            "grant_type=authorization_code&code=c&grant[type=refresh_token&refresh[token=t",
            "grant_type=authorization_code&code=c&grant_type]=refresh_token&refresh_token]=t",
            "grant_type=authorization_code&code=c&[grant_type]=refresh_token",
            "grant_type=refresh_token&refresh_token=a&refresh.token=t",
            "grant_type=refresh_token&refresh_token=a&refresh_token[]=t",
            "grant_type=refresh_token&refresh_token=a&client_id=alice&client.id=bob",
        ] {
            let refusal = refused(&post(body));
            assert!(
                matches!(
                    refusal,
                    Some(Refusal::DisguisedParameter) | Some(Refusal::AmbiguousForm)
                ),
                "{body}: {refusal:?}"
            );
        }
    }

    #[test]
    fn bodies_read_differently_by_other_stacks_are_refused() {
        for (body, expected) in [
            (
                "grant_type=%72efresh_token&%72efresh_token=t&x=%zz",
                Refusal::MalformedForm,
            ),
            ("grant_type=%u0072efresh_token", Refusal::MalformedForm),
            (
                "grant_type=authorization_code&code=x;grant_type=refresh_token",
                Refusal::AmbiguousForm,
            ),
            (
                "grant_type=authorization_code&code=x&grant%255Ftype=refresh_token",
                Refusal::AmbiguousForm,
            ),
            (
                "grant_type=refresh_token&refresh_token=%ff",
                Refusal::MalformedForm,
            ),
        ] {
            assert_eq!(refused(&post(body)), Some(expected), "{body}");
        }
    }

    #[test]
    fn refresh_tokens_no_stack_reads_the_same_way_are_refused() {
        for body in [
            "grant_type=refresh_token&refresh_token=abc+",
            "grant_type=refresh_token&refresh_token=abc%2541",
            "grant_type=refresh_token&refresh_token=%C3%A9t",
            "grant_type=refresh_token&refresh_token=a%09b",
        ] {
            assert_eq!(
                refused(&post(body)),
                Some(Refusal::TokenCharacters),
                "{body}"
            );
        }
    }

    #[test]
    fn a_refresh_token_in_another_grant_is_refused() {
        assert_eq!(
            refused(&post(
                "grant_type=authorization_code&code=x&refresh_token=t"
            )),
            Some(Refusal::TokenInOtherGrant)
        );
    }

    #[test]
    fn forwarded_grants_carry_their_token_like_values() {
        let Classification::Forward(forwarded) = run(&post(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=0123456789abcdef0&x=short",
        )) else {
            panic!()
        };
        assert_eq!(
            forwarded.suspects,
            vec![RefreshToken::new("0123456789abcdef0")]
        );
        let mut padded = "grant_type=authorization_code&code=x".to_owned();
        for n in 0..=MAX_SUSPECTS {
            padded.push_str(&format!("&p{n}=padpadpadpadpad{n:02}"));
        }
        assert_eq!(refused(&post(&padded)), Some(Refusal::TooManyValues));
        let many = format!(
            "grant_type=refresh_token&refresh_token=t{}",
            "&a=1".repeat(MAX_PARAMETERS)
        );
        assert_eq!(refused(&post(&many)), Some(Refusal::TooManyValues));
    }

    #[test]
    fn headers_that_change_the_reading_are_refused() {
        let two: &[&[u8]] = &[b"application/x-www-form-urlencoded", b"application/json"];
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        req.content_type = two;
        assert_eq!(refused(&req), Some(Refusal::RepeatedHeader));
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        let auth: &[&[u8]] = &[b"Basic YTpi", b"Basic Yzpk"];
        req.authorization = auth;
        assert_eq!(refused(&req), Some(Refusal::RepeatedHeader));
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        let gzip: &[&[u8]] = &[b"gzip"];
        req.content_encoding = gzip;
        assert_eq!(refused(&req), Some(Refusal::ContentEncoding));
        let identity: &[&[u8]] = &[b"identity"];
        req.content_encoding = identity;
        assert!(matches!(run(&req), Classification::Refresh(_)));
        let mut req = post("");
        req.method = "GET";
        req.upgrade = true;
        assert_eq!(refused(&req), Some(Refusal::Upgrade));
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        let bearer: &[&[u8]] = &[b"Bearer x"];
        req.authorization = bearer;
        assert_eq!(refused(&req), Some(Refusal::AuthorizationScheme));
    }

    #[test]
    fn framing_and_hop_by_hop_tricks_are_refused() {
        let body = "grant_type=refresh_token&refresh_token=t";
        let encodings: [&[&[u8]]; 3] = [
            &[b"gzip, chunked"],
            &[b"chunked", b"chunked"],
            &[b"identity"],
        ];
        for encoding in encodings {
            let mut req = post(body);
            req.transfer_encoding = encoding;
            assert_eq!(refused(&req), Some(Refusal::TransferEncoding));
        }
        let mut req = post(body);
        let chunked: &[&[u8]] = &[b" Chunked"];
        req.transfer_encoding = chunked;
        assert!(matches!(run(&req), Classification::Refresh(_)));
        let connections: [&[&[u8]]; 3] = [
            &[b"Content-Type"],
            &[b"keep-alive, authorization"],
            &[b"close", b"content-length"],
        ];
        for connection in connections {
            let mut req = post(body);
            req.connection = connection;
            assert_eq!(refused(&req), Some(Refusal::ConnectionHeader));
        }
        let usual: &[&[u8]] = &[b"keep-alive", b"close, TE"];
        req.connection = usual;
        assert!(matches!(run(&req), Classification::Refresh(_)));
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let cases: &[(&str, Refusal)] = &[
            (
                "grant_type=refresh_token&grant_type=refresh_token&refresh_token=t",
                Refusal::DuplicateGrantType,
            ),
            (
                "grant_type=authorization_code&grant_type=refresh_token&refresh_token=t",
                Refusal::DuplicateGrantType,
            ),
            (
                "grant_type=refresh_token&refresh_token=a&refresh_token=b",
                Refusal::DuplicateRefreshToken,
            ),
            (
                "grant_type=refresh_token&refresh_token=",
                Refusal::MissingRefreshToken,
            ),
            ("grant_type=refresh_token", Refusal::MissingRefreshToken),
            (
                "grant_type=refresh_token&refresh_token=%zz",
                Refusal::MalformedForm,
            ),
            (
                "grant_type=refresh_token&refresh_token=t&client_id=a&client_id=b",
                Refusal::DuplicateClientCredentials,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(refused(&post(body)), Some(*expected), "{body}");
        }
    }

    #[test]
    fn grant_parameters_in_the_query_are_refused_on_every_method() {
        let mut req = post("grant_type=authorization_code&code=x");
        for query in [
            "refresh_token=t",
            "grant_type=refresh_token",
            "Refresh_Token=t",
            "%72efresh_token=t",
            "%u0072efresh_token=t",
            "x=1;refresh_token=t",
            "refresh%255Ftoken=t",
            "refresh.token=t",
            "refresh_token[]=t",
            "client_id=victim",
            "x=%zz&refresh_token=t",
        ] {
            req.query = Some(query);
            assert_eq!(refused(&req), Some(Refusal::TokenInQuery), "{query}");
        }
        req.method = "GET";
        req.body = b"";
        req.query = Some("grant_type=refresh_token");
        assert_eq!(refused(&req), Some(Refusal::TokenInQuery));
        req.query = Some("foo=bar");
        assert!(forwarded(&req));
    }

    #[test]
    fn refresh_grant_in_other_content_types_is_refused() {
        for content_type in [
            &[&b"application/json"[..]][..],
            &[&b"multipart/form-data; boundary=x"[..]][..],
            &[][..],
        ] {
            let mut req = post(r#"{"grant\u005ftype":"refresh_token","refresh_token":"t"}"#);
            req.content_type = content_type;
            assert_eq!(refused(&req), Some(Refusal::NotForm));
        }
    }

    #[test]
    fn basic_and_form_naming_different_clients_is_refused() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s")
        );
        let authorization = [header.as_bytes()];
        let mut req = post("grant_type=refresh_token&refresh_token=t&client_id=bob");
        req.authorization = &authorization;
        assert_eq!(refused(&req), Some(Refusal::ConflictingClients));
        let mut req = post("grant_type=refresh_token&refresh_token=t&client_secret=other");
        req.authorization = &authorization;
        assert_eq!(refused(&req), Some(Refusal::ConflictingClients));
        let mut req = post("grant_type=refresh_token&refresh_token=t");
        let malformed: &[&[u8]] = &[b"Basic %%%"];
        req.authorization = malformed;
        assert_eq!(refused(&req), Some(Refusal::MalformedBasic));
    }

    #[test]
    fn a_client_assertion_travels_as_the_clients_authentication() {
        let body = "grant_type=refresh_token&refresh_token=t&client_id=c&client_assertion_type=jwt&client_assertion=a.b.c";
        let Classification::Refresh(grant) = run(&post(body)) else {
            panic!("not a refresh grant")
        };
        assert_eq!(grant.client.client_id, "c");
        assert_eq!(grant.client.assertion, Some(ClientSecret::new("a.b.c")));
        assert_eq!(grant.client.secret, None);
        assert_eq!(
            refused(&post(
                "grant_type=refresh_token&refresh_token=t&client_secret=s&client_assertion=a"
            )),
            Some(Refusal::ConflictingClients)
        );
        assert_eq!(
            refused(&post(
                "grant_type=refresh_token&refresh_token=t&client_assertion=a&client_assertion=b"
            )),
            Some(Refusal::DuplicateClientCredentials)
        );
    }

    #[test]
    fn one_dpop_proof_travels_with_the_grant() {
        let proof: &[&[u8]] = &[b" ey.proof.sig "];
        let mut req = post("grant_type=refresh_token&refresh_token=t&client_id=c");
        req.dpop = proof;
        let Classification::Refresh(grant) = run(&req) else {
            panic!("not a refresh grant")
        };
        assert_eq!(grant.dpop, Some(ClientSecret::new("ey.proof.sig")));
        let two: &[&[u8]] = &[b"a.b.c", b"d.e.f"];
        req.dpop = two;
        assert_eq!(refused(&req), Some(Refusal::RepeatedHeader));
    }

    #[test]
    fn refusal_descriptions_never_echo_the_token() {
        let req = post("grant_type=refresh_token&refresh_token=SECRET1&refresh_token=SECRET2");
        let reason = refused(&req).unwrap();
        assert!(!reason.description().contains("SECRET"));
        assert_eq!(reason.error(), "invalid_request");
        assert_eq!(Refusal::UnsupportedGrant.error(), "unsupported_grant_type");
    }
}
