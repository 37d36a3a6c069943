//! An HTTP answer the gate can hold, seal and replay: status, headers and body.

use bytes::Bytes;

/// One complete HTTP answer.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and raw values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Bytes,
}

impl std::fmt::Debug for Answer {
    // The body of a token answer holds tokens: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Why bytes could not be decoded as an [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated or malformed answer encoding")]
pub struct DecodeError;

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A compact binary encoding: status, header count, each header, then the body.
    pub fn encode(&self) -> Vec<u8> {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(4 + headers_len + self.body.len());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u16).to_be_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Decode what [`Answer::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Answer, DecodeError> {
        let mut cursor = Cursor(bytes);
        let status = u16::from_be_bytes(cursor.take(2)?.try_into().map_err(|_| DecodeError)?);
        let count = u16::from_be_bytes(cursor.take(2)?.try_into().map_err(|_| DecodeError)?);
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name_len = u16::from_be_bytes(cursor.take(2)?.try_into().map_err(|_| DecodeError)?);
            let name = std::str::from_utf8(cursor.take(name_len as usize)?)
                .map_err(|_| DecodeError)?
                .to_owned();
            let value_len =
                u32::from_be_bytes(cursor.take(4)?.try_into().map_err(|_| DecodeError)?);
            let value = cursor.take(value_len as usize)?.to_vec();
            headers.push((name, value));
        }
        Ok(Answer {
            status,
            headers,
            body: Bytes::copy_from_slice(cursor.0),
        })
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

/// Which `Date` an answer written by the gate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The upstream's own answer, verbatim (its `Date` kept).
    Verbatim,
    /// A remembered or gate-written answer: a fresh `Date`.
    FreshDate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let answer = Answer {
            status: 200,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-empty".into(), vec![]),
            ],
            body: Bytes::from_static(b"{\"access_token\":\"a\"}"),
        };
        assert_eq!(Answer::decode(&answer.encode()).unwrap(), answer);
        assert_eq!(
            answer.header("content-type"),
            Some(&b"application/json"[..])
        );
    }

    #[test]
    fn truncated_input_is_an_error() {
        let answer = Answer {
            status: 200,
            headers: vec![("a".into(), b"b".to_vec())],
            body: Bytes::new(),
        };
        let encoded = answer.encode();
        for cut in 0..encoded.len() - 1 {
            assert!(Answer::decode(&encoded[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn debug_hides_the_body() {
        let answer = Answer {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"secret-token"),
        };
        assert!(!format!("{answer:?}").contains("secret"));
    }
}
