//! The whole store as one JSON document, and back: `grayline-server export` writes it from
//! a stopped server's data directory (or from etcd, replicas running), `grayline-server
//! import` builds a new data directory from it (or fills an empty etcd prefix, through a
//! temporary sled store built with the same checks, then copied as `migrate` copies). Services with their revisions, the complete history and the rollouts (plans,
//! evidence, transitions) travel; statistics do not (an hour of per-second counts, which the
//! proxies' traffic refills).
//!
//! An export is read with the same checks as a start, so a damaged store is not exported
//! (except for its statistics, which are left out anyway). An import checks the document as
//! the store would — the history dense and continuous, the services what it ends with, every
//! service valid and no host served twice — builds the store beside the target, and moves it
//! into place only once it is complete and flushed: a failed import leaves nothing behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use grayline_routing::catalog::conflicts;
use grayline_routing::{CompiledService, Invalid, Service};
use serde::{Deserialize, Serialize};

use crate::config::StoreChoice;
use crate::rollouts::{self, Record};
use crate::store::integrity::Replay;
use crate::store::{Catalog, Damaged, HistoryEntry, Purpose, ServiceRecord, Store};

/// The document's format, in `grayline_export`; a different number is refused.
pub const FORMAT: u32 = 1;

/// Files a data directory may already hold for an import: the tokens, so that proxies and
/// scripts keep theirs.
const KEEPABLE: [&str; 3] = ["admin.token", "proxy.token", "webhook.secret"];

/// Everything an export holds.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// The format of this document ([`FORMAT`]).
    pub grayline_export: u32,
    /// The catalog revision: the newest history entry's.
    pub revision: u64,
    /// Every service, by name, with the revision of its last change.
    pub services: Vec<ServiceRecord>,
    /// Every history entry, oldest first, from revision 1.
    pub history: Vec<HistoryEntry>,
    /// Every rollout, oldest first, as stored.
    pub rollouts: Vec<Record>,
    /// The id the next rollout gets.
    pub next_rollout_id: u64,
}

/// What an import brought in.
#[derive(Debug)]
pub struct Imported {
    pub services: usize,
    pub revision: u64,
    pub rollouts: usize,
}

/// sled's directory inside a data directory.
pub fn db_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

impl Export {
    /// Reads the store of the (stopped) server in `data_dir`.
    pub fn read(data_dir: &Path) -> anyhow::Result<Export> {
        let db = db_dir(data_dir);
        if !db.is_dir() {
            bail!(
                "there is no store in {} (no {})",
                data_dir.display(),
                db.display()
            );
        }
        let store = Store::open_for(&db, Purpose::Export)
            .map_err(|e| explained(e, data_dir, "nothing was exported"))?;
        let (records, next_rollout_id) = rollouts::load(&store.tree("rollouts")?)
            .map_err(|e| explained(e.into(), data_dir, "nothing was exported"))?;
        let catalog = store.catalog();
        Ok(Export {
            grayline_export: FORMAT,
            revision: catalog.revision,
            services: catalog.services.values().map(|r| (**r).clone()).collect(),
            // A sled store answers at once: no runtime needed.
            history: futures::executor::block_on(store.history_after(0))?,
            rollouts: records.into_values().collect(),
            next_rollout_id,
        })
    }

    /// An export of a store on etcd (or any open store): its catalog as read when it opened,
    /// the history up to that revision, and the rollouts. Replicas may keep running; a
    /// history with gaps is refused.
    pub async fn read_store(store: &Store) -> anyhow::Result<Export> {
        let catalog = store.catalog();
        let (records, next_rollout_id) = rollouts::keep::Keep::beside(store)?
            .load()
            .await
            .with_context(|| format!("reading the rollouts from {}", store.describe()))?;
        let mut history = store
            .history_after(0)
            .await
            .with_context(|| format!("reading the history from {}", store.describe()))?;
        history.retain(|e| e.revision <= catalog.revision);
        anyhow::ensure!(
            history.len() as u64 == catalog.revision,
            "the history of {} has gaps ({} entries up to revision {}); nothing was exported",
            store.describe(),
            history.len(),
            catalog.revision
        );
        Ok(Export {
            grayline_export: FORMAT,
            revision: catalog.revision,
            services: catalog.services.values().map(|r| (**r).clone()).collect(),
            history,
            rollouts: records.into_values().collect(),
            next_rollout_id,
        })
    }

    /// Imports into an empty store on etcd: builds it in a temporary sled directory with
    /// every check of [`Export::import`], then copies that into etcd as `migrate` does
    /// (refused, nothing written, when the destination holds anything).
    pub fn import_etcd(&self, url: &crate::store::etcd::EtcdUrl) -> anyhow::Result<Imported> {
        let staging = std::env::temp_dir().join(format!(
            "grayline-import-{}-{}",
            std::process::id(),
            crate::store::now_unix_ms()
        ));
        let done = self.import(&staging).and_then(|imported| {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let from = crate::migrate::open(&StoreChoice::Sled, &staging).await?;
                let to = Store::open_etcd(url.clone())
                    .await
                    .context("opening the destination store")?;
                crate::migrate::migrate(&from, &to, |_, _| {}).await?;
                anyhow::Ok(imported)
            })
        });
        let _ = std::fs::remove_dir_all(&staging);
        done
    }

    /// Writes the export as JSON to `out`.
    pub fn write(&self, out: impl Write) -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(out);
        serde_json::to_writer_pretty(&mut out, self).context("writing the export")?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }

    /// Parses an export, naming the field that does not fit.
    pub fn parse(input: impl Read) -> anyhow::Result<Export> {
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(input));
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("the export does not parse at `{path}`: {}", e.into_inner())
        })
    }

    /// Checks the document as the store would hold it, and returns its catalog.
    pub fn check(&self) -> anyhow::Result<Catalog> {
        if self.grayline_export != FORMAT {
            bail!(
                "grayline_export: format {} is not {FORMAT}, the one this server reads",
                self.grayline_export
            );
        }
        let mut replay = Replay::default();
        for (i, entry) in self.history.iter().enumerate() {
            replay
                .push(entry)
                .map_err(|problem| anyhow::anyhow!("history[{i}]: {problem}"))?;
        }
        if replay.revision != self.revision {
            bail!(
                "revision: {} but the history ends at revision {}",
                self.revision,
                replay.revision
            );
        }
        let index_of = |name: &str| {
            self.services
                .iter()
                .position(|r| r.service.name == name)
                .unwrap_or_default()
        };
        let catalog = replay
            .catalog(self.services.iter().cloned(), |name| {
                format!("services[{}] (`{name}`)", index_of(name))
            })
            .map_err(|(at, problem)| anyhow::anyhow!("{at}: {problem}"))?;
        // Nothing invalid is stored: the services are checked as a write checks them.
        let all: Vec<Service> = self.services.iter().map(|r| r.service.clone()).collect();
        for (i, service) in all.iter().enumerate() {
            let others: Vec<Service> = all
                .iter()
                .filter(|s| s.name != service.name)
                .cloned()
                .collect();
            let checked = CompiledService::compile(service)
                .map(|_| ())
                .and_then(|()| Invalid::check(conflicts(&others, service)));
            if let Err(invalid) = checked {
                bail!("{}", invalid.under(&format!("services[{i}]")));
            }
        }
        let mut previous = 0;
        for (i, record) in self.rollouts.iter().enumerate() {
            if record.id() <= previous {
                bail!(
                    "rollouts[{i}]: id {} is not above the one before",
                    record.id()
                );
            }
            previous = record.id();
            if record.revision() > self.revision {
                bail!(
                    "rollouts[{i}]: wrote revision {}, after the history's last",
                    record.revision()
                );
            }
        }
        if self.next_rollout_id <= previous {
            bail!(
                "next_rollout_id: {} is not above the last rollout's id {previous}",
                self.next_rollout_id
            );
        }
        Ok(catalog)
    }

    /// Builds the store of a new data directory from this export. `data_dir` must be empty
    /// or missing; it may hold the tokens ([`KEEPABLE`]).
    pub fn import(&self, data_dir: &Path) -> anyhow::Result<Imported> {
        let catalog = self.check().context("the export cannot be imported")?;
        if data_dir.exists() {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(data_dir)
                .with_context(|| format!("reading {}", data_dir.display()))?
            {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if !KEEPABLE.contains(&name.as_str()) {
                    found.push(name);
                }
            }
            if !found.is_empty() {
                found.sort();
                bail!(
                    "{} is not empty (it holds {}); import into a new directory (it may hold \
                     only admin.token, proxy.token and webhook.secret)",
                    data_dir.display(),
                    found.join(", ")
                );
            }
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let partial = data_dir.join("db.importing");
        let built = self.build(&partial, &catalog);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, db_dir(data_dir))
            .with_context(|| format!("moving the store into {}", data_dir.display()))?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", data_dir.display()))?;
        Ok(Imported {
            services: self.services.len(),
            revision: self.revision,
            rollouts: self.rollouts.len(),
        })
    }

    fn build(&self, dir: &Path, catalog: &Catalog) -> anyhow::Result<()> {
        let store = Store::open(dir)?;
        store.import(catalog, &self.history)?;
        rollouts::import(
            &store.tree("rollouts")?,
            &self.rollouts,
            self.next_rollout_id,
        )?;
        // Sealed like a clean stop, so the first start checks it got all of it back.
        store.seal()
    }
}

/// A damaged store's error, with what to do; other errors as they are.
pub fn explained(e: anyhow::Error, data_dir: &Path, doing: &str) -> anyhow::Error {
    match e.downcast::<Damaged>() {
        Ok(damaged) => anyhow::anyhow!(damaged.explain(data_dir, doing)),
        Err(e) => e,
    }
}

/// `grayline-server export`: the store of `args.data_dir` to `args.output` (written to a
/// temporary file and renamed, so a failed export leaves no half file) or standard output.
pub fn export_command(args: &crate::config::ExportArgs) -> anyhow::Result<()> {
    let (export, from) = match &args.store {
        StoreChoice::Sled => (
            Export::read(&args.data_dir)?,
            args.data_dir.display().to_string(),
        ),
        StoreChoice::Etcd(url) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let export = runtime.block_on(async {
                let store = Store::open_etcd(url.clone())
                    .await
                    .context("opening the store")?;
                Export::read_store(&store).await
            })?;
            (export, url.describe())
        }
    };
    match &args.output {
        None => export.write(std::io::stdout().lock())?,
        Some(path) => {
            let tmp = path.with_extension("partial");
            let written = std::fs::File::create(&tmp)
                .map_err(anyhow::Error::from)
                .and_then(|f| {
                    export.write(&f)?;
                    f.sync_all()?;
                    Ok(())
                })
                .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("writing {}", path.display())));
            }
        }
    }
    tracing::info!(
        from,
        services = export.services.len(),
        revision = export.revision,
        rollouts = export.rollouts.len(),
        "exported (statistics are not exported)"
    );
    Ok(())
}

/// `grayline-server import`: a new store in `args.data_dir` from the export in `args.input`.
pub fn import_command(args: &crate::config::ImportArgs) -> anyhow::Result<()> {
    let export = if args.input.as_os_str() == "-" {
        Export::parse(std::io::stdin().lock())?
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?;
        Export::parse(file)?
    };
    let (imported, into) = match &args.store {
        StoreChoice::Sled => (
            export.import(&args.data_dir)?,
            args.data_dir.display().to_string(),
        ),
        StoreChoice::Etcd(url) => (export.import_etcd(url)?, url.describe()),
    };
    tracing::info!(
        "imported {} services, the history up to revision {} and {} rollouts into {into}; \
         statistics start empty",
        imported.services,
        imported.revision,
        imported.rollouts,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Action, Change, WriteContext, when_free};
    use grayline_routing::Version;

    async fn exported() -> (tempfile::TempDir, Export) {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(&db_dir(dir.path())).unwrap();
            let cx = WriteContext {
                actor: "test".into(),
                ..WriteContext::default()
            };
            for (name, prefix) in [("a", "/"), ("b", "/"), ("a", "/x")] {
                let mut s = Service::single(name, Version::new("v1", &["127.0.0.1:1"]));
                s.hosts = vec![format!("{name}.example.com")];
                s.path_prefix = prefix.into();
                store
                    .write(name, &cx, |_| {
                        Ok(Change {
                            action: Action::Update,
                            after: Some(s.clone()),
                            summary: String::new(),
                        })
                    })
                    .await
                    .unwrap();
            }
            store.seal().unwrap();
        }
        let export = when_free(|| Export::read(dir.path())).unwrap();
        (dir, export)
    }

    #[tokio::test]
    async fn an_export_is_checked_like_the_store_before_it_is_imported() {
        let (_dir, export) = exported().await;
        assert_eq!((export.revision, export.history.len()), (3, 3));
        let text = {
            let mut out = Vec::new();
            export.write(&mut out).unwrap();
            out
        };
        assert_eq!(Export::parse(text.as_slice()).unwrap(), export);
        export.check().unwrap();

        let refused = |change: &dyn Fn(&mut Export), expected: &str| {
            let mut e = Export::parse(text.as_slice()).unwrap();
            change(&mut e);
            let err = format!("{:#}", e.check().unwrap_err());
            assert!(err.starts_with(expected), "{err}");
        };
        refused(&|e| e.grayline_export = 2, "grayline_export: format 2");
        refused(
            &|e| {
                e.history.remove(1);
            },
            "history[1]: has revision 3 where revision 2",
        );
        refused(
            &|e| e.revision = 4,
            "revision: 4 but the history ends at revision 3",
        );
        refused(
            &|e| e.history[2].previous_revision = 0,
            "history[2]: does not continue service `a`",
        );
        refused(
            &|e| e.services[0].revision = 1,
            "services[0] (`a`): is not what the history's last entry",
        );
        refused(
            &|e| {
                e.services.pop();
            },
            "services[",
        );
        refused(
            &|e| {
                // Consistent with its history, but invalid: nothing invalid is stored.
                let bad = e.history[1].after.as_mut().unwrap();
                bad.versions[0].endpoints = vec!["300.1.1.1:80".into()];
                e.services[1].service = bad.clone();
            },
            "services[1].versions[0].endpoints[0]",
        );
        refused(&|e| e.next_rollout_id = 0, "next_rollout_id: 0");
        assert!(
            Export::parse(&b"{\"grayline_export\": 1, \"revision\": \"x\"}"[..])
                .unwrap_err()
                .to_string()
                .contains("at `revision`")
        );
    }

    #[tokio::test]
    async fn an_import_refuses_a_directory_with_a_store_and_leaves_nothing_when_it_fails() {
        let (dir, export) = exported().await;
        let err = export.import(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not empty (it holds db)"), "{err}");

        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("admin.token"), "kept").unwrap();
        let mut bad = Export::parse({
            let mut out = Vec::new();
            export.write(&mut out).unwrap();
            std::io::Cursor::new(out)
        })
        .unwrap();
        bad.revision = 9;
        assert!(bad.import(target.path()).is_err());
        let left: Vec<_> = std::fs::read_dir(target.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            ["admin.token"],
            "a refused import leaves the directory as it was"
        );

        let imported = export.import(target.path()).unwrap();
        assert_eq!((imported.services, imported.revision), (2, 3));
        assert_eq!(when_free(|| Export::read(target.path())).unwrap(), export);
    }
}
