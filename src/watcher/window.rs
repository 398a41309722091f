//! The counting rules: when hits make a ban, and how long a ban lasts.
//!
//! Pure functions over times in milliseconds since the epoch, so the edges
//! (exactly `findtime` apart, one millisecond more) are testable without a
//! clock, and the state store and `test-regex` share one definition.

use std::time::Duration;

/// A jail's counting parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub maxretry: u32,
    pub findtime: Duration,
    pub bantime: Duration,
    /// Each repeat ban of a host multiplies the ban time by this (1 = off).
    pub bantime_factor: f64,
    /// Cap on the multiplied ban time.
    pub bantime_maxtime: Option<Duration>,
}

impl Default for Rules {
    /// The seed's "multi-ban" jail: 3 bans within 24 h trap for a week.
    fn default() -> Self {
        Rules {
            maxretry: 3,
            findtime: Duration::from_secs(86400),
            bantime: Duration::from_secs(7 * 86400),
            bantime_factor: 1.0,
            bantime_maxtime: None,
        }
    }
}

/// Longest ban we ever ask for (the kernel's timeouts are u64 ms, but a
/// decade is "forever" for an attacker's address).
pub const MAX_BANTIME: Duration = Duration::from_secs(10 * 365 * 86400);

impl Rules {
    /// True when some `maxretry` of `hits` (ms, any order) lie within
    /// `findtime` of each other, both ends inclusive: hits exactly
    /// `findtime` apart are in one window.
    pub fn window_full(&self, hits: &[i64]) -> bool {
        let n = self.maxretry.max(1) as usize;
        if hits.len() < n {
            return false;
        }
        let mut h = hits.to_vec();
        h.sort_unstable();
        let span = self.findtime.as_millis() as i64;
        h.windows(n).any(|w| w[n - 1] - w[0] <= span)
    }

    /// Hits at or after this time (ms) can still be part of a window that
    /// ends at `now_ms`; older ones can be forgotten.
    pub fn horizon(&self, now_ms: i64) -> i64 {
        now_ms - self.findtime.as_millis() as i64
    }

    /// Ban time for a host's `offence`-th ban (1 = first):
    /// `bantime × factor^(offence-1)`, capped by `bantime_maxtime`.
    pub fn ban_duration(&self, offence: u32) -> Duration {
        let base = self.bantime.as_secs_f64();
        let exp = offence.saturating_sub(1).min(1000) as i32;
        let f = if self.bantime_factor.is_finite() && self.bantime_factor >= 1.0 {
            self.bantime_factor
        } else {
            1.0
        };
        let secs = base * f.powi(exp);
        let cap = self
            .bantime_maxtime
            .unwrap_or(MAX_BANTIME)
            .min(MAX_BANTIME)
            .as_secs_f64();
        let secs = if secs.is_finite() { secs.min(cap) } else { cap };
        Duration::from_secs_f64(secs.max(base.min(cap)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn rules() -> Rules {
        Rules {
            maxretry: 3,
            findtime: Duration::from_secs(86400),
            ..Rules::default()
        }
    }

    #[test]
    fn below_maxretry_never_bans() {
        assert!(!rules().window_full(&[]));
        assert!(!rules().window_full(&[0, 1]));
    }

    #[test]
    fn maxretry_within_findtime_bans() {
        assert!(rules().window_full(&[0, H, 2 * H]));
        // Exactly findtime between first and last: still one window.
        assert!(rules().window_full(&[0, 12 * H, 24 * H]));
        // One millisecond more: not.
        assert!(!rules().window_full(&[0, 12 * H, 24 * H + 1]));
    }

    #[test]
    fn window_slides_and_order_does_not_matter() {
        // Four hits; the first three span too long, the last three fit.
        assert!(rules().window_full(&[0, 20 * H, 30 * H, 40 * H]));
        assert!(!rules().window_full(&[0, 20 * H, 45 * H, 70 * H]));
        assert!(rules().window_full(&[40 * H, 20 * H, 30 * H, 0]));
    }

    #[test]
    fn maxretry_one_bans_at_first_hit() {
        let r = Rules {
            maxretry: 1,
            ..rules()
        };
        assert!(r.window_full(&[5]));
    }

    #[test]
    fn horizon_is_findtime_back() {
        assert_eq!(rules().horizon(100 * H), 76 * H);
    }

    #[test]
    fn increments_multiply_and_are_capped() {
        let r = Rules {
            bantime: Duration::from_secs(3600),
            bantime_factor: 2.0,
            bantime_maxtime: Some(Duration::from_secs(5 * 3600)),
            ..rules()
        };
        assert_eq!(r.ban_duration(1), Duration::from_secs(3600));
        assert_eq!(r.ban_duration(2), Duration::from_secs(7200));
        assert_eq!(r.ban_duration(3), Duration::from_secs(4 * 3600));
        assert_eq!(r.ban_duration(4), Duration::from_secs(5 * 3600));
        assert_eq!(r.ban_duration(1000), Duration::from_secs(5 * 3600));
        assert_eq!(r.ban_duration(u32::MAX), Duration::from_secs(5 * 3600));
    }

    #[test]
    fn no_factor_means_constant_and_no_cap_means_decade() {
        let r = rules();
        assert_eq!(r.ban_duration(1), r.bantime);
        assert_eq!(r.ban_duration(9), r.bantime);
        let r = Rules {
            bantime_factor: 10.0,
            ..rules()
        };
        assert_eq!(r.ban_duration(500), MAX_BANTIME);
    }
}
