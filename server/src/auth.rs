//! Bearer tokens: one for the admin APIs (console, config API), one for proxies, one for
//! applications that register their instances (and may do nothing else); and the secret
//! that signs rollout webhooks.
//!
//! On first start the server creates them in its data directory, readable only by its user,
//! and logs where they are — never their values. It refuses to start on a file that others
//! can read or write (mode `0644`, say): whoever can read the admin token can change every
//! service, and whoever can read the proxy token can pose as a proxy.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::Context as _;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Caller, Found, Registrant, TokensDir};

/// The server's own tokens that may register instances, in the order they are tried.
const REGISTRANTS: [Role; 3] = [Role::Registration, Role::Proxy, Role::Admin];

/// The three tokens and the webhook secret, and where they live.
#[derive(Clone)]
pub struct Tokens {
    admin: String,
    proxy: String,
    registration: String,
    webhook: String,
    pub admin_path: PathBuf,
    pub proxy_path: PathBuf,
    pub registration_path: PathBuf,
    pub webhook_path: PathBuf,
    /// Tokens with roles (`--tokens-dir`), besides the admin token.
    pub roles: Option<Arc<TokensDir>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("admin_path", &self.admin_path)
            .field("proxy_path", &self.proxy_path)
            .field("registration_path", &self.registration_path)
            .field("webhook_path", &self.webhook_path)
            .field("roles", &self.roles.as_ref().map(|r| r.dir().to_path_buf()))
            .finish_non_exhaustive()
    }
}

/// Token files given by flag instead of the ones in the data directory.
#[derive(Clone, Debug, Default)]
pub struct TokenFiles {
    /// Tokens with roles, one file each.
    pub roles_dir: Option<PathBuf>,
    pub admin: Option<PathBuf>,
    pub proxy: Option<PathBuf>,
    pub registration: Option<PathBuf>,
    pub webhook: Option<PathBuf>,
}

/// Which token a request presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Proxy,
    /// Registers, renews and deregisters instances; nothing else.
    Registration,
}

impl Tokens {
    /// Reads `admin.token`, `proxy.token`, `registration.token` and `webhook.secret` from
    /// `dir`, creating missing ones.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Tokens> {
        Tokens::load(dir, &TokenFiles::default())
    }

    /// Like [`Tokens::load_or_create`], but each file given in `files` is read from where it
    /// is and never created: replicas share tokens that way (a secret mounted on every
    /// machine), and a missing one is an error rather than a new token no other replica
    /// knows.
    pub fn load(dir: &Path, files: &TokenFiles) -> anyhow::Result<Tokens> {
        let one = |given: &Option<PathBuf>, default: &str, what: &str, flag: &str| match given {
            None => {
                let path = dir.join(default);
                load_or_create(&path, what).map(|t| (t, path))
            }
            Some(path) => read_given(path, what, flag).map(|t| (t, path.clone())),
        };
        let (admin, admin_path) = one(&files.admin, "admin.token", "admin", "--admin-token-file")?;
        let (proxy, proxy_path) = one(&files.proxy, "proxy.token", "proxy", "--proxy-token-file")?;
        let (registration, registration_path) = one(
            &files.registration,
            "registration.token",
            "registration",
            "--registration-token-file",
        )?;
        let (webhook, webhook_path) = one(
            &files.webhook,
            "webhook.secret",
            "webhook signing",
            "--webhook-secret-file",
        )?;
        anyhow::ensure!(
            admin != proxy,
            "the admin and proxy tokens are the same; a proxy could then change the config"
        );
        anyhow::ensure!(
            registration != admin && registration != proxy,
            "the registration token is the same as the {} token; an application could then {}",
            if registration == admin {
                "admin"
            } else {
                "proxy"
            },
            if registration == admin {
                "change the config"
            } else {
                "read every service's config"
            }
        );
        let roles = files
            .roles_dir
            .as_deref()
            .map(|dir| TokensDir::open(dir, &[&admin, &proxy, &registration]))
            .transpose()?;
        Ok(Tokens {
            roles,
            admin,
            proxy,
            registration,
            webhook,
            admin_path,
            proxy_path,
            registration_path,
            webhook_path,
        })
    }

    /// The admin token, for calls one replica makes to another on an operator's behalf.
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// The key rollout webhooks are signed with (the file's text, trimmed).
    pub fn webhook_secret(&self) -> Vec<u8> {
        self.webhook.as_bytes().to_vec()
    }

    /// Watches the tokens directory, if there is one, until `stop`.
    pub fn spawn_watch(&self, stop: CancellationToken) {
        if let Some(roles) = &self.roles {
            let own = vec![
                self.admin.clone(),
                self.proxy.clone(),
                self.registration.clone(),
            ];
            roles.spawn_watch(own, stop);
        }
    }

    /// Who an `authorization` header value (`Bearer <token>`) presents to the admin APIs:
    /// the admin token, or one of the tokens with roles. The error says what was wrong.
    pub fn caller(&self, header: Option<&str>) -> Result<Caller, String> {
        self.check(Role::Admin, header)
            .map(|()| Caller::admin())
            .or_else(|e| {
                let presented = presented(header.unwrap_or_default());
                match &self.roles {
                    Some(roles) if header.is_some() => match roles.find(presented) {
                        Some(Found::Caller(caller)) => Ok(caller),
                        Some(Found::Registrant(_)) => Err(
                            "the token presented has the registration role: it registers \
                             instances and uses no admin API (that needs a viewer, operator or \
                             admin token)"
                                .to_string(),
                        ),
                        None => Err(format!(
                            "wrong token: neither the admin token ({}) nor one of {}",
                            self.admin_path.display(),
                            roles.dir().display()
                        )),
                    },
                    _ => Err(e),
                }
            })
    }

    /// Who an `authorization` header value presents to the instance registry: one of the
    /// server's registration, proxy or admin tokens, or a token of the directory with the
    /// `registration` or `admin` role. The error says what was wrong in terms of the
    /// registration token.
    pub fn registrant(&self, header: Option<&str>) -> Result<Registrant, String> {
        let own = self.check_any(&REGISTRANTS, header);
        let e = match own {
            Ok(role) => return Ok(Registrant::own(role.name())),
            Err(e) => e,
        };
        let (Some(roles), Some(header)) = (&self.roles, header) else {
            return Err(e);
        };
        match roles.find(presented(header)) {
            Some(Found::Registrant(r)) => Ok(r),
            Some(Found::Caller(c)) if c.access == Access::Admin => Ok(Registrant {
                by: c.name,
                services: c.services,
                admin: true,
            }),
            Some(Found::Caller(c)) => Err(format!(
                "registering instances needs the registration role (or admin); the token \
                 presented is a{} {}",
                if c.access == Access::Operator {
                    "n"
                } else {
                    ""
                },
                c.access.name()
            )),
            None => Err(format!(
                "{e}, or a registration token of {}",
                roles.dir().display()
            )),
        }
    }

    /// The first of `roles` whose token the `authorization` header value presents; the
    /// error names what was missing or wrong in terms of the first role.
    pub fn check_any(&self, roles: &[Role], header: Option<&str>) -> Result<Role, String> {
        let mut first = None;
        for &role in roles {
            match self.check(role, header) {
                Ok(()) => return Ok(role),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| "no token accepted here".into()))
    }

    /// Checks an `authorization` header value (`Bearer <token>`) against the token of `role`.
    pub fn check(&self, role: Role, header: Option<&str>) -> Result<(), String> {
        let Some(header) = header else {
            return Err(format!(
                "missing `authorization: Bearer <token>`; the {} token is in {}",
                role_name(role),
                self.path(role).display()
            ));
        };
        let presented = presented(header);
        let expected = match role {
            Role::Admin => &self.admin,
            Role::Proxy => &self.proxy,
            Role::Registration => &self.registration,
        };
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(format!(
                "wrong {} token; it is in {}",
                role_name(role),
                self.path(role).display()
            ))
        }
    }

    fn path(&self, role: Role) -> &Path {
        match role {
            Role::Admin => &self.admin_path,
            Role::Proxy => &self.proxy_path,
            Role::Registration => &self.registration_path,
        }
    }
}

/// The token in an `authorization` header value, `Bearer <token>`.
fn presented(header: &str) -> &str {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim()
}

impl Role {
    /// The role's name, as tokens, errors and registrations say it.
    pub fn name(self) -> &'static str {
        role_name(self)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Proxy => "proxy",
        Role::Registration => "registration",
    }
}

fn load_or_create(path: &Path, what: &str) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => {
            check_private(path, what)?;
            let token = text.trim().to_string();
            anyhow::ensure!(
                token.len() >= 16,
                "the {what} token in {} is shorter than 16 characters",
                path.display()
            );
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{token}")?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created the {what} token");
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn read_given(path: &Path, what: &str, flag: &str) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "{flag} {}: cannot read the {what} token (given files are not created; make one \
             with e.g. `openssl rand -hex 32`)",
            path.display()
        )
    })?;
    check_private(path, what)?;
    let token = text.trim().to_string();
    anyhow::ensure!(
        token.len() >= 16,
        "{flag} {}: the {what} token is shorter than 16 characters",
        path.display()
    );
    Ok(token)
}

/// Refuses a file that its group or others may read or write.
pub(crate) fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("reading the permissions of {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the {what} {} in {} is open to other users (mode {mode:04o}); anyone who can read \
         it can {}. Make it private with `chmod 600 {}` (and replace it if it may have been read)",
        if what == "webhook signing" {
            "key"
        } else {
            "token"
        },
        path.display(),
        match what {
            "admin" => "change every service",
            "proxy" => "pose as a proxy and read every service's config",
            "registration" => "register instances that then get traffic",
            "role" => "do what its role allows",
            _ => "forge the server's webhook signatures",
        },
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_checks() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::load_or_create(dir.path()).unwrap();
        let again = Tokens::load_or_create(dir.path()).unwrap();
        assert_eq!(tokens.admin, again.admin);
        assert_ne!(tokens.admin, tokens.proxy);
        let mode = fs::metadata(&tokens.admin_path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let bearer = format!("Bearer {}", tokens.admin);
        assert!(tokens.check(Role::Admin, Some(&bearer)).is_ok());
        assert!(tokens.check(Role::Proxy, Some(&bearer)).is_err());
        let registration = format!("Bearer {}", tokens.registration);
        let registry = [Role::Registration, Role::Proxy, Role::Admin];
        assert_eq!(tokens.check_any(&registry, Some(&bearer)), Ok(Role::Admin));
        assert_eq!(
            tokens.check_any(&registry, Some(&registration)),
            Ok(Role::Registration)
        );
        assert!(tokens.check(Role::Admin, Some(&registration)).is_err());
        let wrong = tokens
            .check_any(&registry, Some("Bearer nope"))
            .unwrap_err();
        assert!(wrong.contains("registration.token"), "{wrong}");
        assert!(tokens.check(Role::Admin, Some("Bearer nope")).is_err());
        assert!(tokens.check(Role::Admin, Some(&tokens.admin)).is_err());
        let missing = tokens.check(Role::Admin, None).unwrap_err();
        assert!(missing.contains("admin.token"), "{missing}");
        assert!(!missing.contains(&tokens.admin));
    }

    #[test]
    fn given_files_are_read_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared-admin");
        let files = TokenFiles {
            admin: Some(shared.clone()),
            ..TokenFiles::default()
        };
        let err = Tokens::load(dir.path(), &files).unwrap_err().to_string();
        assert!(err.contains("--admin-token-file"), "{err}");
        assert!(!shared.exists() && !dir.path().join("proxy.token").exists());
        fs::write(&shared, "short\n").unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Tokens::load(dir.path(), &files).unwrap_err().to_string();
        assert!(err.contains("shorter than 16"), "{err}");
        fs::write(&shared, format!("{}\n", "s".repeat(32))).unwrap();
        let tokens = Tokens::load(dir.path(), &files).unwrap();
        assert_eq!(tokens.admin, "s".repeat(32));
        assert_eq!(tokens.admin_path, shared);
        assert!(
            dir.path().join("proxy.token").exists(),
            "the others default"
        );
        assert!(!dir.path().join("admin.token").exists());
    }

    #[test]
    fn refuses_token_files_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::load_or_create(dir.path()).unwrap();
        for (path, mode) in [
            (&tokens.admin_path, 0o644),
            (&tokens.proxy_path, 0o640),
            (&tokens.webhook_path, 0o602),
        ] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
            let err = format!("{:#}", Tokens::load_or_create(dir.path()).unwrap_err());
            assert!(
                err.contains(&format!("mode {mode:04o}"))
                    && err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A token its owner alone may read (even without write) is fine.
        fs::set_permissions(&tokens.admin_path, fs::Permissions::from_mode(0o400)).unwrap();
        let again = Tokens::load_or_create(dir.path()).unwrap();
        assert_eq!(again.admin, tokens.admin);
    }
}
