//! OAuth 2.0 on the wire (RFC 6749): token requests (form, grant, client credentials, token
//! spelling) and the IdP's token answers.

pub mod assertion;
pub mod credentials;
pub mod dpop;
pub mod form;
pub mod grant;
pub mod revocation;
pub mod token_response;
pub mod token_spelling;
