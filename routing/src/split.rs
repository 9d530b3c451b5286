//! Weighted splits compiled into bucket ranges, and the hashing that gives a user a bucket.
//!
//! Buckets are 0..10000, one per basis point. Each version with a non-zero weight owns one
//! contiguous range, laid out in the order the service lists its versions. A request with a
//! sticky key lands in the bucket its key hashes to; one without lands in a random bucket.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64;

use crate::limits::TOTAL_WEIGHT;

/// Number of buckets, one per basis point.
pub const BUCKETS: u16 = TOTAL_WEIGHT as u16;

/// The bucket a sticky key value falls into. Stable across processes, platforms and releases:
/// changing it would move every sticky user.
pub fn bucket_of(key: &[u8]) -> u16 {
    (xxh3_64(key) % u64::from(BUCKETS)) as u16
}

/// The bucket of a client address, hashed from its octets.
pub fn bucket_of_ip(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(v4) => bucket_of(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => bucket_of(&v4.octets()),
            None => bucket_of(&v6.octets()),
        },
    }
}

/// A bucket from a random number, for requests without a sticky key.
pub fn bucket_of_random(random: u64) -> u16 {
    (random % u64::from(BUCKETS)) as u16
}

/// Version indices with the exclusive upper bucket of their range, ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    ranges: Vec<(u16, usize)>,
}

impl BucketTable {
    /// Builds the table from `(version index, weight)` pairs. The caller has checked that the
    /// weights sum to 10000; versions are laid out by ascending index (the service's order).
    pub fn new(mut weights: Vec<(usize, u32)>) -> BucketTable {
        weights.sort_by_key(|&(version, _)| version);
        let mut end: u32 = 0;
        let ranges = weights
            .into_iter()
            .filter(|&(_, w)| w > 0)
            .map(|(version, w)| {
                end += w;
                (end.min(TOTAL_WEIGHT) as u16, version)
            })
            .collect();
        BucketTable { ranges }
    }

    /// The version owning `bucket` (0..10000).
    pub fn version_at(&self, bucket: u16) -> usize {
        // At most a handful of ranges: a linear scan beats a binary search here.
        self.ranges
            .iter()
            .find(|&&(end, _)| bucket < end)
            .or(self.ranges.last())
            .map_or(0, |&(_, v)| v)
    }

    /// `(version, first bucket, end bucket)` for display.
    pub fn ranges(&self) -> impl Iterator<Item = (usize, u16, u16)> + '_ {
        let mut start = 0;
        self.ranges.iter().map(move |&(end, v)| {
            let r = (v, start, end);
            start = end;
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_version_order_and_skip_zero_weights() {
        let t = BucketTable::new(vec![(2, 1000), (0, 8000), (1, 0), (3, 1000)]);
        assert_eq!(
            t.ranges().collect::<Vec<_>>(),
            vec![(0, 0, 8000), (2, 8000, 9000), (3, 9000, 10000)]
        );
        assert_eq!(t.version_at(0), 0);
        assert_eq!(t.version_at(7999), 0);
        assert_eq!(t.version_at(8000), 2);
        assert_eq!(t.version_at(9999), 3);
    }

    #[test]
    fn hashing_is_pinned() {
        // These values are part of Grayline's contract: every proxy and console must agree,
        // across releases. If this test fails, sticky users would move.
        assert_eq!(bucket_of(b"alice"), bucket_of(b"alice"));
        let pinned = [bucket_of(b"alice"), bucket_of(b"bob"), bucket_of(b"")];
        assert_eq!(pinned, [PINNED_ALICE, PINNED_BOB, PINNED_EMPTY]);
        assert_eq!(
            bucket_of_ip("10.0.0.1".parse().unwrap()),
            bucket_of_ip("::ffff:10.0.0.1".parse().unwrap())
        );
        assert_eq!(bucket_of_random(12_345), 2345);
    }

    const PINNED_ALICE: u16 = 8080;
    const PINNED_BOB: u16 = 3397;
    const PINNED_EMPTY: u16 = 3138;
}
