//! A series' final seconds, packed. A series keeps an hour of seconds, and there is one per
//! (version, proxy): with 200 proxies of three versions that is 2.2 million seconds, 130 MiB
//! as 64-byte [`Stored`]s. Here the newest seconds stay as they are (a second is read back
//! right after it closes, and late counts land near the end), and every [`CHUNK`] of them
//! is packed into bytes: the time as a step from the second before, which counts are not
//! zero, those counts and the latencies as varints, the breaker's rank. A second of a
//! proxy's series packs into about 15 bytes.
//!
//! A packed chunk is unpacked, changed and packed again when a late report adds to one of
//! its seconds (rare: a proxy resending after an outage); it is dropped whole once its
//! newest second is older than the retention, so a series keeps up to a chunk more than
//! the hour, which every read filters out by time.

use std::collections::VecDeque;

use prost::encoding::{decode_varint, encode_varint};

use super::Stored;

/// Seconds per packed chunk.
const CHUNK: usize = 32;

#[derive(Debug)]
struct Chunk {
    first: i64,
    last: i64,
    bytes: Box<[u8]>,
}

impl Chunk {
    fn pack(points: &[Stored]) -> Chunk {
        let mut bytes = Vec::with_capacity(points.len() * 16);
        let mut previous = points[0].time_unix_s;
        for p in points {
            encode_varint((p.time_unix_s - previous) as u64, &mut bytes);
            previous = p.time_unix_s;
            let mask = p
                .counts
                .iter()
                .enumerate()
                .fold(0u8, |m, (i, &n)| if n == 0 { m } else { m | 1 << i });
            bytes.push(mask);
            for &n in p.counts.iter().filter(|&&n| n != 0) {
                encode_varint(u64::from(n), &mut bytes);
            }
            for &l in &p.latency_us {
                encode_varint(u64::from(l), &mut bytes);
            }
            bytes.push(p.breaker);
        }
        Chunk {
            first: points[0].time_unix_s,
            last: points[points.len() - 1].time_unix_s,
            bytes: bytes.into_boxed_slice(),
        }
    }

    fn unpack(&self) -> Vec<Stored> {
        let mut out = Vec::with_capacity(CHUNK);
        let mut buf = &self.bytes[..];
        let mut time = self.first;
        // The bytes were packed here; nothing else writes them.
        let varint = |buf: &mut &[u8]| decode_varint(buf).expect("a packed chunk") as u32;
        while !buf.is_empty() {
            time += decode_varint(&mut buf).expect("a packed chunk") as i64;
            let mask = buf[0];
            buf = &buf[1..];
            let mut counts = [0u32; 8];
            for (i, n) in counts.iter_mut().enumerate() {
                if mask & 1 << i != 0 {
                    *n = varint(&mut buf);
                }
            }
            let latency_us = [(); 4].map(|_| varint(&mut buf));
            let breaker = buf[0];
            buf = &buf[1..];
            out.push(Stored {
                time_unix_s: time,
                counts,
                latency_us,
                breaker,
            });
        }
        out
    }
}

/// Final seconds, oldest first, one per time.
#[derive(Debug, Default)]
pub(super) struct Points {
    packed: VecDeque<Chunk>,
    /// The newest seconds, fewer than [`CHUNK`], all after the packed ones.
    tail: Vec<Stored>,
}

impl Points {
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty() && self.tail.is_empty()
    }

    /// The time of the newest second.
    pub fn newest(&self) -> Option<i64> {
        self.tail
            .last()
            .map(|p| p.time_unix_s)
            .or_else(|| self.packed.back().map(|c| c.last))
    }

    /// Appends a second newer than every one kept.
    pub fn push(&mut self, p: Stored) {
        debug_assert!(self.newest().is_none_or(|t| t < p.time_unix_s));
        self.tail.push(p);
        if self.tail.len() >= CHUNK {
            self.packed.push_back(Chunk::pack(&self.tail));
            self.tail.clear();
        }
    }

    /// Replaces the second at `time` (or adds it where it belongs) with what `change` makes
    /// of it: `None` when there is none.
    pub fn update(&mut self, time: i64, change: impl FnOnce(Option<&Stored>) -> Stored) {
        if self.packed.back().is_none_or(|c| time > c.last) {
            put(&mut self.tail, time, change);
            return;
        }
        let i = self
            .packed
            .partition_point(|c| c.first <= time)
            .saturating_sub(1);
        let mut points = self.packed[i].unpack();
        put(&mut points, time, change);
        self.packed[i] = Chunk::pack(&points);
    }

    /// Forgets the chunks whose newest second is older than `oldest`, and the tail's older
    /// seconds.
    pub fn prune(&mut self, oldest: i64) {
        while self.packed.front().is_some_and(|c| c.last < oldest) {
            self.packed.pop_front();
        }
        if self.packed.is_empty() {
            self.tail.retain(|p| p.time_unix_s >= oldest);
        }
    }

    pub fn at(&self, time: i64) -> Option<Stored> {
        if let Ok(i) = self.tail.binary_search_by_key(&time, |p| p.time_unix_s) {
            return Some(self.tail[i]);
        }
        let i = self
            .packed
            .partition_point(|c| c.first <= time)
            .checked_sub(1)?;
        let chunk = &self.packed[i];
        if time > chunk.last {
            return None;
        }
        chunk.unpack().into_iter().find(|p| p.time_unix_s == time)
    }

    /// The seconds at or after `from`, oldest first.
    pub fn since(&self, from: i64) -> Vec<Stored> {
        let start = self.packed.partition_point(|c| c.last < from);
        let mut out: Vec<Stored> = self
            .packed
            .range(start..)
            .flat_map(Chunk::unpack)
            .filter(|p| p.time_unix_s >= from)
            .collect();
        out.extend(self.tail.iter().filter(|p| p.time_unix_s >= from));
        out
    }
}

/// Puts what `change` makes of the second at `time` into its place in `points` (sorted).
fn put(points: &mut Vec<Stored>, time: i64, change: impl FnOnce(Option<&Stored>) -> Stored) {
    match points.binary_search_by_key(&time, |p| p.time_unix_s) {
        Ok(i) => points[i] = change(Some(&points[i])),
        Err(i) => points.insert(i, change(None)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A small seeded generator (xorshift64*), so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn point(rng: &mut Rng, time: i64) -> Stored {
        let mut count = || match rng.below(4) {
            0 => 0,
            1 => rng.below(300) as u32,
            2 => rng.below(1 << 20) as u32,
            _ => u32::MAX - rng.below(3) as u32,
        };
        let counts = [(); 8].map(|_| count());
        let latency_us = [(); 4].map(|_| count());
        Stored {
            time_unix_s: time,
            counts,
            latency_us,
            breaker: rng.below(6) as u8,
        }
    }

    #[test]
    fn points_keep_every_second_as_it_was_through_pushes_late_updates_and_pruning() {
        let seed = 0x5eed_0f9a_7e00;
        println!("seed {seed:#x}");
        let mut rng = Rng(seed);
        let mut points = Points::default();
        let mut model: BTreeMap<i64, Stored> = BTreeMap::new();
        let mut now = 1_700_000_000i64;
        for step in 0..5_000 {
            match rng.below(10) {
                // Mostly the next seconds, with gaps.
                0..=6 => {
                    now += 1 + rng.below(3) as i64;
                    let p = point(&mut rng, now);
                    points.push(p);
                    model.insert(now, p);
                }
                // A late report: a second kept, or one missing, anywhere in the last
                // 200 seconds.
                7 | 8 => {
                    let t = now - rng.below(200) as i64;
                    let late = point(&mut rng, t);
                    let expected = match model.get(&t) {
                        Some(old) => Stored {
                            counts: [0, 1, 2, 3, 4, 5, 6, 7]
                                .map(|i| old.counts[i].saturating_add(late.counts[i])),
                            ..*old
                        },
                        None => late,
                    };
                    points.update(t, |old| match old {
                        Some(old) => Stored {
                            counts: [0, 1, 2, 3, 4, 5, 6, 7]
                                .map(|i| old.counts[i].saturating_add(late.counts[i])),
                            ..*old
                        },
                        None => late,
                    });
                    model.insert(t, expected);
                }
                _ => {
                    let oldest = now - 300;
                    points.prune(oldest);
                    // Nothing at or after `oldest` goes; of what is older, at most the one
                    // chunk that straddles it stays (late seconds can grow a chunk).
                    let kept = points.since(i64::MIN);
                    let want: Vec<Stored> = model.range(oldest..).map(|(_, p)| *p).collect();
                    assert!(kept.ends_with(&want), "step {step}: pruned too much");
                    let older = kept.len() - want.len();
                    assert!(
                        older < 3 * CHUNK,
                        "step {step}: {older} seconds too old kept"
                    );
                    let first = kept.first().map_or(i64::MAX, |p| p.time_unix_s);
                    model.retain(|&t, _| t >= first);
                }
            }
            let from = now - rng.below(400) as i64;
            let want: Vec<Stored> = model.range(from..).map(|(_, p)| *p).collect();
            assert_eq!(points.since(from), want, "step {step}, from {from}");
            let t = now - rng.below(400) as i64;
            assert_eq!(points.at(t), model.get(&t).copied(), "step {step}, at {t}");
            assert_eq!(points.newest(), model.keys().next_back().copied());
            assert_eq!(points.is_empty(), model.is_empty());
        }
    }

    #[test]
    fn a_proxy_second_packs_into_about_fifteen_bytes() {
        // A proxy's second: a few hundred 2xx, the odd 5xx, latencies in milliseconds.
        let mut points = Points::default();
        for i in 0..(CHUNK as i64 * 100) {
            points.push(Stored {
                time_unix_s: 1_700_000_000 + i,
                counts: [0, 180 + (i % 40) as u32, 0, 2, (i % 7 == 0) as u32, 0, 0, 0],
                latency_us: [900, 4_000, 12_000, 40_000 + i as u32],
                breaker: 2,
            });
        }
        let bytes: usize = points.packed.iter().map(|c| c.bytes.len()).sum();
        let per_second = bytes as f64 / (CHUNK * 100) as f64;
        assert!(per_second <= 16.0, "{per_second} bytes a second");
        assert!(points.tail.is_empty());
    }
}
