//! Per-version request statistics, collected without contention on the hot path.
//!
//! Each version's counters are split into shards, one per worker thread (by a thread-local
//! index), each on its own cache lines. The reporter takes and resets every shard once per
//! interval and merges them into one delta. The shards (2 KiB) and the judged users' bitmap
//! (1.7 KiB) are made by the version's first request, and a shard's latency histogram (26
//! KiB) by the first request it records: a version that serves nothing — most of a large
//! catalog on any one proxy — costs a few hundred bytes, and its interval's delta makes no
//! histogram either. Mirrored copies a version receives
//! are counted in statistics of their own (`mirrored`), never with its live traffic.
//!
//! Answers the proxy makes itself instead of asking the version (the fallback, when the
//! breaker is open or the concurrency limit reached) are counted apart, in `fallbacks`: not
//! in the status classes and not in the latencies, which say what the version did. Rollouts
//! judge only that.
//!
//! Application events the service declares ([`events`]) are counted per version too, in all
//! answers and in the judged sample, in counters a shard makes for its first event.
//!
//! Rollouts judge the *judged sample* ([`grayline_routing::judged`]): at most one request per
//! user (the sticky split's bucket) and second — the first *routed*, so the choice does not
//! depend on how it ends; found in a bitmap of the version's 10 000 buckets tagged with the
//! second, one compare-and-swap per request ([`VersionStats::judge`]) — and every request no
//! sticky split chose. Its counts ride in the shard's counters, its latencies in coarse
//! buckets beside the shard's histogram, under the same lock.

mod events;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use grayline_routing::judged::{Judged, LATENCY_BUCKETS, latency_bucket};
use hdrhistogram::Histogram;

pub use events::{EventSet, Events};

/// Shards per version; a power of two above the usual worker count.
const SHARDS: usize = 16;

/// Latencies are recorded in microseconds, up to an hour, to two significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// The user a request came from, as the sticky split saw them, and the second it started in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    /// The sticky key's bucket, 0..10000.
    pub bucket: u16,
    /// See [`second_of`].
    pub second: u64,
}

/// Seconds since the process's statistics began, for a request that started at `started`.
pub fn second_of(started: Instant) -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    started.saturating_duration_since(*EPOCH).as_secs()
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
    /// The request is in the judged sample ([`VersionStats::judge`] said so when it was
    /// routed).
    pub judged: bool,
    /// The declared events the version's answer carried ([`Events::of`]).
    pub events: EventSet,
}

impl Outcome {
    /// The same outcome, in the judged sample or not.
    pub fn judged(self, judged: bool) -> Outcome {
        Outcome { judged, ..self }
    }

    /// An answer with `status`, nothing else to say.
    pub fn status(status: u16) -> Outcome {
        Outcome {
            status,
            upstream_error: false,
            fallback: false,
            grpc_error: false,
            judged: true,
            events: 0,
        }
    }
}

/// Counter indices.
const C1XX: usize = 0;
const UPSTREAM_ERRORS: usize = 5;
const FALLBACKS: usize = 6;
const GRPC_ERRORS: usize = 7;
const JUDGED: usize = 8;
const JUDGED_ERRORS: usize = 9;
const FRESH: usize = 10;
const COUNTERS: usize = 11;

/// A shard's latencies: every answer's, and the judged sample's in coarse buckets.
#[derive(Debug)]
struct Latencies {
    all: Histogram<u64>,
    judged: Box<[u32; LATENCY_BUCKETS]>,
}

#[repr(align(128))]
#[derive(Debug)]
struct Shard {
    counters: [AtomicU64; COUNTERS],
    /// Per event slot: answers that carried it, then judged ones. Made by the shard's first
    /// event.
    events: OnceLock<Box<[AtomicU64]>>,
    /// Made by the shard's first recorded request.
    latency: Mutex<Option<Latencies>>,
}

/// How much older than a word's second a request may be and still be judged beside it (a
/// request's second is the one it was routed in; none is routed this late).
const LATE_SECONDS: u64 = 3600;

/// Users per bitmap word; the top 16 bits hold the second the word's bits are of.
const USERS_PER_WORD: u64 = 48;
const USER_BITS: u64 = (1 << USERS_PER_WORD) - 1;

/// Which users (sticky buckets) a version has judged in the current second: 10 000 bits in
/// words of 48, each word tagged with its second and started afresh by the first request of
/// a newer one — no clearing pass, no lock.
#[derive(Debug)]
struct UserSeconds {
    /// Made by the first sticky request.
    words: OnceLock<Box<[AtomicU64]>>,
}

impl UserSeconds {
    fn new() -> UserSeconds {
        UserSeconds {
            words: OnceLock::new(),
        }
    }

    fn words(&self) -> &[AtomicU64] {
        self.words.get_or_init(|| {
            let words = 10_000u64.div_ceil(USERS_PER_WORD) as usize;
            (0..words).map(|_| AtomicU64::new(0)).collect()
        })
    }

    /// Whether this is the user's first request of its second (it is now marked). A request
    /// of a second up to [`LATE_SECONDS`] older than the word's is judged without touching
    /// it: rare, and counting it is the harmless side. A word older than that (or idle for
    /// hours, whatever its 16-bit tag says) starts afresh.
    fn first(&self, user: User) -> bool {
        let b = u64::from(user.bucket) % 10_000;
        let word = &self.words()[(b / USERS_PER_WORD) as usize];
        let bit = 1u64 << (b % USERS_PER_WORD);
        let tag = (user.second & 0xFFFF) << USERS_PER_WORD;
        let mut current = word.load(Ordering::Relaxed);
        loop {
            let word_tag = current & !USER_BITS;
            let next = if word_tag == tag {
                if current & bit != 0 {
                    return false;
                }
                current | bit
            } else {
                // Seconds the word is ahead, modulo the tag's 16 bits: a word a little newer
                // is left alone; one further "ahead" is really hours old.
                let ahead =
                    (word_tag >> USERS_PER_WORD).wrapping_sub(user.second & 0xFFFF) & 0xFFFF;
                if ahead != 0 && ahead <= LATE_SECONDS {
                    return true;
                }
                tag | bit
            };
            match word.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

/// The statistics of one (service, version) on this proxy.
#[derive(Debug)]
pub struct VersionStats {
    /// `service NUL version NUL l|m`: what the registry finds it by (see [`stats_key`]),
    /// one allocation for the names.
    key: Box<str>,
    /// These count the mirrored copies the version receives, not its live traffic.
    pub mirrored: bool,
    /// Made by the first request.
    shards: OnceLock<Box<[Shard]>>,
    users: UserSeconds,
    /// The event name of each slot, in the order they were first declared.
    event_names: Mutex<Vec<Box<str>>>,
}

/// One event's counts in an interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTally {
    pub name: String,
    /// Answers that carried it.
    pub count: u64,
    /// Of those, answers in the judged sample.
    pub judged: u64,
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
    /// `None` when nothing was recorded (no histogram is made for an idle version).
    pub latency: Option<Histogram<u64>>,
    /// What rollouts judge (empty for mirrored copies).
    pub judged: Judged,
    /// Declared events the answers carried, by name; none for events no answer carried.
    /// The judged sample's are here too (`judged`), not in `judged.events`: the report
    /// sends them once, and the server builds its judged sample from it.
    pub events: Vec<EventTally>,
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

    /// Latencies recorded.
    pub fn latencies(&self) -> u64 {
        self.latency.as_ref().map_or(0, Histogram::len)
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
            key: stats_key(service, version, mirrored).into_boxed_str(),
            mirrored,
            shards: OnceLock::new(),
            users: UserSeconds::new(),
            event_names: Mutex::new(Vec::new()),
        }
    }

    /// The slot `name`'s counts are kept in, given on first use; `None` once every one of
    /// the [`events::SLOTS`] is taken by another name.
    pub fn event_slot(&self, name: &str) -> Option<u8> {
        let mut names = self.event_names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = names.iter().position(|n| **n == *name) {
            return Some(i as u8);
        }
        (names.len() < events::SLOTS).then(|| {
            names.push(name.into());
            (names.len() - 1) as u8
        })
    }

    pub fn service(&self) -> &str {
        self.key.split('\0').next().unwrap_or_default()
    }

    pub fn version(&self) -> &str {
        self.key.split('\0').nth(1).unwrap_or_default()
    }

    fn shards(&self) -> &[Shard] {
        self.shards.get_or_init(|| {
            (0..SHARDS)
                .map(|_| Shard {
                    counters: std::array::from_fn(|_| AtomicU64::new(0)),
                    events: OnceLock::new(),
                    latency: Mutex::new(None),
                })
                .collect()
        })
    }

    /// Counts a new visitor routed to the version: one that carried none of the service's
    /// sticky keys, so where it went was a fresh draw (the sample-ratio guard's unit).
    pub fn arrived_fresh(&self) {
        let shard = &self.shards()[shard_index()];
        shard.counters[FRESH].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a request of `user` (`None`: no sticky split chose the version) routed now is
    /// in the judged sample: every request without a user, a user's first of each second.
    pub fn judge(&self, user: Option<User>) -> bool {
        !self.mirrored && user.is_none_or(|u| self.users.first(u))
    }

    pub fn record(&self, outcome: Outcome, latency_us: u64) {
        let shard = &self.shards()[shard_index()];
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
        let judged = !self.mirrored && outcome.judged;
        if judged {
            shard.counters[JUDGED].fetch_add(1, Ordering::Relaxed);
            if class == 4 {
                shard.counters[JUDGED_ERRORS].fetch_add(1, Ordering::Relaxed);
            }
        }
        if outcome.events != 0 {
            let counters = shard
                .events
                .get_or_init(|| (0..2 * events::SLOTS).map(|_| AtomicU64::new(0)).collect());
            let mut set = outcome.events;
            while set != 0 {
                let slot = set.trailing_zeros() as usize;
                set &= set - 1;
                counters[slot].fetch_add(1, Ordering::Relaxed);
                if judged {
                    counters[events::SLOTS + slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Ok(mut slot) = shard.latency.lock() {
            let l = slot.get_or_insert_with(|| Latencies {
                all: new_histogram(),
                judged: Box::new([0; LATENCY_BUCKETS]),
            });
            l.all.saturating_record(latency_us.max(1));
            if judged {
                let b = &mut l.judged[latency_bucket(latency_us)];
                *b = b.saturating_add(1);
            }
        }
    }

    /// Takes everything counted since the last call.
    pub fn take(&self) -> Delta {
        let mut delta = Delta {
            status: [0; 5],
            upstream_errors: 0,
            fallbacks: 0,
            grpc_errors: 0,
            latency: None,
            judged: Judged::default(),
            events: Vec::new(),
        };
        let Some(shards) = self.shards.get() else {
            return delta;
        };
        let mut judged_latency = [0u64; LATENCY_BUCKETS];
        let mut event_counts = [0u64; 2 * events::SLOTS];
        for shard in shards.iter() {
            for (i, slot) in delta.status.iter_mut().enumerate() {
                *slot += shard.counters[C1XX + i].swap(0, Ordering::Relaxed);
            }
            delta.upstream_errors += shard.counters[UPSTREAM_ERRORS].swap(0, Ordering::Relaxed);
            delta.fallbacks += shard.counters[FALLBACKS].swap(0, Ordering::Relaxed);
            delta.grpc_errors += shard.counters[GRPC_ERRORS].swap(0, Ordering::Relaxed);
            delta.judged.requests += shard.counters[JUDGED].swap(0, Ordering::Relaxed);
            delta.judged.errors += shard.counters[JUDGED_ERRORS].swap(0, Ordering::Relaxed);
            delta.judged.fresh += shard.counters[FRESH].swap(0, Ordering::Relaxed);
            for (sum, n) in event_counts
                .iter_mut()
                .zip(shard.events.get().into_iter().flatten())
            {
                *sum += n.swap(0, Ordering::Relaxed);
            }
            // Most shards of most versions saw nothing: a histogram's reset clears every one
            // of its thousands of buckets, so only a used one is merged and cleared.
            if let Ok(mut slot) = shard.latency.lock()
                && let Some(l) = slot.as_mut()
                && !l.all.is_empty()
            {
                let _ = delta.latency.get_or_insert_with(new_histogram).add(&l.all);
                l.all.reset();
                for (sum, n) in judged_latency.iter_mut().zip(l.judged.iter_mut()) {
                    *sum += u64::from(std::mem::take(n));
                }
            }
        }
        let used = judged_latency
            .iter()
            .rposition(|n| *n > 0)
            .map_or(0, |i| i + 1);
        delta.judged.latency = judged_latency[..used].to_vec();
        if event_counts.iter().any(|&n| n > 0) {
            let names = self.event_names.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, name) in names.iter().enumerate() {
                let (count, judged) = (event_counts[slot], event_counts[events::SLOTS + slot]);
                if count == 0 {
                    continue;
                }
                delta.events.push(EventTally {
                    name: name.to_string(),
                    count,
                    judged,
                });
            }
            delta.events.sort_by(|a, b| a.name.cmp(&b.name));
        }
        delta
    }
}

/// A version's statistics' key. Service and version names hold no NUL (they are checked
/// names), so the key names one (service, version, live or mirrored) only.
fn stats_key(service: &str, version: &str, mirrored: bool) -> String {
    let kind = if mirrored { "m" } else { "l" };
    [service, version, kind].join("\0")
}

/// A registry entry, found by its statistics' own key: no copy of the names per entry.
#[derive(Debug)]
struct Entry(Arc<VersionStats>);

impl std::borrow::Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.key
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a lookup by `&str` finds it.
        self.0.key.as_ref().hash(state);
    }
}

/// Every version's statistics by (service, version, mirrored), kept across config changes so
/// a swap never loses counts.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashSet<Entry>>,
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
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = stats_key(service, version, mirrored);
        if let Some(Entry(stats)) = entries.get(key.as_str()) {
            return stats.clone();
        }
        let stats = Arc::new(VersionStats::new(service, version, mirrored));
        entries.insert(Entry(stats.clone()));
        stats
    }

    /// Every version's statistics, for one reporting pass. Versions no routing state refers
    /// to any more leave the registry here (so nothing can count into them afterwards) and are
    /// returned one last time, so their final counts are reported too.
    pub fn for_report(&self) -> Vec<Arc<VersionStats>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<_> = entries.iter().map(|Entry(stats)| stats.clone()).collect();
        // Referenced by the registry and by `all` only: no runtime uses it.
        entries.retain(|Entry(stats)| Arc::strong_count(stats) > 2);
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
                                ..Outcome::status(status)
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
        assert_eq!(d.latencies(), 4000);
        assert!(d.latency.unwrap().value_at_quantile(0.5) >= 500);
        assert_eq!(stats.take().requests(), 0);
    }

    #[test]
    fn a_histogram_is_made_only_for_a_shard_that_records() {
        let made = |stats: &VersionStats| {
            stats.shards.get().map_or(0, |shards| {
                shards
                    .iter()
                    .filter(|s| s.latency.lock().unwrap().is_some())
                    .count()
            })
        };
        let stats = VersionStats::new("shop", "v1", false);
        assert_eq!(made(&stats), 0);
        let idle = stats.take();
        assert!(idle.latency.is_none() && stats.shards.get().is_none());
        assert!(stats.users.words.get().is_none());
        assert!(
            stats.judge(None),
            "a request no sticky split chose is judged"
        );
        assert!(stats.users.words.get().is_none());
        stats.record(Outcome::status(200), 10);
        stats.record(Outcome::status(200), 20);
        assert_eq!(made(&stats), 1);
        assert_eq!(stats.take().latencies(), 2);
        // Kept, emptied, for the next interval; its delta makes no histogram.
        assert_eq!(made(&stats), 1);
        assert!(stats.take().latency.is_none());
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
        assert_eq!(d.latencies(), 1, "only the version's latency");
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
    fn a_user_is_judged_once_a_second_and_everyone_else_always() {
        let stats = VersionStats::new("shop", "v2", false);
        let user = |bucket, second| {
            let judged = stats.judge(Some(User { bucket, second }));
            Outcome::status(500).judged(judged)
        };
        // A heavy user: five failed requests in one second, one judged.
        for _ in 0..5 {
            stats.record(user(7, 100), 30_000);
        }
        // Another user in the same word, one at the end of the range, and requests no sticky
        // split chose.
        stats.record(user(8, 100), 1_000);
        stats.record(user(9_999, 100), 1_000);
        stats.record(Outcome::status(200), 1_000);
        stats.record(Outcome::status(200), 1_000);
        // The heavy user in the next second is judged again; a late request of the second
        // before is judged rather than resetting the newer word.
        stats.record(user(7, 101), 30_000);
        stats.record(user(7, 101), 30_000);
        stats.record(user(8, 100), 1_000);
        let d = stats.take();
        assert_eq!(d.answered(), 12);
        assert_eq!((d.judged.requests, d.judged.errors), (7, 5));
        assert_eq!(d.judged.latency.iter().sum::<u64>(), 7);
        assert_eq!(
            d.judged.slower_than(10_000),
            2,
            "the heavy user, once a second"
        );
        // A word idle for hours, whose 16-bit tag happens to read as "ahead", starts afresh.
        let later = |second| User { bucket: 7, second };
        assert!(stats.judge(Some(later(101 + 40_000))));
        assert!(!stats.judge(Some(later(101 + 40_000))));
        // A request routed a little before the word's second is judged, the word untouched.
        assert!(stats.judge(Some(later(101 + 40_000 - 5))));
        assert!(!stats.judge(Some(later(101 + 40_000))));
        // A mirrored version's copies are never judged.
        let copies = VersionStats::new("shop", "v2", true);
        assert!(!copies.judge(None));
        copies.record(Outcome::status(200).judged(false), 5);
        assert_eq!(copies.take().judged, Judged::default());
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
        assert_eq!((live.service(), live.version()), ("shop", "v2"));
        // Names that run into each other's place name other versions.
        assert!(!Arc::ptr_eq(
            &registry.get("shop", "v2"),
            &registry.get("shopv", "2")
        ));
    }
}
