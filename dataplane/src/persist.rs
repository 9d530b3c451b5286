//! The last good config on disk, so a proxy that starts while the server is down can serve.
//! Written to a temporary file, synced, then renamed over the old one: a crash leaves
//! either the old config or the new one, never half of either.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use grayline_routing::Service;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub revision: u64,
    pub services: Vec<Service>,
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

    pub fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(saved)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
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
        let saved = Saved {
            revision: 7,
            services: vec![Service::single("s", Version::new("v1", &["127.0.0.1:1"]))],
        };
        file.save(&saved).unwrap();
        assert_eq!(file.load().unwrap(), Some(saved));
        std::fs::write(file.path(), b"{broken").unwrap();
        assert!(file.load().is_err());
    }
}
