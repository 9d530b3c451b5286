//! What the store held when the server last stopped cleanly, so the next start can tell
//! whether sled gave everything back.
//!
//! sled recovers its log by reading it from the start and stops at the first message whose
//! checksum fails, taking it for the torn end of a crash. After a clean stop there is no
//! torn end: a message that fails there is damage, and everything written after it is
//! quietly gone. The store would open consistent but old, serving revisions that were
//! superseded long ago. So at a clean stop the server writes a seal beside sled's files —
//! per tree, how many records and a digest of them — and at start it compares what sled
//! returned with the seal. The seal is removed once the server starts serving (it would
//! not describe the store after a crash) and written again at the next clean stop.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::integrity::{Damaged, printable, records};

/// The seal's file, inside sled's directory.
const FILE: &str = "grayline-seal.json";

/// One tree as it was: how many records, and a digest of every key and value in order
/// (xxh3-128: this guards against damage, not against someone forging a store, and a
/// store's statistics can hold millions of records).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeDigest {
    pub records: u64,
    pub xxh3: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// When the server stopped.
    pub stopped_unix_ms: i64,
    /// The catalog revision then.
    pub revision: u64,
    pub trees: BTreeMap<String, TreeDigest>,
    /// A digest of the fields above, so a damaged seal is not taken for a damaged store.
    pub xxh3: String,
}

impl Seal {
    pub fn new(stopped_unix_ms: i64, revision: u64, trees: BTreeMap<String, TreeDigest>) -> Seal {
        let mut seal = Seal {
            stopped_unix_ms,
            revision,
            trees,
            xxh3: String::new(),
        };
        seal.xxh3 = seal.own_digest();
        seal
    }

    fn own_digest(&self) -> String {
        let body = serde_json::to_vec(&(self.stopped_unix_ms, self.revision, &self.trees))
            .expect("a seal encodes");
        format!("{:032x}", xxh3_128(&body))
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads every record of every tree in `names` (so sled checks every page) and digests
/// each tree.
pub fn digest(db: &sled::Db, names: &[&[u8]]) -> Result<BTreeMap<String, TreeDigest>, Damaged> {
    let mut out = BTreeMap::new();
    for name in names {
        let text = printable(name);
        let tree = db
            .open_tree(name)
            .map_err(|e| super::integrity::unopened(&text, e))?;
        let mut hash = Xxh3::new();
        let mut count = 0u64;
        for item in records(&text, &tree) {
            let (key, value) = item?;
            for part in [key.as_ref(), value.as_ref()] {
                hash.update(&(part.len() as u64).to_be_bytes());
                hash.update(part);
            }
            count += 1;
        }
        out.insert(
            text,
            TreeDigest {
                records: count,
                xxh3: format!("{:032x}", hash.digest128()),
            },
        );
    }
    Ok(out)
}

/// The seal in `dir`, if the server stopped cleanly last time.
pub fn read(dir: &Path) -> Result<Option<Seal>, Damaged> {
    let file = path(dir);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Damaged::new("seal", file.display().to_string(), e)),
    };
    let damaged = |problem: String| {
        Damaged::new("seal", file.display().to_string(), problem).with_salvage(format!(
            "The seal may be all that is damaged: remove {} and start again (every record is \
             still read and checked).",
            file.display()
        ))
    };
    let seal: Seal =
        serde_json::from_slice(&bytes).map_err(|e| damaged(format!("does not decode: {e}")))?;
    if seal.own_digest() != seal.xxh3 {
        return Err(damaged("does not match its own digest".into()));
    }
    Ok(Some(seal))
}

/// Compares what sled returned for each tree in `now` with the seal of `dir`; names the
/// first tree that differs. `revision` is the catalog revision sled gave back.
pub fn check(
    dir: &Path,
    seal: &Seal,
    now: &BTreeMap<String, TreeDigest>,
    revision: u64,
) -> Result<(), Damaged> {
    let stopped = when(seal.stopped_unix_ms);
    for (tree, digest) in now {
        let Some(then) = seal.trees.get(tree) else {
            // A tree this version added, created empty at open on a store an older one
            // sealed; with records it came from somewhere the seal does not know.
            if digest.records == 0 {
                continue;
            }
            return Err(Damaged::new(
                tree.clone(),
                "the tree",
                "was not in the seal of the last clean stop",
            ));
        };
        if then == digest {
            continue;
        }
        let problem = if digest.records < then.records {
            format!(
                "sled gave back {} of the {} records it held when the server stopped cleanly \
                 ({stopped}, revision {}): it drops everything after a record it cannot read",
                digest.records, then.records, seal.revision
            )
        } else {
            format!(
                "sled gave back other records than the {} it held when the server stopped \
                 cleanly ({stopped}, revision {}): it drops everything after a record it \
                 cannot read, and older versions of the records show through",
                then.records, seal.revision
            )
        };
        let readable = if revision == seal.revision {
            format!("revision {revision}, with older {tree} records")
        } else {
            format!("revision {revision} instead of {}", seal.revision)
        };
        return Err(
            Damaged::new(tree.clone(), "its records", problem).with_salvage(format!(
                "remove {} and the server starts on what sled could read ({readable}; \
                 everything is still read and checked); export that, and what came after \
                 is lost.",
                path(dir).display()
            )),
        );
    }
    Ok(())
}

/// A time as UTC text, for people.
fn when(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {unix_ms} ms"))
}

/// Writes the seal atomically (a temporary file, synced, renamed, the directory synced).
pub fn write(dir: &Path, seal: &Seal) -> anyhow::Result<()> {
    let file = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(seal)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        std::fs::File::open(dir)?.sync_all()?;
        anyhow::Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", file.display()))
}

/// Removes the seal: from now on the store changes.
pub fn remove(dir: &Path) -> anyhow::Result<()> {
    let file = path(dir);
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_a_newer_version_added_opens_empty_against_an_older_seal() {
        let digest = |records| TreeDigest {
            records,
            xxh3: format!("{records}"),
        };
        let sealed = Seal::new(0, 3, BTreeMap::from([("services".to_string(), digest(2))]));
        let dir = Path::new("/nowhere");
        let mut now = BTreeMap::from([
            ("services".to_string(), digest(2)),
            ("stats_minutes".to_string(), digest(0)),
        ]);
        check(dir, &sealed, &now, 3).expect("an empty new tree is not damage");
        now.insert("stats_minutes".to_string(), digest(5));
        let d = check(dir, &sealed, &now, 3).unwrap_err();
        assert_eq!(d.tree, "stats_minutes");
        assert!(d.problem.contains("not in the seal"), "{d}");
    }
}
