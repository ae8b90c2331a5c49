//! Rate measurement and rate limiting, both driven by the `now` the adapter hands in.

use crate::time::{Duration, Instant};

/// Bytes per second, smoothed over windows of at least [`RateMeter::WINDOW`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RateMeter {
    window_start: Instant,
    window_bytes: u64,
    rate: u64,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_millis(250);

    pub(crate) fn new(now: Instant) -> Self {
        RateMeter {
            window_start: now,
            window_bytes: 0,
            rate: 0,
        }
    }

    pub(crate) fn add(&mut self, now: Instant, bytes: u64) {
        self.window_bytes += bytes;
        let span = now - self.window_start;
        if span >= Self::WINDOW {
            let sample = self.window_bytes.saturating_mul(1_000_000) / span.total_micros().max(1);
            // An exponential average: the first sample is taken whole, later ones weigh 1/2, so
            // the estimate follows a changing link within a second or so.
            self.rate = if self.rate == 0 {
                sample
            } else {
                (self.rate + sample) / 2
            };
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    /// Bytes per second; decays towards zero when nothing arrives.
    pub(crate) fn rate(&self, now: Instant) -> u64 {
        let idle = now - self.window_start;
        if idle > Duration::from_secs(2) {
            // No completed window for a while: scale down by how long it has been quiet.
            return self.rate.saturating_mul(2_000_000) / idle.total_micros().max(1);
        }
        self.rate
    }
}

/// A token bucket: `rate` bytes per second, bursts up to `burst` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: i64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u64, burst: u64, now: Instant) -> Self {
        TokenBucket {
            rate: rate.max(1),
            burst: burst.max(1),
            tokens: burst.max(1) as i64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let add = (now - self.last).total_micros().saturating_mul(self.rate) / 1_000_000;
        if add > 0 {
            self.tokens = (self.tokens + add as i64).min(self.burst as i64);
            self.last = now;
        }
    }

    /// Whether a send may start now. A send may overdraw the bucket (a block is sent whole),
    /// and the debt delays the next one.
    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    pub(crate) fn take(&mut self, bytes: u64) {
        self.tokens -= bytes.min(i64::MAX as u64) as i64;
    }

    /// When the bucket next allows a send.
    pub(crate) fn ready_at(&self) -> Instant {
        if self.tokens > 0 {
            return self.last;
        }
        let need = (1 - self.tokens) as u64;
        self.last + Duration::from_micros(need.saturating_mul(1_000_000).div_ceil(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_follows_a_steady_stream() {
        let mut m = RateMeter::new(Instant::ZERO);
        for ms in 1..=2000u64 {
            m.add(Instant::from_millis(ms), 1000); // 1 MB/s
        }
        let r = m.rate(Instant::from_millis(2000));
        assert!((900_000..=1_100_000).contains(&r), "{r}");
        assert!(m.rate(Instant::from_secs(20)) < r / 5);
    }

    #[test]
    fn bucket_limits_long_run_rate_and_allows_a_burst() {
        let mut b = TokenBucket::new(1000, 500, Instant::ZERO);
        assert!(b.ready(Instant::ZERO));
        b.take(2000);
        assert!(!b.ready(Instant::ZERO));
        let at = b.ready_at();
        assert_eq!(at, Instant::from_micros(1_501_000));
        assert!(!b.ready(Instant::from_millis(1500)));
        assert!(b.ready(at));
    }
}
