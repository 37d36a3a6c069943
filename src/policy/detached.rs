//! Exchanges whose client has gone, counted per source address. An exchange belongs to its
//! claim and runs to its end when the client leaves (a rotation is never lost), so without a
//! cap one address could send junk tokens, close each socket at once, and hold every
//! in-flight slot while the IdP is slow. Pure: no tokio, no sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The default of `[rotation] max_detached_per_source`.
pub const DEFAULT_PER_SOURCE: u32 = 64;

/// The detached exchanges of every source address.
#[derive(Debug)]
pub struct DetachedExchanges {
    per_source: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl DetachedExchanges {
    /// At most `per_source` detached exchanges per address before new ones are refused.
    pub fn new(per_source: u32) -> Arc<Self> {
        Arc::new(DetachedExchanges {
            per_source,
            counts: Mutex::new(HashMap::new()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `source` may start another exchange.
    pub fn admits(&self, source: IpAddr) -> bool {
        self.counts().get(&source).copied().unwrap_or(0) < self.per_source
    }

    /// Detached exchanges running now, over every address.
    pub fn total(&self) -> u64 {
        self.counts().values().map(|c| u64::from(*c)).sum()
    }

    /// Track one exchange from `source`.
    pub fn track(self: &Arc<Self>, source: IpAddr) -> Arc<ExchangeLife> {
        Arc::new(ExchangeLife {
            exchanges: self.clone(),
            source,
            state: Mutex::new(Life::default()),
        })
    }

    fn add(&self, source: IpAddr) {
        *self.counts().entry(source).or_insert(0) += 1;
    }

    fn remove(&self, source: IpAddr) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&source);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Life {
    finished: bool,
    detached: bool,
}

/// One exchange's life: its client may leave before it ends (detached), and it ends once.
#[derive(Debug)]
pub struct ExchangeLife {
    exchanges: Arc<DetachedExchanges>,
    source: IpAddr,
    state: Mutex<Life>,
}

impl ExchangeLife {
    fn state(&self) -> std::sync::MutexGuard<'_, Life> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client stopped waiting (it left, or its `request_timeout` passed): counted until
    /// the exchange ends, unless it already has.
    pub fn detach(&self) {
        let mut state = self.state();
        if !state.finished && !state.detached {
            state.detached = true;
            self.exchanges.add(self.source);
        }
    }

    /// The exchange ended (whatever its outcome).
    pub fn finish(&self) {
        let mut state = self.state();
        if !state.finished {
            state.finished = true;
            if state.detached {
                self.exchanges.remove(self.source);
            }
        }
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
    fn detached_exchanges_count_until_they_end() {
        let exchanges = DetachedExchanges::new(2);
        let lives: Vec<_> = (0..2).map(|_| exchanges.track(ip(1))).collect();
        assert!(exchanges.admits(ip(1)));
        for life in &lives {
            life.detach();
        }
        assert!(!exchanges.admits(ip(1)), "two detached: the cap is reached");
        assert!(exchanges.admits(ip(2)), "other addresses are not affected");
        assert_eq!(exchanges.total(), 2);
        lives[0].finish();
        assert!(exchanges.admits(ip(1)));
        lives[1].finish();
        assert_eq!(exchanges.total(), 0);
    }

    #[test]
    fn an_exchange_that_ended_first_is_never_counted() {
        let exchanges = DetachedExchanges::new(1);
        let life = exchanges.track(ip(1));
        life.finish();
        life.detach();
        assert_eq!(exchanges.total(), 0);
        let life = exchanges.track(ip(1));
        life.detach();
        life.detach();
        life.finish();
        life.finish();
        assert_eq!(exchanges.total(), 0, "once each way");
    }
}
