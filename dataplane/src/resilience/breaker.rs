//! A lock-free circuit breaker per version, in the style of Hystrix and ServiceComb.
//!
//! Outcomes are counted in ten buckets spanning the rolling window. When the window holds at
//! least `request_volume` requests and its failures are above the threshold beyond chance
//! ([`Settings::trips`]: a version on a tenth of the traffic does not open on an error rate
//! its baseline survives), the breaker opens. After the sleep window a single probe is let through (half-open): success closes
//! the breaker, failure opens it again.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use grayline_routing::model::Breaker as Settings;

const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    Disabled,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Debug)]
struct Bucket {
    /// Which bucket period (ms / bucket length) the counts belong to.
    epoch: AtomicU64,
    total: AtomicU32,
    failed: AtomicU32,
}

#[derive(Debug)]
pub struct Breaker {
    settings: Settings,
    bucket_ms: u64,
    started: Instant,
    state: AtomicU8,
    opened_at_ms: AtomicU64,
    /// Made by the first outcome recorded: a version that serves nothing costs no window.
    buckets: std::sync::OnceLock<Box<[Bucket; BUCKETS]>>,
}

/// Whether a request may go to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one half-open probe.
    Probe,
    No,
}

impl Breaker {
    pub fn new(settings: Settings) -> Breaker {
        let bucket_ms = (u64::from(settings.window_ms) / BUCKETS as u64).max(1);
        Breaker {
            settings,
            bucket_ms,
            started: Instant::now(),
            state: AtomicU8::new(CLOSED),
            opened_at_ms: AtomicU64::new(0),
            buckets: std::sync::OnceLock::new(),
        }
    }

    fn buckets(&self) -> &[Bucket; BUCKETS] {
        self.buckets.get_or_init(|| {
            Box::new(std::array::from_fn(|_| Bucket {
                epoch: AtomicU64::new(0),
                total: AtomicU32::new(0),
                failed: AtomicU32::new(0),
            }))
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn state(&self) -> State {
        if self.settings.force_open {
            return State::ForcedOpen;
        }
        if !self.settings.enabled || self.settings.force_closed {
            return State::Disabled;
        }
        match self.state.load(Ordering::Acquire) {
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            _ => State::Closed,
        }
    }

    pub fn admit(&self) -> Admit {
        match self.state() {
            State::ForcedOpen => Admit::No,
            State::Disabled | State::Closed => Admit::Yes,
            State::HalfOpen => Admit::No,
            State::Open => {
                let opened = self.opened_at_ms.load(Ordering::Acquire);
                if self.now_ms().saturating_sub(opened) < u64::from(self.settings.sleep_window_ms) {
                    return Admit::No;
                }
                // Exactly one caller wins the probe.
                match self.state.compare_exchange(
                    OPEN,
                    HALF_OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Admit::Probe,
                    Err(_) => Admit::No,
                }
            }
        }
    }

    /// Records the outcome of an admitted request.
    pub fn record(&self, admit: Admit, failed: bool) {
        if matches!(self.state(), State::Disabled | State::ForcedOpen) {
            return;
        }
        let now = self.now_ms();
        if admit == Admit::Probe {
            if failed {
                self.opened_at_ms.store(now, Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
            } else {
                self.reset_counts();
                self.state.store(CLOSED, Ordering::Release);
            }
            return;
        }
        let epoch = now / self.bucket_ms;
        let bucket = &self.buckets()[(epoch % BUCKETS as u64) as usize];
        let seen = bucket.epoch.load(Ordering::Acquire);
        if seen != epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This caller moved the bucket into the new period; concurrent increments in
            // the instant between are lost, which only makes the breaker slightly lenient.
            bucket.total.store(0, Ordering::Release);
            bucket.failed.store(0, Ordering::Release);
        }
        bucket.total.fetch_add(1, Ordering::AcqRel);
        if failed {
            bucket.failed.fetch_add(1, Ordering::AcqRel);
            self.maybe_open(epoch, now);
        }
    }

    fn maybe_open(&self, epoch: u64, now: u64) {
        let (mut total, mut failed) = (0u64, 0u64);
        for b in self.buckets() {
            let e = b.epoch.load(Ordering::Acquire);
            if epoch.saturating_sub(e) < BUCKETS as u64 {
                total += u64::from(b.total.load(Ordering::Acquire));
                failed += u64::from(b.failed.load(Ordering::Acquire));
            }
        }
        if self.settings.trips(total, failed)
            && self
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.opened_at_ms.store(now, Ordering::Release);
        }
    }

    fn reset_counts(&self) {
        let Some(buckets) = self.buckets.get() else {
            return;
        };
        for b in buckets.iter() {
            b.total.store(0, Ordering::Release);
            b.failed.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(volume: u32, threshold: u32, sleep_ms: u32) -> Settings {
        Settings {
            request_volume: volume,
            error_threshold_percent: threshold,
            sleep_window_ms: sleep_ms,
            ..Settings::default()
        }
    }

    #[test]
    fn opens_at_volume_and_threshold() {
        let b = Breaker::new(settings(10, 50, 60_000));
        for _ in 0..9 {
            b.record(b.admit(), true);
        }
        assert_eq!(b.state(), State::Closed, "9 requests are below the volume");
        b.record(b.admit(), true);
        assert_eq!(b.state(), State::Open, "10 of 10 failed");
        assert_eq!(b.admit(), Admit::No);
        // Half of ten failing is within chance of a 50 % threshold; 20 of 25 is not
        // (12.5 + 3 × 2.5).
        let b = Breaker::new(settings(10, 50, 60_000));
        for i in 0..10 {
            b.record(b.admit(), i % 2 == 0);
        }
        assert_eq!(b.state(), State::Closed, "5 of 10 failed");
        for _ in 0..14 {
            b.record(b.admit(), true);
        }
        assert_eq!(b.state(), State::Closed, "19 of 24 failed");
        b.record(b.admit(), true);
        assert_eq!(b.state(), State::Open, "20 of 25 failed");
    }

    #[test]
    fn stays_closed_below_threshold() {
        let b = Breaker::new(settings(10, 50, 60_000));
        for i in 0..100 {
            b.record(b.admit(), i % 3 == 0);
        }
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let b = Breaker::new(settings(1, 1, 1));
        b.record(b.admit(), true);
        assert_eq!(b.state(), State::Open);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let probe = b.admit();
        assert_eq!(probe, Admit::Probe);
        assert_eq!(b.admit(), Admit::No, "only one probe at a time");
        b.record(probe, true);
        assert_eq!(b.state(), State::Open);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let probe = b.admit();
        assert_eq!(probe, Admit::Probe);
        b.record(probe, false);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(), Admit::Yes);
    }

    #[test]
    fn forced_and_disabled() {
        let mut s = settings(1, 1, 1);
        s.force_open = true;
        s.force_closed = true;
        let b = Breaker::new(s.clone());
        assert_eq!(
            (b.state(), b.admit()),
            (State::ForcedOpen, Admit::No),
            "force_open wins"
        );
        s.force_open = false;
        let b = Breaker::new(s.clone());
        for _ in 0..10 {
            b.record(b.admit(), true);
        }
        assert_eq!((b.state(), b.admit()), (State::Disabled, Admit::Yes));
        s.force_closed = false;
        s.enabled = false;
        let b = Breaker::new(s);
        b.record(b.admit(), true);
        assert_eq!(b.state(), State::Disabled);
    }
}
