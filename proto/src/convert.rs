//! Conversions between the wire messages and the routing model.
//!
//! Model → wire cannot fail. Wire → model reports what protobuf allows but the model does not
//! (an unset `oneof`, an unknown enum number) as field-path errors; everything else is checked
//! by the routing crate's compiler, with the same paths.

use grayline_routing::model as m;
use grayline_routing::{FieldError, Invalid};

use crate::v1 as pb;

// ---------- model → wire ----------

impl From<&m::Service> for pb::Service {
    fn from(s: &m::Service) -> Self {
        pb::Service {
            name: s.name.clone(),
            hosts: s.hosts.clone(),
            path_prefix: s.path_prefix.clone(),
            versions: s.versions.iter().map(Into::into).collect(),
            stable: s.stable.clone(),
            policy: Some((&s.policy).into()),
            lane_sources: s.lane_sources.clone(),
            events: s
                .events
                .iter()
                .map(|e| pb::Event {
                    name: e.name.clone(),
                    statuses: e.statuses.iter().map(|&s| u32::from(s)).collect(),
                })
                .collect(),
        }
    }
}

impl From<&m::Version> for pb::Version {
    fn from(v: &m::Version) -> Self {
        pb::Version {
            name: v.name.clone(),
            endpoints: v.endpoints.clone(),
            load_balance: match v.load_balance {
                m::LoadBalance::RoundRobin => pb::LoadBalance::RoundRobin,
                m::LoadBalance::Random => pb::LoadBalance::Random,
                m::LoadBalance::SessionSticky => pb::LoadBalance::SessionSticky,
            } as i32,
            timeout_ms: Some(v.timeout_ms),
            max_concurrent: v.max_concurrent,
            breaker: Some(pb::Breaker {
                enabled: Some(v.breaker.enabled),
                error_threshold_percent: Some(v.breaker.error_threshold_percent),
                request_volume: Some(v.breaker.request_volume),
                sleep_window_ms: Some(v.breaker.sleep_window_ms),
                window_ms: Some(v.breaker.window_ms),
                force_open: v.breaker.force_open,
                force_closed: v.breaker.force_closed,
            }),
            fallback: Some(pb::Fallback {
                policy: match v.fallback.policy {
                    m::FallbackPolicy::Fail => pb::FallbackPolicy::Fail,
                    m::FallbackPolicy::ReturnEmpty => pb::FallbackPolicy::ReturnEmpty,
                } as i32,
            }),
            outlier_detection: Some(pb::OutlierDetection {
                enabled: Some(v.outlier_detection.enabled),
                consecutive_failures: Some(v.outlier_detection.consecutive_failures),
                base_ejection_ms: Some(v.outlier_detection.base_ejection_ms),
                max_ejection_ms: Some(v.outlier_detection.max_ejection_ms),
                max_ejection_percent: Some(v.outlier_detection.max_ejection_percent),
            }),
            retry: Some(pb::Retry {
                attempts: v.retry.attempts,
                per_try_timeout_ms: v.retry.per_try_timeout_ms,
                budget_percent: Some(v.retry.budget_percent),
            }),
            protocol: match (v.protocol, v.tls.is_some()) {
                (m::Protocol::Http1, false) => pb::Protocol::Http1,
                (m::Protocol::Http1, true) => pb::Protocol::Http1Tls,
                (m::Protocol::H2c, _) => pb::Protocol::H2c,
                (m::Protocol::Auto, false) => pb::Protocol::Auto,
                (m::Protocol::Auto, true) => pb::Protocol::AutoTls,
                (m::Protocol::H2, _) => pb::Protocol::H2,
            } as i32,
            tls: v.tls.as_ref().map(|t| pb::UpstreamTls {
                ca: t.ca.clone(),
                server_name: t.server_name.clone(),
                client_cert: t.client_cert.clone(),
                client_key: t.client_key.clone(),
            }),
            lane: v.lane.clone(),
            mirror_limits: Some(pb::MirrorLimits {
                max_in_flight: Some(v.mirror_limits.max_in_flight),
                max_body_bytes: Some(v.mirror_limits.max_body_bytes),
            }),
            health_check: (v.health_check != m::HealthCheck::default()).then(|| {
                let h = &v.health_check;
                pb::HealthCheck {
                    enabled: h.enabled,
                    path: Some(h.path.clone()),
                    interval_ms: Some(h.interval_ms),
                    timeout_ms: Some(h.timeout_ms),
                    healthy_threshold: Some(h.healthy_threshold),
                    unhealthy_threshold: Some(h.unhealthy_threshold),
                    panic_threshold_percent: Some(h.panic_threshold_percent),
                    grpc: h.grpc,
                }
            }),
            instances: v.instances.as_ref().map(|i| pb::Instances {
                tag: i.tag.clone().unwrap_or_default(),
                dns: i.dns.clone().unwrap_or_default(),
            }),
        }
    }
}

impl From<&m::Policy> for pb::Policy {
    fn from(p: &m::Policy) -> Self {
        pb::Policy {
            rules: p
                .rules
                .iter()
                .map(|r| pb::Rule {
                    name: r.name.clone(),
                    conditions: r.conditions.iter().map(condition_to_pb).collect(),
                    route: Some(route_to_pb(&r.route)),
                    mirror: r.mirror.as_ref().map(mirror_to_pb),
                })
                .collect(),
            default_route: p.default_route.as_ref().map(route_to_pb),
            default_mirror: p.default_mirror.as_ref().map(mirror_to_pb),
        }
    }
}

fn mirror_to_pb(m: &m::Mirror) -> pb::Mirror {
    pb::Mirror {
        version: m.version.clone(),
        weight: m.weight,
    }
}

fn mirror_from_pb(m: pb::Mirror) -> m::Mirror {
    m::Mirror {
        version: m.version,
        weight: m.weight,
    }
}

fn route_to_pb(r: &m::Route) -> pb::Route {
    use pb::route::Kind;
    pb::Route {
        kind: Some(match r {
            m::Route::Version(v) => Kind::Version(v.clone()),
            m::Route::Split(s) => Kind::Split(pb::Split {
                weights: s
                    .weights
                    .iter()
                    .map(|w| pb::Weight {
                        version: w.version.clone(),
                        weight: w.weight,
                    })
                    .collect(),
                sticky: s.sticky.as_ref().map(sticky_to_pb),
            }),
        }),
    }
}

pub(crate) fn sticky_to_pb(k: &m::StickyKey) -> pb::StickyKey {
    use pb::sticky_key::Kind as K;
    pb::StickyKey {
        kind: Some(match k {
            m::StickyKey::Cookie(c) => K::Cookie(c.clone()),
            m::StickyKey::Header(h) => K::Header(h.clone()),
            m::StickyKey::ClientIp => K::ClientIp(true),
        }),
    }
}

/// `None` for an unset key (and an error for `client_ip: false`, which says nothing).
pub(crate) fn sticky_from_pb(
    k: pb::StickyKey,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<m::StickyKey> {
    use pb::sticky_key::Kind as K;
    match k.kind {
        None => None,
        Some(K::Cookie(c)) => Some(m::StickyKey::Cookie(c)),
        Some(K::Header(h)) => Some(m::StickyKey::Header(h)),
        Some(K::ClientIp(true)) => Some(m::StickyKey::ClientIp),
        Some(K::ClientIp(false)) => {
            errors.push(FieldError::new(
                format!("{path}.client_ip"),
                "set client_ip to true, or leave the sticky key unset",
            ));
            None
        }
    }
}

fn condition_to_pb(c: &m::Condition) -> pb::Condition {
    use pb::condition::Kind;
    let field = |f: &m::FieldMatch| {
        use pb::field_match::Match;
        pb::FieldMatch {
            name: f.name.clone(),
            r#match: Some(match &f.op {
                m::MatchOp::Exact(v) => Match::Exact(v.clone()),
                m::MatchOp::Prefix(v) => Match::Prefix(v.clone()),
                m::MatchOp::Regex(v) => Match::Regex(v.clone()),
                m::MatchOp::Present => Match::Present(true),
                m::MatchOp::Absent => Match::Absent(true),
                m::MatchOp::OneOf(list) => Match::OneOf(pb::StringList {
                    values: list.clone(),
                }),
            }),
            negate: f.negate,
        }
    };
    let family = |f: &m::FamilyMatch| pb::FamilyMatch {
        family: f.family.clone(),
        min_version: f.min_version.clone(),
        max_version: f.max_version.clone(),
        negate: f.negate,
    };
    pb::Condition {
        kind: Some(match c {
            m::Condition::Header(f) => Kind::Header(field(f)),
            m::Condition::Cookie(f) => Kind::Cookie(field(f)),
            m::Condition::Query(f) => Kind::Query(field(f)),
            m::Condition::Os(f) => Kind::Os(family(f)),
            m::Condition::Browser(f) => Kind::Browser(family(f)),
            m::Condition::SourceIp(ip) => Kind::SourceIp(pb::CidrMatch {
                cidrs: ip.cidrs.clone(),
                negate: ip.negate,
            }),
        }),
    }
}

// ---------- wire → model ----------

/// `v` without spare capacity. prost grows a repeated field push by push (capacity 4 for
/// one or two elements) and collecting into a smaller element type reuses that allocation:
/// a service's two versions held room for five. A proxy keeps thousands of services for
/// its life, so what is kept is cut to size.
fn tight<T>(mut v: Vec<T>) -> Vec<T> {
    v.shrink_to_fit();
    v
}

/// Converts a wire service; paths are relative to the service (`versions[0].load_balance`).
pub fn service_from_pb(s: pb::Service) -> Result<m::Service, Invalid> {
    let mut errors = Vec::new();
    let versions = tight(
        s.versions
            .into_iter()
            .enumerate()
            .map(|(i, v)| version_inner(v, &format!("versions[{i}]"), &mut errors))
            .collect(),
    );
    let policy = s
        .policy
        .map(|p| policy_inner(p, "policy", &mut errors))
        .unwrap_or_default();
    let events = s
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| m::Event {
            statuses: e
                .statuses
                .iter()
                .enumerate()
                .filter_map(|(j, &status)| {
                    let narrow = u16::try_from(status).ok();
                    if narrow.is_none() {
                        errors.push(FieldError::new(
                            format!("events[{i}].statuses[{j}]"),
                            format!("{status} is not an HTTP status (100 to 599)"),
                        ));
                    }
                    narrow
                })
                .collect(),
            name: e.name,
        })
        .collect();
    Invalid::check(errors)?;
    Ok(m::Service {
        name: s.name,
        hosts: tight(s.hosts),
        path_prefix: if s.path_prefix.is_empty() {
            m::default_path_prefix()
        } else {
            s.path_prefix
        },
        versions,
        stable: s.stable,
        policy,
        lane_sources: tight(s.lane_sources),
        events,
    })
}

/// Converts a wire version; paths start with `path` (e.g. `version`).
pub fn version_from_pb(v: pb::Version, path: &str) -> Result<m::Version, Invalid> {
    let mut errors = Vec::new();
    let v = version_inner(v, path, &mut errors);
    Invalid::check(errors).map(|()| v)
}

/// Converts a wire policy; paths start with `policy`.
pub fn policy_from_pb(p: pb::Policy) -> Result<m::Policy, Invalid> {
    let mut errors = Vec::new();
    let p = policy_inner(p, "policy", &mut errors);
    Invalid::check(errors).map(|()| p)
}

fn version_inner(v: pb::Version, path: &str, errors: &mut Vec<FieldError>) -> m::Version {
    let load_balance = match pb::LoadBalance::try_from(v.load_balance) {
        Ok(pb::LoadBalance::RoundRobin) => m::LoadBalance::RoundRobin,
        Ok(pb::LoadBalance::Random) => m::LoadBalance::Random,
        Ok(pb::LoadBalance::SessionSticky) => m::LoadBalance::SessionSticky,
        Err(_) => {
            errors.push(FieldError::new(
                format!("{path}.load_balance"),
                format!("unknown load balancing strategy {}", v.load_balance),
            ));
            m::LoadBalance::default()
        }
    };
    let defaults = m::Breaker::default();
    let breaker = v.breaker.map_or(defaults.clone(), |b| m::Breaker {
        enabled: b.enabled.unwrap_or(defaults.enabled),
        error_threshold_percent: b
            .error_threshold_percent
            .unwrap_or(defaults.error_threshold_percent),
        request_volume: b.request_volume.unwrap_or(defaults.request_volume),
        sleep_window_ms: b.sleep_window_ms.unwrap_or(defaults.sleep_window_ms),
        window_ms: b.window_ms.unwrap_or(defaults.window_ms),
        force_open: b.force_open,
        force_closed: b.force_closed,
    });
    let fallback = match v.fallback.map(|f| pb::FallbackPolicy::try_from(f.policy)) {
        None | Some(Ok(pb::FallbackPolicy::Fail)) => m::FallbackPolicy::Fail,
        Some(Ok(pb::FallbackPolicy::ReturnEmpty)) => m::FallbackPolicy::ReturnEmpty,
        Some(Err(e)) => {
            errors.push(FieldError::new(
                format!("{path}.fallback.policy"),
                format!("unknown fallback policy {}", e.0),
            ));
            m::FallbackPolicy::Fail
        }
    };
    let od = m::OutlierDetection::default();
    let outlier_detection = v
        .outlier_detection
        .map_or(od.clone(), |o| m::OutlierDetection {
            enabled: o.enabled.unwrap_or(od.enabled),
            consecutive_failures: o.consecutive_failures.unwrap_or(od.consecutive_failures),
            base_ejection_ms: o.base_ejection_ms.unwrap_or(od.base_ejection_ms),
            max_ejection_ms: o.max_ejection_ms.unwrap_or(od.max_ejection_ms),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(od.max_ejection_percent),
        });
    let rd = m::Retry::default();
    let retry = v.retry.map_or(rd.clone(), |r| m::Retry {
        attempts: r.attempts,
        per_try_timeout_ms: r.per_try_timeout_ms,
        budget_percent: r.budget_percent.unwrap_or(rd.budget_percent),
    });
    let protocol = match pb::Protocol::try_from(v.protocol) {
        Ok(pb::Protocol::Http1) => m::Protocol::Http1,
        Ok(pb::Protocol::H2c) => m::Protocol::H2c,
        Ok(pb::Protocol::Auto) => m::Protocol::Auto,
        Ok(pb::Protocol::H2) => m::Protocol::H2,
        Ok(pb::Protocol::Http1Tls | pb::Protocol::AutoTls) if v.tls.is_none() => {
            errors.push(FieldError::new(
                format!("{path}.protocol"),
                "a TLS protocol value needs `tls`",
            ));
            m::Protocol::default()
        }
        Ok(pb::Protocol::Http1Tls) => m::Protocol::Http1,
        Ok(pb::Protocol::AutoTls) => m::Protocol::Auto,
        Err(_) => {
            errors.push(FieldError::new(
                format!("{path}.protocol"),
                format!("unknown protocol {}", v.protocol),
            ));
            m::Protocol::default()
        }
    };
    let ml = m::MirrorLimits::default();
    let mirror_limits = v.mirror_limits.map_or(ml.clone(), |l| m::MirrorLimits {
        max_in_flight: l.max_in_flight.unwrap_or(ml.max_in_flight),
        max_body_bytes: l.max_body_bytes.unwrap_or(ml.max_body_bytes),
    });
    let hd = m::HealthCheck::default();
    let health_check = v.health_check.map_or(hd.clone(), |h| m::HealthCheck {
        enabled: h.enabled,
        path: h.path.unwrap_or(hd.path),
        interval_ms: h.interval_ms.unwrap_or(hd.interval_ms),
        timeout_ms: h.timeout_ms.unwrap_or(hd.timeout_ms),
        healthy_threshold: h.healthy_threshold.unwrap_or(hd.healthy_threshold),
        unhealthy_threshold: h.unhealthy_threshold.unwrap_or(hd.unhealthy_threshold),
        panic_threshold_percent: h
            .panic_threshold_percent
            .unwrap_or(hd.panic_threshold_percent),
        grpc: h.grpc,
    });
    m::Version {
        name: v.name,
        endpoints: tight(v.endpoints),
        health_check,
        instances: v.instances.map(|i| m::Instances {
            tag: Some(i.tag).filter(|t| !t.is_empty()),
            dns: Some(i.dns).filter(|d| !d.is_empty()),
        }),
        load_balance,
        timeout_ms: v.timeout_ms.unwrap_or_else(m::default_timeout_ms),
        max_concurrent: v.max_concurrent,
        breaker,
        fallback: m::Fallback { policy: fallback },
        outlier_detection,
        retry,
        protocol,
        tls: v.tls.map(|t| m::UpstreamTls {
            ca: t.ca,
            server_name: t.server_name,
            client_cert: t.client_cert,
            client_key: t.client_key,
        }),
        lane: v.lane,
        mirror_limits,
    }
}

fn policy_inner(p: pb::Policy, path: &str, errors: &mut Vec<FieldError>) -> m::Policy {
    let rules = p
        .rules
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let rp = format!("{path}.rules[{i}]");
            let conditions: Vec<_> = r
                .conditions
                .into_iter()
                .enumerate()
                .filter_map(|(j, c)| condition_inner(c, &format!("{rp}.conditions[{j}]"), errors))
                .collect();
            let route = route_inner(r.route, &format!("{rp}.route"), errors)?;
            Some(m::Rule {
                name: r.name,
                conditions: tight(conditions),
                route,
                mirror: r.mirror.map(mirror_from_pb),
            })
        })
        .collect();
    let rules = tight(rules);
    let default_route = match p.default_route {
        None | Some(pb::Route { kind: None }) => None,
        Some(r) => route_inner(Some(r), &format!("{path}.default_route"), errors),
    };
    m::Policy {
        rules,
        default_route,
        default_mirror: p.default_mirror.map(mirror_from_pb),
    }
}

fn route_inner(r: Option<pb::Route>, path: &str, errors: &mut Vec<FieldError>) -> Option<m::Route> {
    use pb::route::Kind;
    match r.and_then(|r| r.kind) {
        None => {
            errors.push(FieldError::new(
                path,
                "a route must name a version or a split",
            ));
            None
        }
        Some(Kind::Version(v)) => Some(m::Route::Version(v)),
        Some(Kind::Split(s)) => {
            let sticky = s
                .sticky
                .and_then(|k| sticky_from_pb(k, &format!("{path}.split.sticky"), errors));
            Some(m::Route::Split(m::Split {
                weights: tight(
                    s.weights
                        .into_iter()
                        .map(|w| m::Weight {
                            version: w.version,
                            weight: w.weight,
                        })
                        .collect(),
                ),
                sticky,
            }))
        }
    }
}

fn condition_inner(
    c: pb::Condition,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<m::Condition> {
    use pb::condition::Kind;
    let family = |f: pb::FamilyMatch| m::FamilyMatch {
        family: f.family,
        min_version: f.min_version,
        max_version: f.max_version,
        negate: f.negate,
    };
    Some(match c.kind {
        None => {
            errors.push(FieldError::new(
                path,
                "a condition must be one of header, cookie, query, os, browser, source_ip",
            ));
            return None;
        }
        Some(Kind::Header(f)) => {
            m::Condition::Header(field_inner(f, &format!("{path}.header"), errors)?)
        }
        Some(Kind::Cookie(f)) => {
            m::Condition::Cookie(field_inner(f, &format!("{path}.cookie"), errors)?)
        }
        Some(Kind::Query(f)) => {
            m::Condition::Query(field_inner(f, &format!("{path}.query"), errors)?)
        }
        Some(Kind::Os(f)) => m::Condition::Os(family(f)),
        Some(Kind::Browser(f)) => m::Condition::Browser(family(f)),
        Some(Kind::SourceIp(ip)) => m::Condition::SourceIp(m::CidrMatch {
            cidrs: ip.cidrs,
            negate: ip.negate,
        }),
    })
}

fn field_inner(
    f: pb::FieldMatch,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<m::FieldMatch> {
    use pb::field_match::Match;
    let op = match f.r#match {
        Some(Match::Exact(v)) => m::MatchOp::Exact(v),
        Some(Match::Prefix(v)) => m::MatchOp::Prefix(v),
        Some(Match::Regex(v)) => m::MatchOp::Regex(v),
        Some(Match::Present(true)) => m::MatchOp::Present,
        Some(Match::Absent(true)) => m::MatchOp::Absent,
        Some(Match::OneOf(list)) => m::MatchOp::OneOf(tight(list.values)),
        Some(Match::Present(false)) | Some(Match::Absent(false)) | None => {
            errors.push(FieldError::new(
                format!("{path}.match"),
                "choose one operator: exact, prefix, regex, present, absent or one_of",
            ));
            return None;
        }
    };
    Some(m::FieldMatch {
        name: f.name,
        op,
        negate: f.negate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rich_service() -> m::Service {
        let json = r#"{
          "name": "shop", "hosts": ["shop.example.com"], "path_prefix": "/api",
          "versions": [
            {"name": "v1", "endpoints": ["127.0.0.1:9001"]},
            {"name": "v2", "endpoints": ["127.0.0.1:9002", "[::1]:9003"], "load_balance": "session_sticky",
             "timeout_ms": 500, "max_concurrent": 7,
             "breaker": {"enabled": true, "error_threshold_percent": 10, "request_volume": 5,
                         "sleep_window_ms": 1000, "window_ms": 2000, "force_open": false, "force_closed": true},
             "fallback": {"policy": "return_empty"},
             "outlier_detection": {"enabled": false, "consecutive_failures": 3, "base_ejection_ms": 500,
                                   "max_ejection_ms": 9000, "max_ejection_percent": 34},
             "retry": {"attempts": 2, "per_try_timeout_ms": 200, "budget_percent": 10},
             "protocol": "h2c", "lane": "gray",
             "mirror_limits": {"max_in_flight": 9, "max_body_bytes": 1024}},
            {"name": "v3", "endpoints": ["127.0.0.1:9004"], "protocol": "auto"},
            {"name": "v4", "endpoints": ["127.0.0.1:9005"], "protocol": "h2",
             "tls": {"ca": "/etc/ca.pem", "server_name": "shop-v4.internal",
                     "client_cert": "/etc/proxy.pem", "client_key": "/etc/proxy.key"}},
            {"name": "v5", "endpoints": ["127.0.0.1:9006"], "tls": {"ca": "/etc/ca.pem"}},
            {"name": "v6", "endpoints": ["127.0.0.1:9007"], "protocol": "auto", "tls": {}}
          ],
          "lane_sources": ["10.0.0.0/8", "192.0.2.7"],
          "events": [{"name": "checkout_failed", "statuses": [409, 429]}, {"name": "paid"}],
          "stable": "v1",
          "policy": {
            "rules": [
              {"name": "r", "conditions": [
                {"header": {"name": "x", "match": {"exact": "1"}}},
                {"cookie": {"name": "c", "match": {"prefix": "a"}, "negate": true}},
                {"query": {"name": "q", "match": {"regex": "^b"}}},
                {"header": {"name": "y", "match": "present"}},
                {"header": {"name": "z", "match": "absent"}},
                {"cookie": {"name": "t", "match": {"one_of": ["gold", "silver"]}}},
                {"os": {"family": "android", "min_version": "10"}},
                {"browser": {"family": "chrome", "max_version": "120", "negate": true}},
                {"source_ip": {"cidrs": ["10.0.0.0/8"]}}
              ], "route": {"version": "v2"}, "mirror": {"version": "v3", "weight": 10000}}
            ],
            "default_route": {"split": {"weights": [{"version": "v1", "weight": 9000}, {"version": "v2", "weight": 1000}],
                                        "sticky": "client_ip"}},
            "default_mirror": {"version": "v3", "weight": 250}
          }
        }"#;
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let s = rich_service();
        grayline_routing::CompiledService::compile(&s).expect("the sample is valid");
        let back = service_from_pb(pb::Service::from(&s)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn digests_survive_the_wire_and_see_any_change() {
        let s = rich_service();
        let back = service_from_pb(pb::Service::from(&s)).unwrap();
        assert_eq!(crate::digest(&back), crate::digest(&s));
        assert_eq!(crate::digest(&s.clone()), crate::digest(&s));
        let mut changed = s.clone();
        changed.versions[0].timeout_ms += 1;
        assert_ne!(crate::digest(&changed), crate::digest(&s));
        let mut renamed = s.clone();
        renamed.hosts.push("another.example".into());
        assert_ne!(crate::digest(&renamed), crate::digest(&s));
    }

    #[test]
    fn unset_wire_fields_take_model_defaults() {
        let v = version_from_pb(
            pb::Version {
                name: "v1".into(),
                endpoints: vec!["h:1".into()],
                ..Default::default()
            },
            "version",
        )
        .unwrap();
        assert_eq!(v, m::Version::new("v1", &["h:1"]));
        let s = service_from_pb(pb::Service {
            name: "s".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.path_prefix, "/");
        assert_eq!(s.policy, m::Policy::default());
    }

    #[test]
    fn structural_errors_name_fields() {
        let p = pb::Policy {
            rules: vec![pb::Rule {
                name: String::new(),
                conditions: vec![
                    pb::Condition { kind: None },
                    pb::Condition {
                        kind: Some(pb::condition::Kind::Header(pb::FieldMatch {
                            name: "x".into(),
                            r#match: None,
                            negate: false,
                        })),
                    },
                ],
                route: None,
                mirror: None,
            }],
            default_route: None,
            default_mirror: None,
        };
        let err = policy_from_pb(p).unwrap_err();
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "policy.rules[0].conditions[0]",
                "policy.rules[0].conditions[1].header.match",
                "policy.rules[0].route"
            ]
        );
        let err = version_from_pb(
            pb::Version {
                load_balance: 42,
                protocol: 7,
                ..Default::default()
            },
            "version",
        )
        .unwrap_err();
        let fields: Vec<&str> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["version.load_balance", "version.protocol"]);
    }

    #[test]
    fn a_version_with_tls_goes_out_with_a_protocol_value_older_proxies_refuse() {
        let mut v = m::Version::new("v1", &["127.0.0.1:9001"]);
        v.tls = Some(m::UpstreamTls::default());
        assert_eq!(
            pb::Version::from(&v).protocol,
            pb::Protocol::Http1Tls as i32
        );
        v.protocol = m::Protocol::Auto;
        assert_eq!(pb::Version::from(&v).protocol, pb::Protocol::AutoTls as i32);
        v.tls = None;
        assert_eq!(pb::Version::from(&v).protocol, pb::Protocol::Auto as i32);
        // The TLS value without `tls` is refused, naming the field.
        let mut wire = pb::Version::from(&m::Version::new("v1", &["127.0.0.1:9001"]));
        wire.protocol = pb::Protocol::Http1Tls as i32;
        let mut errors = Vec::new();
        version_inner(wire, "versions[0]", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "versions[0].protocol");
    }
}
