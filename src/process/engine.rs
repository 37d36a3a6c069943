//! The engine settings the gate runs Pingora with, in one place: the load benchmark's
//! minimal Pingora proxy (`benches/load/`) runs with the same ones, so the ratio between the
//! two is the gate's own cost.

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;

/// Pingora's server settings as the gate uses them, before the gate's own shutdown and CA
/// settings: thread-per-core, one single-threaded runtime per core without work stealing
/// (a connection and the tasks it spawns stay on one thread).
pub fn engine_conf() -> ServerConf {
    ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        work_stealing: false,
        ..ServerConf::default()
    }
}

/// A plain-TCP listener on `address` with the gate's client socket settings.
pub fn tcp_listener(address: &str) -> ListenerConfig {
    ListenerConfig::tcp(address.to_owned()).l4_buffer(downstream_buffers())
}

/// The client connections' socket buffers. Writes: 16 KiB instead of Pingora's 1,460 bytes
/// (one MSS), so an answer the gate writes itself (a token response of ~1.5 KiB with its
/// header) leaves in one `sendto` instead of two. Pingora still flushes at the end of every
/// response and after every chunk of a chunked or close-delimited body, so streaming is not
/// delayed; only a known-length body is gathered, up to 16 KiB at a time.
pub fn downstream_buffers() -> L4BufferSettings {
    L4BufferSettings {
        read: None,
        write: Some(DOWNSTREAM_WRITE_BUFFER),
    }
}

/// The write buffer of client connections, in bytes.
pub const DOWNSTREAM_WRITE_BUFFER: usize = 16 * 1024;
