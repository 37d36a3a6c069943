//! The oracles of the differential test against known facts about the real stacks.

use crate::common;

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
    let all = ["node", "python", "go", "java", "php", "rack"];
    // (what, request, the stacks that read a refresh grant, the refresh token they read)
    let cases: Vec<(&str, Vec<u8>, &[&str], &str)> = vec![
        ("plain POST form", form("POST", plain, None), &all, "abc"),
        (
            // Node's querystring and PHP keep %zz literal; fosite's ParseMultipartForm hides
            // the ParseForm error (Dex's ParseForm does not); Jetty answers 400; Rack raises.
            "escaped names and a bad escape",
            form(
                "POST",
                b"grant_type=%72efresh_token&%72efresh_token=abc&x=%zz",
                None,
            ),
            &["node", "python", "go", "php"],
            "abc",
        ),
        (
            // fosite TrimSpaces each space-separated item, Java trim(), Python strip(), PHP
            // trim() (league itself compares exactly); Doorkeeper compares exactly.
            "a trailing space",
            form("POST", b"grant_type=refresh_token+&refresh_token=abc", None),
            &["python", "go", "java", "php"],
            "abc",
        ),
        (
            // Jetty decodes the escapes in the charset; Django's QueryDict too (the strict
            // UTF-16BE decode of the ASCII body fails, so it falls back to Latin-1). PHP and
            // Rack apply no charset.
            "UTF-16BE escapes",
            form("POST", &utf16, Some("UTF-16BE")),
            &["python", "java"],
            "abc",
        ),
        (
            // net/http ParseForm and Jetty read PUT bodies; fosite and Dex refuse non-POST.
            // PHP's SAPI fills $_POST for POST only, Symfony parse_str's PUT bodies; Rack
            // reads a form body whatever the method.
            "PUT",
            form("PUT", plain, None),
            &all,
            "abc",
        ),
        (
            "an authorization code grant",
            form("POST", b"grant_type=authorization_code&code=x", None),
            &[],
            "",
        ),
        (
            // parse_str: '.' and ' ' in a name become '_'; the last duplicate wins.
            "PHP dots",
            form(
                "POST",
                b"grant_type=authorization_code&code=c&grant.type=refresh_token&refresh.token=S",
                None,
            ),
            &["php"],
            "S",
        ),
        (
            // parse_str: the first '[' without a ']' becomes '_'.
            "PHP unmatched brackets",
            form(
                "POST",
                b"grant_type=authorization_code&code=c&grant[type=refresh_token&refresh[token=S",
                None,
            ),
            &["php"],
            "S",
        ),
        (
            // php_register_variable_ex: a name ends at its first NUL byte.
            "PHP NUL in a name",
            form(
                "POST",
                b"grant_type%00x=refresh_token&refresh_token=abc",
                None,
            ),
            &["php"],
            "abc",
        ),
        (
            // parse_nested_query: the ']' after a name is dropped; the last duplicate wins.
            "Rack trailing brackets",
            form(
                "POST",
                b"grant_type=authorization_code&code=c&grant_type]=refresh_token&refresh_token]=S",
                None,
            ),
            &["rack"],
            "S",
        ),
        (
            // parse_nested_query: leading '[' and ']' are dropped too; PHP drops such names.
            "Rack leading brackets",
            form(
                "POST",
                b"grant_type=authorization_code&code=c&[grant_type]=refresh_token&[refresh_token]=S",
                None,
            ),
            &["rack"],
            "S",
        ),
        (
            // An array grant_type is no refresh grant, to PHP or Rack.
            "array grant_type",
            form("POST", b"grant_type[]=refresh_token&refresh_token=abc", None),
            &[],
            "",
        ),
        (
            // $_POST splits the body binary-safely; parse_str (PUT bodies) stops at a raw NUL.
            "a raw NUL before the grant, POST",
            form(
                "POST",
                b"x=\0&grant_type=refresh_token&refresh_token=abc",
                None,
            ),
            &all,
            "abc",
        ),
        (
            "a raw NUL before the grant, PUT",
            form("PUT", b"x=\0&grant_type=refresh_token&refresh_token=abc", None),
            &["node", "python", "go", "java", "rack"],
            "abc",
        ),
        (
            // Rack::Request#form_data?: a POST without Content-Type is a form.
            "POST without a Content-Type",
            b"POST /token HTTP/1.1\r\nHost: idp.example\r\nContent-Length: 42\r\n\r\n\
              grant_type=refresh_token&refresh_token=abc"
                .to_vec(),
            &["python", "rack"],
            "abc",
        ),
        (
            // Rack reads a form body whatever the method (PHP's parse_str readings too).
            "GET with a form body",
            form("GET", plain, None),
            &["node", "python", "php", "rack"],
            "abc",
        ),
        (
            // Rack::Request#parseable_data?: a multipart/mixed body is parsed as a form.
            "multipart/mixed",
            b"POST /token HTTP/1.1\r\nHost: idp.example\r\nContent-Type: multipart/mixed\r\n\
              Content-Length: 42\r\n\r\ngrant_type=refresh_token&refresh_token=abc"
                .to_vec(),
            &["python", "rack"],
            "abc",
        ),
    ];
    let raw: Vec<&[u8]> = cases.iter().map(|(_, raw, _, _)| raw.as_slice()).collect();
    let mut oracles = Oracles::start();
    let verdicts = oracles.judge(&raw);
    for ((name, _, expected, token), verdicts) in cases.iter().zip(&verdicts) {
        assert_eq!(verdicts.who(), *expected, "{name}: {verdicts:#?}");
        for (stack, verdict) in verdicts.all() {
            if verdict.refresh {
                assert_eq!(verdict.token.as_deref(), Some(*token), "{name}: {stack}");
            }
        }
    }
    assert!(
        verdicts[1].java.note.contains("error"),
        "{:?}",
        verdicts[1].java
    );
    assert!(!verdicts[5].any_refresh());
    // Which PHP reading: $_POST for POST only, parse_str for the PUT body; arrays are noted.
    assert!(
        verdicts[0].php.note.contains("$_POST"),
        "{:?}",
        verdicts[0].php
    );
    assert!(
        verdicts[4].php.note.contains("parse_str"),
        "{:?}",
        verdicts[4].php
    );
    assert!(
        verdicts[11].php.note.contains("array"),
        "{:?}",
        verdicts[11].php
    );
    assert!(
        verdicts[11].rack.note.contains("Array"),
        "{:?}",
        verdicts[11].rack
    );
    assert!(
        verdicts[1].rack.note.contains("invalid %-encoding"),
        "{:?}",
        verdicts[1].rack
    );

    // A second batch on the same processes, large enough to fill the pipes both ways.
    let many: Vec<&[u8]> = raw.iter().copied().cycle().take(600).collect();
    let again = oracles.judge(&many);
    for (i, v) in again.iter().enumerate() {
        assert_eq!(v.who(), verdicts[i % cases.len()].who(), "request {i}");
    }
}
