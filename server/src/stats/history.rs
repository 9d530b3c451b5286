//! The per-minute history: one record per (minute, service, version, live or mirrored) with
//! the minute's counts and its latency percentiles, kept for [`HISTORY_MINUTES`] in a tree
//! of its own, so a release of last week can still be looked at when the per-second series
//! (an hour) are long gone.
//!
//! Keys: service NUL version NUL kind (`l` live, `m` mirrored) then the minute (big-endian,
//! offset so it sorts). A series' minutes are together and in time order, so a query for one
//! service is a prefix scan and pruning a series is a range. Values: a format byte, a mask of
//! the counts that are not zero, those counts, the four percentiles (varints) and the
//! breaker's rank.

use anyhow::{Context as _, anyhow};
use prost::encoding::{decode_varint, encode_varint};

use grayline_routing::api::{Point, breaker_rank};

/// Minutes of history kept: seven days.
pub const HISTORY_MINUTES: i64 = 7 * 24 * 60;

const FORMAT: u8 = 1;
const LIVE: u8 = b'l';
const MIRRORED: u8 = b'm';

fn sortable(minute: i64) -> [u8; 8] {
    ((minute as u64) ^ (1 << 63)).to_be_bytes()
}

/// The prefix of one series' minutes.
pub fn series_prefix(service: &str, version: &str, mirrored: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + version.len() + 11);
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(version.as_bytes());
    k.push(0);
    k.push(if mirrored { MIRRORED } else { LIVE });
    k
}

/// The prefix of every series of `service`.
pub fn service_prefix(service: &str) -> Vec<u8> {
    let mut k = service.as_bytes().to_vec();
    k.push(0);
    k
}

pub fn key(service: &str, version: &str, mirrored: bool, minute: i64) -> Vec<u8> {
    let mut k = series_prefix(service, version, mirrored);
    k.extend_from_slice(&sortable(minute));
    k
}

/// One minute's key, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct MinuteKey<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub mirrored: bool,
    pub minute: i64,
}

/// The length of a key's series prefix (everything but the minute).
pub fn prefix_len(key: &[u8]) -> usize {
    key.len().saturating_sub(8)
}

pub fn decode_key(key: &[u8]) -> anyhow::Result<MinuteKey<'_>> {
    let (names, minute) = key
        .split_at_checked(prefix_len(key))
        .filter(|(_, m)| m.len() == 8)
        .ok_or_else(|| anyhow!("too short for a minute's key"))?;
    let mut a = [0; 8];
    a.copy_from_slice(minute);
    let minute = (u64::from_be_bytes(a) ^ (1 << 63)) as i64;
    let (&kind, names) = names
        .split_last()
        .ok_or_else(|| anyhow!("names no series"))?;
    let mirrored = match kind {
        LIVE => false,
        MIRRORED => true,
        other => return Err(anyhow!("unknown kind {other:#04x}")),
    };
    let text = std::str::from_utf8(names).context("key is not UTF-8")?;
    let mut parts = text.split('\0');
    let (Some(service), Some(version), Some(""), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(anyhow!("key does not name service and version"));
    };
    Ok(MinuteKey {
        service,
        version,
        mirrored,
        minute,
    })
}

pub fn encode(p: &Point) -> Vec<u8> {
    let counts = super::counts_array(p);
    let mut out = Vec::with_capacity(32);
    out.push(FORMAT);
    let mask = counts
        .iter()
        .enumerate()
        .fold(0u8, |m, (i, &n)| if n == 0 { m } else { m | 1 << i });
    out.push(mask);
    for &n in counts.iter().filter(|&&n| n != 0) {
        encode_varint(n, &mut out);
    }
    for l in [p.p50_us, p.p95_us, p.p99_us, p.max_us] {
        encode_varint(l, &mut out);
    }
    out.push(breaker_rank(&p.breaker));
    out
}

/// A minute's point (its time the minute's first second).
pub fn decode(minute: i64, bytes: &[u8]) -> anyhow::Result<Point> {
    let (&format, mut buf) = bytes.split_first().ok_or_else(|| anyhow!("empty"))?;
    if format != FORMAT {
        return Err(anyhow!("unknown format {format}"));
    }
    let (&mask, rest) = buf.split_first().ok_or_else(|| anyhow!("no counts"))?;
    buf = rest;
    let mut counts = [0u64; 8];
    for (i, n) in counts.iter_mut().enumerate() {
        if mask & 1 << i != 0 {
            *n = decode_varint(&mut buf).context("a count")?;
        }
    }
    let mut latency = [0u64; 4];
    for l in &mut latency {
        *l = decode_varint(&mut buf).context("a percentile")?;
    }
    let (&breaker, rest) = buf.split_first().ok_or_else(|| anyhow!("no breaker"))?;
    if !rest.is_empty() {
        return Err(anyhow!("{} bytes past the end", rest.len()));
    }
    Ok(super::point_of(minute * 60, counts, latency, breaker))
}

/// Removes every minute before `oldest`, series by series, a batch of at most `batch` at a
/// time, until done or `stopped`. Returns how many went.
pub fn prune(
    tree: &sled::Tree,
    oldest: i64,
    batch_size: usize,
    stopped: impl Fn() -> bool,
) -> anyhow::Result<usize> {
    let mut removed = 0;
    let mut from: Vec<u8> = Vec::new();
    loop {
        // The next series: the first key at or after `from`.
        let Some((first, _)) = tree.range(from.clone()..).next().transpose()? else {
            return Ok(removed);
        };
        let prefix = first[..prefix_len(&first)].to_vec();
        let mut end = prefix.clone();
        end.extend_from_slice(&sortable(oldest));
        let mut batch = sled::Batch::default();
        let mut queued = 0;
        for item in tree.range(prefix.clone()..end) {
            batch.remove(item?.0);
            queued += 1;
            if queued == batch_size {
                tree.apply_batch(std::mem::take(&mut batch))?;
                removed += queued;
                queued = 0;
                if stopped() {
                    return Ok(removed);
                }
            }
        }
        tree.apply_batch(batch)?;
        removed += queued;
        // Past every minute of this series.
        from = prefix;
        from.extend_from_slice(&[0xff; 9]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_round_trip_and_sort_by_series_then_time() {
        let k = key("shop", "v2", false, 29_000_000);
        assert_eq!(
            decode_key(&k).unwrap(),
            MinuteKey {
                service: "shop",
                version: "v2",
                mirrored: false,
                minute: 29_000_000
            }
        );
        assert!(key("shop", "v2", false, 29_000_001) > k);
        assert!(key("shop", "v2", true, 0) > key("shop", "v2", false, i64::MAX));
        assert!(key("shop", "v3", false, 0) > key("shop", "v2", true, i64::MAX));
        assert!(k.starts_with(&service_prefix("shop")));
        assert!(!key("shopping", "v1", false, 0).starts_with(&service_prefix("shop")));
        assert!(decode_key(b"short").is_err());
        let p = Point {
            time_unix_s: 29_000_000 * 60,
            requests: 6_000_000_000 + 12,
            status_2xx: 6_000_000_000,
            status_5xx: 5,
            fallbacks: 7,
            grpc_errors: 2,
            p50_us: 800,
            p95_us: 9_000,
            p99_us: 40_000,
            max_us: 3_600_000_000,
            breaker: "half_open".into(),
            ..Point::default()
        };
        let bytes = encode(&p);
        assert!(bytes.len() < 32, "{} bytes", bytes.len());
        assert_eq!(decode(29_000_000, &bytes).unwrap(), p);
        assert!(decode(0, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode(0, &[2, 0]).is_err());
    }

    #[test]
    fn pruning_keeps_each_series_newest_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("m").unwrap();
        for (service, version) in [("a", "v1"), ("shop", "v1"), ("shop", "v2"), ("z", "v1")] {
            for mirrored in [false, true] {
                for minute in 90..110 {
                    tree.insert(key(service, version, mirrored, minute), vec![1])
                        .unwrap();
                }
            }
        }
        assert_eq!(prune(&tree, 100, 3, || false).unwrap(), 8 * 10);
        assert_eq!(tree.len(), 8 * 10);
        assert!(
            tree.iter()
                .keys()
                .all(|k| decode_key(&k.unwrap()).unwrap().minute >= 100)
        );
        // Stopped after the first batch.
        assert_eq!(prune(&tree, 105, 3, || true).unwrap(), 3);
    }
}
