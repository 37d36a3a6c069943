//! A per-source, per-second cap on audit lines, so a flood of refused requests cannot fill
//! the log: each source address writes at most `per_second` lines a second, the rest are
//! counted. Memory is bounded: at most `max_sources` addresses are tracked in one second,
//! and addresses beyond that share one budget. Time is passed in (pure, testable).

use crate::clock::UnixMillis;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The cap. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SourceCap {
    per_second: u32,
    max_sources: usize,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    second: u64,
    counts: HashMap<IpAddr, u32>,
    overflow: u32,
}

impl SourceCap {
    /// At most `per_second` lines per address per second, tracking `max_sources` addresses.
    pub fn new(per_second: u32, max_sources: usize) -> Self {
        SourceCap {
            per_second,
            max_sources,
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether `source` may write one more line at `now` (and count it if so).
    pub fn allow(&self, source: IpAddr, now: UnixMillis) -> bool {
        let second = now.0 / 1000;
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.second != second {
            window.second = second;
            window.counts.clear();
            window.overflow = 0;
        }
        let per_second = self.per_second;
        let tracked = window.counts.len() < self.max_sources;
        let count = match window.counts.get_mut(&source) {
            Some(count) => count,
            None if tracked => window.counts.entry(source).or_insert(0),
            None => &mut window.overflow,
        };
        if *count >= per_second {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn each_source_gets_its_budget_per_second() {
        let cap = SourceCap::new(3, 100);
        let now = UnixMillis(10_000);
        assert_eq!((0..5).filter(|_| cap.allow(ip(1), now)).count(), 3);
        assert!(cap.allow(ip(2), now), "another source has its own budget");
        assert!(!cap.allow(ip(1), UnixMillis(10_999)));
        assert!(cap.allow(ip(1), UnixMillis(11_000)), "a new second refills");
    }

    #[test]
    fn sources_beyond_the_tracked_ones_share_one_budget() {
        let cap = SourceCap::new(2, 2);
        let now = UnixMillis(5_000);
        assert!(cap.allow(ip(1), now));
        assert!(cap.allow(ip(2), now));
        let allowed = (3..50).filter(|last| cap.allow(ip(*last), now)).count();
        assert_eq!(allowed, 2);
    }
}
