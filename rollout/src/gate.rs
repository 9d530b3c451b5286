//! The gates: what each one tests, how its evidence turns into a verdict, and the figures the
//! console shows beside it.
//!
//! A gate with a tolerated ratio `τ` and a minimum absolute increase `δ` calls the canary
//! harmful when its rate `p_c` is both above `τ·p_b` and above `p_b + δ`. That is proven by
//! an intersection of two tests, each at the gate's α (an intersection–union test needs no
//! split of α): the ratio test rejects `ρ ≤ τ`, and the canary's own rate test rejects
//! `p_c ≤ δ·τ/(τ−1)`. Both together imply `p_c − p_b > δ`, because `p_b < p_c/τ`.
//!
//! The gate is safe when the canary is shown *not* harmful: `ρ < τ` (ratio test, safe side)
//! or `p_c < δ` (which implies `p_c − p_b < δ`). Either suffices, so each gets half the
//! gate's α. When the plan says what it must be able to catch (`detect`, a ratio `d ≥ τ`),
//! the ratio's safe side proves `ρ < d` instead: a canary `d` times worse is shown safe
//! with probability at most α, one as good as the baseline much sooner than `ρ < τ`.

use serde::{Deserialize, Serialize};

use crate::evidence::{RateTest, RatioTest, rate_interval};
use crate::plan::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// Canary error rate against the baseline's.
    Errors,
    /// Canary share of slow requests against the baseline's.
    Latency,
    /// Canary error rate against a fixed ceiling.
    Ceiling,
}

impl GateKind {
    pub fn name(self) -> &'static str {
        match self {
            GateKind::Errors => "error rate",
            GateKind::Latency => "latency",
            GateKind::Ceiling => "error ceiling",
        }
    }

    /// What the gate counts as an event, in plain words.
    pub fn events(self) -> &'static str {
        match self {
            GateKind::Errors | GateKind::Ceiling => "errors",
            GateKind::Latency => "slow requests",
        }
    }
}

/// What a gate's evidence says now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Neither harm nor safety shown yet.
    #[default]
    Undecided,
    /// Harm proven at the gate's α.
    Harm,
    /// Safety shown at the gate's α (in the current step).
    Safe,
    /// Not judging yet (the latency gate before the baseline's quantile is frozen).
    Waiting,
}

/// Requests and the events among them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub requests: u64,
    pub events: u64,
}

impl Tally {
    pub fn new(requests: u64, events: u64) -> Tally {
        Tally {
            requests,
            events: events.min(requests),
        }
    }

    fn add(&mut self, o: Tally) {
        self.requests += o.requests;
        self.events += o.events;
    }

    /// Events per request, 0 without requests.
    pub fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.events as f64 / self.requests as f64
        }
    }
}

/// One gate's tests and what they have seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub kind: GateKind,
    pub mode: Mode,
    /// This gate's share of the plan's α.
    pub alpha: f64,
    /// Tolerated ratio (errors, latency); absent for the ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<RatioTest>,
    /// The canary's own rate above a level: `δ·τ/(τ−1)` for a ratio gate (absent when δ is
    /// 0), the ceiling for the ceiling gate. Its harm side counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<RateTest>,
    /// The canary's own rate below `δ` (ratio gates with δ > 0). Its safe side counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<RateTest>,
    /// The whole rollout's counts.
    pub canary: Tally,
    pub baseline: Tally,
    /// Counts of the current step.
    pub step_canary: Tally,
    pub step_baseline: Tally,
    pub verdict: Verdict,
}

/// The figures beside a gate: evidence in each direction against the threshold, and the
/// rates with anytime-valid intervals at the gate's α.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateSummary {
    /// `log10` of the harm evidence; harm is proven at `threshold_log10`.
    pub harm_log10: f64,
    /// `log10` of the safety evidence (this step); safety is shown at `threshold_log10`.
    pub safe_log10: f64,
    pub threshold_log10: f64,
    pub canary_rate: f64,
    pub canary_interval: (f64, f64),
    pub baseline_rate: f64,
    pub baseline_interval: (f64, f64),
    /// The limit the canary is held to, as a rate: the ceiling, or (for ratio gates) the
    /// baseline's observed rate times the tolerated ratio, at least the baseline plus δ.
    pub limit_rate: f64,
    /// Ratio gates: the ratio to the baseline below which the canary is shown safe (the
    /// plan's detect ratio, or the tolerated one); 0 for the ceiling.
    #[serde(default)]
    pub safe_ratio: f64,
}

impl Gate {
    /// A ratio gate (errors or latency): harm is above `tolerated`× and more than
    /// `min_increase` (a fraction of requests) above the baseline; safety is below
    /// `detect`× (at least `tolerated`×), or below `min_increase`.
    pub fn ratio(
        kind: GateKind,
        mode: Mode,
        alpha: f64,
        tolerated: f64,
        min_increase: f64,
        detect: Option<f64>,
    ) -> Gate {
        let (above, below) = if min_increase > 0.0 {
            let level = (min_increase * tolerated / (tolerated - 1.0)).min(0.999);
            (
                Some(RateTest::new(level)),
                Some(RateTest::new(min_increase)),
            )
        } else {
            (None, None)
        };
        let mut ratio = RatioTest::new(tolerated);
        ratio.detect = detect;
        Gate {
            ratio: Some(ratio),
            above,
            below,
            ..Gate::empty(kind, mode, alpha)
        }
    }

    /// Sets the ratio the safe side tests against; for the latency gate, whose detect ratio
    /// is known only once the baseline's threshold is frozen. Only before it has judged.
    pub fn set_detect(&mut self, detect: Option<f64>) {
        if let Some(r) = &mut self.ratio
            && self.canary.requests == 0
        {
            r.detect = detect;
        }
    }

    /// The ratio below which the ratio test calls the canary safe (`None` for the ceiling).
    pub fn safe_ratio(&self) -> Option<f64> {
        self.ratio.as_ref().map(RatioTest::safe_limit)
    }

    /// The ceiling gate: harm is a canary error rate above `ceiling`.
    pub fn ceiling(mode: Mode, alpha: f64, ceiling: f64) -> Gate {
        Gate {
            above: Some(RateTest::new(ceiling)),
            ..Gate::empty(GateKind::Ceiling, mode, alpha)
        }
    }

    fn empty(kind: GateKind, mode: Mode, alpha: f64) -> Gate {
        Gate {
            kind,
            mode,
            alpha,
            ratio: None,
            above: None,
            below: None,
            canary: Tally::default(),
            baseline: Tally::default(),
            step_canary: Tally::default(),
            step_baseline: Tally::default(),
            verdict: Verdict::Undecided,
        }
    }

    fn threshold(&self) -> f64 {
        (1.0 / self.alpha).ln()
    }

    /// `ln` of the harm evidence: the weaker of the two tests that must both reject.
    pub fn harm_log_e(&self) -> f64 {
        let above = self.above.as_ref().map(|t| t.harm.log_e());
        match (&self.ratio, above) {
            (Some(r), Some(a)) => r.harm.log_e().min(a),
            (Some(r), None) => r.harm.log_e(),
            (None, Some(a)) => a,
            (None, None) => 0.0,
        }
    }

    /// `ln` of the safety evidence, on the same scale as the threshold: with two ways to be
    /// safe, each is charged for sharing α.
    pub fn safe_log_e(&self) -> f64 {
        match (&self.ratio, &self.below) {
            (Some(r), Some(b)) => r.safe.log_e().max(b.safe.log_e()) - std::f64::consts::LN_2,
            (Some(r), None) => r.safe.log_e(),
            (None, _) => self.above.as_ref().map_or(0.0, |t| t.safe.log_e()),
        }
    }

    /// One second of the canary and the baseline (events counted the gate's way).
    pub fn observe(&mut self, canary: Tally, baseline: Tally) {
        if let Some(r) = &mut self.ratio {
            r.observe(
                canary.requests,
                canary.events,
                baseline.requests,
                baseline.events,
            );
        }
        for t in [&mut self.above, &mut self.below].into_iter().flatten() {
            t.observe(canary.requests, canary.events);
        }
        self.canary.add(canary);
        self.baseline.add(baseline);
        self.step_canary.add(canary);
        self.step_baseline.add(baseline);
        self.verdict = if self.harmful() {
            Verdict::Harm
        } else if self.safe() {
            Verdict::Safe
        } else {
            Verdict::Undecided
        };
    }

    /// `harm_log_e() >= threshold`, without computing mixtures that cannot decide it.
    fn harmful(&self) -> bool {
        let t = self.threshold();
        let ratio = self.ratio.as_ref().is_none_or(|r| r.harm.reaches(t));
        let above = self.above.as_ref().is_none_or(|a| a.harm.reaches(t));
        (self.ratio.is_some() || self.above.is_some()) && ratio && above
    }

    /// `safe_log_e() >= threshold`, the same way.
    fn safe(&self) -> bool {
        let t = self.threshold();
        match (&self.ratio, &self.below) {
            (Some(r), Some(b)) => {
                let t = t + std::f64::consts::LN_2;
                r.safe.reaches(t) || b.safe.reaches(t)
            }
            (Some(r), None) => r.safe.reaches(t),
            (None, _) => self.above.as_ref().is_some_and(|a| a.safe.reaches(t)),
        }
    }

    /// A new step: safety must be shown again at the new weight; harm evidence carries on.
    pub fn start_step(&mut self) {
        if let Some(r) = &mut self.ratio {
            r.restart_safe();
        }
        for t in [&mut self.above, &mut self.below].into_iter().flatten() {
            t.restart_safe();
        }
        self.step_canary = Tally::default();
        self.step_baseline = Tally::default();
        if self.verdict == Verdict::Safe {
            self.verdict = Verdict::Undecided;
        }
    }

    pub fn summary(&self) -> GateSummary {
        let log10 = |ln: f64| ln / std::f64::consts::LN_10;
        let limit_rate = match (&self.ratio, self.kind) {
            (_, GateKind::Ceiling) => self.above.as_ref().map_or(0.0, |t| t.level),
            (Some(r), _) => {
                let increase = self.below.as_ref().map_or(0.0, |t| t.level);
                (self.baseline.rate() * r.tolerated).max(self.baseline.rate() + increase)
            }
            (None, _) => 0.0,
        };
        GateSummary {
            harm_log10: log10(self.harm_log_e()),
            safe_log10: log10(self.safe_log_e()),
            threshold_log10: log10(self.threshold()),
            canary_rate: self.canary.rate(),
            canary_interval: rate_interval(self.canary.requests, self.canary.events, self.alpha),
            baseline_rate: self.baseline.rate(),
            baseline_interval: rate_interval(
                self.baseline.requests,
                self.baseline.events,
                self.alpha,
            ),
            limit_rate,
            safe_ratio: self.safe_ratio().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gate: &mut Gate, seconds: usize, canary: (u64, u64), baseline: (u64, u64)) {
        for _ in 0..seconds {
            gate.observe(
                Tally::new(canary.0, canary.1),
                Tally::new(baseline.0, baseline.1),
            );
        }
    }

    #[test]
    fn a_small_absolute_increase_is_not_harm_however_large_the_ratio() {
        // 0.02 % against 0.01 %: twice the errors, but only 0.01 points more.
        let mut g = Gate::ratio(GateKind::Errors, Mode::Enforce, 0.01, 1.5, 0.001, None);
        run(&mut g, 2000, (5000, 1), (5000, 0));
        run(&mut g, 2000, (5000, 1), (5000, 1));
        assert!(
            g.ratio.as_ref().unwrap().harm.log_e() > g.threshold(),
            "the ratio alone would roll back"
        );
        assert_ne!(g.verdict, Verdict::Harm);
        // ... and such a canary is shown safe by its own low rate.
        assert_eq!(g.verdict, Verdict::Safe);
    }

    #[test]
    fn a_large_regression_is_harm() {
        let mut g = Gate::ratio(GateKind::Errors, Mode::Enforce, 0.01, 1.5, 0.001, None);
        run(&mut g, 30, (20, 1), (180, 0));
        run(&mut g, 30, (20, 1), (180, 1));
        assert_eq!(g.verdict, Verdict::Harm, "{}", g.harm_log_e());
    }

    #[test]
    fn the_ceiling_gate() {
        let mut g = Gate::ceiling(Mode::Enforce, 0.01, 0.05);
        run(&mut g, 10, (100, 10), (0, 0));
        assert_eq!(g.verdict, Verdict::Harm);
        let mut g = Gate::ceiling(Mode::Enforce, 0.01, 0.05);
        run(&mut g, 10, (100, 0), (0, 0));
        assert_eq!(g.verdict, Verdict::Safe);
    }

    #[test]
    fn a_new_step_proves_safety_again_but_keeps_harm_evidence() {
        let mut g = Gate::ratio(GateKind::Errors, Mode::Enforce, 0.01, 1.5, 0.0, None);
        run(&mut g, 400, (50, 1), (50, 1));
        assert_eq!(g.verdict, Verdict::Safe);
        let harm = g.harm_log_e();
        g.start_step();
        assert_eq!(g.verdict, Verdict::Undecided);
        assert_eq!(g.harm_log_e(), harm);
        assert_eq!(g.step_canary, Tally::default());
        assert_eq!(g.canary.requests, 20_000);
    }

    #[test]
    fn summary_figures() {
        let mut g = Gate::ratio(GateKind::Errors, Mode::Enforce, 0.01, 2.0, 0.001, None);
        run(&mut g, 100, (100, 1), (100, 2));
        let s = g.summary();
        assert!((s.canary_rate - 0.01).abs() < 1e-12);
        assert!((s.baseline_rate - 0.02).abs() < 1e-12);
        assert!((s.limit_rate - 0.04).abs() < 1e-12);
        assert!(s.canary_interval.0 < 0.01 && s.canary_interval.1 > 0.01);
        assert!((s.threshold_log10 - 2.0).abs() < 1e-12);
    }
}
