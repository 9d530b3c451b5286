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
//!
//! A gate has two levels. Harm is shown at its share of the plan's α (`alpha`, α/k with `k`
//! enforced gates); the rollout itself rolls back on the gates' harm evidence averaged
//! ([`crate::judge::Rollout::harm_log_e`]), which that share implies. Safety is shown at the
//! plan's whole α (`safe_alpha`): a promotion needs every enforced gate shown safe, so a
//! canary worse than `detect` on one gate is promoted only if that gate errs, an
//! intersection–union test again.

use serde::{Deserialize, Serialize};

use crate::evidence::{Mixture, RateTest, RatioTest, rate_interval};
use crate::plan::{MetricGate, MetricKind, Mode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// Canary error rate against the baseline's.
    Errors,
    /// Canary share of slow requests against the baseline's.
    Latency,
    /// Canary error rate against a fixed ceiling.
    Ceiling,
    /// A metric the application has, from Prometheus (see [`MetricState`]).
    Metric,
    /// An application event the proxies count (see [`EventState`]).
    Event,
}

impl GateKind {
    pub fn name(self) -> &'static str {
        match self {
            GateKind::Errors => "error rate",
            GateKind::Latency => "latency",
            GateKind::Ceiling => "error ceiling",
            GateKind::Metric => "metric",
            GateKind::Event => "event",
        }
    }

    /// What the gate counts as an event, in plain words.
    pub fn events(self) -> &'static str {
        match self {
            GateKind::Errors | GateKind::Ceiling => "errors",
            GateKind::Latency => "slow requests",
            GateKind::Metric | GateKind::Event => "events",
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
    /// This gate's share of the plan's α: harm alone, and the intervals shown.
    pub alpha: f64,
    /// The level safety is shown at: the plan's α (0 in state stored before there were two
    /// levels: then `alpha`).
    #[serde(default)]
    pub safe_alpha: f64,
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
    /// Metric gates: what the gate queries and what its intervals showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Box<MetricState>>,
    /// Event gates: the event judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventState>,
}

/// What an event gate judges: one of the service's declared events, counted by the proxies
/// in the judged sample and judged per second like errors. Good events (fewer is harm) are
/// judged as the mirror image, as a metric gate's are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventState {
    pub name: String,
    /// Fewer is harm.
    #[serde(default)]
    pub good: bool,
}

/// One version's answer for one interval of a metric gate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// Events out of exposures (event kinds), rounded to whole counts when judged.
    Events { events: f64, exposures: f64 },
    /// The interval's value (value kinds).
    Value(f64),
}

/// A metric gate's own state: its settings, the intervals judged and the last answers.
///
/// Event kinds are judged as the error gate is, per interval instead of per second: the
/// ratio test conditions on the interval's events, so the baseline's level may drift. Good
/// events (fewer is harm) are the mirror image: the same tests with the versions' roles
/// swapped. Value kinds are judged by a sign test on paired intervals: harm is shown when
/// the canary is worse than `tolerated_ratio` × the baseline (and by more than
/// `min_difference`) in more than half of them, safety when it is worse than `detect` × the
/// baseline in fewer than half.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricState {
    pub name: String,
    pub kind: MetricKind,
    pub interval_seconds: u32,
    pub no_data_seconds: u32,
    pub tolerated_ratio: f64,
    pub min_difference: f64,
    /// The ratio safety is shown below (value kinds; event kinds keep it in the ratio test).
    pub safe_ratio: f64,
    /// The end of the newest interval judged or given up on; no interval at or before it is
    /// judged again. The first interval begins after the warm-up.
    pub last_end_unix_s: i64,
    /// The newest interval with answers for both versions (or the time the gate was armed).
    pub last_data_unix_s: i64,
    /// Intervals judged, and intervals without an answer.
    pub intervals: u64,
    pub missing: u64,
    /// Value kinds: sums of the judged intervals' values, for their means.
    pub canary_sum: f64,
    pub baseline_sum: f64,
    /// The last judged interval's answers: rates (event kinds) or values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<(f64, f64)>,
    /// Why the last interval had no evidence, until one has again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl MetricState {
    /// Starts judging at `now` after `warmup` seconds: the first interval is the first whole
    /// one after that, and the no-data clock starts then.
    pub fn arm(&mut self, now_unix_s: i64, warmup: u32) {
        let step = i64::from(self.interval_seconds);
        let from = now_unix_s + i64::from(warmup);
        // The last "judged" end is the first interval's start, a multiple of the interval.
        self.last_end_unix_s = (from + step - 1).div_euclid(step) * step;
        // The no-data clock starts when judging does.
        self.last_data_unix_s = from;
    }

    /// The next interval to query at `now`, if one is due: the newest whole interval that
    /// ended at least `settle` seconds ago (so its scrapes have landed) and after the last
    /// one. Intervals the server missed are skipped, never judged late.
    pub fn due(&self, now_unix_s: i64, settle: i64) -> Option<i64> {
        let step = i64::from(self.interval_seconds);
        let end = (now_unix_s - settle).div_euclid(step) * step;
        (end > self.last_end_unix_s).then_some(end)
    }

    /// Seconds since the gate last had answers, at the end of interval `end`.
    pub fn without_data(&self, end_unix_s: i64) -> i64 {
        end_unix_s - self.last_data_unix_s
    }
}

/// The figures beside a gate: evidence in each direction against the threshold, and the
/// rates with anytime-valid intervals at the gate's α.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateSummary {
    /// `log10` of the harm evidence; harm is proven at `threshold_log10`.
    pub harm_log10: f64,
    /// `log10` of the safety evidence (this step); safety is shown at
    /// `safe_threshold_log10`.
    pub safe_log10: f64,
    pub threshold_log10: f64,
    #[serde(default)]
    pub safe_threshold_log10: f64,
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
            safe_alpha: alpha,
            ratio: None,
            above: None,
            below: None,
            canary: Tally::default(),
            baseline: Tally::default(),
            step_canary: Tally::default(),
            step_baseline: Tally::default(),
            verdict: Verdict::Undecided,
            metric: None,
            event: None,
        }
    }

    /// An event gate: the error gate's tests on the event's share of judged requests.
    pub fn event(g: &crate::plan::EventGate, alpha: f64) -> Gate {
        let mut gate = Gate::ratio(
            GateKind::Event,
            g.mode,
            alpha,
            g.tolerated_ratio,
            g.min_difference,
            g.detect,
        );
        gate.event = Some(EventState {
            name: g.event.clone(),
            good: g.kind.good(),
        });
        gate
    }

    /// Fewer of the gate's events is harm (good events).
    fn good(&self) -> bool {
        self.metric.as_ref().is_some_and(|m| m.kind.good())
            || self.event.as_ref().is_some_and(|e| e.good)
    }

    /// A metric gate; it judges nothing until it is armed ([`MetricState::arm`]).
    pub fn metric(g: &MetricGate, alpha: f64) -> Gate {
        let mut gate = if g.kind.counts() {
            Gate::ratio(
                GateKind::Metric,
                g.mode,
                alpha,
                g.tolerated_ratio,
                g.min_difference,
                g.detect,
            )
        } else {
            // Shares of intervals worse than the limits, against one half.
            Gate {
                above: Some(RateTest::new(0.5)),
                below: Some(RateTest::new(0.5)),
                ..Gate::empty(GateKind::Metric, g.mode, alpha)
            }
        };
        let state = MetricState {
            name: g.name.clone(),
            kind: g.kind,
            interval_seconds: g.interval_seconds.max(1),
            no_data_seconds: g.no_data_seconds,
            tolerated_ratio: g.tolerated_ratio,
            min_difference: g.min_difference,
            safe_ratio: g.detect.unwrap_or(g.tolerated_ratio).max(g.tolerated_ratio),
            last_end_unix_s: 0,
            last_data_unix_s: 0,
            intervals: 0,
            missing: 0,
            canary_sum: 0.0,
            baseline_sum: 0.0,
            last: None,
            problem: None,
        };
        gate.metric = Some(Box::new(state));
        gate
    }

    /// The gate's name as reasons and views show it: the built-in gate's, or the metric
    /// gate's own.
    pub fn title(&self) -> String {
        match (&self.metric, &self.event) {
            (Some(m), _) => format!("metric {}", m.name),
            (None, Some(e)) => format!("event {}", e.name),
            (None, None) => self.kind.name().to_string(),
        }
    }

    /// Judges one interval of a metric gate (answers for both versions). Readings of
    /// another kind than the gate's are no evidence.
    pub fn observe_metric(&mut self, canary: Reading, baseline: Reading) {
        let Some(m) = self.metric.as_deref_mut() else {
            return;
        };
        let count = |x: f64| {
            if x.is_finite() && x > 0.0 {
                x.round() as u64
            } else {
                0
            }
        };
        let (kind, tolerated, safe, margin) =
            (m.kind, m.tolerated_ratio, m.safe_ratio, m.min_difference);
        match (canary, baseline) {
            (
                Reading::Events {
                    events: ce,
                    exposures: cx,
                },
                Reading::Events {
                    events: be,
                    exposures: bx,
                },
            ) if kind.counts() => {
                let (c, b) = (
                    Tally::new(count(cx), count(ce)),
                    Tally::new(count(bx), count(be)),
                );
                m.last = Some((c.rate(), b.rate()));
                self.observe(c, b);
            }
            (Reading::Value(c), Reading::Value(b)) if !kind.counts() => {
                m.last = Some((c, b));
                m.canary_sum += c;
                m.baseline_sum += b;
                let worse_than = |ratio: f64| {
                    if kind.good() {
                        c < b / ratio - margin
                    } else {
                        c > b * ratio + margin
                    }
                };
                let harmful = u64::from(worse_than(tolerated));
                let unsafe_ = u64::from(worse_than(safe));
                if let Some(t) = &mut self.above {
                    t.observe(1, harmful);
                }
                if let Some(t) = &mut self.below {
                    t.observe(1, unsafe_);
                }
                // Intervals, and those worse than the tolerated (canary) and the safe limit.
                self.count(Tally::new(1, harmful), Tally::new(1, unsafe_));
            }
            _ => return,
        }
        if let Some(m) = self.metric.as_deref_mut() {
            m.intervals += 1;
            m.problem = None;
        }
    }

    /// An interval without evidence: the query failed or had no answer for a version.
    pub fn no_data(&mut self, problem: String) {
        if let Some(m) = self.metric.as_deref_mut() {
            m.missing += 1;
            m.problem = Some(problem);
        }
    }

    /// Shows safety at `alpha` (the plan's α) while harm stays at the gate's share.
    pub fn with_safe_alpha(mut self, alpha: f64) -> Gate {
        self.safe_alpha = alpha;
        self
    }

    fn threshold(&self) -> f64 {
        (1.0 / self.alpha).ln()
    }

    /// `ln` of what the safety evidence must reach.
    pub fn safe_threshold(&self) -> f64 {
        let alpha = if self.safe_alpha > 0.0 {
            self.safe_alpha
        } else {
            self.alpha
        };
        (1.0 / alpha).ln()
    }

    /// `ln` of the harm evidence: the weaker of the two tests that must both reject.
    pub fn harm_log_e(&self) -> f64 {
        self.harm_by(Mixture::log_e)
    }

    /// An upper bound of [`Gate::harm_log_e`] that computes no mixture (each mixture is at
    /// most its largest grid point): what the judge checks every second first.
    pub fn harm_bound_log_e(&self) -> f64 {
        self.harm_by(Mixture::max_log_lr)
    }

    fn harm_by(&self, of: impl Fn(&Mixture) -> f64) -> f64 {
        let above = self.above.as_ref().map(|t| of(&t.harm));
        match (&self.ratio, above) {
            (Some(r), Some(a)) => of(&r.harm).min(a),
            (Some(r), None) => of(&r.harm),
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
            (None, Some(b)) => b.safe.log_e(),
            (None, None) => self.above.as_ref().map_or(0.0, |t| t.safe.log_e()),
        }
    }

    /// One second of the canary and the baseline (events counted the gate's way; for good
    /// events the tests see the versions the other way round, the tallies stay as they are).
    pub fn observe(&mut self, canary: Tally, baseline: Tally) {
        if self.good() {
            self.observe_tests(baseline, canary);
        } else {
            self.observe_tests(canary, baseline);
        }
        self.count(canary, baseline);
    }

    /// Feeds the tests: `canary` is the side whose higher rate is harm.
    fn observe_tests(&mut self, canary: Tally, baseline: Tally) {
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
    }

    /// Adds to the counts shown and judges the verdict again.
    fn count(&mut self, canary: Tally, baseline: Tally) {
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

    /// `safe_log_e() >= safe_threshold`, the same way.
    fn safe(&self) -> bool {
        let t = self.safe_threshold();
        match (&self.ratio, &self.below) {
            (Some(r), Some(b)) => {
                let t = t + std::f64::consts::LN_2;
                r.safe.reaches(t) || b.safe.reaches(t)
            }
            (Some(r), None) => r.safe.reaches(t),
            (None, Some(b)) => b.safe.reaches(t),
            (None, None) => self.above.as_ref().is_some_and(|a| a.safe.reaches(t)),
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
        let good = self.good();
        let limit_rate = match (&self.ratio, self.kind) {
            (_, GateKind::Ceiling) => self.above.as_ref().map_or(0.0, |t| t.level),
            // Fewer good events is harm: the limit is a floor.
            (Some(r), _) if good => {
                let decrease = self.below.as_ref().map_or(0.0, |t| t.level);
                (self.baseline.rate() / r.tolerated)
                    .min(self.baseline.rate() - decrease)
                    .max(0.0)
            }
            (Some(r), _) => {
                let increase = self.below.as_ref().map_or(0.0, |t| t.level);
                (self.baseline.rate() * r.tolerated).max(self.baseline.rate() + increase)
            }
            // Value kinds: the share of intervals worse than the tolerated ratio, against half.
            (None, GateKind::Metric) => 0.5,
            (None, _) => 0.0,
        };
        let safe_ratio = match &self.metric {
            Some(m) if !m.kind.counts() => m.safe_ratio,
            _ => self.safe_ratio().unwrap_or(0.0),
        };
        GateSummary {
            harm_log10: log10(self.harm_log_e()),
            safe_log10: log10(self.safe_log_e()),
            threshold_log10: log10(self.threshold()),
            safe_threshold_log10: log10(self.safe_threshold()),
            canary_rate: self.canary.rate(),
            canary_interval: rate_interval(self.canary.requests, self.canary.events, self.alpha),
            baseline_rate: self.baseline.rate(),
            baseline_interval: rate_interval(
                self.baseline.requests,
                self.baseline.events,
                self.alpha,
            ),
            limit_rate,
            safe_ratio,
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
