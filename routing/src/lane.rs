//! Full-link grayscale lanes: versions of different services marked with the same lane (e.g.
//! `gray`) form a path through a call chain. A request that arrives in a lane from a trusted
//! source goes to its service's version in that lane, before the policy; one that enters a
//! lane through the policy carries it on. This file checks the lane fields and compiles a
//! service's lanes into the lookup the engine runs.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::condition::parse_networks;
use crate::invalid::FieldError;
use crate::limits::MAX_NAME_LEN;
use crate::model::Service;
use crate::validate::check_name;

/// A service's lanes as the engine reads them: which version serves which lane, and whose
/// lane header the service believes besides the proxy's trusted proxies.
#[derive(Clone, Debug, Default)]
pub struct CompiledLanes {
    /// `(lane, version index)`, sorted by lane.
    versions: Vec<(String, usize)>,
    sources: Vec<IpNet>,
}

impl CompiledLanes {
    /// Checks `versions[*].lane` and `lane_sources`, reporting field paths from the service's
    /// root.
    pub(crate) fn compile(service: &Service, errors: &mut Vec<FieldError>) -> CompiledLanes {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut versions = Vec::new();
        for (i, v) in service.versions.iter().enumerate() {
            if v.lane.is_empty() {
                continue;
            }
            let path = format!("versions[{i}].lane");
            let before = errors.len();
            check_name(&v.lane, &path, "lane", errors);
            if errors.len() > before {
                continue;
            }
            if let Some(other) = owner.insert(&v.lane, &v.name) {
                errors.push(FieldError::new(
                    path,
                    format!(
                        "version `{other}` is already in lane `{}`; a service has at most one \
                         version per lane",
                        v.lane
                    ),
                ));
                continue;
            }
            versions.push((v.lane.clone(), i));
        }
        versions.sort();
        CompiledLanes {
            versions,
            sources: parse_networks(&service.lane_sources, "lane_sources", errors),
        }
    }

    /// The version (its index) serving `lane`.
    pub fn version(&self, lane: &str) -> Option<usize> {
        if self.versions.is_empty() {
            return None;
        }
        self.versions
            .binary_search_by(|(l, _)| l.as_str().cmp(lane))
            .ok()
            .map(|i| self.versions[i].1)
    }

    /// Every `(lane, version index)`, by lane.
    pub fn all(&self) -> &[(String, usize)] {
        &self.versions
    }

    /// Whether the service itself believes lane headers from `peer` (`lane_sources`).
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.sources.iter().any(|n| n.contains(&peer))
    }
}

/// Whether `lane` could name a lane: what a proxy passes on from a trusted request. Anything
/// else in the header is dropped, so a lane header never carries arbitrary bytes onwards.
pub fn is_lane_name(lane: &str) -> bool {
    let mut errors = Vec::new();
    check_name(lane, "", "lane", &mut errors);
    errors.is_empty() && lane.len() <= MAX_NAME_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;

    fn service(lanes: &[&str]) -> Service {
        let mut s = Service::single("s", Version::new("v0", &["127.0.0.1:1"]));
        s.versions[0].lane = lanes[0].to_string();
        for (i, lane) in lanes.iter().enumerate().skip(1) {
            let mut v = Version::new(&format!("v{i}"), &[&format!("127.0.0.1:{}", i + 1)]);
            v.lane = lane.to_string();
            s.versions.push(v);
        }
        s
    }

    fn compile(s: &Service) -> (CompiledLanes, Vec<FieldError>) {
        let mut errors = Vec::new();
        let lanes = CompiledLanes::compile(s, &mut errors);
        (lanes, errors)
    }

    #[test]
    fn finds_the_version_of_each_lane() {
        let (lanes, errors) = compile(&service(&["", "gray", "blue"]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(lanes.version("gray"), Some(1));
        assert_eq!(lanes.version("blue"), Some(2));
        assert_eq!(lanes.version("green"), None);
        assert_eq!(lanes.version(""), None);
        assert_eq!(lanes.all().len(), 2);
    }

    #[test]
    fn one_version_per_lane_and_lane_names_like_version_names() {
        let (_, errors) = compile(&service(&["gray", "gray"]));
        assert_eq!(errors[0].field, "versions[1].lane");
        assert!(errors[0].message.contains("`v0` is already in lane `gray`"));
        let (_, errors) = compile(&service(&["a b"]));
        assert_eq!(errors[0].field, "versions[0].lane");
        assert!(
            errors[0].message.contains("not a valid lane name"),
            "{errors:?}"
        );
    }

    #[test]
    fn lane_sources_are_networks() {
        let mut s = service(&["gray"]);
        s.lane_sources = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "nope".into()];
        let (lanes, errors) = compile(&s);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "lane_sources[2]");
        assert!(lanes.trusts("10.1.2.3".parse().unwrap()));
        assert!(lanes.trusts("192.0.2.7".parse().unwrap()));
        assert!(!lanes.trusts("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn lane_names() {
        for ok in ["gray", "feature-42", "a.b_c"] {
            assert!(is_lane_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "ü", &"a".repeat(64)] {
            assert!(!is_lane_name(bad), "{bad}");
        }
    }
}
