//! refresh-gate: one-time refresh tokens with a short grace window, in front of an
//! OpenID Connect identity provider.
//!
//! The layers, from the pure core outwards (`docs/DESIGN.md` has the state model):
//! - [`clock`] and [`policy`]: the rotation rules as pure functions of (state, facts, now).
//! - [`oauth`]: reading token requests and the IdP's token answers (RFC 6749).
//! - [`http`]: token paths, the client's address, the gate's own answers.
//! - [`seal`]: fingerprints, sealed answers and secret newtypes.
//! - [`store`]: the state of each fingerprint behind one async trait (memory, Redis).
//! - [`observe`]: the metric contract, the audit events, log redaction.
//! - [`health`]: the discovery check and readiness.
//! - [`config`]: the TOML file, validated into typed settings.
//! - [`proxy`] (feature `proxy`): the Pingora request path, glue only.
//! - [`process`] (feature `proxy`): start-up, listeners, reload, signals, logging.
//!
//! The pure parts build without Pingora; the `proxy` feature adds the glue and the binary.

#![warn(missing_docs, unreachable_pub)]

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("features `mimalloc` and `jemalloc` each choose the global allocator: pick one");

/// The global allocator (feature `mimalloc`).
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The global allocator (feature `jemalloc`).
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod clock;
pub mod config;
pub mod health;
pub mod http;
pub mod oauth;
pub mod observe;
pub mod policy;
pub mod seal;
pub mod store;

#[cfg(feature = "proxy")]
pub mod process;
#[cfg(feature = "proxy")]
pub mod proxy;
