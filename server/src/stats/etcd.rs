//! Statistics in etcd, for several replicas. A replica counts the reports its proxies send in
//! group commits: reports that arrive while a commit runs wait for the next, which writes, in
//! one etcd transaction committed by the quorum, their counts summed per second and version
//! over all their proxies (one `StatsCommit` record) and each of those proxies' new
//! watermark, guarded on every watermark being what was read. Only then are the reports
//! acknowledged. Every replica reads every commit back through a watch, so any replica shows
//! all traffic, and a replica that dies loses nothing it acknowledged.
//!
//! What a commit writes grows with versions and seconds, not with proxies (the watermarks
//! are small and rewrite the same keys, whose old versions etcd's compaction drops), and the
//! transactions with the commit rate, at most one commit per [`COMMIT_GAP`] and replica: a
//! transaction carries up to [`PROCESSES_PER_TXN`] proxy processes (etcd's own limit is 128
//! operations per transaction branch).
//!
//! A report resent to another replica (its proxy reconnected) is counted once: the
//! watermark a commit writes is guarded, so two replicas committing reports of the same
//! proxy cannot both succeed; the loser reads the watermarks again and answers what the
//! winner counted as duplicates.
//!
//! Keys, under the prefix: `stats/commits/<time ms, 20 digits>/<replica>/<n, 20 digits>`
//! (a `StatsCommit`), `stats/seen/<proxy>/<boot>` (the highest sequence counted), and
//! `stats/reports/…` (one report each, as servers before group commits wrote them; still
//! read). All are written with a lease that outlives the retention, so etcd forgets them on
//! its own. The per-minute history: `stats/minutes/<service>/<version>/<l|m>/<minute>`, under
//! a lease of a week.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use grayline_proto::v1 as pb;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use prost::Message as _;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{RETENTION_SECS, disk, history, new_histogram};
use crate::error::ApiError;
use crate::store::etcd::Etcd;
use crate::store::now_unix_ms;
use grayline_routing::api::Point;

/// A lease covers the reports of this long, and lives the retention beyond.
const LEASE_EVERY: Duration = Duration::from_secs(600);
/// Proxy processes per transaction: each has a guard and a watermark in it.
pub const PROCESSES_PER_TXN: usize = 100;
/// The most a migration puts in one commit record (etcd takes requests up to 1.5 MiB).
const CARRIED_BYTES: usize = 512 * 1024;
/// A replica starts a commit at most this often; reports that arrive meanwhile wait for it
/// (a proxy reports once a second, so this is latency nobody waits on). Without it a busy
/// replica commits back to back, as fast as etcd answers (110 transactions a second for
/// 1,000 proxies on three replicas, each record a few KB that etcd keeps for the hour).
pub const COMMIT_GAP: Duration = Duration::from_millis(200);

/// Why a commit failed, for every report in it.
#[derive(Clone, Debug)]
struct Refusal {
    full: bool,
    message: String,
}

impl Refusal {
    fn of(e: ApiError) -> Refusal {
        Refusal {
            full: matches!(e, ApiError::StoreFull(_)),
            message: e.to_string(),
        }
    }

    fn error(&self) -> ApiError {
        if self.full {
            ApiError::StoreFull(self.message.clone())
        } else {
            ApiError::Unavailable(self.message.clone())
        }
    }
}

/// What a replica's watch reads back.
#[derive(Debug)]
pub enum Stored {
    /// A group commit of this or another replica.
    Commit(pb::StatsCommit),
    /// One report, as servers before group commits wrote it.
    Report(pb::StatsReport),
}

#[derive(Debug)]
struct Queued {
    report: pb::StatsReport,
    /// Whether it was counted now (`false`: counted before), or why it was not.
    answer: oneshot::Sender<Result<bool, ApiError>>,
}

#[derive(Debug)]
pub struct EtcdStats {
    etcd: Etcd,
    /// The lease new records go under, and when it was granted.
    lease: Mutex<Option<(i64, Instant)>>,
    /// The lease the history's minutes go under, and when it was granted.
    minutes_lease: Mutex<Option<(i64, Instant)>>,
    /// Names this replica's commits (a random id per start).
    replica: String,
    commits: AtomicU64,
    /// Reports waiting for the next commit.
    queue: std::sync::Mutex<Vec<Queued>>,
    /// Held while committing: when the last commit started.
    committing: Mutex<Option<Instant>>,
}

fn part(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

impl EtcdStats {
    pub fn new(etcd: Etcd) -> EtcdStats {
        EtcdStats {
            etcd,
            lease: Mutex::new(None),
            minutes_lease: Mutex::new(None),
            replica: format!("{:016x}", fastrand::u64(..)),
            commits: AtomicU64::new(0),
            queue: std::sync::Mutex::new(Vec::new()),
            committing: Mutex::new(None),
        }
    }

    fn reports_prefix(&self) -> String {
        self.etcd.key("stats/reports/")
    }

    fn commits_prefix(&self) -> String {
        self.etcd.key("stats/commits/")
    }

    fn commit_key(&self) -> String {
        let n = self.commits.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}{:020}/{}/{n:020}",
            self.commits_prefix(),
            now_unix_ms().max(0),
            self.replica
        )
    }

    fn seen_key(&self, (proxy, boot): &(String, String)) -> String {
        self.etcd
            .key(&format!("stats/seen/{}/{}", part(proxy), part(boot)))
    }

    /// The lease new commits go under: one for every [`LEASE_EVERY`] of them, living the
    /// retention beyond.
    async fn lease(&self) -> Result<i64, ApiError> {
        let ttl = RETENTION_SECS + LEASE_EVERY.as_secs() as i64 * 2;
        self.shared_lease(&self.lease, LEASE_EVERY, ttl).await
    }

    /// The lease in `slot` while it is younger than `every`, else a new one of `ttl` seconds:
    /// a lease per stretch of records, not one per write.
    async fn shared_lease(
        &self,
        slot: &Mutex<Option<(i64, Instant)>>,
        every: Duration,
        ttl: i64,
    ) -> Result<i64, ApiError> {
        let mut lease = slot.lock().await;
        if let Some((id, granted)) = *lease
            && granted.elapsed() < every
        {
            return Ok(id);
        }
        let granted = self
            .etcd
            .client()
            .lease_client()
            .grant(ttl, None)
            .await
            .map_err(|e| self.etcd.unavailable(e))?;
        *lease = Some((granted.id(), Instant::now()));
        Ok(granted.id())
    }

    /// Counts `r` once across every replica: `true` if it is new, `false` if its sequence
    /// was counted before (by this replica or another). Returns once the commit that holds
    /// it (or the watermark that covers it) is committed by the quorum.
    pub async fn persist(&self, r: &pb::StatsReport) -> Result<bool, ApiError> {
        let (tx, mut rx) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Queued {
                report: r.clone(),
                answer: tx,
            });
        // The answer, once a commit gave it; `Closed`: a commit that took the report was
        // dropped half-way (its caller cancelled), so nobody will.
        let answered = |rx: &mut oneshot::Receiver<_>| match rx.try_recv() {
            Ok(answer) => Some(answer),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(ApiError::Unavailable(
                "the statistics commit that held this report was cancelled; send it again".into(),
            ))),
        };
        loop {
            if let Some(answer) = answered(&mut rx) {
                return answer;
            }
            let mut last = self.committing.lock().await;
            // The commit we waited behind may have taken it.
            if let Some(answer) = answered(&mut rx) {
                return answer;
            }
            if let Some(started) = *last {
                tokio::time::sleep_until((started + COMMIT_GAP).into()).await;
            }
            *last = Some(Instant::now());
            let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
            self.commit(batch).await;
        }
    }

    /// Commits `batch`, answering every report in it.
    async fn commit(&self, batch: Vec<Queued>) {
        let mut processes: BTreeMap<(String, String), Vec<Queued>> = BTreeMap::new();
        for q in batch {
            let id = (q.report.proxy_id.clone(), q.report.boot_id.clone());
            processes.entry(id).or_default().push(q);
        }
        let mut processes: Vec<_> = processes.into_iter().collect();
        while !processes.is_empty() {
            let rest = processes.split_off(processes.len().min(PROCESSES_PER_TXN));
            let chunk = std::mem::replace(&mut processes, rest);
            let answers = self.commit_chunk(&chunk).await;
            for ((_, queued), answer) in chunk.into_iter().zip(answers) {
                for (q, counted) in queued.into_iter().zip(answer.iter()) {
                    let _ = q.answer.send(match counted {
                        Ok(c) => Ok(*c),
                        Err(refusal) => Err(refusal.error()),
                    });
                }
            }
        }
    }

    /// Commits the reports of up to [`PROCESSES_PER_TXN`] proxy processes in one guarded
    /// transaction, again while another replica moves one of their watermarks meanwhile.
    /// Answers, per process and report: counted now, counted before, or why not.
    async fn commit_chunk(
        &self,
        chunk: &[((String, String), Vec<Queued>)],
    ) -> Vec<Vec<Result<bool, Refusal>>> {
        let failed = |e: ApiError| {
            let refusal = Refusal::of(e);
            chunk
                .iter()
                .map(|(_, q)| vec![Err(refusal.clone()); q.len()])
                .collect()
        };
        let lease = match self.lease().await {
            Ok(lease) => lease,
            Err(e) => return failed(e),
        };
        loop {
            let seen = match self.watermarks(chunk.iter().map(|(id, _)| id)).await {
                Ok(seen) => seen,
                Err(e) => return failed(e),
            };
            let mut answers = Vec::with_capacity(chunk.len());
            let mut guards = Vec::new();
            let mut writes = Vec::new();
            let mut new = Vec::new();
            for ((id, queued), (revision, counted)) in chunk.iter().zip(&seen) {
                let fresh: Vec<bool> = queued
                    .iter()
                    .map(|q| q.report.sequence > *counted)
                    .collect();
                let newest = queued
                    .iter()
                    .map(|q| q.report.sequence)
                    .filter(|s| s > counted)
                    .max();
                if let Some(newest) = newest {
                    let key = self.seen_key(id);
                    guards.push(Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        *revision,
                    ));
                    writes.push(TxnOp::put(
                        key,
                        newest.to_string(),
                        Some(PutOptions::new().with_lease(lease)),
                    ));
                    // A resend within one batch is counted once.
                    let mut taken = std::collections::HashSet::new();
                    new.extend(
                        queued
                            .iter()
                            .filter(|q| q.report.sequence > *counted)
                            .filter(|q| taken.insert(q.report.sequence))
                            .map(|q| &q.report),
                    );
                }
                answers.push(fresh.into_iter().map(Ok).collect::<Vec<_>>());
            }
            if new.is_empty() {
                return answers;
            }
            let record = summed(&new, now_unix_ms() / 1000);
            writes.push(TxnOp::put(
                self.commit_key(),
                record.encode_to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            ));
            match self
                .etcd
                .txn(Txn::new().when(guards).and_then(writes))
                .await
            {
                Ok(done) if done.succeeded() => return answers,
                // Another replica counted a report of one of these proxies meanwhile.
                Ok(_) => continue,
                Err(e) => return failed(self.etcd.unavailable(e)),
            }
        }
    }

    /// Each process's watermark as the quorum has it: its key's mod revision (0: none) and
    /// the highest sequence counted.
    async fn watermarks(
        &self,
        ids: impl Iterator<Item = &(String, String)>,
    ) -> Result<Vec<(i64, u64)>, ApiError> {
        let reads: Vec<TxnOp> = ids.map(|id| TxnOp::get(self.seen_key(id), None)).collect();
        let done = self
            .etcd
            .txn(Txn::new().and_then(reads))
            .await
            .map_err(|e| self.etcd.unavailable(e))?;
        Ok(done
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map_or((0, 0), |kv| {
                    (
                        kv.mod_revision(),
                        kv.value_str()
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0),
                    )
                }),
                _ => (0, 0),
            })
            .collect())
    }

    /// Every proxy process's watermark: `((proxy, boot), highest sequence counted)`.
    pub async fn all_watermarks(&self) -> anyhow::Result<Vec<((String, String), u64)>> {
        let prefix = self.etcd.key("stats/seen/");
        let resp = self
            .etcd
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("reading the watermarks from {}", self.etcd.url.describe()))?;
        let name = |s: &str| urlencoding::decode(s).map(|s| s.into_owned());
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = kv.key_str().unwrap_or_default();
            let parsed = key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(proxy, boot)| Some((name(proxy).ok()?, name(boot).ok()?)))
                .zip(kv.value_str().ok().and_then(|v| v.parse::<u64>().ok()));
            let Some((id, sequence)) = parsed else {
                anyhow::bail!("the stored watermark {key} is damaged");
            };
            out.push((id, sequence));
        }
        Ok(out)
    }

    /// Writes `seconds` (a migration's) as group commits of at most [`CARRIED_BYTES`] each,
    /// under the lease new commits go under.
    pub async fn put_seconds(&self, seconds: &[pb::CommittedSecond]) -> Result<(), ApiError> {
        let lease = self.lease().await?;
        let mut commit = pb::StatsCommit::default();
        let mut bytes = 0;
        for (i, second) in seconds.iter().enumerate() {
            bytes += second.encoded_len();
            commit.seconds.push(second.clone());
            if bytes >= CARRIED_BYTES || i + 1 == seconds.len() {
                let put = TxnOp::put(
                    self.commit_key(),
                    std::mem::take(&mut commit).encode_to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                );
                self.etcd
                    .txn(Txn::new().and_then([put]))
                    .await
                    .map_err(|e| self.etcd.unavailable(e))?;
                bytes = 0;
            }
        }
        Ok(())
    }

    /// Writes watermarks (a migration's) as a commit would, [`PROCESSES_PER_TXN`] a
    /// transaction.
    pub async fn put_watermarks(&self, marks: &[((String, String), u64)]) -> Result<(), ApiError> {
        let lease = self.lease().await?;
        for chunk in marks.chunks(PROCESSES_PER_TXN) {
            let puts: Vec<TxnOp> = chunk
                .iter()
                .map(|(id, sequence)| {
                    TxnOp::put(
                        self.seen_key(id),
                        sequence.to_string(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                })
                .collect();
            self.etcd
                .txn(Txn::new().and_then(puts))
                .await
                .map_err(|e| self.etcd.unavailable(e))?;
        }
        Ok(())
    }

    fn minutes_prefix(&self) -> String {
        self.etcd.key("stats/minutes/")
    }

    /// Writes finished minutes of the history (records as [`history`] encodes them, keys
    /// as it encodes them for sled, turned into text keys here), under a lease granted once a
    /// day that outlives the history's week. Every replica writes the minutes it computed from the same commits,
    /// so the values agree, and the last write wins.
    pub async fn put_minutes(&self, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        // One lease a day, living the week beyond.
        const DAY: Duration = Duration::from_secs(86_400);
        let ttl = history::HISTORY_MINUTES * 60 + DAY.as_secs() as i64;
        let lease = self.shared_lease(&self.minutes_lease, DAY, ttl).await?;
        let mut puts = Vec::with_capacity(records.len());
        for (key, value) in records {
            let Ok(k) = history::decode_key(&key) else {
                continue;
            };
            let key = format!(
                "{}{}/{}/{}/{:012}",
                self.minutes_prefix(),
                part(k.service),
                part(k.version),
                if k.mirrored { "m" } else { "l" },
                k.minute
            );
            puts.push(TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        while !puts.is_empty() {
            let rest = puts.split_off(puts.len().min(PROCESSES_PER_TXN));
            let chunk = std::mem::replace(&mut puts, rest);
            self.etcd
                .txn(Txn::new().and_then(chunk))
                .await
                .map_err(|e| self.etcd.unavailable(e))?;
        }
        Ok(())
    }

    /// The history's minutes of `service` (or all) from `first` to `last`, as `(service,
    /// version, mirrored, point)` in key order (series together, oldest first).
    pub async fn minutes(
        &self,
        service: Option<&str>,
        first: i64,
        last: i64,
    ) -> Result<Vec<(String, String, bool, Point)>, ApiError> {
        let prefix = match service {
            Some(s) => format!("{}{}/", self.minutes_prefix(), part(s)),
            None => self.minutes_prefix(),
        };
        // Serializable: a replica cut off from the quorum still shows its history.
        let resp = self
            .etcd
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_serializable()),
            )
            .await
            .map_err(|e| self.etcd.unavailable(e))?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = kv.key_str().unwrap_or_default();
            let rest = key.strip_prefix(&self.minutes_prefix()).unwrap_or_default();
            let parts: Vec<&str> = rest.split('/').collect();
            let [service, version, kind, minute] = parts[..] else {
                continue;
            };
            let Ok(minute) = minute.parse::<i64>() else {
                continue;
            };
            if minute < first || minute > last {
                continue;
            }
            let point = history::decode(minute, kv.value()).map_err(|e| {
                ApiError::Internal(e.context(format!("the stored minute {key} is damaged")))
            })?;
            let name = |s: &str| {
                urlencoding::decode(s)
                    .map(|s| s.into_owned())
                    .unwrap_or_default()
            };
            out.push((name(service), name(version), kind == "m", point));
        }
        Ok(out)
    }

    /// Everything kept, and the etcd revision it was read at (to watch from).
    pub async fn load(&self) -> anyhow::Result<(Vec<Stored>, i64)> {
        let read = Txn::new().and_then([
            TxnOp::get(self.reports_prefix(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(self.commits_prefix(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp =
            self.etcd.txn(read).await.with_context(|| {
                format!("reading the statistics from {}", self.etcd.url.describe())
            })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::new();
        for op in resp.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                let key = kv.key_str().unwrap_or("?");
                out.push(
                    decode(key, kv.value(), &self.commits_prefix())
                        .with_context(|| format!("the stored statistics {key} are damaged"))?,
                );
            }
        }
        Ok((out, revision))
    }

    /// Commits and reports written after etcd revision `from`, by any replica, until the
    /// receiver is dropped.
    pub fn watch(&self, from: i64) -> mpsc::Receiver<Stored> {
        let (tx, rx) = mpsc::channel(4096);
        let commits = self.commits_prefix();
        for prefix in [self.reports_prefix(), self.commits_prefix()] {
            let mut changes = self.etcd.watch_prefix(prefix, from);
            let (tx, commits) = (tx.clone(), commits.clone());
            tokio::spawn(async move {
                while let Some(change) = changes.recv().await {
                    let Some(value) = change.value else { continue };
                    match decode(&change.key, &value, &commits) {
                        Ok(stored) => {
                            if tx.send(stored).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::error!(key = change.key, error = %e, "stored statistics are damaged")
                        }
                    }
                }
            });
        }
        rx
    }
}

fn decode(key: &str, value: &[u8], commits_prefix: &str) -> anyhow::Result<Stored> {
    Ok(if key.starts_with(commits_prefix) {
        Stored::Commit(pb::StatsCommit::decode(value)?)
    } else {
        Stored::Report(pb::StatsReport::decode(value)?)
    })
}

/// The second a report counts in, as of `now`: its interval's end, within the retention.
pub fn second_of(report: &pb::StatsReport, now: i64) -> i64 {
    (report.time_unix_ms / 1000).clamp(now - RETENTION_SECS + 1, now)
}

/// The reports summed per second and version (live and mirrored apart), latencies merged.
pub fn summed(reports: &[&pb::StatsReport], now: i64) -> pb::StatsCommit {
    type Key<'a> = (i64, &'a str, &'a str, bool);
    let mut sums: HashMap<Key<'_>, (pb::VersionStats, Histogram<u64>)> = HashMap::new();
    for r in reports {
        let t = second_of(r, now);
        for v in &r.versions {
            let (sum, latency) = sums
                .entry((t, &v.service, &v.version, v.mirrored))
                .or_insert_with(|| {
                    let empty = pb::VersionStats {
                        service: v.service.clone(),
                        version: v.version.clone(),
                        mirrored: v.mirrored,
                        ..pb::VersionStats::default()
                    };
                    (empty, new_histogram())
                });
            disk::merge_counts(sum, v);
            if let Some(h) = disk::decode_histogram(&v.latency_histogram) {
                let _ = latency.add(&h);
            }
        }
    }
    let mut seconds: Vec<_> = sums
        .into_iter()
        .map(|((t, ..), (mut stats, latency))| {
            if !latency.is_empty() {
                let _ = V2Serializer::new().serialize(&latency, &mut stats.latency_histogram);
            }
            pb::CommittedSecond {
                time_unix_s: t,
                stats: Some(stats),
            }
        })
        .collect();
    seconds.sort_by_key(|s| s.time_unix_s);
    pb::StatsCommit { seconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_sum_per_second_and_version_with_their_latencies() {
        let report = |proxy: &str, t_ms: i64, ok: u64, latency_us: u64, mirrored: bool| {
            let mut h = new_histogram();
            h.record_n(latency_us, ok).unwrap();
            let mut bytes = Vec::new();
            V2Serializer::new().serialize(&h, &mut bytes).unwrap();
            pb::StatsReport {
                proxy_id: proxy.into(),
                boot_id: "b".into(),
                sequence: 1,
                time_unix_ms: t_ms,
                versions: vec![pb::VersionStats {
                    service: "shop".into(),
                    version: "v2".into(),
                    status_2xx: ok,
                    judged: ok,
                    judged_latency: vec![ok],
                    mirrored,
                    latency_histogram: bytes,
                    ..Default::default()
                }],
            }
        };
        let now = 1_800_000_000;
        let reports = [
            report("p1", now * 1000, 3, 1_000, false),
            report("p2", now * 1000 + 400, 5, 9_000, false),
            report("p3", (now - 1) * 1000, 7, 2_000, false),
            report("p1", now * 1000, 11, 50_000, true),
            // From the future (a clock ahead): counted now.
            report("p4", (now + 30) * 1000, 1, 1_000, false),
        ];
        let commit = summed(&reports.iter().collect::<Vec<_>>(), now);
        let got: Vec<_> = commit
            .seconds
            .iter()
            .map(|s| {
                let v = s.stats.as_ref().unwrap();
                let h = disk::decode_histogram(&v.latency_histogram).unwrap();
                (
                    s.time_unix_s,
                    v.mirrored,
                    v.status_2xx,
                    v.judged,
                    h.len(),
                    h.max() / 1000,
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            got,
            [
                (now - 1, false, 7, 7, 7, 2),
                (now, false, 9, 9, 9, 9),
                (now, true, 11, 11, 11, 50),
            ]
        );
    }
}
