//! HTTP as the gate reads and writes it: which paths are token paths, who the client is,
//! and the answers the gate gives itself.

pub mod answer;
pub mod client_ip;
pub mod path;
pub mod respond;
