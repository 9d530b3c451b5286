//! Where a version that names a source instead of listing endpoints gets its instances: the
//! instances registered with the server under the version's tag, pushed on the config stream
//! apart from the config (each service's list whole, newest wins); the addresses a DNS name
//! resolves to ([`dns`], re-resolved as the records' TTLs run out). Both are kept in
//! [`Known`] and saved with the last good config. Also the registration of the application
//! this proxy fronts, which the config stream keeps alive, and the active health checks of
//! every endpoint whose version asks for them ([`health`]).

pub mod dns;
pub mod health;

use std::collections::BTreeMap;
use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_routing::Version;
use serde::{Deserialize, Serialize};

/// One registered instance, as a proxy needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Instance {
    pub tag: String,
    pub address: String,
}

/// The instances this proxy knows: registered ones by service, resolved ones by DNS name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    registry: BTreeMap<String, Vec<Instance>>,
    /// `host:port` endpoints per `instances.dns` name, as last resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    dns: BTreeMap<String, Vec<String>>,
}

impl Known {
    /// The instances a full push carries: every list whole, nothing else kept.
    pub fn from_push(lists: Vec<pb::ServiceInstances>) -> Result<Known, String> {
        let mut known = Known::default();
        known.update(lists)?;
        Ok(known)
    }

    /// An instances-only push: each listed service's instances replaced (an empty list
    /// removes them), the others kept. Nothing changes when any instance is malformed.
    pub fn update(&mut self, lists: Vec<pb::ServiceInstances>) -> Result<(), String> {
        let mut checked = Vec::with_capacity(lists.len());
        for list in lists {
            let mut instances = Vec::with_capacity(list.instances.len());
            for (i, pb::Instance { tag, address }) in list.instances.into_iter().enumerate() {
                if let Err(e) = grayline_routing::parse_endpoint(&address) {
                    return Err(format!(
                        "instances[{}][{i}].address: `{address}`: {e}",
                        list.service
                    ));
                }
                instances.push(Instance { tag, address });
            }
            instances.sort();
            instances.dedup();
            checked.push((list.service, instances));
        }
        for (service, instances) in checked {
            if instances.is_empty() {
                self.registry.remove(&service);
            } else {
                self.registry.insert(service, instances);
            }
        }
        Ok(())
    }

    /// Forgets the registered instances of `services` (services no longer served).
    pub fn forget(&mut self, services: &[String]) {
        for service in services {
            self.registry.remove(service);
        }
    }

    /// What `name` resolved to now; `false` when that is what was known.
    pub fn set_resolved(&mut self, name: &str, endpoints: Vec<String>) -> bool {
        if self.dns.get(name) == Some(&endpoints) {
            return false;
        }
        self.dns.insert(name.to_string(), endpoints);
        true
    }

    /// Forgets what was resolved for names no version uses any more.
    pub fn keep_resolved(&mut self, names: &std::collections::BTreeSet<String>) {
        self.dns.retain(|name, _| names.contains(name));
    }

    /// Keeps what was resolved (DNS answers are the proxy's own, not the server's) when a
    /// push replaces the registered instances.
    pub fn with_resolved_of(mut self, other: &Known) -> Known {
        self.dns.clone_from(&other.dns);
        self
    }

    /// The endpoints `version` of `service` has now: its list, the addresses of the
    /// instances registered with its tag, or what its DNS name resolved to, in order.
    pub fn endpoints(&self, service: &str, version: &Version) -> Vec<String> {
        if let Some(tag) = version.tag() {
            return self
                .registry
                .get(service)
                .into_iter()
                .flatten()
                .filter(|i| i.tag == tag)
                .map(|i| i.address.clone())
                .collect();
        }
        if let Some(name) = version.dns() {
            return self.dns.get(name).cloned().unwrap_or_default();
        }
        version.endpoints.clone()
    }

    /// Registered instances known, over all services.
    pub fn len(&self) -> usize {
        self.registry.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.registry.is_empty() && self.dns.is_empty()
    }
}

/// The application this proxy fronts, registered as an instance of a service
/// (`--register`, `--tag`, `--register-address`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub service: String,
    pub tag: String,
    pub address: String,
    pub ttl: Duration,
}

impl Registration {
    /// How often the registration is renewed: three times per TTL, so one lost renewal
    /// does not expire it.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(300))
    }

    pub fn request(&self) -> pb::RegisterRequest {
        pb::RegisterRequest {
            service: self.service.clone(),
            tag: self.tag.clone(),
            address: self.address.clone(),
            metadata: Default::default(),
            ttl_seconds: Some(self.ttl.as_secs().clamp(1, u64::from(u32::MAX)) as u32),
        }
    }

    pub fn key(&self) -> pb::InstanceKey {
        pb::InstanceKey {
            service: self.service.clone(),
            address: self.address.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(service: &str, instances: &[(&str, &str)]) -> pb::ServiceInstances {
        pb::ServiceInstances {
            service: service.into(),
            instances: instances
                .iter()
                .map(|(tag, address)| pb::Instance {
                    tag: tag.to_string(),
                    address: address.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_tagged_version_takes_the_instances_of_its_tag() {
        let known = Known::from_push(vec![list(
            "shop",
            &[
                ("1.1.2", "127.0.0.1:9003"),
                ("1.1.1", "127.0.0.1:9001"),
                ("1.1.2", "127.0.0.1:9002"),
            ],
        )])
        .unwrap();
        let v2 = Version::tagged("v2", "1.1.2");
        assert_eq!(
            known.endpoints("shop", &v2),
            ["127.0.0.1:9002", "127.0.0.1:9003"]
        );
        assert!(known.endpoints("cart", &v2).is_empty());
        let fixed = Version::new("v1", &["127.0.0.1:1"]);
        assert_eq!(known.endpoints("shop", &fixed), ["127.0.0.1:1"]);
    }

    #[test]
    fn an_update_replaces_the_listed_services_only_and_checks_first() {
        let mut known = Known::from_push(vec![
            list("shop", &[("a", "127.0.0.1:1")]),
            list("cart", &[("a", "127.0.0.1:2")]),
        ])
        .unwrap();
        known
            .update(vec![list("shop", &[("a", "127.0.0.1:3")])])
            .unwrap();
        let a = Version::tagged("v", "a");
        assert_eq!(known.endpoints("shop", &a), ["127.0.0.1:3"]);
        assert_eq!(known.endpoints("cart", &a), ["127.0.0.1:2"]);
        let before = known.clone();
        let err = known
            .update(vec![
                list("cart", &[]),
                list("shop", &[("a", "127.0.0.1:4"), ("a", "nowhere")]),
            ])
            .unwrap_err();
        assert!(err.contains("instances[shop][1].address"), "{err}");
        assert_eq!(known, before, "nothing applied");
        known.update(vec![list("cart", &[])]).unwrap();
        assert!(known.endpoints("cart", &a).is_empty());
        assert_eq!(known.len(), 1);
    }
}
