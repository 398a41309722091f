//! Saying a repeated thing once: a flood of accept errors, hostile clients or
//! a failing `nft` must not flood the journal, but must not go unseen either.

use std::time::{Duration, Instant};

/// Allows one log line per period and counts what it held back.
#[derive(Debug, Clone)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Default for RateLimit {
    /// Once per second.
    fn default() -> Self {
        RateLimit::new(Duration::from_secs(1))
    }
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence. `Some(n)` when a line may be written now,
    /// `n` being the occurrences since the last line (this one included);
    /// `None` while the period has not passed.
    pub fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                let n = self.suppressed + 1;
                self.suppressed = 0;
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count() {
        let mut r = RateLimit::new(Duration::from_millis(200));
        assert_eq!(r.hit(), Some(1));
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(r.hit(), Some(3), "two held back plus this one");
        assert_eq!(r.hit(), None);
    }
}
