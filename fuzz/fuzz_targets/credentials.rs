//! The HTTP Basic parser never panics, and credentials it accepts survive a round trip:
//! form-encoding them again (RFC 6749 2.3.1) and parsing yields the same client.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use refresh_gate::oauth::credentials::parse_basic;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(credentials)) = parse_basic(data) {
        let secret = credentials.secret.as_ref().expect("Basic always carries a secret");
        let secret = std::str::from_utf8(secret.expose())
            .expect("decoded secrets are UTF-8")
            .to_owned();
        let encoded = format!(
            "{}:{}",
            utf8_percent_encode(&credentials.client_id, NON_ALPHANUMERIC),
            utf8_percent_encode(&secret, NON_ALPHANUMERIC)
        );
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(encoded)
        );
        let again = parse_basic(header.as_bytes()).expect("re-encoded credentials parse");
        assert_eq!(again, Some(credentials));
    }
});
