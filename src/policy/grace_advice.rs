//! Grace advice: how long after a first use the same client, from the same source, presents
//! the token again, so `grace_period` can be set from data rather than a guess. Delays go
//! into fixed log-spaced histograms (bounded memory whatever the traffic), one per client id
//! configured under `[clients]` and one for every other client together, in hourly windows
//! of which the last 24 are kept. Pure: time is given, never read.

use crate::clock::UnixMillis;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Bucket bounds, in milliseconds: fine below a second, up to five minutes (anything
/// slower falls in the last, open bucket).
pub const BUCKET_BOUNDS_MS: [u64; 28] = [
    1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
    7_500, 10_000, 15_000, 20_000, 30_000, 45_000, 60_000, 120_000, 300_000,
];
/// The width of one window.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Windows kept: the advice covers the last 24 hours at most.
pub const WINDOWS: usize = 24;
/// The longest grace period ever recommended.
pub const MAX_RECOMMENDED: Duration = Duration::from_secs(60);
/// The shortest grace period ever recommended (a window of 0 keeps no answer at all, so
/// even racing waiters would be refused).
pub const MIN_RECOMMENDED: Duration = Duration::from_secs(1);

/// Counts of delays per bucket (the last is everything above the last bound), and the
/// largest delay seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    counts: [u64; BUCKET_BOUNDS_MS.len() + 1],
    max_ms: u64,
}

impl DelayHistogram {
    /// Count one delay.
    pub fn record(&mut self, delay: Duration) {
        let ms = delay.as_millis().min(u128::from(u64::MAX)) as u64;
        let bucket = BUCKET_BOUNDS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(BUCKET_BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// Add `other`'s counts.
    pub fn merge(&mut self, other: &DelayHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    /// Delays counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), capped at the largest
    /// delay seen; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = BUCKET_BOUNDS_MS.get(bucket).copied().unwrap_or(self.max_ms);
                return Some(Duration::from_millis(bound.min(self.max_ms)));
            }
        }
        Some(Duration::from_millis(self.max_ms))
    }

    /// The largest delay seen.
    pub fn max(&self) -> Option<Duration> {
        (self.total() > 0).then(|| Duration::from_millis(self.max_ms))
    }
}

/// One hourly window: a histogram per configured client, and one for the others.
#[derive(Debug, Clone, Default)]
struct Window {
    start: u64,
    clients: BTreeMap<String, DelayHistogram>,
    others: DelayHistogram,
}

/// The delays of the last 24 hours, per configured client and for the others.
#[derive(Debug, Default)]
pub struct GraceAdvisor {
    windows: VecDeque<Window>,
    /// When the first delay was counted (the start of the period the advice covers).
    since: Option<UnixMillis>,
}

/// The advice for one client (or for the others together).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientAdvice {
    /// The client id, or `null` for every client without its own `[clients]` section.
    pub client_id: Option<String>,
    /// Presentations of an already-used token by the same client from the same source.
    pub replays: u64,
    /// Delay quantiles since the first use, in seconds (bucket upper bounds).
    pub delay_seconds: Quantiles,
    /// The smallest grace period that answers p99.9 of them (at least 1 s, at most 60 s),
    /// in seconds; `null` without data.
    pub recommended_grace_period_seconds: Option<f64>,
    /// The same, as a `[rotation] grace_period` value (`"2s"`).
    pub recommended_grace_period: Option<String>,
}

/// Delay quantiles in seconds; `null` without data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p99_9: Option<f64>,
    /// The largest.
    pub max: Option<f64>,
}

fn seconds(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| d.as_secs_f64())
}

impl ClientAdvice {
    fn from(client_id: Option<String>, histogram: &DelayHistogram) -> Self {
        let p99_9 = histogram.quantile(0.999);
        let recommended = p99_9.map(|delay| {
            // Answer a presentation that comes exactly at the bound, rounded up to whole
            // seconds so the value reads as configuration.
            let whole = Duration::from_secs(delay.as_millis().div_ceil(1000) as u64);
            whole.clamp(MIN_RECOMMENDED, MAX_RECOMMENDED)
        });
        ClientAdvice {
            client_id,
            replays: histogram.total(),
            delay_seconds: Quantiles {
                p50: seconds(histogram.quantile(0.5)),
                p99: seconds(histogram.quantile(0.99)),
                p99_9: seconds(p99_9),
                max: seconds(histogram.max()),
            },
            recommended_grace_period_seconds: seconds(recommended),
            recommended_grace_period: recommended.map(|d| format!("{}s", d.as_secs())),
        }
    }
}

impl GraceAdvisor {
    /// Count a presentation `delay` after the first use, by `client_id` when it has its own
    /// `[clients]` section (`configured`), with the others otherwise.
    pub fn record(&mut self, client_id: &str, configured: bool, delay: Duration, now: UnixMillis) {
        let window = self.window_at(now);
        let histogram = if configured {
            window.clients.entry(client_id.to_owned()).or_default()
        } else {
            &mut window.others
        };
        histogram.record(delay);
        self.since.get_or_insert(now);
    }

    fn window_at(&mut self, now: UnixMillis) -> &mut Window {
        let width = WINDOW.as_millis() as u64;
        let start = now.0 - now.0 % width;
        if self.windows.back().is_none_or(|last| last.start < start) {
            self.windows.push_back(Window {
                start,
                ..Window::default()
            });
        }
        self.expire(now);
        self.windows.back_mut().expect("a window was just ensured")
    }

    fn expire(&mut self, now: UnixMillis) {
        let width = WINDOW.as_millis() as u64;
        let oldest = now.0.saturating_sub(width * WINDOWS as u64);
        while self
            .windows
            .front()
            .is_some_and(|w| w.start + width <= oldest)
        {
            self.windows.pop_front();
        }
    }

    /// The advice at `now` for each of `configured` (the `[clients]` ids) and for the
    /// others, over the windows kept; and the start of the period it covers.
    pub fn advice(
        &mut self,
        configured: &[String],
        now: UnixMillis,
    ) -> (Vec<ClientAdvice>, Option<UnixMillis>) {
        self.expire(now);
        let mut per_client: BTreeMap<&str, DelayHistogram> = configured
            .iter()
            .map(|id| (id.as_str(), DelayHistogram::default()))
            .collect();
        let mut others = DelayHistogram::default();
        for window in &self.windows {
            for (id, histogram) in &window.clients {
                match per_client.get_mut(id.as_str()) {
                    Some(mine) => mine.merge(histogram),
                    // No longer configured (a reload): counted with the others.
                    None => others.merge(histogram),
                }
            }
            others.merge(&window.others);
        }
        let mut advice: Vec<ClientAdvice> = per_client
            .iter()
            .map(|(id, histogram)| ClientAdvice::from(Some((*id).to_owned()), histogram))
            .collect();
        advice.push(ClientAdvice::from(None, &others));
        let width = WINDOW.as_millis() as u64;
        let period_start = self
            .windows
            .front()
            .map(|w| UnixMillis(w.start.max(now.0.saturating_sub(width * WINDOWS as u64))))
            .map(|start| match self.since {
                Some(since) if since.0 > start.0 => since,
                _ => start,
            });
        (advice, period_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMillis = UnixMillis(1_800_000_000_000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_are_bucket_bounds_capped_by_the_largest_delay() {
        let mut histogram = DelayHistogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        for _ in 0..98 {
            histogram.record(ms(40));
        }
        histogram.record(ms(900));
        histogram.record(ms(2_600));
        assert_eq!(histogram.total(), 100);
        assert_eq!(histogram.quantile(0.5), Some(ms(50)));
        assert_eq!(histogram.quantile(0.99), Some(ms(1_000)));
        assert_eq!(
            histogram.quantile(0.999),
            Some(ms(2_600)),
            "capped at the max seen"
        );
        assert_eq!(histogram.max(), Some(ms(2_600)));
    }

    #[test]
    fn advice_is_per_configured_client_and_for_the_others_and_recommends_whole_seconds() {
        let mut advisor = GraceAdvisor::default();
        for n in 0..1000 {
            advisor.record("kubernetes", true, ms(30 + n % 50), T0);
        }
        advisor.record("kubernetes", true, ms(2_200), T0);
        advisor.record("cli", false, ms(10), T0);
        let configured = vec!["kubernetes".to_owned(), "quiet".to_owned()];
        let (advice, since) = advisor.advice(&configured, T0.plus(ms(1)));
        assert_eq!(since, Some(T0));
        let kubernetes = &advice[0];
        assert_eq!(kubernetes.client_id.as_deref(), Some("kubernetes"));
        assert_eq!(kubernetes.replays, 1001);
        assert_eq!(kubernetes.delay_seconds.p50, Some(0.075));
        assert_eq!(kubernetes.delay_seconds.max, Some(2.2));
        // p99.9 of 1001 is the 1000th delay: still in the 75 ms bucket; 1 s at least.
        assert_eq!(kubernetes.recommended_grace_period.as_deref(), Some("1s"));
        let quiet = &advice[1];
        assert_eq!(
            (quiet.replays, quiet.recommended_grace_period.clone()),
            (0, None)
        );
        let others = &advice[2];
        assert_eq!((others.client_id.clone(), others.replays), (None, 1));
    }

    #[test]
    fn slow_replays_raise_the_advice_up_to_a_minute() {
        let mut advisor = GraceAdvisor::default();
        for _ in 0..10 {
            advisor.record("k", true, ms(4_200), T0);
        }
        let (advice, _) = advisor.advice(&["k".to_owned()], T0);
        assert_eq!(advice[0].recommended_grace_period.as_deref(), Some("5s"));
        advisor.record("k", true, Duration::from_secs(200), T0);
        for _ in 0..2000 {
            advisor.record("k", true, Duration::from_secs(100), T0);
        }
        let (advice, _) = advisor.advice(&["k".to_owned()], T0);
        assert_eq!(advice[0].recommended_grace_period.as_deref(), Some("60s"));
    }

    #[test]
    fn only_the_last_24_hours_count() {
        let mut advisor = GraceAdvisor::default();
        advisor.record("k", true, ms(9_000), T0);
        let later = T0.plus(Duration::from_secs(3600 * 25));
        advisor.record("k", true, ms(40), later);
        let (advice, since) = advisor.advice(&["k".to_owned()], later);
        assert_eq!(advice[0].replays, 1, "the day-old delay is gone");
        assert!(since.unwrap().0 > T0.0);
        assert!(advisor.windows.len() <= WINDOWS + 1);
    }
}
