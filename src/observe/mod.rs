//! What operators see: the metric contract, the audit events for the SIEM, and the log
//! redaction that keeps secrets out of every line.

pub mod audit;
pub mod grace;
pub mod metrics;
pub mod redact;
