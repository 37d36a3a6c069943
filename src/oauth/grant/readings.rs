//! Other stacks' readings of a form body or query, and the part of a reading that decides
//! a grant. The gate reads a body strictly (`crate::oauth::form`); a body is accepted only when
//! every other reading modelled here sees the same grant: splitting on `;` (older Python,
//! Perl, some Java frameworks), decoding twice, ISO-8859-1 (a servlet container's default),
//! lenient escapes (Node's `querystring`, Python: `%zz` stays literal) and Jetty's `%uXXXX`.

use super::names::{GRANT_PARAMETERS, GRANT_TYPE, REFRESH_TOKEN};
use super::skeleton::skeleton;

/// One stack's way of reading `name=value` pairs.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Bytes that separate pairs besides `&`.
    semicolon: bool,
    /// Decode percent-escapes a second time.
    twice: bool,
    /// Bytes are ISO-8859-1 characters (else UTF-8, lossy).
    latin1: bool,
}

/// The readings a body is checked against, beside the strict one.
pub const BODY_READINGS: &[Reading] = &[
    Reading {
        semicolon: true,
        twice: false,
        latin1: false,
    },
    Reading {
        semicolon: false,
        twice: true,
        latin1: false,
    },
    Reading {
        semicolon: false,
        twice: false,
        latin1: true,
    },
];

/// The readings a query is checked with (the union of their names counts).
pub const QUERY_READINGS: &[Reading] = &[
    Reading {
        semicolon: true,
        twice: false,
        latin1: false,
    },
    Reading {
        semicolon: true,
        twice: true,
        latin1: false,
    },
    Reading {
        semicolon: true,
        twice: false,
        latin1: true,
    },
];

impl Reading {
    /// Read `input` as pairs, as this stack would; never fails.
    pub fn pairs(&self, input: &[u8]) -> Vec<(String, String)> {
        input
            .split(|b| *b == b'&' || (self.semicolon && *b == b';'))
            .filter(|piece| !piece.is_empty())
            .map(|piece| {
                let (name, value) = match piece.iter().position(|b| *b == b'=') {
                    Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                    None => (piece, &b""[..]),
                };
                (self.decode(name), self.decode(value))
            })
            .collect()
    }

    fn decode(&self, raw: &[u8]) -> String {
        let once = lenient_decode(raw, true);
        let bytes = if self.twice {
            lenient_decode(&once, false)
        } else {
            once
        };
        if self.latin1 {
            bytes.iter().map(|b| char::from(*b)).collect()
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// Percent-decode leniently: `%XX` and `%uXXXX` decoded, any other `%` kept literally;
/// `+` is a space when `plus` is set.
pub fn lenient_decode(raw: &[u8], plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'+' && plus {
            out.push(b' ');
        } else if b == b'%' {
            if let Some(byte) = hex_byte(raw.get(i + 1..i + 3)) {
                out.push(byte);
                i += 3;
                continue;
            }
            if matches!(raw.get(i + 1), Some(b'u' | b'U')) {
                if let Some(c) = hex_unit(raw.get(i + 2..i + 6)) {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 6;
                    continue;
                }
            }
            out.push(b);
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

fn hex_byte(digits: Option<&[u8]>) -> Option<u8> {
    let digits = std::str::from_utf8(digits?).ok()?;
    u8::from_str_radix(digits, 16)
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hex_unit(digits: Option<&[u8]>) -> Option<char> {
    let digits = std::str::from_utf8(digits?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // A lone surrogate decodes to U+FFFD in Jetty; the name it is part of is then no
    // grant parameter either way.
    char::from_u32(u32::from_str_radix(digits, 16).ok()?).or(Some('\u{fffd}'))
}

/// The grant-deciding part of a reading: each grant parameter's folded name, with the
/// value for the parameters that decide which grant and which token (sorted, so readings
/// compare as multisets).
pub fn grant_view(pairs: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let mut view: Vec<_> = pairs
        .iter()
        .filter_map(|(name, value)| {
            let folded = skeleton(name);
            let decides = [GRANT_TYPE, REFRESH_TOKEN, "client_id"].contains(&folded.as_str());
            GRANT_PARAMETERS
                .contains(&folded.as_str())
                .then(|| (folded, decides.then(|| value.clone())))
        })
        .collect();
    view.sort();
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoding_keeps_bad_escapes_and_reads_jetty_escapes() {
        assert_eq!(lenient_decode(b"%72efresh%zz%4", true), b"refresh%zz%4");
        assert_eq!(lenient_decode(b"%u0072efresh+x", true), b"refresh x");
        assert_eq!(lenient_decode(b"a+b", false), b"a+b");
    }

    #[test]
    fn semicolons_split_pairs_in_that_reading() {
        let pairs = BODY_READINGS[0].pairs(b"scope=a;grant_type=refresh_token");
        assert_eq!(pairs[1], ("grant_type".into(), "refresh_token".into()));
    }

    #[test]
    fn double_decoding_reveals_names() {
        let pairs = BODY_READINGS[1].pairs(b"grant%255Ftype=x");
        assert_eq!(pairs[0].0, "grant_type");
    }

    #[test]
    fn views_keep_only_grant_parameters() {
        let pairs = vec![
            ("Grant_Type".to_owned(), "refresh_token".to_owned()),
            ("client_secret".to_owned(), "s".to_owned()),
            ("x".to_owned(), "y".to_owned()),
        ];
        assert_eq!(
            grant_view(&pairs),
            vec![
                ("client_secret".to_owned(), None),
                ("grant_type".to_owned(), Some("refresh_token".to_owned()))
            ]
        );
    }
}
