//! refresh-gate: one-time refresh tokens with a short grace window, in front of an
//! OpenID Connect identity provider.
//!
//! The pure parts (policy, grant parsing, fingerprints, the sealed answer envelope and the
//! store) build without Pingora; the `proxy` feature adds the Pingora glue and the binary.

pub mod answer;
pub mod audit;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod detached;
pub mod discovery;
pub mod envelope;
pub mod fingerprint;
pub mod form;
pub mod grant;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod readiness;
pub mod redact;
pub mod respond;
pub mod secret;
pub mod source_cap;
pub mod store;
pub mod token_response;
pub mod token_spelling;

#[cfg(feature = "proxy")]
pub mod proxy;
