//! Masks secrets in log lines: the second line of defence behind the log filter of
//! `process::telemetry` (which already drops every third-party record above INFO). Every line
//! the gate writes, plain or JSON, passes through [`redact`] on the log writer thread.
//!
//! What is masked (names compared case-insensitively, percent-encoded names such as
//! `refresh%5Ftoken` included), leaving the name and the punctuation around the value:
//!
//! * the value of a credential header ([`SECRET_HEADERS`]) after `:` or `=`, quoted or not:
//!   `Authorization: Bearer x` (to the end of the header line), `"cookie": "x"` (a Rust map
//!   debug print), `\r\nSet-Cookie: x\r\n` (a raw header block), `\"dpop\": \"x\"` (the
//!   same inside a JSON log line);
//! * the value of a secret parameter ([`SECRET_PARAMETERS`]) after `=` (query strings,
//!   form bodies, `key=value` log fields: up to `&`, whitespace, a quote, a backslash, or a
//!   `,`/`;` ending a phrase) or after `:` when the value is quoted (JSON `"access_token":"x"`,
//!   JSON escaped inside JSON, Rust debug prints `refresh_token: Some("x")`);
//! * `token=` (RFC 7009 revocation, RFC 7662 introspection) only where a form or query
//!   starts or continues (after `&`, `?`, a quote or at the start of a line), so the audit
//!   field `token=<fingerprint>` stays intact;
//! * the credential after a `Bearer`, `Basic` or `DPoP` scheme word, unless it is a short
//!   lower-case word (prose such as "HTTP Basic or form credentials").
//!
//! A name counts only as a whole word (`error_code=` and `codes=` are left alone). Masking
//! errs on the side of hiding too much: a header value runs to the end of its line. The scan
//! is one pass over the bytes, without allocation when nothing is masked; ANSI colour codes
//! (a terminal) are skipped like punctuation.

use std::borrow::Cow;
use std::io;

/// What a masked value is replaced with.
pub const MASK: &str = "[redacted]";

/// Request and response headers whose values are credentials.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "dpop",
];

/// Form, query and JSON parameters whose values are secrets (RFC 6749, 7521-7523, 7636,
/// 8628, 8693, CIBA, UMA, OID4VCI, and the tokens of a token response).
pub const SECRET_PARAMETERS: &[&str] = &[
    "refresh_token",
    "access_token",
    "id_token",
    "id_token_hint",
    "client_secret",
    "client_assertion",
    "code",
    "code_verifier",
    "password",
    "assertion",
    "subject_token",
    "actor_token",
    "device_code",
    "pre-authorized_code",
    "tx_code",
    "auth_req_id",
    "claim_token",
    "rpt",
];

/// Parameters masked only in form or query position: `token` is also the name of the audit
/// field holding a token's fingerprint.
pub const FORM_ONLY_PARAMETERS: &[&str] = &["token"];

/// HTTP authentication schemes whose credential follows the scheme word.
pub const CREDENTIAL_SCHEMES: &[&str] = &["bearer", "basic", "dpop"];

/// The longest name above, with room to spare; longer words are not names.
const MAX_NAME: usize = 24;

/// A credential after a scheme word shorter than this and made of lower-case letters only
/// is prose ("Basic or form credentials"), not a credential.
const MIN_LOWERCASE_CREDENTIAL: usize = 16;

const ESC: u8 = 0x1b;

/// `line` with every secret value replaced by [`MASK`]; borrowed when nothing was masked.
/// `line` should hold whole lines: a value cut in two by the caller is not recognised.
pub fn redact(line: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    // The character before `i`, percent-decoded; a line starts after a newline.
    let mut prev = b'\n';
    while i < line.len() {
        if line[i] == ESC {
            i = skip_escape(line, i);
            prev = ESC;
            continue;
        }
        let (c, width) = logical(line, i);
        if !is_name_char(c) || is_name_char(prev) {
            prev = c;
            i += width;
            continue;
        }
        if !FIRST_LETTERS[c as usize] {
            prev = b'a';
            i = skip_word(line, i);
            continue;
        }
        let (word, end) = read_word(line, i);
        if let Some(word) = word {
            if let Some((start, stop)) = secret_value(line, end, word.as_slice(), prev) {
                let buffer = out.get_or_insert_with(|| Vec::with_capacity(line.len() + 16));
                buffer.extend_from_slice(&line[copied..start]);
                buffer.extend_from_slice(MASK.as_bytes());
                copied = stop;
                i = stop;
                prev = b' ';
                continue;
            }
        }
        // Not a secret's name: skip the whole word (its inner letters are no word starts).
        prev = b'a';
        i = end;
    }
    match out {
        None => Cow::Borrowed(line),
        Some(mut buffer) => {
            buffer.extend_from_slice(&line[copied..]);
            Cow::Owned(buffer)
        }
    }
}

/// [`redact`] for text.
pub fn redact_str(line: &str) -> Cow<'_, str> {
    match redact(line.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(line),
        // Only ASCII runs are replaced by ASCII, at ASCII boundaries: still UTF-8.
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// An [`io::Write`] that masks secrets in everything written through it. Each `write` must
/// carry whole lines, as the log writer thread does (one formatted event per write).
#[derive(Debug)]
pub struct RedactingWriter<W> {
    inner: W,
}

impl<W> RedactingWriter<W> {
    /// Mask what is written to `inner`.
    pub fn new(inner: W) -> Self {
        RedactingWriter { inner }
    }
}

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&redact(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A word lower-cased and percent-decoded, if short enough to be a name.
struct Word {
    bytes: [u8; MAX_NAME],
    len: usize,
}

impl Word {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Characters of a name: letters, digits, `_` and `-`.
const NAME_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    table
};

/// The first letters of every name above, in either case: other words are skipped at once.
const FIRST_LETTERS: [bool; 256] = {
    let mut table = [false; 256];
    let lists: [&[&str]; 4] = [
        SECRET_HEADERS,
        SECRET_PARAMETERS,
        FORM_ONLY_PARAMETERS,
        CREDENTIAL_SCHEMES,
    ];
    let mut l = 0;
    while l < lists.len() {
        let mut n = 0;
        while n < lists[l].len() {
            let first = lists[l][n].as_bytes()[0];
            table[first.to_ascii_lowercase() as usize] = true;
            table[first.to_ascii_uppercase() as usize] = true;
            n += 1;
        }
        l += 1;
    }
    table
};

fn is_name_char(c: u8) -> bool {
    NAME_CHARS[c as usize]
}

/// Past the word starting at `i`.
fn skip_word(line: &[u8], mut i: usize) -> usize {
    while i < line.len() {
        let b = line[i];
        if b == b'%' || b == b'\\' {
            let (c, width) = logical(line, i);
            if !is_name_char(c) {
                break;
            }
            i += width;
        } else if is_name_char(b) {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The character at `i` and its width: `%XX` decoded, the escapes `\n`, `\r` and `\t` of a
/// debug print or a JSON string read as the whitespace they stand for, else the byte.
fn logical(line: &[u8], i: usize) -> (u8, usize) {
    match line[i] {
        b'%' => match (
            line.get(i + 1).and_then(|&c| hex_value(c)),
            line.get(i + 2).and_then(|&c| hex_value(c)),
        ) {
            (Some(high), Some(low)) => (high << 4 | low, 3),
            _ => (b'%', 1),
        },
        b'\\' => match line.get(i + 1) {
            Some(b'n' | b'r') => (b'\n', 2),
            Some(b't') => (b'\t', 2),
            _ => (b'\\', 1),
        },
        c => (c, 1),
    }
}

/// The word starting at `i` (name characters, percent-decoded) and where it ends.
fn read_word(line: &[u8], mut i: usize) -> (Option<Word>, usize) {
    let mut word = Word {
        bytes: [0; MAX_NAME],
        len: 0,
    };
    let mut fits = true;
    while i < line.len() {
        let (c, width) = logical(line, i);
        if !is_name_char(c) {
            break;
        }
        if word.len == MAX_NAME {
            fits = false;
        } else {
            word.bytes[word.len] = c.to_ascii_lowercase();
            word.len += 1;
        }
        i += width;
    }
    (fits.then_some(word), i)
}

fn listed(list: &[&str], word: &[u8]) -> bool {
    list.iter().any(|name| name.as_bytes() == word)
}

/// The span of the secret value that follows the word `word` ending at `end`, if any. `prev`
/// is the character before the word.
fn secret_value(line: &[u8], end: usize, word: &[u8], prev: u8) -> Option<(usize, usize)> {
    let header = listed(SECRET_HEADERS, word);
    let parameter = listed(SECRET_PARAMETERS, word);
    let form_only = listed(FORM_ONLY_PARAMETERS, word);
    let scheme = listed(CREDENTIAL_SCHEMES, word);
    if !(header || parameter || form_only || scheme) {
        return None;
    }
    if header || parameter || form_only {
        if let Some(value) = value_after(line, end, prev == b'"', header) {
            let accepted = if header {
                value.separator != Separator::Comma || value.quote_depth.is_some()
            } else if parameter {
                value.separator == Separator::Equals || value.quote_depth.is_some()
            } else {
                value.separator == Separator::Equals
                    && matches!(prev, b'\n' | b'&' | b'?' | b'"' | b'\'')
            };
            if accepted {
                let stop = match value.quote_depth {
                    Some(depth) => quoted_end(line, value.start, depth),
                    None if header => header_end(line, value.start),
                    None => parameter_end(line, value.start),
                };
                return (stop > value.start).then_some((value.start, stop));
            }
        }
    }
    if scheme {
        return credential_after_scheme(line, end);
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Separator {
    Equals,
    Colon,
    /// Between a quoted name and a quoted value: `("code", "x")`, `["cookie","x"]`.
    Comma,
}

struct Value {
    separator: Separator,
    start: usize,
    /// How many backslashes escape the value's opening quote, when it is quoted.
    quote_depth: Option<usize>,
}

/// Spaces, tabs and ANSI escape sequences from `i`.
fn skip_blank(line: &[u8], mut i: usize) -> usize {
    while i < line.len() {
        match line[i] {
            b' ' | b'\t' => i += 1,
            ESC => i = skip_escape(line, i),
            _ => break,
        }
    }
    i
}

/// ANSI escape sequences from `i`.
fn skip_escapes(line: &[u8], mut i: usize) -> usize {
    while line.get(i) == Some(&ESC) {
        i = skip_escape(line, i);
    }
    i
}

/// Past the ANSI escape sequence (`ESC [ ... final`) at `i`.
fn skip_escape(line: &[u8], i: usize) -> usize {
    if line.get(i + 1) != Some(&b'[') {
        return i + 1;
    }
    let mut j = i + 2;
    while j < line.len() && (0x20..0x40).contains(&line[j]) {
        j += 1;
    }
    if j < line.len() && (0x40..0x7f).contains(&line[j]) {
        j += 1;
    }
    j
}

fn skip_backslashes(line: &[u8], mut i: usize) -> usize {
    while line.get(i) == Some(&b'\\') {
        i += 1;
    }
    i
}

/// The separator and value after a name ending at `end`: `=` or `:`, with a closing quote
/// before it when the name was quoted, blanks around it, and an opening quote (possibly
/// escaped, possibly inside `Some(`) before the value.
fn value_after(line: &[u8], end: usize, name_quoted: bool, header: bool) -> Option<Value> {
    let mut k = end;
    let mut name_closed = false;
    if name_quoted {
        let quote = skip_backslashes(line, k);
        if line.get(quote) == Some(&b'"') {
            k = quote + 1;
            name_closed = true;
        }
    }
    k = skip_blank(line, k);
    let separator = match line.get(k) {
        Some(b'=') => {
            k += 1;
            Separator::Equals
        }
        Some(b'%')
            if line.get(k + 1) == Some(&b'3') && matches!(line.get(k + 2), Some(b'd' | b'D')) =>
        {
            k += 3;
            Separator::Equals
        }
        Some(b':') => {
            k += 1;
            Separator::Colon
        }
        Some(b',') if name_closed => {
            k += 1;
            Separator::Comma
        }
        _ => return None,
    };
    let mut after_blank = skip_blank(line, k);
    if separator == Separator::Colon && line[after_blank..].starts_with(b"Some(") {
        after_blank += "Some(".len();
    }
    // A byte string's debug print: `b"..."`.
    if line.get(after_blank) == Some(&b'b')
        && line.get(skip_backslashes(line, after_blank + 1)) == Some(&b'"')
    {
        after_blank += 1;
    }
    let quote = skip_backslashes(line, after_blank);
    if line.get(quote) == Some(&b'"') {
        return Some(Value {
            separator,
            start: quote + 1,
            quote_depth: Some(quote - after_blank),
        });
    }
    if separator == Separator::Comma {
        return None;
    }
    // `code= next=1` is an empty value, not `next=1` (colour codes aside); a header value
    // follows its blanks.
    Some(Value {
        separator,
        start: if header {
            after_blank
        } else {
            skip_escapes(line, k)
        },
        quote_depth: None,
    })
}

/// The end of a quoted value: the first quote escaped no more than its opening quote was
/// (a quote escaped more belongs to the value), or the end of the line.
fn quoted_end(line: &[u8], start: usize, depth: usize) -> usize {
    let mut p = start;
    while p < line.len() {
        match line[p] {
            b'"' => {
                let mut escapes = 0;
                while p - escapes > start && line[p - escapes - 1] == b'\\' {
                    escapes += 1;
                }
                if escapes <= depth {
                    return p - escapes;
                }
            }
            b'\n' | b'\r' => return p,
            _ => {}
        }
        p += 1;
    }
    line.len()
}

/// The end of an unquoted header value: the end of its line (a real or an escaped line
/// break), a quote, or a control character.
fn header_end(line: &[u8], start: usize) -> usize {
    line[start..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c == 0x7f || (c < 0x20 && c != b'\t'))
        .map_or(line.len(), |p| start + p)
}

/// The end of an unquoted parameter value: `&`, whitespace, a quote, a backslash, a control
/// character, or a `,` or `;` that ends a phrase (`GET /cb?code=x, Host: ...`).
fn parameter_end(line: &[u8], start: usize) -> usize {
    let mut p = start;
    while p < line.len() {
        match line[p] {
            b'&' | b'"' | b'\\' | b' ' | 0x7f => return p,
            c if c < 0x20 => return p,
            b',' | b';' => {
                if matches!(
                    line.get(p + 1),
                    None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\\')
                ) {
                    return p;
                }
            }
            _ => {}
        }
        p += 1;
    }
    line.len()
}

fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// The credential after a scheme word ending at `end`: blanks, then a token68.
fn credential_after_scheme(line: &[u8], end: usize) -> Option<(usize, usize)> {
    let start = skip_blank(line, end);
    if start == end {
        return None;
    }
    let mut stop = start;
    while stop < line.len() && is_token68(line[stop]) {
        stop += 1;
    }
    let token = &line[start..stop];
    if token.is_empty()
        || (token.len() < MIN_LOWERCASE_CREDENTIAL && token.iter().all(u8::is_ascii_lowercase))
    {
        return None;
    }
    while stop < line.len() && line[stop] == b'=' {
        stop += 1;
    }
    // `Bearer expires_in=60`: a `key=value` field, not a token68 (whose `=` only pads).
    if stop < line.len() && is_token68(line[stop]) {
        return None;
    }
    Some((start, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(line: &str) -> String {
        redact_str(line).into_owned()
    }

    fn unchanged(line: &str) {
        assert!(
            matches!(redact(line.as_bytes()), Cow::Borrowed(_)),
            "changed: {line}\n   into: {}",
            r(line)
        );
    }

    #[test]
    fn pingoras_request_summary_loses_the_code_but_keeps_the_rest() {
        assert_eq!(
            r("Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1, retry: false, GET /cb?state=s1&code=SPLX,a;b~c, Host: login.example.com"),
            "Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1, retry: false, GET /cb?state=s1&code=[redacted], Host: login.example.com"
        );
        assert_eq!(r("GET /x?code=abc"), "GET /x?code=[redacted]");
        assert_eq!(
            r("GET /x?Code=abc&access_token=def&x=1 HTTP/1.1"),
            "GET /x?Code=[redacted]&access_token=[redacted]&x=1 HTTP/1.1"
        );
    }

    #[test]
    fn every_secret_form_parameter_is_masked() {
        assert_eq!(
            r("grant_type=authorization_code&code=A1&code_verifier=B2&client_secret=C3&redirect_uri=https%3A%2F%2Fapp%2Fcb"),
            "grant_type=authorization_code&code=[redacted]&code_verifier=[redacted]&client_secret=[redacted]&redirect_uri=https%3A%2F%2Fapp%2Fcb"
        );
        for name in SECRET_PARAMETERS {
            assert_eq!(
                r(&format!("a=1&{name}=s3cr3t&b=2")),
                format!("a=1&{name}=[redacted]&b=2")
            );
            let upper = name.to_ascii_uppercase();
            assert_eq!(r(&format!("{upper}=s3cr3t")), format!("{upper}=[redacted]"));
        }
        assert_eq!(
            r("grant_type=password&username=alice&password=p%26ss+w%20rd"),
            "grant_type=password&username=alice&password=[redacted]"
        );
    }

    #[test]
    fn percent_encoded_names_and_separators_are_recognised() {
        assert_eq!(r("refresh%5Ftoken=abc"), "refresh%5Ftoken=[redacted]");
        assert_eq!(r("refresh%5ftoken=abc"), "refresh%5ftoken=[redacted]");
        assert_eq!(r("%72efresh_token=abc"), "%72efresh_token=[redacted]");
        assert_eq!(
            r("client%5Fsecret%3Dabc&x=1"),
            "client%5Fsecret%3D[redacted]&x=1"
        );
        // A callback URL inside a parameter: the nested code is masked (and what follows it
        // in the same parameter, erring on the safe side).
        assert_eq!(
            r("redirect_uri=https%3A%2F%2Fapp%2Fcb%3Fcode%3DSECRET%26state%3Dx&y=1"),
            "redirect_uri=https%3A%2F%2Fapp%2Fcb%3Fcode%3D[redacted]&y=1"
        );
        // An encoded `&` before the name is a boundary.
        assert_eq!(r("a=1%26code=abc"), "a=1%26code=[redacted]");
    }

    #[test]
    fn names_count_only_as_whole_words() {
        unchanged("error_code=5 codes=1 xcode=2 code_challenge=3 id_tokens=4 secret_code=5");
        unchanged("token_type=Bearer expires_in=60 grant_type=refresh_token");
        unchanged("refresh_token is repeated; grant_type must be exactly refresh_token");
        unchanged("a refresh grant authenticates its client with HTTP Basic or form credentials");
        unchanged("HTTP Basic and form credentials name different clients");
        unchanged("Content-Type and Authorization must not be repeated");
        unchanged("code: 502");
        assert_eq!(r("code=&x=1"), "code=&x=1");
        assert_eq!(r("code= next=1"), "code= next=1");
    }

    #[test]
    fn credential_headers_are_masked_in_every_shape() {
        assert_eq!(
            r("Authorization: Bearer abc.def-ghi"),
            "Authorization: [redacted]"
        );
        assert_eq!(r("COOKIE: a=1; b=2\n"), "COOKIE: [redacted]\n");
        assert_eq!(
            r(
                r#"headers: {"host": "h", "authorization": "Basic azpz", "cookie": "a=1; b=2", "dpop": "eyJ.x.y", "set-cookie": "sid=1; HttpOnly"}"#
            ),
            r#"headers: {"host": "h", "authorization": "[redacted]", "cookie": "[redacted]", "dpop": "[redacted]", "set-cookie": "[redacted]"}"#
        );
        assert_eq!(
            r(
                r#"Raw Response header: "HTTP/1.1 200 OK\r\nSet-Cookie: sid=S\r\nContent-Length: 2\r\n\r\n""#
            ),
            r#"Raw Response header: "HTTP/1.1 200 OK\r\nSet-Cookie: [redacted]\r\nContent-Length: 2\r\n\r\n""#
        );
        assert_eq!(
            r("GET / HTTP/1.1\r\nProxy-Authorization: Basic eA==\r\nDPoP: eyJ\r\nHost: h\r\n"),
            "GET / HTTP/1.1\r\nProxy-Authorization: [redacted]\r\nDPoP: [redacted]\r\nHost: h\r\n"
        );
        assert_eq!(
            r("authorization=Bearer abc rest"),
            "authorization=[redacted]"
        );
        // Pingora's case map keeps the name and loses nothing secret.
        assert_eq!(
            r(r#"header_name_map: Some({"authorization": CaseHeaderName(b"Authorization")})"#),
            r#"header_name_map: Some({"authorization": [redacted]"Authorization")})"#
        );
    }

    #[test]
    fn json_fields_are_masked_at_any_escape_depth() {
        assert_eq!(
            r(
                r#"{"access_token":"A.B.C","refresh_token": "R1","id_token":"I","token_type":"Bearer","expires_in":60}"#
            ),
            r#"{"access_token":"[redacted]","refresh_token": "[redacted]","id_token":"[redacted]","token_type":"Bearer","expires_in":60}"#
        );
        // A body inside a JSON log line.
        assert_eq!(
            r(r#"{"message":"body {\"access_token\":\"A\",\"x\":\"\\\"q\"}","target":"t"}"#),
            r#"{"message":"body {\"access_token\":\"[redacted]\",\"x\":\"\\\"q\"}","target":"t"}"#
        );
        // A debug print of bytes inside a JSON log line.
        assert_eq!(
            r(r#"{"message":"Response body: Some(b\"{\\\"refresh_token\\\":\\\"R\\\"}\")"}"#),
            r#"{"message":"Response body: Some(b\"{\\\"refresh_token\\\":\\\"[redacted]\\\"}\")"}"#
        );
        // An escaped quote inside the value stays masked.
        assert_eq!(
            r(r#"{"client_secret":"a\"b","n":1}"#),
            r#"{"client_secret":"[redacted]","n":1}"#
        );
        assert_eq!(
            r(r#"{"message":"GET /cb?code=S, Host: h","level":"ERROR"}"#),
            r#"{"message":"GET /cb?code=[redacted], Host: h","level":"ERROR"}"#
        );
        assert_eq!(
            r(r#"{"message":"authorization: Bearer S","level":"DEBUG"}"#),
            r#"{"message":"authorization: [redacted]","level":"DEBUG"}"#
        );
    }

    #[test]
    fn name_value_pairs_are_masked() {
        assert_eq!(
            r(r#"[("grant_type", "refresh_token"), ("refresh_token", "R"), ("client_id", "k")]"#),
            r#"[("grant_type", "refresh_token"), ("refresh_token", "[redacted]"), ("client_id", "k")]"#
        );
        assert_eq!(
            r(
                r#"{"headers":[["authorization","Bearer A"],["cookie","session=C"],["dpop","D"],["host","h"]]}"#
            ),
            r#"{"headers":[["authorization","[redacted]"],["cookie","[redacted]"],["dpop","[redacted]"],["host","h"]]}"#
        );
        assert_eq!(
            r(r#"b\"{\\\"headers\\\":[[\\\"cookie\\\",\\\"session=C\\\"]]}\""#),
            r#"b\"{\\\"headers\\\":[[\\\"cookie\\\",\\\"[redacted]\\\"]]}\""#
        );
        unchanged(r#"names: ["code", 1], "cookie", 2"#);
    }

    #[test]
    fn rust_debug_prints_are_masked() {
        assert_eq!(
            r(r#"Grant { refresh_token: "R", client_secret: Some("S"), code: None }"#),
            r#"Grant { refresh_token: "[redacted]", client_secret: Some("[redacted]"), code: None }"#
        );
        assert_eq!(
            r(r#"{"authorization": b"Bearer \xff", "cookie": Some(b"c=1"), "x": 1}"#),
            r#"{"authorization": b"[redacted]", "cookie": Some(b"[redacted]"), "x": 1}"#
        );
        assert_eq!(
            r(r#"{ "refresh_token" : "R", "refresh_token":"R2" }"#),
            r#"{ "refresh_token" : "[redacted]", "refresh_token":"[redacted]" }"#
        );
        assert_eq!(
            r(r#"body: b"grant_type=refresh_token&refresh_token=R&client_id=k""#),
            r#"body: b"grant_type=refresh_token&refresh_token=[redacted]&client_id=k""#
        );
    }

    #[test]
    fn token_is_masked_only_in_form_position() {
        assert_eq!(
            r(r#"body: b"token=R1&token_type_hint=refresh_token""#),
            r#"body: b"token=[redacted]&token_type_hint=refresh_token""#
        );
        assert_eq!(r("token=R1&x=1"), "token=[redacted]&x=1");
        assert_eq!(r("POST /revoke?token=R1"), "POST /revoke?token=[redacted]");
        unchanged("audit: msg token=abcdef012345 family=0123456789ab");
        unchanged(r#"{"token":"abcdef012345","family":"0123456789ab"}"#);
    }

    #[test]
    fn credentials_after_a_scheme_word_are_masked() {
        assert_eq!(
            r("got Bearer abc123XYZ-._~+/= ok"),
            "got Bearer [redacted] ok"
        );
        assert_eq!(r("basic azpzZWNyZXQ="), "basic [redacted]");
        assert_eq!(r("DPoP eyJhbGciOi.x.y"), "DPoP [redacted]");
        assert_eq!(r("Bearer abcdefghijklmnopqrstuvwxyz"), "Bearer [redacted]");
        unchanged("missing Bearer token; DPoP proof rejected; Basic auth");
        unchanged("token_type=Bearer expires_in=60");
    }

    #[test]
    fn ansi_colours_do_not_hide_a_field() {
        assert_eq!(
            r("\x1b[3mrefresh_token\x1b[0m\x1b[2m=\x1b[0mR1 \x1b[3mnext\x1b[0m\x1b[2m=\x1b[0m1"),
            "\x1b[3mrefresh_token\x1b[0m\x1b[2m=\x1b[0m[redacted] \x1b[3mnext\x1b[0m\x1b[2m=\x1b[0m1"
        );
        unchanged("\x1b[3mtoken\x1b[0m\x1b[2m=\x1b[0mabcdef012345");
    }

    #[test]
    fn audit_lines_come_out_intact() {
        unchanged(
            "2025-01-01T00:00:00.000000Z  INFO audit: [ExpiredRefreshTokenUsed] - https://login.example.com/auth/idp/k8sIdp/token - alice - Expired token used within grace period [10.1.2.3] - [abcdef012345] schema_version=1 ts=2025-01-01T00:00:00.000Z event=\"ExpiredRefreshTokenUsed\" request_id=\"req-1\" token_url=\"https://login.example.com/auth/idp/k8sIdp/token\" token=abcdef012345 family=0123456789ab client_id=\"kubernetes\" client_ip=10.1.2.3 subject=\"alice\" since_first_use_ms=12 replay_count=1 first_client_id=\"kubernetes\" first_client_ip=10.1.2.3 coalesced=false\n",
        );
        unchanged(
            r#"{"timestamp":"2025-01-01T00:00:00.000000Z","level":"WARN","message":"[RefreshTokenReplayRefused] - http://login.example.com/token - alice - Refresh token replay refused (client_mismatch) [127.0.0.1] - [abcdef012345]","schema_version":1,"ts":"2025-01-01T00:00:00.000Z","event":"RefreshTokenReplayRefused","reason":"client_mismatch","request_id":"req-intruder","token_url":"http://login.example.com/token","token":"abcdef012345","family":"0123456789ab","client_id":"intruder","client_ip":"127.0.0.1","subject":"alice","since_first_use_ms":3,"replay_count":0,"first_client_id":"kubernetes","first_client_ip":"127.0.0.1","coalesced":false,"target":"audit"}"#,
        );
        unchanged(
            "[RefreshForwardedUnguarded] - http://h/token - 10.0.0.1 - token store unavailable: refresh token [abcdef012345] forwarded without one-time-use checks",
        );
        unchanged("[RefreshTokenRevokedAtIdp] - family [0123456789ab] revoked at the IdP with token [abcdef012345]: status 200");
    }

    #[test]
    fn ordinary_lines_are_not_copied() {
        unchanged(
            "refresh-gate starting listen=127.0.0.1:8080 upstream=http://idp:8080/ grace_period=5s",
        );
        unchanged("Fail to proxy: Upstream ConnectRefused, GET /api/v1/pods?watch=1, Host: k8s");
        unchanged("");
        unchanged("100% done: %zz %4");
        unchanged("é code é");
    }

    #[test]
    fn non_ascii_around_a_secret_stays_valid_utf8() {
        assert_eq!(r("é code=s3cr3t é"), "é code=[redacted] é");
        assert_eq!(r("passé&code=ü€&x"), "passé&code=[redacted]&x");
    }

    #[test]
    fn the_writer_masks_each_write() {
        use std::io::Write;
        let mut writer = RedactingWriter::new(Vec::new());
        writer.write_all(b"GET /cb?code=abc, Host: h\n").unwrap();
        writer.write_all(b"plain line\n").unwrap();
        writer.flush().unwrap();
        assert_eq!(
            String::from_utf8(writer.inner).unwrap(),
            "GET /cb?code=[redacted], Host: h\nplain line\n"
        );
    }
}
