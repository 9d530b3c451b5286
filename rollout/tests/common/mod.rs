//! What the simulation tests share: the seed, the α they hold rollouts to, the staged plan,
//! how many wrong decisions a batch may show, and how a batch is reported and held to it.

use grayline_rollout::Plan;
use grayline_rollout::sim::Outcome;

/// The plans' α.
pub const ALPHA: f64 = 0.01;

/// Long enough for every step of [`staged_plan`] to reach its limit, and for holds on the
/// way.
#[allow(dead_code)]
pub const LIMIT: u64 = 3 * 300 + 300;

/// 5 %, 20 %, 50 %, then promotion; each step at least a minute, at most five.
pub fn staged_plan() -> Plan {
    let mut plan = Plan::through("shop", "v2", &[500, 2000, 5000]);
    plan.alpha = ALPHA;
    for s in &mut plan.steps {
        s.min_seconds = 60;
        s.min_requests = 100;
        s.max_seconds = 300;
    }
    plan
}

/// `GRAYLINE_SIM_SEED`, else `default`; printed, so a failure can be rerun.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("GRAYLINE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("GRAYLINE_SIM_SEED={seed}");
    seed
}

/// The most wrong decisions `runs` rollouts may show if the true rate is α: α·n plus three
/// standard deviations of the binomial count.
pub fn allowed(runs: u64) -> usize {
    let n = runs as f64;
    (ALPHA * n + 3.0 * (n * ALPHA * (1.0 - ALPHA)).sqrt()).floor() as usize
}

/// The middle value, 0 for none.
pub fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Prints a batch of healthy rollouts and holds its false rollbacks to α.
#[allow(dead_code)]
pub fn healthy_batch(name: &str, out: &[Outcome]) {
    let runs = out.len() as u64;
    let rolled_back = out.iter().filter(|o| o.rolled_back).count();
    let earned = out.iter().filter(|o| o.promoted).count();
    println!(
        "{name}: {rolled_back} of {runs} rolled back ({:.2} %), {:.1} % promoted on evidence, \
         median {} s",
        100.0 * rolled_back as f64 / runs as f64,
        100.0 * earned as f64 / runs as f64,
        median(out.iter().map(|o| o.seconds).collect())
    );
    assert!(
        rolled_back <= allowed(runs),
        "{name}: {rolled_back} false rollbacks in {runs} (allowed {})",
        allowed(runs)
    );
}

/// Prints a batch of harmful rollouts: how many were rolled back and how fast. At least
/// `share` of them must be; where that is asked, at most α of them promoted.
#[allow(dead_code)]
pub fn harmful_batch(name: &str, out: &[Outcome], share: f64) {
    let runs = out.len();
    let caught: Vec<&Outcome> = out.iter().filter(|o| o.rolled_back).collect();
    let promoted = out.iter().filter(|o| o.promoted).count();
    let paused = out.iter().filter(|o| o.paused).count();
    println!(
        "{name}: {} of {runs} rolled back, median after {} s and {} canary requests; \
         {promoted} promoted, {paused} paused at the end without safety shown",
        caught.len(),
        median(caught.iter().map(|o| o.seconds).collect()),
        median(caught.iter().map(|o| o.canary_requests).collect()),
    );
    assert!(
        caught.len() as f64 >= share * runs as f64,
        "{name}: only {} of {runs} rolled back",
        caught.len()
    );
    // Promotions are the detect ratio's business: a canary worse than it is promoted at most
    // α of the time; one between the tolerated and the detect ratio may be.
    if share > 0.0 {
        assert!(
            promoted as f64 <= ALPHA * runs as f64 + 3.0,
            "{name}: {promoted} promoted"
        );
    }
}
