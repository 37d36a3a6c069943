//! Keeping tokens unusable at rest: keyed fingerprints, answers sealed under the refresh
//! token, and secret newtypes that never print.

pub mod envelope;
pub mod fingerprint;
pub mod secret;
