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
use crate::store::integrity::{self, Damaged};
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

/// Every stored rollout and the next id to give out, each record decoded: a record that
/// does not is damage, named.
pub fn load(tree: &sled::Tree) -> Result<(BTreeMap<u64, Record>, u64), Damaged> {
    let mut records = BTreeMap::new();
    let mut next_id = 1;
    for item in integrity::records("rollouts", tree) {
        let (k, v) = item?;
        if k.as_ref() == NEXT_ID_KEY {
            let stored = v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
                Damaged::new(
                    "rollouts",
                    "the next rollout id",
                    format!("is {} bytes, not 8", v.len()),
                )
            })?;
            next_id = next_id.max(stored);
            continue;
        }
        let id = (k.len() == 9 && k[0] == b'r')
            .then(|| u64::from_be_bytes(k[1..].try_into().expect("8 bytes")))
            .ok_or_else(|| {
                Damaged::new(
                    "rollouts",
                    format!("key {}", integrity::printable(&k)),
                    "is not a rollout key",
                )
            })?;
        let record: Record = serde_json::from_slice(&v).map_err(|e| {
            Damaged::new(
                "rollouts",
                format!("rollout {id}"),
                format!("does not decode: {e}"),
            )
        })?;
        if record.rollout.id != id {
            return Err(Damaged::new(
                "rollouts",
                format!("rollout {id}"),
                format!("holds rollout {}", record.rollout.id),
            ));
        }
        next_id = next_id.max(id + 1);
        records.insert(id, record);
    }
    Ok((records, next_id))
}

/// Writes exported rollouts into an empty tree (the caller flushes).
pub fn import(tree: &sled::Tree, records: &[Record], next_id: u64) -> anyhow::Result<()> {
    anyhow::ensure!(tree.is_empty(), "the rollouts tree is not empty");
    let mut batch = sled::Batch::default();
    for record in records {
        batch.insert(
            &sled_key(record.rollout.id),
            serde_json::to_vec(record).context("encoding a rollout")?,
        );
    }
    batch.insert(NEXT_ID_KEY, &next_id.to_be_bytes());
    tree.apply_batch(batch)?;
    Ok(())
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
            Keep::Sled { tree, .. } => return Ok(load(tree)?),
            Keep::Etcd(etcd) => {
                let resp = etcd
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
                let done = etcd.txn(txn).await.map_err(|e| etcd.unavailable(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_damaged_rollout_record_is_named_when_loaded() {
        let cases: [(&[u8], &[u8], &str, &str); 3] = [
            (
                &sled_key(3),
                b"{\"rollout\":",
                "rollout 3",
                "does not decode",
            ),
            (NEXT_ID_KEY, b"\x01", "the next rollout id", "not 8"),
            (b"q", b"", "key q", "not a rollout key"),
        ];
        for (k, v, record, problem) in cases {
            let dir = tempfile::tempdir().unwrap();
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("rollouts").unwrap();
            tree.insert(k, v).unwrap();
            let d = load(&tree).unwrap_err();
            assert_eq!(
                (d.tree.as_str(), d.record.as_str()),
                ("rollouts", record),
                "{d}"
            );
            assert!(d.problem.contains(problem), "{d}");
        }
    }
}
