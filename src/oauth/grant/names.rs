//! The names the token-request rules talk about: grant parameters, the registered grant
//! types the gate forwards by default, and which parameters may never travel in a query.

/// The refresh grant's `grant_type` and the name of its token parameter.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// The name of the grant type parameter.
pub const GRANT_TYPE: &str = "grant_type";

/// Parameters of token requests (RFC 6749, 7521, 7523, 8628, 8693, 9126, CIBA, UMA,
/// OID4VCI, PKCE): a name that only a lenient parser reads as one of these is refused.
pub const GRANT_PARAMETERS: &[&str] = &[
    "grant_type",
    "refresh_token",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "code",
    "code_verifier",
    "redirect_uri",
    "scope",
    "username",
    "password",
    "assertion",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "audience",
    "resource",
    "device_code",
    "auth_req_id",
    "pre-authorized_code",
    "tx_code",
    "ticket",
    "rpt",
    "claim_token",
    "id_token_hint",
    "dpop_jkt",
];

/// Parameters that decide a grant or authenticate its client: never accepted in the query
/// of a token-path request (servlet containers and Go's `Request.Form` merge the query into
/// the parameters the IdP reads).
pub const QUERY_FORBIDDEN: &[&str] = &[
    "grant_type",
    "refresh_token",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "code",
    "code_verifier",
    "username",
    "password",
    "assertion",
    "subject_token",
    "actor_token",
    "device_code",
    "auth_req_id",
    "pre-authorized_code",
];

/// The grant types forwarded untouched by default (`[upstream] forward_grant_types`): the
/// exact identifiers of the registered grants other than the refresh grant.
pub const DEFAULT_FORWARD_GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "client_credentials",
    "password",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:token-exchange",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:saml2-bearer",
    "urn:openid:params:grant-type:ciba",
    "urn:ietf:params:oauth:grant-type:uma-ticket",
    "urn:ietf:params:oauth:grant-type:pre-authorized_code",
];

/// True when `name` is a grant parameter exactly.
pub fn is_grant_parameter(name: &str) -> bool {
    GRANT_PARAMETERS.contains(&name)
}
