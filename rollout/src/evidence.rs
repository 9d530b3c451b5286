//! Anytime-valid evidence: mixture likelihood ratios that are e-processes, so a decision taken
//! when one passes `1/α` keeps its error rate at `α` however often it is looked at (Ville's
//! inequality), through pauses and restarts.
//!
//! Two tests, each one-sided and each with a "harm" and a "safe" direction:
//!
//! - [`RatioTest`] compares the canary with the baseline in the same seconds. Given the events
//!   (errors, or slow requests) both saw in one second, the number that fell on the canary is
//!   binomial in `π(ρ) = n_c·ρ / (n_c·ρ + n_b)`, where `ρ` is the ratio of their event rates
//!   and `n_c`, `n_b` their requests in that second. Conditioning on the second's total removes
//!   the baseline's rate, which may drift, from the question. Against the null `ρ ≤ τ` the
//!   product of likelihood ratios `L(ρ_k)/L(τ)` for any `ρ_k > τ` is a non-negative
//!   supermartingale; an equal-weight mixture over a grid of such `ρ_k` is one too.
//! - [`RateTest`] asks about one version's own event rate `p` against a fixed level `c`, with a
//!   Bernoulli likelihood per request and the same grid mixture.
//!
//! Log-likelihood ratios are kept per grid point, so the state is a few floats that persist as
//! JSON, and one second costs a few dozen arithmetic operations.

use serde::{Deserialize, Serialize};

/// Alternatives of the harm direction, as multiples of the tolerated ratio (or of the level's
/// odds): from barely worse to a hundred times worse.
pub(crate) const HARM_GRID: [f64; 9] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0];
/// Alternatives of the safe direction: from barely better than the limit to far below it.
pub(crate) const SAFE_GRID: [f64; 7] = [0.9, 0.75, 0.6, 0.45, 0.3, 0.15, 0.05];
/// Log-likelihood ratios are floored here: below it a grid point contributes nothing to the
/// mixture anyway, and the state stays finite (JSON has no infinities).
const FLOOR: f64 = -1.0e4;

/// Equal-weight mixture of likelihood ratios, in logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixture {
    pub log_lr: Vec<f64>,
}

impl Mixture {
    fn new(points: usize) -> Mixture {
        Mixture {
            log_lr: vec![0.0; points],
        }
    }

    /// `ln` of the mixture's value: the e-value so far (`ln 1 = 0` at the start).
    pub fn log_e(&self) -> f64 {
        let max = self.max_log_lr();
        if !max.is_finite() {
            return max;
        }
        let sum: f64 = self.log_lr.iter().map(|l| (l - max).exp()).sum();
        max + (sum / self.log_lr.len() as f64).ln()
    }

    /// Whether the e-value is at least `e^threshold`, computing the mixture only when the
    /// best and worst cases disagree (the mean lies between `max − ln K` and `max`).
    pub fn reaches(&self, threshold: f64) -> bool {
        let max = self.max_log_lr();
        if max < threshold {
            false
        } else if max - (self.log_lr.len() as f64).ln() >= threshold {
            true
        } else {
            self.log_e() >= threshold
        }
    }

    /// The largest grid point's log-likelihood ratio: at least `log_e()`, with no `exp`.
    pub fn max_log_lr(&self) -> f64 {
        self.log_lr
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    fn add(&mut self, k: usize, delta: f64) {
        let l = &mut self.log_lr[k];
        *l = (*l + delta).max(FLOOR);
    }
}

/// Canary against baseline: is the canary's event rate more than `tolerated` times the
/// baseline's (harm), or less than the safe limit (safe)?
///
/// The safe limit is `tolerated` unless the plan says what it must be able to catch
/// (`detect`, at or above `tolerated`): then safety means "not as bad as `detect`", which
/// a canary that is as good as the baseline shows far sooner, and a canary `detect` times
/// worse shows with probability at most α. Between the two lies what the plan neither
/// tolerates for sure nor must catch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioTest {
    pub tolerated: f64,
    /// The safe direction's limit when it is not `tolerated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect: Option<f64>,
    /// Against "ρ ≤ τ": grows when the canary is worse than tolerated.
    pub harm: Mixture,
    /// Against "ρ ≥ the safe limit": grows when the canary is better than it.
    pub safe: Mixture,
}

impl RatioTest {
    pub fn new(tolerated: f64) -> RatioTest {
        RatioTest {
            tolerated,
            detect: None,
            harm: Mixture::new(HARM_GRID.len()),
            safe: Mixture::new(SAFE_GRID.len()),
        }
    }

    /// The ratio the safe direction tests against: `detect` when it is set and above
    /// `tolerated`, else `tolerated`.
    pub fn safe_limit(&self) -> f64 {
        self.detect
            .map_or(self.tolerated, |d| d.max(self.tolerated))
    }

    /// One second: `canary_events` of `canary_requests`, `baseline_events` of
    /// `baseline_requests`. A second without both versions' traffic, or without any event,
    /// says nothing about the ratio.
    pub fn observe(
        &mut self,
        canary_requests: u64,
        canary_events: u64,
        baseline_requests: u64,
        baseline_events: u64,
    ) {
        let events = canary_events + baseline_events;
        if canary_requests == 0 || baseline_requests == 0 || events == 0 {
            return;
        }
        let (nc, nb) = (canary_requests as f64, baseline_requests as f64);
        let (xc, total) = (canary_events as f64, events as f64);
        // ln L(ρ₀m)/L(ρ₀) = x_c·ln m + (x_c + x_b)·(ln(n_c ρ₀ + n_b) − ln(n_c ρ₀ m + n_b)),
        // with ρ₀ the null's ratio: τ for harm, the safe limit for safety.
        let update = |mixture: &mut Mixture, grid: &[f64], null: f64| {
            let base = (nc * null + nb).ln();
            for (k, m) in grid.iter().enumerate() {
                let alt = (nc * null * m + nb).ln();
                let canary = if xc > 0.0 { xc * m.ln() } else { 0.0 };
                mixture.add(k, canary + total * (base - alt));
            }
        };
        update(&mut self.harm, &HARM_GRID, self.tolerated);
        let safe_limit = self.safe_limit();
        update(&mut self.safe, &SAFE_GRID, safe_limit);
    }

    /// Forgets the safe direction's evidence (each step proves safety anew).
    pub fn restart_safe(&mut self) {
        self.safe = Mixture::new(SAFE_GRID.len());
    }
}

/// One version's own event rate against a level `c`: is it above (harm) or below (safe)?
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RateState", into = "RateState")]
pub struct RateTest {
    pub level: f64,
    pub harm: Mixture,
    pub safe: Mixture,
    /// Per alternative `p` (harm grid, then safe grid): `ln(p/c)` and `ln((1−p)/(1−c))`,
    /// derived from the level.
    coefficients: Vec<(f64, f64)>,
}

/// What of a [`RateTest`] is stored; the coefficients are derived again on loading.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RateState {
    level: f64,
    harm: Mixture,
    safe: Mixture,
}

impl From<RateState> for RateTest {
    fn from(s: RateState) -> RateTest {
        RateTest {
            coefficients: RateTest::coefficients(s.level),
            level: s.level,
            harm: s.harm,
            safe: s.safe,
        }
    }
}

impl From<RateTest> for RateState {
    fn from(t: RateTest) -> RateState {
        RateState {
            level: t.level,
            harm: t.harm,
            safe: t.safe,
        }
    }
}

/// The safe direction also tries "no events at all" (`p = 0`).
const SAFE_RATE_POINTS: usize = SAFE_GRID.len() + 1;

impl RateTest {
    /// `level` in (0, 1).
    pub fn new(level: f64) -> RateTest {
        RateTest {
            coefficients: RateTest::coefficients(level),
            level,
            harm: Mixture::new(HARM_GRID.len()),
            safe: Mixture::new(SAFE_RATE_POINTS),
        }
    }

    /// Alternatives are spaced in odds, so they stay below 1 however high the level.
    fn alternative(level: f64, m: f64) -> f64 {
        let odds = level / (1.0 - level) * m;
        odds / (1.0 + odds)
    }

    fn coefficients(level: f64) -> Vec<(f64, f64)> {
        let (ln_c, ln_not_c) = (level.ln(), (1.0 - level).ln());
        HARM_GRID
            .iter()
            .chain(SAFE_GRID.iter())
            .map(|m| {
                let p = RateTest::alternative(level, *m);
                (p.ln() - ln_c, (1.0 - p).ln() - ln_not_c)
            })
            .collect()
    }

    /// `events` of `requests` in one second.
    pub fn observe(&mut self, requests: u64, events: u64) {
        if requests == 0 {
            return;
        }
        let (n, x) = (requests as f64, events.min(requests) as f64);
        let (harm, safe) = self.coefficients.split_at(HARM_GRID.len());
        for (k, (a, b)) in harm.iter().enumerate() {
            self.harm.add(k, x * a + (n - x) * b);
        }
        for (k, (a, b)) in safe.iter().enumerate() {
            self.safe.add(k, x * a + (n - x) * b);
        }
        // p = 0: certain to be refuted by the first event.
        let zero = if events == 0 {
            -n * (1.0 - self.level).ln()
        } else {
            FLOOR
        };
        self.safe.add(SAFE_GRID.len(), zero);
    }

    pub fn restart_safe(&mut self) {
        self.safe = Mixture::new(SAFE_RATE_POINTS);
    }
}

/// An anytime-valid interval for a rate from `events` of `requests`, at level `alpha`:
/// every `p` whose Beta(½, ½)-mixture likelihood ratio against it stays below `1/α`
/// (Robbins' mixture; valid at every sample size at once).
pub fn rate_interval(requests: u64, events: u64, alpha: f64) -> (f64, f64) {
    if requests == 0 {
        return (0.0, 1.0);
    }
    let (n, x) = (requests as f64, events.min(requests) as f64);
    let threshold = (1.0 / alpha).ln();
    // ln of the mixture over p ~ Beta(½, ½), divided by the likelihood at p.
    let mixture = ln_beta(x + 0.5, n - x + 0.5) - ln_beta(0.5, 0.5);
    let log_ratio = |p: f64| {
        let ll = if x > 0.0 { x * p.ln() } else { 0.0 }
            + if n - x > 0.0 {
                (n - x) * (1.0 - p).ln()
            } else {
                0.0
            };
        mixture - ll
    };
    let estimate = x / n;
    // The ratio falls towards the estimate from either side; bisect for where it crosses.
    let crossing = |mut inside: f64, mut outside: f64| {
        for _ in 0..60 {
            let mid = 0.5 * (inside + outside);
            if log_ratio(mid) < threshold {
                inside = mid;
            } else {
                outside = mid;
            }
        }
        inside
    };
    let low = if x == 0.0 {
        0.0
    } else {
        crossing(estimate, 0.0)
    };
    let high = if x == n { 1.0 } else { crossing(estimate, 1.0) };
    (low, high)
}

/// `ln B(a, b)`.
fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_known_values() {
        let cases = [
            (1.0, 0.0),
            (2.0, 0.0),
            (0.5, 0.572_364_942_924_700_1),
            (10.0, 12.801_827_480_081_469),
        ];
        for (x, want) in cases {
            assert!(
                (ln_gamma(x) - want).abs() < 1e-10,
                "ln Γ({x}) = {}",
                ln_gamma(x)
            );
        }
        // Γ(101) = 100!
        let fact: f64 = (1..=100).map(|i| (i as f64).ln()).sum();
        assert!((ln_gamma(101.0) - fact).abs() < 1e-8);
    }

    #[test]
    fn ratio_evidence_points_the_right_way() {
        // Canary at 10 % of traffic with five times the baseline's error rate.
        let mut bad = RatioTest::new(1.5);
        // Canary with the baseline's error rate.
        let mut same = RatioTest::new(1.5);
        for _ in 0..300 {
            bad.observe(10, 5, 90, 9);
            same.observe(10, 1, 90, 9);
        }
        assert!(bad.harm.log_e() > (100.0f64).ln(), "{}", bad.harm.log_e());
        assert!(bad.safe.log_e() < 0.0);
        assert!(same.harm.log_e() < 0.0, "{}", same.harm.log_e());
        assert!(same.safe.log_e() > (100.0f64).ln(), "{}", same.safe.log_e());
    }

    #[test]
    fn a_detect_limit_shows_safety_sooner_and_never_for_what_it_must_catch() {
        // The canary as good as the baseline, 10 % of the traffic, 1 % errors.
        let mut strict = RatioTest::new(1.5);
        let mut detect = RatioTest::new(1.5);
        detect.detect = Some(2.0);
        for _ in 0..200 {
            strict.observe(10, 1, 90, 9);
            detect.observe(10, 1, 90, 9);
        }
        assert!(detect.safe.log_e() > strict.safe.log_e() + 1.0);
        assert_eq!(detect.harm, strict.harm, "harm is judged at τ either way");
        // A canary exactly at the detect ratio gains no safety evidence on average.
        let mut at = RatioTest::new(1.5);
        at.detect = Some(2.0);
        for _ in 0..500 {
            at.observe(10, 2, 90, 9);
        }
        assert!(at.safe.log_e() < 0.0, "{}", at.safe.log_e());
        // A limit below τ is judged at τ.
        let mut low = RatioTest::new(1.5);
        low.detect = Some(1.2);
        assert_eq!(low.safe_limit(), 1.5);
    }

    #[test]
    fn seconds_without_information_change_nothing() {
        let mut t = RatioTest::new(2.0);
        t.observe(0, 0, 100, 3);
        t.observe(100, 0, 0, 0);
        t.observe(100, 0, 100, 0);
        assert_eq!(t, RatioTest::new(2.0));
        let mut r = RateTest::new(0.01);
        r.observe(0, 0);
        assert_eq!(r, RateTest::new(0.01));
    }

    #[test]
    fn sparse_errors_all_on_the_canary_are_evidence() {
        // 3 errors, all on a canary that gets 10 % of the traffic, none on the baseline:
        // strong but (at α = 1 %, with the mixture's cost) not yet conclusive; a fourth is.
        let mut t = RatioTest::new(1.5);
        for _ in 0..3 {
            t.observe(10, 1, 90, 0);
        }
        let three = t.harm.log_e();
        t.observe(10, 1, 90, 0);
        assert!(three > (10.0f64).ln() && three < (100.0f64).ln(), "{three}");
        assert!(t.harm.log_e() > (100.0f64).ln(), "{}", t.harm.log_e());
    }

    #[test]
    fn rate_evidence_and_the_zero_alternative() {
        let mut high = RateTest::new(0.01);
        high.observe(1000, 50);
        assert!(high.harm.log_e() > 10.0);
        let mut clean = RateTest::new(0.01);
        clean.observe(1000, 0);
        // p = 0 alone gives (0.99)^-1000 = e^10.05, weighted one of eight; its neighbours add.
        let e = clean.safe.log_e();
        assert!(e > 10.05 - 8f64.ln() && e < 10.05, "{e}");
        clean.observe(10, 1);
        assert!(clean.safe.log_e().is_finite());
        let high_level = RateTest::new(0.9);
        assert!(
            HARM_GRID
                .iter()
                .all(|m| RateTest::alternative(high_level.level, *m) < 1.0)
        );
    }

    #[test]
    fn intervals_cover_the_estimate_and_shrink() {
        let (lo, hi) = rate_interval(100, 10, 0.05);
        assert!(lo < 0.1 && hi > 0.1 && lo > 0.0 && hi < 0.5, "{lo} {hi}");
        let (lo2, hi2) = rate_interval(10_000, 1000, 0.05);
        assert!(
            lo2 > lo && hi2 < hi && lo2 < 0.1 && hi2 > 0.1,
            "{lo2} {hi2}"
        );
        let (lo0, hi0) = rate_interval(1000, 0, 0.05);
        assert_eq!(lo0, 0.0);
        assert!(hi0 > 0.0 && hi0 < 0.01, "{hi0}");
        assert_eq!(rate_interval(0, 0, 0.05), (0.0, 1.0));
    }
}
