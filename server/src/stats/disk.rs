//! How statistics sit in sled, so that every acknowledged report survives a crash: one record
//! per (second, service, version, proxy) with that proxy's counts and latency histogram for
//! the second, and one watermark per proxy process (the highest report sequence counted).
//! Both go into one tree and are written in one atomic batch with each report, so after a
//! crash a resent report is either fully counted or not at all.
//!
//! Keys: `p` + second (big-endian, offset so it sorts) + service NUL version NUL proxy, with
//! NUL `m` after it for the mirrored copies a version received (kept apart from its live
//! traffic; keys written before mirroring existed read as live), and `s` + proxy NUL boot.
//! Points sort by time, so pruning the retention is a range scan.

use anyhow::{Context as _, anyhow};
use grayline_proto::v1 as pb;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use prost::Message as _;

use crate::store::integrity::{self, Damaged};

const POINT: u8 = b'p';
const SEEN: u8 = b's';
/// The last part of a mirrored point's key.
const MIRRORED: &str = "m";

/// One stored (second, service, version, proxy), live or mirrored.
#[derive(Debug, PartialEq, Eq)]
pub struct PointKey<'a> {
    pub time_unix_s: i64,
    pub service: &'a str,
    pub version: &'a str,
    pub proxy: &'a str,
    pub mirrored: bool,
}

fn sortable(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_sortable(b: &[u8]) -> i64 {
    let mut a = [0; 8];
    a.copy_from_slice(b);
    (u64::from_be_bytes(a) ^ (1 << 63)) as i64
}

impl PointKey<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut k =
            Vec::with_capacity(14 + self.service.len() + self.version.len() + self.proxy.len());
        k.push(POINT);
        k.extend_from_slice(&sortable(self.time_unix_s));
        let mirrored = self.mirrored.then_some(MIRRORED);
        let parts = [self.service, self.version, self.proxy]
            .into_iter()
            .chain(mirrored);
        for (i, part) in parts.enumerate() {
            if i > 0 {
                k.push(0);
            }
            k.extend_from_slice(part.as_bytes());
        }
        k
    }

    pub fn decode(key: &[u8]) -> anyhow::Result<PointKey<'_>> {
        let rest = key
            .strip_prefix(&[POINT])
            .filter(|r| r.len() >= 8)
            .ok_or_else(|| anyhow!("not a statistics point key"))?;
        let time_unix_s = from_sortable(&rest[..8]);
        let text = std::str::from_utf8(&rest[8..]).context("key is not UTF-8")?;
        let mut parts = text.split('\0');
        let (Some(service), Some(version), Some(proxy), last, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(anyhow!("key does not name service, version and proxy"));
        };
        let mirrored = match last {
            None => false,
            Some(MIRRORED) => true,
            Some(other) => return Err(anyhow!("key ends with an unknown part `{other}`")),
        };
        Ok(PointKey {
            time_unix_s,
            service,
            version,
            proxy,
            mirrored,
        })
    }
}

/// The first key of points at `t` or later.
pub fn points_from(t: i64) -> Vec<u8> {
    let mut k = vec![POINT];
    k.extend_from_slice(&sortable(t));
    k
}

pub fn points_prefix() -> &'static [u8] {
    &[POINT]
}

pub fn seen_prefix() -> &'static [u8] {
    &[SEEN]
}

pub fn seen_key(proxy: &str, boot: &str) -> Vec<u8> {
    let mut k = vec![SEEN];
    k.extend_from_slice(proxy.as_bytes());
    k.push(0);
    k.extend_from_slice(boot.as_bytes());
    k
}

/// `(proxy, boot)` of a watermark key.
pub fn decode_seen_key(key: &[u8]) -> anyhow::Result<(String, String)> {
    let text = std::str::from_utf8(key.strip_prefix(&[SEEN]).unwrap_or(key))
        .context("key is not UTF-8")?;
    let (proxy, boot) = text
        .split_once('\0')
        .ok_or_else(|| anyhow!("watermark key does not name proxy and boot"))?;
    Ok((proxy.to_string(), boot.to_string()))
}

/// A proxy process: `(proxy, boot)`.
pub type Process = (String, String);

/// A stored watermark, `((proxy, boot), (sequence, last report))`, or what is damaged.
pub fn read_watermark(key: &[u8], value: &[u8]) -> Result<(Process, (u64, i64)), Damaged> {
    let damaged = |e: anyhow::Error| {
        Damaged::new(
            "stats",
            format!("watermark {}", integrity::printable(key)),
            format!("{e:#}"),
        )
    };
    Ok((
        decode_seen_key(key).map_err(damaged)?,
        decode_seen(value).map_err(damaged)?,
    ))
}

/// A stored point's key, or what is damaged.
pub fn read_point_key(key: &[u8]) -> Result<PointKey<'_>, Damaged> {
    PointKey::decode(key).map_err(|e| {
        Damaged::new(
            "stats",
            format!("key {}", integrity::printable(key)),
            format!("{e:#}"),
        )
    })
}

/// The highest sequence counted and when the proxy last reported (unix seconds).
pub fn encode_seen(sequence: u64, last_unix_s: i64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&sequence.to_be_bytes());
    v[8..].copy_from_slice(&last_unix_s.to_be_bytes());
    v
}

pub fn decode_seen(v: &[u8]) -> anyhow::Result<(u64, i64)> {
    if v.len() != 16 {
        return Err(anyhow!("watermark is {} bytes, not 16", v.len()));
    }
    let mut a = [0; 8];
    a.copy_from_slice(&v[..8]);
    let mut b = [0; 8];
    b.copy_from_slice(&v[8..]);
    Ok((u64::from_be_bytes(a), i64::from_be_bytes(b)))
}

/// A stored second: the report's own message without the names the key already holds.
pub fn encode_record(v: &pb::VersionStats) -> Vec<u8> {
    pb::VersionStats {
        service: String::new(),
        version: String::new(),
        ..v.clone()
    }
    .encode_to_vec()
}

pub fn decode_record(bytes: &[u8]) -> anyhow::Result<pb::VersionStats> {
    pb::VersionStats::decode(bytes).context("not a statistics record")
}

pub fn decode_histogram(bytes: &[u8]) -> Option<Histogram<u64>> {
    if bytes.is_empty() {
        return None;
    }
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

/// Adds `more` (a late report for the same second) into `into`: counts and latencies.
pub fn merge_record(into: &mut pb::VersionStats, more: &pb::VersionStats) {
    merge_counts(into, more);
    let merged = match (
        decode_histogram(&into.latency_histogram),
        decode_histogram(&more.latency_histogram),
    ) {
        (Some(mut a), Some(b)) => {
            let _ = a.add(&b);
            Some(a)
        }
        (None, Some(b)) => Some(b),
        (a, None) => a,
    };
    if let Some(h) = merged {
        let mut bytes = Vec::new();
        if V2Serializer::new().serialize(&h, &mut bytes).is_ok() {
            into.latency_histogram = bytes;
        }
    }
}

/// Adds the counts and judged sample of `more` into `into`; the breaker becomes `more`'s.
/// Latencies are left alone.
pub fn merge_counts(into: &mut pb::VersionStats, more: &pb::VersionStats) {
    into.status_1xx += more.status_1xx;
    into.status_2xx += more.status_2xx;
    into.status_3xx += more.status_3xx;
    into.status_4xx += more.status_4xx;
    into.status_5xx += more.status_5xx;
    into.upstream_errors += more.upstream_errors;
    into.fallbacks += more.fallbacks;
    into.grpc_errors += more.grpc_errors;
    into.judged += more.judged;
    into.judged_errors += more.judged_errors;
    into.fresh += more.fresh;
    if into.judged_latency.len() < more.judged_latency.len() {
        into.judged_latency.resize(more.judged_latency.len(), 0);
    }
    for (a, b) in into.judged_latency.iter_mut().zip(&more.judged_latency) {
        *a += b;
    }
    for e in &more.events {
        match into.events.iter_mut().find(|have| have.name == e.name) {
            Some(have) => {
                have.count += e.count;
                have.judged += e.judged;
            }
            None => into.events.push(e.clone()),
        }
    }
    into.breaker = more.breaker;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_time() {
        let k = PointKey {
            time_unix_s: 1_700_000_000,
            service: "shop",
            version: "v2",
            proxy: "edge-1",
            mirrored: false,
        };
        let bytes = k.encode();
        assert_eq!(PointKey::decode(&bytes).unwrap(), k);
        let mirrored = PointKey {
            mirrored: true,
            ..PointKey::decode(&bytes).unwrap()
        };
        let mirrored_bytes = mirrored.encode();
        assert_ne!(
            mirrored_bytes, bytes,
            "the copies never share a record with live traffic"
        );
        assert_eq!(PointKey::decode(&mirrored_bytes).unwrap(), mirrored);
        let mut unknown = bytes.clone();
        unknown.extend_from_slice(b"\0x");
        assert!(PointKey::decode(&unknown).is_err());
        let earlier = PointKey {
            time_unix_s: 1_699_999_999,
            service: "zzz",
            ..k
        };
        assert!(earlier.encode() < bytes);
        assert!(points_from(1_700_000_000) <= bytes && points_from(1_700_000_001) > bytes);
        assert!(PointKey::decode(b"p123").is_err());
        let seen = seen_key("edge-1", "boot");
        assert_eq!(
            decode_seen_key(&seen).unwrap(),
            ("edge-1".into(), "boot".into())
        );
        assert_eq!(decode_seen(&encode_seen(7, 9)).unwrap(), (7, 9));
        assert!(decode_seen(b"short").is_err());
    }

    #[test]
    fn records_merge_counts_and_histograms() {
        let hist = |us: u64, n: u64| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
            h.record_n(us, n).unwrap();
            let mut b = Vec::new();
            V2Serializer::new().serialize(&h, &mut b).unwrap();
            b
        };
        let mut a = pb::VersionStats {
            status_2xx: 3,
            latency_histogram: hist(100, 3),
            ..Default::default()
        };
        let b = pb::VersionStats {
            status_2xx: 1,
            status_5xx: 1,
            latency_histogram: hist(900, 2),
            ..Default::default()
        };
        merge_record(&mut a, &b);
        let back = decode_record(&encode_record(&a)).unwrap();
        assert_eq!((back.status_2xx, back.status_5xx), (4, 1));
        let h = decode_histogram(&back.latency_histogram).unwrap();
        assert_eq!(h.len(), 5);
    }
}
