//! A strict `application/x-www-form-urlencoded` parser: invalid percent-encoding or a value
//! that is not UTF-8 is an error, never silently repaired, so the gate and the IdP cannot
//! read one body two ways.

/// Why a form body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadPercent,
    /// A decoded name or value that is not UTF-8.
    #[error("form field is not UTF-8")]
    NotUtf8,
}

/// Decode one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub fn decode_component(raw: &[u8]) -> Result<String, FormError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).and_then(|b| hex_value(*b));
                let lo = raw.get(i + 2).and_then(|b| hex_value(*b));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(FormError::BadPercent),
                }
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parse a whole form body into (name, value) pairs in order. Empty pieces (`a=1&&b=2`)
/// are skipped; a piece without `=` is a name with an empty value.
pub fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    body.split(|b| *b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|b| *b == b'=') {
                Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                None => (piece, &b""[..]),
            };
            Ok((decode_component(name)?, decode_component(value)?))
        })
        .collect()
}

/// Parse leniently (invalid pieces skipped): for looking at a query string.
pub fn parse_lenient(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter_map(|piece| parse(piece).ok())
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plus_and_percent() {
        let fields = parse(b"grant_type=refresh_token&refresh_token=a%2Bb+c%3D").unwrap();
        assert_eq!(
            fields,
            vec![
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), "a+b c=".into())
            ]
        );
    }

    #[test]
    fn encoded_names_are_decoded() {
        let fields = parse(b"grant%5Ftype=refresh_token").unwrap();
        assert_eq!(fields[0].0, "grant_type");
    }

    #[test]
    fn bad_percent_and_non_utf8_are_errors() {
        assert_eq!(parse(b"a=%zz"), Err(FormError::BadPercent));
        assert_eq!(parse(b"a=%4"), Err(FormError::BadPercent));
        assert_eq!(parse(b"a=%ff"), Err(FormError::NotUtf8));
        assert_eq!(parse(b"a=\xff"), Err(FormError::NotUtf8));
    }

    #[test]
    fn empty_pieces_and_bare_names() {
        let fields = parse(b"&a&&b=").unwrap();
        assert_eq!(
            fields,
            vec![("a".into(), "".into()), ("b".into(), "".into())]
        );
    }

    #[test]
    fn lenient_skips_only_bad_pieces() {
        let fields = parse_lenient(b"x=%zz&refresh_token=t");
        assert_eq!(fields, vec![("refresh_token".into(), "t".into())]);
    }
}
