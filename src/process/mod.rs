//! The process around the request path: assembling and running the server, the admin
//! listener, background checks, reload, signals, logging and TLS.

pub mod admin;
pub mod app;
pub mod background;
pub mod engine;
pub mod log_thread;
pub mod reload;
pub mod signal;
pub mod telemetry;
pub mod tls;
