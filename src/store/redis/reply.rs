//! Reading the scripts' replies: RESP values into tombstones, sealed answers and outcomes.

use super::record;
use crate::clock::UnixMillis;
use crate::policy::{RefusalReason, WindowClose};
use crate::seal::envelope::SealedAnswer;
use crate::seal::fingerprint::TokenFingerprint;
use crate::store::{ExchangeOutcome, Released, StoreError, TokenRecord};
use redis::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) fn malformed(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unexpected reply from Redis ({what})"))
}

pub(super) fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(super) fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(text(other)?).ok()?.parse().ok(),
    }
}

pub(super) fn parse_claim_id(value: &Value) -> Option<u64> {
    std::str::from_utf8(text(value)?).ok()?.parse().ok()
}

pub(super) fn fingerprint(value: &Value) -> Option<TokenFingerprint> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text(value)?, &mut bytes).ok()?;
    Some(TokenFingerprint(bytes))
}

/// A flat `HGETALL` reply as a map.
pub(super) fn fields(value: &Value) -> Option<HashMap<String, Vec<u8>>> {
    let items = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => {
            return pairs
                .iter()
                .map(|(k, v)| {
                    Some((
                        String::from_utf8(text(k)?.to_vec()).ok()?,
                        text(v)?.to_vec(),
                    ))
                })
                .collect()
        }
        _ => return None,
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => Some((
                String::from_utf8(text(name)?.to_vec()).ok()?,
                text(value)?.to_vec(),
            )),
            _ => None,
        })
        .collect()
}

pub(super) fn sealed(value: &Value) -> Option<Arc<SealedAnswer>> {
    text(value).map(|bytes| Arc::new(SealedAnswer::from_bytes(bytes.to_vec())))
}

pub(super) fn rotated(
    parts: &[Value],
) -> Result<(TokenRecord, Option<Arc<SealedAnswer>>), StoreError> {
    let map = parts
        .get(1)
        .and_then(fields)
        .ok_or_else(|| malformed("tombstone"))?;
    Ok((tombstone(&map)?, parts.get(2).and_then(sealed)))
}

/// The hash field the supersede script writes: when the successor was first presented.
pub(super) const SUPERSEDED: &str = "superseded";

/// A tombstone from its hash fields, with when its successor was first presented.
pub(super) fn tombstone(map: &HashMap<String, Vec<u8>>) -> Result<TokenRecord, StoreError> {
    let record = record::decode(map).map_err(|e| malformed(&e.to_string()))?;
    let superseded = map
        .get(SUPERSEDED)
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
        .map(UnixMillis);
    Ok(record.with_superseded(superseded))
}

/// A family's closing as the close script wrote it (`<at ms>:<reason>`).
pub(super) fn closing(value: &Value) -> Option<WindowClose> {
    let text = std::str::from_utf8(text(value)?).ok()?;
    let (at, reason) = text.split_once(':')?;
    Some(WindowClose {
        at: UnixMillis(at.parse().ok()?),
        // A reason this version does not know (a newer replica's): closed all the same.
        reason: RefusalReason::from_label(reason).unwrap_or(RefusalReason::Revoked),
    })
}

/// The wire names of released outcomes.
pub(super) const ANSWERED_OK: &str = "answered_ok";
pub(super) const ANSWERED_ERROR: &str = "answered_error";
pub(super) const UNREACHABLE: &str = "unreachable";
pub(super) const TIMED_OUT: &str = "timed_out";
/// The claimant refused its own claim (a member of a revoked family): waiters present again.
pub(super) const ABANDONED: &str = "abandoned";

pub(super) fn released_outcome(kind: &[u8], answer: Option<&Value>) -> Option<ExchangeOutcome> {
    let answered = |success| {
        Some(ExchangeOutcome::Released(Released::Answered {
            answer: answer.and_then(sealed)?,
            success,
        }))
    };
    match std::str::from_utf8(kind).ok()? {
        ANSWERED_OK => answered(true),
        ANSWERED_ERROR => answered(false),
        UNREACHABLE => Some(ExchangeOutcome::Released(Released::Unreachable)),
        TIMED_OUT => Some(ExchangeOutcome::Released(Released::TimedOut)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_hash_reads_from_a_flat_array_and_from_a_map() {
        let flat = Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("2")]);
        let map = Value::Map(vec![(bulk("a"), bulk("1")), (bulk("b"), bulk("2"))]);
        for value in [flat, map] {
            let read = fields(&value).unwrap();
            assert_eq!(read["a"], b"1");
            assert_eq!(read["b"], b"2");
        }
        assert!(fields(&Value::Array(vec![bulk("odd")])).is_none());
    }

    #[test]
    fn released_kinds_map_to_outcomes() {
        let answer = bulk("sealed");
        assert!(matches!(
            released_outcome(ANSWERED_OK.as_bytes(), Some(&answer)),
            Some(ExchangeOutcome::Released(Released::Answered {
                success: true,
                ..
            }))
        ));
        assert!(matches!(
            released_outcome(ANSWERED_ERROR.as_bytes(), Some(&answer)),
            Some(ExchangeOutcome::Released(Released::Answered {
                success: false,
                ..
            }))
        ));
        assert!(matches!(
            released_outcome(TIMED_OUT.as_bytes(), None),
            Some(ExchangeOutcome::Released(Released::TimedOut))
        ));
        assert!(released_outcome(ABANDONED.as_bytes(), None).is_none());
        assert!(released_outcome(ANSWERED_OK.as_bytes(), None).is_none());
    }

    #[test]
    fn a_closing_reads_back_and_fails_closed_on_an_unknown_reason() {
        assert_eq!(
            closing(&bulk("1800000000000:superseded")),
            Some(WindowClose {
                at: UnixMillis(1_800_000_000_000),
                reason: RefusalReason::Superseded
            })
        );
        assert_eq!(
            closing(&bulk("5:some_later_reason")).map(|c| c.reason),
            Some(RefusalReason::Revoked)
        );
        assert_eq!(closing(&bulk("x:revoked")), None);
        assert_eq!(closing(&Value::Nil), None);
    }

    #[test]
    fn claim_ids_use_the_whole_u64_range() {
        assert_eq!(
            parse_claim_id(&bulk("18446744073709551615")),
            Some(u64::MAX)
        );
        assert_eq!(parse_claim_id(&bulk("x")), None);
    }
}
