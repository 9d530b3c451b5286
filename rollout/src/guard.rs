//! The sample-ratio guard: is the canary getting the share of traffic the step says?
//!
//! A gate's verdict means something only when the canary and the baseline are a randomized
//! comparison: the users each sees were assigned by the split, at random. A rule that sends
//! testers (or android users) to one of them, a proxy on an old revision that sends everyone
//! to the baseline, a load balancer that pins some clients — each makes the versions'
//! populations differ, and then their numbers differ for reasons that are not the canary's.
//!
//! The unit is the **new visitor**: a request that carries none of the service's sticky keys
//! (the proxies count them per version, `Judged::fresh`). Wherever the policy sends it, its
//! version is a fresh draw — a random bucket, or a freshly minted cookie's — independent of
//! every other visitor's. When everything new goes through the step's split, each one lands
//! on the canary with probability exactly `w` (the step's weight; the split's buckets are
//! exact), so the canary's count among new visitors of the two versions is binomial. Returning
//! users are not counted: their version was drawn on their first visit and counting their
//! requests would count one draw many times.
//!
//! Two one-sided e-processes ([`RateTest`]) test the canary's share against the tolerated band
//! `[w/τ, w·τ]`: above `w·τ` (more new visitors than the split gives it) and below `w/τ`. Each
//! gets half of the guard's α. A share shown outside the band is a *mismatch*: the rollout
//! pauses before any gate's verdict is trusted, and gates judge nothing while it stands. The
//! tests start over at each step (the weight changes) and after each resume; the first
//! [`SETTLE_SECONDS`] of a step are not counted, while proxies take the new split.

use serde::{Deserialize, Serialize};

use crate::evidence::{RateTest, rate_interval};
use crate::gate::Tally;
use crate::judge::percent;
use crate::plan::{Mode, SampleRatioGuard};

/// Seconds at the start of each step (and after a resume) the guard does not count: the new
/// split reaches the proxies within them, and a second may hold requests of both weights.
pub const SETTLE_SECONDS: u64 = 3;

/// The guard's state in one rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    pub mode: Mode,
    pub tolerated_ratio: f64,
    /// α of one step's test (the plan's α over its steps), half to each direction.
    pub alpha: f64,
    /// The canary's share of new visitors the current step's split gives it.
    pub expected: f64,
    /// Seconds seen since the step (or a resume) began, settling ones included.
    pub seconds: u64,
    /// The canary's share above `expected × τ`.
    pub over: RateTest,
    /// The canary's share below `expected / τ`.
    pub under: RateTest,
    /// New visitors of both versions since the step (or a resume) began, and the canary's
    /// among them (`requests`, `events`).
    pub step: Tally,
    /// The same over the whole attempt.
    pub total: Tally,
    /// Why the guard found a mismatch, while it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

impl Guard {
    /// The guard of a plan with `steps` steps at α `alpha`, for a first step at `weight`
    /// basis points.
    pub fn new(g: &SampleRatioGuard, alpha: f64, steps: usize, weight: u32) -> Guard {
        let mut guard = Guard {
            mode: g.mode,
            tolerated_ratio: g.tolerated_ratio,
            alpha: alpha / steps.max(1) as f64,
            expected: 0.0,
            seconds: 0,
            over: RateTest::new(0.5),
            under: RateTest::new(0.5),
            step: Tally::default(),
            total: Tally::default(),
            mismatch: None,
        };
        guard.restart(weight);
        guard
    }

    fn over_level(expected: f64, tolerated: f64) -> f64 {
        (expected * tolerated).min(0.9999)
    }

    /// Starts over at `weight`: a new step, or a resume after the cause was mended.
    pub fn restart(&mut self, weight: u32) {
        let expected = f64::from(weight) / 10_000.0;
        self.expected = expected;
        self.seconds = 0;
        self.over = RateTest::new(Self::over_level(expected, self.tolerated_ratio));
        self.under = RateTest::new(expected / self.tolerated_ratio);
        self.step = Tally::default();
        self.mismatch = None;
    }

    /// `ln` of the evidence each test needs.
    fn threshold(&self) -> f64 {
        (2.0 / self.alpha).ln()
    }

    /// One second's new visitors of each version. Returns the mismatch when this second
    /// shows it first.
    pub fn observe(&mut self, canary: u64, baseline: u64) -> Option<String> {
        self.seconds += 1;
        if self.seconds <= SETTLE_SECONDS || self.mismatch.is_some() {
            return None;
        }
        let n = canary + baseline;
        if n == 0 {
            return None;
        }
        self.over.observe(n, canary);
        self.under.observe(n, canary);
        let seen = Tally::new(n, canary);
        for t in [&mut self.step, &mut self.total] {
            t.requests += seen.requests;
            t.events += seen.events;
        }
        let t = self.threshold();
        let way = if self.over.harm.reaches(t) {
            "more"
        } else if self.under.safe.reaches(t) {
            "fewer"
        } else {
            return None;
        };
        let reason = format!(
            "sample ratio: the canary got {} of new visitors for {} ({} of {}; {way} than \
             the split gives it, beyond {:.2}×): the versions are no longer a randomized \
             comparison — a rule that sends people to the canary or the baseline, a proxy on \
             an old revision, or a client pinned to one version — so no gate's verdict is \
             trusted; mend the cause and resume, and the guard starts over",
            crate::judge::rate_percent(self.step.rate()),
            percent((self.expected * 10_000.0).round() as u32),
            self.step.events,
            self.step.requests,
            self.tolerated_ratio,
        );
        self.mismatch = Some(reason.clone());
        Some(reason)
    }

    /// The guard stands in the way: a mismatch, in an enforced guard.
    pub fn blocks(&self) -> bool {
        self.mode == Mode::Enforce && self.mismatch.is_some()
    }

    /// What the console and the CLI show.
    pub fn summary(&self) -> GuardSummary {
        let log10 = |ln: f64| ln / std::f64::consts::LN_10;
        GuardSummary {
            share: self.step.rate(),
            interval: rate_interval(self.step.requests, self.step.events, self.alpha),
            low: self.expected / self.tolerated_ratio,
            high: Self::over_level(self.expected, self.tolerated_ratio),
            over_log10: log10(self.over.harm.log_e()),
            under_log10: log10(self.under.safe.log_e()),
            threshold_log10: log10(self.threshold()),
        }
    }
}

/// The guard's figures: the canary's share of new visitors this step with its
/// anytime-valid interval, the tolerated band, and the evidence each way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardSummary {
    pub share: f64,
    pub interval: (f64, f64),
    pub low: f64,
    pub high: f64,
    pub over_log10: f64,
    pub under_log10: f64,
    pub threshold_log10: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(weight: u32) -> Guard {
        Guard::new(&SampleRatioGuard::default(), 0.01, 1, weight)
    }

    #[test]
    fn the_split_s_own_share_never_trips_it_and_a_skew_does() {
        let mut rng = crate::sim::Rng::new(11);
        let mut g = guard(1000);
        for _ in 0..2000 {
            let canary = rng.binomial(100, 0.10);
            assert_eq!(g.observe(canary, 100 - canary), None);
        }
        assert!(!g.blocks());
        assert_eq!(g.total.requests, 100 * (2000 - SETTLE_SECONDS));
        // 8 % for 10 %: fewer than the split gives.
        let mut g = guard(1000);
        let mut why = None;
        for s in 0..600 {
            let canary = rng.binomial(100, 0.08);
            if let Some(w) = g.observe(canary, 100 - canary) {
                why = Some((s, w));
                break;
            }
        }
        let (s, why) = why.expect("caught");
        assert!(s > 10, "not on a few seconds: {s}");
        assert!(why.contains("for 10 %") && why.contains("fewer"), "{why}");
        assert!(g.blocks());
        // Once found it stands; counting stops until it starts over.
        let seen = g.step.requests;
        assert_eq!(g.observe(10, 90), None);
        assert_eq!(g.step.requests, seen);
        g.restart(2000);
        assert!(!g.blocks() && g.step == Tally::default());
        assert!((g.expected - 0.2).abs() < 1e-12);
    }

    #[test]
    fn settling_seconds_are_not_counted_and_a_canary_with_everyone_new_is_more() {
        let mut g = guard(500);
        for _ in 0..SETTLE_SECONDS {
            assert_eq!(g.observe(100, 0), None);
        }
        assert_eq!(g.step.requests, 0);
        let why = (0..30).find_map(|_| g.observe(40, 60)).expect("caught");
        assert!(why.contains("more than the split gives"), "{why}");
        let mut dry = Guard::new(
            &SampleRatioGuard {
                mode: Mode::DryRun,
                ..SampleRatioGuard::default()
            },
            0.01,
            3,
            500,
        );
        (0..40).for_each(|_| {
            dry.observe(40, 60);
        });
        assert!(
            dry.mismatch.is_some() && !dry.blocks(),
            "shown, never acted on"
        );
        assert!((dry.alpha - 0.01 / 3.0).abs() < 1e-15);
    }
}
