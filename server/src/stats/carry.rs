//! The statistics a migration carries from one store to another (`grayline-server migrate`):
//! the last hour of seconds per version, every proxy process's watermark and the week of
//! per-minute history. They are read into one form whatever the store — a second per
//! (time, service, version, live or mirrored), summed over whatever records the store kept
//! for it — and written as the destination's own server would have written them: one sled
//! record per second and version, or group-commit records in etcd.
//!
//! The watermarks come along so that a report a proxy resends after the move (one that was
//! counted and made durable but whose acknowledgement was lost) is still counted once.

use std::collections::BTreeMap;

use anyhow::Context as _;
use grayline_proto::v1 as pb;

use super::etcd::{EtcdStats, Stored};
use super::{RETENTION_SECS, disk, history};
use crate::store::integrity::{self, Damaged};
use crate::store::{Backend, Store};

/// A series' second: (time, service, version, mirrored).
type SecondKey = (i64, String, String, bool);

/// Everything of the statistics that a migration copies.
#[derive(Debug, Default, PartialEq)]
pub struct Carried {
    /// Per second and series, oldest first; `service`, `version` and `mirrored` set.
    pub seconds: Vec<pb::CommittedSecond>,
    /// `(proxy, boot)` → the highest sequence counted and when it last reported (unix s).
    pub watermarks: BTreeMap<(String, String), (u64, i64)>,
    /// The per-minute history, as [`history`] keys and encodes it.
    pub minutes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// How much was carried, for the migration's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub seconds: usize,
    pub minutes: usize,
    pub watermarks: usize,
    /// Requests in the seconds carried (live and mirrored): the figure to compare.
    pub requests: u64,
}

fn requests(v: &pb::VersionStats) -> u64 {
    v.status_1xx + v.status_2xx + v.status_3xx + v.status_4xx + v.status_5xx + v.fallbacks
}

impl Carried {
    pub fn counted(&self) -> Counted {
        Counted {
            seconds: self.seconds.len(),
            minutes: self.minutes.len(),
            watermarks: self.watermarks.len(),
            requests: self
                .seconds
                .iter()
                .filter_map(|s| s.stats.as_ref())
                .map(requests)
                .sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty() && self.watermarks.is_empty() && self.minutes.is_empty()
    }

    /// What `store` keeps, seconds older than the retention before `now` left out (the
    /// server prunes them).
    pub async fn read(store: &Store, now: i64) -> anyhow::Result<Carried> {
        let mut sums = Sums::default();
        let mut carried = Carried::default();
        match store.backend() {
            Backend::Sled(_) => {
                let tree = store.tree("stats")?;
                for item in integrity::records("stats", &tree) {
                    let (key, value) = item?;
                    if key.starts_with(disk::seen_prefix()) {
                        let (id, seen) = disk::read_watermark(&key, &value)?;
                        carried.watermarks.insert(id, seen);
                        continue;
                    }
                    let k = disk::read_point_key(&key)?;
                    let record = disk::decode_record(&value).map_err(|e| {
                        Damaged::new(
                            "stats",
                            format!(
                                "statistics of {}/{} at {}",
                                k.service, k.version, k.time_unix_s
                            ),
                            format!("{e:#}"),
                        )
                    })?;
                    if k.time_unix_s > now - RETENTION_SECS {
                        sums.add(k.time_unix_s, k.service, k.version, k.mirrored, &record);
                    }
                }
                let minutes = store.tree("stats_minutes")?;
                for item in integrity::records("stats_minutes", &minutes) {
                    let (key, value) = item?;
                    let k = history::decode_key(&key).and_then(|k| {
                        history::decode(k.minute, &value)?;
                        Ok(k)
                    });
                    if let Err(e) = k {
                        return Err(Damaged::new(
                            "stats_minutes",
                            format!("minute {}", integrity::printable(&key)),
                            format!("{e:#}"),
                        )
                        .into());
                    }
                    carried.minutes.push((key.to_vec(), value.to_vec()));
                }
            }
            Backend::Etcd(etcd) => {
                let stats = EtcdStats::new(etcd.clone());
                let (stored, _) = stats.load().await?;
                for s in stored {
                    let commit = match s {
                        Stored::Commit(c) => c,
                        Stored::Report(r) => super::etcd::summed(&[&r], now),
                    };
                    for second in commit.seconds {
                        let Some(v) = second.stats else { continue };
                        if second.time_unix_s > now - RETENTION_SECS {
                            sums.add(second.time_unix_s, &v.service, &v.version, v.mirrored, &v);
                        }
                    }
                }
                for ((proxy, boot), sequence) in stats.all_watermarks().await? {
                    carried.watermarks.insert((proxy, boot), (sequence, now));
                }
                for (service, version, mirrored, point) in
                    stats.minutes(None, i64::MIN, i64::MAX).await?
                {
                    let minute = point.time_unix_s.div_euclid(60);
                    carried.minutes.push((
                        history::key(&service, &version, mirrored, minute),
                        history::encode(&point),
                    ));
                }
            }
        }
        carried.seconds = sums.into_seconds();
        Ok(carried)
    }

    /// Writes everything into `store`, durably, as its own server would have.
    pub async fn write(&self, store: &Store) -> anyhow::Result<()> {
        match store.backend() {
            Backend::Sled(_) => {
                let tree = store.tree("stats")?;
                let mut batch = sled::Batch::default();
                for second in &self.seconds {
                    let Some(v) = &second.stats else { continue };
                    let key = disk::PointKey {
                        time_unix_s: second.time_unix_s,
                        service: &v.service,
                        version: &v.version,
                        proxy: "",
                        mirrored: v.mirrored,
                    };
                    batch.insert(key.encode(), disk::encode_record(v));
                }
                for ((proxy, boot), (sequence, last)) in &self.watermarks {
                    batch.insert(
                        disk::seen_key(proxy, boot),
                        disk::encode_seen(*sequence, *last).to_vec(),
                    );
                }
                tree.apply_batch(batch)?;
                let minutes = store.tree("stats_minutes")?;
                let mut batch = sled::Batch::default();
                for (key, value) in &self.minutes {
                    batch.insert(key.as_slice(), value.as_slice());
                }
                minutes.apply_batch(batch)?;
                let durable = store.durable().context("a sled store has a group commit")?;
                durable.sync().await.context("flushing the statistics")?;
            }
            Backend::Etcd(etcd) => {
                let stats = EtcdStats::new(etcd.clone());
                stats
                    .put_seconds(&self.seconds)
                    .await
                    .context("writing the seconds")?;
                let marks: Vec<_> = self
                    .watermarks
                    .iter()
                    .map(|(id, (sequence, _))| (id.clone(), *sequence))
                    .collect();
                stats
                    .put_watermarks(&marks)
                    .await
                    .context("writing the watermarks")?;
                stats
                    .put_minutes(self.minutes.clone())
                    .await
                    .context("writing the per-minute history")?;
            }
        }
        Ok(())
    }
}

/// Records of the same second and series summed: a store may hold several (etcd: one per
/// replica's commit; sled: one per proxy, as servers before group commits wrote them).
#[derive(Default)]
struct Sums(BTreeMap<SecondKey, pb::VersionStats>);

impl Sums {
    fn add(&mut self, t: i64, service: &str, version: &str, mirrored: bool, v: &pb::VersionStats) {
        let key = (t, service.to_string(), version.to_string(), mirrored);
        match self.0.get_mut(&key) {
            Some(sum) => disk::merge_record(sum, v),
            None => {
                let named = pb::VersionStats {
                    service: key.1.clone(),
                    version: key.2.clone(),
                    mirrored: key.3,
                    ..v.clone()
                };
                self.0.insert(key, named);
            }
        }
    }

    fn into_seconds(self) -> Vec<pb::CommittedSecond> {
        self.0
            .into_iter()
            .map(|((time_unix_s, ..), stats)| pb::CommittedSecond {
                time_unix_s,
                stats: Some(stats),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::api::Point;

    fn record(ok: u64, errors: u64) -> pb::VersionStats {
        pb::VersionStats {
            status_2xx: ok,
            status_5xx: errors,
            judged: ok + errors,
            judged_errors: errors,
            ..pb::VersionStats::default()
        }
    }

    fn put_second(store: &Store, t: i64, version: &str, proxy: &str, v: &pb::VersionStats) {
        let key = disk::PointKey {
            time_unix_s: t,
            service: "shop",
            version,
            proxy,
            mirrored: false,
        };
        let tree = store.tree("stats").unwrap();
        tree.insert(key.encode(), disk::encode_record(v)).unwrap();
    }

    #[tokio::test]
    async fn a_sled_store_s_statistics_are_carried_whole_and_summed_per_second() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let from = Store::open(dirs[0].path()).unwrap();
        let now = 1_800_000_000;
        // Two proxies' records of one second (as servers before group commits wrote
        // them), one record of all proxies, and one past the hour.
        put_second(&from, now - 10, "v1", "edge-a", &record(5, 1));
        put_second(&from, now - 10, "v1", "edge-b", &record(7, 0));
        put_second(&from, now - 9, "v2", "", &record(3, 2));
        put_second(&from, now - RETENTION_SECS - 5, "v1", "", &record(100, 0));
        let tree = from.tree("stats").unwrap();
        tree.insert(
            disk::seen_key("edge-a", "b1"),
            &disk::encode_seen(42, now - 9),
        )
        .unwrap();
        let minute = (now - 120).div_euclid(60);
        let point = Point {
            time_unix_s: minute * 60,
            requests: 12,
            status_2xx: 12,
            p50_us: 900,
            ..Point::default()
        };
        from.tree("stats_minutes")
            .unwrap()
            .insert(
                history::key("shop", "v1", false, minute),
                history::encode(&point),
            )
            .unwrap();

        let carried = Carried::read(&from, now).await.unwrap();
        assert_eq!(
            carried.counted(),
            Counted {
                seconds: 2,
                minutes: 1,
                watermarks: 1,
                requests: 18,
            }
        );
        let first = carried.seconds[0].stats.as_ref().unwrap();
        assert_eq!(
            (
                first.version.as_str(),
                first.status_2xx,
                first.status_5xx,
                first.judged
            ),
            ("v1", 12, 1, 13)
        );

        let to = Store::open(dirs[1].path()).unwrap();
        assert!(Carried::read(&to, now).await.unwrap().is_empty());
        carried.write(&to).await.unwrap();
        assert_eq!(Carried::read(&to, now).await.unwrap(), carried);
        // As the destination's server reads it back.
        let (seq, _) = disk::decode_seen(
            &to.tree("stats")
                .unwrap()
                .get(disk::seen_key("edge-a", "b1"))
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(seq, 42);
    }

    #[tokio::test]
    async fn a_damaged_record_is_named_and_nothing_is_carried() {
        let dir = tempfile::tempdir().unwrap();
        let from = Store::open(dir.path()).unwrap();
        put_second(&from, 1_000, "v1", "", &record(1, 0));
        let key = disk::PointKey {
            time_unix_s: 1_001,
            service: "shop",
            version: "v1",
            proxy: "",
            mirrored: false,
        };
        from.tree("stats")
            .unwrap()
            .insert(key.encode(), &[0xff, 0xff, 0xff][..])
            .unwrap();
        let e = Carried::read(&from, 1_100).await.unwrap_err();
        assert!(format!("{e:#}").contains("shop/v1 at 1001"), "{e:#}");
    }
}
