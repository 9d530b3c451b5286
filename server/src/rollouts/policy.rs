//! What a rollout makes of its service at each decision: the canary at a weight (a sticky
//! split of baseline and canary after the service's own rules), promoted, or rolled back (the
//! baseline alone, and no rule left that sends traffic to the canary).
//!
//! Each is computed from the service as it is now, so a rule someone added during the rollout
//! stays, and applying the same decision twice writes nothing the second time.

use grayline_rollout::Rollout;
use grayline_routing::{Policy, Route, Service, Split, Weight};

use crate::store::Action;

/// The canary at `weight` basis points, the baseline with the rest.
pub fn at_weight(s: &Service, r: &Rollout, weight: u32) -> Service {
    let mut s = s.clone();
    s.policy.default_route = Some(Route::Split(Split {
        weights: vec![
            Weight {
                version: r.baseline.clone(),
                weight: 10_000 - weight,
            },
            Weight {
                version: r.plan.canary.clone(),
                weight,
            },
        ],
        sticky: Some(r.sticky.clone()),
    }));
    s
}

/// All traffic to the baseline.
pub fn rolled_back(s: &Service, r: &Rollout) -> Service {
    let mut s = s.clone();
    let canary = r.plan.canary.as_str();
    let mentions = |route: &Route| match route {
        Route::Version(v) => v == canary,
        Route::Split(split) => split.weights.iter().any(|w| w.version == canary),
    };
    s.policy.rules.retain(|rule| !mentions(&rule.route));
    s.policy.default_route = Some(Route::Version(r.baseline.clone()));
    s
}

/// The canary stable with all traffic, as the config API's promote does.
pub fn promoted(s: &Service, r: &Rollout) -> Service {
    let mut s = s.clone();
    s.stable = r.plan.canary.clone();
    s.policy = Policy::default();
    s
}

/// The history entry's action for a decision.
pub fn action(promote: bool) -> Action {
    if promote {
        Action::Promote
    } else {
        Action::SetPolicy
    }
}

/// Who a rollout's writes are recorded as.
pub fn actor(id: u64) -> String {
    format!("rollout {id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_rollout::Plan;
    use grayline_routing::{Condition, FieldMatch, MatchOp, Rule, StickyKey, Version};

    fn service() -> Service {
        let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        s.versions.push(Version::new("v2", &["127.0.0.1:2"]));
        s.versions.push(Version::new("v3", &["127.0.0.1:3"]));
        let rule = |v: &str| Rule {
            name: String::new(),
            conditions: vec![Condition::Header(FieldMatch {
                name: "x-test".into(),
                op: MatchOp::Present,
                negate: false,
            })],
            route: Route::Version(v.into()),
            mirror: None,
        };
        s.policy.rules = vec![rule("v2"), rule("v3")];
        s
    }

    fn rollout() -> Rollout {
        let plan = Plan::through("shop", "v2", &[500]);
        Rollout::start(4, plan, "v1", StickyKey::Cookie("uid".into()), "a", 0, None).0
    }

    #[test]
    fn weights_rollback_and_promotion() {
        let (s, r) = (service(), rollout());
        let w = at_weight(&s, &r, 500);
        assert_eq!(w.policy.rules, s.policy.rules, "the service's rules stay");
        let Some(Route::Split(split)) = &w.policy.default_route else {
            panic!()
        };
        assert_eq!(split.weights[0].weight + split.weights[1].weight, 10_000);
        assert_eq!(split.sticky, Some(StickyKey::Cookie("uid".into())));
        assert_eq!(at_weight(&w, &r, 500), w, "applying twice changes nothing");
        grayline_routing::CompiledService::compile(&w).unwrap();

        let back = rolled_back(&w, &r);
        assert_eq!(back.policy.rules.len(), 1, "the rule to the canary is gone");
        assert_eq!(back.policy.default_route, Some(Route::Version("v1".into())));
        assert!(!back.version_references().iter().any(|(_, v)| *v == "v2"));

        let p = promoted(&w, &r);
        assert_eq!((p.stable.as_str(), p.policy.rules.len()), ("v2", 0));
        assert_eq!(actor(4), "rollout 4");
    }
}
