//! Reading back everything the store holds when it opens, so that a damaged record stops the
//! server at start, with a message naming it, instead of failing reads later while
//! `/healthz` says all is well.
//!
//! sled checks each page's checksum only when it reads the page, so a bit flipped in a
//! record nobody has read since the start shows up on the first read of that record. Every
//! tree is therefore read in full and every record decoded, and the trees are checked
//! against each other: history dense from 1 to the stored revision, each entry continuing
//! where its service's previous one ended, the index naming exactly the history's entries,
//! and each stored service being its last entry's `after`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use grayline_routing::Service;

use super::{Catalog, HistoryEntry, REVISION_KEY, ServiceRecord, decode_u64, service_index_key};

/// A record that cannot be read or does not fit with the others.
#[derive(Debug, thiserror::Error)]
pub struct Damaged {
    /// Which part of the store: a tree, or sled's files as a whole.
    pub tree: String,
    /// Which record, in words (`revision 7`, `service shop`).
    pub record: String,
    pub problem: String,
    /// A way to keep what is still readable, when there is one and no export to start from.
    pub salvage: Option<String>,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.tree, self.record, self.problem)
    }
}

impl Damaged {
    pub fn new(
        tree: impl Into<String>,
        record: impl Into<String>,
        problem: impl fmt::Display,
    ) -> Damaged {
        Damaged {
            tree: tree.into(),
            record: record.into(),
            problem: problem.to_string(),
            salvage: None,
        }
    }

    pub fn with_salvage(mut self, salvage: String) -> Damaged {
        self.salvage = Some(salvage);
        self
    }

    /// What an operator is told when `doing` (e.g. "the server does not start on it") is
    /// refused because the store in `data_dir` is damaged: what, and the way out.
    pub fn explain(&self, data_dir: &Path, doing: &str) -> String {
        let dir = data_dir.display();
        let from_export = format!(
            "start from your newest export: `grayline-server import --data-dir NEW_DIR \
             BACKUP.json`, copy admin.token, proxy.token and webhook.secret from {dir} to \
             NEW_DIR, and start the server on NEW_DIR; changes made after that export are lost"
        );
        let way_out = match (self.tree.as_str(), &self.salvage) {
            ("stats", _) => format!(
                "Only statistics are damaged, and an export leaves them out: \
                 `grayline-server export --data-dir {dir} --output grayline.json`, then \
                 `grayline-server import --data-dir NEW_DIR grayline.json`, copy admin.token, \
                 proxy.token and webhook.secret from {dir} to NEW_DIR, and start the server \
                 on NEW_DIR. The statistics of the last hour are lost; everything else is kept."
            ),
            ("seal", Some(salvage)) => {
                format!("{salvage} If the store is damaged as well, {from_export}.")
            }
            (_, salvage) => format!(
                "Keep {dir} as it is for investigation and {from_export}.{} \
                 (docs/operations.md: backup and restore.)",
                salvage
                    .as_ref()
                    .map(|s| format!(" Without an export: {s}"))
                    .unwrap_or_default()
            ),
        };
        format!("the store in {dir} is damaged ({self}); {doing}. What to do: {way_out}")
    }
}

/// A tree sled could not open.
pub fn unopened(tree: &str, e: sled::Error) -> Damaged {
    Damaged::new(tree, "the tree", format!("cannot be opened: {e}"))
}

/// Turns a sled error met while reading `tree` after `after` into the damage it stands for.
pub fn unreadable(tree: &str, after: Option<&[u8]>, e: sled::Error) -> Damaged {
    let record = match after {
        None => "its first record".to_string(),
        Some(key) => format!("the record after key {}", printable(key)),
    };
    Damaged::new(tree, record, format!("cannot be read: {e}"))
}

/// A key as text where it is text, escaped where it is not.
pub fn printable(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// Every record of `tree`, in key order, each read error turned into [`Damaged`]. A long
/// scan says how far it has come every few seconds (an hour of statistics from hundreds of
/// proxies is millions of records, read twice at start).
pub fn records(
    name: &str,
    tree: &sled::Tree,
) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), Damaged>> {
    const NOTE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    let name = name.to_string();
    let mut last: Option<sled::IVec> = None;
    let started = std::time::Instant::now();
    let mut next_note = started + NOTE_EVERY;
    let mut read = 0u64;
    tree.iter().map(move |item| match item {
        Ok((k, v)) => {
            read += 1;
            if read.is_multiple_of(4096) && std::time::Instant::now() >= next_note {
                tracing::info!(
                    tree = name,
                    records = read,
                    seconds = started.elapsed().as_secs(),
                    "reading the store"
                );
                next_note += NOTE_EVERY;
            }
            last = Some(k.clone());
            Ok((k, v))
        }
        Err(e) => Err(unreadable(&name, last.as_deref(), e)),
    })
}

/// The history replayed entry by entry: each entry must continue where its service's
/// previous entry ended. Used on the store at open and on an export before it is imported.
#[derive(Debug, Default)]
pub struct Replay {
    /// The last revision replayed.
    pub revision: u64,
    /// Per service ever written: its last entry's revision and state (`None`: deleted).
    last: HashMap<String, (u64, Option<Service>)>,
}

impl Replay {
    /// Takes the next entry, which must have the next revision.
    pub fn push(&mut self, entry: &HistoryEntry) -> Result<(), String> {
        let expected = self.revision + 1;
        if entry.revision != expected {
            return Err(format!(
                "has revision {} where revision {expected} should be (revisions are dense)",
                entry.revision
            ));
        }
        let (previous_revision, before) = match self.last.get(&entry.service) {
            Some((revision, Some(service))) => (*revision, Some(service)),
            _ => (0, None),
        };
        if entry.previous_revision != previous_revision || entry.before.as_ref() != before {
            return Err(format!(
                "does not continue service `{}` from revision {previous_revision}",
                entry.service
            ));
        }
        if let Some(after) = &entry.after
            && after.name != entry.service
        {
            return Err(format!(
                "is about service `{}` but stores `{}`",
                entry.service, after.name
            ));
        }
        self.revision = entry.revision;
        self.last
            .insert(entry.service.clone(), (entry.revision, entry.after.clone()));
        Ok(())
    }

    /// Checks that `services` is exactly what the history ends with, and returns them as
    /// the catalog. `at` names a service the way the caller's input does.
    pub fn catalog(
        &self,
        services: impl IntoIterator<Item = ServiceRecord>,
        at: impl Fn(&str) -> String,
    ) -> Result<Catalog, (String, String)> {
        let mut catalog = Catalog {
            revision: self.revision,
            services: Default::default(),
        };
        for record in services {
            let name = record.service.name.clone();
            match self.last.get(&name) {
                Some((revision, Some(after)))
                    if *revision == record.revision && *after == record.service => {}
                Some((revision, Some(_))) => {
                    return Err((
                        at(&name),
                        format!(
                            "is not what the history's last entry for it (revision {revision}) stored"
                        ),
                    ));
                }
                Some((revision, None)) => {
                    return Err((
                        at(&name),
                        format!("was deleted at revision {revision}, yet it is stored"),
                    ));
                }
                None => return Err((at(&name), "has no history".to_string())),
            }
            if catalog
                .services
                .insert(name.clone(), Arc::new(record))
                .is_some()
            {
                return Err((at(&name), "is there twice".to_string()));
            }
        }
        if let Some((name, (revision, _))) = self
            .last
            .iter()
            .find(|(name, (_, after))| after.is_some() && !catalog.services.contains_key(*name))
        {
            return Err((
                at(name),
                format!("is missing (the history stored it at revision {revision})"),
            ));
        }
        Ok(catalog)
    }
}

/// The four trees of the catalog, read in full and checked against each other.
pub fn load(
    services: &sled::Tree,
    history: &sled::Tree,
    by_service: &sled::Tree,
    meta: &sled::Tree,
) -> Result<Catalog, Damaged> {
    let mut revision = None;
    for item in records("meta", meta) {
        let (key, value) = item?;
        if key.as_ref() != REVISION_KEY {
            return Err(Damaged::new(
                "meta",
                format!("key {}", printable(&key)),
                "is not a key this server writes (damaged, or written by a newer Grayline)",
            ));
        }
        revision = Some(
            decode_u64(&value).map_err(|e| Damaged::new("meta", "the revision", e.to_string()))?,
        );
    }
    let revision = revision.unwrap_or(0);

    let mut replay = Replay::default();
    for item in records("history", history) {
        let (key, value) = item?;
        let at = decode_u64(&key).map_err(|_| {
            Damaged::new(
                "history",
                format!("key {}", printable(&key)),
                "is not a revision",
            )
        })?;
        let record = format!("revision {at}");
        let entry: HistoryEntry = serde_json::from_slice(&value)
            .map_err(|e| Damaged::new("history", &record, format!("does not decode: {e}")))?;
        if entry.revision != at {
            return Err(Damaged::new(
                "history",
                &record,
                format!("holds the entry of revision {}", entry.revision),
            ));
        }
        if at > revision {
            return Err(Damaged::new(
                "history",
                &record,
                format!("is after the stored revision {revision}"),
            ));
        }
        replay
            .push(&entry)
            .map_err(|problem| Damaged::new("history", &record, problem))?;
        let index = service_index_key(&entry.service, at);
        if !by_service
            .contains_key(&index)
            .map_err(|e| unreadable("history_by_service", Some(&index), e))?
        {
            return Err(Damaged::new(
                "history_by_service",
                format!("service {} revision {at}", entry.service),
                "is missing",
            ));
        }
    }
    if replay.revision != revision {
        return Err(Damaged::new(
            "history",
            format!("revision {}", replay.revision + 1),
            format!("is missing (the stored revision is {revision})"),
        ));
    }

    // Every history entry has its index key; the index must hold nothing else.
    let mut indexed = 0u64;
    for item in records("history_by_service", by_service) {
        let (key, value) = item?;
        let well_formed = key.len() > 9 && key[key.len() - 9] == 0 && value.is_empty();
        if !well_formed {
            return Err(Damaged::new(
                "history_by_service",
                format!("key {}", printable(&key)),
                "is not a service name and a revision",
            ));
        }
        indexed += 1;
    }
    if indexed != revision {
        return Err(Damaged::new(
            "history_by_service",
            "the index",
            format!("names {indexed} entries, the history has {revision}"),
        ));
    }

    let mut stored = Vec::new();
    for item in records("services", services) {
        let (key, value) = item?;
        let name = String::from_utf8_lossy(&key).into_owned();
        let record: ServiceRecord = serde_json::from_slice(&value).map_err(|e| {
            Damaged::new(
                "services",
                format!("service {name}"),
                format!("does not decode: {e}"),
            )
        })?;
        if record.service.name.as_bytes() != key.as_ref() {
            return Err(Damaged::new(
                "services",
                format!("service {name}"),
                format!("holds service `{}`", record.service.name),
            ));
        }
        stored.push(record);
    }
    replay
        .catalog(stored, |name| format!("service {name}"))
        .map_err(|(record, problem)| Damaged::new("services", record, problem))
}
