//! A count of events over a sliding span, in a fixed number of buckets: how many tombstones
//! this replica wrote that have not expired yet.

use crate::clock::UnixMillis;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: u64 = 64;

/// Events within the last `span`, to the precision of one bucket (`span / 64`).
#[derive(Debug)]
pub(super) struct RecentCount {
    bucket_ms: u64,
    /// (bucket index, events in it), oldest first.
    buckets: Mutex<VecDeque<(u64, u64)>>,
}

impl RecentCount {
    /// Count over `span`.
    pub(super) fn new(span: Duration) -> Self {
        let span_ms = span.as_millis().clamp(BUCKETS as u128, u64::MAX as u128) as u64;
        RecentCount {
            bucket_ms: span_ms / BUCKETS,
            buckets: Mutex::new(VecDeque::new()),
        }
    }

    fn prune(&self, buckets: &mut VecDeque<(u64, u64)>, now: UnixMillis) {
        let current = now.0 / self.bucket_ms;
        while let Some((index, _)) = buckets.front() {
            if index + BUCKETS > current {
                break;
            }
            buckets.pop_front();
        }
    }

    /// One event at `at`.
    pub(super) fn record(&self, at: UnixMillis) {
        let index = at.0 / self.bucket_ms;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.back_mut() {
            Some((last, count)) if *last >= index => *count += 1,
            _ => buckets.push_back((index, 1)),
        }
        self.prune(&mut buckets, at);
    }

    /// Events within the span before `now`.
    pub(super) fn count(&self, now: UnixMillis) -> u64 {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut buckets, now);
        buckets.iter().map(|(_, count)| count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_leave_the_count_when_the_span_has_passed() {
        let recent = RecentCount::new(Duration::from_secs(64));
        let start = UnixMillis(1_000_000);
        recent.record(start);
        recent.record(start.plus(Duration::from_secs(30)));
        assert_eq!(recent.count(start.plus(Duration::from_secs(31))), 2);
        assert_eq!(recent.count(start.plus(Duration::from_secs(66))), 1);
        assert_eq!(recent.count(start.plus(Duration::from_secs(100))), 0);
    }

    #[test]
    fn memory_stays_bounded_by_the_bucket_count() {
        let recent = RecentCount::new(Duration::from_secs(64));
        for second in 0..10_000 {
            recent.record(UnixMillis(second * 1000));
        }
        assert!(recent.buckets.lock().unwrap().len() as u64 <= BUCKETS);
        assert_eq!(recent.count(UnixMillis(9_999_000)), 64);
    }
}
