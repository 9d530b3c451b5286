//! Statistics in etcd, for several replicas: every report a proxy sends, to whichever
//! replica, is written once with the proxy's watermark in one etcd transaction (committed by
//! the quorum before the report is acknowledged), and every replica reads every report back
//! through a watch. So any replica shows all traffic, and a replica that dies loses nothing
//! it acknowledged.
//!
//! Why a shared store and not fan-out between replicas: etcd is already there, it orders and
//! keeps the reports through the loss of any replica, and a replica that starts (or comes
//! back) reads the last hour from it instead of asking peers that may be gone. The cost is
//! one small transaction per proxy per second; docs/operations.md gives the numbers.
//!
//! Keys, under the prefix: `stats/reports/<time ms, 20 digits>/<proxy>/<boot>/<sequence>`
//! (the report itself, protobuf) and `stats/seen/<proxy>/<boot>` (the highest sequence
//! counted). Both are written with a lease that outlives the retention, so etcd forgets them
//! on its own.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use grayline_proto::v1 as pb;
use prost::Message as _;
use tokio::sync::{Mutex, mpsc};

use super::RETENTION_SECS;
use crate::error::ApiError;
use crate::store::etcd::Etcd;

/// A lease covers the reports of this long, and lives the retention beyond.
const LEASE_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct EtcdStats {
    etcd: Etcd,
    /// The lease new reports go under, and when it was granted.
    lease: Mutex<Option<(i64, Instant)>>,
}

fn part(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

impl EtcdStats {
    pub fn new(etcd: Etcd) -> EtcdStats {
        EtcdStats {
            etcd,
            lease: Mutex::new(None),
        }
    }

    fn reports_prefix(&self) -> String {
        self.etcd.key("stats/reports/")
    }

    fn report_key(&self, r: &pb::StatsReport) -> String {
        format!(
            "{}{:020}/{}/{}/{:020}",
            self.reports_prefix(),
            r.time_unix_ms.max(0),
            part(&r.proxy_id),
            part(&r.boot_id),
            r.sequence
        )
    }

    fn seen_key(&self, r: &pb::StatsReport) -> String {
        self.etcd.key(&format!(
            "stats/seen/{}/{}",
            part(&r.proxy_id),
            part(&r.boot_id)
        ))
    }

    async fn lease(&self) -> Result<i64, ApiError> {
        let mut lease = self.lease.lock().await;
        if let Some((id, granted)) = *lease
            && granted.elapsed() < LEASE_EVERY
        {
            return Ok(id);
        }
        let ttl = RETENTION_SECS + LEASE_EVERY.as_secs() as i64 * 2;
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
    /// was counted before (by this replica or another).
    pub async fn persist(&self, r: &pb::StatsReport) -> Result<bool, ApiError> {
        let seen_key = self.seen_key(r);
        let lease = self.lease().await?;
        loop {
            let seen = self
                .etcd
                .get(seen_key.clone(), None)
                .await
                .map_err(|e| self.etcd.unavailable(e))?;
            let (mod_revision, counted) = match seen.kvs().first() {
                Some(kv) => (
                    kv.mod_revision(),
                    kv.value_str()
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0),
                ),
                None => (0, 0),
            };
            if r.sequence <= counted {
                return Ok(false);
            }
            let options = || Some(PutOptions::new().with_lease(lease));
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    seen_key.clone(),
                    CompareOp::Equal,
                    mod_revision,
                )])
                .and_then([
                    TxnOp::put(seen_key.clone(), r.sequence.to_string(), options()),
                    TxnOp::put(self.report_key(r), r.encode_to_vec(), options()),
                ]);
            let done = self
                .etcd
                .txn(txn)
                .await
                .map_err(|e| self.etcd.unavailable(e))?;
            if done.succeeded() {
                return Ok(true);
            }
            // Another replica counted a report of this proxy meanwhile: look again.
        }
    }

    /// Every report kept, and the etcd revision they were read at (to watch from).
    pub async fn load(&self) -> anyhow::Result<(Vec<pb::StatsReport>, i64)> {
        let resp = self
            .etcd
            .get(self.reports_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("reading the statistics from {}", self.etcd.url.describe()))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let reports = resp
            .kvs()
            .iter()
            .map(|kv| {
                pb::StatsReport::decode(kv.value()).with_context(|| {
                    format!(
                        "the stored report {} is damaged",
                        kv.key_str().unwrap_or("?")
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((reports, revision))
    }

    /// Reports written after etcd revision `from`, by any replica, until the receiver is
    /// dropped.
    pub fn watch(&self, from: i64) -> mpsc::Receiver<pb::StatsReport> {
        let mut changes = self.etcd.watch_prefix(self.reports_prefix(), from);
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(value) = change.value else { continue };
                match pb::StatsReport::decode(value.as_slice()) {
                    Ok(report) => {
                        if tx.send(report).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(key = change.key, error = %e, "a stored report is damaged")
                    }
                }
            }
        });
        rx
    }
}
