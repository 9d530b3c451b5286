//! What the server knows about each proxy: connected or not, the revision it applied, its
//! last NACK or ACK warning, the endpoints it ejected, a token it presented that was
//! rejected, when it was last heard from. Kept in memory; proxies reconnect after a restart.
//! With several replicas on etcd, [`shared`] adds the proxies connected to the others.

pub mod shared;

use std::collections::BTreeMap;
use std::sync::Mutex;

pub use grayline_routing::api::{EjectedEndpoint, ProxyStatus};

use crate::store::now_unix_ms;

#[derive(Debug, Default)]
pub struct Registry {
    proxies: Mutex<BTreeMap<String, Entry>>,
    /// What the other replicas publish, by store key (`…/proxies/<replica>/<proxy>`).
    remote: Mutex<BTreeMap<String, ProxyStatus>>,
}

/// Proxies never seen with a valid token that are listed for presenting a wrong one: a
/// bound, since anyone can claim any id without a token.
const MAX_UNKNOWN_REJECTED: usize = 64;
/// Ejected endpoints kept per proxy.
pub const MAX_EJECTED: usize = 1024;

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
                        ..ProxyStatus::default()
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

    pub fn acked(&self, id: &str, session: u64, revision: u64, warning: &str) {
        self.update(id, session, |s| {
            s.applied_revision = revision;
            s.ack_warning = warning.to_string();
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

    pub fn ejected(&self, id: &str, session: u64, endpoints: Vec<EjectedEndpoint>) {
        self.update(id, session, |s| s.ejected_endpoints = endpoints);
    }

    /// A connection claiming to be proxy `id` presented a token the server rejected. Shown on
    /// the proxy's entry until it connects with a valid one; a proxy never seen before gets a
    /// disconnected entry, while fewer than [`MAX_UNKNOWN_REJECTED`] such entries exist.
    pub fn token_rejected(&self, id: &str, address: &str, error: &str) {
        let now = now_unix_ms();
        self.with(|map| {
            if let Some(entry) = map.get_mut(id) {
                entry.status.token_rejected_unix_ms = now;
                entry.status.token_error = error.to_string();
                return;
            }
            let unknown = map.values().filter(|e| e.session == 0).count();
            if unknown >= MAX_UNKNOWN_REJECTED {
                return;
            }
            map.insert(
                id.to_string(),
                Entry {
                    status: ProxyStatus {
                        id: id.to_string(),
                        address: address.to_string(),
                        last_seen_unix_ms: now,
                        token_rejected_unix_ms: now,
                        token_error: error.to_string(),
                        ..ProxyStatus::default()
                    },
                    // No connection owns it.
                    session: 0,
                },
            );
        });
    }

    pub fn seen(&self, id: &str, session: u64) {
        self.update(id, session, |_| {});
    }

    pub fn disconnected(&self, id: &str, session: u64) {
        self.update(id, session, |s| s.connected = false);
    }

    /// The proxies of this replica.
    pub fn local(&self) -> Vec<ProxyStatus> {
        self.with(|map| map.values().map(|e| e.status.clone()).collect())
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ProxyStatus>> {
        self.remote
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn replace_remote(&self, all: BTreeMap<String, ProxyStatus>) {
        *self.remote() = all;
    }

    pub(crate) fn set_remote(&self, key: String, status: Option<ProxyStatus>) {
        match status {
            Some(s) => self.remote().insert(key, s),
            None => self.remote().remove(&key),
        };
    }

    /// Every proxy known: this replica's and the other replicas'. A proxy listed by several
    /// (it moved, and the replica it left still shows it disconnected) appears once: connected
    /// before disconnected, then the latest connection.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut all: BTreeMap<String, ProxyStatus> = BTreeMap::new();
        let remote: Vec<ProxyStatus> = self.remote().values().cloned().collect();
        for status in self.local().into_iter().chain(remote) {
            match all.get(&status.id) {
                Some(kept) if rank(kept) >= rank(&status) => {}
                _ => {
                    all.insert(status.id.clone(), status);
                }
            }
        }
        all.into_values().collect()
    }
}

/// Which of two entries of one proxy to show.
fn rank(s: &ProxyStatus) -> (bool, i64, i64) {
    (s.connected, s.connected_since_unix_ms, s.last_seen_unix_ms)
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
        r.acked("p", 1, 99, "");
        let s = &r.list()[0];
        assert!(s.connected);
        assert_eq!(s.applied_revision, 3);
        r.nacked("p", 2, 5, "bad regex");
        assert_eq!(r.list()[0].nack_error, "bad regex");
        r.acked("p", 2, 6, "not saved");
        let s = &r.list()[0];
        assert_eq!((s.applied_revision, s.nack_error.as_str()), (6, ""));
        assert_eq!(s.ack_warning, "not saved");
        r.acked("p", 2, 7, "");
        assert_eq!(
            r.list()[0].ack_warning,
            "",
            "a clean ACK clears the warning"
        );
        r.disconnected("p", 2);
        assert!(!r.list()[0].connected);
    }

    #[test]
    fn a_rejected_token_shows_until_the_proxy_connects() {
        let r = Registry::default();
        r.token_rejected("p", "127.0.0.1:9", "wrong proxy token");
        let s = &r.list()[0];
        assert!(!s.connected);
        assert_eq!(s.token_error, "wrong proxy token");
        assert!(s.token_rejected_unix_ms > 0);
        r.connected(&hello("p"), 1);
        assert_eq!(r.list()[0].token_error, "", "a valid token clears it");
        r.token_rejected("p", "127.0.0.1:9", "wrong proxy token");
        let s = &r.list()[0];
        assert!(
            s.connected,
            "another process with a bad token does not disconnect it"
        );
        assert_eq!(s.token_error, "wrong proxy token");
        // Strangers are listed, within a bound.
        for i in 0..(MAX_UNKNOWN_REJECTED + 10) {
            r.token_rejected(&format!("stranger-{i}"), "127.0.0.1:9", "wrong");
        }
        assert_eq!(r.list().len(), 1 + MAX_UNKNOWN_REJECTED);
    }

    #[test]
    fn ejected_endpoints_belong_to_the_session() {
        let r = Registry::default();
        r.connected(&hello("p"), 1);
        let e = EjectedEndpoint {
            service: "shop".into(),
            version: "v1".into(),
            endpoint: "127.0.0.1:1".into(),
            until_unix_ms: 1,
            ejections: 1,
            reason: "outlier".into(),
        };
        r.ejected("p", 1, vec![e.clone()]);
        assert_eq!(r.list()[0].ejected_endpoints, std::slice::from_ref(&e));
        r.connected(&hello("p"), 2);
        assert!(
            r.list()[0].ejected_endpoints.is_empty(),
            "a new session starts clean"
        );
        r.ejected("p", 1, vec![e]);
        assert!(
            r.list()[0].ejected_endpoints.is_empty(),
            "the old session is ignored"
        );
    }

    #[test]
    fn a_proxy_listed_by_two_replicas_shows_once_where_it_is_connected() {
        let r = Registry::default();
        r.connected(&hello("p"), 1);
        r.disconnected("p", 1);
        let elsewhere = ProxyStatus {
            id: "p".into(),
            connected: true,
            applied_revision: 9,
            ..ProxyStatus::default()
        };
        r.set_remote("/g/proxies/b/p".into(), Some(elsewhere.clone()));
        r.set_remote(
            "/g/proxies/b/q".into(),
            Some(ProxyStatus {
                id: "q".into(),
                ..ProxyStatus::default()
            }),
        );
        let list = r.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], elsewhere);
        assert_eq!(
            r.local().len(),
            1,
            "the others' proxies are not this replica's"
        );
        r.set_remote("/g/proxies/b/p".into(), None);
        assert!(!r.list()[0].connected, "back to the local entry");
    }
}
