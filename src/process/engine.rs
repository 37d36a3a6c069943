//! The engine settings the gate runs Pingora with, in one place: the load benchmark's
//! minimal Pingora proxy (`benches/load/`) runs with the same ones, so the ratio between the
//! two is the gate's own cost.

use pingora::server::configuration::ServerConf;

/// Pingora's server settings as the gate uses them, before the gate's own shutdown and CA
/// settings: one worker thread per core.
pub fn engine_conf() -> ServerConf {
    ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        ..ServerConf::default()
    }
}
