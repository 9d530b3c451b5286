//! The sled store: services, their revisions and the history of every change.
//!
//! Every accepted change gets the next global revision and is written, with its history entry,
//! in one sled transaction that is flushed to disk before the write is acknowledged. A single
//! writer at a time (an async mutex) keeps revisions dense and checks race-free. An in-memory
//! copy of the catalog is published on a `watch` channel after each write, which is what the
//! proxy streams and the read APIs serve from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use grayline_routing::catalog::conflicts;
use grayline_routing::{CompiledService, Invalid, Service};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tokio::sync::{Mutex, broadcast, watch};

use crate::error::ApiError;
pub use grayline_routing::api::{Action, HistoryEntry, ServiceRecord};

mod durable;
pub mod integrity;
mod seal;
pub use durable::Durable;
pub use integrity::Damaged;

/// The whole catalog at one revision.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub revision: u64,
    pub services: BTreeMap<String, Arc<ServiceRecord>>,
}

/// What an operation wants done to one service.
#[derive(Debug)]
pub struct Change {
    pub action: Action,
    /// The new state; `None` deletes the service.
    pub after: Option<Service>,
    pub summary: String,
}

/// Who asks for a change, on what revision they based it, and whether to only check it.
#[derive(Clone, Debug, Default)]
pub struct WriteContext {
    pub actor: String,
    pub expected_revision: Option<u64>,
    /// Check everything a write checks and answer as it would, but store nothing.
    pub dry_run: bool,
}

#[derive(Debug)]
pub struct Store {
    /// sled's directory (the seal of a clean stop sits in it too).
    dir: PathBuf,
    db: sled::Db,
    durable: Arc<Durable>,
    services: sled::Tree,
    history: sled::Tree,
    by_service: sled::Tree,
    meta: sled::Tree,
    writer: Mutex<()>,
    catalog: watch::Sender<Arc<Catalog>>,
    events: broadcast::Sender<Arc<HistoryEntry>>,
}

const REVISION_KEY: &[u8] = b"revision";

/// Every tree of the database: the catalog's four, and those of [`Store::tree`]. Any other
/// name found at open is damage (or a newer Grayline's store).
const TREES: &[&[u8]] = &[
    b"__sled__default",
    b"services",
    b"history",
    b"history_by_service",
    b"meta",
    b"stats",
    b"rollouts",
];

/// Opens sled in `dir`, saying plainly when another process holds it and when sled finds
/// its own files damaged.
fn open_sled(dir: &Path) -> anyhow::Result<sled::Db> {
    let opened = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::LowSpace)
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

impl Store {
    /// Opens (or creates) the store in `dir` to serve it: reads back everything it holds,
    /// compares it with the seal of the last clean stop, and loads the catalog. A store that
    /// cannot be read in full, or holds less than it did, is refused with [`Damaged`].
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        Self::open_for(dir, Purpose::Serve)
    }

    pub fn open_for(dir: &Path, purpose: Purpose) -> anyhow::Result<Store> {
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
            .filter(|t| purpose == Purpose::Serve || *t != b"stats")
            .collect();
        let digests = seal::digest(&db, &checked)?;
        if let Some(sealed) = seal::read(dir)? {
            seal::check(dir, &sealed, &digests, catalog.revision)?;
        }
        let (catalog, _) = watch::channel(Arc::new(catalog));
        let (events, _) = broadcast::channel(1024);
        Ok(Store {
            dir: dir.to_path_buf(),
            durable: Arc::new(Durable::new(db.clone())),
            db,
            services,
            history,
            by_service,
            meta,
            writer: Mutex::new(()),
            catalog,
            events,
        })
    }

    /// Removes the seal of the last clean stop, once everything is loaded and before the
    /// first write: from here on, only the next clean stop can say what the store holds.
    pub fn unseal(&self) -> anyhow::Result<()> {
        seal::remove(&self.dir)
    }

    /// At a clean stop, after the last write: flushes, and writes down what the store holds
    /// for the next start to compare.
    pub fn seal(&self) -> anyhow::Result<()> {
        self.db.flush().context("flushing the store")?;
        let trees = seal::digest(&self.db, TREES)?;
        seal::write(
            &self.dir,
            &seal::Seal::new(now_unix_ms(), self.catalog().revision, trees),
        )
    }

    /// Fills an empty store with an exported catalog and its complete history (checked by
    /// the caller with [`integrity::Replay`]), flushed before it returns.
    pub fn import(&self, catalog: &Catalog, history: &[HistoryEntry]) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.catalog().revision == 0 && self.history.is_empty() && self.services.is_empty(),
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
        self.catalog.send_replace(Arc::new(catalog.clone()));
        Ok(())
    }

    /// Another tree of the same database, for state that lives beside the catalog
    /// (statistics, rollouts); writes to it become durable with [`Store::durable`].
    pub fn tree(&self, name: &str) -> anyhow::Result<sled::Tree> {
        anyhow::ensure!(
            TREES.contains(&name.as_bytes()),
            "the tree {name} is not in store::TREES"
        );
        Ok(self
            .db
            .open_tree(name)
            .map_err(|e| integrity::unopened(name, e))?)
    }

    /// The group commit every durable write of this database goes through.
    pub fn durable(&self) -> Arc<Durable> {
        self.durable.clone()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Notified after every accepted write.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.subscribe()
    }

    /// Every accepted change as it happens (history entries).
    pub fn events(&self) -> broadcast::Receiver<Arc<HistoryEntry>> {
        self.events.subscribe()
    }

    pub fn get(&self, name: &str) -> Option<Arc<ServiceRecord>> {
        self.catalog.borrow().services.get(name).cloned()
    }

    /// Applies `change` to the service `name`: checks the expected revision, validates the
    /// result (including host conflicts with other services), assigns the next revision,
    /// writes service and history atomically and flushes before returning. With
    /// `cx.dry_run` it stops before writing and returns what it would have written.
    pub async fn write(
        &self,
        name: &str,
        cx: &WriteContext,
        change: impl FnOnce(Option<&ServiceRecord>) -> Result<Change, ApiError>,
    ) -> Result<(HistoryEntry, Option<ServiceRecord>), ApiError> {
        let _writer = self.writer.lock().await;
        let current = self.catalog();
        let existing = current.services.get(name).map(Arc::as_ref);
        if let (Some(expected), Some(record)) = (cx.expected_revision, existing)
            && expected != record.revision
        {
            return Err(ApiError::Conflict {
                service: name.to_string(),
                expected,
                actual: record.revision,
            });
        }
        let Change {
            action,
            after,
            summary,
        } = change(existing)?;

        if let Some(service) = &after {
            CompiledService::compile(service)?;
            let others: Vec<Service> = current
                .services
                .values()
                .filter(|r| r.service.name != service.name)
                .map(|r| r.service.clone())
                .collect();
            Invalid::check(conflicts(&others, service))?;
        }

        let revision = current.revision + 1;
        let entry = HistoryEntry {
            revision,
            service: name.to_string(),
            actor: cx.actor.clone(),
            time_unix_ms: now_unix_ms(),
            action,
            before: existing.map(|r| r.service.clone()),
            after: after.clone(),
            previous_revision: existing.map_or(0, |r| r.revision),
            summary,
        };
        let record = after.map(|service| ServiceRecord { service, revision });
        if cx.dry_run {
            return Ok((entry, record));
        }

        let entry_bytes = serde_json::to_vec(&entry).context("encoding history entry")?;
        let record_bytes = record
            .as_ref()
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

        let mut next = Catalog {
            revision,
            services: current.services.clone(),
        };
        match &record {
            Some(r) => next.services.insert(name.to_string(), Arc::new(r.clone())),
            None => next.services.remove(name),
        };
        self.catalog.send_replace(Arc::new(next));
        let _ = self.events.send(Arc::new(entry.clone()));
        Ok((entry, record))
    }

    /// The history entry of one revision.
    pub fn entry(&self, revision: u64) -> Result<Option<HistoryEntry>, ApiError> {
        match self.history.get(revision.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode_entry(&bytes)?)),
        }
    }

    /// Newest first: up to `limit` entries with revision below `before` (0 = no bound), for
    /// one service or (with `None`) all.
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

    /// Oldest first: every entry with revision above `after`, for replaying a watch.
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

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Calls `open` (which opens a store) until it does not find the store in use: right after
/// a store was dropped, sled's background threads may hold its lock for a moment. Polls with
/// a deadline; tests only.
#[cfg(test)]
pub(crate) fn when_free<T>(mut open: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e) if e.to_string().contains("in use") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::Version;

    fn cx() -> WriteContext {
        WriteContext {
            actor: "test".into(),
            ..WriteContext::default()
        }
    }

    fn service(name: &str) -> Service {
        let mut s = Service::single(name, Version::new("v1", &["127.0.0.1:1"]));
        s.hosts = vec![format!("{name}.example.com")];
        s
    }

    fn put(s: Service) -> impl FnOnce(Option<&ServiceRecord>) -> Result<Change, ApiError> {
        move |_| {
            Ok(Change {
                action: Action::Update,
                after: Some(s),
                summary: String::new(),
            })
        }
    }

    #[tokio::test]
    async fn revisions_history_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write("a", &cx(), put(service("a"))).await.unwrap();
            store.write("b", &cx(), put(service("b"))).await.unwrap();
            let mut changed = service("a");
            changed.path_prefix = "/x".into();
            let (entry, record) = store.write("a", &cx(), put(changed)).await.unwrap();
            assert_eq!(entry.revision, 3);
            assert_eq!(entry.previous_revision, 1);
            assert_eq!(record.unwrap().revision, 3);
            assert_eq!(store.catalog().revision, 3);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.catalog().revision, 3);
        assert_eq!(store.get("a").unwrap().service.path_prefix, "/x");
        let a: Vec<u64> = store
            .history(Some("a"), 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(a, [3, 1]);
        let all: Vec<u64> = store
            .history(None, 3, 10)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(all, [2, 1]);
        let replay: Vec<u64> = store
            .history_after(1)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(replay, [2, 3]);
    }

    #[tokio::test]
    async fn invalid_or_conflicting_writes_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.write("a", &cx(), put(service("a"))).await.unwrap();
        let mut bad = service("b");
        bad.stable = "nope".into();
        assert!(matches!(
            store.write("b", &cx(), put(bad)).await,
            Err(ApiError::Invalid(_))
        ));
        let mut clash = service("c");
        clash.hosts = vec!["a.example.com".into()];
        let err = store.write("c", &cx(), put(clash)).await.unwrap_err();
        assert!(
            err.to_string().contains("already served by service `a`"),
            "{err}"
        );
        let stale = WriteContext {
            actor: "x".into(),
            expected_revision: Some(7),
            dry_run: false,
        };
        let dry = WriteContext {
            dry_run: true,
            ..cx()
        };
        let (entry, _) = store.write("d", &dry, put(service("d"))).await.unwrap();
        assert_eq!(entry.revision, 2, "the revision it would get");
        assert!(store.get("d").is_none(), "a dry run stores nothing");
        assert!(matches!(
            store.write("a", &stale, put(service("a"))).await,
            Err(ApiError::Conflict { actual: 1, .. })
        ));
        assert_eq!(store.catalog().revision, 1);
        assert_eq!(store.history(None, 0, 10).unwrap().len(), 1);
    }

    fn reopen(dir: &Path, purpose: Purpose) -> anyhow::Result<Store> {
        when_free(|| Store::open_for(dir, purpose))
    }

    /// Opens the store in `dir`, damages it with `damage`, and returns what opening it
    /// again says.
    async fn damaged_by(damage: impl FnOnce(&Store)) -> Damaged {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write("a", &cx(), put(service("a"))).await.unwrap();
            store.write("b", &cx(), put(service("b"))).await.unwrap();
            damage(&store);
            store.db.flush().unwrap();
        }
        let err = reopen(dir.path(), Purpose::Serve).expect_err("a damaged store opens");
        err.downcast::<Damaged>().expect("reported as damage")
    }

    #[tokio::test]
    async fn every_damaged_record_is_named_at_open() {
        let check = |d: Damaged, tree: &str, record: &str, problem: &str| {
            assert_eq!((d.tree.as_str(), d.record.as_str()), (tree, record), "{d}");
            assert!(d.problem.contains(problem), "{d}");
        };
        let d = damaged_by(|s| {
            s.history
                .insert(2u64.to_be_bytes(), &b"{\"revision\": 2"[..])
                .unwrap();
        })
        .await;
        check(d, "history", "revision 2", "does not decode");
        let d = damaged_by(|s| {
            s.history.remove(1u64.to_be_bytes()).unwrap();
        })
        .await;
        check(d, "history", "revision 2", "where revision 1 should be");
        let d = damaged_by(|s| {
            s.history.remove(2u64.to_be_bytes()).unwrap();
        })
        .await;
        check(d, "history", "revision 2", "is missing");
        let d = damaged_by(|s| {
            s.by_service.remove(service_index_key("a", 1)).unwrap();
        })
        .await;
        check(
            d,
            "history_by_service",
            "service a revision 1",
            "is missing",
        );
        let d = damaged_by(|s| {
            s.by_service.insert(service_index_key("c", 9), &[]).unwrap();
        })
        .await;
        check(d, "history_by_service", "the index", "names 3 entries");
        let d = damaged_by(|s| {
            let mut other = ServiceRecord {
                service: service("b"),
                revision: 2,
            };
            other.service.path_prefix = "/elsewhere".into();
            s.services
                .insert("b", serde_json::to_vec(&other).unwrap())
                .unwrap();
        })
        .await;
        check(d, "services", "service b", "is not what the history");
        let d = damaged_by(|s| {
            s.services.remove("a").unwrap();
        })
        .await;
        check(d, "services", "service a", "is missing");
        let d = damaged_by(|s| {
            s.meta.insert("revisoin", &[0; 8]).unwrap();
        })
        .await;
        check(d, "meta", "key revisoin", "not a key this server writes");
        let d = damaged_by(|s| {
            s.db.open_tree("hist0ry").unwrap();
        })
        .await;
        check(d, "sled", "tree hist0ry", "not a tree this server writes");
        // What an operator reads: what is damaged, and the way out.
        let d = damaged_by(|s| {
            s.history.insert(1u64.to_be_bytes(), &b"x"[..]).unwrap();
        })
        .await;
        let said = d.explain(
            Path::new("/srv/grayline"),
            "the server does not start on it",
        );
        assert!(
            said.starts_with("the store in /srv/grayline is damaged (history: revision 1:")
                && said.contains("grayline-server import --data-dir NEW_DIR"),
            "{said}"
        );
    }

    /// sled after a bit flip: a consistent store, just older than it was. Only the seal of
    /// the last clean stop can tell.
    #[tokio::test]
    async fn the_seal_tells_an_older_store_from_the_one_that_stopped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write("a", &cx(), put(service("a"))).await.unwrap();
            store.write("b", &cx(), put(service("b"))).await.unwrap();
            store.seal().unwrap();
        }
        // Sealed and untouched: it opens, and can be opened again until it is unsealed.
        reopen(dir.path(), Purpose::Serve).unwrap();
        {
            let store = reopen(dir.path(), Purpose::Serve).unwrap();
            // The last write, gone as a whole: every tree agrees with the others.
            store.services.remove("b").unwrap();
            store.history.remove(2u64.to_be_bytes()).unwrap();
            store.by_service.remove(service_index_key("b", 2)).unwrap();
            store
                .meta
                .insert(REVISION_KEY, &1u64.to_be_bytes())
                .unwrap();
            store.db.flush().unwrap();
        }
        let err = reopen(dir.path(), Purpose::Serve).expect_err("an older store opens");
        let d = err.downcast::<Damaged>().unwrap();
        assert_eq!(d.tree, "history", "{d}");
        assert!(
            d.problem.contains("sled gave back 1 of the 2 records"),
            "{d}"
        );
        let salvage = d.salvage.clone().unwrap();
        assert!(
            salvage.contains("grayline-seal.json") && salvage.contains("revision 1 instead of 2"),
            "{salvage}"
        );
        // The way out without an export: without the seal it opens as what sled has.
        std::fs::remove_file(seal::path(dir.path())).unwrap();
        let store = reopen(dir.path(), Purpose::Serve).unwrap();
        assert_eq!(store.catalog().revision, 1);
        // Serving unseals: a crash from here on must not compare with a stale seal.
        store.seal().unwrap();
        store.unseal().unwrap();
        assert!(!seal::path(dir.path()).exists());
        // A damaged seal is not taken for a damaged store.
        store.seal().unwrap();
        drop(store);
        let text = std::fs::read_to_string(seal::path(dir.path())).unwrap();
        std::fs::write(
            seal::path(dir.path()),
            text.replacen("\"records\": 1", "\"records\": 7", 1),
        )
        .unwrap();
        let d = reopen(dir.path(), Purpose::Serve)
            .unwrap_err()
            .downcast::<Damaged>()
            .unwrap();
        assert_eq!(
            (d.tree.as_str(), d.problem.as_str()),
            ("seal", "does not match its own digest")
        );
        let said = d.explain(dir.path(), "the server does not start on it");
        assert!(
            said.contains("The seal may be all that is damaged: remove"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn an_export_does_not_need_the_statistics() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.write("a", &cx(), put(service("a"))).await.unwrap();
            store
                .tree("stats")
                .unwrap()
                .insert(b"p", &b"x"[..])
                .unwrap();
            store.seal().unwrap();
            store.tree("stats").unwrap().remove(b"p").unwrap();
            store.db.flush().unwrap();
        }
        let d = reopen(dir.path(), Purpose::Serve)
            .unwrap_err()
            .downcast::<Damaged>()
            .unwrap();
        assert_eq!(d.tree, "stats");
        assert!(
            d.explain(dir.path(), "x")
                .contains("Only statistics are damaged")
        );
        let store = reopen(dir.path(), Purpose::Export).unwrap();
        assert_eq!(store.catalog().services.len(), 1);
    }
}
