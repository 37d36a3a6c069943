//! Path normalisation never panics, is idempotent (through its raw form), and never yields a path with empty,
//! `.` or `..` segments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refresh_gate::http::path::{match_token_path, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(path) = normalize(target) {
        assert!(path.starts_with('/'));
        for segment in path.split('/').skip(1) {
            assert!(segment != "." && segment != "..", "{path}");
            assert!(!segment.is_empty() || path == "/", "{path}");
        }
        // Re-encode what the raw form treats as delimiters: normalising again is a no-op.
        let raw = path
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23")
            .replace(';', "%3B");
        let again = normalize(&raw);
        assert_eq!(again.as_deref(), Some(path.as_str()), "not idempotent: {target:?}");
    }
    let _ = match_token_path(target, &["/auth/idp/k8sIdp/token".to_owned()]);
});
