//! What the server knows about each proxy: connected or not, the revision it applied, its
//! last NACK, when it was last heard from. Kept in memory; proxies reconnect after a restart.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub use grayline_routing::api::ProxyStatus;

use crate::store::now_unix_ms;

#[derive(Debug, Default)]
pub struct Registry {
    proxies: Mutex<BTreeMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    status: ProxyStatus,
    /// Which connection owns the entry; an older connection closing must not mark a newer
    /// one of the same proxy as disconnected.
    session: u64,
}

/// What a new connection tells about itself.
#[derive(Clone, Debug)]
pub struct Hello {
    pub id: String,
    pub address: String,
    pub services: Vec<String>,
    pub last_applied_revision: u64,
    pub proxy_version: String,
}

impl Registry {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> R) -> R {
        let mut guard = self
            .proxies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn connected(&self, hello: &Hello, session: u64) {
        let now = now_unix_ms();
        self.with(|map| {
            map.insert(
                hello.id.clone(),
                Entry {
                    status: ProxyStatus {
                        id: hello.id.clone(),
                        connected: true,
                        applied_revision: hello.last_applied_revision,
                        nack_revision: 0,
                        nack_error: String::new(),
                        last_seen_unix_ms: now,
                        address: hello.address.clone(),
                        services: hello.services.clone(),
                        connected_since_unix_ms: now,
                        proxy_version: hello.proxy_version.clone(),
                    },
                    session,
                },
            );
        });
    }

    fn update(&self, id: &str, session: u64, f: impl FnOnce(&mut ProxyStatus)) {
        self.with(|map| {
            if let Some(entry) = map.get_mut(id).filter(|e| e.session == session) {
                entry.status.last_seen_unix_ms = now_unix_ms();
                f(&mut entry.status);
            }
        });
    }

    pub fn acked(&self, id: &str, session: u64, revision: u64) {
        self.update(id, session, |s| {
            s.applied_revision = revision;
            // A successful apply supersedes an older rejection.
            if s.nack_revision <= revision {
                s.nack_revision = 0;
                s.nack_error.clear();
            }
        });
    }

    pub fn nacked(&self, id: &str, session: u64, revision: u64, error: &str) {
        self.update(id, session, |s| {
            s.nack_revision = revision;
            s.nack_error = error.to_string();
        });
    }

    pub fn seen(&self, id: &str, session: u64) {
        self.update(id, session, |_| {});
    }

    pub fn disconnected(&self, id: &str, session: u64) {
        self.update(id, session, |s| s.connected = false);
    }

    pub fn list(&self) -> Vec<ProxyStatus> {
        self.with(|map| map.values().map(|e| e.status.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str) -> Hello {
        Hello {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            services: vec![],
            last_applied_revision: 3,
            proxy_version: "test".into(),
        }
    }

    #[test]
    fn newer_session_wins() {
        let r = Registry::default();
        r.connected(&hello("p"), 1);
        r.connected(&hello("p"), 2);
        r.disconnected("p", 1);
        r.acked("p", 1, 99);
        let s = &r.list()[0];
        assert!(s.connected);
        assert_eq!(s.applied_revision, 3);
        r.nacked("p", 2, 5, "bad regex");
        assert_eq!(r.list()[0].nack_error, "bad regex");
        r.acked("p", 2, 6);
        let s = &r.list()[0];
        assert_eq!((s.applied_revision, s.nack_error.as_str()), (6, ""));
        r.disconnected("p", 2);
        assert!(!r.list()[0].connected);
    }
}
