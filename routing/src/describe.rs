//! A policy in plain words, for the console's review step, the simulator and history.

use crate::engine::{Decision, Lane, Matched, Sticky, percent};
use crate::model::*;

/// One line per rule, then the default route, e.g.
/// `1. "beta": if header x-canary is "1" → v2` and `Otherwise → 90 % to v1, 10 % to v2`.
pub fn policy(service: &Service) -> Vec<String> {
    let mut lines: Vec<String> = service
        .policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let label = if rule.name.is_empty() {
                String::new()
            } else {
                format!(" \"{}\"", rule.name)
            };
            let conditions: Vec<String> = rule.conditions.iter().map(condition).collect();
            format!(
                "{}.{label} If {} → {}{}",
                i + 1,
                conditions.join(" and "),
                route(&rule.route),
                mirror(rule.mirror.as_ref())
            )
        })
        .collect();
    let default = match &service.policy.default_route {
        Some(r) => route(r),
        None => format!("{} (stable)", service.stable),
    } + &mirror(service.policy.default_mirror.as_ref());
    let lead = if lines.is_empty() {
        "All traffic"
    } else {
        "Otherwise"
    };
    lines.push(format!("{lead} → {default}"));
    let mut lanes: Vec<(&str, &str)> = service
        .versions
        .iter()
        .filter(|v| !v.lane.is_empty())
        .map(|v| (v.lane.as_str(), v.name.as_str()))
        .collect();
    if !lanes.is_empty() {
        lanes.sort();
        let list: Vec<String> = lanes
            .iter()
            .map(|(lane, v)| format!("lane {lane} → {v}"))
            .collect();
        lines.insert(
            0,
            format!(
                "Requests in a lane go to its version first: {}",
                list.join(", ")
            ),
        );
    }
    lines
}

/// `, and a copy of 10 % to v2` for a mirror; empty for none.
fn mirror(m: Option<&Mirror>) -> String {
    match m {
        Some(m) if m.weight > 0 => format!(
            ", and a copy of {} to {} (mirrored)",
            percent(u64::from(m.weight)),
            m.version
        ),
        _ => String::new(),
    }
}

pub fn route(r: &Route) -> String {
    match r {
        Route::Version(v) => v.clone(),
        Route::Split(split) => {
            let parts: Vec<String> = split
                .weights
                .iter()
                .map(|w| format!("{} to {}", percent(u64::from(w.weight)), w.version))
                .collect();
            let sticky = match &split.sticky {
                None => String::new(),
                Some(StickyKey::Cookie(c)) => format!(", sticky by cookie {c}"),
                Some(StickyKey::Header(h)) => format!(", sticky by header {h}"),
                Some(StickyKey::ClientIp) => ", sticky by client IP".to_string(),
            };
            format!("{}{sticky}", parts.join(", "))
        }
    }
}

pub fn condition(c: &Condition) -> String {
    match c {
        Condition::Header(m) => field("header", m),
        Condition::Cookie(m) => field("cookie", m),
        Condition::Query(m) => field("query parameter", m),
        Condition::Os(m) => family("OS", m),
        Condition::Browser(m) => family("browser", m),
        Condition::SourceIp(m) => format!(
            "client IP is {}in {}",
            if m.negate { "not " } else { "" },
            m.cidrs.join(", ")
        ),
    }
}

fn field(kind: &str, m: &FieldMatch) -> String {
    let not = if m.negate { "not " } else { "" };
    let test = match &m.op {
        MatchOp::Exact(v) => format!("is {not}\"{v}\""),
        MatchOp::Prefix(v) => format!("does {not}start with \"{v}\""),
        MatchOp::Regex(v) => format!("does {not}match /{v}/"),
        MatchOp::Present if m.negate => "is absent".to_string(),
        MatchOp::Present => "is present".to_string(),
        MatchOp::Absent if m.negate => "is present".to_string(),
        MatchOp::Absent => "is absent".to_string(),
        MatchOp::OneOf(list) => format!(
            "is {not}one of {}",
            list.iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("{kind} {} {test}", m.name)
}

fn family(kind: &str, m: &FamilyMatch) -> String {
    let range = match (m.min_version.as_str(), m.max_version.as_str()) {
        ("", "") => String::new(),
        (min, "") => format!(" {min} or later"),
        ("", max) => format!(" {max} or earlier"),
        (min, max) if min == max => format!(" {min}"),
        (min, max) => format!(" {min} to {max}"),
    };
    format!(
        "{kind} is {}{}{range}",
        if m.negate { "not " } else { "" },
        m.family
    )
}

/// Why a decision came out as it did, e.g. `rule 2 "beta" matched` or
/// `default route, bucket 8123 of 10000 (sticky by cookie uid)`.
pub fn decision(service: &Service, d: &Decision<'_>) -> String {
    let mut out = match d.matched {
        Matched::Rule(i) => {
            let name = &service.policy.rules[i].name;
            if name.is_empty() {
                format!("rule {} matched", i + 1)
            } else {
                format!("rule {} \"{name}\" matched", i + 1)
            }
        }
        Matched::Default if service.policy.default_route.is_none() => {
            "no rule matched; the stable version takes the rest".to_string()
        }
        Matched::Default => "no rule matched; the default route decided".to_string(),
        Matched::Lane => format!(
            "the request is in lane {}, which {} serves",
            service.versions[d.version].lane, d.version_name
        ),
    };
    if let Some(bucket) = d.bucket {
        let how = match d.sticky {
            Sticky::No => "random".to_string(),
            Sticky::Key(k) => format!("sticky by {}", key(k)),
            Sticky::MissingKey(k) => format!("random: the request has no {}", key(k)),
        };
        out.push_str(&format!(", bucket {bucket} of 10000 ({how})"));
    }
    if let Some(m) = d.mirror {
        out.push_str(&format!(
            "; a copy goes to {} (mirrored, its answer discarded)",
            service.versions[m].name
        ));
    }
    if let Lane::Entered(lane) = d.lane {
        out.push_str(&format!("; it enters lane {lane}"));
    }
    out
}

fn key(k: &StickyKey) -> String {
    match k {
        StickyKey::Cookie(c) => format!("cookie {c}"),
        StickyKey::Header(h) => format!("header {h}"),
        StickyKey::ClientIp => "client IP".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CompiledService;
    use crate::request::RequestFacts;

    #[test]
    fn describes_rules_and_default() {
        let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        s.versions.push(Version::new("v2", &["127.0.0.1:2"]));
        assert_eq!(policy(&s), ["All traffic → v1 (stable)"]);
        s.policy.rules.push(Rule {
            name: "beta".into(),
            conditions: vec![
                Condition::Header(FieldMatch {
                    name: "x-canary".into(),
                    op: MatchOp::Exact("1".into()),
                    negate: false,
                }),
                Condition::Os(FamilyMatch {
                    family: "android".into(),
                    min_version: "10".into(),
                    max_version: String::new(),
                    negate: false,
                }),
            ],
            route: Route::Version("v2".into()),
            mirror: None,
        });
        s.policy.default_route = Some(Route::Split(Split {
            weights: vec![
                Weight {
                    version: "v1".into(),
                    weight: 9000,
                },
                Weight {
                    version: "v2".into(),
                    weight: 1000,
                },
            ],
            sticky: Some(StickyKey::Cookie("uid".into())),
        }));
        assert_eq!(
            policy(&s),
            [
                "1. \"beta\" If header x-canary is \"1\" and OS is android 10 or later → v2",
                "Otherwise → 90 % to v1, 10 % to v2, sticky by cookie uid",
            ]
        );
        let c = CompiledService::compile(&s).unwrap();
        let d = c.decide(&RequestFacts::default(), 42);
        assert_eq!(
            decision(&s, &d),
            "no rule matched; the default route decided, bucket 42 of 10000 (random: the request has no cookie uid)"
        );
    }

    #[test]
    fn describes_mirrors_and_lanes() {
        let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        let mut v2 = Version::new("v2", &["127.0.0.1:2"]);
        v2.lane = "gray".into();
        s.versions.push(v2);
        s.policy.default_mirror = Some(Mirror {
            version: "v2".into(),
            weight: 500,
        });
        assert_eq!(
            policy(&s),
            [
                "Requests in a lane go to its version first: lane gray → v2",
                "All traffic → v1 (stable), and a copy of 5 % to v2 (mirrored)",
            ]
        );
        let c = CompiledService::compile(&s).unwrap();
        let d = c.decide(&RequestFacts::default().with_lane("gray"), 0);
        assert_eq!(
            decision(&s, &d),
            "the request is in lane gray, which v2 serves"
        );
        s.policy.default_mirror.as_mut().unwrap().weight = 10_000;
        let c = CompiledService::compile(&s).unwrap();
        let d = c.decide(&RequestFacts::default(), 0);
        assert_eq!(
            decision(&s, &d),
            "no rule matched; the stable version takes the rest; a copy goes to v2 (mirrored, its answer discarded)"
        );
    }
}
