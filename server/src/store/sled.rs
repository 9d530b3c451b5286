//! The catalog in sled, for one server: trees `services`, `history`, `history_by_service`
//! and `meta`; each accepted change is one sled transaction (service, history entry, index,
//! revision), flushed through the group commit before the writer answers. Everything is
//! read back and checked at open ([`integrity`]), and compared with the seal of the last
//! clean stop ([`seal`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{Catalog, Damaged, Durable, HistoryEntry, ServiceRecord, integrity, seal};
use crate::error::ApiError;

pub(super) const REVISION_KEY: &[u8] = b"revision";

#[derive(Debug)]
pub struct Sled {
    /// sled's directory (the seal of a clean stop sits in it too).
    dir: PathBuf,
    pub(super) db: sled::Db,
    durable: Arc<Durable>,
    pub(super) services: sled::Tree,
    pub(super) history: sled::Tree,
    pub(super) by_service: sled::Tree,
    pub(super) meta: sled::Tree,
}

/// Every tree of the database: the catalog's four, and those of [`Store::tree`]. Any other
/// name found at open is damage (or a newer Grayline's store).
const TREES: &[&[u8]] = &[
    b"__sled__default",
    b"services",
    b"history",
    b"history_by_service",
    b"meta",
    b"stats",
    b"stats_minutes",
    b"rollouts",
    b"instances",
];

/// What sled may keep of its pages in memory, as sled counts it. sled's own default is 1 GiB,
/// and the pages it writes stay cached: with statistics from 200 proxies (a record per
/// version per proxy per second, kept an hour on disk) the server grew by 0.4 MiB a second
/// and was still growing at 108 MiB after four minutes. sled's count is low by about three
/// times (a 16 MiB cache levelled off 41 MiB above the idle server, a 4 MiB one 27 MiB
/// above). After the start the statistics tree is only appended to, and pruned at its old end
/// once a minute; the configuration trees are small: a small cache costs nothing measurable
/// (acknowledgements took no longer).
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Opens sled in `dir`, saying plainly when another process holds it and when sled finds
/// its own files damaged.
pub(crate) fn open_sled(dir: &Path) -> anyhow::Result<sled::Db> {
    let opened = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(CACHE_BYTES)
        .open();
    match opened {
        Ok(db) => Ok(db),
        Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
            Err(anyhow::anyhow!(
                "the store in {} is in use by another process (a running grayline-server?); \
                 stop it first",
                dir.display()
            ))
        }
        Err(
            e @ (sled::Error::Corruption { .. }
            | sled::Error::ReportableBug(_)
            | sled::Error::Unsupported(_)),
        ) => Err(Damaged::new("sled", "its files", format!("cannot be opened: {e}")).into()),
        Err(sled::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Err(Damaged::new("sled", "its files", format!("cannot be opened: {e}")).into())
        }
        Err(e) => Err(e).with_context(|| format!("opening the sled store in {}", dir.display())),
    }
}

/// What a store is opened for, and so which trees must be intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Serving: every tree.
    Serve,
    /// Exporting: everything an export holds; statistics are not exported, so their tree
    /// may be damaged.
    Export,
}

impl Sled {
    /// Opens (or creates) the store in `dir` for `purpose`: reads back everything it holds,
    /// compares it with the seal of the last clean stop, and loads the catalog. A store that
    /// cannot be read in full, or holds less than it did, is refused with [`Damaged`].
    pub fn open_for(dir: &Path, purpose: Purpose) -> anyhow::Result<(Sled, Catalog)> {
        let db = open_sled(dir)?;
        for name in db.tree_names() {
            if !TREES.contains(&name.as_ref()) {
                return Err(Damaged::new(
                    "sled",
                    format!("tree {}", integrity::printable(&name)),
                    "is not a tree this server writes (damaged, or written by a newer Grayline)",
                )
                .into());
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(|e| integrity::unopened(name, e));
        let (services, history) = (tree("services")?, tree("history")?);
        let (by_service, meta) = (tree("history_by_service")?, tree("meta")?);
        let catalog = integrity::load(&services, &history, &by_service, &meta)?;
        // Every page of every tree read once, so sled has checked each checksum.
        let checked: Vec<&[u8]> = TREES
            .iter()
            .copied()
            .filter(|t| purpose == Purpose::Serve || !t.starts_with(b"stats"))
            .collect();
        let started = std::time::Instant::now();
        let digests = seal::digest(&db, &checked)?;
        tracing::info!(
            records = digests.values().map(|d| d.records).sum::<u64>(),
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "every record of the store read and digested"
        );
        if let Some(sealed) = seal::read(dir)? {
            seal::check(dir, &sealed, &digests, catalog.revision)?;
        }
        Ok((
            Sled {
                dir: dir.to_path_buf(),
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

    /// Removes the seal of the last clean stop, once everything is loaded and before the
    /// first write: from here on, only the next clean stop can say what the store holds.
    pub fn unseal(&self) -> anyhow::Result<()> {
        seal::remove(&self.dir)
    }

    /// At a clean stop, after the last write: flushes, and writes down what the store holds
    /// for the next start to compare.
    pub fn seal(&self, revision: u64) -> anyhow::Result<()> {
        self.db.flush().context("flushing the store")?;
        let trees = seal::digest(&self.db, TREES)?;
        seal::write(
            &self.dir,
            &seal::Seal::new(super::now_unix_ms(), revision, trees),
        )
    }

    /// Fills an empty store with an exported catalog and its complete history (checked by
    /// the caller with [`integrity::Replay`]), flushed before it returns.
    pub fn import(&self, catalog: &Catalog, history: &[HistoryEntry]) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.meta.get(REVISION_KEY)?.is_none()
                && self.history.is_empty()
                && self.services.is_empty(),
            "the store is not empty"
        );
        let mut entries = sled::Batch::default();
        let mut index = sled::Batch::default();
        for entry in history {
            entries.insert(
                &entry.revision.to_be_bytes(),
                serde_json::to_vec(entry).context("encoding a history entry")?,
            );
            index.insert(service_index_key(&entry.service, entry.revision), &[]);
        }
        let mut services = sled::Batch::default();
        for (name, record) in &catalog.services {
            services.insert(
                name.as_bytes(),
                serde_json::to_vec(record.as_ref()).context("encoding a service")?,
            );
        }
        self.history.apply_batch(entries)?;
        self.by_service.apply_batch(index)?;
        self.services.apply_batch(services)?;
        self.meta
            .insert(REVISION_KEY, &catalog.revision.to_be_bytes())?;
        self.db.flush().context("flushing the store")?;
        Ok(())
    }

    /// Another tree of the same database, one of [`TREES`].
    pub fn tree(&self, name: &str) -> anyhow::Result<sled::Tree> {
        anyhow::ensure!(
            TREES.contains(&name.as_bytes()),
            "the tree {name} is not in store::sled::TREES"
        );
        Ok(self
            .db
            .open_tree(name)
            .map_err(|e| integrity::unopened(name, e))?)
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
pub(super) fn service_index_key(name: &str, revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

pub(super) fn decode_u64(bytes: &[u8]) -> anyhow::Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("corrupt revision: {} bytes", bytes.len()))?;
    Ok(u64::from_be_bytes(array))
}

fn decode_entry(bytes: &[u8]) -> Result<HistoryEntry, ApiError> {
    Ok(serde_json::from_slice(bytes).context("decoding history entry")?)
}
