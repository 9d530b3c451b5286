//! Thousands of simulated rollouts, judged every second: when the canary is as good as the
//! baseline (or exactly at the tolerated limit), false rollbacks stay below α — also when
//! production hits both versions at once (shared outages, traffic swings, latency spikes,
//! the proxies' breakers and retries, heavy users on a sticky split); when it is worse, it is
//! rolled back, and we say after how many canary requests; and a promotion is earned: a canary
//! as bad as the plan must catch is promoted at most α of the time.
//!
//! Seeded: set `GRAYLINE_SIM_SEED` to rerun another sample; the seed is printed. The figures
//! printed are the ones in docs/rollouts.md.

mod common;

use common::{ALPHA, LIMIT, allowed, median, staged_plan};
use grayline_rollout::judge::Promotion;
use grayline_rollout::sim::{
    HeavyUser, Outage, Outcome, Protections, Scenario, Spike, Swing, World, normal_quantile, run,
};
use grayline_rollout::{OnTimeout, Plan};

fn seed() -> u64 {
    common::seed(20_261_201)
}

/// The plan the field tried: 10 %, 25 %, 50 %, 20 to 60 s a step, everything else default.
fn field_plan() -> Plan {
    let mut plan = Plan::through("shop", "v2", &[1000, 2500, 5000]);
    plan.alpha = ALPHA;
    for s in &mut plan.steps {
        s.min_seconds = 20;
        s.max_seconds = 60;
    }
    plan
}

fn outcomes(scenario: &Scenario, runs: u64, seed: u64) -> Vec<Outcome> {
    outcomes_of(&staged_plan(), scenario, runs, seed)
}

fn outcomes_of(plan: &Plan, scenario: &Scenario, runs: u64, seed: u64) -> Vec<Outcome> {
    (0..runs)
        .map(|i| run(plan, scenario, seed.wrapping_add(i), LIMIT))
        .collect()
}

/// How a batch of rollouts ended.
struct Tally {
    runs: usize,
    rolled_back: usize,
    earned: usize,
    unearned: usize,
    paused: usize,
}

fn tally(out: &[Outcome]) -> Tally {
    let count = |f: &dyn Fn(&Outcome) -> bool| out.iter().filter(|o| f(o)).count();
    Tally {
        runs: out.len(),
        rolled_back: count(&|o| o.rolled_back),
        earned: count(&|o| o.promotion == Some(Promotion::Evidence)),
        unearned: count(&|o| o.promoted && o.promotion != Some(Promotion::Evidence)),
        paused: count(&|o| o.paused),
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: usize| 100.0 * n as f64 / self.runs as f64;
        write!(
            f,
            "{} of {} rolled back ({:.1} %), {:.1} % promoted on evidence, {:.1} % paused at the end",
            self.rolled_back,
            self.runs,
            pct(self.rolled_back),
            pct(self.earned),
            pct(self.paused)
        )
    }
}

#[test]
fn false_rollbacks_stay_below_alpha() {
    let seed = seed();
    let healthy_1 = Scenario::healthy(100.0, 0.01);
    let healthy_01 = Scenario::healthy(100.0, 0.001);
    let low_traffic = Scenario::healthy(2.0, 0.01);
    let mut at_limit = Scenario::healthy(100.0, 0.01);
    // Exactly the tolerated ratio (1.5×): the hardest case that must not roll back.
    at_limit.canary_errors = 0.015;
    let mut slow_limit = Scenario::healthy(100.0, 0.0);
    // 1.5 % of canary requests above the baseline's p99, against 1 %: again at the limit.
    slow_limit.latency_factor =
        (slow_limit.sigma * (normal_quantile(0.99) - normal_quantile(0.985))).exp();
    assert!((slow_limit.slow_shares().0 - 0.015).abs() < 1e-4);
    let cases = [
        ("same error rate 1 %", healthy_1, 2000),
        ("same error rate 0.1 %", healthy_01, 2000),
        ("same error rate 1 %, 2 requests/s", low_traffic, 2000),
        ("canary errors at the tolerated 1.5×", at_limit, 1000),
        ("canary slow share at the tolerated 1.5×", slow_limit, 1000),
    ];
    for (name, scenario, runs) in cases {
        let t = tally(&outcomes(&scenario, runs, seed));
        println!("{name}: {t}");
        assert!(
            t.rolled_back <= allowed(runs),
            "{name}: {} false rollbacks in {runs} (allowed {})",
            t.rolled_back,
            allowed(runs)
        );
        assert_eq!(t.unearned, 0, "{name}: the plan never promotes on time");
        assert_eq!(
            t.rolled_back + t.earned + t.paused,
            runs as usize,
            "{name}: every rollout ends, or pauses at its last step"
        );
    }
}

/// Both versions at 1 % errors, 40 requests/s, with production happening to both at once.
fn world(f: impl Fn(&mut World)) -> Scenario {
    let mut s = Scenario::healthy(40.0, 0.01);
    f(&mut s.world);
    s
}

/// A dependency both versions share fails from second 15 (in the first step) on.
fn outage(error_rate: f64, seconds: u64) -> Outage {
    Outage {
        start: 15,
        seconds,
        error_rate,
    }
}

#[test]
fn what_production_does_to_both_versions_is_not_the_canarys_harm() {
    let seed = seed();
    let protected = |o: Outage| {
        world(move |w| {
            w.outages = vec![o];
            w.protections = Some(Protections {
                retries: true,
                ..Protections::defaults()
            });
        })
    };
    let cases: Vec<(&str, Scenario)> = vec![
        (
            "shared outage 40 % for 15 s",
            world(|w| w.outages = vec![outage(0.4, 15)]),
        ),
        (
            "shared outage 10 % for 5 min",
            world(|w| w.outages = vec![outage(0.1, 300)]),
        ),
        (
            "shared outage 80 % for 1 min",
            world(|w| w.outages = vec![outage(0.8, 60)]),
        ),
        (
            "outages 40 % for 15 s every 2 min",
            world(|w| {
                w.outages = (0..8)
                    .map(|k| Outage {
                        start: 15 + 120 * k,
                        ..outage(0.4, 15)
                    })
                    .collect()
            }),
        ),
        (
            "traffic swinging 10x in a minute",
            world(|w| {
                w.swing = Some(Swing {
                    factor: 10.0,
                    period_seconds: 60.0,
                })
            }),
        ),
        (
            "both 3x slower for 30 s",
            world(|w| {
                w.spikes = vec![Spike {
                    start: 15,
                    seconds: 30,
                    factor: 3.0,
                }]
            }),
        ),
        (
            "breakers and retries, outage 40 % for 15 s",
            protected(outage(0.4, 15)),
        ),
        (
            "breakers and retries, outage 80 % for 1 min",
            protected(outage(0.8, 60)),
        ),
        (
            "heavy users: 5 users with 30 % of requests, same error rate",
            world(|w| {
                w.heavy_users = vec![
                    HeavyUser {
                        share: 0.06,
                        error_rate: 0.01
                    };
                    5
                ]
            }),
        ),
    ];
    for (plan_name, plan) in [
        ("standard plan", staged_plan()),
        ("the field's plan", field_plan()),
    ] {
        for (name, scenario) in &cases {
            let runs = 1000;
            let t = tally(&outcomes_of(&plan, scenario, runs, seed));
            println!("{plan_name}, {name}: {t}");
            assert!(
                t.rolled_back <= allowed(runs),
                "{plan_name}, {name}: {} false rollbacks in {runs} (allowed {})",
                t.rolled_back,
                allowed(runs)
            );
        }
    }
}

/// The field's failure, reproduced: a 40 % outage shared for 15 s opened the canary's breaker
/// (on a tenth of the traffic its window's share crosses 50 % by chance) and its fallbacks
/// were counted as its errors. With breakers that judge beyond chance and fallbacks counted
/// apart, the same world rolls back nothing.
#[test]
fn the_field_failure_is_reproduced_and_gone() {
    let seed = seed();
    let with = |p: Protections| {
        world(move |w| {
            w.outages = vec![outage(0.4, 15)];
            w.protections = Some(p.clone());
        })
    };
    let runs = 1000;
    let before = tally(&outcomes_of(
        &field_plan(),
        &with(Protections::before()),
        runs,
        seed,
    ));
    let after = tally(&outcomes_of(
        &field_plan(),
        &with(Protections::defaults()),
        runs,
        seed,
    ));
    println!("the field's plan, outage 40 % for 15 s, protections as they were: {before}");
    println!("the same, protections now: {after}");
    assert!(
        before.rolled_back as f64 >= 0.1 * runs as f64,
        "the simulation no longer shows the field's failure: {before}"
    );
    assert!(after.rolled_back <= allowed(runs), "{after}");
}

/// A sticky split keeps each user on one side. Users who fail more often than others are
/// then a canary's harm in the eyes of a judge that counts requests, when they land on it
/// (docs/rollouts.md, "Heavy users"); the proxies judge one request per user and second.
#[test]
fn heavy_users_with_their_own_error_rates() {
    let seed = seed();
    let users = |rates: [f64; 5], every_request: bool| {
        world(move |w| {
            w.heavy_users = rates
                .iter()
                .map(|r| HeavyUser {
                    share: 0.06,
                    error_rate: *r,
                })
                .collect();
            w.judge_every_request = every_request;
        })
    };
    let spread = [0.002, 0.005, 0.01, 0.02, 0.04];
    let one = [0.05, 0.01, 0.01, 0.01, 0.01];
    let runs = 1000;
    // Judged as the proxies judge, once per user and second: within α.
    for (name, rates) in [("0.2 % to 4 %", spread), ("one at 5 %", one)] {
        let t = tally(&outcomes(&users(rates, false), runs, seed));
        println!("standard plan, heavy users (5 × 6 % of requests, error rates {name}): {t}");
        assert!(t.rolled_back <= allowed(runs), "{name}: {t}");
    }
    // Every request judged, as before: the figures the docs give for why.
    for (name, rates, documented) in [("0.2 % to 4 %", spread, 0.05), ("one at 5 %", one, 0.06)] {
        let t = tally(&outcomes(&users(rates, true), runs, seed));
        println!("the same ({name}), every request judged: {t}");
        assert!(
            (t.rolled_back as f64) <= documented * runs as f64,
            "{name}: {t}, above the documented {:.0} %",
            documented * 100.0
        );
    }
}

#[test]
fn promotions_are_earned() {
    let seed = seed();
    let runs = 500;
    // At the field's traffic and step lengths no gate can show safety: every healthy canary
    // pauses at its last step, none is promoted (and the wizard says so before it starts).
    let t = tally(&outcomes_of(
        &field_plan(),
        &Scenario::healthy(40.0, 0.01),
        runs,
        seed,
    ));
    println!("the field's plan, healthy canary at 40 requests/s: {t}");
    assert_eq!(t.earned + t.unearned, 0, "{t}");
    assert!(t.paused as f64 >= 0.95 * runs as f64, "{t}");
    // A canary as bad as the plan must catch (detect: 2x errors, 1.2x latency) is promoted
    // at most α of the time: its safety is never shown.
    let errors = Scenario::canary_errors(100.0, 0.01, 0.02);
    let slower = Scenario::canary_slower(100.0, 0.01, 1.2);
    let three = Scenario::canary_errors(40.0, 0.01, 0.03);
    for (name, plan, scenario) in [
        ("2x errors, at the detect limit", staged_plan(), errors),
        ("1.2x slower, at the detect limit", staged_plan(), slower),
        (
            "3x errors at the field's traffic",
            field_plan(),
            three.clone(),
        ),
        (
            "3x errors at the field's traffic, standard plan",
            staged_plan(),
            three,
        ),
    ] {
        let t = tally(&outcomes_of(&plan, &scenario, runs, seed));
        println!("{name}: {t}");
        assert!(t.earned <= allowed(runs), "{name}: {t}");
        assert_eq!(t.unearned, 0, "{name}: {t}");
    }
    // Promoting on time stays possible, and is never counted as earned.
    let mut on_time = field_plan();
    on_time.steps[2].on_timeout = Some(OnTimeout::Promote);
    let t = tally(&outcomes_of(
        &on_time,
        &Scenario::healthy(40.0, 0.01),
        runs,
        seed,
    ));
    println!(
        "the field's plan with `on_timeout: promote`: {t}, {} promoted on time",
        t.unearned
    );
    assert!(t.unearned as f64 >= 0.95 * runs as f64, "{t}");
}

#[test]
fn regressions_are_rolled_back() {
    let seed = seed();
    let errors = |canary: f64| Scenario::canary_errors(100.0, 0.01, canary);
    let slower = Scenario::canary_slower(100.0, 0.01, 1.25);
    // Sparse: a bug that fails 1 % of requests on a service that otherwise never fails.
    let sparse = Scenario::canary_errors(20.0, 0.0, 0.01);
    let low_traffic = Scenario::canary_errors(2.0, 0.01, 0.10);
    // (name, scenario, at least this share rolled back)
    let cases = [
        ("2x errors (2 % vs 1 %)", errors(0.02), 0.60),
        ("3x errors (3 % vs 1 %)", errors(0.03), 0.99),
        ("10x errors (10 % vs 1 %)", errors(0.10), 1.0),
        ("latency +25 %", slower, 0.99),
        ("sparse: 1 % vs 0 % at 20 requests/s", sparse, 0.95),
        ("10x errors at 2 requests/s", low_traffic, 0.70),
    ];
    for (name, scenario, want) in cases {
        let runs = 500;
        let out = outcomes(&scenario, runs, seed);
        assert!(
            tally(&out).earned <= allowed(runs),
            "{name}: promoted on evidence"
        );
        let caught: Vec<&Outcome> = out.iter().filter(|o| o.rolled_back).collect();
        let share = caught.len() as f64 / runs as f64;
        let requests = median(caught.iter().map(|o| o.canary_requests).collect());
        let seconds = median(caught.iter().map(|o| o.seconds).collect());
        println!(
            "{name}: {:.1} % rolled back; median {requests} canary requests, {seconds} s",
            100.0 * share
        );
        assert!(
            share >= want,
            "{name}: only {:.1} % rolled back",
            100.0 * share
        );
    }
}

/// The sparse case Mann–Whitney on per-minute rates passes: three canary errors in five
/// minutes, none on the baseline. At a 5 % weight the ratio test alone proves harm; the
/// default minimum absolute increase (0.1 points) holds it back, because 3 errors in 1500
/// requests is a 0.2 % error rate, below the 0.3 % that would prove an increase of 0.1
/// points over a baseline that tolerated 1.5× must stay under.
#[test]
fn three_canary_errors_against_none() {
    use grayline_rollout::{Phase, Rollout, Sample, Second};
    let run = |min_increase_bp: u32| {
        let mut plan = Plan::through("shop", "v2", &[500]);
        plan.warmup_seconds = 0;
        plan.steps[0].max_seconds = 300;
        plan.steps[0].on_timeout = Some(OnTimeout::Promote);
        plan.gates.latency = None;
        plan.gates.errors.as_mut().unwrap().min_increase_bp = min_increase_bp;
        let key = grayline_routing::StickyKey::ClientIp;
        let (mut r, _) = Rollout::start(1, plan, "v1", key, "test", 0, None);
        for t in 1..=300 {
            let errors = u64::from(t % 100 == 50);
            let second = Second {
                time_unix_s: t,
                canary: Sample {
                    requests: 5,
                    errors,
                    ..Sample::default()
                },
                baseline: Sample {
                    requests: 95,
                    ..Sample::default()
                },
            };
            r.observe(&second, t * 1000);
            if r.phase.is_done() {
                return (r.phase.name(), t);
            }
        }
        (r.phase.name(), 300)
    };
    let strict = run(0);
    assert_eq!(strict, ("rolled_back", 250), "the third error rolls back");
    let tolerant = run(10);
    assert_eq!(
        tolerant.0,
        Phase::Promoted.name(),
        "0.2 % is below the absolute bar"
    );
}
