//! `grayline-server migrate --to <store>`: copies everything that matters from the store the
//! server is configured with into another, empty one — sled into etcd when a team grows
//! past one machine, etcd back into sled to leave it.
//!
//! The whole history is copied entry by entry at its own revision (so undo, restore and
//! `history` work on the new store as before), then every rollout record. Statistics are
//! not copied: they are an hour of per-second counts that the proxies rebuild as they
//! report. The source must not be written to meanwhile (with sled the running server holds
//! the database's lock, so stop it; with etcd stop the replicas' writers or accept that the
//! copy is of the moment it read).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::config::StoreChoice;
use crate::rollouts::keep::Keep;
use crate::store::Store;

/// What a migration copied.
#[derive(Debug, PartialEq, Eq)]
pub struct Migrated {
    pub revision: u64,
    pub services: usize,
    pub rollouts: usize,
}

/// Opens `choice`: sled in `data_dir` (a data directory, the database in `db/`) or etcd.
pub async fn open(choice: &StoreChoice, data_dir: &std::path::Path) -> anyhow::Result<Arc<Store>> {
    match choice {
        StoreChoice::Sled => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            Ok(Arc::new(Store::open(&data_dir.join("db"))?))
        }
        StoreChoice::Etcd(url) => Store::open_etcd(url.clone()).await,
    }
}

/// Copies `from` into `to`, which must be empty; `progress` hears every thousandth entry.
pub async fn migrate(
    from: &Store,
    to: &Store,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Migrated> {
    let have = to.catalog().revision;
    anyhow::ensure!(
        have == 0,
        "the destination ({}) already holds revision {have}; migrate into an empty store",
        to.describe()
    );
    let (to_rollouts, _) = Keep::beside(to)?.load().await?;
    anyhow::ensure!(
        to_rollouts.is_empty(),
        "the destination ({}) already holds {} rollouts; migrate into an empty store",
        to.describe(),
        to_rollouts.len()
    );
    let source = from.catalog();
    let entries = from
        .history_after(0)
        .await
        .with_context(|| format!("reading the history from {}", from.describe()))?;
    let last = entries.last().map_or(0, |e| e.revision);
    anyhow::ensure!(
        last == source.revision && entries.len() as u64 == last,
        "the history of {} has gaps ({} entries up to revision {last}, catalog at {}); not copying a partial history",
        from.describe(),
        entries.len(),
        source.revision
    );
    let started = Instant::now();
    for entry in &entries {
        to.replay(entry)
            .await
            .with_context(|| format!("writing revision {} to {}", entry.revision, to.describe()))?;
        if entry.revision % 1000 == 0 {
            progress(entry.revision, last);
        }
    }
    let copied = to.catalog();
    anyhow::ensure!(
        copied.services == source.services,
        "after the copy the services of {} differ from {}",
        to.describe(),
        from.describe()
    );
    let (records, next_id) = Keep::beside(from)?.load().await?;
    let keep = Keep::beside(to)?;
    for (i, record) in records.values().enumerate() {
        let next = (i + 1 == records.len()).then_some(next_id);
        keep.put(record, next, None).await.with_context(|| {
            format!("writing rollout {} to {}", record.rollout.id, to.describe())
        })?;
    }
    tracing::info!(
        revision = last,
        rollouts = records.len(),
        took = ?started.elapsed(),
        "migrated"
    );
    Ok(Migrated {
        revision: last,
        services: copied.services.len(),
        rollouts: records.len(),
    })
}
