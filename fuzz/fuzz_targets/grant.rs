//! The grant classifier never panics; what it calls a refresh grant really has exactly one
//! non-empty refresh_token that the strict form parser reads the same way, and what it
//! forwards has a grant type from the forward list, exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refresh_gate::oauth::grant::{classify, Classification, GrantRules, TokenPathRequest};

fuzz_target!(|data: &[u8]| {
    // Split the input into method, query, content type, authorization and body at 0xFF.
    let mut parts = data.splitn(5, |b| *b == 0xff);
    let method = parts
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let query = parts.next().map(String::from_utf8_lossy);
    let content_type: Vec<&[u8]> = parts.next().into_iter().collect();
    let authorization: Vec<&[u8]> = parts.next().into_iter().collect();
    let body = parts.next().unwrap_or(b"");
    let request = TokenPathRequest {
        method: &method,
        query: query.as_deref(),
        content_type: &content_type,
        authorization: &authorization,
        content_encoding: &[],
        transfer_encoding: &[],
        connection: &[],
        dpop: &[],
        upgrade: false,
        body,
    };
    let rules = GrantRules::default();
    match classify(&request, &rules) {
        Classification::Refresh(grant) => {
            assert_eq!(method, "POST");
            assert!(!grant.token.expose().is_empty());
            let fields = refresh_gate::oauth::form::parse(body).expect("a refresh grant body parses");
            let tokens: Vec<_> = fields
                .iter()
                .filter(|(k, _)| k == "refresh_token")
                .collect();
            assert_eq!(tokens.len(), 1);
            assert_eq!(tokens[0].1.as_bytes(), grant.token.expose());
        }
        Classification::Forward(_) if method != "POST" => assert!(body.is_empty()),
        Classification::Forward(_) => {
            let fields = refresh_gate::oauth::form::parse(body).expect("a forwarded body parses");
            let grant: Vec<_> = fields.iter().filter(|(k, _)| k == "grant_type").collect();
            assert_eq!(grant.len(), 1);
            assert!(rules.forward_grant_types.contains(&grant[0].1));
        }
        Classification::Refuse(_) => {}
    }
});
