//! Passive outlier detection: each endpoint's failures in a row, and which endpoints are
//! ejected (sent nothing) until when. Lock-free; the request path pays one relaxed load per
//! pick while no endpoint is out.
//!
//! An endpoint whose requests fail `consecutive_failures` times in a row is ejected for
//! `base_ejection_ms` × the number of times it was ejected lately (at most
//! `max_ejection_ms`), unless that would put more than `max_ejection_percent` % of the
//! version's endpoints out. It returns on its own when the time is up, on probation: one more
//! failure ejects it again at once. The count behind the growing ejection time forgets one
//! ejection per `base_ejection_ms` spent back in service.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grayline_routing::model::OutlierDetection as Settings;
use serde::Serialize;

/// Milliseconds on the process's monotonic clock; never 0, so 0 can mean "not ejected".
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One endpoint's health.
#[derive(Debug, Default)]
struct Health {
    failures: AtomicU32,
    /// `now_ms()` when the ejection ends; 0 while in service.
    ejected_until: AtomicU64,
    /// Ejections counted for the next ejection's length.
    recent: AtomicU32,
    /// When it last came back, for forgetting `recent`.
    returned_at: AtomicU64,
    /// Every ejection since the version was configured (for metrics).
    total: AtomicU64,
}

/// The outlier state of one version's endpoints.
#[derive(Debug)]
pub struct Outliers {
    settings: Settings,
    health: Box<[Health]>,
    /// Endpoints ejected now (those whose time is up but who were not yet seen back count
    /// until they are).
    ejected: AtomicU32,
    /// How many may be out at once.
    allowed: u32,
}

/// One endpoint as `/config` and the server see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointHealth {
    pub index: usize,
    pub ejected: bool,
    /// How much longer it stays out, when ejected.
    pub ejected_for_ms: u64,
    pub consecutive_failures: u32,
    pub ejections: u64,
    /// Active health checks keep it out (filled in by the routing state).
    pub unhealthy: bool,
}

impl Outliers {
    pub fn new(settings: Settings, endpoints: usize) -> Outliers {
        let allowed = if settings.enabled {
            (endpoints as u64 * u64::from(settings.max_ejection_percent) / 100) as u32
        } else {
            0
        };
        Outliers {
            settings,
            health: (0..endpoints).map(|_| Health::default()).collect(),
            ejected: AtomicU32::new(0),
            allowed,
        }
    }

    /// The outlier state for a new list of endpoints, each that was in `old`'s list (at
    /// `from[i]`) keeping its failures, ejection and history: an instance list that changes
    /// does not let an ejected endpoint back early.
    pub fn carried(settings: Settings, from: &[Option<usize>], old: &Outliers) -> Outliers {
        let o = Outliers::new(settings, from.len());
        let mut ejected = 0;
        for (h, f) in o.health.iter().zip(from) {
            let Some(src) = f.and_then(|j| old.health.get(j)) else {
                continue;
            };
            let copy = |to: &AtomicU64, from: &AtomicU64| {
                to.store(from.load(Ordering::Acquire), Ordering::Release)
            };
            h.failures
                .store(src.failures.load(Ordering::Acquire), Ordering::Release);
            h.recent
                .store(src.recent.load(Ordering::Acquire), Ordering::Release);
            copy(&h.ejected_until, &src.ejected_until);
            copy(&h.returned_at, &src.returned_at);
            copy(&h.total, &src.total);
            if h.ejected_until.load(Ordering::Acquire) != 0 {
                ejected += 1;
            }
        }
        o.ejected.store(ejected, Ordering::Release);
        o
    }

    /// Whether any endpoint may be out: when not, picking needs no clock.
    #[inline]
    pub fn any_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed) > 0
    }

    /// Whether endpoint `i` may take requests at `now`; brings it back when its time is up.
    pub fn available(&self, i: usize, now: u64) -> bool {
        let h = &self.health[i];
        let until = h.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        if h.ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // On probation: the next failure ejects it again.
            h.failures.store(
                self.settings.consecutive_failures.saturating_sub(1),
                Ordering::Release,
            );
            h.returned_at.store(now, Ordering::Release);
            self.ejected.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// Records one try's outcome on endpoint `i`. Returns whether this ejected it.
    #[inline]
    pub fn record(&self, i: usize, failed: bool) -> bool {
        let h = &self.health[i];
        if !failed {
            // Only write when there is something to reset: keeps the line shared.
            if h.failures.load(Ordering::Relaxed) != 0 {
                h.failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let failures = h.failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures >= self.settings.consecutive_failures && self.eject(i, now_ms())
    }

    fn eject(&self, i: usize, now: u64) -> bool {
        if self.allowed == 0 {
            return false;
        }
        let h = &self.health[i];
        // Take a slot under the cap first; concurrent failures race for it.
        if self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.allowed).then_some(n + 1)
            })
            .is_err()
        {
            return false;
        }
        // Forget one ejection per base period spent back in service.
        let base = u64::from(self.settings.base_ejection_ms);
        let back_for = now.saturating_sub(h.returned_at.load(Ordering::Acquire));
        let forgotten = (back_for / base.max(1)).min(u64::from(u32::MAX)) as u32;
        let recent = h.recent.load(Ordering::Acquire).saturating_sub(forgotten) + 1;
        let length = (base * u64::from(recent)).min(u64::from(self.settings.max_ejection_ms));
        if h.ejected_until
            .compare_exchange(0, now + length, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Someone else ejected it meanwhile.
            self.ejected.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        h.recent.store(recent, Ordering::Release);
        h.failures.store(0, Ordering::Release);
        h.total.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Every endpoint's state at `now`, without changing any.
    pub fn snapshot(&self, now: u64) -> Vec<EndpointHealth> {
        self.health
            .iter()
            .enumerate()
            .map(|(index, h)| {
                let until = h.ejected_until.load(Ordering::Acquire);
                let ejected = until > now;
                EndpointHealth {
                    index,
                    ejected,
                    ejected_for_ms: if ejected { until - now } else { 0 },
                    consecutive_failures: h.failures.load(Ordering::Relaxed),
                    ejections: h.total.load(Ordering::Relaxed),
                    unhealthy: false,
                }
            })
            .collect()
    }
}

/// The wall-clock time `remaining` from now, in Unix milliseconds.
pub fn unix_ms_in(remaining: Duration) -> i64 {
    (SystemTime::now() + remaining)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(failures: u32, base_ms: u32, max_ms: u32, percent: u32) -> Settings {
        Settings {
            enabled: true,
            consecutive_failures: failures,
            base_ejection_ms: base_ms,
            max_ejection_ms: max_ms,
            max_ejection_percent: percent,
        }
    }

    fn fail(o: &Outliers, i: usize, times: u32) -> bool {
        (0..times).fold(false, |ejected, _| o.record(i, true) || ejected)
    }

    #[test]
    fn failures_in_a_row_eject_and_a_success_resets_the_count() {
        let o = Outliers::new(settings(3, 60_000, 60_000, 50), 2);
        assert!(!fail(&o, 0, 2));
        o.record(0, false);
        assert!(!fail(&o, 0, 2), "the success started the count again");
        assert!(o.available(0, now_ms()));
        assert!(fail(&o, 0, 1), "the third failure in a row ejects");
        assert!(o.any_ejected());
        assert!(!o.available(0, now_ms()));
        assert!(o.available(1, now_ms()));
        let snap = o.snapshot(now_ms());
        assert!(
            snap[0].ejected && snap[0].ejected_for_ms > 59_000,
            "{snap:?}"
        );
        assert_eq!(snap[0].ejections, 1);
        assert!(!snap[1].ejected);
    }

    #[test]
    fn never_more_than_the_allowed_share() {
        let o = Outliers::new(settings(1, 60_000, 60_000, 50), 2);
        assert!(fail(&o, 0, 1));
        assert!(!fail(&o, 1, 5), "one of two is the most 50 % allows");
        assert!(o.available(1, now_ms()));
        let single = Outliers::new(settings(1, 60_000, 60_000, 100), 1);
        assert!(fail(&single, 0, 1), "100 % may eject a lone endpoint");
        let lone = Outliers::new(settings(1, 60_000, 60_000, 50), 1);
        assert!(!fail(&lone, 0, 10), "50 % of one endpoint is none");
        let mut off = settings(1, 60_000, 60_000, 100);
        off.enabled = false;
        assert!(!fail(&Outliers::new(off, 4), 0, 10));
        let four = Outliers::new(settings(1, 60_000, 60_000, 50), 4);
        let ejected = (0..4).filter(|&i| fail(&four, i, 1)).count();
        assert_eq!(ejected, 2);
    }

    #[test]
    fn an_ejected_endpoint_returns_on_probation_and_stays_out_longer_next_time() {
        let o = Outliers::new(settings(3, 1_000, 2_500, 50), 2);
        assert!(fail(&o, 0, 3));
        let t = now_ms();
        assert!(!o.available(0, t + 500));
        assert!(
            o.available(0, t + 1_001),
            "back after the base ejection time"
        );
        assert!(!o.any_ejected());
        // One failure on probation ejects again, now for twice as long.
        assert!(fail(&o, 0, 1));
        let snap = o.snapshot(now_ms());
        assert!(
            snap[0].ejected_for_ms > 1_500 && snap[0].ejected_for_ms <= 2_000,
            "{snap:?}"
        );
        // The third time is capped at max_ejection_ms.
        let t = now_ms();
        assert!(o.available(0, t + 2_001));
        assert!(fail(&o, 0, 1));
        let left = o.snapshot(now_ms())[0].ejected_for_ms;
        assert!(left > 2_000 && left <= 2_500, "{left}");
        assert_eq!(o.snapshot(now_ms())[0].ejections, 3);
    }

    #[test]
    fn concurrent_failures_eject_once() {
        let o = std::sync::Arc::new(Outliers::new(settings(5, 60_000, 60_000, 50), 2));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let o = o.clone();
                std::thread::spawn(move || (0..100).filter(|_| o.record(0, true)).count())
            })
            .collect();
        let ejections: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ejections, 1);
        assert_eq!(o.ejected.load(Ordering::Relaxed), 1);
    }
}
