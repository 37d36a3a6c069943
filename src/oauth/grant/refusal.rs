//! Why the gate refused a token-path request: one reason code each, for answers, logs,
//! audit events and metrics; never a raw value.

/// Why a token-path request was refused. Every variant has a stable [`Refusal::reason`]
/// code for logs, audit events and metrics, and never carries a raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A grant parameter in the query string.
    #[error("grant parameters must not be sent in the query string")]
    TokenInQuery,
    /// A method other than `POST` with a body.
    #[error("a token request must use POST")]
    NotPost,
    /// `Upgrade` on a token path.
    #[error("protocol upgrades are not accepted on the token endpoint")]
    Upgrade,
    /// `Content-Type` or `Authorization` more than once.
    #[error("Content-Type and Authorization must not be repeated")]
    RepeatedHeader,
    /// A `Content-Encoding` other than `identity`.
    #[error("a token request body must not be content-encoded")]
    ContentEncoding,
    /// A `Transfer-Encoding` other than one `chunked`.
    #[error("a token request body must be sent with Content-Length or chunked alone")]
    TransferEncoding,
    /// `Connection` naming a header other than `keep-alive`, `close` or `te` (a hop-by-hop
    /// strip would change what the IdP reads).
    #[error("Connection may only carry keep-alive, close or te on the token endpoint")]
    ConnectionHeader,
    /// A body that is not `application/x-www-form-urlencoded`.
    #[error("a token request must use application/x-www-form-urlencoded")]
    NotForm,
    /// A form charset other than UTF-8 or US-ASCII.
    #[error("a token request form must be UTF-8")]
    Charset,
    /// A `Content-Type` that does not parse.
    #[error("malformed Content-Type")]
    MalformedContentType,
    /// A form body that cannot be decoded unambiguously.
    #[error("the form body is not valid application/x-www-form-urlencoded UTF-8")]
    MalformedForm,
    /// A name that only a lenient reading makes a grant parameter.
    #[error("a parameter name is a grant parameter only after case folding or trimming")]
    DisguisedParameter,
    /// Readings of the body disagree about the grant.
    #[error("the form body reads differently to different parsers")]
    AmbiguousForm,
    /// No `grant_type`, or an empty one.
    #[error("grant_type is missing or empty")]
    MissingGrantType,
    /// A `grant_type` that some stack reads as `refresh_token`.
    #[error("grant_type must be exactly refresh_token")]
    DisguisedGrantType,
    /// A grant type the gate does not forward.
    #[error("this grant type is not supported at this endpoint")]
    UnsupportedGrant,
    /// `grant_type` more than once.
    #[error("grant_type is repeated")]
    DuplicateGrantType,
    /// `refresh_token` more than once.
    #[error("refresh_token is repeated")]
    DuplicateRefreshToken,
    /// A refresh grant without a non-empty `refresh_token`.
    #[error("refresh_token is missing or empty")]
    MissingRefreshToken,
    /// A refresh token with spaces, controls, `%` or non-ASCII characters.
    #[error("refresh_token holds characters no refresh token has")]
    TokenCharacters,
    /// A `refresh_token` parameter in another grant.
    #[error("refresh_token is only accepted with grant_type=refresh_token")]
    TokenInOtherGrant,
    /// `client_id` or `client_secret` repeated in the form.
    #[error("client credentials are repeated")]
    DuplicateClientCredentials,
    /// Basic and form credentials naming different clients.
    #[error("HTTP Basic and form credentials name different clients")]
    ConflictingClients,
    /// An `Authorization: Basic` header that cannot be decoded.
    #[error("malformed HTTP Basic client credentials")]
    MalformedBasic,
    /// An `Authorization` scheme other than Basic on a refresh grant.
    #[error("a refresh grant authenticates its client with HTTP Basic or form credentials")]
    AuthorizationScheme,
    /// A path that only a lenient reading (`%2F` as `/`) makes a token path.
    #[error("ambiguous encoding of the token path")]
    AmbiguousPath,
    /// A body over the cap.
    #[error("request body too large")]
    BodyTooLarge,
    /// A body that could not be read (bad framing, a client that left).
    #[error("malformed request body")]
    UnreadableBody,
    /// More parameters than any token request has (parsers with a parameter limit read
    /// only a prefix), or more token-like values than the gate checks.
    #[error("too many parameters or token-like values in one request")]
    TooManyValues,
    /// A forwarded grant carrying a token the gate tombstoned.
    #[error("a spent refresh token is not accepted in another grant")]
    SpentToken,
}

impl Refusal {
    /// Every refusal, for pre-registering metric series.
    pub const ALL: [Refusal; 30] = [
        Refusal::TokenInQuery,
        Refusal::NotPost,
        Refusal::Upgrade,
        Refusal::RepeatedHeader,
        Refusal::ContentEncoding,
        Refusal::TransferEncoding,
        Refusal::ConnectionHeader,
        Refusal::NotForm,
        Refusal::Charset,
        Refusal::MalformedContentType,
        Refusal::MalformedForm,
        Refusal::DisguisedParameter,
        Refusal::AmbiguousForm,
        Refusal::MissingGrantType,
        Refusal::DisguisedGrantType,
        Refusal::UnsupportedGrant,
        Refusal::DuplicateGrantType,
        Refusal::DuplicateRefreshToken,
        Refusal::MissingRefreshToken,
        Refusal::TokenCharacters,
        Refusal::TokenInOtherGrant,
        Refusal::DuplicateClientCredentials,
        Refusal::ConflictingClients,
        Refusal::MalformedBasic,
        Refusal::AuthorizationScheme,
        Refusal::AmbiguousPath,
        Refusal::BodyTooLarge,
        Refusal::UnreadableBody,
        Refusal::TooManyValues,
        Refusal::SpentToken,
    ];

    /// The RFC 6749 `error_description`.
    pub fn description(&self) -> String {
        self.to_string()
    }

    /// The RFC 6749 `error` code.
    pub fn error(&self) -> &'static str {
        match self {
            Refusal::UnsupportedGrant => "unsupported_grant_type",
            _ => "invalid_request",
        }
    }

    /// The stable reason code (audit events, logs).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TokenInQuery => "grant_parameter_in_query",
            Refusal::NotPost => "not_post",
            Refusal::Upgrade => "upgrade",
            Refusal::RepeatedHeader => "repeated_header",
            Refusal::ContentEncoding => "content_encoding",
            Refusal::TransferEncoding => "transfer_encoding",
            Refusal::ConnectionHeader => "connection_header",
            Refusal::NotForm => "not_form",
            Refusal::Charset => "charset",
            Refusal::MalformedContentType => "malformed_content_type",
            Refusal::MalformedForm => "malformed_form",
            Refusal::DisguisedParameter => "disguised_parameter",
            Refusal::AmbiguousForm => "ambiguous_form",
            Refusal::MissingGrantType => "missing_grant_type",
            Refusal::DisguisedGrantType => "disguised_grant_type",
            Refusal::UnsupportedGrant => "unsupported_grant_type",
            Refusal::DuplicateGrantType => "duplicate_grant_type",
            Refusal::DuplicateRefreshToken => "duplicate_refresh_token",
            Refusal::MissingRefreshToken => "missing_refresh_token",
            Refusal::TokenCharacters => "token_characters",
            Refusal::TokenInOtherGrant => "refresh_token_in_other_grant",
            Refusal::DuplicateClientCredentials => "duplicate_client_credentials",
            Refusal::ConflictingClients => "conflicting_clients",
            Refusal::MalformedBasic => "malformed_basic",
            Refusal::AuthorizationScheme => "authorization_scheme",
            Refusal::AmbiguousPath => "ambiguous_path",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::UnreadableBody => "unreadable_body",
            Refusal::TooManyValues => "too_many_token_values",
            Refusal::SpentToken => "spent_token",
        }
    }
}
