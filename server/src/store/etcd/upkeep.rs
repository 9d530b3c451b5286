//! What a replica does for the etcd it stores in, besides reading and writing it.
//!
//! **Compaction.** etcd keeps every revision of every key until it is compacted, and
//! Grayline rewrites the same keys all the time (the proxies' statistics watermarks, the
//! leader and instance leases): without compaction its database grows until it reaches its
//! space quota (2 GiB by default) and refuses every write. Each replica notes etcd's revision
//! every [`NOTE_EVERY`] and compacts the history older than [`KEEP_HISTORY`]: nothing of
//! Grayline's lives in old revisions (the catalog's history is kept in keys of its own), and
//! a watch that fell that far behind has been resumed long since. Several replicas compacting
//! is harmless: etcd refuses a compaction at or below the one done, which is ignored.
//!
//! **Whether the store takes writes.** Every [`CHECK_EVERY`] a replica reads etcd's alarms
//! and its database size: a NOSPACE alarm means etcd refuses every write until an operator
//! makes room and disarms it (docs/operations.md). The replica says so on `/readyz`, in
//! `grayline_server_store_refusing_writes`, and in every refused write's answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, CompactionOptions, GetOptions};
use tokio_util::sync::CancellationToken;

use super::Etcd;
use crate::metrics::ServerMetrics;

/// How long old revisions are kept before they are compacted away.
pub const KEEP_HISTORY: Duration = Duration::from_secs(300);
/// How often etcd's revision is noted (and a compaction considered).
pub const NOTE_EVERY: Duration = Duration::from_secs(60);
/// How often etcd's alarms and size are read.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

impl Etcd {
    /// Compacts and checks until `stop`.
    pub fn spawn_upkeep(&self, metrics: std::sync::Arc<ServerMetrics>, stop: CancellationToken) {
        let etcd = self.clone();
        tokio::spawn(async move {
            let mut noted: VecDeque<(Instant, i64)> = VecDeque::new();
            let mut compacted = 0;
            let mut last_note: Option<Instant> = None;
            let mut every = tokio::time::interval(CHECK_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = stop.cancelled() => return,
                }
                etcd.check(&metrics).await;
                if last_note.is_some_and(|t| t.elapsed() < NOTE_EVERY) {
                    continue;
                }
                last_note = Some(Instant::now());
                if let Some(revision) = etcd.current_revision().await {
                    noted.push_back((Instant::now(), revision));
                }
                let mut due = None;
                while let Some(&(at, revision)) = noted.front() {
                    if at.elapsed() < KEEP_HISTORY {
                        break;
                    }
                    due = Some(revision);
                    noted.pop_front();
                }
                if let Some(revision) = due.filter(|r| *r > compacted) {
                    etcd.compact(revision).await;
                    compacted = revision;
                }
            }
        });
    }

    async fn current_revision(&self) -> Option<i64> {
        // Any read carries the store's revision; a key that does not exist is the cheapest.
        let resp = self
            .get(
                self.key("meta/revision"),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .ok()?;
        resp.header().map(|h| h.revision())
    }

    async fn compact(&self, revision: i64) {
        let started = Instant::now();
        match self
            .client()
            .compact(revision, Some(CompactionOptions::new()))
            .await
        {
            Ok(_) => tracing::debug!(
                revision,
                ms = started.elapsed().as_millis() as u64,
                "the store's old revisions compacted"
            ),
            // Another replica (or etcd's own auto-compaction) was there first.
            Err(e) if e.to_string().contains("compacted") => {}
            Err(e) => {
                tracing::warn!(error = %e, revision, "compacting the store failed; tried again later")
            }
        }
    }

    /// Reads the alarms and size, and publishes whether the store takes writes.
    async fn check(&self, metrics: &ServerMetrics) {
        let mut client = self.client();
        match client.alarm(AlarmAction::Get, AlarmType::None, None).await {
            Ok(alarms) => {
                let full = alarms
                    .alarms()
                    .iter()
                    .any(|a| a.alarm() == AlarmType::Nospace);
                let why = full.then(|| {
                    "etcd raised its NOSPACE alarm (database space exceeded): it refuses every \
                     write until room is made and the alarm disarmed (docs/operations.md)"
                        .to_string()
                });
                let was = self.refusing();
                if was.is_some() != why.is_some() {
                    match &why {
                        Some(why) => {
                            tracing::error!(store = %self.url.describe(), "the store refuses writes: {why}")
                        }
                        None => {
                            tracing::info!(store = %self.url.describe(), "the store takes writes again")
                        }
                    }
                }
                metrics.store_refusing_writes.set(i64::from(full));
                self.set_refusing(why);
            }
            Err(e) => tracing::debug!(error = %e, "reading the store's alarms failed"),
        }
        if let Ok(status) = client.status().await {
            metrics.store_db_bytes.set(status.db_size());
        }
    }
}
