//! The Pingora glue: the `ProxyHttp` implementation, the refresh exchange, the server.
//! Every decision is made by the pure modules; this layer only moves bytes.

pub mod admin;
pub mod background;
pub mod exchange;
pub mod gate;
pub mod refresh;
pub mod reload;
pub mod server;
pub mod signal;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod write;
