//! Statistics the proxies report, aggregated into per-second time series: one per version
//! (all proxies together) and one per (version, proxy), kept for an hour.
//!
//! A second stays open for late reports for a short grace period, merging latency histograms;
//! then its percentiles are computed and the histogram dropped. Counts that arrive even later
//! (a proxy resending after an outage) are still added to their second, so counts are exact;
//! only their latencies are left out of that second's percentiles.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use grayline_proto::v1 as pb;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use tokio::sync::broadcast;

pub use grayline_routing::api::{Point, SeriesView, Tick};

use crate::metrics::ServerMetrics;
use crate::store::now_unix_ms;

/// Seconds of history kept.
pub const RETENTION_SECS: i64 = 3600;
/// Seconds a point stays open for late reports before its percentiles are final.
pub const GRACE_SECS: i64 = 2;

fn breaker_name(state: i32) -> &'static str {
    match pb::BreakerState::try_from(state) {
        Ok(pb::BreakerState::Closed) | Err(_) => "closed",
        Ok(pb::BreakerState::Open) => "open",
        Ok(pb::BreakerState::HalfOpen) => "half_open",
        Ok(pb::BreakerState::ForcedOpen) => "forced_open",
        Ok(pb::BreakerState::Disabled) => "disabled",
    }
}

#[derive(Debug)]
struct Open {
    point: Point,
    latency: Histogram<u64>,
}

#[derive(Debug, Default)]
struct Series {
    /// Final points, oldest first.
    done: VecDeque<Point>,
    /// Seconds still taking late reports.
    open: BTreeMap<i64, Open>,
}

impl Series {
    fn add(&mut self, counts: &Point, latency: Option<&Histogram<u64>>) {
        let t = counts.time_unix_s;
        let newest_done = self.done.back().map_or(i64::MIN, |p| p.time_unix_s);
        if t > newest_done {
            let open = self.open.entry(t).or_insert_with(|| Open {
                point: Point {
                    time_unix_s: t,
                    ..Point::default()
                },
                latency: new_histogram(),
            });
            open.point.add_counts(counts);
            if let Some(h) = latency {
                let _ = open.latency.add(h);
            }
            return;
        }
        // Late: the second is final. Add the counts where they belong.
        match self.done.binary_search_by_key(&t, |p| p.time_unix_s) {
            Ok(i) => self.done[i].add_counts(counts),
            Err(i) => {
                let mut p = counts.clone();
                if let Some(h) = latency {
                    set_latency(&mut p, h);
                }
                self.done.insert(i, p);
            }
        }
    }

    /// Closes every open second up to `upto`, returning how many were closed.
    fn close(&mut self, upto: i64) {
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let Open { mut point, latency } = entry.remove();
            set_latency(&mut point, &latency);
            self.done.push_back(point);
        }
    }

    fn prune(&mut self, oldest: i64) {
        while self.done.front().is_some_and(|p| p.time_unix_s < oldest) {
            self.done.pop_front();
        }
    }

    /// Points at or after `from`, including open seconds with their provisional percentiles.
    fn window(&self, from: i64) -> Vec<Point> {
        let start = self.done.partition_point(|p| p.time_unix_s < from);
        let mut out: Vec<Point> = self.done.range(start..).cloned().collect();
        out.extend(
            self.open
                .values()
                .filter(|o| o.point.time_unix_s >= from)
                .map(|o| {
                    let mut p = o.point.clone();
                    set_latency(&mut p, &o.latency);
                    p
                }),
        );
        out
    }

    fn at(&self, t: i64) -> Option<&Point> {
        self.done
            .binary_search_by_key(&t, |p| p.time_unix_s)
            .ok()
            .map(|i| &self.done[i])
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

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    versions: HashMap<Key, Series>,
    proxies: HashMap<(Key, String), Series>,
    /// Highest sequence counted per (proxy, boot), and when that proxy last reported.
    seen: HashMap<(String, String), (u64, i64)>,
}

#[derive(Debug)]
pub struct StatsStore {
    inner: Mutex<Inner>,
    ticks: broadcast::Sender<Arc<Tick>>,
    metrics: Arc<ServerMetrics>,
}

/// Whether a report was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingest {
    Counted,
    /// Its sequence was counted before (a resend); acknowledged, not counted again.
    Duplicate,
}

impl StatsStore {
    pub fn new(metrics: Arc<ServerMetrics>) -> StatsStore {
        StatsStore {
            inner: Mutex::new(Inner::default()),
            ticks: broadcast::channel(64).0,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ingest(&self, report: &pb::StatsReport) -> Ingest {
        let now = now_unix_ms() / 1000;
        // The interval ended at the report's time; keep it within what we retain.
        let t = (report.time_unix_ms / 1000).clamp(now - RETENTION_SECS + 1, now);
        let mut inner = self.lock();
        let (seen, last) = inner
            .seen
            .entry((report.proxy_id.clone(), report.boot_id.clone()))
            .or_insert((0, now));
        *last = now;
        if report.sequence <= *seen {
            self.metrics.report(false);
            return Ingest::Duplicate;
        }
        *seen = report.sequence;
        self.metrics.report(true);
        for v in &report.versions {
            let counts = Point {
                time_unix_s: t,
                requests: v.status_1xx + v.status_2xx + v.status_3xx + v.status_4xx + v.status_5xx,
                status_1xx: v.status_1xx,
                status_2xx: v.status_2xx,
                status_3xx: v.status_3xx,
                status_4xx: v.status_4xx,
                status_5xx: v.status_5xx,
                upstream_errors: v.upstream_errors,
                fallbacks: v.fallbacks,
                breaker: breaker_name(v.breaker).to_string(),
                ..Point::default()
            };
            let latency: Option<Histogram<u64>> = (!v.latency_histogram.is_empty())
                .then(|| {
                    Deserializer::new()
                        .deserialize(&mut v.latency_histogram.as_slice())
                        .ok()
                })
                .flatten();
            let key = (v.service.clone(), v.version.clone());
            self.metrics.add(&key.0, &key.1, &counts);
            inner
                .versions
                .entry(key.clone())
                .or_default()
                .add(&counts, latency.as_ref());
            inner
                .proxies
                .entry((key, report.proxy_id.clone()))
                .or_default()
                .add(&counts, latency.as_ref());
        }
        Ingest::Counted
    }

    /// Closes the seconds past the grace period, drops what is older than an hour, and
    /// publishes the newest closed second of every version.
    pub fn tick(&self, now_unix_s: i64) {
        let closing = now_unix_s - GRACE_SECS;
        let oldest = now_unix_s - RETENTION_SECS;
        let mut inner = self.lock();
        let mut series = Vec::new();
        for ((service, version), s) in inner.versions.iter_mut() {
            s.close(closing);
            s.prune(oldest);
            let point = s.at(closing).cloned().unwrap_or(Point {
                time_unix_s: closing,
                ..Point::default()
            });
            series.push(SeriesView {
                service: service.clone(),
                version: version.clone(),
                proxy_id: String::new(),
                totals: point.clone(),
                points: vec![point],
            });
        }
        for s in inner.proxies.values_mut() {
            s.close(closing);
            s.prune(oldest);
        }
        // Forget proxy processes and series silent for the whole retention window.
        inner.seen.retain(|_, (_, last)| *last >= oldest);
        inner
            .versions
            .retain(|_, s| !s.done.is_empty() || !s.open.is_empty());
        inner
            .proxies
            .retain(|_, s| !s.done.is_empty() || !s.open.is_empty());
        drop(inner);
        series.sort_by(|a, b| (&a.service, &a.version).cmp(&(&b.service, &b.version)));
        let _ = self.ticks.send(Arc::new(Tick {
            time_unix_s: closing,
            series,
        }));
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
        let view = |service: &str, version: &str, proxy_id: &str, s: &Series| {
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
                points,
                totals,
            }
        };
        let inner = self.lock();
        let mut out: Vec<SeriesView> = inner
            .versions
            .iter()
            .filter(|((s, _), _)| wanted(s))
            .map(|((s, v), series)| view(s, v, "", series))
            .collect();
        if per_proxy {
            out.extend(
                inner
                    .proxies
                    .iter()
                    .filter(|(((s, _), _), _)| wanted(s))
                    .map(|(((s, v), p), series)| view(s, v, p, series)),
            );
        }
        out.sort_by(|a, b| {
            (&a.service, &a.version, &a.proxy_id).cmp(&(&b.service, &b.version, &b.proxy_id))
        });
        out
    }
}

pub fn point_to_pb(p: &Point) -> pb::StatsPoint {
    pb::StatsPoint {
        time_unix_s: p.time_unix_s,
        requests: p.requests,
        status_1xx: p.status_1xx,
        status_2xx: p.status_2xx,
        status_3xx: p.status_3xx,
        status_4xx: p.status_4xx,
        status_5xx: p.status_5xx,
        upstream_errors: p.upstream_errors,
        fallbacks: p.fallbacks,
        p50_us: p.p50_us,
        p95_us: p.p95_us,
        p99_us: p.p99_us,
        max_us: p.max_us,
        breaker: p.breaker.clone(),
    }
}

pub fn series_to_pb(s: &SeriesView) -> pb::StatsSeries {
    pb::StatsSeries {
        service: s.service.clone(),
        version: s.version.clone(),
        proxy_id: s.proxy_id.clone(),
        points: s.points.iter().map(point_to_pb).collect(),
        totals: Some(point_to_pb(&s.totals)),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn merges_proxies_and_drops_duplicates() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let now = now_unix_ms();
        assert_eq!(
            store.ingest(&report("p1", 1, now, 9, 1000)),
            Ingest::Counted
        );
        assert_eq!(
            store.ingest(&report("p1", 1, now, 9, 1000)),
            Ingest::Duplicate
        );
        assert_eq!(
            store.ingest(&report("p2", 1, now, 19, 3000)),
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

    #[test]
    fn late_counts_still_land_in_their_second() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let now_s = now_unix_ms() / 1000;
        let t = (now_s - 10) * 1000;
        store.ingest(&report("p1", 1, t, 4, 500));
        store.tick(now_s);
        store.ingest(&report("p1", 2, t, 6, 500));
        store.ingest(&report("p1", 3, now_s * 1000, 1, 500));
        let s = &store.query(None, 60, false)[0];
        assert_eq!(s.points.len(), 2);
        assert_eq!(s.points[0].requests, 12);
        assert_eq!(s.points[0].p50_us / 100, 5, "{:?}", s.points[0]);
        assert_eq!(s.totals.requests, 14);
    }

    #[test]
    fn ticks_publish_the_closed_second() {
        let store = StatsStore::new(Arc::new(ServerMetrics::new()));
        let mut ticks = store.subscribe();
        let now_s = now_unix_ms() / 1000;
        store.ingest(&report("p1", 1, (now_s - GRACE_SECS) * 1000, 3, 200));
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
