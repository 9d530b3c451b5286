//! Metric gates simulated: five gates at once (the built-in error and latency gates, and
//! three metric gates — payment declines, checkout conversions, queue lag), each looked at
//! every second, over a thousand healthy rollouts at a time: false rollbacks stay below the
//! plan's one α, also when a dependency outage moves every metric of both versions at once,
//! and when every metric sits exactly at its tolerated limit. Then how fast a conversion drop
//! of 10 % and 20 %, and a 50 % rise of a value, are rolled back.
//!
//! Seeded: set `GRAYLINE_SIM_SEED` to rerun another sample; the seed is printed. The figures
//! printed are the ones in docs/rollouts.md.

mod common;

use common::{LIMIT, harmful_batch, healthy_batch, staged_plan};
use grayline_rollout::plan::{MetricGate, MetricKind};
use grayline_rollout::sim::{Metric, Outage, Outcome, Scenario, Shift, run_with_metrics};
use grayline_rollout::{Mode, Plan};

fn seed() -> u64 {
    common::seed(20_261_206)
}

fn gate(name: &str, kind: MetricKind, tolerated: f64, detect: f64) -> MetricGate {
    let exposure = kind.counts().then(|| {
        format!("sum(increase({name}_exposures{{version=\"{{{{version}}}}\"}}[{{{{interval}}}}]))")
    });
    MetricGate {
        name: name.into(),
        kind,
        query: format!("sum(increase({name}{{version=\"{{{{version}}}}\"}}[{{{{interval}}}}]))"),
        exposure,
        interval_seconds: 1,
        tolerated_ratio: tolerated,
        min_difference: 0.0,
        detect: Some(detect),
        no_data_seconds: 600,
        mode: Mode::Enforce,
    }
}

/// 5 %, 20 %, 50 %, then promotion, each step one to five minutes, judged by five gates.
fn plan() -> Plan {
    let mut plan = staged_plan();
    plan.gates.metrics = vec![
        gate("declines", MetricKind::BadEvents, 1.2, 1.5),
        gate("conversions", MetricKind::GoodEvents, 1.05, 1.25),
        gate("queue_lag", MetricKind::BadValue, 1.2, 1.5),
    ];
    assert_eq!(plan.enforced_gates(), 5);
    plan
}

/// The application's metrics with the canary's effects on each (1: none).
fn metrics(
    declines: f64,
    conversions: f64,
    lag: f64,
    shifts: &[Shift],
) -> Vec<(Metric, Vec<Shift>)> {
    vec![
        (
            Metric::Events {
                per_second: 50.0,
                rate: 0.02,
                effect: declines,
            },
            shifts.to_vec(),
        ),
        (
            Metric::Events {
                per_second: 100.0,
                rate: 0.3,
                effect: conversions,
            },
            // A shared outage cuts conversions instead of raising them.
            shifts
                .iter()
                .map(|s| Shift {
                    factor: 1.0 / s.factor,
                    ..*s
                })
                .collect(),
        ),
        (
            Metric::Value {
                level: 100.0,
                noise: 0.1,
                effect: lag,
            },
            shifts.to_vec(),
        ),
    ]
}

fn outcomes(
    scenario: &Scenario,
    metrics: &[(Metric, Vec<Shift>)],
    runs: u64,
    seed: u64,
) -> Vec<Outcome> {
    outcomes_of(&plan(), scenario, metrics, runs, seed)
}

fn outcomes_of(
    plan: &Plan,
    scenario: &Scenario,
    metrics: &[(Metric, Vec<Shift>)],
    runs: u64,
    seed: u64,
) -> Vec<Outcome> {
    (0..runs)
        .map(|i| run_with_metrics(plan, scenario, metrics, seed.wrapping_add(i), LIMIT))
        .collect()
}

#[test]
fn five_gates_looked_at_every_second_keep_false_rollbacks_below_one_alpha() {
    let seed = seed();
    let healthy = Scenario::healthy(100.0, 0.01);
    let mut outage = Scenario::healthy(100.0, 0.01);
    // A dependency both versions call fails for a minute: errors jump, declines triple,
    // conversions fall to a third and the queue lag triples, for both at once.
    outage.world.outages = vec![Outage {
        start: 200,
        seconds: 60,
        error_rate: 0.2,
    }];
    let shared = [Shift {
        start: 200,
        seconds: 60,
        factor: 3.0,
    }];
    let cases = [
        (
            "as good as the baseline",
            &healthy,
            metrics(1.0, 1.0, 1.0, &[]),
            1000,
        ),
        (
            "a shared outage hits both",
            &outage,
            metrics(1.0, 1.0, 1.0, &shared),
            600,
        ),
        // Declines 1.2×, conversions / 1.05, lag 1.2×: each at its tolerated limit.
        (
            "every metric at its tolerated limit",
            &healthy,
            metrics(1.2, 1.0 / 1.05, 1.2, &[]),
            600,
        ),
    ];
    for (name, scenario, metrics, runs) in cases {
        let out = outcomes(scenario, &metrics, runs, seed);
        healthy_batch(name, &out);
    }
}

#[test]
fn metric_regressions_are_rolled_back_and_we_say_how_fast() {
    let seed = seed();
    let healthy = Scenario::healthy(100.0, 0.01);
    // A plan that must catch a 10 % drop says so: safety only below 1.1× (1 / 0.9 = 1.11).
    let mut strict = plan();
    strict.gates.metrics[1].detect = Some(1.1);
    let cases = [
        (
            "conversions 10 % lower",
            plan(),
            metrics(1.0, 0.9, 1.0, &[]),
            0.0,
        ),
        (
            "conversions 10 % lower, detect 1.1×",
            strict.clone(),
            metrics(1.0, 0.9, 1.0, &[]),
            0.2,
        ),
        (
            "conversions 20 % lower",
            plan(),
            metrics(1.0, 0.8, 1.0, &[]),
            0.95,
        ),
        (
            "declines twice as often",
            plan(),
            metrics(2.0, 1.0, 1.0, &[]),
            0.95,
        ),
        (
            "queue lag 50 % higher",
            plan(),
            metrics(1.0, 1.0, 1.5, &[]),
            0.95,
        ),
        (
            "as good as the baseline, detect 1.1×",
            strict,
            metrics(1.0, 1.0, 1.0, &[]),
            0.0,
        ),
    ];
    for (name, plan, metrics, share) in cases {
        let runs = 200;
        let out = outcomes_of(&plan, &healthy, &metrics, runs, seed);
        harmful_batch(name, &out, share);
    }
}
