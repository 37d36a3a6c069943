//! Is the gate in force: the discovery check against the IdP, and readiness.

pub mod discovery;
pub mod readiness;
