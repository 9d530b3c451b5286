//! The last good config on disk, so a proxy that starts while the server is down can serve.
//! Written to a temporary file, synced, then renamed over the old one: a crash leaves
//! either the old config or the new one, never half of either. A save that fails removes
//! its temporary file.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use grayline_routing::Service;
use serde::{Deserialize, Serialize};

use crate::discovery::Known;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub revision: u64,
    pub services: Vec<Service>,
    /// The registered instances of tagged versions, by service.
    #[serde(default, skip_serializing_if = "Known::is_empty")]
    pub instances: Known,
}

/// [`Saved`] borrowed from what is served, for writing.
#[derive(Serialize)]
struct SavedRef<'a> {
    revision: u64,
    #[serde(serialize_with = "shared")]
    services: &'a [Arc<Service>],
    #[serde(skip_serializing_if = "Known::is_empty")]
    instances: &'a Known,
}

/// Services held in `Arc`s, written as a list of services.
fn shared<S: serde::Serializer>(services: &&[Arc<Service>], out: S) -> Result<S::Ok, S::Error> {
    out.collect_seq(services.iter().map(|s| &**s))
}

#[derive(Clone, Debug)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(dir: &Path) -> ConfigFile {
        ConfigFile {
            path: dir.join("config.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> anyhow::Result<Option<Saved>> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Saves what is served, written straight from it (no copy of the catalog, no buffer
    /// of its text: at thousands of services those were megabytes per push).
    pub fn save(
        &self,
        revision: u64,
        services: &[Arc<Service>],
        instances: &Known,
    ) -> anyhow::Result<()> {
        let saved = SavedRef {
            revision,
            services,
            instances,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let written = Self::write(&tmp, &saved).and_then(|()| {
            fs::rename(&tmp, &self.path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), self.path.display()))
        });
        if let Err(e) = written {
            // Leave no half-written file behind (a full disk keeps the space it took).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn write(tmp: &Path, saved: &SavedRef<'_>) -> anyhow::Result<()> {
        let file = fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
        serde_json::to_writer(&mut out, saved)
            .map_err(std::io::Error::from)
            .and_then(|()| out.flush())
            .and_then(|()| out.get_ref().sync_all())
            .with_context(|| format!("writing {}", tmp.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::Version;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::new(&dir.path().join("state"));
        assert_eq!(file.load().unwrap(), None);
        let mut saved = saved();
        saved.instances = Known::from_push(vec![grayline_proto::v1::ServiceInstances {
            service: "s".into(),
            instances: vec![grayline_proto::v1::Instance {
                tag: "1.1.2".into(),
                address: "127.0.0.1:2".into(),
            }],
        }])
        .unwrap();
        save(&file, &saved).unwrap();
        assert_eq!(file.load().unwrap(), Some(saved));
        std::fs::write(file.path(), b"{broken").unwrap();
        assert!(file.load().is_err());
    }

    fn save(file: &ConfigFile, s: &Saved) -> anyhow::Result<()> {
        let services: Vec<Arc<Service>> = s.services.iter().cloned().map(Arc::new).collect();
        file.save(s.revision, &services, &s.instances)
    }

    fn saved() -> Saved {
        Saved {
            revision: 7,
            services: vec![Service::single("s", Version::new("v1", &["127.0.0.1:1"]))],
            instances: Known::default(),
        }
    }

    #[test]
    fn a_full_disk_fails_the_save_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::new(dir.path());
        let first = saved();
        save(&file, &first).unwrap();
        // Writing to /dev/full fails the way a full disk does (ENOSPC).
        let tmp = dir.path().join("config.json.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let mut newer = saved();
        newer.revision = 8;
        let err = format!("{:#}", save(&file, &newer).unwrap_err());
        assert!(err.contains("config.json.tmp"), "{err}");
        assert!(
            !tmp.exists() && tmp.symlink_metadata().is_err(),
            "no temporary file left"
        );
        assert_eq!(
            file.load().unwrap(),
            Some(saved()),
            "the old config is intact"
        );
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::new(dir.path());
        // A directory where the file should go: the rename fails after the write.
        std::fs::create_dir(file.path()).unwrap();
        std::fs::write(file.path().join("keep"), b"x").unwrap();
        let s = saved();
        let err = format!("{:#}", save(&file, &s).unwrap_err());
        assert!(err.contains("renaming"), "{err}");
        assert!(!dir.path().join("config.json.tmp").exists());
    }
}
