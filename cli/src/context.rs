//! Named connections ("contexts") in a small YAML file, as kubectl keeps them:
//! `$GRAYLINE_CONFIG`, else `$XDG_CONFIG_HOME/grayline/config.yaml`, else
//! `~/.config/grayline/config.yaml`. Tokens are never stored in it, only the path of the file
//! that holds one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::{Failure, Result};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The CA file for an `https://` server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// Where the file is.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("GRAYLINE_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("grayline").join("config.yaml")
}

impl ConfigFile {
    /// The file at `path`, or an empty one if there is none.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_norway::from_str(&text)
                .map_err(|e| Failure::invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(Failure::from(e).context(path.display())),
        }
    }

    /// Writes the file (readable only by its owner), through a temporary file.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Failure::from(e).context(dir.display()))?;
        }
        let text = serde_norway::to_string(self)
            .map_err(|e| Failure::new(crate::exit::Code::Error, e.to_string()))?;
        let tmp = path.with_extension("yaml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Failure::from(e).context(tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).map_err(|e| Failure::from(e).context(path.display()))?;
        Ok(())
    }

    /// The context `name`, or the current one.
    pub fn context(&self, name: Option<&str>) -> Result<Option<(String, Context)>> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get(name) {
            Some(c) => Ok(Some((name.to_string(), c.clone()))),
            None => Err(Failure::new(
                crate::exit::Code::NotFound,
                format!(
                    "no context `{name}`; there {}",
                    match self.contexts.len() {
                        0 => "are none (create one with `grayline context set NAME --server URL`)"
                            .to_string(),
                        _ => format!(
                            "are {}",
                            self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    }
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_unknown_names_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grayline").join("config.yaml");
        assert_eq!(ConfigFile::load(&path).unwrap(), ConfigFile::default());
        let mut f = ConfigFile::default();
        f.contexts.insert(
            "prod".into(),
            Context {
                server: Some("https://10.0.0.1:7070".into()),
                token_file: Some("/etc/grayline/admin.token".into()),
                actor: None,
                ca: Some("/etc/grayline/ca.pem".into()),
            },
        );
        f.current = Some("prod".into());
        f.save(&path).unwrap();
        let back = ConfigFile::load(&path).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.context(None).unwrap().unwrap().0, "prod");
        let err = back.context(Some("staging")).unwrap_err();
        assert!(
            err.message.contains("no context `staging`; there are prod"),
            "{err}"
        );
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
            0
        );
    }
}
