//! What the release wizard holds while the user fills it in, and how it becomes a `Service`.
//!
//! Numbers are kept as the text the user typed, so a wrong entry can be named instead of
//! silently replaced. Building the service also records, for every part of it, which form
//! field it came from: errors (local or from the server) carry paths like
//! `service.versions[2].endpoints[0]`, and [`FieldMap::locate`] turns them into the key of
//! the field that shows them (`canary-7.endpoints[0]`).

use std::collections::BTreeMap;

use grayline_rollout::Plan;
use grayline_routing::api::ServiceRecord;
use grayline_routing::catalog::conflicts;
use grayline_routing::*;

use super::plan_draft::{PlanDraft, Preset};

/// A version being defined: the stable one of a new service, or a canary.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionDraft {
    pub id: u64,
    pub name: String,
    /// One endpoint per line (commas work too).
    pub endpoints: String,
    /// The registry tag whose instances the version takes instead of endpoints; empty for
    /// none.
    pub tag: String,
    /// Or the DNS name its instances are resolved from; empty for none.
    pub dns: String,
    pub load_balance: LoadBalance,
    pub timeout_ms: String,
    pub max_concurrent: String,
    pub breaker_enabled: bool,
    pub error_threshold_percent: String,
    pub request_volume: String,
    pub sleep_window_ms: String,
    pub window_ms: String,
    pub force_open: bool,
    pub force_closed: bool,
    pub fallback: FallbackPolicy,
    /// Not edited in the wizard: kept as the version had them (or the defaults).
    pub outlier_detection: OutlierDetection,
    pub health_check: HealthCheck,
    pub retry: Retry,
    pub protocol: Protocol,
    pub tls: Option<UpstreamTls>,
    pub lane: String,
    pub mirror_limits: MirrorLimits,
}

impl VersionDraft {
    pub fn new(id: u64, name: &str) -> VersionDraft {
        VersionDraft::from_version(id, &Version::new(name, &[]))
    }

    pub fn from_version(id: u64, v: &Version) -> VersionDraft {
        VersionDraft {
            id,
            name: v.name.clone(),
            endpoints: v.endpoints.join("\n"),
            tag: v.tag().unwrap_or_default().to_string(),
            dns: v.dns().unwrap_or_default().to_string(),
            load_balance: v.load_balance,
            timeout_ms: v.timeout_ms.to_string(),
            max_concurrent: v.max_concurrent.to_string(),
            breaker_enabled: v.breaker.enabled,
            error_threshold_percent: v.breaker.error_threshold_percent.to_string(),
            request_volume: v.breaker.request_volume.to_string(),
            sleep_window_ms: v.breaker.sleep_window_ms.to_string(),
            window_ms: v.breaker.window_ms.to_string(),
            force_open: v.breaker.force_open,
            force_closed: v.breaker.force_closed,
            fallback: v.fallback.policy,
            outlier_detection: v.outlier_detection.clone(),
            health_check: v.health_check.clone(),
            retry: v.retry.clone(),
            protocol: v.protocol,
            tls: v.tls.clone(),
            lane: v.lane.clone(),
            mirror_limits: v.mirror_limits.clone(),
        }
    }

    /// The version, or the numbers that are not numbers (as `(field, message)`).
    fn build(&self, errors: &mut Vec<(String, String)>, key: &str) -> Version {
        let mut number = |text: &str, field: &str| -> u32 {
            match text.trim().parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    errors.push((
                        format!("{key}.{field}"),
                        format!("`{}` is not a whole number (0 to 4294967295)", text.trim()),
                    ));
                    0
                }
            }
        };
        Version {
            name: self.name.trim().to_string(),
            endpoints: split_list(&self.endpoints),
            instances: {
                let text = |t: &str| Some(t.trim().to_string()).filter(|t| !t.is_empty());
                let (tag, dns) = (text(&self.tag), text(&self.dns));
                (tag.is_some() || dns.is_some()).then_some(Instances { tag, dns })
            },
            load_balance: self.load_balance,
            timeout_ms: number(&self.timeout_ms, "timeout_ms"),
            max_concurrent: number(&self.max_concurrent, "max_concurrent"),
            breaker: Breaker {
                enabled: self.breaker_enabled,
                error_threshold_percent: number(
                    &self.error_threshold_percent,
                    "breaker.error_threshold_percent",
                ),
                request_volume: number(&self.request_volume, "breaker.request_volume"),
                sleep_window_ms: number(&self.sleep_window_ms, "breaker.sleep_window_ms"),
                window_ms: number(&self.window_ms, "breaker.window_ms"),
                force_open: self.force_open,
                force_closed: self.force_closed,
            },
            fallback: Fallback {
                policy: self.fallback,
            },
            outlier_detection: self.outlier_detection.clone(),
            health_check: self.health_check.clone(),
            retry: self.retry.clone(),
            protocol: self.protocol,
            tls: self.tls.clone(),
            lane: self.lane.trim().to_string(),
            mirror_limits: self.mirror_limits.clone(),
        }
    }
}

/// Items separated by newlines, commas or spaces, trimmed, empties dropped.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A weighted split of all traffic.
    Ratio,
    /// Ordered rules on request content; the rest to the stable version or the split.
    Content,
    /// An automated rollout of one canary: weight steps judged by gates.
    Rollout,
    /// A share of the requests copied to a canary that answers nobody yet; the live traffic
    /// stays as the policy has it.
    Mirror,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StickyKind {
    None,
    Cookie,
    Header,
    ClientIp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionKind {
    Header,
    Cookie,
    Query,
    Os,
    Browser,
    SourceIp,
}

impl ConditionKind {
    pub const ALL: [(ConditionKind, &'static str, &'static str); 6] = [
        (ConditionKind::Header, "header", "Header"),
        (ConditionKind::Cookie, "cookie", "Cookie"),
        (ConditionKind::Query, "query", "Query parameter"),
        (ConditionKind::Os, "os", "Operating system"),
        (ConditionKind::Browser, "browser", "Browser"),
        (ConditionKind::SourceIp, "source_ip", "Source IP"),
    ];

    pub fn key(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _, _)| *k == self)
            .map_or("header", |(_, key, _)| key)
    }

    pub fn from_key(key: &str) -> ConditionKind {
        Self::ALL
            .iter()
            .find(|(_, k, _)| *k == key)
            .map_or(ConditionKind::Header, |(k, _, _)| *k)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Exact,
    Prefix,
    Regex,
    Present,
    Absent,
    OneOf,
}

impl Op {
    pub const ALL: [(Op, &'static str, &'static str); 6] = [
        (Op::Exact, "exact", "is exactly"),
        (Op::Prefix, "prefix", "starts with"),
        (Op::Regex, "regex", "matches regex"),
        (Op::Present, "present", "is present"),
        (Op::Absent, "absent", "is absent"),
        (Op::OneOf, "one_of", "is one of (comma-separated)"),
    ];

    pub fn key(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(o, _, _)| *o == self)
            .map_or("exact", |(_, key, _)| key)
    }

    pub fn from_key(key: &str) -> Op {
        Self::ALL
            .iter()
            .find(|(_, k, _)| *k == key)
            .map_or(Op::Exact, |(o, _, _)| *o)
    }

    pub fn takes_value(self) -> bool {
        !matches!(self, Op::Present | Op::Absent)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConditionDraft {
    pub id: u64,
    pub kind: ConditionKind,
    /// Header, cookie or query name.
    pub name: String,
    pub op: Op,
    pub value: String,
    /// OS or browser family.
    pub family: String,
    pub min_version: String,
    pub max_version: String,
    pub cidrs: String,
    pub negate: bool,
}

impl ConditionDraft {
    pub fn new(id: u64) -> ConditionDraft {
        ConditionDraft {
            id,
            kind: ConditionKind::Header,
            name: String::new(),
            op: Op::Exact,
            value: String::new(),
            family: "android".into(),
            min_version: String::new(),
            max_version: String::new(),
            cidrs: String::new(),
            negate: false,
        }
    }

    fn from_condition(id: u64, c: &Condition) -> ConditionDraft {
        let mut d = ConditionDraft::new(id);
        let mut field = |kind, m: &FieldMatch| {
            d.kind = kind;
            d.name = m.name.clone();
            d.negate = m.negate;
            (d.op, d.value) = match &m.op {
                MatchOp::Exact(v) => (Op::Exact, v.clone()),
                MatchOp::Prefix(v) => (Op::Prefix, v.clone()),
                MatchOp::Regex(v) => (Op::Regex, v.clone()),
                MatchOp::Present => (Op::Present, String::new()),
                MatchOp::Absent => (Op::Absent, String::new()),
                MatchOp::OneOf(list) => (Op::OneOf, list.join(", ")),
            };
        };
        match c {
            Condition::Header(m) => field(ConditionKind::Header, m),
            Condition::Cookie(m) => field(ConditionKind::Cookie, m),
            Condition::Query(m) => field(ConditionKind::Query, m),
            Condition::Os(m) | Condition::Browser(m) => {
                d.kind = if matches!(c, Condition::Os(_)) {
                    ConditionKind::Os
                } else {
                    ConditionKind::Browser
                };
                d.family = m.family.clone();
                d.min_version = m.min_version.clone();
                d.max_version = m.max_version.clone();
                d.negate = m.negate;
            }
            Condition::SourceIp(m) => {
                d.kind = ConditionKind::SourceIp;
                d.cidrs = m.cidrs.join(", ");
                d.negate = m.negate;
            }
        }
        d
    }

    fn build(&self) -> Condition {
        let field = || FieldMatch {
            name: self.name.trim().to_string(),
            op: match self.op {
                Op::Exact => MatchOp::Exact(self.value.clone()),
                Op::Prefix => MatchOp::Prefix(self.value.clone()),
                Op::Regex => MatchOp::Regex(self.value.clone()),
                Op::Present => MatchOp::Present,
                Op::Absent => MatchOp::Absent,
                Op::OneOf => MatchOp::OneOf(
                    self.value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
            },
            negate: self.negate,
        };
        let family = || FamilyMatch {
            family: self.family.clone(),
            min_version: self.min_version.trim().to_string(),
            max_version: self.max_version.trim().to_string(),
            negate: self.negate,
        };
        match self.kind {
            ConditionKind::Header => Condition::Header(field()),
            ConditionKind::Cookie => Condition::Cookie(field()),
            ConditionKind::Query => Condition::Query(field()),
            ConditionKind::Os => Condition::Os(family()),
            ConditionKind::Browser => Condition::Browser(family()),
            ConditionKind::SourceIp => Condition::SourceIp(CidrMatch {
                cidrs: split_list(&self.cidrs),
                negate: self.negate,
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleDraft {
    pub id: u64,
    pub name: String,
    pub conditions: Vec<ConditionDraft>,
    /// The version matching requests go to, unless they are split.
    pub version: String,
    /// Matching requests are shared by `weights` instead of going to one version.
    pub split: bool,
    /// Basis points per version name, for a split.
    pub weights: BTreeMap<String, u32>,
}

/// Where requests go that no rule takes, in content mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    Stable,
    Ratio,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    /// The service being released, when it exists already.
    pub base: Option<ServiceRecord>,
    pub name: String,
    pub hosts: String,
    pub path_prefix: String,
    /// The stable version of a new service.
    pub stable: VersionDraft,
    pub canaries: Vec<VersionDraft>,
    pub mode: Mode,
    /// Basis points per version name.
    pub weights: BTreeMap<String, u32>,
    /// The stable version takes whatever the others leave.
    pub stable_takes_rest: bool,
    pub sticky: StickyKind,
    pub sticky_name: String,
    pub rules: Vec<RuleDraft>,
    pub rest: Rest,
    /// The automated rollout, in rollout mode.
    pub plan: PlanDraft,
    /// In mirror mode: the share of requests copied, as typed (percent), and the version the
    /// copies go to (empty: the first canary).
    pub mirror_percent: String,
    pub mirror_to: String,
    next_id: u64,
}

/// Where in the form each part of the built service came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldMap {
    entries: Vec<(String, String)>,
}

impl FieldMap {
    fn add(&mut self, path: impl Into<String>, key: impl Into<String>) {
        self.entries.push((path.into(), key.into()));
    }

    /// The form field key for an error path: the longest known prefix's key plus the rest of
    /// the path; unknown paths keep their own name.
    pub fn locate(&self, path: &str) -> String {
        self.entries
            .iter()
            .filter(|(p, _)| path_starts_with(path, p))
            .max_by_key(|(p, _)| p.len())
            .map_or(path.to_string(), |(p, key)| {
                format!("{key}{}", &path[p.len()..])
            })
    }
}

/// `path` is `prefix` or below it (`prefix.x`, `prefix[0]`).
pub fn path_starts_with(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        && matches!(
            path.as_bytes().get(prefix.len()),
            None | Some(b'.') | Some(b'[')
        )
}

/// The wizard step a form field is on.
pub fn step_of(key: &str) -> usize {
    if ["name", "hosts", "path_prefix", "stable"]
        .iter()
        .any(|k| path_starts_with(key, k))
    {
        0
    } else if key.starts_with("canary-") {
        1
    } else if key.starts_with("rule-")
        || path_starts_with(key, "weights")
        || path_starts_with(key, "sticky")
        || path_starts_with(key, "rollout")
        || path_starts_with(key, "mirror")
    {
        2
    } else {
        3
    }
}

impl Draft {
    /// A draft for a new service.
    pub fn new_service() -> Draft {
        let mut d = Draft {
            base: None,
            name: String::new(),
            hosts: String::new(),
            path_prefix: "/".into(),
            stable: VersionDraft::new(0, "v1"),
            canaries: Vec::new(),
            mode: Mode::Ratio,
            weights: BTreeMap::new(),
            stable_takes_rest: true,
            sticky: StickyKind::None,
            sticky_name: String::new(),
            rules: Vec::new(),
            rest: Rest::Stable,
            plan: PlanDraft::new(Preset::Standard),
            mirror_percent: "10".into(),
            mirror_to: String::new(),
            next_id: 1,
        };
        d.add_canary();
        d
    }

    /// A draft that adds canaries to `record` and replaces its policy.
    pub fn for_service(record: ServiceRecord) -> Draft {
        let s = &record.service;
        let mut d = Draft::new_service();
        d.canaries.clear();
        d.name = s.name.clone();
        d.hosts = s.hosts.join(", ");
        d.path_prefix = s.path_prefix.clone();
        if let Some(stable) = s.version(&s.stable) {
            d.stable = VersionDraft::from_version(0, stable);
        }
        d.weights = crate::format::default_split(s).into_iter().collect();
        if let Some(m) = &s.policy.default_mirror {
            d.mirror_percent = format!("{}", f64::from(m.weight) / 100.0);
            d.mirror_to = m.version.clone();
        }
        if let Some(Route::Split(split)) = &s.policy.default_route {
            (d.sticky, d.sticky_name) = match &split.sticky {
                None => (StickyKind::None, String::new()),
                Some(StickyKey::Cookie(c)) => (StickyKind::Cookie, c.clone()),
                Some(StickyKey::Header(h)) => (StickyKind::Header, h.clone()),
                Some(StickyKey::ClientIp) => (StickyKind::ClientIp, String::new()),
            };
            d.stable_takes_rest = false;
        }
        if !s.policy.rules.is_empty() {
            d.mode = Mode::Content;
            d.rest = if matches!(s.policy.default_route, Some(Route::Split(_))) {
                Rest::Ratio
            } else {
                Rest::Stable
            };
            for rule in &s.policy.rules {
                let id = d.id();
                let conditions = rule
                    .conditions
                    .iter()
                    .map(|c| {
                        let cid = d.id();
                        ConditionDraft::from_condition(cid, c)
                    })
                    .collect();
                let (version, split, weights) = match &rule.route {
                    Route::Version(v) => (v.clone(), false, BTreeMap::new()),
                    Route::Split(split) => (
                        split
                            .weights
                            .iter()
                            .max_by_key(|w| w.weight)
                            .map(|w| w.version.clone())
                            .unwrap_or_default(),
                        true,
                        split
                            .weights
                            .iter()
                            .map(|w| (w.version.clone(), w.weight))
                            .collect(),
                    ),
                };
                d.rules.push(RuleDraft {
                    id,
                    name: rule.name.clone(),
                    conditions,
                    version,
                    split,
                    weights,
                });
            }
        }
        d.base = Some(record);
        d
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn add_canary(&mut self) {
        let id = self.id();
        let taken: Vec<String> = self.version_names();
        let name = (2..)
            .map(|n| format!("v{n}"))
            .find(|n| !taken.contains(n))
            .unwrap_or_default();
        self.weights.insert(name.clone(), 1000);
        self.canaries.push(VersionDraft::new(id, &name));
    }

    pub fn add_rule(&mut self) {
        let id = self.id();
        let cid = self.id();
        let version = self
            .canaries
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| self.stable_name());
        self.rules.push(RuleDraft {
            id,
            name: String::new(),
            conditions: vec![ConditionDraft::new(cid)],
            version,
            split: false,
            weights: BTreeMap::new(),
        });
    }

    pub fn stable_name(&self) -> String {
        match &self.base {
            Some(r) => r.service.stable.clone(),
            None => self.stable.name.trim().to_string(),
        }
    }

    /// Every version the service will have, in order.
    pub fn version_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.base {
            Some(r) => r.service.versions.iter().map(|v| v.name.clone()).collect(),
            None => vec![self.stable.name.trim().to_string()],
        };
        for c in &self.canaries {
            let n = c.name.trim().to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    /// The weight of each version as it will be applied (the stable version's is the rest
    /// when it takes the rest).
    pub fn effective_weights(&self) -> Vec<(String, u32)> {
        let stable = self.stable_name();
        let names = self.version_names();
        let others: u32 = names
            .iter()
            .filter(|n| **n != stable)
            .map(|n| self.weights.get(n).copied().unwrap_or(0))
            .fold(0u32, u32::saturating_add);
        names
            .into_iter()
            .map(|n| {
                let w = if n == stable && self.stable_takes_rest {
                    10_000u32.saturating_sub(others)
                } else {
                    self.weights.get(&n).copied().unwrap_or(0)
                };
                (n, w)
            })
            .collect()
    }

    fn split(&self) -> Route {
        self.split_of(self.effective_weights())
    }

    /// The version mirror mode copies requests to: the one chosen if it still exists, else
    /// the first canary, else the first version that is not stable.
    pub fn mirror_target(&self) -> String {
        let stable = self.stable_name();
        let names = self.version_names();
        if names.contains(&self.mirror_to) && self.mirror_to != stable {
            return self.mirror_to.clone();
        }
        self.canaries
            .iter()
            .map(|c| c.name.trim().to_string())
            .chain(names)
            .find(|n| *n != stable)
            .unwrap_or_default()
    }

    /// The mirror of mirror mode, or why its share is not a number.
    fn mirror(&self, bad: &mut Vec<(String, String)>) -> Mirror {
        let text = self.mirror_percent.trim().trim_end_matches('%').trim();
        let weight = match text.parse::<f64>() {
            Ok(pct) if pct.is_finite() && pct >= 0.0 => {
                (pct * 100.0).round().min(f64::from(u32::MAX)) as u32
            }
            _ => {
                bad.push((
                    "mirror.weight".into(),
                    format!(
                        "`{}` is not a percentage (0 to 100)",
                        self.mirror_percent.trim()
                    ),
                ));
                0
            }
        };
        Mirror {
            version: self.mirror_target(),
            weight,
        }
    }

    /// The weights of a rule's split, in version order.
    pub fn rule_weights(&self, rule: &RuleDraft) -> Vec<(String, u32)> {
        self.version_names()
            .into_iter()
            .map(|v| {
                let w = rule.weights.get(&v).copied().unwrap_or(0);
                (v, w)
            })
            .collect()
    }

    /// A split over `weights`, sticky by the policy's key.
    fn split_of(&self, weights: Vec<(String, u32)>) -> Route {
        Route::Split(Split {
            // Versions without a share are left out of the split (they keep no users).
            weights: weights
                .into_iter()
                .filter(|(_, weight)| *weight > 0)
                .map(|(version, weight)| Weight { version, weight })
                .collect(),
            sticky: match self.sticky {
                StickyKind::None => None,
                StickyKind::Cookie => Some(StickyKey::Cookie(self.sticky_name.trim().to_string())),
                StickyKind::Header => Some(StickyKey::Header(self.sticky_name.trim().to_string())),
                StickyKind::ClientIp => Some(StickyKey::ClientIp),
            },
        })
    }

    /// The service this draft describes, where each part came from, and the entries that
    /// are not even numbers (keyed by form field).
    pub fn build(&self) -> (Service, FieldMap, Vec<(String, String)>) {
        let mut map = FieldMap::default();
        let mut bad = Vec::new();
        map.add("service", "service");
        let mut service = match &self.base {
            Some(r) => r.service.clone(),
            None => {
                map.add("service.name", "name");
                map.add("service.hosts", "hosts");
                map.add("service.path_prefix", "path_prefix");
                map.add("service.stable", "stable.name");
                map.add("service.versions[0]", "stable");
                Service {
                    name: self.name.trim().to_string(),
                    hosts: split_list(&self.hosts),
                    path_prefix: if self.path_prefix.trim().is_empty() {
                        "/".into()
                    } else {
                        self.path_prefix.trim().to_string()
                    },
                    versions: vec![self.stable.build(&mut bad, "stable")],
                    stable: self.stable.name.trim().to_string(),
                    policy: Policy::default(),
                    lane_sources: Vec::new(),
                    events: Vec::new(),
                }
            }
        };
        for c in &self.canaries {
            let key = format!("canary-{}", c.id);
            let v = c.build(&mut bad, &key);
            let index = match service.versions.iter().position(|x| x.name == v.name) {
                Some(i) => {
                    service.versions[i] = v;
                    i
                }
                None => {
                    service.versions.push(v);
                    service.versions.len() - 1
                }
            };
            map.add(format!("service.versions[{index}]"), key);
        }
        service.policy = match self.mode {
            // The rollout sets the weights itself; until it starts the policy stays.
            Mode::Rollout => self
                .base
                .as_ref()
                .map(|b| b.service.policy.clone())
                .unwrap_or_default(),
            // The live traffic stays where it goes; the copies are the step.
            Mode::Mirror => {
                map.add("service.policy.default_mirror", "mirror");
                let mut policy = self
                    .base
                    .as_ref()
                    .map(|b| b.service.policy.clone())
                    .unwrap_or_default();
                policy.default_mirror = Some(self.mirror(&mut bad));
                policy
            }
            Mode::Ratio => {
                map.add("service.policy.default_route", "weights");
                map.add("service.policy.default_route.split.sticky", "sticky");
                Policy {
                    rules: Vec::new(),
                    default_route: Some(self.split()),
                    default_mirror: None,
                }
            }
            Mode::Content => {
                let rules = self
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        map.add(
                            format!("service.policy.rules[{i}]"),
                            format!("rule-{}", r.id),
                        );
                        for (j, c) in r.conditions.iter().enumerate() {
                            map.add(
                                format!("service.policy.rules[{i}].conditions[{j}]"),
                                format!("rule-{}.cond-{}", r.id, c.id),
                            );
                        }
                        Rule {
                            name: r.name.trim().to_string(),
                            conditions: r.conditions.iter().map(ConditionDraft::build).collect(),
                            route: if r.split {
                                self.split_of(self.rule_weights(r))
                            } else {
                                Route::Version(r.version.clone())
                            },
                            mirror: None,
                        }
                    })
                    .collect();
                let default_route = match self.rest {
                    Rest::Stable => None,
                    Rest::Ratio => {
                        map.add("service.policy.default_route", "weights");
                        map.add("service.policy.default_route.split.sticky", "sticky");
                        Some(self.split())
                    }
                };
                Policy {
                    rules,
                    default_route,
                    default_mirror: None,
                }
            }
        };
        (service, map, bad)
    }

    /// Everything wrong with the draft, keyed by form field: entries that are not numbers,
    /// what the routing engine rejects, and hosts another service already serves.
    pub fn check(&self, others: &[Service]) -> Vec<(String, String)> {
        let (service, map, mut errors) = self.build();
        if let Err(invalid) = CompiledService::compile(&service) {
            for e in invalid.under("service").errors {
                errors.push((map.locate(&e.field), e.message));
            }
        }
        for e in conflicts(others, &service) {
            errors.push((map.locate(&format!("service.{}", e.field)), e.message));
        }
        if self.mode == Mode::Rollout {
            errors.extend(self.rollout_plan_for(&service).check(&service));
        }
        errors
    }

    /// The version an automatic rollout rolls out: the one chosen, else the first canary
    /// added here, else the first version that is not stable.
    pub fn rollout_canary(&self, service: &Service) -> String {
        let known = |n: &str| service.version(n).is_some() && n != service.stable;
        if known(&self.plan.canary) {
            return self.plan.canary.clone();
        }
        self.canaries
            .iter()
            .map(|c| c.name.trim().to_string())
            .chain(service.versions.iter().map(|v| v.name.clone()))
            .find(|n| known(n))
            .unwrap_or_default()
    }

    fn rollout_plan_for(&self, service: &Service) -> PlanDraft {
        let mut plan = self.plan.clone();
        plan.canary = self.rollout_canary(service);
        plan
    }

    /// The rollout plan (in rollout mode) for the service the draft builds.
    pub fn rollout_plan(&self) -> Plan {
        let (service, _, _) = self.build();
        self.rollout_plan_for(&service).build(&service).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_service_with_a_ratio_canary() {
        let mut d = Draft::new_service();
        d.name = "shop".into();
        d.hosts = "shop.example.com, *.shop.example.com".into();
        d.stable.endpoints = "127.0.0.1:9001".into();
        d.canaries[0].endpoints = "127.0.0.1:9002\n127.0.0.1:9003".into();
        d.sticky = StickyKind::Cookie;
        d.sticky_name = "uid".into();
        assert_eq!(d.check(&[]), vec![]);
        let (s, _, _) = d.build();
        assert_eq!(s.versions.len(), 2);
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(
            crate::format::default_split(&s),
            vec![("v1".to_string(), 9000), ("v2".to_string(), 1000)]
        );
    }

    #[test]
    fn errors_land_on_the_fields_they_are_about() {
        let mut d = Draft::new_service();
        d.name = "shop".into();
        d.stable.endpoints = "127.0.0.1:9001".into();
        d.canaries[0].endpoints = "nope".into();
        d.canaries[0].timeout_ms = "-5".into();
        d.mode = Mode::Content;
        d.add_rule();
        d.rules[0].conditions[0].name = "x-beta".into();
        d.rules[0].conditions[0].op = Op::Regex;
        d.rules[0].conditions[0].value = "(beta".into();
        let canary = format!("canary-{}", d.canaries[0].id);
        let cond = format!(
            "rule-{}.cond-{}",
            d.rules[0].id, d.rules[0].conditions[0].id
        );
        let errors = d.check(&[]);
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&format!("{canary}.timeout_ms").as_str()),
            "{errors:?}"
        );
        assert!(
            keys.contains(&format!("{canary}.endpoints[0]").as_str()),
            "{errors:?}"
        );
        assert!(
            keys.contains(&format!("{cond}.header.match.regex").as_str()),
            "{errors:?}"
        );
        assert_eq!(step_of(&format!("{canary}.endpoints[0]")), 1);
        assert_eq!(step_of(&format!("{cond}.header.match.regex")), 2);

        let mut ratio = Draft::new_service();
        ratio.name = "shop".into();
        ratio.stable.endpoints = "127.0.0.1:9001".into();
        ratio.canaries[0].endpoints = "127.0.0.1:9002".into();
        ratio.stable_takes_rest = false;
        ratio.weights.insert("v1".into(), 5000);
        let errors = ratio.check(&[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "weights.split.weights");
        assert!(errors[0].1.contains("sum to 6000"));
        assert_eq!(step_of(&errors[0].0), 2);
    }

    #[test]
    fn a_canary_can_be_the_instances_of_a_tag_and_not_also_endpoints() {
        let mut d = Draft::new_service();
        d.name = "shop".into();
        d.stable.endpoints = "127.0.0.1:9001".into();
        d.canaries[0].tag = " 1.1.2 ".into();
        assert_eq!(d.check(&[]), vec![]);
        let (s, _, _) = d.build();
        assert_eq!(s.versions[1].tag(), Some("1.1.2"));
        assert!(s.versions[1].endpoints.is_empty());
        assert_eq!(VersionDraft::from_version(9, &s.versions[1]).tag, "1.1.2");
        d.canaries[0].endpoints = "127.0.0.1:9002".into();
        let errors = d.check(&[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.ends_with(".endpoints"), "{errors:?}");
        assert!(errors[0].1.contains("not both"), "{errors:?}");
        d.canaries[0].endpoints.clear();
        d.canaries[0].tag = "bad tag".into();
        let errors = d.check(&[]);
        assert!(errors[0].0.ends_with(".instances.tag"), "{errors:?}");
        d.canaries[0].tag.clear();
        d.canaries[0].dns = "_http._tcp.shop-v2.internal".into();
        assert_eq!(d.check(&[]), vec![]);
        assert_eq!(
            d.build().0.versions[1].dns(),
            Some("_http._tcp.shop-v2.internal")
        );
        d.canaries[0].dns = "10.0.0.1:80".into();
        let errors = d.check(&[]);
        assert!(errors[0].0.ends_with(".instances.dns"), "{errors:?}");
    }

    #[test]
    fn mirror_mode_copies_a_share_to_the_canary_and_leaves_live_traffic_alone() {
        let mut d = Draft::new_service();
        d.name = "shop".into();
        d.stable.endpoints = "127.0.0.1:9001".into();
        d.canaries[0].endpoints = "127.0.0.1:9002".into();
        d.mode = Mode::Mirror;
        d.mirror_percent = "12.5".into();
        assert_eq!(d.check(&[]), vec![]);
        let (s, _, _) = d.build();
        assert_eq!(
            s.policy.default_mirror,
            Some(Mirror {
                version: "v2".into(),
                weight: 1250
            })
        );
        assert_eq!(s.policy.default_route, None, "all live traffic to v1");
        d.mirror_percent = "lots".into();
        let errors = d.check(&[]);
        assert_eq!(errors[0].0, "mirror.weight", "{errors:?}");
        d.mirror_percent = "150".into();
        let errors = d.check(&[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "mirror.weight");
        assert!(errors[0].1.contains("15000 is out of range"), "{errors:?}");
        assert_eq!(step_of(&errors[0].0), 2);
        // And back: a service that mirrors offers the same share next time.
        d.mirror_percent = "5".into();
        let (s, _, _) = d.build();
        let again = Draft::for_service(ServiceRecord {
            service: s,
            revision: 1,
        });
        assert_eq!(
            (again.mirror_percent.as_str(), again.mirror_to.as_str()),
            ("5", "v2")
        );
    }

    #[test]
    fn a_rule_can_split_its_requests() {
        let mut d = Draft::new_service();
        d.name = "shop".into();
        d.stable.endpoints = "127.0.0.1:1".into();
        d.canaries[0].endpoints = "127.0.0.1:2".into();
        d.mode = Mode::Content;
        d.add_rule();
        d.rules[0].conditions[0].name = "x-beta".into();
        d.rules[0].conditions[0].op = Op::Present;
        d.rules[0].split = true;
        d.rules[0].weights.insert("v1".into(), 5000);
        d.rules[0].weights.insert("v2".into(), 4000);
        let errors = d.check(&[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].0,
            format!("rule-{}.route.split.weights", d.rules[0].id)
        );
        d.rules[0].weights.insert("v2".into(), 5000);
        assert!(d.check(&[]).is_empty());
        let (s, _, _) = d.build();
        assert_eq!(
            grayline_routing::describe::route(&s.policy.rules[0].route),
            "50 % to v1, 50 % to v2"
        );
        // And back from the service.
        let again = Draft::for_service(ServiceRecord {
            service: s,
            revision: 1,
        });
        assert!(again.rules[0].split);
        assert_eq!(again.rules[0].weights.get("v2"), Some(&5000));
    }

    #[test]
    fn an_existing_service_gets_canaries_appended() {
        let mut base = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        base.hosts = vec!["shop.example.com".into()];
        let record = ServiceRecord {
            service: base.clone(),
            revision: 4,
        };
        let mut d = Draft::for_service(record);
        d.add_canary();
        d.canaries[0].endpoints = "127.0.0.1:2".into();
        d.weights.insert("v2".into(), 2500);
        let (s, map, _) = d.build();
        assert_eq!(s.versions.len(), 2);
        assert_eq!(s.stable, "v1");
        assert_eq!(
            map.locate("service.versions[1].name"),
            format!("canary-{}.name", d.canaries[0].id)
        );
        assert_eq!(map.locate("service.hosts[0]"), "service.hosts[0]");
        let mut other = base.clone();
        other.name = "copy".into();
        assert!(d.check(&[]).is_empty());
        let clash = d.check(&[other]);
        assert!(
            clash[0].1.contains("already served by service `copy`"),
            "{clash:?}"
        );
    }
}
