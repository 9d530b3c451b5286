//! Which replica drives the rollouts, when the store is etcd: exactly one at a time holds the
//! key `rollouts/leader` under a lease it keeps alive; the others watch it and campaign when
//! it goes (the holder stopped, or died and its lease expired). Every rollout write by the
//! leader is fenced on still holding the key, so a replica that lost its lease while it was
//! stalled cannot overwrite its successor's decisions.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::etcd::Etcd;

/// Seconds a leader's lease lasts without a keep-alive: how long a dead leader is waited for.
pub const LEASE_SECONDS: i64 = 5;

/// What this replica is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leading, under this lease.
    Leader { lease: i64 },
    /// Following `leader` (its advertised gRPC address), if one is known.
    Follower { leader: Option<String> },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

#[derive(Clone, Debug)]
pub struct Leadership {
    etcd: Etcd,
    /// This replica's advertised gRPC address: the leader key's value while it leads.
    pub me: String,
}

impl Leadership {
    pub fn new(etcd: Etcd, me: String) -> Leadership {
        Leadership { etcd, me }
    }

    pub fn key(&self) -> String {
        self.etcd.key("rollouts/leader")
    }

    /// A comparison that holds while this replica leads, to fence its writes with.
    pub fn fence(&self) -> Compare {
        Compare::value(self.key(), CompareOp::Equal, self.me.clone())
    }

    /// Campaigns until `stop`, publishing the role as it changes.
    pub fn spawn(self, stop: CancellationToken) -> watch::Receiver<Role> {
        let (tx, rx) = watch::channel(Role::Follower { leader: None });
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = self.round(&tx) => {}
                    () = stop.cancelled() => {
                        // Step down at once, so another replica need not wait for the lease.
                        let role = tx.borrow().clone();
                        if let Role::Leader { lease } = role {
                            let _ = self.etcd.client().lease_client().revoke(lease).await;
                        }
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        rx
    }

    /// One campaign: lead until the lease is lost, or follow until the leader goes.
    async fn round(&self, tx: &watch::Sender<Role>) {
        let client = self.etcd.client();
        let lease = match client.lease_client().grant(LEASE_SECONDS, None).await {
            Ok(l) => l.id(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot campaign for the rollouts: no lease from the store");
                tx.send_replace(Role::Follower { leader: None });
                return;
            }
        };
        let key = self.key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.me.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = match client.kv_client().txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot campaign for the rollouts");
                let _ = client.lease_client().revoke(lease).await;
                return;
            }
        };
        if resp.succeeded() {
            tracing::info!(me = %self.me, "this replica drives the rollouts now");
            tx.send_replace(Role::Leader { lease });
            self.keep(lease).await;
            tracing::warn!("this replica no longer drives the rollouts (its lease is gone)");
            tx.send_replace(Role::Follower { leader: None });
            // If the lease lives on (a keep-alive failed, not the lease), give the key up so
            // the next campaign need not wait for it to expire.
            let _ = client.lease_client().revoke(lease).await;
            return;
        }
        let _ = client.lease_client().revoke(lease).await;
        let leader = resp.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok().map(str::to_string)),
            _ => None,
        });
        // A key still holding this replica's own address is a lease of its past term on its
        // way out: no one leads until it goes.
        let leader = leader.filter(|l| *l != self.me);
        tx.send_replace(Role::Follower {
            leader: leader.clone(),
        });
        // Wait for the leader key to go.
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut changes = self.etcd.watch_prefix(key.clone(), revision);
        while let Some(change) = changes.recv().await {
            if change.key == key && change.value.is_none() {
                return;
            }
            if let Some(v) = change.value {
                tx.send_replace(Role::Follower {
                    leader: String::from_utf8(v).ok().filter(|l| *l != self.me),
                });
            }
        }
    }

    /// Keeps `lease` alive until a keep-alive fails or finds it expired.
    async fn keep(&self, lease: i64) {
        let client = self.etcd.client();
        let Ok((mut keeper, mut answers)) = client.lease_client().keep_alive(lease).await else {
            return;
        };
        let every = Duration::from_millis((LEASE_SECONDS as u64 * 1000) / 3);
        loop {
            if keeper.keep_alive().await.is_err() {
                return;
            }
            match tokio::time::timeout(every * 2, answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                _ => return,
            }
            tokio::time::sleep(every).await;
        }
    }
}
