//! The store: services, their revisions and the history of every change — in sled for one
//! server ([`sled`]), or in etcd for several replicas ([`etcd`]).
//!
//! Every accepted change gets the next global revision and is written, with its history entry,
//! atomically and durably before the write is acknowledged (a flushed sled transaction, or an
//! etcd transaction committed by the quorum). A single writer at a time per process (an async
//! mutex) keeps checks race-free; across replicas, the etcd transaction is conditional on the
//! catalog revision, and a writer that loses the race tries again on the new state. An
//! in-memory copy of the catalog is published on a `watch` channel after each change — local,
//! or (with etcd) made by another replica and seen through a watch — which is what the proxy
//! streams and the read APIs serve from.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grayline_routing::catalog::conflicts;
use grayline_routing::{CompiledService, Invalid, Service};
use tokio::sync::{Mutex, broadcast, watch};

use crate::error::ApiError;
pub use grayline_routing::api::{Action, HistoryEntry, ServiceRecord};

mod durable;
pub mod etcd;
pub mod sled;
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

/// Where the catalog lives.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one per server")]
pub enum Backend {
    Sled(sled::Sled),
    Etcd(etcd::Etcd),
}

#[derive(Debug)]
pub struct Store {
    backend: Backend,
    writer: Mutex<()>,
    catalog: watch::Sender<Arc<Catalog>>,
    events: broadcast::Sender<Arc<HistoryEntry>>,
}

/// How often a writer that lost a race to another replica tries again.
const RACE_RETRIES: usize = 50;

impl Store {
    fn with(backend: Backend, catalog: Catalog) -> Store {
        Store {
            backend,
            writer: Mutex::new(()),
            catalog: watch::channel(Arc::new(catalog)).0,
            events: broadcast::channel(1024).0,
        }
    }

    /// Opens (or creates) the sled store in `dir` and loads the catalog.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        let (db, catalog) = sled::Sled::open(dir)?;
        Ok(Store::with(Backend::Sled(db), catalog))
    }

    /// Connects to etcd, loads the catalog and follows what other replicas write.
    pub async fn open_etcd(url: etcd::EtcdUrl) -> anyhow::Result<Arc<Store>> {
        let etcd = etcd::Etcd::connect(url).await?;
        let (catalog, etcd_revision) = etcd.load().await?;
        let changes = etcd.watch(etcd_revision);
        let store = Arc::new(Store::with(Backend::Etcd(etcd), catalog));
        store.clone().follow(changes);
        Ok(store)
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// For messages: where the store is.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sled(_) => "sled".to_string(),
            Backend::Etcd(e) => e.url.describe(),
        }
    }

    /// Another tree of the sled database, for state that lives beside the catalog
    /// (statistics, rollouts); writes to it become durable with [`Store::durable`].
    pub fn tree(&self, name: &str) -> anyhow::Result<::sled::Tree> {
        match &self.backend {
            Backend::Sled(db) => db.tree(name),
            Backend::Etcd(_) => anyhow::bail!("sled trees are not kept in an etcd store"),
        }
    }

    /// The group commit of the sled database.
    pub fn durable(&self) -> Option<Arc<Durable>> {
        match &self.backend {
            Backend::Sled(db) => Some(db.durable()),
            Backend::Etcd(_) => None,
        }
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
    /// writes service and history atomically and durably before returning. With
    /// `cx.dry_run` it stops before writing and returns what it would have written. With
    /// etcd, `change` runs again if another replica wrote first (on the new state).
    pub async fn write(
        &self,
        name: &str,
        cx: &WriteContext,
        change: impl Fn(Option<&ServiceRecord>) -> Result<Change, ApiError>,
    ) -> Result<(HistoryEntry, Option<ServiceRecord>), ApiError> {
        let _writer = self.writer.lock().await;
        for _ in 0..RACE_RETRIES {
            let current = self.catalog();
            let (entry, record) = prepare(&current, name, cx, &change)?;
            if cx.dry_run {
                return Ok((entry, record));
            }
            match &self.backend {
                Backend::Sled(db) => db.commit(record.as_ref(), &entry).await?,
                Backend::Etcd(etcd) => {
                    if !etcd
                        .commit(current.revision, record.as_ref(), &entry)
                        .await?
                    {
                        // Another replica was first: wait for its change, then try again.
                        self.caught_up(current.revision + 1).await;
                        continue;
                    }
                }
            }
            self.publish(&entry);
            return Ok((entry, record));
        }
        Err(ApiError::Unavailable(format!(
            "the store ({}) kept moving: another replica won {RACE_RETRIES} races in a row",
            self.describe()
        )))
    }

    /// Makes `entry` (the next revision) the current catalog and tells the subscribers.
    fn publish(&self, entry: &HistoryEntry) {
        let mut published = false;
        self.catalog.send_if_modified(|current| {
            if entry.revision != current.revision + 1 {
                return false;
            }
            let mut next = Catalog {
                revision: entry.revision,
                services: current.services.clone(),
            };
            match &entry.after {
                Some(s) => next.services.insert(
                    entry.service.clone(),
                    Arc::new(ServiceRecord {
                        service: s.clone(),
                        revision: entry.revision,
                    }),
                ),
                None => next.services.remove(&entry.service),
            };
            *current = Arc::new(next);
            published = true;
            true
        });
        if published {
            let _ = self.events.send(Arc::new(entry.clone()));
        }
    }

    /// Waits (briefly) until the local catalog has seen `revision`.
    async fn caught_up(&self, revision: u64) {
        let mut rx = self.catalog.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|c| c.revision >= revision),
        )
        .await;
    }

    /// Applies the changes other replicas make, in order; reloads if one is missing.
    fn follow(self: Arc<Self>, mut changes: tokio::sync::mpsc::Receiver<HistoryEntry>) {
        tokio::spawn(async move {
            while let Some(entry) = changes.recv().await {
                let have = self.catalog().revision;
                if entry.revision <= have {
                    continue;
                }
                if entry.revision == have + 1 {
                    self.publish(&entry);
                    continue;
                }
                // A gap: fill it from the history.
                match self.history_after(have).await {
                    Ok(missing) => {
                        for e in missing {
                            self.publish(&e);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot catch up with the store"),
                }
            }
        });
    }

    /// The history entry of one revision.
    pub async fn entry(&self, revision: u64) -> Result<Option<HistoryEntry>, ApiError> {
        match &self.backend {
            Backend::Sled(db) => db.entry(revision),
            Backend::Etcd(etcd) => etcd.entry(revision).await,
        }
    }

    /// Newest first: up to `limit` entries with revision below `before` (0 = no bound), for
    /// one service or (with `None`) all.
    pub async fn history(
        &self,
        service: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ApiError> {
        match &self.backend {
            Backend::Sled(db) => db.history(service, before, limit),
            Backend::Etcd(etcd) => etcd.history(service, before, limit).await,
        }
    }

    /// Oldest first: every entry with revision above `after`, for replaying a watch.
    pub async fn history_after(&self, after: u64) -> Result<Vec<HistoryEntry>, ApiError> {
        match &self.backend {
            Backend::Sled(db) => db.history_after(after),
            Backend::Etcd(etcd) => etcd.history_after(after).await,
        }
    }
}

impl Store {
    /// Writes `entry`, taken from another store's history, as it was: the same revision,
    /// actor, time and service. It must be the next revision here; the service it leaves is
    /// checked like any write's.
    pub async fn replay(&self, entry: &HistoryEntry) -> Result<(), ApiError> {
        let _writer = self.writer.lock().await;
        let current = self.catalog();
        if entry.revision != current.revision + 1 {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "history entry {} does not follow revision {} of the destination",
                entry.revision,
                current.revision
            )));
        }
        if let Some(service) = &entry.after {
            CompiledService::compile(service)?;
        }
        let record = entry.after.clone().map(|service| ServiceRecord {
            service,
            revision: entry.revision,
        });
        match &self.backend {
            Backend::Sled(db) => db.commit(record.as_ref(), entry).await?,
            Backend::Etcd(etcd) => {
                if !etcd
                    .commit(current.revision, record.as_ref(), entry)
                    .await?
                {
                    return Err(ApiError::Unavailable(format!(
                        "{} was written to during the migration",
                        self.describe()
                    )));
                }
            }
        }
        self.publish(entry);
        Ok(())
    }
}

/// The change `change` makes to `name` in `current`, checked, as the entry and record that
/// would be written at the next revision.
fn prepare(
    current: &Catalog,
    name: &str,
    cx: &WriteContext,
    change: &impl Fn(Option<&ServiceRecord>) -> Result<Change, ApiError>,
) -> Result<(HistoryEntry, Option<ServiceRecord>), ApiError> {
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
    Ok((entry, record))
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

    fn put(s: Service) -> impl Fn(Option<&ServiceRecord>) -> Result<Change, ApiError> {
        move |_| {
            Ok(Change {
                action: Action::Update,
                after: Some(s.clone()),
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
            .await
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(a, [3, 1]);
        let all: Vec<u64> = store
            .history(None, 3, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(all, [2, 1]);
        let replay: Vec<u64> = store
            .history_after(1)
            .await
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
        assert_eq!(store.history(None, 0, 10).await.unwrap().len(), 1);
    }
}
