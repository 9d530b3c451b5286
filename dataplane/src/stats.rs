//! Per-version request statistics, collected without contention on the hot path.
//!
//! Each version's counters are split into shards, one per worker thread (by a thread-local
//! index), each on its own cache lines. The reporter takes and resets every shard once per
//! interval and merges them into one delta. A shard's latency histogram (26 KiB) is made by
//! the first request it records: a version costs no histogram until it serves, and then one
//! per worker thread that served it, not one per shard. Mirrored copies a version receives
//! are counted in statistics of their own (`mirrored`), never with its live traffic.
//!
//! Answers the proxy makes itself instead of asking the version (the fallback, when the
//! breaker is open or the concurrency limit reached) are counted apart, in `fallbacks`: not
//! in the status classes and not in the latencies, which say what the version did. Rollouts
//! judge only that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Shards per version; a power of two above the usual worker count.
const SHARDS: usize = 16;

/// Latencies are recorded in microseconds, up to an hour, to two significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// What happened to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status the client received.
    pub status: u16,
    /// The upstream failed (connect error, reset, timeout).
    pub upstream_error: bool,
    /// The fallback answered instead of the upstream: counted in `fallbacks` alone.
    pub fallback: bool,
    /// A gRPC call ended with a non-zero `grpc-status`: counted as a 5xx whatever `status`
    /// carried it, and in `grpc_errors`.
    pub grpc_error: bool,
}

impl Outcome {
    /// An answer with `status`, nothing else to say.
    pub fn status(status: u16) -> Outcome {
        Outcome {
            status,
            upstream_error: false,
            fallback: false,
            grpc_error: false,
        }
    }
}

/// Counter indices.
const C1XX: usize = 0;
const UPSTREAM_ERRORS: usize = 5;
const FALLBACKS: usize = 6;
const GRPC_ERRORS: usize = 7;
const COUNTERS: usize = 8;

#[repr(align(128))]
#[derive(Debug)]
struct Shard {
    counters: [AtomicU64; COUNTERS],
    /// Made by the shard's first recorded request.
    latency: Mutex<Option<Histogram<u64>>>,
}

/// The statistics of one (service, version) on this proxy.
#[derive(Debug)]
pub struct VersionStats {
    pub service: String,
    pub version: String,
    /// These count the mirrored copies the version receives, not its live traffic.
    pub mirrored: bool,
    shards: Box<[Shard]>,
}

/// What one interval saw.
#[derive(Clone, Debug)]
pub struct Delta {
    /// Answers of the version by status class, 1xx..5xx (the proxy's 502/504 when it could
    /// not reach the version or the version did not answer in time included).
    pub status: [u64; 5],
    pub upstream_errors: u64,
    /// Requests the proxy answered itself with the fallback, without asking the version.
    pub fallbacks: u64,
    pub grpc_errors: u64,
    pub latency: Histogram<u64>,
}

impl Delta {
    /// Every request routed to the version: its answers and the fallbacks.
    pub fn requests(&self) -> u64 {
        self.answered() + self.fallbacks
    }

    /// Requests the version answered (or failed to).
    pub fn answered(&self) -> u64 {
        self.status.iter().sum()
    }
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl VersionStats {
    pub fn new(service: &str, version: &str, mirrored: bool) -> VersionStats {
        VersionStats {
            service: service.to_string(),
            version: version.to_string(),
            mirrored,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    counters: std::array::from_fn(|_| AtomicU64::new(0)),
                    latency: Mutex::new(None),
                })
                .collect(),
        }
    }

    pub fn record(&self, outcome: Outcome, latency_us: u64) {
        let shard = &self.shards[shard_index()];
        if outcome.fallback {
            // Not the version's answer: neither its status nor its latency.
            shard.counters[FALLBACKS].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let class = if outcome.grpc_error {
            shard.counters[GRPC_ERRORS].fetch_add(1, Ordering::Relaxed);
            4
        } else {
            usize::from((outcome.status / 100).clamp(1, 5)) - 1
        };
        shard.counters[C1XX + class].fetch_add(1, Ordering::Relaxed);
        if outcome.upstream_error {
            shard.counters[UPSTREAM_ERRORS].fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut h) = shard.latency.lock() {
            h.get_or_insert_with(new_histogram)
                .saturating_record(latency_us.max(1));
        }
    }

    /// Takes everything counted since the last call.
    pub fn take(&self) -> Delta {
        let mut delta = Delta {
            status: [0; 5],
            upstream_errors: 0,
            fallbacks: 0,
            grpc_errors: 0,
            latency: new_histogram(),
        };
        for shard in self.shards.iter() {
            for (i, slot) in delta.status.iter_mut().enumerate() {
                *slot += shard.counters[C1XX + i].swap(0, Ordering::Relaxed);
            }
            delta.upstream_errors += shard.counters[UPSTREAM_ERRORS].swap(0, Ordering::Relaxed);
            delta.fallbacks += shard.counters[FALLBACKS].swap(0, Ordering::Relaxed);
            delta.grpc_errors += shard.counters[GRPC_ERRORS].swap(0, Ordering::Relaxed);
            // Most shards of most versions saw nothing: a histogram's reset clears every one
            // of its thousands of buckets, so only a used one is merged and cleared.
            if let Ok(mut slot) = shard.latency.lock()
                && let Some(h) = slot.as_mut()
                && !h.is_empty()
            {
                let _ = delta.latency.add(&*h);
                h.reset();
            }
        }
        delta
    }
}

/// Every version's statistics by (service, version, mirrored), kept across config changes so
/// a swap never loses counts.
#[derive(Debug, Default)]
pub struct Registry {
    map: Mutex<HashMap<(String, String, bool), Arc<VersionStats>>>,
}

impl Registry {
    /// The statistics of (service, version)'s live traffic, created on first use.
    pub fn get(&self, service: &str, version: &str) -> Arc<VersionStats> {
        self.get_as(service, version, false)
    }

    /// The statistics of the mirrored copies (service, version) receives.
    pub fn mirrored(&self, service: &str, version: &str) -> Arc<VersionStats> {
        self.get_as(service, version, true)
    }

    fn get_as(&self, service: &str, version: &str, mirrored: bool) -> Arc<VersionStats> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((service.to_string(), version.to_string(), mirrored))
            .or_insert_with(|| Arc::new(VersionStats::new(service, version, mirrored)))
            .clone()
    }

    /// Every version's statistics, for one reporting pass. Versions no routing state refers
    /// to any more leave the registry here (so nothing can count into them afterwards) and are
    /// returned one last time, so their final counts are reported too.
    pub fn for_report(&self) -> Vec<Arc<VersionStats>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<_> = map.values().cloned().collect();
        // Referenced by the map and by `all` only: no runtime uses it.
        map.retain(|_, stats| Arc::strong_count(stats) > 2);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_across_threads_and_resets() {
        let stats = Arc::new(VersionStats::new("shop", "v1", false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        let status = if i % 10 == 0 { 503 } else { 200 };
                        stats.record(
                            Outcome {
                                status,
                                upstream_error: status == 503 && t == 0,
                                fallback: false,
                                grpc_error: false,
                            },
                            100 + i,
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let d = stats.take();
        assert_eq!(d.status, [0, 3600, 0, 0, 400]);
        assert_eq!(
            (d.requests(), d.upstream_errors, d.fallbacks),
            (4000, 100, 0)
        );
        assert_eq!(d.latency.len(), 4000);
        assert!(d.latency.value_at_quantile(0.5) >= 500);
        assert_eq!(stats.take().requests(), 0);
    }

    #[test]
    fn a_histogram_is_made_only_for_a_shard_that_records() {
        let made = |stats: &VersionStats| {
            stats
                .shards
                .iter()
                .filter(|s| s.latency.lock().unwrap().is_some())
                .count()
        };
        let stats = VersionStats::new("shop", "v1", false);
        assert_eq!(made(&stats), 0);
        assert_eq!(stats.take().latency.len(), 0);
        stats.record(Outcome::status(200), 10);
        stats.record(Outcome::status(200), 20);
        assert_eq!(made(&stats), 1);
        assert_eq!(stats.take().latency.len(), 2);
        // Kept, emptied, for the next interval.
        assert_eq!(made(&stats), 1);
        assert_eq!(stats.take().latency.len(), 0);
    }

    #[test]
    fn fallbacks_are_counted_apart_from_the_versions_answers() {
        let stats = VersionStats::new("shop", "v2", false);
        stats.record(Outcome::status(500), 40_000);
        for status in [503, 204] {
            stats.record(
                Outcome {
                    fallback: true,
                    ..Outcome::status(status)
                },
                5,
            );
        }
        let d = stats.take();
        assert_eq!(d.status, [0, 0, 0, 0, 1], "the version answered one");
        assert_eq!((d.fallbacks, d.answered(), d.requests()), (2, 1, 3));
        assert_eq!(d.latency.len(), 1, "only the version's latency");
    }

    #[test]
    fn a_grpc_error_is_a_5xx_whatever_status_carried_it() {
        let stats = VersionStats::new("shop", "v1", false);
        stats.record(Outcome::status(200), 10);
        stats.record(
            Outcome {
                grpc_error: true,
                ..Outcome::status(200)
            },
            10,
        );
        let d = stats.take();
        assert_eq!((d.status, d.grpc_errors), ([0, 1, 0, 0, 1], 1));
    }

    #[test]
    fn mirrored_copies_are_counted_apart() {
        let registry = Registry::default();
        let live = registry.get("shop", "v2");
        let mirrored = registry.mirrored("shop", "v2");
        assert!(!Arc::ptr_eq(&live, &mirrored));
        assert!(mirrored.mirrored && !live.mirrored);
        mirrored.record(Outcome::status(200), 5);
        assert_eq!(live.take().requests(), 0);
        assert_eq!(mirrored.take().requests(), 1);
        assert!(Arc::ptr_eq(&registry.mirrored("shop", "v2"), &mirrored));
    }
}
