//! The `Content-Type` of a token request, read strictly: the gate accepts a form body only
//! when every IdP stack decodes it the way the gate does (UTF-8 or US-ASCII).

/// What a `Content-Type` header says about a token request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/x-www-form-urlencoded`, UTF-8 (no charset, or `utf-8`).
    FormUtf8,
    /// `application/x-www-form-urlencoded; charset=us-ascii`: every decoded byte must be
    /// ASCII.
    FormAscii,
    /// A form in another charset (UTF-16, ISO-8859-1, ...): servlet containers decode it
    /// with that charset, so the gate cannot read it the same way.
    FormOtherCharset,
    /// A header that does not parse (bad parameters, a repeated `charset`, non-ASCII).
    Malformed,
    /// Another media type.
    Other,
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Read one `Content-Type` value (RFC 9110 §8.3: `type/subtype *( OWS ";" OWS parameter )`).
pub fn parse(value: &[u8]) -> MediaType {
    let Ok(value) = std::str::from_utf8(value) else {
        return MediaType::Malformed;
    };
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return MediaType::Malformed;
    }
    let mut parts = split_parameters(value);
    let essence = parts.next().unwrap_or("").trim_matches([' ', '\t']);
    if !essence.eq_ignore_ascii_case(FORM) {
        return MediaType::Other;
    }
    let mut charset = None;
    for parameter in parts {
        let parameter = parameter.trim_matches([' ', '\t']);
        if parameter.is_empty() {
            continue;
        }
        let Some((name, raw)) = parameter.split_once('=') else {
            return MediaType::Malformed;
        };
        let Some(value) = parameter_value(raw) else {
            return MediaType::Malformed;
        };
        if !is_token(name) {
            return MediaType::Malformed;
        }
        if name.eq_ignore_ascii_case("charset") {
            if charset.is_some() {
                return MediaType::Malformed;
            }
            charset = Some(value);
        }
    }
    match charset {
        None => MediaType::FormUtf8,
        Some(c) if c.eq_ignore_ascii_case("utf-8") => MediaType::FormUtf8,
        Some(c) if c.eq_ignore_ascii_case("us-ascii") => MediaType::FormAscii,
        Some(_) => MediaType::FormOtherCharset,
    }
}

/// Split at `;` outside quoted strings.
fn split_parameters(value: &str) -> impl Iterator<Item = &str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                pieces.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&value[start..]);
    pieces.into_iter()
}

/// A parameter value: a token, or a quoted string (unquoted here).
fn parameter_value(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    } else {
        is_token(raw).then(|| raw.to_owned())
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::{parse, MediaType};

    #[test]
    fn utf8_and_ascii_forms_in_every_spelling() {
        for value in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded",
            "application/x-www-form-urlencoded;charset=UTF-8",
            "application/x-www-form-urlencoded; charset=\"utf-8\"",
            "application/x-www-form-urlencoded ;\tcharset=utf-8; x=y",
        ] {
            assert_eq!(parse(value.as_bytes()), MediaType::FormUtf8, "{value}");
        }
        assert_eq!(
            parse(b"application/x-www-form-urlencoded; charset=US-ASCII"),
            MediaType::FormAscii
        );
    }

    #[test]
    fn other_charsets_are_told_apart() {
        for value in [
            "application/x-www-form-urlencoded; charset=UTF-16BE",
            "application/x-www-form-urlencoded; charset=utf-32",
            "application/x-www-form-urlencoded; charset=ISO-8859-1",
            "application/x-www-form-urlencoded; charset=\"utf-16\"",
            "application/x-www-form-urlencoded; charset=utf8",
        ] {
            assert_eq!(
                parse(value.as_bytes()),
                MediaType::FormOtherCharset,
                "{value}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_not_guessed() {
        for value in [
            &b"application/x-www-form-urlencoded; charset=utf-8; charset=utf-16"[..],
            b"application/x-www-form-urlencoded; charset",
            b"application/x-www-form-urlencoded; charset=\"utf-8",
            b"application/x-www-form-urlencoded; ch@rset=utf-8",
            b"application/x-www-form-urlencoded\xc2\xa0",
            b"application/x-www-form-urlencoded\r",
        ] {
            assert_eq!(parse(value), MediaType::Malformed, "{value:?}");
        }
    }

    #[test]
    fn other_media_types() {
        for value in [
            "application/json",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded, application/json",
            "text/plain",
            "",
        ] {
            assert_eq!(parse(value.as_bytes()), MediaType::Other, "{value}");
        }
    }
}
