//! Event gates simulated: five gates at once (the built-in error and latency gates, and three
//! event gates the proxies count — payment declines, checkout conversions, edit conflicts),
//! each judged every second on the judged sample, over a thousand healthy rollouts at a
//! time: false rollbacks stay below the plan's one α, also when a dependency outage moves
//! every event of both versions at once, and when every event sits exactly at its tolerated
//! limit. Then how fast a conversion drop of 10 % and 20 % and doubled declines are rolled
//! back, and with how many canary requests.
//!
//! Seeded: set `GRAYLINE_SIM_SEED` to rerun another sample; the seed is printed. The figures
//! printed are the ones in docs/rollouts.md.

mod common;

use common::{LIMIT, harmful_batch, healthy_batch, staged_plan};
use grayline_rollout::plan::{EventGate, MetricKind};
use grayline_rollout::sim::{AppEvent, Outage, Outcome, Scenario, Shift, run_with_application};
use grayline_rollout::{Mode, Plan};

fn seed() -> u64 {
    common::seed(20_261_207)
}

fn gate(event: &str, kind: MetricKind, tolerated: f64, detect: f64) -> EventGate {
    EventGate {
        event: event.into(),
        kind,
        tolerated_ratio: tolerated,
        min_difference: 0.0,
        detect: Some(detect),
        mode: Mode::Enforce,
    }
}

/// 5 %, 20 %, 50 %, then promotion, each step one to five minutes, judged by five gates.
fn plan() -> Plan {
    let mut plan = staged_plan();
    plan.gates.events = vec![
        gate("declined", MetricKind::BadEvents, 1.2, 1.5),
        gate("converted", MetricKind::GoodEvents, 1.05, 1.25),
        gate("conflict", MetricKind::BadEvents, 1.5, 2.0),
    ];
    assert_eq!(plan.enforced_gates(), 5);
    plan
}

/// The application's events with the canary's effect on each (1: none); `shifts` move them
/// all for both versions at once (conversions the other way).
fn events(
    declined: f64,
    converted: f64,
    conflict: f64,
    shifts: &[Shift],
) -> Vec<(AppEvent, Vec<Shift>)> {
    let fewer = shifts
        .iter()
        .map(|s| Shift {
            factor: 1.0 / s.factor,
            ..*s
        })
        .collect();
    vec![
        (
            AppEvent {
                rate: 0.02,
                effect: declined,
            },
            shifts.to_vec(),
        ),
        (
            AppEvent {
                rate: 0.3,
                effect: converted,
            },
            fewer,
        ),
        (
            AppEvent {
                rate: 0.01,
                effect: conflict,
            },
            shifts.to_vec(),
        ),
    ]
}

fn outcomes(
    plan: &Plan,
    scenario: &Scenario,
    events: &[(AppEvent, Vec<Shift>)],
    runs: u64,
    seed: u64,
) -> Vec<Outcome> {
    (0..runs)
        .map(|i| run_with_application(plan, scenario, &[], events, seed.wrapping_add(i), LIMIT))
        .collect()
}

#[test]
fn five_gates_judged_every_second_keep_false_rollbacks_below_one_alpha() {
    let seed = seed();
    let healthy = Scenario::healthy(100.0, 0.01);
    let mut outage = Scenario::healthy(100.0, 0.01);
    // A dependency both versions call fails for a minute: errors jump, declines and
    // conflicts triple and conversions fall to a third, for both at once.
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
            events(1.0, 1.0, 1.0, &[]),
            1000,
        ),
        (
            "a shared outage hits both",
            &outage,
            events(1.0, 1.0, 1.0, &shared),
            600,
        ),
        // Declines 1.2×, conversions / 1.05, conflicts 1.5×: each at its tolerated limit.
        (
            "every event at its tolerated limit",
            &healthy,
            events(1.2, 1.0 / 1.05, 1.5, &[]),
            600,
        ),
    ];
    for (name, scenario, events, runs) in cases {
        let out = outcomes(&plan(), scenario, &events, runs, seed);
        healthy_batch(name, &out);
    }
}

#[test]
fn event_regressions_are_rolled_back_and_we_say_how_fast() {
    let seed = seed();
    let healthy = Scenario::healthy(100.0, 0.01);
    // A plan that must catch a 10 % drop says so: safety only below 1.1×.
    let mut strict = plan();
    strict.gates.events[1].detect = Some(1.1);
    let cases = [
        (
            "conversions 10 % lower",
            plan(),
            events(1.0, 0.9, 1.0, &[]),
            0.0,
        ),
        (
            "conversions 10 % lower, detect 1.1×",
            strict.clone(),
            events(1.0, 0.9, 1.0, &[]),
            0.2,
        ),
        (
            "conversions 20 % lower",
            plan(),
            events(1.0, 0.8, 1.0, &[]),
            0.95,
        ),
        (
            "declines twice as often",
            plan(),
            events(2.0, 1.0, 1.0, &[]),
            0.95,
        ),
        (
            "as good as the baseline, detect 1.1×",
            strict,
            events(1.0, 1.0, 1.0, &[]),
            0.0,
        ),
    ];
    for (name, plan, events, share) in cases {
        let runs = 200;
        let out = outcomes(&plan, &healthy, &events, runs, seed);
        harmful_batch(name, &out, share);
    }
}

/// Rollouts of the same seeds judged twice: on the gates' harm evidence averaged (as the
/// judge does), and on one gate's own evidence alone at its share of α (a Bonferroni
/// split). Prints both; the average may only be sooner.
fn averaged_and_alone(
    name: &str,
    plan: &Plan,
    scenario: &Scenario,
    events: &[(AppEvent, Vec<Shift>)],
    runs: u64,
    seed: u64,
) {
    let averaged = outcomes(plan, scenario, events, runs, seed);
    let mut bonferroni = scenario.clone();
    bonferroni.world.harm_alone = true;
    let alone = outcomes(plan, &bonferroni, events, runs, seed);
    for (how, out) in [("averaged", &averaged), ("alone", &alone)] {
        harmful_batch(&format!("{name}, harm {how}"), out, 0.5);
    }
    let caught = |out: &[Outcome]| out.iter().filter(|o| o.rolled_back).count();
    assert!(caught(&averaged) >= caught(&alone), "{name}");
    let both: Vec<(&Outcome, &Outcome)> = averaged
        .iter()
        .zip(&alone)
        .filter(|(a, b)| a.rolled_back && b.rolled_back)
        .collect();
    let later = both.iter().filter(|(a, b)| a.seconds > b.seconds).count();
    let saved: Vec<u64> = both
        .iter()
        .map(|(a, b)| b.seconds.saturating_sub(a.seconds))
        .filter(|s| *s > 0)
        .collect();
    println!(
        "{name}: averaged sooner in {} of {} rollouts both rolled back, median by {} s",
        saved.len(),
        both.len(),
        common::median(saved)
    );
    assert_eq!(
        later, 0,
        "{name}: the average rolled back later than one gate alone"
    );
}

#[test]
fn a_harm_several_gates_see_is_rolled_back_sooner_on_their_evidence_averaged() {
    let seed = seed();
    let healthy = Scenario::healthy(100.0, 0.01);
    // A checkout bug: errors 2× and declines 1.5× up, conversions 15 % down, each beyond its
    // tolerated limit.
    let checkout = Scenario::canary_errors(100.0, 0.01, 0.02);
    let cases = [
        (
            "a checkout bug seen by three gates",
            &checkout,
            events(1.5, 0.85, 1.0, &[]),
        ),
        (
            "conversions 20 % lower, one gate",
            &healthy,
            events(1.0, 0.8, 1.0, &[]),
        ),
    ];
    for (name, scenario, events) in cases {
        averaged_and_alone(name, &plan(), scenario, &events, 200, seed);
    }
}

#[test]
fn a_canary_at_the_detect_ratio_is_promoted_at_most_alpha_of_the_time() {
    // Safety is shown at the plan's whole α on each gate: a promotion needs them all, so a
    // canary as bad as one gate's detect ratio is promoted only when that gate errs.
    let seed = seed();
    let healthy = Scenario::healthy(100.0, 0.01);
    // Conflicts are rare (1 %), so harm is slow to show and safety is what decides.
    let out = outcomes(&plan(), &healthy, &events(1.0, 1.0, 2.0, &[]), 1000, seed);
    let promoted = out.iter().filter(|o| o.promoted).count();
    println!(
        "conflicts at the detect ratio (2×): {promoted} of 1000 promoted, {} rolled back",
        out.iter().filter(|o| o.rolled_back).count()
    );
    assert!(promoted <= common::allowed(1000), "{promoted} promoted");
}
