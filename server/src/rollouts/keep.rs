//! Where rollouts are kept: a sled tree beside the catalog (one server), or etcd (several
//! replicas, written only by the one that leads, each write fenced on still leading).
//!
//! sled keys: `r` + id (big-endian) → the record (JSON), `next_id`. etcd keys, under the
//! prefix: `rollouts/r/<id, 20 digits>`, `rollouts/next_id`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use etcd_client::{Compare, GetOptions, Txn, TxnOp};

use super::Record;
use crate::error::ApiError;
use crate::store::etcd::Etcd;
use crate::store::{Backend, Durable, Store};

#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one per server")]
pub enum Keep {
    Sled {
        tree: sled::Tree,
        durable: Arc<Durable>,
    },
    Etcd(Etcd),
}

const NEXT_ID_KEY: &[u8] = b"next_id";

fn sled_key(id: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Keep {
    /// Beside the catalog of `store`.
    pub fn beside(store: &Store) -> anyhow::Result<Keep> {
        Ok(match store.backend() {
            Backend::Sled(_) => Keep::Sled {
                tree: store.tree("rollouts")?,
                durable: store.durable().context("a sled store has a group commit")?,
            },
            Backend::Etcd(etcd) => Keep::Etcd(etcd.clone()),
        })
    }

    pub fn etcd(&self) -> Option<&Etcd> {
        match self {
            Keep::Etcd(e) => Some(e),
            Keep::Sled { .. } => None,
        }
    }

    /// Every rollout, and the next id to give out.
    pub async fn load(&self) -> anyhow::Result<(BTreeMap<u64, Record>, u64)> {
        let mut records = BTreeMap::new();
        let mut next_id = 1;
        match self {
            Keep::Sled { tree, .. } => {
                for item in tree.scan_prefix(b"r") {
                    let (k, v) = item.context("reading stored rollouts")?;
                    let id = k
                        .get(1..9)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes)
                        .with_context(|| format!("stored rollout key {k:?} is damaged"))?;
                    let record: Record = serde_json::from_slice(&v)
                        .with_context(|| format!("stored rollout {id} is damaged"))?;
                    records.insert(id, record);
                }
                if let Some(v) = tree.get(NEXT_ID_KEY)? {
                    next_id =
                        v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
                            anyhow::anyhow!("the stored next rollout id is damaged")
                        })?;
                }
            }
            Keep::Etcd(etcd) => {
                let resp = etcd
                    .client()
                    .kv_client()
                    .get(etcd.key("rollouts/"), Some(GetOptions::new().with_prefix()))
                    .await
                    .with_context(|| {
                        format!("reading the rollouts from {}", etcd.url.describe())
                    })?;
                let next_key = etcd.key("rollouts/next_id");
                for kv in resp.kvs() {
                    let key = kv.key_str().unwrap_or("?");
                    if key == next_key {
                        next_id = kv
                            .value_str()
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .context("the stored next rollout id is damaged")?;
                    } else if key.starts_with(&etcd.key("rollouts/r/")) {
                        let record: Record = serde_json::from_slice(kv.value())
                            .with_context(|| format!("stored rollout {key} is damaged"))?;
                        records.insert(record.rollout.id, record);
                    }
                }
            }
        }
        let highest = records.keys().next_back().copied().unwrap_or(0);
        Ok((records, next_id.max(highest + 1)))
    }

    /// Writes `record` (and the next id, when given) durably. With etcd, only while `fence`
    /// holds — that is, while this replica leads.
    pub async fn put(
        &self,
        record: &Record,
        next_id: Option<u64>,
        fence: Option<Compare>,
    ) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(record).context("encoding a rollout")?;
        match self {
            Keep::Sled { tree, durable } => {
                tree.insert(sled_key(record.rollout.id), bytes)?;
                if let Some(n) = next_id {
                    tree.insert(NEXT_ID_KEY, &n.to_be_bytes())?;
                }
                durable.sync().await?;
                Ok(())
            }
            Keep::Etcd(etcd) => {
                let mut ops = vec![TxnOp::put(
                    etcd.key(&format!("rollouts/r/{:020}", record.rollout.id)),
                    bytes,
                    None,
                )];
                if let Some(n) = next_id {
                    ops.push(TxnOp::put(
                        etcd.key("rollouts/next_id"),
                        n.to_string(),
                        None,
                    ));
                }
                let txn = match fence {
                    Some(f) => Txn::new().when([f]).and_then(ops),
                    None => Txn::new().and_then(ops),
                };
                let done = etcd
                    .client()
                    .kv_client()
                    .txn(txn)
                    .await
                    .map_err(|e| etcd.unavailable(e))?;
                if done.succeeded() {
                    Ok(())
                } else {
                    Err(ApiError::Unavailable(
                        "this replica no longer drives the rollouts (another one took over); \
                         try again"
                            .into(),
                    ))
                }
            }
        }
    }
}
