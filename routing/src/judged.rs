//! The judged sample: what rollouts compare a version by. A sticky split keeps each user on
//! one version, so a heavy user's requests are not independent draws: one user who fails
//! more often than others, landing on the canary, would look like the canary's harm. The
//! proxies therefore judge at most one request per user (the sticky split's bucket), version
//! and second — the first that completes — and every request whose version no sticky split
//! chose. Its latencies are kept in coarse buckets (four to a doubling) so a proxy can count
//! them without a second histogram; the server counts the requests slower than a threshold
//! from them, the same way for both versions.
//!
//! Pure, like the rest of this crate: the proxy (which records), the server (which
//! aggregates and judges) and the simulations share these definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Latency buckets: bucket `k` holds latencies from `2^(k/4)` µs up to the next bucket's
/// start; the last one everything from about 71 minutes on.
pub const LATENCY_BUCKETS: usize = 128;

/// Where each bucket starts, worked out once.
static STARTS: std::sync::LazyLock<[u64; LATENCY_BUCKETS]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|k| 2f64.powf(k as f64 / 4.0).ceil() as u64));

/// The bucket of a latency in microseconds: the last bucket starting at or below it (seven
/// comparisons; the proxy asks once per judged request).
pub fn latency_bucket(us: u64) -> usize {
    STARTS
        .partition_point(|&start| start <= us)
        .saturating_sub(1)
}

/// The smallest latency (µs) of bucket `k`: `⌈2^(k/4)⌉`.
pub fn bucket_start(k: usize) -> u64 {
    STARTS[k.min(LATENCY_BUCKETS - 1)]
}

/// One version's judged sample over some interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    pub requests: u64,
    /// 5xx among them (including the proxy's 502/504 for a version it could not reach).
    pub errors: u64,
    /// Requests per latency bucket, trailing empty buckets left out.
    pub latency: Vec<u64>,
    /// Requests among them whose answer carried each of the service's declared events
    /// ([`crate::model::Event`]), by event name; events none carried are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, u64>,
    /// New visitors routed to the version — requests that carried none of the service's
    /// sticky keys, whose version was a fresh draw — however they ended (fallbacks too):
    /// what the sample-ratio guard compares with the split's weights.
    #[serde(default)]
    pub fresh: u64,
}

impl Judged {
    pub fn add(&mut self, o: &Judged) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.fresh += o.fresh;
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
        for (name, n) in &o.events {
            *self.events.entry(name.clone()).or_default() += n;
        }
    }

    /// Requests certainly slower than `threshold_us`: those in buckets that start above the
    /// threshold's own bucket (so the threshold in effect is that bucket's end, at most a
    /// fifth above it, for every version alike).
    pub fn slower_than(&self, threshold_us: u64) -> u64 {
        let from = latency_bucket(threshold_us) + 1;
        self.latency.iter().skip(from).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_quarter_powers_of_two() {
        assert_eq!((latency_bucket(0), latency_bucket(1)), (0, 0));
        assert_eq!(latency_bucket(2), 4);
        assert_eq!(latency_bucket(1024), 40);
        assert_eq!(latency_bucket(1023), 39);
        // Below about 20 µs neighbouring buckets can start at the same whole microsecond
        // (the latter holds it); from there on each starts where the one before ends.
        for k in 1..LATENCY_BUCKETS - 1 {
            let start = bucket_start(k);
            if k >= 20 {
                assert!(start > bucket_start(k - 1), "{k}");
            }
            if start < bucket_start(k + 1) {
                assert_eq!(latency_bucket(start), k, "{k}: {start}");
            }
            if start > bucket_start(k - 1) {
                assert!(latency_bucket(start - 1) < k, "{k}");
            }
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        // An hour fits below the last bucket.
        assert!(latency_bucket(3_600_000_000) < LATENCY_BUCKETS - 1);
    }

    #[test]
    fn slower_than_counts_whole_buckets_above_the_threshold() {
        let mut j = Judged::default();
        for (us, n) in [(900, 5), (1000, 3), (1100, 2), (5000, 1)] {
            let k = latency_bucket(us);
            if j.latency.len() <= k {
                j.latency.resize(k + 1, 0);
            }
            j.latency[k] += n;
        }
        // 1000 µs and 1100 µs share a bucket with the threshold 1050: not counted.
        assert_eq!(j.slower_than(1050), 1);
        assert_eq!(j.slower_than(800), 11);
        let mut sum = Judged::default();
        sum.add(&j);
        sum.add(&Judged {
            requests: 1,
            errors: 1,
            latency: vec![1],
            events: [("declined".to_string(), 1)].into(),
            fresh: 1,
        });
        sum.add(&Judged {
            events: [("declined".to_string(), 2), ("paid".to_string(), 1)].into(),
            ..Judged::default()
        });
        assert_eq!((sum.latency[0], sum.latency.iter().sum::<u64>()), (1, 12));
        assert_eq!(
            sum.events,
            [("declined".to_string(), 3), ("paid".to_string(), 1)].into()
        );
        assert_eq!(sum.fresh, 1);
    }
}
