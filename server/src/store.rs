//! The sled store: services, their revisions and the history of every change.
//!
//! Every accepted change gets the next global revision and is written, with its history entry,
//! in one sled transaction that is flushed to disk before the write is acknowledged. A single
//! writer at a time (an async mutex) keeps revisions dense and checks race-free. An in-memory
//! copy of the catalog is published on a `watch` channel after each write, which is what the
//! proxy streams and the read APIs serve from.

use std::collections::BTreeMap;
use std::path::Path;
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
pub use durable::Durable;

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

impl Store {
    /// Opens (or creates) the store in `dir` and loads the catalog.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
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
        let (catalog, _) = watch::channel(Arc::new(catalog));
        let (events, _) = broadcast::channel(1024);
        Ok(Store {
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

    /// Another tree of the same database, for state that lives beside the catalog
    /// (statistics, rollouts); writes to it become durable with [`Store::durable`].
    pub fn tree(&self, name: &str) -> anyhow::Result<sled::Tree> {
        self.db
            .open_tree(name)
            .with_context(|| format!("opening the sled tree {name}"))
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
}
