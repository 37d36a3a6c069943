//! The TOML configuration, one job per file:
//! - [`schema`]: the file as written (serde structs, each section's defaults, unknown keys
//!   refused);
//! - [`upstream_url`]: the `[upstream] url` type;
//! - [`validate`]: every value checked, every problem collected, typed [`Settings`] out;
//! - [`settings`]: those typed settings, what start-up builds the gate from;
//! - [`diff`]: what a reload may change and what needs a restart;
//! - [`error`]: the problems, each naming its key.
//!
//! [`load`] runs them in order; start-up, `--check-config` and a reload all go through it.

pub mod diff;
pub mod error;
pub mod schema;
pub mod settings;
pub mod upstream_url;
pub mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ConfigErrors};
pub use schema::{
    AdminSection, AuditSection, Backend, ClientOverrides, Config, ListenSection, LogFormat,
    LogSection, OnStoreError, RotationSection, StoreSection, UpstreamSection,
};
pub use settings::{
    ClientKeys, ListenSettings, RedisSettings, RotationSettings, Settings, StoreBackend,
    StoreSettings, TlsFiles, UpstreamSettings,
};
pub use upstream_url::UpstreamTarget;
pub use validate::{LONG_GRACE, MAX_GRACE};

use std::path::Path;

/// The largest token-path request body the gate reads (Pingora's retry buffer).
pub const MAX_TOKEN_BODY_BYTES: usize = 64 * 1024;

/// A configuration file read and validated.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file as written: what a reload compares with ([`Config::restart_only_changes`]).
    pub file: Config,
    /// The typed settings: what the gate runs with.
    pub settings: Settings,
}

/// Read and parse a file (no validation). A parse error names the file.
pub fn read(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Config::parse(&text).map_err(|e| match e {
        ConfigError::Parse { message, .. } => ConfigError::Parse {
            path: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// Read, parse and validate a file: every problem found, or the settings.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = read(path)?;
    let settings = file.validate()?;
    Ok(Loaded { file, settings })
}
