//! Instances on etcd: each one a key `instances/<service>/<address>` (both URL-encoded)
//! under a lease of its TTL. Any replica renews it by keeping the lease alive, so an
//! instance that renews through another replica outlives the one it registered with; etcd
//! deletes the key when the lease runs out, and every replica follows the keys with a watch.

use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};

use super::{Instances, Record};
use crate::error::ApiError;
use crate::store::etcd::Etcd;

/// How long to wait before reading the instances again after the watch could not start.
const RETRY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct EtcdInstances {
    etcd: Etcd,
    /// `…/instances/`.
    prefix: String,
}

fn part(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

impl EtcdInstances {
    pub fn new(etcd: Etcd) -> EtcdInstances {
        EtcdInstances {
            prefix: etcd.key("instances/"),
            etcd,
        }
    }

    fn key(&self, service: &str, address: &str) -> String {
        format!("{}{}/{}", self.prefix, part(service), part(address))
    }

    /// Every instance registered now.
    pub async fn load(&self) -> anyhow::Result<Vec<Record>> {
        let resp = self
            .etcd
            .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// Writes `record` under a new lease of its TTL (set in `record.lease`); the lease of
    /// `old`, the registration it replaces, is revoked after.
    pub async fn put(&self, record: &mut Record, old: Option<&Record>) -> Result<(), ApiError> {
        let mut leases = self.etcd.client().lease_client();
        let lease = leases
            .grant(i64::from(record.ttl_seconds), None)
            .await
            .map_err(|e| self.etcd.unavailable(e))?
            .id();
        record.lease = lease;
        let value = serde_json::to_vec(record).map_err(anyhow::Error::from)?;
        let put = self
            .etcd
            .client()
            .kv_client()
            .put(
                self.key(&record.service, &record.address),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        if let Err(e) = put {
            let _ = leases.revoke(lease).await;
            return Err(self.etcd.unavailable(e));
        }
        if let Some(old) = old.filter(|o| o.lease != 0 && o.lease != lease) {
            // The key is on the new lease now; the old one holds nothing.
            let _ = leases.revoke(old.lease).await;
        }
        Ok(())
    }

    /// Keeps the instance's lease alive for another TTL; NOT_FOUND when it ran out.
    pub async fn renew(&self, record: &Record) -> Result<(), ApiError> {
        let gone = || {
            ApiError::NotFound(format!(
                "no instance `{}` of service `{}` is registered (it expired); register it again",
                record.address, record.service
            ))
        };
        let mut leases = self.etcd.client().lease_client();
        let (mut keeper, mut answers) = leases
            .keep_alive(record.lease)
            .await
            .map_err(|e| self.etcd.unavailable(e))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| self.etcd.unavailable(e))?;
        match answers.message().await {
            Ok(Some(answer)) if answer.ttl() > 0 => Ok(()),
            Ok(_) => Err(gone()),
            Err(e) => Err(self.etcd.unavailable(e)),
        }
    }

    /// Removes the instance at once: its lease revoked (which deletes the key), and the key
    /// deleted too in case the lease was already gone.
    pub async fn remove(&self, record: &Record) -> Result<(), ApiError> {
        if record.lease != 0 {
            let _ = self.etcd.client().lease_client().revoke(record.lease).await;
        }
        self.etcd
            .client()
            .kv_client()
            .delete(self.key(&record.service, &record.address), None)
            .await
            .map_err(|e| self.etcd.unavailable(e))?;
        Ok(())
    }

    /// Follows every replica's registrations and etcd's expiries into `instances`, forever.
    pub async fn follow(&self, instances: &Instances) {
        loop {
            let resp = match self
                .etcd
                .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the registered instances; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let now: Vec<Record> = resp
                .kvs()
                .iter()
                .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
                .collect();
            // What this replica holds but etcd no longer does went while it was not looking.
            for l in instances.list(None) {
                if !now
                    .iter()
                    .any(|r| r.service == l.record.service && r.address == l.record.address)
                {
                    instances.seen(&l.record.service, &l.record.address, None);
                }
            }
            for r in now {
                instances.seen(&r.service.clone(), &r.address.clone(), Some(r));
            }
            let revision = resp.header().map_or(0, |h| h.revision());
            let mut changes = self.etcd.watch_prefix(self.prefix.clone(), revision);
            while let Some(change) = changes.recv().await {
                let Some((service, address)) = self.parse_key(&change.key) else {
                    continue;
                };
                let record = change
                    .value
                    .and_then(|v| serde_json::from_slice::<Record>(&v).ok());
                instances.seen(&service, &address, record);
            }
        }
    }

    fn parse_key(&self, key: &str) -> Option<(String, String)> {
        let (service, address) = key.strip_prefix(&self.prefix)?.split_once('/')?;
        Some((
            urlencoding::decode(service).ok()?.into_owned(),
            urlencoding::decode(address).ok()?.into_owned(),
        ))
    }
}
