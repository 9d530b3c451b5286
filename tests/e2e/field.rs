//! Rollouts as the field runs them, compressed to fit a test: eight services rolling out at
//! once behind one real proxy, each with two real upstreams and its own sticky-cookie traffic
//! (a new user on every request). Healthy canaries, two outages shared by both versions (one
//! that opens every breaker), 3× and 10× error regressions, a latency regression, and a
//! service with too little traffic to show safety. `bench/field-rollouts` runs the same at
//! the field's own rates and step lengths.

use std::time::Duration;

use grayline_tests::field::{self, Case, Expect, SharedOutage};
use serde_json::{Value, json};

/// Two steps, judged every second at α = 0.1 % (so four healthy canaries stay clear of a
/// false rollback by chance in all but one run in a thousand); a step is safe once 3× the
/// baseline's errors and 1.5× its latency are ruled out.
fn plan() -> Value {
    json!({
        "alpha": 0.001,
        "warmup_seconds": 3,
        "steps": [
            {"weight": 2500, "min_seconds": 5, "min_requests": 50, "max_seconds": 60},
            {"weight": 5000, "min_seconds": 5, "min_requests": 50, "max_seconds": 60},
        ],
        "gates": {"latency": {"quantile": 0.9}},
        "detect": {"errors": "3x", "latency": "1.5x"},
    })
}

fn seed() -> u64 {
    let seed = std::env::var("GRAYLINE_FIELD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_205);
    println!("GRAYLINE_FIELD_SEED={seed}");
    seed
}

#[tokio::test]
async fn rollouts_decide_right_with_many_services_shared_outages_and_thin_traffic() {
    let (rps, errors) = (100.0, 0.05);
    let outage = |error_rate: f64| SharedOutage {
        start: 4,
        seconds: 15,
        error_rate,
    };
    let mut thin = plan();
    for s in thin["steps"].as_array_mut().unwrap() {
        s["max_seconds"] = json!(8);
        s["min_requests"] = json!(5);
    }
    let cases = vec![
        Case::healthy("healthy-a", rps, errors, plan()),
        Case::healthy("healthy-b", rps, errors, plan()),
        Case {
            outage: Some(outage(0.4)),
            ..Case::healthy("shared-outage-40", rps, errors, plan())
        },
        Case {
            outage: Some(outage(0.9)),
            ..Case::healthy("shared-outage-90", rps, errors, plan())
        },
        Case::errors("errors-3x", rps, errors, 0.15, plan()),
        Case::errors("errors-10x", rps, errors, 0.5, plan()),
        Case::slower("latency-plus-20ms", rps, errors, 20, plan()),
        Case::healthy("thin-traffic", 5.0, 0.01, thin),
    ];
    let out = field::run(&cases, seed(), Duration::from_secs(150)).await;
    println!("{}", field::report(&out));
    let by = |name: &str| out.iter().find(|o| o.case == name).unwrap();

    for o in &out {
        assert!(!o.false_rollback(), "{}: rolled back: {}", o.case, o.reason);
        assert!(!o.wrong_promotion(), "{}: promoted: {}", o.case, o.reason);
        assert!(
            !o.promoted() || o.promotion == "evidence",
            "{}: promoted without safety shown: {}",
            o.case,
            o.reason
        );
    }
    // At least one healthy canary earns its promotion within its minute (healthy-a, -b and
    // the shared outages' alike: on a loaded machine a latency gate may need longer than
    // the step's limit, and then that canary pauses, as it should).
    let earned = out
        .iter()
        .filter(|o| o.expect == Expect::Healthy && o.promoted())
        .count();
    assert!(earned >= 1, "no healthy canary earned its promotion");
    for gross in ["errors-10x", "latency-plus-20ms"] {
        assert!(by(gross).rolled_back(), "{gross}: {}", by(gross).reason);
    }
    // An outage that opens both versions' breakers: their fallbacks are counted apart, never
    // judged, and the canary is not rolled back for them.
    assert!(
        by("shared-outage-90").fallbacks > 0,
        "{:?}",
        by("shared-outage-90")
    );
    // Too little traffic to show safety: the last step pauses and says what it lacks.
    let thin = by("thin-traffic");
    assert_eq!(thin.phase, "paused", "{thin:?}");
    assert!(
        thin.reason
            .contains("a promotion needs every gate shown safe")
            && thin.reason.contains("more at this step's traffic"),
        "{}",
        thin.reason
    );
}
