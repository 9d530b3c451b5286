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
pub mod integrity;
mod seal;
pub mod sled;
pub use durable::Durable;
pub use integrity::Damaged;
pub use sled::Purpose;
use sled::{REVISION_KEY, decode_u64, service_index_key};

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
    /// Whose token asks: its role is checked by the operations, its name goes into the
    /// history.
    pub caller: crate::access::Caller,
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

    /// Opens (or creates) the sled store in `dir` to serve it: reads back everything it
    /// holds, compares it with the seal of the last clean stop, and loads the catalog. A store
    /// that cannot be read in full, or holds less than it did, is refused with [`Damaged`].
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        Self::open_for(dir, Purpose::Serve)
    }

    /// Opens the sled store in `dir` for `purpose`.
    pub fn open_for(dir: &Path, purpose: Purpose) -> anyhow::Result<Store> {
        let (db, catalog) = sled::Sled::open_for(dir, purpose)?;
        Ok(Store::with(Backend::Sled(db), catalog))
    }

    /// Removes the seal of the last clean stop (sled), once everything is loaded and before
    /// the first write. etcd keeps its own checksums; there is nothing to do.
    pub fn unseal(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sled(db) => db.unseal(),
            Backend::Etcd(_) => Ok(()),
        }
    }

    /// At a clean stop, after the last write: writes down what the sled store holds for the
    /// next start to compare.
    pub fn seal(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sled(db) => db.seal(self.catalog().revision),
            Backend::Etcd(_) => Ok(()),
        }
    }

    /// Fills an empty sled store with an exported catalog and its complete history (checked
    /// by the caller with [`integrity::Replay`]), flushed before it returns.
    pub fn import(&self, catalog: &Catalog, history: &[HistoryEntry]) -> anyhow::Result<()> {
        anyhow::ensure!(self.catalog().revision == 0, "the store is not empty");
        match &self.backend {
            Backend::Sled(db) => db.import(catalog, history)?,
            Backend::Etcd(_) => anyhow::bail!(
                "imports are into a sled data directory; `grayline-server migrate` moves one into etcd"
            ),
        }
        self.catalog.send_replace(Arc::new(catalog.clone()));
        Ok(())
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

    /// Why the store refuses writes now, if it does (an etcd whose space quota is used up);
    /// a sled store is never said to.
    pub fn refusing_writes(&self) -> Option<String> {
        match &self.backend {
            Backend::Etcd(etcd) => etcd.refusing(),
            Backend::Sled(_) => None,
        }
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
        let mut synced = false;
        for _ in 0..RACE_RETRIES {
            let current = self.catalog();
            let (entry, record) = match prepare(&current, name, cx, &change) {
                Ok(prepared) => prepared,
                // This replica may not have seen a change another one made (a service just
                // created there, a newer revision expected): a refusal that depends on the
                // state is given only from a view as new as the quorum's. (A stale success
                // is caught by the commit's guard.)
                // Once per write; if etcd cannot say, the refusal stands.
                Err(e) => match &self.backend {
                    Backend::Etcd(etcd) if !synced => {
                        synced = true;
                        match etcd.revision().await {
                            Ok(latest) if latest > current.revision => {
                                self.caught_up(latest).await;
                                continue;
                            }
                            _ => return Err(e),
                        }
                    }
                    _ => return Err(e),
                },
            };
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
        token: cx.caller.name.clone(),
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
        // The store just dropped may hold sled's lock a moment longer.
        let store = when_free(|| Store::open(dir.path())).unwrap();
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
            expected_revision: Some(7),
            ..cx()
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

    fn sled_of(s: &Store) -> &sled::Sled {
        match &s.backend {
            Backend::Sled(db) => db,
            Backend::Etcd(_) => unreachable!("the tests open sled"),
        }
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
            sled_of(&store).db.flush().unwrap();
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
            sled_of(s)
                .history
                .insert(2u64.to_be_bytes(), &b"{\"revision\": 2"[..])
                .unwrap();
        })
        .await;
        check(d, "history", "revision 2", "does not decode");
        let d = damaged_by(|s| {
            sled_of(s).history.remove(1u64.to_be_bytes()).unwrap();
        })
        .await;
        check(d, "history", "revision 2", "where revision 1 should be");
        let d = damaged_by(|s| {
            sled_of(s).history.remove(2u64.to_be_bytes()).unwrap();
        })
        .await;
        check(d, "history", "revision 2", "is missing");
        let d = damaged_by(|s| {
            sled_of(s)
                .by_service
                .remove(service_index_key("a", 1))
                .unwrap();
        })
        .await;
        check(
            d,
            "history_by_service",
            "service a revision 1",
            "is missing",
        );
        let d = damaged_by(|s| {
            sled_of(s)
                .by_service
                .insert(service_index_key("c", 9), &[])
                .unwrap();
        })
        .await;
        check(d, "history_by_service", "the index", "names 3 entries");
        let d = damaged_by(|s| {
            let mut other = ServiceRecord {
                service: service("b"),
                revision: 2,
            };
            other.service.path_prefix = "/elsewhere".into();
            sled_of(s)
                .services
                .insert("b", serde_json::to_vec(&other).unwrap())
                .unwrap();
        })
        .await;
        check(d, "services", "service b", "is not what the history");
        let d = damaged_by(|s| {
            sled_of(s).services.remove("a").unwrap();
        })
        .await;
        check(d, "services", "service a", "is missing");
        let d = damaged_by(|s| {
            sled_of(s).meta.insert("revisoin", &[0; 8]).unwrap();
        })
        .await;
        check(d, "meta", "key revisoin", "not a key this server writes");
        let d = damaged_by(|s| {
            sled_of(s).db.open_tree("hist0ry").unwrap();
        })
        .await;
        check(d, "sled", "tree hist0ry", "not a tree this server writes");
        // What an operator reads: what is damaged, and the way out.
        let d = damaged_by(|s| {
            sled_of(s)
                .history
                .insert(1u64.to_be_bytes(), &b"x"[..])
                .unwrap();
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
            sled_of(&store).services.remove("b").unwrap();
            sled_of(&store).history.remove(2u64.to_be_bytes()).unwrap();
            sled_of(&store)
                .by_service
                .remove(service_index_key("b", 2))
                .unwrap();
            sled_of(&store)
                .meta
                .insert(REVISION_KEY, &1u64.to_be_bytes())
                .unwrap();
            sled_of(&store).db.flush().unwrap();
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
            sled_of(&store).db.flush().unwrap();
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
