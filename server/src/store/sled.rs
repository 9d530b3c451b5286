//! The catalog in sled, for one server: trees `services`, `history`, `history_by_service`
//! and `meta`; each accepted change is one sled transaction (service, history entry, index,
//! revision), flushed through the group commit before the writer answers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{Catalog, Durable, HistoryEntry, ServiceRecord};
use crate::error::ApiError;

const REVISION_KEY: &[u8] = b"revision";

#[derive(Debug)]
pub struct Sled {
    db: sled::Db,
    durable: Arc<Durable>,
    services: sled::Tree,
    history: sled::Tree,
    by_service: sled::Tree,
    meta: sled::Tree,
}

impl Sled {
    /// Opens (or creates) the store in `dir` and reads the catalog.
    pub fn open(dir: &Path) -> anyhow::Result<(Sled, Catalog)> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .open()
            .with_context(|| format!("opening the sled store in {}", dir.display()))?;
        let services = db.open_tree("services")?;
        let history = db.open_tree("history")?;
        let by_service = db.open_tree("history_by_service")?;
        let meta = db.open_tree("meta")?;

        let revision = meta.get(REVISION_KEY)?.map_or(Ok(0), |v| decode_u64(&v))?;
        let mut catalog = Catalog {
            revision,
            services: BTreeMap::new(),
        };
        for item in services.iter() {
            let (key, value) = item?;
            let record: ServiceRecord = serde_json::from_slice(&value).with_context(|| {
                format!("decoding stored service {}", String::from_utf8_lossy(&key))
            })?;
            catalog
                .services
                .insert(record.service.name.clone(), Arc::new(record));
        }
        Ok((
            Sled {
                durable: Arc::new(Durable::new(db.clone())),
                db,
                services,
                history,
                by_service,
                meta,
            },
            catalog,
        ))
    }

    pub fn tree(&self, name: &str) -> anyhow::Result<sled::Tree> {
        self.db
            .open_tree(name)
            .with_context(|| format!("opening the sled tree {name}"))
    }

    pub fn durable(&self) -> Arc<Durable> {
        self.durable.clone()
    }

    /// Writes one change (the single writer makes it the next revision) and flushes.
    pub async fn commit(
        &self,
        record: Option<&ServiceRecord>,
        entry: &HistoryEntry,
    ) -> Result<(), ApiError> {
        let name = entry.service.as_str();
        let revision = entry.revision;
        let entry_bytes = serde_json::to_vec(entry).context("encoding history entry")?;
        let record_bytes = record
            .map(serde_json::to_vec)
            .transpose()
            .context("encoding service")?;
        let index_key = service_index_key(name, revision);
        (&self.services, &self.history, &self.by_service, &self.meta)
            .transaction(|(services, history, by_service, meta)| {
                match &record_bytes {
                    Some(bytes) => services.insert(name.as_bytes(), bytes.as_slice())?,
                    None => services.remove(name.as_bytes())?,
                };
                history.insert(&revision.to_be_bytes(), entry_bytes.as_slice())?;
                by_service.insert(index_key.as_slice(), &[])?;
                meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("sled transaction failed: {e:?}"))?;
        // An acknowledged write must survive a crash right after it.
        self.durable.sync().await?;
        Ok(())
    }

    pub fn entry(&self, revision: u64) -> Result<Option<HistoryEntry>, ApiError> {
        match self.history.get(revision.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode_entry(&bytes)?)),
        }
    }

    pub fn history(
        &self,
        service: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ApiError> {
        let upper = if before == 0 { u64::MAX } else { before };
        let mut out = Vec::new();
        match service {
            None => {
                for item in self.history.range(..upper.to_be_bytes()).rev().take(limit) {
                    let (_, bytes) = item?;
                    out.push(decode_entry(&bytes)?);
                }
            }
            Some(name) => {
                let start = service_index_key(name, 0);
                let end = service_index_key(name, upper);
                for item in self.by_service.range(start..end).rev().take(limit) {
                    let (key, _) = item?;
                    let revision = decode_u64(&key[key.len() - 8..])?;
                    if let Some(entry) = self.entry(revision)? {
                        out.push(entry);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn history_after(&self, after: u64) -> Result<Vec<HistoryEntry>, ApiError> {
        let mut out = Vec::new();
        for item in self
            .history
            .range((after.saturating_add(1)).to_be_bytes()..)
        {
            let (_, bytes) = item?;
            out.push(decode_entry(&bytes)?);
        }
        Ok(out)
    }
}

/// `name`, a NUL (which names cannot contain), then the revision big-endian, so one service's
/// entries sort together by revision.
fn service_index_key(name: &str, revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

fn decode_u64(bytes: &[u8]) -> anyhow::Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("corrupt revision: {} bytes", bytes.len()))?;
    Ok(u64::from_be_bytes(array))
}

fn decode_entry(bytes: &[u8]) -> Result<HistoryEntry, ApiError> {
    Ok(serde_json::from_slice(bytes).context("decoding history entry")?)
}
