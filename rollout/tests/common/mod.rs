//! What the simulation tests share: the seed, the α they hold rollouts to, and how many
//! wrong decisions a batch may show.

/// The plans' α.
pub const ALPHA: f64 = 0.01;

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
