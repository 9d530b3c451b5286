//! Who may do what with the admin APIs: tokens with a role and, optionally, the services
//! they may change, kept as files in a directory (`--tokens-dir`) that is re-read when it
//! changes, so a token is rotated by adding the new one, moving its clients, and removing
//! the old, with no restart.
//!
//! Roles, each including the one before:
//! - `viewer` reads everything and changes nothing;
//! - `operator` also moves traffic: sets policies (weights, rules), promotes, restores
//!   (undo), starts and controls rollouts;
//! - `admin` also creates, changes and deletes services and versions.
//!
//! And one role beside them: `registration` registers, renews and deregisters instances (of
//! its `services` only, when it lists them) and uses no admin API — the token an
//! application's instances start with, rotated the same way.
//!
//! A token limited to some services may change only those (reads stay whole). The server's
//! own admin token (`admin.token`) is an `admin` token named `admin`. Every refusal names the
//! role (and service) that would be needed, never the token; the history records the name
//! of the token that made each change.
//!
//! A file is `<name>.yaml`, private to the server's user like every token file:
//!
//! ```yaml
//! token: 6f1c…        # at least 16 characters
//! role: operator
//! services: [shop]    # optional
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::os::unix::fs::PermissionsExt as _;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// How often the tokens directory is looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    #[default]
    Viewer,
    Operator,
    Admin,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Viewer => "viewer",
            Access::Operator => "operator",
            Access::Admin => "admin",
        }
    }
}

/// Who is calling, as their token says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (its file's name; `admin` for the server's admin token).
    pub name: String,
    pub access: Access,
    /// The services it may change; `None`: all.
    pub services: Option<Vec<String>>,
}

impl Caller {
    /// The server's own admin token.
    pub fn admin() -> Caller {
        Caller {
            name: "admin".into(),
            access: Access::Admin,
            services: None,
        }
    }

    /// Whether this caller may do what needs `need` to `service`; the refusal says what
    /// would be needed.
    pub fn may(&self, need: Access, service: &str) -> Result<(), ApiError> {
        if self.access < need {
            return Err(ApiError::PermissionDenied(format!(
                "this needs the {} role{}; the token presented is a{} {}",
                need.name(),
                if need == Access::Admin {
                    ""
                } else {
                    " or admin"
                },
                if self.access == Access::Operator {
                    "n"
                } else {
                    ""
                },
                self.access.name(),
            )));
        }
        match &self.services {
            Some(list) if !list.iter().any(|s| s == service) => {
                Err(ApiError::PermissionDenied(format!(
                    "the token presented may change only {}; `{service}` needs a token for it",
                    list.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Who registers instances, as their token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registrant {
    /// What the registry records as the registrant: the token's name for a token of the
    /// directory, else the server's token's role (`registration`, `proxy`, `admin`).
    pub by: String,
    /// The services whose instances it may register; `None`: all.
    pub services: Option<Vec<String>>,
    /// Whether it may also list instances (an admin token).
    pub admin: bool,
}

impl Registrant {
    /// A token of the server's own, with the role it has.
    pub fn own(role: &str) -> Registrant {
        Registrant {
            by: role.to_string(),
            services: None,
            admin: role == "admin",
        }
    }

    /// Whether it may register (renew, deregister) instances of `service`.
    pub fn may_register(&self, service: &str) -> Result<(), ApiError> {
        match &self.services {
            Some(list) if !list.iter().any(|s| s == service) => {
                Err(ApiError::PermissionDenied(format!(
                    "the token presented may register instances of {} only; `{service}` needs a \
                     registration token for it",
                    list.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The role a token file names: one of the admin APIs' [`Access`], or `registration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileRole {
    Viewer,
    Operator,
    Admin,
    Registration,
}

/// One token file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    token: String,
    role: FileRole,
    #[serde(default)]
    services: Option<Vec<String>>,
}

/// A token of the directory.
struct Entry {
    token: String,
    /// Its name, role and services; a registration token's `access` is unused.
    caller: Caller,
    /// A `registration` token: the registry only.
    registration: bool,
}

/// What a token of the directory is, when it is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A token of the admin APIs.
    Caller(Caller),
    /// A `registration` token.
    Registrant(Registrant),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

/// What tells a changed directory from the one read: each file's name, time, size and mode
/// (a file made readable to others must be noticed too).
type Stamp = Vec<(PathBuf, Option<SystemTime>, u64, u32)>;

fn stamp(dir: &Path) -> Stamp {
    let mut out: Stamp = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let meta = e.metadata().ok();
                    (
                        e.path(),
                        meta.as_ref().and_then(|m| m.modified().ok()),
                        meta.as_ref().map_or(0, |m| m.len()),
                        meta.map_or(0, |m| m.permissions().mode()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Reads one token file; the error names the file and the field.
fn read_file(path: &Path) -> anyhow::Result<Entry> {
    crate::auth::check_private(path, "role")?;
    let text = std::fs::read_to_string(path)?;
    let file: File = serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let token = file.token.trim().to_string();
    anyhow::ensure!(token.len() >= 16, "token: shorter than 16 characters");
    if let Some(services) = &file.services {
        anyhow::ensure!(
            !services.is_empty(),
            "services: empty (leave it out for all)"
        );
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the file's name is not UTF-8")?
        .to_string();
    let access = match file.role {
        FileRole::Viewer | FileRole::Registration => Access::Viewer,
        FileRole::Operator => Access::Operator,
        FileRole::Admin => Access::Admin,
    };
    Ok(Entry {
        token,
        caller: Caller {
            name,
            access,
            services: file.services,
        },
        registration: file.role == FileRole::Registration,
    })
}

/// The tokens of a directory, read again when it changes.
#[derive(Debug)]
pub struct TokensDir {
    dir: PathBuf,
    entries: ArcSwap<Vec<Entry>>,
    read: Mutex<Stamp>,
}

impl TokensDir {
    /// Reads every `*.yaml` in `dir`. At start a file that does not read stops the start,
    /// naming it; so does a token that is also one of `reserved` (the server's own).
    pub fn open(dir: &Path, reserved: &[&str]) -> anyhow::Result<Arc<TokensDir>> {
        let entries = read_dir(dir, reserved)?;
        tracing::info!(dir = %dir.display(), tokens = entries.len(), "tokens with roles read");
        Ok(Arc::new(TokensDir {
            read: Mutex::new(stamp(dir)),
            dir: dir.to_path_buf(),
            entries: ArcSwap::from_pointee(entries),
        }))
    }

    /// What this token is, if it is one of the directory's.
    pub fn find(&self, presented: &str) -> Option<Found> {
        let entries = self.entries.load();
        // Every token compared, in constant time each: which one matched shows in no timing.
        let mut found = None;
        for e in entries.iter() {
            if bool::from(presented.as_bytes().ct_eq(e.token.as_bytes())) {
                found = Some(e);
            }
        }
        found.map(|e| match e.registration {
            false => Found::Caller(e.caller.clone()),
            true => Found::Registrant(Registrant {
                by: e.caller.name.clone(),
                services: e.caller.services.clone(),
                admin: false,
            }),
        })
    }

    /// The admin-API caller whose token this is, if any (a registration token is none).
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        match self.find(presented)? {
            Found::Caller(caller) => Some(caller),
            Found::Registrant(_) => None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory again if it changed; `Ok(true)` when the tokens were replaced.
    /// A directory that does not read keeps the tokens in use.
    pub fn reload_if_changed(&self, reserved: &[&str]) -> anyhow::Result<bool> {
        let now = stamp(&self.dir);
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if *read == now {
            return Ok(false);
        }
        *read = now;
        let entries = read_dir(&self.dir, reserved)?;
        self.entries.store(Arc::new(entries));
        Ok(true)
    }

    /// Watches the directory until `stop`.
    pub fn spawn_watch(self: &Arc<Self>, reserved: Vec<String>, stop: CancellationToken) {
        let me = self.clone();
        crate::tls::every(WATCH_EVERY, stop, move || {
            let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
            match me.reload_if_changed(&reserved) {
                Ok(true) => tracing::info!(
                    dir = %me.dir.display(),
                    tokens = me.entries.load().len(),
                    "tokens with roles read again"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "the tokens directory changed but does not read; the tokens in use stay"
                ),
            }
        });
    }
}

fn read_dir(dir: &Path, reserved: &[&str]) -> anyhow::Result<Vec<Entry>> {
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("--tokens-dir {}", dir.display()))?;
    let mut entries: Vec<Entry> = Vec::new();
    for item in listing {
        let path = item?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let entry = read_file(&path).with_context(|| format!("token file {}", path.display()))?;
        if reserved.iter().any(|r| *r == entry.token) {
            anyhow::bail!(
                "token file {}: its token is one of the server's own (admin, proxy or registration)",
                path.display()
            );
        }
        if let Some(twin) = entries.iter().find(|e| e.token == entry.token) {
            anyhow::bail!(
                "token files {} and {}.yaml hold the same token",
                path.display(),
                twin.caller.name
            );
        }
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.caller.name.cmp(&b.caller.name));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn roles_include_the_ones_before_and_services_limit_changes() {
        let viewer = Caller {
            name: "dash".into(),
            access: Access::Viewer,
            services: None,
        };
        let e = viewer
            .may(Access::Operator, "shop")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "this needs the operator role or admin; the token presented is a viewer"
        );
        let ci = Caller {
            name: "ci".into(),
            access: Access::Operator,
            services: Some(vec!["shop".into()]),
        };
        assert!(ci.may(Access::Operator, "shop").is_ok());
        assert!(ci.may(Access::Viewer, "shop").is_ok());
        let e = ci.may(Access::Operator, "cart").unwrap_err().to_string();
        assert!(e.contains("may change only `shop`"), "{e}");
        let e = ci.may(Access::Admin, "shop").unwrap_err().to_string();
        assert_eq!(
            e,
            "this needs the admin role; the token presented is an operator"
        );
        assert!(!e.contains("ci"), "the refusal does not name the token");
        assert!(Caller::admin().may(Access::Admin, "cart").is_ok());
    }

    #[test]
    fn a_directory_is_read_checked_and_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ci",
            "token: aaaaaaaaaaaaaaaaaaaa\nrole: operator\nservices: [shop]\n",
        );
        write(
            dir.path(),
            "dash",
            "token: bbbbbbbbbbbbbbbbbbbb\nrole: viewer\n",
        );
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let tokens = TokensDir::open(dir.path(), &["cccccccccccccccccccc"]).unwrap();
        let ci = tokens.caller("aaaaaaaaaaaaaaaaaaaa").unwrap();
        assert_eq!((ci.name.as_str(), ci.access), ("ci", Access::Operator));
        assert_eq!(
            tokens.caller("bbbbbbbbbbbbbbbbbbbb").unwrap().access,
            Access::Viewer
        );
        assert!(tokens.caller("aaaaaaaaaaaaaaaaaaa").is_none());

        // Rotation: a new token added, the old one removed.
        write(
            dir.path(),
            "ci-2",
            "token: dddddddddddddddddddd\nrole: operator\n",
        );
        std::fs::remove_file(dir.path().join("ci.yaml")).unwrap();
        assert!(tokens.reload_if_changed(&[]).unwrap());
        assert!(tokens.caller("aaaaaaaaaaaaaaaaaaaa").is_none());
        assert_eq!(tokens.caller("dddddddddddddddddddd").unwrap().name, "ci-2");

        // A bad file: the tokens in use stay, and the error names the file and field.
        write(dir.path(), "bad", "token: short\nrole: operator\n");
        let e = format!("{:#}", tokens.reload_if_changed(&[]).unwrap_err());
        assert!(
            e.contains("bad.yaml") && e.contains("token: shorter"),
            "{e}"
        );
        assert!(tokens.caller("dddddddddddddddddddd").is_some());
        write(
            dir.path(),
            "bad",
            "token: eeeeeeeeeeeeeeeeeeee\nrole: root\n",
        );
        let e = format!("{:#}", tokens.reload_if_changed(&[]).unwrap_err());
        assert!(e.contains("role"), "{e}");
        std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();

        // One of the server's own tokens, or a file others can read: refused.
        write(
            dir.path(),
            "own",
            "token: cccccccccccccccccccc\nrole: viewer\n",
        );
        let e = format!(
            "{:#}",
            TokensDir::open(dir.path(), &["cccccccccccccccccccc"]).unwrap_err()
        );
        assert!(e.contains("one of the server's own"), "{e}");
        std::fs::remove_file(dir.path().join("own.yaml")).unwrap();
        let open = dir.path().join("dash.yaml");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", TokensDir::open(dir.path(), &[]).unwrap_err());
        assert!(e.contains("open to other users"), "{e}");
    }

    #[test]
    fn a_registration_token_registers_its_services_and_is_no_caller() {
        let dir = tempfile::TempDir::new().unwrap();
        write(
            dir.path(),
            "shop-instances",
            "token: rrrrrrrrrrrrrrrrrrrr\nrole: registration\nservices: [shop]\n",
        );
        let tokens = TokensDir::open(dir.path(), &[]).unwrap();
        assert!(tokens.caller("rrrrrrrrrrrrrrrrrrrr").is_none());
        let Some(Found::Registrant(r)) = tokens.find("rrrrrrrrrrrrrrrrrrrr") else {
            panic!("not a registrant");
        };
        assert_eq!(r.by, "shop-instances");
        assert!(!r.admin);
        assert!(r.may_register("shop").is_ok());
        let e = r.may_register("cart").unwrap_err().to_string();
        assert!(e.contains("may register instances of `shop` only"), "{e}");
        assert!(Registrant::own("registration").may_register("cart").is_ok());
        assert!(Registrant::own("admin").admin);
    }
}
