//! `grayline-server migrate --to <store>`: copies everything that matters from the store the
//! server is configured with into another, empty one — sled into etcd when a team grows
//! past one machine, etcd back into sled to leave it.
//!
//! The whole history is copied entry by entry at its own revision (so undo, restore and
//! `history` work on the new store as before), then every rollout record, then the
//! statistics ([`crate::stats::carry`]): the last hour per second and version, the week of
//! per-minute history and every proxy's watermark (so a report counted before the move and
//! resent after it is counted once). The source must not be written to meanwhile (with sled
//! the running server holds the database's lock, so stop it; with etcd stop the replicas or
//! accept that the copy is of the moment it read).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::config::{MigrateArgs, StoreChoice};
use crate::rollouts::keep::Keep;
use crate::stats::carry::{Carried, Counted};
use crate::store::{Store, now_unix_ms};

/// What a migration copied.
#[derive(Debug, PartialEq, Eq)]
pub struct Migrated {
    pub revision: u64,
    pub services: usize,
    pub rollouts: usize,
    pub statistics: Counted,
}

/// Opens `choice`: sled in `data_dir` (a data directory, the database in `db/`) or etcd.
pub async fn open(choice: &StoreChoice, data_dir: &std::path::Path) -> anyhow::Result<Arc<Store>> {
    match choice {
        StoreChoice::Sled => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            Ok(Arc::new(Store::open(&crate::export::db_dir(data_dir))?))
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
    let now = now_unix_ms() / 1000;
    let there = Carried::read(to, now)
        .await
        .with_context(|| format!("reading the statistics of {}", to.describe()))?;
    anyhow::ensure!(
        there.is_empty(),
        "the destination ({}) already holds statistics ({} seconds, {} minutes, {} watermarks); migrate into an empty store",
        to.describe(),
        there.seconds.len(),
        there.minutes.len(),
        there.watermarks.len()
    );
    let source = from.catalog();
    anyhow::ensure!(
        source.revision > 0,
        "the source ({}) holds nothing (revision 0); is --data-dir or --store right?",
        from.describe()
    );
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
        keep.put(record, next, None)
            .await
            .with_context(|| format!("writing rollout {} to {}", record.id(), to.describe()))?;
    }
    let statistics = Carried::read(from, now)
        .await
        .with_context(|| format!("reading the statistics of {}", from.describe()))?;
    statistics
        .write(to)
        .await
        .with_context(|| format!("writing the statistics to {}", to.describe()))?;
    let statistics = statistics.counted();
    tracing::info!(
        revision = last,
        rollouts = records.len(),
        seconds = statistics.seconds,
        minutes = statistics.minutes,
        took = ?started.elapsed(),
        "migrated"
    );
    Ok(Migrated {
        revision: last,
        services: copied.services.len(),
        rollouts: records.len(),
        statistics,
    })
}

/// `grayline-server migrate --to …`: progress on stderr, one JSON line on stdout.
pub fn migrate_command(args: &MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(migrate_to(args))
}

async fn migrate_to(args: &MigrateArgs) -> anyhow::Result<()> {
    let to = &args.to;
    if let (StoreChoice::Sled, StoreChoice::Sled) = (&args.store, &to.store) {
        let same =
            std::fs::canonicalize(&args.data_dir).ok() == std::fs::canonicalize(&to.data_dir).ok();
        anyhow::ensure!(
            !same || !to.data_dir.exists(),
            "--to is the data directory being migrated"
        );
    }
    if let StoreChoice::Sled = args.store {
        let db = crate::export::db_dir(&args.data_dir);
        anyhow::ensure!(
            db.is_dir(),
            "--data-dir {} holds no store ({} is missing)",
            args.data_dir.display(),
            db.display()
        );
    }
    let from = open(&args.store, &args.data_dir)
        .await
        .context("opening the source store")?;
    let dest = open(&to.store, &to.data_dir)
        .await
        .context("opening the destination store")?;
    eprintln!(
        "copying revision 1 to {} from {} to {}",
        from.catalog().revision,
        from.describe(),
        dest.describe()
    );
    let done = migrate(&from, &dest, |at, of| {
        eprintln!("  {at} of {of} revisions copied");
    })
    .await?;
    let s = done.statistics;
    eprintln!(
        "done: {} revisions, {} services, {} rollouts; statistics: {} seconds ({} requests) of the last hour, {} minutes of history, {} proxy watermarks",
        done.revision, done.services, done.rollouts, s.seconds, s.requests, s.minutes, s.watermarks
    );
    println!(
        "{}",
        serde_json::json!({
            "event": "migrated",
            "revision": done.revision,
            "services": done.services,
            "rollouts": done.rollouts,
            "seconds": s.seconds,
            "requests": s.requests,
            "minutes": s.minutes,
            "watermarks": s.watermarks,
        })
    );
    Ok(())
}
