//! Prerequisites of end-to-end tests: a missing program fails the test with a clear
//! message (never a silent skip).

use std::path::PathBuf;

/// The path of `program` on PATH, or a panic that says how to install it.
pub fn require(program: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "prerequisite missing: `{program}` is not on PATH. {install_hint} \
         (scripts/setup installs every prerequisite)"
    );
}
