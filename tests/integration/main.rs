//! The integration tests: one binary (it links the proxy once), one module per area. Every
//! test still starts the real `refresh-gate` binary as a subprocess on ephemeral loopback
//! ports, so tests share no tracing subscriber, metrics registry or process state.
//!
//! The kubectl end-to-end scenarios (`scenario_*`) stay their own binary, `tests/e2e_kubectl.rs`,
//! run one at a time; both share the harness in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod alerting;
mod binding;
mod cli;
mod contract;
mod deploy;
mod detached;
mod differential;
mod fail_closed;
mod failures;
mod families;
mod grace_advice;
mod hostile;
mod log_secrets;
mod observability;
mod observe_mode;
mod oracles_selftest;
mod owners;
mod passthrough;
mod redis_topology_selftest;
mod refresh;
mod reload;
mod replicas;
mod secrets;
mod shutdown;
mod store;
mod store_cluster;
mod store_ha_secured;
mod store_redis;
mod store_sentinel;
mod store_topologies;
mod tls_listener;
mod token_path;
mod upstream_faults;
mod upstream_tls;
