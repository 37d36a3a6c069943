//! The oracles of the differential test against known facts about the real stacks.

mod common;

use common::oracles::Oracles;

/// A request to /token with a form Content-Type (plus `charset` when given).
fn form(method: &str, body: &[u8], charset: Option<&str>) -> Vec<u8> {
    let charset = charset
        .map(|c| format!("; charset={c}"))
        .unwrap_or_default();
    let mut raw = format!(
        "{method} /token HTTP/1.1\r\nHost: idp.example\r\n\
         Content-Type: application/x-www-form-urlencoded{charset}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// `name=value&...` with every byte of each name and value, in UTF-16BE, percent-encoded.
fn utf16be_form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let pct = |s: &str| -> String {
        s.encode_utf16()
            .flat_map(u16::to_be_bytes)
            .map(|b| format!("%{b:02X}"))
            .collect()
    };
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect();
    pairs.join("&").into_bytes()
}

#[test]
fn the_oracles_agree_with_known_facts() {
    let plain = b"grant_type=refresh_token&refresh_token=abc";
    let utf16 = utf16be_form(&[("grant_type", "refresh_token"), ("refresh_token", "abc")]);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "plain POST form",
            form("POST", plain, None),
            &["node", "python", "go", "java"],
        ),
        (
            // Node's querystring keeps %zz literal; fosite's ParseMultipartForm hides the
            // ParseForm error (Dex's ParseForm does not); Jetty answers 400.
            "escaped names and a bad escape",
            form(
                "POST",
                b"grant_type=%72efresh_token&%72efresh_token=abc&x=%zz",
                None,
            ),
            &["node", "python", "go"],
        ),
        (
            // fosite TrimSpaces each space-separated item, Java trim(), Python strip().
            "a trailing space",
            form("POST", b"grant_type=refresh_token+&refresh_token=abc", None),
            &["python", "go", "java"],
        ),
        (
            // Jetty decodes the escapes in the charset; Django's QueryDict too (the strict
            // UTF-16BE decode of the ASCII body fails, so it falls back to Latin-1).
            "UTF-16BE escapes",
            form("POST", &utf16, Some("UTF-16BE")),
            &["python", "java"],
        ),
        (
            // net/http ParseForm and Jetty read PUT bodies; fosite and Dex refuse non-POST.
            "PUT",
            form("PUT", plain, None),
            &["node", "python", "go", "java"],
        ),
        (
            "an authorization code grant",
            form("POST", b"grant_type=authorization_code&code=x", None),
            &[],
        ),
    ];
    let raw: Vec<&[u8]> = cases.iter().map(|(_, raw, _)| raw.as_slice()).collect();
    let mut oracles = Oracles::start();
    let verdicts = oracles.judge(&raw);
    for ((name, _, expected), verdicts) in cases.iter().zip(&verdicts) {
        assert_eq!(verdicts.who(), *expected, "{name}: {verdicts:#?}");
        for (stack, verdict) in verdicts.all() {
            if verdict.refresh {
                assert_eq!(verdict.token.as_deref(), Some("abc"), "{name}: {stack}");
            }
        }
    }
    assert!(
        verdicts[1].java.note.contains("error"),
        "{:?}",
        verdicts[1].java
    );
    assert!(!verdicts[5].any_refresh());

    // A second batch on the same processes, large enough to fill the pipes both ways.
    let many: Vec<&[u8]> = raw.iter().copied().cycle().take(600).collect();
    let again = oracles.judge(&many);
    for (i, v) in again.iter().enumerate() {
        assert_eq!(v.who(), verdicts[i % cases.len()].who(), "request {i}");
    }
}
