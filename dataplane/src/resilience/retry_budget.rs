//! The retry budget of one version, as in Linkerd and Finagle: retries in the last 10 s may
//! add at most `budget_percent` % to the requests of those seconds, plus a floor of 10 per
//! second so a quiet version can still retry. When the upstream is down, retries stay a
//! bounded share of the traffic instead of multiplying it.
//!
//! Counted lock-free in ten one-second buckets, like the breaker's window.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::resilience::outlier::now_ms;

const BUCKETS: u64 = 10;
const BUCKET_MS: u64 = 1_000;
/// Retries allowed per second whatever the traffic.
pub const FLOOR_PER_SECOND: u64 = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which second the counts belong to.
    epoch: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    /// Made by the first request counted: a version that serves nothing costs no window.
    buckets: std::sync::OnceLock<Box<[Bucket; BUCKETS as usize]>>,
}

impl RetryBudget {
    pub fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            percent: u64::from(percent),
            buckets: std::sync::OnceLock::new(),
        }
    }

    fn buckets(&self) -> &[Bucket; BUCKETS as usize] {
        self.buckets.get_or_init(Default::default)
    }

    fn bucket(&self, epoch: u64) -> &Bucket {
        let b = &self.buckets()[(epoch % BUCKETS) as usize];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Release);
            b.retries.store(0, Ordering::Release);
        }
        b
    }

    /// Counts one original request.
    pub fn deposit(&self) {
        self.deposit_at(now_ms());
    }

    fn deposit_at(&self, now: u64) {
        self.bucket(now / BUCKET_MS)
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(now_ms())
    }

    fn withdraw_at(&self, now: u64) -> bool {
        let epoch = now / BUCKET_MS;
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in self.buckets() {
            if epoch.saturating_sub(b.epoch.load(Ordering::Acquire)) < BUCKETS {
                requests += u64::from(b.requests.load(Ordering::Relaxed));
                retries += u64::from(b.retries.load(Ordering::Relaxed));
            }
        }
        let allowed = requests * self.percent / 100 + FLOOR_PER_SECOND * BUCKETS;
        if retries >= allowed {
            return false;
        }
        self.bucket(epoch).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_plus_the_floor() {
        let b = RetryBudget::new(20);
        let t = 50_000;
        for i in 0..1_000 {
            b.deposit_at(t + i);
        }
        let granted = (0..1_000)
            .filter(|i| b.withdraw_at(t + 999 + i % 2))
            .count();
        assert_eq!(granted as u64, 200 + FLOOR_PER_SECOND * BUCKETS);
    }

    #[test]
    fn the_window_forgets_old_seconds() {
        let b = RetryBudget::new(0);
        let t = 50_000;
        let floor = FLOOR_PER_SECOND * BUCKETS;
        assert_eq!((0..500).filter(|_| b.withdraw_at(t)).count() as u64, floor);
        assert!(!b.withdraw_at(t + 9_999), "still within 10 s");
        assert!(
            b.withdraw_at(t + 10_000),
            "the spent second has left the window"
        );
    }
}
