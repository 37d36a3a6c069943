//! The grant classifier never panics, and what it calls a refresh grant really has exactly
//! one non-empty refresh_token that the form parser reads the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refresh_gate::grant::{classify, Classification, TokenPathRequest};

fuzz_target!(|data: &[u8]| {
    // Split the input into query, content type, authorization and body at 0xFF bytes.
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let query = parts.next().map(String::from_utf8_lossy);
    let content_type = parts.next();
    let authorization = parts.next();
    let body = parts.next().unwrap_or(b"");
    let request = TokenPathRequest {
        method: "POST",
        query: query.as_deref(),
        content_type,
        authorization,
        body,
    };
    if let Classification::Refresh(grant) = classify(&request) {
        assert!(!grant.token.expose().is_empty());
        let fields = refresh_gate::form::parse(body).expect("a refresh grant body parses");
        let tokens: Vec<_> = fields.iter().filter(|(k, _)| k == "refresh_token").collect();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].1.as_bytes(), grant.token.expose());
    }
});
