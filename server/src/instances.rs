//! The instance registry: applications (or the proxy in front of one) register instances of
//! a service under a version tag, renew them within their TTL and deregister them; a version
//! whose `instances.tag` names the tag takes the live instances as its endpoints.
//!
//! Instances are not policy: a registration makes no revision and no history entry. What
//! proxies need of them — per service, (tag, address) — is published on a `watch` channel
//! of its own, with an epoch per service that moves when its list changes, so the proxy
//! stream sends each service's list again only when it changed (coalesced, newest wins).
//!
//! Where they live: on sled, a tree `instances` holds each registration (written and flushed
//! when it is made, changed or removed; a renewal only moves its deadline in memory) and a
//! task here expires those whose deadline passed — after a restart every stored instance gets
//! one TTL from the start to be renewed. On etcd ([`etcd`]), each instance is a key under a
//! lease of its TTL: a renewal through any replica keeps the lease alive, etcd deletes the
//! key when it runs out, and every replica follows the keys with a watch.

pub mod etcd;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::store::{Durable, Store, now_unix_ms};

/// TTL when the registration does not say.
pub const DEFAULT_TTL_SECONDS: u32 = 30;
/// The longest TTL: an instance that vanished is gone within the hour at worst.
pub const MAX_TTL_SECONDS: u32 = 3600;
/// Instances one service may have registered; beyond, registrations are refused.
pub const MAX_PER_SERVICE: usize = 1000;
/// Instances all services together may have.
pub const MAX_TOTAL: usize = 20_000;
const MAX_METADATA: usize = 16;
const MAX_METADATA_KEY: usize = 63;
const MAX_METADATA_VALUE: usize = 256;
/// How often deadlines are checked (sled).
const EXPIRE_EVERY: Duration = Duration::from_millis(250);

/// A registration as asked for, before it is checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub service: String,
    pub tag: String,
    pub address: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
}

impl From<grayline_proto::v1::RegisterRequest> for Registration {
    fn from(r: grayline_proto::v1::RegisterRequest) -> Registration {
        Registration {
            service: r.service,
            tag: r.tag,
            address: r.address,
            metadata: r.metadata.into_iter().collect(),
            ttl_seconds: r.ttl_seconds,
        }
    }
}

/// One registered instance, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub service: String,
    pub tag: String,
    pub address: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub ttl_seconds: u32,
    pub registered_unix_ms: i64,
    /// Who registered it: the token's holder (`admin`, `registration`) or `proxy <id>`.
    pub registered_by: String,
    /// The etcd lease it lives under (0 on sled).
    #[serde(default)]
    pub lease: i64,
}

/// A registered instance with when it was last renewed here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub record: Record,
    /// When this replica last saw it registered or renewed.
    pub renewed_unix_ms: i64,
}

impl Live {
    pub fn expires_unix_ms(&self) -> i64 {
        self.renewed_unix_ms + i64::from(self.record.ttl_seconds) * 1000
    }
}

/// What a registration answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Registered {
    pub ttl_seconds: u32,
    /// Empty when all is well; else, e.g., that no version selects the tag.
    pub warning: String,
}

/// One service's instances as proxies get them, in address order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceList {
    /// Moves whenever the list changes.
    pub epoch: u64,
    /// (tag, address).
    pub instances: Vec<(String, String)>,
}

/// Every service's instances, as published.
pub type View = BTreeMap<String, Arc<ServiceList>>;

/// Where registrations are kept.
#[derive(Clone, Debug)]
pub enum Keep {
    Sled {
        tree: sled::Tree,
        durable: Arc<Durable>,
    },
    Etcd(Box<etcd::EtcdInstances>),
}

#[derive(Debug)]
pub struct Instances {
    store: Arc<Store>,
    keep: Keep,
    live: Mutex<BTreeMap<(String, String), Live>>,
    /// One change at a time from check to disk, so memory and disk agree.
    writing: tokio::sync::Mutex<()>,
    published: watch::Sender<Arc<View>>,
    epoch: AtomicU64,
}

fn key(service: &str, address: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + address.len() + 1);
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(address.as_bytes());
    k
}

impl Instances {
    /// Opens the registry: on sled reads every stored registration back (each gets one TTL
    /// from now to be renewed); on etcd reads what is registered now.
    pub async fn open(store: Arc<Store>, keep: Keep) -> anyhow::Result<Arc<Instances>> {
        let now = now_unix_ms();
        let mut live = BTreeMap::new();
        match &keep {
            Keep::Sled { tree, .. } => {
                for item in tree.iter() {
                    let (k, v) = item.context("reading the instances tree")?;
                    let record: Record = serde_json::from_slice(&v).with_context(|| {
                        format!(
                            "instance record {} is unreadable",
                            String::from_utf8_lossy(&k)
                        )
                    })?;
                    live.insert(
                        (record.service.clone(), record.address.clone()),
                        Live {
                            record,
                            renewed_unix_ms: now,
                        },
                    );
                }
            }
            Keep::Etcd(e) => {
                for record in e.load().await? {
                    live.insert(
                        (record.service.clone(), record.address.clone()),
                        Live {
                            record,
                            renewed_unix_ms: now,
                        },
                    );
                }
            }
        }
        let instances = Arc::new(Instances {
            store,
            keep,
            live: Mutex::new(BTreeMap::new()),
            writing: tokio::sync::Mutex::new(()),
            published: watch::Sender::new(Arc::new(View::new())),
            epoch: AtomicU64::new(0),
        });
        let services: Vec<String> = live.keys().map(|(s, _)| s.clone()).collect();
        *instances.lock() = live;
        instances.publish(services);
        tracing::info!(
            instances = instances.lock().len(),
            "instance registry opened"
        );
        Ok(instances)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows what is published: each service's instances with its epoch.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.published.subscribe()
    }

    /// Expires instances past their deadline (sled) or follows etcd's keys, until `stop`.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            match this.keep.clone() {
                Keep::Etcd(e) => {
                    let e = *e;
                    tokio::select! {
                        () = e.follow(&this) => {}
                        () = stop.cancelled() => {}
                    }
                }
                Keep::Sled { .. } => {
                    let mut every = tokio::time::interval(EXPIRE_EVERY);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = every.tick() => {}
                            () = stop.cancelled() => return,
                        }
                        if let Err(e) = this.expire(now_unix_ms()).await {
                            tracing::warn!(error = %e, "expiring instances failed; will retry");
                        }
                    }
                }
            }
        });
    }

    /// Registers an instance, or renews (and updates) the one at its address.
    pub async fn register(&self, r: Registration, by: &str) -> Result<Registered, ApiError> {
        let ttl_seconds = self.check(&r)?;
        let now = now_unix_ms();
        let _writing = self.writing.lock().await;
        let k = (r.service.clone(), r.address.clone());
        let old = self.lock().get(&k).cloned();
        let unchanged = old.as_ref().is_some_and(|o| {
            o.record.tag == r.tag
                && o.record.metadata == r.metadata
                && o.record.ttl_seconds == ttl_seconds
        });
        if unchanged {
            let old = old.expect("unchanged means registered");
            self.renew_kept(&old).await?;
            if let Some(l) = self.lock().get_mut(&k) {
                l.renewed_unix_ms = now;
            }
        } else {
            {
                let live = self.lock();
                if old.is_none() {
                    let of_service = live.keys().filter(|(s, _)| *s == r.service).count();
                    if of_service >= MAX_PER_SERVICE {
                        return Err(ApiError::TooLarge(format!(
                            "service `{}` has {of_service} instances registered, the most one \
                             service may have; deregister some first",
                            r.service
                        )));
                    }
                    if live.len() >= MAX_TOTAL {
                        return Err(ApiError::TooLarge(format!(
                            "{} instances are registered, the most this server keeps",
                            live.len()
                        )));
                    }
                }
            }
            let mut record = Record {
                service: r.service.clone(),
                tag: r.tag.clone(),
                address: r.address.clone(),
                metadata: r.metadata.clone(),
                ttl_seconds,
                registered_unix_ms: old.as_ref().map_or(now, |o| o.record.registered_unix_ms),
                registered_by: by.to_string(),
                lease: 0,
            };
            self.store_record(&mut record, old.as_ref().map(|o| &o.record))
                .await?;
            self.lock().insert(
                k,
                Live {
                    record,
                    renewed_unix_ms: now,
                },
            );
            self.publish([r.service.clone()]);
            tracing::info!(service = %r.service, tag = %r.tag, address = %r.address, by, "instance registered");
        }
        Ok(Registered {
            ttl_seconds,
            warning: self.unselected(&r.service, &r.tag),
        })
    }

    /// Renews an instance's TTL.
    pub async fn keep_alive(&self, service: &str, address: &str) -> Result<u32, ApiError> {
        let k = (service.to_string(), address.to_string());
        let found = self.lock().get(&k).cloned();
        let Some(old) = found else {
            return Err(ApiError::NotFound(format!(
                "no instance `{address}` of service `{service}` is registered (it expired or \
                 was deregistered); register it again"
            )));
        };
        self.renew_kept(&old).await?;
        if let Some(l) = self.lock().get_mut(&k) {
            l.renewed_unix_ms = now_unix_ms();
        }
        Ok(old.record.ttl_seconds)
    }

    /// Removes an instance; `false` when it was not registered.
    pub async fn deregister(&self, service: &str, address: &str) -> Result<bool, ApiError> {
        let _writing = self.writing.lock().await;
        let k = (service.to_string(), address.to_string());
        let Some(old) = self.lock().get(&k).cloned() else {
            return Ok(false);
        };
        self.remove_kept(&old.record).await?;
        self.lock().remove(&k);
        self.publish([service.to_string()]);
        tracing::info!(service, address, "instance deregistered");
        Ok(true)
    }

    /// The instances registered now, of `service` or of all, in (service, address) order.
    pub fn list(&self, service: Option<&str>) -> Vec<Live> {
        self.lock()
            .values()
            .filter(|l| service.is_none_or(|s| l.record.service == s))
            .cloned()
            .collect()
    }

    /// Removes what passed its deadline (sled; etcd expires leases itself).
    async fn expire(&self, now: i64) -> anyhow::Result<()> {
        let due: Vec<Live> = self
            .lock()
            .values()
            .filter(|l| l.expires_unix_ms() <= now)
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let mut services = Vec::new();
        for l in due {
            let k = (l.record.service.clone(), l.record.address.clone());
            // Renewed since it was found due?
            if self
                .lock()
                .get(&k)
                .is_none_or(|now_live| now_live.expires_unix_ms() > now)
            {
                continue;
            }
            self.remove_kept(&l.record).await?;
            self.lock().remove(&k);
            tracing::info!(service = %k.0, address = %k.1, ttl = l.record.ttl_seconds, "instance expired");
            services.push(k.0);
        }
        self.publish(services);
        Ok(())
    }

    /// Checks a registration; the TTL it gets.
    fn check(&self, r: &Registration) -> Result<u32, ApiError> {
        if r.service.is_empty() {
            return Err(ApiError::invalid("service", "required"));
        }
        if self.store.get(&r.service).is_none() {
            return Err(ApiError::NotFound(format!(
                "no service `{}`; create it before registering its instances",
                r.service
            )));
        }
        if let Some(problem) = grayline_routing::name_problem(&r.tag, "tag") {
            return Err(ApiError::invalid("tag", problem));
        }
        let (host, _) = grayline_routing::parse_endpoint(&r.address)
            .map_err(|e| ApiError::invalid("address", format!("`{}`: {e}", r.address)))?;
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(ApiError::invalid(
                "address",
                format!(
                    "`{}` is a wildcard address; register the address others reach the instance at",
                    r.address
                ),
            ));
        }
        if r.metadata.len() > MAX_METADATA {
            return Err(ApiError::invalid(
                "metadata",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        for (k, v) in &r.metadata {
            let good_key = !k.is_empty()
                && k.len() <= MAX_METADATA_KEY
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
            if !good_key {
                return Err(ApiError::invalid(
                    format!("metadata.{k}"),
                    format!("keys are 1–{MAX_METADATA_KEY} letters, digits, `.`, `_`, `-` or `/`"),
                ));
            }
            if v.len() > MAX_METADATA_VALUE || v.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    format!("metadata.{k}"),
                    format!("values are at most {MAX_METADATA_VALUE} bytes, no control characters"),
                ));
            }
        }
        match r.ttl_seconds {
            None => Ok(DEFAULT_TTL_SECONDS),
            Some(t) if (1..=MAX_TTL_SECONDS).contains(&t) => Ok(t),
            Some(t) => Err(ApiError::invalid(
                "ttl_seconds",
                format!("{t} is out of range 1–{MAX_TTL_SECONDS}"),
            )),
        }
    }

    /// A warning when no version of `service` takes instances tagged `tag`.
    fn unselected(&self, service: &str, tag: &str) -> String {
        let selected = self
            .store
            .get(service)
            .is_some_and(|r| r.service.versions.iter().any(|v| v.tag() == Some(tag)));
        if selected {
            String::new()
        } else {
            format!(
                "no version of `{service}` takes instances tagged `{tag}` yet, so this instance \
                 gets no traffic until one does"
            )
        }
    }

    /// How many instances of `service` are registered with `tag` now.
    pub fn registered_with(&self, service: &str, tag: &str) -> usize {
        self.lock()
            .values()
            .filter(|l| l.record.service == service && l.record.tag == tag)
            .count()
    }

    /// The versions of `service` that take instances tagged `tag`.
    pub fn versions_of(&self, service: &str, tag: &str) -> Vec<String> {
        self.store
            .get(service)
            .map(|r| {
                r.service
                    .versions
                    .iter()
                    .filter(|v| v.tag() == Some(tag))
                    .map(|v| v.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn store_record(
        &self,
        record: &mut Record,
        old: Option<&Record>,
    ) -> Result<(), ApiError> {
        match &self.keep {
            Keep::Sled { tree, durable } => {
                let value = serde_json::to_vec(record).map_err(anyhow::Error::from)?;
                tree.insert(key(&record.service, &record.address), value)
                    .map_err(anyhow::Error::from)?;
                durable.sync().await.map_err(anyhow::Error::from)?;
                Ok(())
            }
            Keep::Etcd(e) => e.put(record, old).await,
        }
    }

    async fn renew_kept(&self, live: &Live) -> Result<(), ApiError> {
        match &self.keep {
            Keep::Etcd(e) => e.renew(&live.record).await,
            _ => Ok(()),
        }
    }

    async fn remove_kept(&self, record: &Record) -> Result<(), ApiError> {
        match &self.keep {
            Keep::Sled { tree, durable } => {
                tree.remove(key(&record.service, &record.address))
                    .map_err(anyhow::Error::from)?;
                durable.sync().await.map_err(anyhow::Error::from)?;
                Ok(())
            }
            Keep::Etcd(e) => e.remove(record).await,
        }
    }

    /// Another replica's change seen on etcd: `Some` registered or changed, `None` gone.
    pub(crate) fn seen(&self, service: &str, address: &str, record: Option<Record>) {
        let k = (service.to_string(), address.to_string());
        {
            let mut live = self.lock();
            match record {
                Some(record) => {
                    if live.get(&k).is_some_and(|l| l.record == record) {
                        return;
                    }
                    live.insert(
                        k,
                        Live {
                            record,
                            renewed_unix_ms: now_unix_ms(),
                        },
                    );
                }
                None => {
                    if live.remove(&k).is_none() {
                        return;
                    }
                    tracing::info!(service, address, "instance gone");
                }
            }
        }
        self.publish([service.to_string()]);
    }

    /// Publishes the lists of `services` again, each with a new epoch if it changed.
    fn publish(&self, services: impl IntoIterator<Item = String>) {
        let mut services: Vec<String> = services.into_iter().collect();
        services.sort();
        services.dedup();
        if services.is_empty() {
            return;
        }
        let lists: Vec<(String, Vec<(String, String)>)> = {
            let live = self.lock();
            services
                .into_iter()
                .map(|s| {
                    let list = live
                        .range((s.clone(), String::new())..)
                        .take_while(|((svc, _), _)| *svc == s)
                        .map(|(_, l)| (l.record.tag.clone(), l.record.address.clone()))
                        .collect();
                    (s, list)
                })
                .collect()
        };
        self.published.send_if_modified(|view| {
            let mut changed = false;
            let next = Arc::make_mut(view);
            for (service, instances) in lists {
                if next.get(&service).map(|l| &l.instances) == Some(&instances) {
                    continue;
                }
                changed = true;
                if instances.is_empty() {
                    next.remove(&service);
                } else {
                    let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
                    next.insert(service, Arc::new(ServiceList { epoch, instances }));
                }
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests;
