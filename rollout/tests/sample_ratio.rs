//! The sample-ratio guard simulated: on a split as planned it never pauses a rollout (beyond
//! its α), and a canary that gets 8 % of new visitors for 10 % — or more than the split gives
//! it, as when a rule sends testers to it — is paused before any gate decides, and we say
//! how fast.
//!
//! Seeded: set `GRAYLINE_SIM_SEED` to rerun another sample; the seed is printed. The figures
//! printed are the ones in docs/rollouts.md.

mod common;

use common::{LIMIT, allowed, median, staged_plan};
use grayline_rollout::Plan;
use grayline_rollout::sim::{Outcome, Scenario, Visitors, run};

fn seed() -> u64 {
    common::seed(20_261_208)
}

/// 10 %, 25 %, 50 %, then promotion, each step one to five minutes.
fn plan() -> Plan {
    let mut plan = staged_plan();
    for (s, w) in plan.steps.iter_mut().zip([1000, 2500, 5000]) {
        s.weight = w;
    }
    plan
}

fn scenario(visitors_per_second: f64, skew: f64) -> Scenario {
    let mut s = Scenario::healthy(100.0, 0.01);
    s.world.visitors = Some(Visitors {
        per_second: visitors_per_second,
        skew,
    });
    s
}

fn outcomes(scenario: &Scenario, runs: u64, seed: u64) -> Vec<Outcome> {
    (0..runs)
        .map(|i| run(&plan(), scenario, seed.wrapping_add(i), LIMIT))
        .collect()
}

#[test]
fn a_split_as_planned_is_never_paused_by_the_guard_beyond_alpha() {
    let seed = seed();
    for (visitors, runs) in [(5.0, 1000), (50.0, 1000), (500.0, 300)] {
        let out = outcomes(&scenario(visitors, 1.0), runs, seed);
        let paused = out.iter().filter(|o| o.mismatch).count();
        let promoted = out.iter().filter(|o| o.promoted).count();
        let rolled_back = out.iter().filter(|o| o.rolled_back).count();
        println!(
            "{visitors} new visitors/s, split as planned: {paused} of {runs} paused by the \
             guard ({:.2} %), {promoted} promoted, {rolled_back} rolled back",
            100.0 * paused as f64 / runs as f64
        );
        assert!(
            paused <= allowed(runs),
            "{paused} false pauses in {runs} (allowed {})",
            allowed(runs)
        );
    }
    // Without the guard the same rollouts end the same way: it takes nothing from them.
    let mut off = plan();
    off.gates.sample_ratio = None;
    let with = outcomes(&scenario(50.0, 1.0), 200, seed);
    let without: Vec<Outcome> = (0..200)
        .map(|i| run(&off, &scenario(50.0, 1.0), seed.wrapping_add(i), LIMIT))
        .collect();
    let promoted = |o: &[Outcome]| o.iter().filter(|o| o.promoted).count();
    assert_eq!(promoted(&with), promoted(&without));
}

#[test]
fn a_skewed_split_is_paused_and_we_say_how_fast() {
    let seed = seed();
    let runs = 200;
    for (name, visitors, skew) in [
        ("8 % for 10 %, 50 new visitors/s", 50.0, 0.8),
        ("8 % for 10 %, 500 new visitors/s", 500.0, 0.8),
        (
            "12 % for 10 % (testers sent to the canary), 50/s",
            50.0,
            1.2,
        ),
        ("8 % for 10 %, 5 new visitors/s", 5.0, 0.8),
    ] {
        let out = outcomes(&scenario(visitors, skew), runs, seed);
        let caught: Vec<&Outcome> = out.iter().filter(|o| o.mismatch).collect();
        let promoted = out.iter().filter(|o| o.promoted).count();
        println!(
            "{name}: {} of {runs} paused by the guard, median after {} s; {promoted} promoted",
            caught.len(),
            median(caught.iter().map(|o| o.seconds).collect()),
        );
        if visitors >= 50.0 {
            assert!(caught.len() as f64 >= 0.95 * runs as f64, "{name}");
        }
    }
}
