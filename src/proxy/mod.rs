//! The request path on Pingora: the `ProxyHttp` implementation, the refresh handler, the
//! exchange with the IdP. Every decision is made by the pure modules; this layer moves bytes.

mod body;
pub mod exchange;
pub mod gate;
mod origin;
pub mod refresh;
mod revocation;
pub mod upstream;
pub mod write;
