//! What active health checks found about one endpoint: healthy or not, with the streak of
//! results that moves it across the thresholds. Written by the endpoint's checker, read by
//! the request path (one relaxed load per request of a version that checks health).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// One endpoint's health, shared by every routing state that has the endpoint.
#[derive(Debug)]
pub struct Probe {
    healthy: AtomicBool,
    /// Positive: successes in a row; negative: failures in a row.
    streak: AtomicI32,
    checks: AtomicU64,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            healthy: AtomicBool::new(true),
            streak: AtomicI32::new(0),
            checks: AtomicU64::new(0),
        }
    }
}

impl Probe {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Checks made so far.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Records one check (only its checker writes); `Some(now healthy)` when it crossed a
    /// threshold.
    pub fn record(
        &self,
        ok: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let streak = self.streak.load(Ordering::Relaxed);
        let streak = match (ok, streak) {
            (true, s) if s > 0 => s.saturating_add(1),
            (true, _) => 1,
            (false, s) if s < 0 => s.saturating_sub(1),
            (false, _) => -1,
        };
        self.streak.store(streak, Ordering::Relaxed);
        let was = self.is_healthy();
        let now = if was {
            streak > -(unhealthy_threshold as i32)
        } else {
            streak >= healthy_threshold as i32
        };
        self.healthy.store(now, Ordering::Relaxed);
        (now != was).then_some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_take_an_endpoint_out_and_bring_it_back() {
        let p = Probe::default();
        assert!(p.is_healthy(), "healthy until shown otherwise");
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(true, 2, 3), None, "a success breaks the streak");
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(false, 2, 3), Some(false), "three in a row");
        assert!(!p.is_healthy());
        assert_eq!(p.record(false, 2, 3), None);
        assert_eq!(p.record(true, 2, 3), None);
        assert_eq!(p.record(true, 2, 3), Some(true), "two in a row");
        assert_eq!(p.checks(), 8);
    }
}
