//! The Lua scripts that make each step atomic in Redis. Each touches the keys of one
//! fingerprint only (one hash tag), so each runs in one slot on Redis Cluster. Decisions are
//! not made here: the scripts read, claim, count a replay only under the cap, and record.

use redis::Script;
use std::sync::LazyLock;

/// Present a token. KEYS: state, answer, claim, family link, own revocation mark, parent
/// link. ARGV: claim id, claim TTL (ms), `1` if this replica may start another exchange,
/// the claimant's client identity (encoded).
///
/// Replies `{'rotated', fields, answer|nil}`, `{'in_flight', id, slot, pttl, claimant}`,
/// `{'revoked'}`, `{'full', link|nil}` or `{'claimed', link|nil, parent|nil}`.
pub(super) static PRESENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state = redis.call('HGETALL', KEYS[1])
if #state > 0 then
  return {'rotated', state, redis.call('GET', KEYS[2])}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local slot = redis.call('HINCRBY', KEYS[3], 'waiters', 1)
  return {'in_flight', redis.call('HGET', KEYS[3], 'id'), slot, redis.call('PTTL', KEYS[3]),
    redis.call('HGET', KEYS[3], 'client')}
end
local link = redis.call('GET', KEYS[4])
if not link and redis.call('EXISTS', KEYS[5]) == 1 then
  return {'revoked'}
end
if ARGV[3] ~= '1' then
  return {'full', link}
end
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'waiters', 0, 'client', ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {'claimed', link or false, redis.call('GET', KEYS[6])}
",
    )
});

/// Link a rotation's successor to its family and to its parent. KEYS: the successor's
/// family link, the successor's parent link. ARGV: family (hex), parent (hex), TTL (ms).
pub(super) static LINK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
",
    )
});

/// Restore a rotation this replica wrote, after a failover, if the primary lacks it.
/// KEYS: state, answer. ARGV: tombstone TTL (ms), answer TTL (ms, 0 for none), sealed
/// answer, then the tombstone's field/value pairs. Replies 1 if restored, 0 if present.
pub(super) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
return 1
",
    )
});

/// The successor of a token was presented: the token's tombstone records when, the first
/// time only (the present script's `HGETALL` reads it back). KEYS: the parent's state.
/// ARGV: now (ms). Replies 1 if recorded now, 0 otherwise (no tombstone, or already).
pub(super) static SUPERSEDE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSETNX', KEYS[1], 'superseded', ARGV[1])
end
return 0
",
    )
});

/// The marks of a family. KEYS: its revocation mark, its closing.
/// Replies `{1|0, closing|nil}`.
pub(super) static FAMILY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[2])}
",
    )
});

/// The family of a token: its tombstone's, else its family link's. KEYS: state, family
/// link. Replies the family (hex) or nil.
pub(super) static FAMILY_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local family = redis.call('HGET', KEYS[1], 'family')
if family then
  return family
end
return redis.call('GET', KEYS[2])
",
    )
});

/// Close a family's windows, unless a closing as late is kept. KEYS: the family's closing.
/// ARGV: at (ms), reason label, TTL (ms). Replies 1 if written.
pub(super) static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local kept = redis.call('GET', KEYS[1])
if kept then
  local at = tonumber(string.match(kept, '^(%d+):'))
  if at and at > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
",
    )
});

/// Record a rotation. KEYS: state, answer, claim, released.
/// ARGV: claim id, tombstone TTL (ms), answer TTL (ms, 0 for none), sealed answer, channel,
/// message, the publish command (`PUBLISH`, or `SPUBLISH` on the token's own sharded
/// channel in a cluster), then the tombstone's field/value pairs.
///
/// A tombstone already there is kept as it is (a retried write, a failover's restore, or
/// another replica's after this claim expired: its replay count stands); the claim is still
/// released and the end announced. Replies 1 if written, 0 if one was there.
pub(super) static ROTATED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local written = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 8))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[3])
  end
  written = 1
end
if redis.call('HGET', KEYS[3], 'id') == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
redis.call('DEL', KEYS[4])
redis.call(ARGV[7], ARGV[5], ARGV[6])
return written
",
    )
});

/// Release a claim that rotated nothing. KEYS: claim, released.
/// ARGV: claim id, outcome kind, sealed answer (may be empty), TTL (ms), channel, message,
/// the publish command (as for `ROTATED`), `1` to write only while the claim is still there
/// (a late retry: once the claim expired, its waiters were told it is gone, and the released
/// outcome may be another claim's). Replies 1 if written, 0 if not.
pub(super) static RELEASED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then
  redis.call('DEL', KEYS[1])
elseif ARGV[8] == '1' then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'kind', ARGV[2], 'answer', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[7], ARGV[5], ARGV[6])
return 1
",
    )
});

/// Where a waiter's exchange stands. KEYS: state, answer, claim, released. ARGV: claim id.
///
/// Replies `{'rotated', fields, answer|nil}`, `{'released', kind, answer}`,
/// `{'in_flight', pttl}` or `{'gone'}`.
pub(super) static OUTCOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state = redis.call('HGETALL', KEYS[1])
if #state > 0 then
  return {'rotated', state, redis.call('GET', KEYS[2])}
end
if redis.call('HGET', KEYS[4], 'id') == ARGV[1] then
  return {'released', redis.call('HGET', KEYS[4], 'kind'), redis.call('HGET', KEYS[4], 'answer')}
end
if redis.call('HGET', KEYS[3], 'id') == ARGV[1] then
  return {'in_flight', redis.call('PTTL', KEYS[3])}
end
return {'gone'}
",
    )
});

/// Read a tombstone for a decision. KEYS: state, answer.
/// Replies `{fields, 1|0}` (fields empty when there is no tombstone).
pub(super) static TOMBSTONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return {redis.call('HGETALL', KEYS[1]), redis.call('EXISTS', KEYS[2])}
",
    )
});

/// Count one replay if the count is still under the cap the decision relied on (the only
/// part of a replay decision other replicas can change). KEYS: state. ARGV: the cap.
/// Replies the new count, -1 without a tombstone, -2 when the cap was reached meanwhile.
pub(super) static COUNT_REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = redis.call('HGET', KEYS[1], 'replays')
if not seen then
  return -1
end
if tonumber(seen) >= tonumber(ARGV[1]) then
  return -2
end
return redis.call('HINCRBY', KEYS[1], 'replays', 1)
",
    )
});
