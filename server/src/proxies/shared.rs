//! The proxy list of several replicas on etcd: each replica publishes the proxies connected
//! to it under `proxies/<replica>/<proxy>`, on a lease of its own that it keeps alive, and
//! watches what the others publish. So every replica lists every proxy, and the proxies of a
//! replica that dies vanish with its lease — until they reconnect to a live replica, which
//! then lists them as its own.
//!
//! Only changes are written: an entry whose status is unchanged but for when it was last
//! heard from is rewritten at most every [`SEEN_EVERY_MS`], so a thousand idle proxies cost
//! a few writes a second, not a thousand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{DeleteOptions, GetOptions, PutOptions};
use tokio_util::sync::CancellationToken;

use super::{ProxyStatus, Registry};
use crate::store::etcd::Etcd;

/// Seconds a replica's entries outlive it.
pub const LEASE_SECONDS: i64 = 10;
/// How often the local list is compared with what was published, and the lease kept alive.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// An entry changed only in `last_seen_unix_ms` is republished this often.
pub const SEEN_EVERY_MS: i64 = 15_000;

fn part(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

/// Whether `new` must be written over `old` (what was published).
fn changed(old: &ProxyStatus, new: &ProxyStatus) -> bool {
    let same_but_seen = ProxyStatus {
        last_seen_unix_ms: old.last_seen_unix_ms,
        ..new.clone()
    } == *old;
    !same_but_seen || new.last_seen_unix_ms - old.last_seen_unix_ms >= SEEN_EVERY_MS
}

/// Publishes `registry`'s own proxies as replica `me` and fills its list of the others',
/// until `stop` (when the lease is revoked, so the entries go at once).
pub fn spawn(registry: Arc<Registry>, etcd: Etcd, me: String, stop: CancellationToken) {
    let shared = Arc::new(Shared {
        prefix: etcd.key("proxies/"),
        mine: etcd.key(&format!("proxies/{}/", part(&me))),
        registry,
        etcd,
    });
    let watching = shared.clone();
    let watch_stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = watching.watch() => {}
            () = watch_stop.cancelled() => {}
        }
    });
    tokio::spawn(async move { shared.publish(stop).await });
}

struct Shared {
    etcd: Etcd,
    registry: Arc<Registry>,
    /// `…/proxies/`.
    prefix: String,
    /// `…/proxies/<me>/`.
    mine: String,
}

impl Shared {
    /// Reads what the other replicas published, then follows their changes.
    async fn watch(&self) {
        loop {
            let resp = self
                .etcd
                .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the proxies of the other replicas; trying again");
                    tokio::time::sleep(PUBLISH_EVERY).await;
                    continue;
                }
            };
            let mut remote = BTreeMap::new();
            for kv in resp.kvs() {
                let key = kv.key_str().unwrap_or("").to_string();
                if key.starts_with(&self.mine) {
                    continue;
                }
                if let Ok(status) = serde_json::from_slice::<ProxyStatus>(kv.value()) {
                    remote.insert(key, status);
                }
            }
            self.registry.replace_remote(remote);
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut changes = self.etcd.watch_prefix(self.prefix.clone(), revision);
            while let Some(change) = changes.recv().await {
                if change.key.starts_with(&self.mine) {
                    continue;
                }
                let status = change
                    .value
                    .and_then(|v| serde_json::from_slice::<ProxyStatus>(&v).ok());
                self.registry.set_remote(change.key, status);
            }
        }
    }

    /// Writes this replica's entries as they change, under a lease kept alive; a lost lease
    /// (etcd was unreachable longer than it lasts) is replaced and everything republished.
    async fn publish(&self, stop: CancellationToken) {
        let client = self.etcd.client();
        loop {
            let lease = match client.lease_client().grant(LEASE_SECONDS, None).await {
                Ok(l) => l.id(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish this replica's proxies: no lease from the store");
                    tokio::select! {
                        () = tokio::time::sleep(PUBLISH_EVERY) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            let Ok((mut keeper, mut answers)) = client.lease_client().keep_alive(lease).await
            else {
                continue;
            };
            // Entries of an earlier process at this address, whose lease has not run out.
            let _ = client
                .kv_client()
                .delete(self.mine.clone(), Some(DeleteOptions::new().with_prefix()))
                .await;
            let mut published: BTreeMap<String, ProxyStatus> = BTreeMap::new();
            let mut every = tokio::time::interval(PUBLISH_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = stop.cancelled() => {
                        let _ = client.lease_client().revoke(lease).await;
                        return;
                    }
                }
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(PUBLISH_EVERY * 2, answers.message()).await {
                    Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                    _ => break,
                }
                if self.sync(&mut published, lease).await.is_err() {
                    break;
                }
            }
            tracing::warn!("this replica's proxy list lease was lost; publishing it again");
            let _ = client.lease_client().revoke(lease).await;
        }
    }

    /// Writes what changed since `published`.
    async fn sync(
        &self,
        published: &mut BTreeMap<String, ProxyStatus>,
        lease: i64,
    ) -> Result<(), etcd_client::Error> {
        let mut kv = self.etcd.client().kv_client();
        for status in self.registry.local() {
            if published
                .get(&status.id)
                .is_some_and(|old| !changed(old, &status))
            {
                continue;
            }
            let key = format!("{}{}", self.mine, part(&status.id));
            let value = serde_json::to_vec(&status).expect("a proxy status serializes");
            kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await?;
            published.insert(status.id.clone(), status);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_changes_and_stale_sightings_are_republished() {
        let old = ProxyStatus {
            id: "p".into(),
            connected: true,
            applied_revision: 3,
            last_seen_unix_ms: 1_000,
            ..ProxyStatus::default()
        };
        let mut new = old.clone();
        new.last_seen_unix_ms = 2_000;
        assert!(!changed(&old, &new), "only seen again");
        new.last_seen_unix_ms = 1_000 + SEEN_EVERY_MS;
        assert!(changed(&old, &new), "seen long after it was published");
        let mut acked = old.clone();
        acked.applied_revision = 4;
        assert!(changed(&old, &acked));
    }
}
