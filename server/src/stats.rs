//! Statistics the proxies report, aggregated into per-second time series: one per version
//! (all proxies together), kept for an hour, and one per (version, proxy), kept in memory for
//! [`PROXY_RETENTION_SECS`].
//!
//! A second stays open for late reports for a short grace period, merging latency histograms;
//! then its percentiles are computed and its histogram goes to whoever listens for closed
//! seconds (the rollouts) and into the version's per-minute histograms (the latency gates'
//! baselines). Counts that arrive even later (a proxy resending after an outage) are still
//! added to their second, so counts are exact; only their latencies are left out of that
//! second's percentiles in memory (on disk they are merged in).
//!
//! What is written to sled ([`disk`]) grows with versions, not with proxies: one record per
//! (second, version) with the counts and merged latencies of every proxy, and a watermark per
//! proxy process (the highest report sequence counted). Reports are counted in memory and
//! committed in groups: one commit writes the records of every second its reports touched
//! and their proxies' watermarks in one atomic batch and flushes it, and only then are those
//! reports acknowledged. So a crash loses nothing a proxy was told was counted, and a resent
//! report is never counted twice. At start the last hour is read back. Each finished minute
//! of every version also goes to a history kept for a week ([`history`]). With several
//! replicas the reports go to etcd instead ([`etcd`]), and every replica counts every report
//! from there.
//!
//! Mirrored copies a version received are kept in series of their own, in memory and on
//! disk, and are shown flagged `mirrored`; they never reach the closed seconds the rollouts
//! judge, nor the per-minute latencies of their baselines.

pub mod carry;
mod disk;
pub mod etcd;
pub mod events;
pub mod history;
mod points;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use grayline_proto::v1 as pb;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use grayline_routing::api::{Point, SeriesView, Tick};
use grayline_routing::api::{breaker_of_rank, breaker_rank};
use grayline_routing::judged::Judged;

use crate::error::ApiError;
use crate::metrics::ServerMetrics;
use crate::store::integrity::{self, Damaged};
use crate::store::{Durable, now_unix_ms};
use points::Points;

/// Seconds of per-second history kept.
pub const RETENTION_SECS: i64 = 3600;
/// Seconds a (version, proxy) series is kept: in memory only, never written.
pub const PROXY_RETENTION_SECS: i64 = 300;
/// Seconds a point stays open for late reports before its percentiles are final.
pub const GRACE_SECS: i64 = 2;
/// Minutes of merged latency histograms kept per version (the current one included).
pub const RECENT_MINUTES: usize = 6;
/// How often what is past the retention is pruned from disk.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn breaker_name(state: i32) -> &'static str {
    match pb::BreakerState::try_from(state) {
        Ok(pb::BreakerState::Closed) | Err(_) => "closed",
        Ok(pb::BreakerState::Open) => "open",
        Ok(pb::BreakerState::HalfOpen) => "half_open",
        Ok(pb::BreakerState::ForcedOpen) => "forced_open",
        Ok(pb::BreakerState::Disabled) => "disabled",
    }
}

/// A final second as it is kept: a [`Point`] in 64 bytes and no allocation of its own. A
/// series keeps up to an hour of them, and there is a series per version and one per
/// (version, proxy). Counts are kept in 32 bits (over four billion in one second of one
/// series would saturate) and latencies too (the histograms stop at an hour, 3.6e9 µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    time_unix_s: i64,
    /// 1xx..5xx (the version's answers), then upstream errors, fallbacks (the proxy's own
    /// answers; requests are the classes and these), gRPC errors.
    counts: [u32; 8],
    /// p50, p95, p99, max.
    latency_us: [u32; 4],
    /// [`breaker_rank`] of the worst breaker state reported.
    breaker: u8,
}

fn narrow(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<&Point> for Stored {
    fn from(p: &Point) -> Stored {
        Stored {
            time_unix_s: p.time_unix_s,
            counts: counts_array(p).map(narrow),
            latency_us: [p.p50_us, p.p95_us, p.p99_us, p.max_us].map(narrow),
            breaker: breaker_rank(&p.breaker),
        }
    }
}

impl From<&Stored> for Point {
    fn from(s: &Stored) -> Point {
        point_of(
            s.time_unix_s,
            s.counts.map(u64::from),
            s.latency_us.map(u64::from),
            s.breaker,
        )
    }
}

/// A point's counts in [`Stored`]'s order.
pub(crate) fn counts_array(p: &Point) -> [u64; 8] {
    [
        p.status_1xx,
        p.status_2xx,
        p.status_3xx,
        p.status_4xx,
        p.status_5xx,
        p.upstream_errors,
        p.fallbacks,
        p.grpc_errors,
    ]
}

/// A point from its counts (in [`Stored`]'s order), percentiles (p50, p95, p99, max) and
/// breaker rank.
pub(crate) fn point_of(
    time_unix_s: i64,
    counts: [u64; 8],
    latency_us: [u64; 4],
    breaker: u8,
) -> Point {
    let [s1, s2, s3, s4, s5, upstream_errors, fallbacks, grpc_errors] = counts;
    let [p50_us, p95_us, p99_us, max_us] = latency_us;
    Point {
        time_unix_s,
        requests: s1 + s2 + s3 + s4 + s5 + fallbacks,
        status_1xx: s1,
        status_2xx: s2,
        status_3xx: s3,
        status_4xx: s4,
        status_5xx: s5,
        upstream_errors,
        fallbacks,
        grpc_errors,
        p50_us,
        p95_us,
        p99_us,
        max_us,
        breaker: breaker_of_rank(breaker).to_string(),
    }
}

/// A report's latencies for one version: decoded, and as the proxy sent them.
#[derive(Clone, Copy)]
struct Reported<'a> {
    histogram: &'a Histogram<u64>,
    encoded: &'a [u8],
}

/// What an open second keeps of its latencies.
#[derive(Debug)]
enum Latency {
    /// Merged as reports arrive: a version's series, whose closed seconds go to the rollouts.
    Merged(Histogram<u64>),
    /// Each report's histogram as the proxy sent it (a few hundred bytes, where a decoded
    /// one is 26 KiB), the point's percentiles kept current: a series per (version, proxy)
    /// — there are many, and a second of one usually has one report.
    Encoded(Vec<Vec<u8>>),
}

#[derive(Debug)]
struct Open {
    point: Point,
    latency: Latency,
    /// What rollouts judge: a version's series only.
    judged: Judged,
}

impl Latency {
    /// All the second's latencies in one histogram.
    fn merged(self) -> Histogram<u64> {
        match self {
            Latency::Merged(h) => h,
            Latency::Encoded(reports) => merge_encoded(&reports),
        }
    }
}

fn merge_encoded(reports: &[Vec<u8>]) -> Histogram<u64> {
    let mut out = new_histogram();
    for h in reports
        .iter()
        .filter_map(|bytes| disk::decode_histogram(bytes))
    {
        let _ = out.add(&h);
    }
    out
}

#[derive(Debug)]
struct Series {
    /// Final points, oldest first.
    done: Points,
    /// Seconds still taking late reports.
    open: BTreeMap<i64, Open>,
    /// Open seconds keep the reports' encoded histograms, not a merged one.
    encoded: bool,
}

impl Series {
    /// A version's series: its closed seconds carry their merged latencies.
    fn merged() -> Series {
        Series {
            done: Points::default(),
            open: BTreeMap::new(),
            encoded: false,
        }
    }

    /// A (version, proxy)'s series: only its percentiles are ever read.
    fn encoded() -> Series {
        Series {
            encoded: true,
            ..Series::merged()
        }
    }

    fn add(&mut self, counts: &Point, latency: Option<Reported<'_>>, judged: Option<&Judged>) {
        let t = counts.time_unix_s;
        let newest_done = self.done.newest().unwrap_or(i64::MIN);
        if t > newest_done {
            let encoded = self.encoded;
            let open = self.open.entry(t).or_insert_with(|| Open {
                point: Point {
                    time_unix_s: t,
                    ..Point::default()
                },
                latency: if encoded {
                    Latency::Encoded(Vec::new())
                } else {
                    Latency::Merged(new_histogram())
                },
                judged: Judged::default(),
            });
            open.point.add_counts(counts);
            if let Some(j) = judged {
                open.judged.add(j);
            }
            if let Some(r) = latency {
                match &mut open.latency {
                    Latency::Merged(h) => {
                        let _ = h.add(r.histogram);
                    }
                    Latency::Encoded(reports) => {
                        reports.push(r.encoded.to_vec());
                        if reports.len() == 1 {
                            set_latency(&mut open.point, r.histogram);
                        } else {
                            set_latency(&mut open.point, &merge_encoded(reports));
                        }
                    }
                }
            }
            return;
        }
        // Late: the second is final. Add the counts where they belong.
        self.done.update(t, |kept| match kept {
            Some(kept) => {
                let mut p = Point::from(kept);
                p.add_counts(counts);
                Stored::from(&p)
            }
            None => {
                let mut p = counts.clone();
                if let Some(r) = latency {
                    set_latency(&mut p, r.histogram);
                }
                Stored::from(&p)
            }
        });
    }

    /// Closes every open second up to `upto`, oldest first, handing out each closed
    /// second's histogram and judged sample.
    fn close(&mut self, upto: i64, mut closed: impl FnMut(&Point, Histogram<u64>, Judged)) {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let Open {
                mut point,
                latency,
                judged,
            } = entry.remove();
            let latency = latency.merged();
            set_latency(&mut point, &latency);
            closed(&point, latency, judged);
            self.done.push(Stored::from(&point));
        }
    }

    /// Closes every open second up to `upto` when nobody takes the closed seconds.
    fn finish(&mut self, upto: i64) {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let Open {
                mut point, latency, ..
            } = entry.remove();
            if let Latency::Merged(h) = latency {
                set_latency(&mut point, &h);
            }
            self.done.push(Stored::from(&point));
        }
    }

    fn prune(&mut self, oldest: i64) {
        self.done.prune(oldest);
    }

    /// Points at or after `from`, including open seconds with their provisional percentiles.
    fn window(&self, from: i64) -> Vec<Point> {
        let mut out: Vec<Point> = self.done.since(from).iter().map(Point::from).collect();
        out.extend(
            self.open
                .values()
                .filter(|o| o.point.time_unix_s >= from)
                .map(|o| {
                    let mut p = o.point.clone();
                    if let Latency::Merged(h) = &o.latency {
                        set_latency(&mut p, h);
                    }
                    p
                }),
        );
        out
    }

    fn at(&self, t: i64) -> Option<Point> {
        self.done.at(t).map(|s| Point::from(&s))
    }
}

/// Sets a point's percentiles from the latencies of its second.
fn set_latency(p: &mut Point, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    p.p50_us = h.value_at_quantile(0.50);
    p.p95_us = h.value_at_quantile(0.95);
    p.p99_us = h.value_at_quantile(0.99);
    p.max_us = h.max();
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

type Key = (String, String);

/// A version's latency histograms per minute, newest last.
#[derive(Debug, Default)]
struct Minutes(VecDeque<(i64, Histogram<u64>)>);

impl Minutes {
    fn add(&mut self, time_unix_s: i64, h: &Histogram<u64>) {
        let minute = time_unix_s.div_euclid(60);
        if self.0.back().is_none_or(|(m, _)| *m < minute) {
            self.0.push_back((minute, new_histogram()));
            while self.0.len() > RECENT_MINUTES {
                self.0.pop_front();
            }
        }
        if let Some((_, slot)) = self.0.iter_mut().rev().find(|(m, _)| *m == minute) {
            let _ = slot.add(h);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    versions: HashMap<Key, Series>,
    proxies: HashMap<(Key, String), Series>,
    /// The mirrored copies, per version and per (version, proxy): never closed for rollouts.
    mirrored: HashMap<Key, Series>,
    mirrored_proxies: HashMap<(Key, String), Series>,
    minutes: HashMap<Key, Minutes>,
    /// Highest sequence counted per (proxy, boot), and when that proxy last reported.
    seen: HashMap<(String, String), (u64, i64)>,
    /// What counted reports changed that the disk does not hold yet.
    pending: Pending,
    /// Reports counted (or found counted) so far: the ticket of each is the count after it.
    tickets: u64,
    /// The newest minute whose history is written or queued.
    minutes_done: i64,
    /// Events per version and minute, in memory only (the wizard's event gate preview).
    events: events::EventMinutes,
}

/// A version's second (live or mirrored).
type SecondKey = (Key, bool, i64);

/// What the next commit writes.
#[derive(Debug, Default)]
struct Pending {
    /// Open seconds a report added to: their records are encoded from memory at the commit.
    open: HashSet<SecondKey>,
    /// Records ready to write: of a second that closed before its commit, of a finished
    /// minute's history.
    ready: Vec<(Tree, Vec<u8>, Vec<u8>)>,
    /// Reports' counts for seconds already final, to add to their records on disk.
    late: Vec<Late>,
    /// Watermarks: (proxy, boot) → (sequence, last heard).
    seen: HashMap<(String, String), (u64, i64)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.open.is_empty()
            && self.ready.is_empty()
            && self.late.is_empty()
            && self.seen.is_empty()
    }
}

/// A report's counts for a second already final, or for a minute whose history is written:
/// added to the records on disk.
#[derive(Debug)]
struct Late {
    second: SecondKey,
    stats: pb::VersionStats,
    /// The second is final: add the counts (and latencies) to its record.
    to_second: bool,
    /// The second's minute is in the history already: add the counts there.
    to_minute: bool,
}

/// Which tree a ready record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tree {
    Seconds,
    Minutes,
}

impl Inner {
    /// The statistics `tree` holds, as of `now`: every second final but those in the grace
    /// period.
    fn read_back(tree: &sled::Tree, now: i64) -> anyhow::Result<Inner> {
        let oldest = now - RETENTION_SECS;
        let mut inner = Inner::default();
        let mut settled = i64::MIN;
        // Every record is decoded, those older than the retention too (they are pruned
        // soon): a record that does not decode is damage, named, not a gap in a chart.
        for item in integrity::records("stats", tree) {
            let (key, value) = item?;
            if key.starts_with(disk::seen_prefix()) {
                let (id, seen) = disk::read_watermark(&key, &value)?;
                inner.seen.insert(id, seen);
                continue;
            }
            let k = disk::read_point_key(&key)?;
            let damaged = |problem: String| {
                Damaged::new(
                    "stats",
                    format!(
                        "statistics of {}/{} from proxy {} at {}",
                        k.service, k.version, k.proxy, k.time_unix_s
                    ),
                    problem,
                )
            };
            let record = disk::decode_record(&value).map_err(|e| damaged(format!("{e:#}")))?;
            let latency = if record.latency_histogram.is_empty() {
                None
            } else {
                Some(
                    disk::decode_histogram(&record.latency_histogram)
                        .ok_or_else(|| damaged("the latency histogram does not decode".into()))?,
                )
            };
            if k.time_unix_s < oldest {
                continue;
            }
            // Points come oldest first, a second's all together (a late report was merged
            // into its second's record): every second before this one is complete, and is
            // made final now rather than after the scan, when an hour of open seconds would
            // each hold its latencies (at 200 proxies about 1 GiB).
            let complete = (k.time_unix_s - 1).min(now - GRACE_SECS);
            if complete > settled {
                inner.settle(complete, |_, _, _, _| {});
                settled = complete;
            }
            // A second's record of all proxies, or (written before records were per
            // version) one per proxy: either way the version's series; the per-proxy
            // breakdown is not kept across a restart.
            let key = (k.service.to_string(), k.version.to_string());
            inner.add(
                &key,
                None,
                k.mirrored,
                &counts_of(k.time_unix_s, &record),
                latency.as_ref().map(|histogram| Reported {
                    histogram,
                    encoded: &record.latency_histogram,
                }),
                // Read back, a second is made final at once: nobody judges it any more.
                None,
            );
        }
        // Minutes before the one in progress are in the history, or are written by
        // `StatsStore::open` if missing.
        inner.minutes_done = (now - GRACE_SECS).div_euclid(60) - 1;
        Ok(inner)
    }

    /// Makes every second up to `upto` final: a version's closed seconds go to its minutes
    /// and to `closed` (a mirrored copy's are never closed for rollouts, only made final).
    /// A second closed before its record was committed has its record made now, while its
    /// latencies are still at hand.
    fn settle(&mut self, upto: i64, mut closed: impl FnMut(&Key, &Point, Histogram<u64>, Judged)) {
        let Inner {
            versions,
            minutes,
            mirrored,
            proxies,
            mirrored_proxies,
            pending,
            ..
        } = self;
        let mut keep = |key: &Key, mirrored: bool, point: &Point, latency: &Histogram<u64>| {
            let second = (key.clone(), mirrored, point.time_unix_s);
            if !pending.open.is_empty() && pending.open.remove(&second) {
                let (k, v) = second_record(&second, point, latency);
                pending.ready.push((Tree::Seconds, k, v));
            }
        };
        for (key, s) in versions.iter_mut() {
            s.close(upto, |point, latency, judged| {
                keep(key, false, point, &latency);
                minutes
                    .entry(key.clone())
                    .or_default()
                    .add(point.time_unix_s, &latency);
                closed(key, point, latency, judged);
            });
        }
        for (key, s) in mirrored.iter_mut() {
            s.close(upto, |point, latency, _| keep(key, true, point, &latency));
        }
        for s in proxies.values_mut().chain(mirrored_proxies.values_mut()) {
            s.finish(upto);
        }
    }

    fn add(
        &mut self,
        key: &Key,
        proxy: Option<&str>,
        mirrored: bool,
        counts: &Point,
        latency: Option<Reported<'_>>,
        judged: Option<&Judged>,
    ) -> bool {
        let (versions, proxies) = if mirrored {
            (&mut self.mirrored, &mut self.mirrored_proxies)
        } else {
            (&mut self.versions, &mut self.proxies)
        };
        let series = versions.entry(key.clone()).or_insert_with(Series::merged);
        series.add(counts, latency, judged.filter(|_| !mirrored));
        let open = series.open.contains_key(&counts.time_unix_s);
        if let Some(proxy) = proxy {
            proxies
                .entry((key.clone(), proxy.to_string()))
                .or_insert_with(Series::encoded)
                .add(counts, latency, None);
        }
        open
    }

    /// The history records of every version's minutes that ended by `upto` and are not
    /// written yet: their counts from the seconds, their percentiles from the minute's
    /// latencies (live traffic only; a mirrored copy's minutes carry counts).
    fn finish_minutes(&mut self, upto: i64) {
        let last = (upto + 1).div_euclid(60) - 1;
        if last <= self.minutes_done {
            return;
        }
        let first = self.minutes_done + 1;
        self.minutes_done = last;
        let live = self.versions.iter().map(|(k, s)| (k, s, false));
        let copies = self.mirrored.iter().map(|(k, s)| (k, s, true));
        for ((service, version), s, mirrored) in live.chain(copies) {
            for minute in first.max(last - RETENTION_SECS / 60)..=last {
                let from = minute * 60;
                let mut p = Point::default();
                for second in s.done.since(from) {
                    if second.time_unix_s >= from + 60 {
                        break;
                    }
                    p.add_counts(&Point::from(&second));
                }
                if p.requests == 0 && p.upstream_errors == 0 && p.grpc_errors == 0 {
                    continue;
                }
                p.time_unix_s = from;
                let latencies = (!mirrored)
                    .then(|| self.minutes.get(&(service.clone(), version.clone())))
                    .flatten()
                    .and_then(|m| m.0.iter().find(|(m, _)| *m == minute));
                if let Some((_, h)) = latencies {
                    set_latency(&mut p, h);
                }
                self.pending.ready.push((
                    Tree::Minutes,
                    history::key(service, version, mirrored, minute),
                    history::encode(&p),
                ));
            }
        }
    }
}

/// A version's second as it is written: its counts and all its latencies.
fn second_record(
    second: &SecondKey,
    point: &Point,
    latency: &Histogram<u64>,
) -> (Vec<u8>, Vec<u8>) {
    let key = second_key(second);
    let mut histogram = Vec::new();
    if !latency.is_empty() {
        let _ = V2Serializer::new().serialize(latency, &mut histogram);
    }
    let record = pb::VersionStats {
        status_1xx: point.status_1xx,
        status_2xx: point.status_2xx,
        status_3xx: point.status_3xx,
        status_4xx: point.status_4xx,
        status_5xx: point.status_5xx,
        upstream_errors: point.upstream_errors,
        fallbacks: point.fallbacks,
        grpc_errors: point.grpc_errors,
        breaker: breaker_state(&point.breaker) as i32,
        latency_histogram: histogram,
        mirrored: second.1,
        ..pb::VersionStats::default()
    };
    (key, disk::encode_record(&record))
}

/// The key of a version's second, all proxies together.
fn second_key(((service, version), mirrored, t): &SecondKey) -> Vec<u8> {
    disk::PointKey {
        time_unix_s: *t,
        service,
        version,
        proxy: "",
        mirrored: *mirrored,
    }
    .encode()
}

/// A second's counts are worth a record: requests, or errors the proxy saw on the way.
fn has_counts(p: &Point) -> bool {
    p.requests > 0 || p.upstream_errors > 0 || p.grpc_errors > 0
}

fn breaker_state(name: &str) -> pb::BreakerState {
    match name {
        "open" => pb::BreakerState::Open,
        "half_open" => pb::BreakerState::HalfOpen,
        "forced_open" => pb::BreakerState::ForcedOpen,
        "disabled" => pb::BreakerState::Disabled,
        _ => pb::BreakerState::Closed,
    }
}

impl Inner {
    /// The records of open seconds as they are in memory now.
    fn encode_open(&self, open: &HashSet<SecondKey>) -> Vec<(Vec<u8>, Vec<u8>)> {
        open.iter()
            .filter_map(|second| {
                let (key, mirrored, t) = second;
                let series = if *mirrored {
                    self.mirrored.get(key)
                } else {
                    self.versions.get(key)
                }?;
                let o = series.open.get(t)?;
                let Latency::Merged(h) = &o.latency else {
                    return None;
                };
                Some(second_record(second, &o.point, h))
            })
            .collect()
    }
}

/// What one commit took from memory.
struct Taken {
    pending: Pending,
    /// The records of the open seconds it names.
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Records on their way to disk: filled from what a commit takes, emptied once written and
/// flushed; kept through a failed write, so the next commit writes them.
#[derive(Debug, Default)]
struct Unwritten {
    seconds: BTreeMap<Vec<u8>, Vec<u8>>,
    minutes: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Unwritten {
    fn is_empty(&self) -> bool {
        self.seconds.is_empty() && self.minutes.is_empty()
    }

    /// The newest bytes of a record: unwritten, or on disk.
    fn current(map: &BTreeMap<Vec<u8>, Vec<u8>>, tree: &sled::Tree, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = map.get(key) {
            return Some(v.clone());
        }
        match tree.get(key) {
            Ok(v) => v.map(|v| v.to_vec()),
            Err(e) => {
                tracing::error!(error = %e, "a statistics record could not be read; counted anew");
                None
            }
        }
    }

    fn add(&mut self, disk: &Disk, taken: Taken) {
        let Taken { pending, records } = taken;
        self.seconds.extend(records);
        for (tree, key, value) in pending.ready {
            match tree {
                Tree::Seconds => self.seconds.insert(key, value),
                Tree::Minutes => self.minutes.insert(key, value),
            };
        }
        for late in pending.late {
            let ((service, version), mirrored, t) = &late.second;
            if late.to_minute {
                let minute = t.div_euclid(60);
                let key = history::key(service, version, *mirrored, minute);
                let mut p = Self::current(&self.minutes, &disk.minutes, &key)
                    .and_then(|bytes| history::decode(minute, &bytes).ok())
                    .unwrap_or_default();
                p.add_counts(&counts_of(*t, &late.stats));
                p.time_unix_s = minute * 60;
                self.minutes.insert(key, history::encode(&p));
            }
            if !late.to_second {
                continue;
            }
            let key = second_key(&late.second);
            let mut record = Self::current(&self.seconds, &disk.tree, &key)
                .and_then(|bytes| match disk::decode_record(&bytes) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), service, version, second = t,
                            "a damaged statistics record is replaced by the late counts");
                        None
                    }
                })
                .unwrap_or_default();
            disk::merge_record(&mut record, &late.stats);
            self.seconds.insert(key, disk::encode_record(&record));
        }
        for ((proxy, boot), (sequence, last)) in pending.seen {
            self.seconds.insert(
                disk::seen_key(&proxy, &boot),
                disk::encode_seen(sequence, last).to_vec(),
            );
        }
    }

    /// Writes every record (a second's records and its proxies' watermarks in one atomic
    /// batch), flushes, and forgets them.
    async fn write(&mut self, disk: &Disk) -> anyhow::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        for (map, tree) in [(&self.seconds, &disk.tree), (&self.minutes, &disk.minutes)] {
            let mut batch = sled::Batch::default();
            for (k, v) in map {
                batch.insert(k.as_slice(), v.as_slice());
            }
            tree.apply_batch(batch)?;
        }
        disk.durable.sync().await?;
        self.seconds.clear();
        self.minutes.clear();
        Ok(())
    }
}

/// One version's second, once final, with the latencies of all its requests and the judged
/// sample of the proxies that report one.
#[derive(Debug)]
pub struct ClosedSecond {
    pub service: String,
    pub version: String,
    pub point: Point,
    pub latency: Histogram<u64>,
    pub judged: Judged,
}

/// Every second that became final in one tick; seconds without reports are absent.
#[derive(Debug)]
pub struct Closed {
    /// Every second up to this one is final.
    pub upto: i64,
    pub seconds: Vec<ClosedSecond>,
}

/// Minutes in key order (a series' together, oldest first) as one series per version.
fn group_minutes(minutes: Vec<(String, String, bool, Point)>) -> Vec<SeriesView> {
    let mut out: Vec<SeriesView> = Vec::new();
    for (service, version, mirrored, point) in minutes {
        let same = out.last().is_some_and(|s| {
            (&s.service, &s.version, s.mirrored) == (&service, &version, mirrored)
        });
        if !same {
            out.push(SeriesView {
                service,
                version,
                proxy_id: String::new(),
                mirrored,
                points: Vec::new(),
                totals: Point::default(),
            });
        }
        let s = out.last_mut().expect("pushed above");
        s.totals.add_counts(&point);
        s.totals.time_unix_s = point.time_unix_s;
        s.points.push(point);
    }
    out
}

/// What a statistics request selects (see `StatsRequest` in the API).
#[derive(Clone, Copy, Debug, Default)]
pub struct Select<'a> {
    pub service: Option<&'a str>,
    pub window_seconds: u32,
    pub per_proxy: bool,
    pub per_minute: bool,
    pub until_unix_s: i64,
}

/// Where statistics are kept durably.
#[derive(Debug)]
pub struct Disk {
    /// The seconds of the last hour, one record per (second, version), and the watermarks.
    pub tree: sled::Tree,
    /// The per-minute history.
    pub minutes: sled::Tree,
    pub durable: Arc<Durable>,
}

#[derive(Debug)]
pub struct StatsStore {
    inner: Mutex<Inner>,
    disk: Option<Disk>,
    /// The highest ticket a finished commit covers.
    committed: AtomicU64,
    /// Held while committing; what a failed commit did not write waits here for the next.
    committing: tokio::sync::Mutex<Unwritten>,
    /// Set when the statistics are kept in etcd, for several replicas.
    etcd: Option<etcd::EtcdStats>,
    ticks: broadcast::Sender<Arc<Tick>>,
    closed: broadcast::Sender<Arc<Closed>>,
    metrics: Arc<ServerMetrics>,
}

/// Whether a report was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingest {
    Counted,
    /// Its sequence was counted before (a resend); acknowledged, not counted again.
    Duplicate,
}

/// A report's judged sample for one version; `None` from a proxy that reports none.
fn judged_of(v: &pb::VersionStats) -> Option<Judged> {
    (v.judged > 0 || v.fresh > 0).then(|| Judged {
        fresh: v.fresh,
        requests: v.judged,
        errors: v.judged_errors,
        latency: v.judged_latency.clone(),
        events: v
            .events
            .iter()
            .filter(|e| e.judged > 0)
            .map(|e| (e.name.clone(), e.judged))
            .collect(),
    })
}

/// A report's counts for one version.
fn counts_of(t: i64, v: &pb::VersionStats) -> Point {
    Point {
        time_unix_s: t,
        requests: v.status_1xx
            + v.status_2xx
            + v.status_3xx
            + v.status_4xx
            + v.status_5xx
            + v.fallbacks,
        status_1xx: v.status_1xx,
        status_2xx: v.status_2xx,
        status_3xx: v.status_3xx,
        status_4xx: v.status_4xx,
        status_5xx: v.status_5xx,
        upstream_errors: v.upstream_errors,
        fallbacks: v.fallbacks,
        grpc_errors: v.grpc_errors,
        breaker: breaker_name(v.breaker).to_string(),
        ..Point::default()
    }
}

impl StatsStore {
    /// Statistics in memory only (tests).
    pub fn new(metrics: Arc<ServerMetrics>) -> StatsStore {
        StatsStore {
            inner: Mutex::new(Inner::default()),
            disk: None,
            committed: AtomicU64::new(0),
            committing: tokio::sync::Mutex::new(Unwritten::default()),
            etcd: None,
            ticks: broadcast::channel(64).0,
            closed: broadcast::channel(64).0,
            metrics,
        }
    }

    /// Statistics kept in `disk`, with the last hour read back from it.
    pub fn open(disk: Disk, metrics: Arc<ServerMetrics>) -> anyhow::Result<StatsStore> {
        let now = now_unix_ms() / 1000;
        let started = std::time::Instant::now();
        let inner = Inner::read_back(&disk.tree, now)?;
        let store = StatsStore {
            inner: Mutex::new(inner),
            disk: Some(disk),
            ..StatsStore::new(metrics)
        };
        let (versions, proxies) = {
            let mut inner = store.lock();
            store.catch_up_minutes(&mut inner, now)?;
            (inner.versions.len(), inner.seen.len())
        };
        tracing::info!(
            versions,
            proxy_processes = proxies,
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "statistics of the last hour read back"
        );
        // What is past the hour stays on disk until the server serves: `prune_disk` then.
        store.tick(now);
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Statistics kept in etcd: every report any replica counts is read back here, from the
    /// last hour stored and then as it is written.
    pub async fn open_etcd(
        etcd: etcd::EtcdStats,
        metrics: Arc<ServerMetrics>,
    ) -> anyhow::Result<Arc<StatsStore>> {
        let (stored, revision) = etcd.load().await?;
        let mut changes = etcd.watch(revision);
        let store = Arc::new(StatsStore {
            etcd: Some(etcd),
            ..StatsStore::new(metrics)
        });
        let count = stored.len();
        for s in &stored {
            store.count_stored(s);
        }
        // The history goes on from the minute in progress.
        store.lock().minutes_done = (now_unix_ms() / 1000 - GRACE_SECS).div_euclid(60) - 1;
        store.tick(now_unix_ms() / 1000);
        tracing::info!(
            records = count,
            "statistics of the last hour read from the store"
        );
        let this = store.clone();
        tokio::spawn(async move {
            while let Some(stored) = changes.recv().await {
                this.count_stored(&stored);
            }
        });
        Ok(store)
    }

    /// Counts what a replica committed to etcd: a group commit's seconds into the versions'
    /// series, or (written before group commits) a report.
    fn count_stored(&self, stored: &etcd::Stored) {
        let commit = match stored {
            etcd::Stored::Report(r) => return self.count(r),
            etcd::Stored::Commit(c) => c,
        };
        let now = now_unix_ms() / 1000;
        let mut inner = self.lock();
        for second in &commit.seconds {
            let Some(v) = &second.stats else { continue };
            let t = second.time_unix_s.clamp(now - RETENTION_SECS + 1, now);
            self.add_stats(&mut inner, t, v, None);
        }
    }

    /// Counts one version's numbers for second `t` into its series (and into its proxy's,
    /// given one) and the metrics: the series' key, the counts, and whether that second of
    /// the version is still open.
    fn add_stats(
        &self,
        inner: &mut Inner,
        t: i64,
        v: &pb::VersionStats,
        proxy: Option<&str>,
    ) -> (Key, Point, bool) {
        let key = (v.service.clone(), v.version.clone());
        let counts = counts_of(t, v);
        if v.mirrored {
            self.metrics.add_mirrored(&key.0, &key.1, &counts);
        } else {
            self.metrics.add(&key.0, &key.1, &counts);
        }
        if !v.mirrored {
            inner.events.add(&key, t, counts.requests, &v.events);
        }
        let latency = disk::decode_histogram(&v.latency_histogram);
        let open = inner.add(
            &key,
            proxy,
            v.mirrored,
            &counts,
            latency.as_ref().map(|histogram| Reported {
                histogram,
                encoded: &v.latency_histogram,
            }),
            judged_of(v).as_ref(),
        );
        (key, counts, open)
    }

    /// Counts a report this replica committed into its proxy's series (the versions' series
    /// count it from the commit, as every replica does): each replica shows the per-proxy
    /// breakdown of the proxies it serves.
    fn count_proxy(&self, report: &pb::StatsReport) {
        let now = now_unix_ms() / 1000;
        let t = etcd::second_of(report, now);
        let mut inner = self.lock();
        for v in &report.versions {
            let key = (v.service.clone(), v.version.clone());
            let latency = disk::decode_histogram(&v.latency_histogram);
            let proxies = if v.mirrored {
                &mut inner.mirrored_proxies
            } else {
                &mut inner.proxies
            };
            proxies
                .entry((key, report.proxy_id.clone()))
                .or_insert_with(Series::encoded)
                .add(
                    &counts_of(t, v),
                    latency.as_ref().map(|histogram| Reported {
                        histogram,
                        encoded: &v.latency_histogram,
                    }),
                    None,
                );
        }
    }

    /// Adds a report's counts to the series (the report is known to be new).
    fn count(&self, report: &pb::StatsReport) {
        let now = now_unix_ms() / 1000;
        self.count_into(&mut self.lock(), report, now);
    }

    /// Adds a report's counts to the series, and when they are kept on disk, queues what
    /// they changed for the next commit.
    fn count_into(&self, inner: &mut Inner, report: &pb::StatsReport, now: i64) {
        // The interval ended at the report's time; keep it within what we retain.
        let t = etcd::second_of(report, now);
        for v in &report.versions {
            let (key, counts, open) = self.add_stats(inner, t, v, Some(&report.proxy_id));
            if self.disk.is_none() || !has_counts(&counts) {
                continue;
            }
            let second = (key, v.mirrored, t);
            let to_minute = t.div_euclid(60) <= inner.minutes_done;
            if open {
                inner.pending.open.insert(second.clone());
            }
            if !open || to_minute {
                inner.pending.late.push(Late {
                    second,
                    stats: v.clone(),
                    to_second: !open,
                    to_minute,
                });
            }
        }
    }

    /// Counts a report once: in memory, then on disk with the proxy's watermark in the next
    /// group commit, or in etcd (from where every replica counts it). Returns after it is
    /// durable, so the caller may acknowledge it.
    pub async fn ingest(&self, report: &pb::StatsReport) -> Result<Ingest, ApiError> {
        if let Some(etcd) = &self.etcd {
            let counted = etcd.persist(report).await?;
            if counted {
                self.count_proxy(report);
            }
            self.metrics.report(counted);
            return Ok(if counted {
                Ingest::Counted
            } else {
                Ingest::Duplicate
            });
        }
        let now = now_unix_ms() / 1000;
        let (ingest, ticket) = {
            let mut inner = self.lock();
            let id = (report.proxy_id.clone(), report.boot_id.clone());
            let counted = inner
                .seen
                .get(&id)
                .is_some_and(|(seen, _)| report.sequence <= *seen);
            if counted {
                if let Some((_, last)) = inner.seen.get_mut(&id) {
                    *last = now;
                }
                self.metrics.report(false);
                // Acknowledged once whatever counted it is on disk: the ticket of the
                // newest report, which may still be in a commit.
                (Ingest::Duplicate, inner.tickets)
            } else {
                self.count_into(&mut inner, report, now);
                inner.seen.insert(id.clone(), (report.sequence, now));
                if self.disk.is_some() {
                    inner.pending.seen.insert(id, (report.sequence, now));
                }
                self.metrics.report(true);
                inner.tickets += 1;
                (Ingest::Counted, inner.tickets)
            }
        };
        if let Some(disk) = &self.disk {
            self.commit(disk, ticket).await?;
        }
        Ok(ingest)
    }

    /// Writes what is pending (including any report queued after `ticket`) unless a commit
    /// that covers `ticket` is done already, and returns when one is. Commits run one at a
    /// time; reports that arrive during one share the next.
    async fn commit(&self, disk: &Disk, ticket: u64) -> Result<(), ApiError> {
        if self.committed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let mut unwritten = self.committing.lock().await;
        if self.committed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        let (pending, upto) = {
            let mut inner = self.lock();
            let pending = std::mem::take(&mut inner.pending);
            let records = inner.encode_open(&pending.open);
            (Taken { pending, records }, inner.tickets)
        };
        unwritten.add(disk, pending);
        unwritten.write(disk).await.map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "statistics could not be written");
            ApiError::Internal(e.context("writing statistics"))
        })?;
        self.committed.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// Commits whatever is pending (the tick's finished minutes, reports of a commit that
    /// failed); nothing when all is written.
    pub async fn commit_pending(&self) -> Result<(), ApiError> {
        if let Some(etcd) = &self.etcd {
            let minutes: Vec<_> = std::mem::take(&mut self.lock().pending.ready)
                .into_iter()
                .map(|(_, k, v)| (k, v))
                .collect();
            return etcd.put_minutes(minutes).await;
        }
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let ticket = {
            let mut inner = self.lock();
            if inner.pending.is_empty() && self.committing.try_lock().is_ok_and(|u| u.is_empty()) {
                return Ok(());
            }
            // A ticket of its own, so a commit runs even when every report is written.
            inner.tickets += 1;
            inner.tickets
        };
        self.commit(disk, ticket).await
    }

    /// Writes the minutes of the hour read back that the history lacks (a stop between a
    /// minute's end and its commit), then the history goes on from the minute in progress.
    fn catch_up_minutes(&self, inner: &mut Inner, now: i64) -> anyhow::Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let upto = inner.minutes_done;
        inner.minutes_done = (now - RETENTION_SECS).div_euclid(60);
        inner.finish_minutes(upto * 60 + 59);
        let mut batch = sled::Batch::default();
        for (tree, key, value) in std::mem::take(&mut inner.pending.ready) {
            debug_assert_eq!(tree, Tree::Minutes);
            if !disk.minutes.contains_key(&key)? {
                batch.insert(key, value);
            }
        }
        disk.minutes.apply_batch(batch)?;
        Ok(())
    }

    /// Closes the seconds past the grace period, drops what is older than an hour from
    /// memory (from disk: [`StatsStore::prune_disk`]; the per-proxy series sooner), queues
    /// the history of every minute that ended (for [`StatsStore::commit_pending`]), publishes
    /// the newest closed second of every version, and every closed second with its
    /// latencies.
    pub fn tick(&self, now_unix_s: i64) {
        let closing = now_unix_s - GRACE_SECS;
        let oldest = now_unix_s - RETENTION_SECS;
        let mut inner = self.lock();
        let mut closed = Vec::new();
        inner.settle(closing, |(service, version), point, latency, judged| {
            closed.push(ClosedSecond {
                service: service.clone(),
                version: version.clone(),
                point: point.clone(),
                latency,
                judged,
            });
        });
        let mut series = Vec::new();
        let Inner {
            versions,
            mirrored,
            proxies,
            mirrored_proxies,
            ..
        } = &mut *inner;
        let live = versions.iter_mut().map(|(k, s)| (k, s, false));
        let copies = mirrored.iter_mut().map(|(k, s)| (k, s, true));
        for ((service, version), s, mirrored) in live.chain(copies) {
            s.prune(oldest);
            let point = s.at(closing).unwrap_or(Point {
                time_unix_s: closing,
                ..Point::default()
            });
            series.push(SeriesView {
                service: service.clone(),
                version: version.clone(),
                proxy_id: String::new(),
                mirrored,
                totals: point.clone(),
                points: vec![point],
            });
        }
        for s in proxies.values_mut().chain(mirrored_proxies.values_mut()) {
            s.prune(now_unix_s - PROXY_RETENTION_SECS);
        }
        inner.events.prune(now_unix_s);
        if self.disk.is_some() || self.etcd.is_some() {
            inner.finish_minutes(closing);
        }
        // Forget proxy processes and series silent for the whole retention window.
        inner.seen.retain(|_, (_, last)| *last >= oldest);
        inner
            .versions
            .retain(|_, s| !s.done.is_empty() || !s.open.is_empty());
        inner
            .proxies
            .retain(|_, s| !s.done.is_empty() || !s.open.is_empty());
        inner
            .mirrored
            .retain(|_, s| !s.done.is_empty() || !s.open.is_empty());
        inner
            .mirrored_proxies
            .retain(|_, s| !s.done.is_empty() || !s.open.is_empty());
        drop(inner);
        series.sort_by(|a, b| {
            (&a.service, &a.version, a.mirrored).cmp(&(&b.service, &b.version, b.mirrored))
        });
        let _ = self.ticks.send(Arc::new(Tick {
            time_unix_s: closing,
            series,
        }));
        closed.sort_by_key(|c| c.point.time_unix_s);
        let _ = self.closed.send(Arc::new(Closed {
            upto: closing,
            seconds: closed,
        }));
    }

    /// Removes from disk what is older than an hour as of `now_unix_s`, a batch at a time,
    /// until done or `stop` is cancelled (the rest waits for the next time). Blocks for as
    /// long as that takes (after a long stop, seconds to a minute): run it off the async
    /// workers. Statistics in memory or in etcd have nothing to prune here.
    pub fn prune_disk(&self, now_unix_s: i64, stop: &CancellationToken) -> anyhow::Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        prune_disk(disk, now_unix_s - RETENTION_SECS, || stop.is_cancelled())?;
        let oldest_minute = now_unix_s.div_euclid(60) - history::HISTORY_MINUTES;
        let removed = history::prune(&disk.minutes, oldest_minute, PRUNE_BATCH, || {
            stop.is_cancelled()
        })?;
        if removed > 0 {
            tracing::debug!(minutes = removed, "history past the week pruned");
        }
        Ok(())
    }

    /// The series a request selects: per second from memory, or per minute from the history.
    /// Bad combinations are named by field, and nothing is read.
    pub async fn select(&self, s: &Select<'_>) -> Result<Vec<SeriesView>, ApiError> {
        if !s.per_minute {
            if s.until_unix_s != 0 {
                return Err(ApiError::invalid(
                    "until_unix_s",
                    "only with per_minute (per-second points end now)",
                ));
            }
            if i64::from(s.window_seconds) > RETENTION_SECS {
                return Err(ApiError::invalid(
                    "window_seconds",
                    format!(
                        "at most {RETENTION_SECS} per second; per_minute reaches back {} days",
                        history::HISTORY_MINUTES / 1440
                    ),
                ));
            }
            return Ok(self.query(s.service, s.window_seconds, s.per_proxy));
        }
        if s.per_proxy {
            return Err(ApiError::invalid(
                "per_proxy",
                "not with per_minute: the history is kept per version",
            ));
        }
        let longest = history::HISTORY_MINUTES * 60;
        if i64::from(s.window_seconds) > longest {
            return Err(ApiError::invalid(
                "window_seconds",
                format!("at most {longest} (the history's week)"),
            ));
        }
        let now = now_unix_ms() / 1000;
        if s.until_unix_s < 0 || s.until_unix_s > now + 86_400 {
            return Err(ApiError::invalid(
                "until_unix_s",
                "a unix time in seconds, not in the future (0: now)",
            ));
        }
        let until = if s.until_unix_s == 0 {
            now
        } else {
            s.until_unix_s
        };
        let window = match s.window_seconds {
            0 => 3600,
            w => i64::from(w),
        };
        let from = until - window + 1;
        if let Some(etcd) = &self.etcd {
            let minutes = etcd
                .minutes(s.service, from.div_euclid(60), until.div_euclid(60))
                .await?;
            return Ok(group_minutes(minutes));
        }
        if self.disk.is_none() {
            return Err(ApiError::Unavailable(
                "this server keeps its statistics in memory only: it has no per-minute history"
                    .into(),
            ));
        }
        self.history(s.service, from, until)
            .map_err(ApiError::Internal)
    }

    /// The per-minute history of `service` (or all) from `from_unix_s` up to `to_unix_s`,
    /// one series per version (and per mirrored copy), points at each minute's first second.
    /// Minutes appear once they are over and committed (a second or two after).
    pub fn history(
        &self,
        service: Option<&str>,
        from_unix_s: i64,
        to_unix_s: i64,
    ) -> anyhow::Result<Vec<SeriesView>> {
        let Some(disk) = &self.disk else {
            anyhow::bail!("a per-minute history is kept by a server with a sled store only");
        };
        let (first, last) = (from_unix_s.div_euclid(60), to_unix_s.div_euclid(60));
        let prefix = service.map(history::service_prefix).unwrap_or_default();
        let mut minutes = Vec::new();
        for item in disk.minutes.scan_prefix(&prefix) {
            let (key, value) = item?;
            let k = history::decode_key(&key)
                .with_context(|| format!("history key {}", integrity::printable(&key)))?;
            if k.minute < first || k.minute > last {
                continue;
            }
            let point = history::decode(k.minute, &value).with_context(|| {
                format!(
                    "history of {}/{} at minute {}",
                    k.service, k.version, k.minute
                )
            })?;
            minutes.push((
                k.service.to_string(),
                k.version.to_string(),
                k.mirrored,
                point,
            ));
        }
        Ok(group_minutes(minutes))
    }

    /// `event` of `service`'s `version` per minute from minute `first` to `last`: answers
    /// and events, for minutes with answers counted since this server started.
    pub fn event_minutes(
        &self,
        service: &str,
        version: &str,
        event: &str,
        first: i64,
        last: i64,
    ) -> Vec<(i64, u64, u64)> {
        let key = (service.to_string(), version.to_string());
        self.lock().events.series(&key, event, first, last)
    }

    /// Every second as it becomes final, with its latencies.
    pub fn subscribe_closed(&self) -> broadcast::Receiver<Arc<Closed>> {
        self.closed.subscribe()
    }

    /// The latencies of a version over the last `minutes` whole minutes and the current one.
    pub fn recent_latency(&self, service: &str, version: &str, minutes: usize) -> Histogram<u64> {
        let mut out = new_histogram();
        let inner = self.lock();
        if let Some(m) = inner
            .minutes
            .get(&(service.to_string(), version.to_string()))
        {
            for (_, h) in m.0.iter().rev().take(minutes + 1) {
                let _ = out.add(h);
            }
        }
        out
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Tick>> {
        self.ticks.subscribe()
    }

    /// Every series of `service` (or all) over the last `window_seconds`.
    pub fn query(
        &self,
        service: Option<&str>,
        window_seconds: u32,
        per_proxy: bool,
    ) -> Vec<SeriesView> {
        let window = match window_seconds {
            0 => 300,
            w => i64::from(w).min(RETENTION_SECS),
        };
        let from = now_unix_ms() / 1000 - window + 1;
        let wanted = |s: &str| service.is_none_or(|name| name == s);
        let view = |service: &str, version: &str, proxy_id: &str, mirrored: bool, s: &Series| {
            let points = s.window(from);
            let mut totals = Point::default();
            for p in &points {
                totals.add_counts(p);
                totals.time_unix_s = p.time_unix_s;
            }
            SeriesView {
                service: service.to_string(),
                version: version.to_string(),
                proxy_id: proxy_id.to_string(),
                mirrored,
                points,
                totals,
            }
        };
        let inner = self.lock();
        let mut out = Vec::new();
        for (mirrored, versions, proxies) in [
            (false, &inner.versions, &inner.proxies),
            (true, &inner.mirrored, &inner.mirrored_proxies),
        ] {
            out.extend(
                versions
                    .iter()
                    .filter(|((s, _), _)| wanted(s))
                    .map(|((s, v), series)| view(s, v, "", mirrored, series)),
            );
            if per_proxy {
                out.extend(
                    proxies
                        .iter()
                        .filter(|(((s, _), _), _)| wanted(s))
                        .map(|(((s, v), p), series)| view(s, v, p, mirrored, series)),
                );
            }
        }
        out.sort_by(|a, b| {
            (&a.service, &a.version, a.mirrored, &a.proxy_id).cmp(&(
                &b.service,
                &b.version,
                b.mirrored,
                &b.proxy_id,
            ))
        });
        out
    }
}

/// Deletions per sled batch when pruning. sled keeps what one batch replaces until the batch
/// is done: the minute of 200 proxies of three versions (36,000 records) in one batch took
/// the server from 110 to 275 MiB RSS for good; in batches of 1,000 it stays where it was.
const PRUNE_BATCH: usize = 1_000;

/// Removes points older than `oldest` and watermarks of proxies silent since then, a batch
/// of [`PRUNE_BATCH`] at a time, until done or `stopped` (checked between batches). What is
/// older than the retention is never read into memory, so a pruning cut short, by a stop or
/// a crash, leaves nothing wrong behind, only work for the next.
fn prune_disk(disk: &Disk, oldest: i64, stopped: impl Fn() -> bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let took = || format!("{:.1}", started.elapsed().as_secs_f64());
    let (mut batch, mut queued, mut removed) = (sled::Batch::default(), 0, 0);
    for item in disk
        .tree
        .range(disk::points_prefix().to_vec()..disk::points_from(oldest))
    {
        batch.remove(item?.0);
        queued += 1;
        if queued == PRUNE_BATCH {
            disk.tree.apply_batch(std::mem::take(&mut batch))?;
            removed += queued;
            queued = 0;
            if stopped() {
                tracing::info!(
                    records = removed,
                    seconds = took(),
                    "pruning statistics past the hour stopped; the rest at the next start"
                );
                return Ok(());
            }
        }
    }
    disk.tree.apply_batch(batch)?;
    removed += queued;
    // A watermark goes only if it is still the one read: a proxy back since keeps its own.
    for item in disk.tree.scan_prefix(disk::seen_prefix()) {
        let (key, value) = item?;
        if disk::decode_seen(&value).is_ok_and(|(_, last)| last < oldest)
            && disk
                .tree
                .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                .is_ok()
        {
            removed += 1;
        }
    }
    if started.elapsed() >= std::time::Duration::from_secs(1) {
        tracing::info!(
            records = removed,
            seconds = took(),
            "statistics past the hour pruned"
        );
    }
    Ok(())
}

pub fn series_to_pb(s: &SeriesView) -> pb::StatsSeries {
    s.into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2Serializer};

    fn report(proxy: &str, seq: u64, t_ms: i64, ok: u64, latency_us: u64) -> pb::StatsReport {
        let mut h = new_histogram();
        for _ in 0..ok {
            h.record(latency_us).unwrap();
        }
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        pb::StatsReport {
            proxy_id: proxy.into(),
            boot_id: "b".into(),
            sequence: seq,
            time_unix_ms: t_ms,
            versions: vec![pb::VersionStats {
                service: "shop".into(),
                version: "v1".into(),
                status_2xx: ok,
                status_5xx: 1,
                latency_histogram: bytes,
                ..Default::default()
            }],
        }
    }

    #[tokio::test]
    async fn merges_proxies_and_drops_duplicates() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let now = now_unix_ms();
        assert_eq!(
            store.ingest(&report("p1", 1, now, 9, 1000)).await.unwrap(),
            Ingest::Counted
        );
        assert_eq!(
            store.ingest(&report("p1", 1, now, 9, 1000)).await.unwrap(),
            Ingest::Duplicate
        );
        assert_eq!(
            store.ingest(&report("p2", 1, now, 19, 3000)).await.unwrap(),
            Ingest::Counted
        );
        let all = store.query(Some("shop"), 60, true);
        assert_eq!(all.len(), 3);
        let sum = &all[0];
        assert_eq!((sum.proxy_id.as_str(), sum.totals.requests), ("", 30));
        assert_eq!(sum.totals.status_5xx, 2);
        let p = &sum.points[0];
        assert!(p.p50_us >= 2900 && p.p99_us >= 2900, "{p:?}");
        assert_eq!(all[1].totals.requests, 10);
        assert_eq!(all[2].totals.requests, 20);
        assert!(store.query(Some("blog"), 60, true).is_empty());
    }

    #[tokio::test]
    async fn late_counts_still_land_in_their_second() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let now_s = now_unix_ms() / 1000;
        let t = (now_s - 10) * 1000;
        store.ingest(&report("p1", 1, t, 4, 500)).await.unwrap();
        store.tick(now_s);
        store.ingest(&report("p1", 2, t, 6, 500)).await.unwrap();
        store
            .ingest(&report("p1", 3, now_s * 1000, 1, 500))
            .await
            .unwrap();
        let s = &store.query(None, 60, false)[0];
        assert_eq!(s.points.len(), 2);
        assert_eq!(s.points[0].requests, 12);
        assert_eq!(s.points[0].p50_us / 100, 5, "{:?}", s.points[0]);
        assert_eq!(s.totals.requests, 14);
    }

    #[tokio::test]
    async fn a_proxy_second_with_two_reports_has_the_latencies_of_both() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let now_s = now_unix_ms() / 1000;
        let t = now_s * 1000;
        store.ingest(&report("p1", 1, t, 90, 100)).await.unwrap();
        store.ingest(&report("p1", 2, t, 10, 20_000)).await.unwrap();
        let proxy_point = |store: &StatsStore| {
            let all = store.query(Some("shop"), 60, true);
            let p = all.iter().find(|s| s.proxy_id == "p1").unwrap();
            assert_eq!(p.points.len(), 1);
            p.points[0].clone()
        };
        // Open: the percentiles of both reports, as the version's series has them.
        let open = proxy_point(&store);
        let version = store.query(Some("shop"), 60, false)[0].points[0].clone();
        assert_eq!(open, version);
        assert_eq!((open.p50_us / 10, open.p95_us / 1000), (10, 20), "{open:?}");
        // Closed: the same.
        store.tick(now_s + GRACE_SECS);
        assert_eq!(proxy_point(&store), open);
    }

    #[test]
    fn a_stored_point_is_the_point() {
        for breaker in ["", "disabled", "closed", "half_open", "open", "forced_open"] {
            let p = Point {
                time_unix_s: 1_700_000_000,
                requests: 1 + 2 + 3 + 4 + 5 + 7,
                status_1xx: 1,
                status_2xx: 2,
                status_3xx: 3,
                status_4xx: 4,
                status_5xx: 5,
                upstream_errors: 6,
                fallbacks: 7,
                grpc_errors: 8,
                p50_us: 9,
                p95_us: 10,
                p99_us: 11,
                max_us: 3_600_000_000,
                breaker: breaker.into(),
            };
            assert_eq!(Point::from(&Stored::from(&p)), p);
        }
        assert_eq!(std::mem::size_of::<Stored>(), 64);
    }

    /// Opens the statistics in `dir` as the server does (its sled settings), waiting for a
    /// store dropped a moment ago to release its lock.
    fn on_disk(dir: &std::path::Path) -> StatsStore {
        let db = crate::store::when_free(|| crate::store::sled::open_sled(dir)).unwrap();
        let disk = Disk {
            tree: db.open_tree("stats").unwrap(),
            minutes: db.open_tree("stats_minutes").unwrap(),
            durable: Arc::new(Durable::new(db)),
        };
        StatsStore::open(disk, Arc::new(ServerMetrics::new())).unwrap()
    }

    /// The seconds' tree of the statistics in `dir`, once the store there is dropped.
    fn store_tree(dir: &std::path::Path) -> sled::Tree {
        let db = crate::store::when_free(|| crate::store::sled::open_sled(dir)).unwrap();
        db.open_tree("stats").unwrap()
    }

    #[tokio::test]
    async fn counted_reports_survive_a_reopen_and_are_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix_ms();
        {
            let store = on_disk(dir.path());
            store
                .ingest(&report("p1", 1, now - 5000, 9, 1000))
                .await
                .unwrap();
            store
                .ingest(&report("p1", 2, now - 5000, 9, 3000))
                .await
                .unwrap();
            store
                .ingest(&report("p2", 1, now - 4000, 4, 1000))
                .await
                .unwrap();
        }
        // One record per second and version, whatever the number of proxies, and one
        // watermark per proxy process.
        let tree = store_tree(dir.path());
        assert_eq!(tree.scan_prefix(disk::points_prefix()).count(), 2);
        assert_eq!(tree.scan_prefix(disk::seen_prefix()).count(), 2);
        drop(tree);
        let store = on_disk(dir.path());
        let totals = |store: &StatsStore| store.query(Some("shop"), 60, true);
        let all = totals(&store);
        assert_eq!(all.len(), 1, "the per-proxy series are not kept: {all:?}");
        assert_eq!(all[0].totals.requests, 10 + 10 + 5);
        // The second that held two reports kept both latencies.
        let p = all[0].points.iter().find(|p| p.requests == 20).unwrap();
        assert!(p.p50_us >= 900 && p.p99_us >= 2900, "{p:?}");
        // A resend of something counted before the restart is a duplicate.
        assert_eq!(
            store
                .ingest(&report("p1", 2, now - 5000, 9, 3000))
                .await
                .unwrap(),
            Ingest::Duplicate
        );
        assert_eq!(
            store.ingest(&report("p1", 3, now, 1, 100)).await.unwrap(),
            Ingest::Counted
        );
        assert_eq!(totals(&store)[0].totals.requests, 27);
    }

    #[test]
    fn pruning_removes_everything_past_the_retention_over_many_batches_or_stops_between() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("stats").unwrap();
        let point = |t: i64, proxy: &str| {
            disk::PointKey {
                time_unix_s: t,
                service: "shop",
                version: "v1",
                proxy,
                mirrored: false,
            }
            .encode()
        };
        let oldest = 10_000;
        // Five batches' worth of old points and a batch and a half of old watermarks, then
        // what must stay: the points of `oldest` on and a watermark of a proxy still heard.
        let old_points = 5 * PRUNE_BATCH + 7;
        for i in 0..old_points {
            let t = oldest - 1 - (i / 100) as i64;
            tree.insert(point(t, &format!("p{}", i % 100)), vec![1])
                .unwrap();
        }
        for i in 0..3 * PRUNE_BATCH / 2 {
            let key = disk::seen_key(&format!("gone-{i}"), "boot");
            tree.insert(key, &disk::encode_seen(1, oldest - 1)).unwrap();
        }
        for i in 0..50 {
            tree.insert(point(oldest + i, "p1"), vec![1]).unwrap();
        }
        tree.insert(
            disk::seen_key("heard", "boot"),
            &disk::encode_seen(1, oldest),
        )
        .unwrap();
        let disk = Disk {
            tree,
            minutes: db.open_tree("stats_minutes").unwrap(),
            durable: Arc::new(Durable::new(db)),
        };
        let all = disk.tree.len();
        // Stopped: one batch goes, then it returns, watermarks untouched.
        prune_disk(&disk, oldest, || true).unwrap();
        assert_eq!(disk.tree.len(), all - PRUNE_BATCH);
        assert_eq!(
            disk.tree.scan_prefix(disk::seen_prefix()).count(),
            3 * PRUNE_BATCH / 2 + 1
        );
        prune_disk(&disk, oldest, || false).unwrap();
        let left: Vec<_> = disk.tree.iter().keys().map(Result::unwrap).collect();
        assert_eq!(left.len(), 51, "the newer points and one watermark stay");
        assert!(
            left.iter()
                .filter_map(|k| disk::PointKey::decode(k).ok())
                .all(|k| k.time_unix_s >= oldest)
        );
        assert!(left.contains(&sled::IVec::from(disk::seen_key("heard", "boot"))));
    }

    #[test]
    fn every_damaged_record_is_named_when_read_back() {
        let now = now_unix_ms() / 1000;
        let point = |t: i64| {
            disk::PointKey {
                time_unix_s: t,
                service: "shop",
                version: "v1",
                proxy: "p1",
                mirrored: false,
            }
            .encode()
        };
        let good = disk::encode_record(&pb::VersionStats {
            status_2xx: 3,
            ..Default::default()
        });
        let bad_histogram = disk::encode_record(&pb::VersionStats {
            status_2xx: 3,
            latency_histogram: vec![1, 2, 3],
            ..Default::default()
        });
        let cases: [(Vec<u8>, Vec<u8>, &str, &str); 5] = [
            (
                point(now - 5),
                vec![0xff; 3],
                "statistics of shop/v1 from proxy p1",
                "not a statistics record",
            ),
            // Older than the retention: not read into memory, still read and checked.
            (
                point(now - 2 * RETENTION_SECS),
                vec![0xff; 3],
                "from proxy p1",
                "not a statistics record",
            ),
            (
                point(now - 5),
                bad_histogram,
                "from proxy p1",
                "latency histogram does not decode",
            ),
            (
                disk::seen_key("p1", "boot"),
                vec![1; 5],
                "watermark s",
                "not 16",
            ),
            (b"x1".to_vec(), good, "key x1", "not a statistics point key"),
        ];
        for (key, value, record, problem) in cases {
            let dir = tempfile::tempdir().unwrap();
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("stats").unwrap();
            tree.insert(key, value).unwrap();
            let disk = Disk {
                tree,
                minutes: db.open_tree("stats_minutes").unwrap(),
                durable: Arc::new(Durable::new(db)),
            };
            let err = StatsStore::open(disk, Arc::new(ServerMetrics::new())).unwrap_err();
            let d = err.downcast::<Damaged>().expect("reported as damage");
            assert_eq!(d.tree, "stats");
            assert!(
                d.record.contains(record) && d.problem.contains(problem),
                "{d}"
            );
        }
    }

    #[tokio::test]
    async fn closed_seconds_carry_their_latencies() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let mut closed = store.subscribe_closed();
        let now_s = now_unix_ms() / 1000;
        store
            .ingest(&report("p1", 1, (now_s - 10) * 1000, 99, 200))
            .await
            .unwrap();
        store.tick(now_s);
        let c = closed.try_recv().unwrap();
        assert_eq!(c.upto, now_s - GRACE_SECS);
        assert_eq!(c.seconds.len(), 1);
        assert_eq!(c.seconds[0].point.requests, 100);
        assert_eq!(c.seconds[0].latency.len(), 99);
        let recent = store.recent_latency("shop", "v1", 5);
        assert_eq!(recent.len(), 99);
        assert!(store.recent_latency("shop", "v9", 5).is_empty());
    }

    /// A report of `live` answers and `copies` mirrored copies (all failed) of shop/v2.
    pub(crate) fn live_and_mirrored(
        seq: u64,
        t_ms: i64,
        live: u64,
        copies: u64,
    ) -> pb::StatsReport {
        let mut r = report("p1", seq, t_ms, live, 100);
        r.versions[0].version = "v2".into();
        r.versions[0].status_5xx = 0;
        let mut h = new_histogram();
        h.record_n(90_000, copies).unwrap();
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&h, &mut bytes).unwrap();
        r.versions.push(pb::VersionStats {
            service: "shop".into(),
            version: "v2".into(),
            status_5xx: copies,
            grpc_errors: copies / 2,
            mirrored: true,
            latency_histogram: bytes,
            ..Default::default()
        });
        r
    }

    #[tokio::test]
    async fn minutes_of_statistics_read_back_as_they_were_served_with_no_second_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let now_s = now_unix_ms() / 1000;
        // 400 seconds from 3 proxies, latencies and counts varying by proxy and second, all
        // final (older than the grace period even if the clock moves on a few seconds).
        let (first, last) = (now_s - 400, now_s - GRACE_SECS - 4);
        let seen = {
            let store = on_disk(dir.path());
            let mut sequence = 0;
            for t in first..=last {
                for (i, proxy) in ["p1", "p2", "p3"].into_iter().enumerate() {
                    let i = i as i64;
                    sequence += 1;
                    let latency = 500 + 37 * ((t * 7 + i * 13).rem_euclid(100)) as u64;
                    let ok = 1 + (t + i).rem_euclid(5) as u64;
                    let r = report(proxy, sequence, t * 1000, ok, latency);
                    store.ingest(&r).await.unwrap();
                }
            }
            store.tick(now_s);
            // A late report for a second that is final already (and older than the minutes
            // of latencies kept for rollouts).
            sequence += 1;
            let late = report("p1", sequence, (first + 10) * 1000, 3, 90_000);
            store.ingest(&late).await.unwrap();
            store.tick(now_s);
            (
                store.query(None, 3600, false),
                store.recent_latency("shop", "v1", 5),
            )
        };
        let store = on_disk(dir.path());
        {
            // What the start reads back holds no more than the grace period open, before
            // any tick (an open second holds its latencies).
            let inner = Inner::read_back(&store.disk.as_ref().unwrap().tree, now_s).unwrap();
            let all = inner.versions.values().chain(inner.proxies.values());
            assert!(
                all.clone()
                    .all(|s| s.open.len() <= (GRACE_SECS + 1) as usize),
                "open seconds per series: {:?}",
                all.map(|s| s.open.len()).collect::<Vec<_>>()
            );
        }
        store.tick(now_s);
        let (series, recent) = seen;
        assert_eq!(series.len(), 1);
        let read_back = store.query(None, 3600, true);
        assert_eq!(
            read_back.len(),
            1,
            "the version; its proxies' series are not kept"
        );
        assert_eq!(series[0].points.len(), (last - first + 1) as usize);
        for (before, after) in series.iter().zip(&read_back) {
            let key = |v: &SeriesView| (v.version.clone(), v.proxy_id.clone(), v.points.len());
            assert_eq!(key(after), key(before));
            for (b, a) in before.points.iter().zip(&after.points) {
                if b.time_unix_s == first + 10 {
                    // A late report's latencies reach a final second only on disk (in memory
                    // the second keeps its percentiles): read back, they are in it.
                    assert_eq!(a.requests, b.requests);
                    assert!(a.p99_us >= 89_000, "{a:?}");
                    continue;
                }
                assert_eq!(a, b, "proxy {:?}", before.proxy_id);
            }
            assert_eq!(after.totals, before.totals);
        }
        assert_eq!(store.recent_latency("shop", "v1", 5), recent);
        assert!(!recent.is_empty());
    }

    #[tokio::test]
    async fn mirrored_copies_are_kept_apart_and_never_closed_for_rollouts() {
        let dir = tempfile::tempdir().unwrap();
        let now_s = now_unix_ms() / 1000;
        let t = (now_s - 10) * 1000;
        // The per-proxy series are in memory only: read back, the versions' series are there.
        let check = |store: &StatsStore, proxies: &[&str]| {
            let all = store.query(Some("shop"), 60, true);
            assert_eq!(all.len(), 2 * proxies.len(), "{all:?}");
            let find = |mirrored: bool, proxy: &str| {
                all.iter()
                    .find(|s| s.mirrored == mirrored && s.proxy_id == proxy)
                    .unwrap_or_else(|| panic!("mirrored={mirrored} proxy={proxy:?} in {all:?}"))
            };
            for &proxy in proxies {
                let live = find(false, proxy);
                assert_eq!((live.totals.requests, live.totals.status_5xx), (10, 0));
                let copies = find(true, proxy);
                assert_eq!((copies.totals.requests, copies.totals.status_5xx), (40, 40));
                assert_eq!(copies.totals.grpc_errors, 20);
            }
        };
        let store = on_disk(dir.path());
        let mut closed = store.subscribe_closed();
        let mut ticks = store.subscribe();
        store
            .ingest(&live_and_mirrored(1, t, 10, 40))
            .await
            .unwrap();
        check(&store, &["", "p1"]);
        store.tick(now_s);
        let c = closed.try_recv().unwrap();
        assert_eq!(c.seconds.len(), 1, "only the live second is closed: {c:?}");
        let second = &c.seconds[0];
        assert_eq!((second.version.as_str(), second.point.requests), ("v2", 10));
        assert_eq!(second.point.status_5xx, 0);
        assert_eq!(second.latency.len(), 10, "no mirrored latency");
        assert_eq!(store.recent_latency("shop", "v2", 5).len(), 10);
        let tick = ticks.try_recv().unwrap();
        assert_eq!(
            tick.series
                .iter()
                .map(|s| (s.version.as_str(), s.mirrored))
                .collect::<Vec<_>>(),
            [("v2", false), ("v2", true)]
        );
        drop(store);
        // Apart on disk too.
        check(&on_disk(dir.path()), &[""]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_proxies_reporting_at_once_are_written_as_one_record_per_second_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let now_s = now_unix_ms() / 1000;
        let seconds = [now_s - 8, now_s - 7, now_s - 6];
        let store = Arc::new(on_disk(dir.path()));
        let mut tasks = Vec::new();
        for proxy in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for (i, t) in seconds.into_iter().enumerate() {
                    let mut r = report(&format!("p{proxy}"), i as u64 + 1, t * 1000, 4, 700);
                    r.versions.push(pb::VersionStats {
                        version: "v2".into(),
                        status_2xx: 2,
                        ..r.versions[0].clone()
                    });
                    assert_eq!(store.ingest(&r).await.unwrap(), Ingest::Counted);
                    // Each resend is answered as counted, never counted again.
                    assert_eq!(store.ingest(&r).await.unwrap(), Ingest::Duplicate);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let before = store.query(Some("shop"), 60, false);
        drop(store);
        let tree = store_tree(dir.path());
        assert_eq!(tree.scan_prefix(disk::points_prefix()).count(), 3 * 2);
        assert_eq!(tree.scan_prefix(disk::seen_prefix()).count(), 40);
        drop(tree);
        let store = on_disk(dir.path());
        let after = store.query(Some("shop"), 60, false);
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].totals.requests, 40 * 3 * 5);
        assert_eq!(after[1].totals.requests, 40 * 3 * 3);
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.points, b.points, "{}", a.version);
        }
    }

    #[tokio::test]
    async fn finished_minutes_go_to_a_history_that_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now_s = now_unix_ms() / 1000;
        let minute = now_s.div_euclid(60);
        let store = on_disk(dir.path());
        // Two proxies in the minute in progress, one in a minute long over (a proxy
        // resending after an outage): that minute's history is written already.
        store
            .ingest(&report("p1", 1, now_s * 1000, 9, 2_000))
            .await
            .unwrap();
        store
            .ingest(&report("p2", 1, now_s * 1000, 19, 8_000))
            .await
            .unwrap();
        let old = now_s - 600;
        store
            .ingest(&report("p3", 1, old * 1000, 4, 1_000))
            .await
            .unwrap();
        // Nothing of the minute in progress yet.
        let history = |store: &StatsStore| {
            store
                .history(Some("shop"), now_s - 3600, now_s + 600)
                .unwrap()
        };
        let h = history(&store);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].points.len(), 1, "{h:?}");
        assert_eq!(
            (h[0].points[0].time_unix_s, h[0].points[0].requests),
            (old.div_euclid(60) * 60, 5)
        );
        // The minute ends.
        store.tick(minute * 60 + 60 + GRACE_SECS);
        store.commit_pending().await.unwrap();
        let h = history(&store);
        let p = h[0].points.last().unwrap();
        assert_eq!(
            (p.time_unix_s, p.requests, p.status_5xx),
            (minute * 60, 30, 2)
        );
        assert!(p.p50_us >= 7_900 && p.p99_us >= 7_900, "{p:?}");
        assert!(store.history(Some("cart"), 0, now_s).unwrap().is_empty());
        // Every service, from a time: only the minutes since.
        let recent = store.history(None, now_s - 60, now_s + 60).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].points, h[0].points[1..]);
        assert_eq!(recent[0].totals.requests, 30);
        drop(store);
        let store = on_disk(dir.path());
        assert_eq!(history(&store), h);
        drop(store);
        // Minutes the history lacks (a stop before they were committed) are written from
        // the seconds at the next start.
        let db = crate::store::when_free(|| crate::store::sled::open_sled(dir.path())).unwrap();
        let minutes = db.open_tree("stats_minutes").unwrap();
        minutes.clear().unwrap();
        drop((minutes, db));
        let store = on_disk(dir.path());
        let again = history(&store);
        assert_eq!(again[0].points[0].requests, 5);
        // The minute read back in progress (unless the clock has left it) is written at its
        // end, from the seconds read back.
        store.tick(minute * 60 + 60 + GRACE_SECS);
        store.commit_pending().await.unwrap();
        let again = history(&store);
        assert_eq!(again[0].totals.requests, 35);
        assert_eq!(again[0].points[1].p50_us, p.p50_us);
    }

    #[tokio::test]
    async fn a_request_that_asks_for_what_is_not_kept_is_named_by_field() {
        async fn field(store: &StatsStore, s: Select<'_>) -> String {
            match store.select(&s).await {
                Err(ApiError::Invalid(i)) => i.errors[0].field.clone(),
                other => panic!("{other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = on_disk(dir.path());
        let per_minute = Select {
            per_minute: true,
            ..Select::default()
        };
        for (select, named) in [
            (
                Select {
                    window_seconds: 3601,
                    ..Select::default()
                },
                "window_seconds",
            ),
            (
                Select {
                    until_unix_s: 1,
                    ..Select::default()
                },
                "until_unix_s",
            ),
            (
                Select {
                    per_proxy: true,
                    ..per_minute
                },
                "per_proxy",
            ),
            (
                Select {
                    window_seconds: 604_801,
                    ..per_minute
                },
                "window_seconds",
            ),
            (
                Select {
                    until_unix_s: -1,
                    ..per_minute
                },
                "until_unix_s",
            ),
        ] {
            assert_eq!(field(&store, select).await, named, "{select:?}");
        }
        assert!(
            store
                .select(&Select {
                    window_seconds: 604_800,
                    ..per_minute
                })
                .await
                .unwrap()
                .is_empty()
        );
        // Kept in memory only: no history, said so.
        let memory = StatsStore::new(Arc::new(ServerMetrics::new()));
        assert!(matches!(
            memory.select(&per_minute).await,
            Err(ApiError::Unavailable(m)) if m.contains("memory only")
        ));
    }

    #[tokio::test]
    async fn ticks_publish_the_closed_second() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let mut ticks = store.subscribe();
        let now_s = now_unix_ms() / 1000;
        store
            .ingest(&report("p1", 1, (now_s - GRACE_SECS) * 1000, 3, 200))
            .await
            .unwrap();
        store.tick(now_s);
        let tick = ticks.try_recv().unwrap();
        assert_eq!(tick.time_unix_s, now_s - GRACE_SECS);
        assert_eq!(tick.series[0].points[0].requests, 4);
        store.tick(now_s + 1);
        let tick = ticks.try_recv().unwrap();
        assert_eq!(
            tick.series[0].points[0].requests, 0,
            "a quiet second shows as zero"
        );
    }
}
