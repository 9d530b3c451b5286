//! The decision engine: a service compiled once, then asked per request which version serves
//! it and why. Deciding never fails and never allocates (unless a query value is
//! percent-encoded): everything that can be wrong was rejected by [`CompiledService::compile`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::condition::{CompiledCondition, UaCache, check_token};
use crate::invalid::{FieldError, Invalid};
use crate::lane::CompiledLanes;
use crate::limits::*;
use crate::mirror::{self, CompiledMirror};
use crate::model::{Route, Service, StickyKey};
use crate::request::Request;
use crate::split::{BucketTable, bucket_of, bucket_of_ip, bucket_of_random};
use crate::validate;

/// A checked service in the form the engine runs.
#[derive(Clone, Debug)]
pub struct CompiledService {
    /// Shared with whoever holds the definition (a proxy keeps one copy of each service).
    service: Arc<Service>,
    stable: usize,
    rules: Vec<CompiledRule>,
    default_route: CompiledRoute,
    default_mirror: Option<CompiledMirror>,
    sticky_cookies: Vec<String>,
    /// Every sticky key of the policy's splits, each once.
    sticky_keys: Vec<StickyKey>,
    lanes: CompiledLanes,
}

#[derive(Clone, Debug)]
struct CompiledRule {
    conditions: Vec<CompiledCondition>,
    route: CompiledRoute,
    mirror: Option<CompiledMirror>,
}

#[derive(Clone, Debug)]
enum CompiledRoute {
    Version(usize),
    Split {
        table: BucketTable,
        sticky: Option<StickyKey>,
    },
}

/// The engine's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Index into the service's versions.
    pub version: usize,
    pub version_name: &'a str,
    pub matched: Matched,
    /// The bucket (0..10000) the request fell in, when the route was a split.
    pub bucket: Option<u16>,
    pub sticky: Sticky<'a>,
    /// The version (its index) a copy of the request goes to, when the route mirrors and
    /// this request was sampled.
    pub mirror: Option<usize>,
    /// The lane the request carries on to the next service.
    pub lane: Lane<'a>,
}

/// Which part of the policy decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// The rule at this index matched.
    Rule(usize),
    /// No rule matched; the default route decided.
    Default,
    /// The request arrived in a lane the service has a version in; the policy was not asked.
    Lane,
}

/// The lane a request continues in after this service (what a proxy stamps on the request
/// it sends upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane<'a> {
    /// None: the request arrived in no lane and the chosen version is in none.
    None,
    /// The lane the request arrived in ([`Request::lane`]), kept whether or not this
    /// service has a version in it, so the lane reaches services further down the chain.
    Carried,
    /// The chosen version's lane, entered here.
    Entered(&'a str),
}

/// How the bucket of a split was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sticky<'a> {
    /// Not a split, or a split without a sticky key: a random bucket.
    No,
    /// The key was present; its hash chose the bucket.
    Key(&'a StickyKey),
    /// The split is sticky but the request lacks the key, so the bucket was random. For a
    /// cookie key the proxy mints a cookie and decides again with it.
    MissingKey(&'a StickyKey),
}

impl CompiledService {
    /// Checks every field of `service` and compiles its policy. The errors name field paths
    /// from the service's root, e.g. `policy.rules[2].conditions[0].header.match.regex`.
    pub fn compile(service: &Service) -> Result<CompiledService, Invalid> {
        Self::compile_shared(Arc::new(service.clone()))
    }

    /// [`CompiledService::compile`] of a service held in an `Arc`, which it keeps (no copy).
    pub fn compile_shared(shared: Arc<Service>) -> Result<CompiledService, Invalid> {
        let service = &*shared;
        let mut errors = Vec::new();
        validate::check_service(service, &mut errors);
        let index: HashMap<&str, usize> = service
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i))
            .collect();
        let cx = Context {
            index: &index,
            service,
        };
        let lanes = CompiledLanes::compile(service, &mut errors);
        mirror::check_limits(service, &mut errors);

        let rules = &service.policy.rules;
        if rules.len() > MAX_RULES {
            errors.push(FieldError::new(
                "policy.rules",
                format!("at most {MAX_RULES} rules, got {}", rules.len()),
            ));
        }
        let mut compiled_rules = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let path = format!("policy.rules[{i}]");
            if rule.name.len() > MAX_NAME_LEN {
                errors.push(FieldError::new(
                    format!("{path}.name"),
                    format!("longer than {MAX_NAME_LEN} characters"),
                ));
            }
            if rule.conditions.is_empty() {
                errors.push(FieldError::new(
                    format!("{path}.conditions"),
                    "a rule needs at least one condition (use the default route for everything else)",
                ));
            } else if rule.conditions.len() > MAX_CONDITIONS {
                errors.push(FieldError::new(
                    format!("{path}.conditions"),
                    format!(
                        "at most {MAX_CONDITIONS} conditions, got {}",
                        rule.conditions.len()
                    ),
                ));
            }
            let conditions: Vec<_> = rule
                .conditions
                .iter()
                .enumerate()
                .filter_map(|(j, c)| {
                    CompiledCondition::compile(c, &format!("{path}.conditions[{j}]"), &mut errors)
                })
                .collect();
            let route = cx.route(&rule.route, &format!("{path}.route"), &mut errors);
            let mirror = rule.mirror.as_ref().and_then(|m| {
                CompiledMirror::compile(m, &index, &format!("{path}.mirror"), &mut errors)
            });
            if let Some(route) = route {
                compiled_rules.push(CompiledRule {
                    conditions,
                    route,
                    mirror,
                });
            }
        }
        let stable = index.get(service.stable.as_str()).copied();
        let default_route = match &service.policy.default_route {
            Some(route) => cx.route(route, "policy.default_route", &mut errors),
            None => stable.map(CompiledRoute::Version),
        };
        let default_mirror =
            service.policy.default_mirror.as_ref().and_then(|m| {
                CompiledMirror::compile(m, &index, "policy.default_mirror", &mut errors)
            });

        Invalid::check(errors)?;
        let (Some(stable), Some(default_route)) = (stable, default_route) else {
            unreachable!("a missing stable or default route was reported as an error");
        };
        let mut sticky_keys: Vec<StickyKey> = Vec::new();
        for route in compiled_rules
            .iter()
            .map(|r| &r.route)
            .chain([&default_route])
        {
            if let CompiledRoute::Split {
                sticky: Some(key), ..
            } = route
                && !sticky_keys.contains(key)
            {
                sticky_keys.push(key.clone());
            }
        }
        let sticky_cookies = sticky_keys
            .iter()
            .filter_map(|k| match k {
                StickyKey::Cookie(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        Ok(CompiledService {
            service: shared.clone(),
            stable,
            rules: compiled_rules,
            default_route,
            default_mirror,
            sticky_cookies,
            sticky_keys,
            lanes,
        })
    }

    /// Which version serves `req`, and why. `random` is any random number; it picks the
    /// bucket when the route is a split without a usable sticky key, and whether a mirroring
    /// route copies the request.
    ///
    /// A request that arrived in a lane ([`Request::lane`]) the service has a version in goes
    /// to that version before any rule is asked.
    pub fn decide(&self, req: &(impl Request + ?Sized), random: u64) -> Decision<'_> {
        let arrived = req.lane();
        if let Some(version) = arrived.and_then(|lane| self.lanes.version(lane)) {
            return Decision {
                version,
                version_name: &self.service.versions[version].name,
                matched: Matched::Lane,
                bucket: None,
                sticky: Sticky::No,
                mirror: None,
                lane: Lane::Carried,
            };
        }
        let mut ua = UaCache::default();
        let (matched, route, mirror) = self
            .rules
            .iter()
            .position(|rule| rule.conditions.iter().all(|c| c.matches(req, &mut ua)))
            .map_or(
                (Matched::Default, &self.default_route, self.default_mirror),
                |i| (Matched::Rule(i), &self.rules[i].route, self.rules[i].mirror),
            );
        let (version, bucket, sticky) = match route {
            CompiledRoute::Version(v) => (*v, None, Sticky::No),
            CompiledRoute::Split { table, sticky } => {
                let (bucket, sticky) = match sticky {
                    None => (bucket_of_random(random), Sticky::No),
                    Some(key) => match sticky_bucket(key, req) {
                        Some(bucket) => (bucket, Sticky::Key(key)),
                        None => (bucket_of_random(random), Sticky::MissingKey(key)),
                    },
                };
                (table.version_at(bucket), Some(bucket), sticky)
            }
        };
        let chosen = &self.service.versions[version];
        let lane = match arrived {
            Some(_) => Lane::Carried,
            None if chosen.lane.is_empty() => Lane::None,
            None => Lane::Entered(&chosen.lane),
        };
        Decision {
            version,
            version_name: &chosen.name,
            matched,
            bucket,
            sticky,
            mirror: mirror.and_then(|m| m.sample(version, random)),
            lane,
        }
    }

    /// The service's lanes: which version serves which, and whose lane header it believes.
    pub fn lanes(&self) -> &CompiledLanes {
        &self.lanes
    }

    /// The mirror of the rule at `matched` (or of the default route).
    pub fn mirror_of(&self, matched: Matched) -> Option<CompiledMirror> {
        match matched {
            Matched::Rule(i) => self.rules[i].mirror,
            Matched::Default => self.default_mirror,
            Matched::Lane => None,
        }
    }

    /// Versions (their indices) some route mirrors to.
    pub fn mirror_targets(&self) -> impl Iterator<Item = usize> + '_ {
        self.rules
            .iter()
            .filter_map(|r| r.mirror)
            .chain(self.default_mirror)
            .map(|m| m.version)
    }

    /// The service this was compiled from.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The same, shared.
    pub fn shared(&self) -> &Arc<Service> {
        &self.service
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    /// Index of the stable version.
    pub fn stable(&self) -> usize {
        self.stable
    }

    /// Cookie names used as sticky keys anywhere in the policy.
    pub fn sticky_cookies(&self) -> &[String] {
        &self.sticky_cookies
    }

    /// The bucket ranges `(version, first, end)` of the default route, when it is a split.
    /// Whether `req` carries a key one of the service's sticky splits keeps users by: a
    /// returning user. A request that carries none is a new visitor, whose version is a
    /// fresh draw wherever the policy sends it (what the sample-ratio guard counts).
    pub fn carries_sticky_key(&self, req: &(impl Request + ?Sized)) -> bool {
        self.sticky_keys
            .iter()
            .any(|key| sticky_bucket(key, req).is_some())
    }

    pub fn default_ranges(&self) -> Option<Vec<(usize, u16, u16)>> {
        match &self.default_route {
            CompiledRoute::Split { table, .. } => Some(table.ranges().collect()),
            CompiledRoute::Version(_) => None,
        }
    }
}

fn sticky_bucket(key: &StickyKey, req: &(impl Request + ?Sized)) -> Option<u16> {
    match key {
        StickyKey::Cookie(name) => req
            .cookie(name)
            .filter(|v| !v.is_empty())
            .map(|v| bucket_of(v.as_bytes())),
        StickyKey::Header(name) => req
            .header(name)
            .filter(|v| !v.is_empty())
            .map(|v| bucket_of(v.as_bytes())),
        StickyKey::ClientIp => req.client_ip().map(bucket_of_ip),
    }
}

struct Context<'a> {
    index: &'a HashMap<&'a str, usize>,
    service: &'a Service,
}

impl Context<'_> {
    fn version(&self, name: &str, path: &str, errors: &mut Vec<FieldError>) -> Option<usize> {
        let found = self.index.get(name).copied();
        if found.is_none() {
            let known: Vec<&str> = self
                .service
                .versions
                .iter()
                .map(|v| v.name.as_str())
                .collect();
            errors.push(FieldError::new(
                path,
                if name.is_empty() {
                    "a version must be named".to_string()
                } else {
                    format!(
                        "unknown version `{name}`; the service has {}",
                        if known.is_empty() {
                            "no versions".to_string()
                        } else {
                            known.join(", ")
                        }
                    )
                },
            ));
        }
        found
    }

    fn route(
        &self,
        route: &Route,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<CompiledRoute> {
        match route {
            Route::Version(name) => self
                .version(name, &format!("{path}.version"), errors)
                .map(CompiledRoute::Version),
            Route::Split(split) => {
                let p = format!("{path}.split");
                let before = errors.len();
                if split.weights.is_empty() {
                    errors.push(FieldError::new(
                        format!("{p}.weights"),
                        "a split needs at least one version",
                    ));
                }
                let mut seen = HashSet::new();
                let mut total: u64 = 0;
                let mut weights = Vec::with_capacity(split.weights.len());
                for (i, w) in split.weights.iter().enumerate() {
                    let wp = format!("{p}.weights[{i}]");
                    if let Some(v) = self.version(&w.version, &format!("{wp}.version"), errors) {
                        if !seen.insert(v) {
                            errors.push(FieldError::new(
                                format!("{wp}.version"),
                                format!("version `{}` appears twice in the split", w.version),
                            ));
                        }
                        weights.push((v, w.weight));
                    }
                    if w.weight > TOTAL_WEIGHT {
                        errors.push(FieldError::new(
                            format!("{wp}.weight"),
                            format!(
                                "{} is out of range; a weight is 0 to 10000 basis points (100 %)",
                                w.weight
                            ),
                        ));
                    }
                    total += u64::from(w.weight);
                }
                if !split.weights.is_empty() && total != u64::from(TOTAL_WEIGHT) {
                    errors.push(FieldError::new(
                        format!("{p}.weights"),
                        format!(
                            "weights sum to {total} basis points ({}); they must sum to 10000 (100 %)",
                            percent(total)
                        ),
                    ));
                }
                match &split.sticky {
                    Some(StickyKey::Cookie(name)) => {
                        check_token(name, &format!("{p}.sticky.cookie"), "cookie", errors)
                    }
                    Some(StickyKey::Header(name)) => {
                        check_token(name, &format!("{p}.sticky.header"), "header", errors)
                    }
                    _ => {}
                }
                let sticky = match &split.sticky {
                    Some(StickyKey::Header(h)) => Some(StickyKey::Header(h.to_ascii_lowercase())),
                    other => other.clone(),
                };
                (errors.len() == before).then(|| CompiledRoute::Split {
                    table: BucketTable::new(weights),
                    sticky,
                })
            }
        }
    }
}

/// `1234` basis points as `12.34 %`.
pub fn percent(basis_points: u64) -> String {
    let whole = basis_points / 100;
    let frac = basis_points % 100;
    if frac == 0 {
        format!("{whole} %")
    } else {
        format!("{whole}.{frac:02} %")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::request::RequestFacts;

    pub(crate) fn two_versions() -> Service {
        let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:9001"]));
        s.versions.push(Version::new("v2", &["127.0.0.1:9002"]));
        s
    }

    fn split(weights: &[(&str, u32)], sticky: Option<StickyKey>) -> Route {
        Route::Split(Split {
            weights: weights
                .iter()
                .map(|(v, w)| Weight {
                    version: v.to_string(),
                    weight: *w,
                })
                .collect(),
            sticky,
        })
    }

    #[test]
    fn a_request_without_any_sticky_key_of_the_policy_is_a_new_visitor() {
        let mut s = two_versions();
        s.policy.rules.push(header_rule(
            "x-beta",
            "1",
            split(
                &[("v1", 5000), ("v2", 5000)],
                Some(StickyKey::Header("x-user".into())),
            ),
        ));
        s.policy.default_route = Some(split(
            &[("v1", 9000), ("v2", 1000)],
            Some(StickyKey::Cookie("uid".into())),
        ));
        let c = CompiledService::compile(&s).unwrap();
        let new = RequestFacts::default();
        assert!(!c.carries_sticky_key(&new));
        assert!(c.carries_sticky_key(&new.clone().with_cookie("uid", "u1")));
        assert!(c.carries_sticky_key(&new.clone().with_header("x-user", "7")));
        assert!(
            !c.carries_sticky_key(&new.clone().with_cookie("uid", "")),
            "empty is none"
        );
        // A policy without sticky splits keeps nobody: everyone is new.
        let plain = CompiledService::compile(&two_versions()).unwrap();
        assert!(!plain.carries_sticky_key(&new.with_cookie("uid", "u1")));
    }

    fn header_rule(name: &str, value: &str, route: Route) -> Rule {
        Rule {
            name: format!("{name}={value}"),
            conditions: vec![Condition::Header(FieldMatch {
                name: name.into(),
                op: MatchOp::Exact(value.into()),
                negate: false,
            })],
            route,
            mirror: None,
        }
    }

    fn errors(s: &Service) -> Vec<FieldError> {
        CompiledService::compile(s)
            .expect_err("should be invalid")
            .errors
    }

    fn assert_error(s: &Service, field: &str, needle: &str) {
        let errs = errors(s);
        assert!(
            errs.iter()
                .any(|e| e.field == field && e.message.contains(needle)),
            "wanted `{field}: …{needle}…`, got {errs:?}"
        );
    }

    #[test]
    fn default_route_is_stable() {
        let c = CompiledService::compile(&two_versions()).unwrap();
        let d = c.decide(&RequestFacts::default(), 0);
        assert_eq!(
            (d.version_name, d.matched, d.bucket),
            ("v1", Matched::Default, None)
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let mut s = two_versions();
        s.policy.rules = vec![
            header_rule("x-a", "1", Route::Version("v2".into())),
            header_rule("x-b", "1", Route::Version("v1".into())),
            header_rule("x-a", "1", Route::Version("v1".into())),
        ];
        let c = CompiledService::compile(&s).unwrap();
        let d = c.decide(
            &RequestFacts::default()
                .with_header("x-a", "1")
                .with_header("x-b", "1"),
            0,
        );
        assert_eq!((d.version_name, d.matched), ("v2", Matched::Rule(0)));
        let d = c.decide(&RequestFacts::default().with_header("x-b", "1"), 0);
        assert_eq!((d.version_name, d.matched), ("v1", Matched::Rule(1)));
        let d = c.decide(&RequestFacts::default(), 0);
        assert_eq!(d.matched, Matched::Default);
    }

    #[test]
    fn all_conditions_of_a_rule_must_hold() {
        let mut s = two_versions();
        let mut rule = header_rule("x-a", "1", Route::Version("v2".into()));
        rule.conditions.push(Condition::Cookie(FieldMatch {
            name: "beta".into(),
            op: MatchOp::Present,
            negate: false,
        }));
        s.policy.rules = vec![rule];
        let c = CompiledService::compile(&s).unwrap();
        let only_header = RequestFacts::default().with_header("x-a", "1");
        assert_eq!(c.decide(&only_header, 0).version_name, "v1");
        let both = only_header.with_cookie("beta", "");
        assert_eq!(c.decide(&both, 0).version_name, "v2");
    }

    #[test]
    fn split_uses_random_bucket_without_key() {
        let mut s = two_versions();
        s.policy.default_route = Some(split(&[("v1", 9000), ("v2", 1000)], None));
        let c = CompiledService::compile(&s).unwrap();
        let d = c.decide(&RequestFacts::default(), 8999);
        assert_eq!(
            (d.version_name, d.bucket, d.sticky),
            ("v1", Some(8999), Sticky::No)
        );
        assert_eq!(c.decide(&RequestFacts::default(), 9000).version_name, "v2");
        assert_eq!(
            c.decide(&RequestFacts::default(), 19_999).version_name,
            "v2"
        );
    }

    #[test]
    fn sticky_keys_of_every_kind() {
        let mut s = two_versions();
        for key in [
            StickyKey::Cookie("uid".into()),
            StickyKey::Header("X-User".into()),
            StickyKey::ClientIp,
        ] {
            s.policy.default_route = Some(split(&[("v1", 5000), ("v2", 5000)], Some(key.clone())));
            let c = CompiledService::compile(&s).unwrap();
            let req = RequestFacts::default()
                .with_cookie("uid", "alice")
                .with_header("x-user", "alice")
                .with_client_ip("192.0.2.7");
            let first = c.decide(&req, 1);
            assert!(matches!(first.sticky, Sticky::Key(_)), "{key:?}");
            for random in 0..50 {
                assert_eq!(c.decide(&req, random).version, first.version, "{key:?}");
            }
            let missing = c.decide(&RequestFacts::default(), 3);
            assert!(matches!(missing.sticky, Sticky::MissingKey(_)), "{key:?}");
            assert_eq!(missing.bucket, Some(3));
        }
        s.policy.default_route = Some(split(
            &[("v1", 5000), ("v2", 5000)],
            Some(StickyKey::Cookie("uid".into())),
        ));
        assert_eq!(
            CompiledService::compile(&s).unwrap().sticky_cookies(),
            ["uid".to_string()]
        );
    }

    #[test]
    fn zero_weight_versions_get_nothing() {
        let mut s = two_versions();
        s.policy.default_route = Some(split(&[("v1", 10000), ("v2", 0)], None));
        let c = CompiledService::compile(&s).unwrap();
        for r in (0..10_000).step_by(7) {
            assert_eq!(c.decide(&RequestFacts::default(), r).version_name, "v1");
        }
    }

    #[test]
    fn rejects_bad_routes_with_field_paths() {
        let mut s = two_versions();
        s.policy.rules = vec![header_rule("x", "1", Route::Version("v3".into()))];
        assert_error(
            &s,
            "policy.rules[0].route.version",
            "unknown version `v3`; the service has v1, v2",
        );

        let mut s = two_versions();
        s.policy.default_route = Some(split(&[("v1", 9000), ("v2", 500)], None));
        assert_error(
            &s,
            "policy.default_route.split.weights",
            "sum to 9500 basis points (95 %)",
        );

        let mut s = two_versions();
        s.policy.default_route = Some(split(&[("v1", 4_294_967_295), ("v2", 1)], None));
        assert_error(
            &s,
            "policy.default_route.split.weights[0].weight",
            "out of range",
        );

        let mut s = two_versions();
        s.policy.default_route = Some(split(&[("v1", 5000), ("v1", 5000)], None));
        assert_error(
            &s,
            "policy.default_route.split.weights[1].version",
            "appears twice",
        );

        let mut s = two_versions();
        s.policy.default_route = Some(split(&[], None));
        assert_error(&s, "policy.default_route.split.weights", "at least one");

        let mut s = two_versions();
        s.policy.default_route = Some(split(
            &[("v1", 10000)],
            Some(StickyKey::Cookie("a b".into())),
        ));
        assert_error(
            &s,
            "policy.default_route.split.sticky.cookie",
            "not a valid cookie name",
        );

        let mut s = two_versions();
        s.policy.rules = vec![Rule {
            name: String::new(),
            conditions: vec![],
            route: Route::Version("v2".into()),
            mirror: None,
        }];
        assert_error(&s, "policy.rules[0].conditions", "at least one condition");

        let mut s = two_versions();
        let mut rule = header_rule("x", "1", Route::Version("v2".into()));
        rule.conditions[0] = Condition::Header(FieldMatch {
            name: "x".into(),
            op: MatchOp::Regex("([a-z]".into()),
            negate: false,
        });
        s.policy.rules = vec![header_rule("y", "1", Route::Version("v2".into())), rule];
        assert_error(
            &s,
            "policy.rules[1].conditions[0].header.match.regex",
            "unclosed",
        );
    }

    #[test]
    fn rejects_bad_services_with_field_paths() {
        type Mutation = Box<dyn Fn(&mut Service)>;
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|s| s.name = String::new()),
                "name",
                "must not be empty",
            ),
            (
                Box::new(|s| s.name = "a b".into()),
                "name",
                "not a valid service name",
            ),
            (
                Box::new(|s| s.stable = "v9".into()),
                "stable",
                "not one of the service's versions",
            ),
            (
                Box::new(|s| s.stable = String::new()),
                "stable",
                "must be named",
            ),
            (
                Box::new(|s| s.versions.clear()),
                "versions",
                "at least one version",
            ),
            (
                Box::new(|s| s.versions[1].name = "v1".into()),
                "versions[1].name",
                "duplicate version name",
            ),
            (
                Box::new(|s| s.versions[1].name = String::new()),
                "versions[1].name",
                "must not be empty",
            ),
            (
                Box::new(|s| s.versions[0].endpoints = vec!["nope".into()]),
                "versions[0].endpoints[0]",
                "missing port",
            ),
            (
                Box::new(|s| s.versions[0].endpoints.clear()),
                "versions[0].endpoints",
                "at least one endpoint",
            ),
            (
                Box::new(|s| s.versions[0].endpoints.push("127.0.0.1:9001".into())),
                "versions[0].endpoints[1]",
                "duplicate endpoint",
            ),
            (
                Box::new(|s| s.versions[0].instances = Version::tagged("x", "1.1.2").instances),
                "versions[0].endpoints",
                "not both",
            ),
            (
                Box::new(|s| s.versions[1] = Version::tagged("v2", "a b")),
                "versions[1].instances.tag",
                "not a valid tag name",
            ),
            (
                Box::new(|s| s.versions[1] = Version::resolved("v2", "10.0.0.1:80")),
                "versions[1].instances.dns",
                "list it under `endpoints`",
            ),
            (
                Box::new(|s| s.versions[1] = Version::resolved("v2", "Shop.internal:80")),
                "versions[1].instances.dns",
                "lowercase DNS name",
            ),
            (
                Box::new(|s| s.versions[1] = Version::resolved("v2", "_http.shop")),
                "versions[1].instances.dns",
                "not an SRV name",
            ),
            (
                Box::new(|s| s.versions[1].health_check.timeout_ms = 9_000),
                "versions[1].health_check.timeout_ms",
                "longer than interval_ms",
            ),
            (
                Box::new(|s| s.versions[1].health_check.grpc = true),
                "versions[1].health_check.grpc",
                "needs `protocol: h2c`",
            ),
            (
                Box::new(|s| s.versions[1].protocol = Protocol::H2),
                "versions[1].protocol",
                "needs `tls`",
            ),
            (
                Box::new(|s| {
                    s.versions[1].protocol = Protocol::H2c;
                    s.versions[1].tls = Some(UpstreamTls::default());
                }),
                "versions[1].protocol",
                "with `tls` use `h2`",
            ),
            (
                Box::new(|s| {
                    s.versions[1].tls = Some(UpstreamTls {
                        ca: "ca.pem".into(),
                        ..UpstreamTls::default()
                    })
                }),
                "versions[1].tls.ca",
                "not an absolute path",
            ),
            (
                Box::new(|s| {
                    s.versions[1].tls = Some(UpstreamTls {
                        client_cert: "/etc/grayline/proxy.pem".into(),
                        ..UpstreamTls::default()
                    })
                }),
                "versions[1].tls.client_key",
                "needs its key",
            ),
            (
                Box::new(|s| {
                    s.versions[1].tls = Some(UpstreamTls {
                        server_name: "shop v2".into(),
                        ..UpstreamTls::default()
                    })
                }),
                "versions[1].tls.server_name",
                "neither a host name nor an IP address",
            ),
            (
                Box::new(|s| s.versions[1].health_check.path = "healthz".into()),
                "versions[1].health_check.path",
                "starting with `/`",
            ),
            (
                Box::new(|s| s.versions[1].instances = Some(Instances::default())),
                "versions[1].instances",
                "give one source",
            ),
            (
                Box::new(|s| s.versions[0].timeout_ms = 0),
                "versions[0].timeout_ms",
                "0 is out of range",
            ),
            (
                Box::new(|s| s.versions[0].timeout_ms = u32::MAX),
                "versions[0].timeout_ms",
                "4294967295 is out of range",
            ),
            (
                Box::new(|s| s.versions[1].breaker.error_threshold_percent = 101),
                "versions[1].breaker.error_threshold_percent",
                "out of range",
            ),
            (
                Box::new(|s| s.versions[1].breaker.window_ms = 10),
                "versions[1].breaker.window_ms",
                "out of range",
            ),
            (
                Box::new(|s| s.versions[1].outlier_detection.consecutive_failures = 0),
                "versions[1].outlier_detection.consecutive_failures",
                "out of range",
            ),
            (
                Box::new(|s| s.versions[1].outlier_detection.max_ejection_ms = 10),
                "versions[1].outlier_detection.max_ejection_ms",
                "shorter than base_ejection_ms",
            ),
            (
                Box::new(|s| s.versions[1].outlier_detection.max_ejection_percent = 101),
                "versions[1].outlier_detection.max_ejection_percent",
                "out of range",
            ),
            (
                Box::new(|s| s.versions[0].retry.attempts = 6),
                "versions[0].retry.attempts",
                "out of range",
            ),
            (
                Box::new(|s| s.versions[0].retry.per_try_timeout_ms = 40_000),
                "versions[0].retry.per_try_timeout_ms",
                "bounds all tries together",
            ),
            (
                Box::new(|s| s.versions[0].retry.budget_percent = 101),
                "versions[0].retry.budget_percent",
                "out of range",
            ),
            (
                Box::new(|s| s.versions[1].max_concurrent = 2_000_000),
                "versions[1].max_concurrent",
                "out of range",
            ),
            (
                Box::new(|s| s.hosts = vec!["Shop.Example".into()]),
                "hosts[0]",
                "lowercase host name",
            ),
            (
                Box::new(|s| s.hosts = vec!["a..b".into()]),
                "hosts[0]",
                "host name",
            ),
            (
                Box::new(|s| s.hosts = vec!["a.b".into(), "a.b".into()]),
                "hosts[1]",
                "duplicate host",
            ),
            (
                Box::new(|s| s.path_prefix = "api".into()),
                "path_prefix",
                "must start with `/`",
            ),
            (
                Box::new(|s| s.path_prefix = "/a b".into()),
                "path_prefix",
                "spaces",
            ),
        ];
        for (mutate, field, needle) in cases {
            let mut s = two_versions();
            mutate(&mut s);
            assert_error(&s, field, needle);
        }
    }

    #[test]
    fn reports_every_error_at_once() {
        let mut s = two_versions();
        s.name = String::new();
        s.versions[0].timeout_ms = 0;
        s.policy.default_route = Some(split(&[("v1", 1)], None));
        let fields: Vec<String> = errors(&s).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "name",
                "versions[0].timeout_ms",
                "policy.default_route.split.weights"
            ]
        );
    }

    #[test]
    fn a_lane_routes_before_the_policy_and_is_carried_on() {
        let mut s = two_versions();
        s.versions.push(Version::new("v3", &["127.0.0.1:9003"]));
        s.versions[1].lane = "gray".into();
        s.policy.rules = vec![header_rule("x-canary", "1", Route::Version("v2".into()))];
        s.policy.default_route = Some(split(&[("v1", 5000), ("v3", 5000)], None));
        let c = CompiledService::compile(&s).unwrap();
        let in_gray = RequestFacts::default().with_lane("gray");
        for random in 0..20 {
            let d = c.decide(&in_gray, random);
            assert_eq!(
                (d.version_name, d.matched, d.lane, d.bucket),
                ("v2", Matched::Lane, Lane::Carried, None)
            );
        }
        // A lane the service has no version in: the policy decides, the lane goes on.
        let d = c.decide(&RequestFacts::default().with_lane("blue"), 0);
        assert_eq!((d.version_name, d.lane), ("v1", Lane::Carried));
        // Entering the lane through the policy.
        let d = c.decide(&RequestFacts::default().with_header("x-canary", "1"), 0);
        assert_eq!(
            (d.version_name, d.matched, d.lane),
            ("v2", Matched::Rule(0), Lane::Entered("gray"))
        );
        let d = c.decide(&RequestFacts::default(), 9999);
        assert_eq!((d.version_name, d.lane), ("v3", Lane::None));
        assert_eq!(c.lanes().version("gray"), Some(1));
    }

    #[test]
    fn a_mirror_copies_its_share_of_the_route_it_is_on() {
        let mut s = two_versions();
        s.policy.default_mirror = Some(Mirror {
            version: "v2".into(),
            weight: 2000,
        });
        s.policy.rules = vec![Rule {
            mirror: Some(Mirror {
                version: "v2".into(),
                weight: 10_000,
            }),
            ..header_rule("x-canary", "1", Route::Version("v2".into()))
        }];
        let c = CompiledService::compile(&s).unwrap();
        let n = 20_000u64;
        let copied = (0..n)
            .map(|i| {
                c.decide(
                    &RequestFacts::default(),
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            })
            .filter(|d| {
                assert_eq!(d.version_name, "v1");
                d.mirror.is_some()
            })
            .count();
        // p = 0.2 over 20000: mean 4000, sd 57; accept ±5 sd.
        assert!((3717..=4283).contains(&copied), "{copied}");
        // The rule sends everything to v2 already: nothing to copy.
        let canary = RequestFacts::default().with_header("x-canary", "1");
        assert!((0..100u64).all(|i| c.decide(&canary, i << 40).mirror.is_none()));
        assert_eq!(c.mirror_targets().collect::<Vec<_>>(), [1, 1]);
        assert_eq!(
            c.mirror_of(Matched::Default),
            Some(CompiledMirror {
                version: 1,
                weight: 2000
            })
        );
    }

    #[test]
    fn rejects_bad_mirrors_and_lanes_with_field_paths() {
        let mut s = two_versions();
        s.policy.rules = vec![Rule {
            mirror: Some(Mirror {
                version: "v9".into(),
                weight: 100,
            }),
            ..header_rule("x", "1", Route::Version("v1".into()))
        }];
        assert_error(
            &s,
            "policy.rules[0].mirror.version",
            "unknown version `v9`; the service has v1, v2",
        );
        let mut s = two_versions();
        s.policy.default_mirror = Some(Mirror {
            version: "v2".into(),
            weight: 10_001,
        });
        assert_error(&s, "policy.default_mirror.weight", "10001 is out of range");
        let mut s = two_versions();
        s.versions[1].mirror_limits.max_in_flight = 0;
        s.versions[1].mirror_limits.max_body_bytes = u32::MAX;
        assert_error(
            &s,
            "versions[1].mirror_limits.max_in_flight",
            "out of range",
        );
        assert_error(&s, "versions[1].mirror_limits.max_body_bytes", "16 MiB");
        let mut s = two_versions();
        s.versions[0].lane = "gray".into();
        s.versions[1].lane = "gray".into();
        assert_error(&s, "versions[1].lane", "already in lane `gray`");
        let mut s = two_versions();
        s.lane_sources = vec!["10.0.0.0/33".into()];
        assert_error(&s, "lane_sources[0]", "not an IP network");
        let event = |name: &str, statuses: &[u16]| crate::model::Event {
            name: name.into(),
            statuses: statuses.to_vec(),
        };
        let mut s = two_versions();
        s.events = vec![event("declined", &[402, 409]), event("paid", &[])];
        CompiledService::compile(&s).expect("declared events are valid");
        s.events.push(event("declined", &[]));
        assert_error(&s, "events[2].name", "duplicate event name");
        s.events[2] = event("slow down", &[]);
        assert_error(&s, "events[2].name", "not a valid event name");
        s.events[2] = event("busy", &[429, 429]);
        assert_error(&s, "events[2].statuses[1]", "listed twice");
        s.events[2] = event("busy", &[99]);
        assert_error(&s, "events[2].statuses[0]", "not an HTTP status");
        s.events = (0..9).map(|i| event(&format!("e{i}"), &[])).collect();
        assert_error(&s, "events", "at most 8 events");
    }

    #[test]
    fn percent_formatting() {
        assert_eq!(percent(1000), "10 %");
        assert_eq!(percent(1), "0.01 %");
        assert_eq!(percent(1250), "12.50 %");
    }
}
