//! Reading a token-path body whole before it is classified: capped, within the request
//! timeout, answering `Expect: 100-continue`.

use crate::config::MAX_TOKEN_BODY_BYTES;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::Error;
use std::time::Duration;

/// Why a token-path body could not be read.
pub(super) enum BodyError {
    /// Over [`MAX_TOKEN_BODY_BYTES`], declared or actual.
    TooLarge,
    /// Not received within the timeout.
    TimedOut,
    /// Malformed framing, or the client went away.
    Client(Box<Error>),
}

/// Read the whole body, refusing more than the cap (declared or actual).
pub(super) async fn read_body(
    session: &mut Session,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_TOKEN_BODY_BYTES) {
        return Err(BodyError::TooLarge);
    }
    session.enable_retry_buffering();
    let expects_continue = session
        .req_header()
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(BodyError::Client)?;
    }
    let mut body = BytesMut::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = tokio::time::timeout_at(deadline, session.read_request_body())
            .await
            .map_err(|_| BodyError::TimedOut)?
            .map_err(BodyError::Client)?;
        match chunk {
            Some(chunk) => {
                if body.len() + chunk.len() > MAX_TOKEN_BODY_BYTES {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            None => return Ok(body.freeze()),
        }
    }
}
