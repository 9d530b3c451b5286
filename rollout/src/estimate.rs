//! How long each step of a plan is likely to take at a service's traffic, when the canary
//! behaves like the baseline: the time until every enforced gate is shown safe (from the
//! expected growth of its evidence), at least the step's minimums, at most its time limit.
//! The wizard and the CLI show these before a rollout starts; a step that times out says
//! from [`remaining`] how much longer its evidence would take.

use serde::{Deserialize, Serialize};

use crate::evidence::SAFE_GRID;
use crate::gate::{Gate, GateKind};
use crate::plan::{Mode, Plan};
use crate::sim::{normal_cdf, normal_quantile};

/// The traffic an estimate assumes for both versions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub requests_per_second: f64,
    /// Errors per request (the baseline's now).
    pub error_rate: f64,
    /// The spread of the baseline's latencies, as the standard deviation of their logarithm
    /// (`ln(p99/p50) / 2.33` for log-normal ones); unset: 0.5. It turns the plan's latency
    /// detect factor into the slow share such a canary would show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_spread: Option<f64>,
}

/// The spread assumed when the traffic does not say.
pub const DEFAULT_LATENCY_SPREAD: f64 = 0.5;

impl Traffic {
    /// The spread of log-normal latencies with this median and `quantile` (e.g. p50, p99).
    pub fn spread_from(p50_us: u64, high_us: u64, quantile: f64) -> Option<f64> {
        let z = normal_quantile(quantile);
        (p50_us > 0 && high_us > p50_us && z > 0.0)
            .then(|| (high_us as f64 / p50_us as f64).ln() / z)
    }
}

/// For log-normal latencies of spread `sigma`: how many times the baseline's share above its
/// `quantile` a canary `factor` times slower shows.
pub fn slow_share_ratio(factor: f64, sigma: f64, quantile: f64) -> f64 {
    let z = normal_quantile(quantile);
    let slower = 1.0 - normal_cdf(z - factor.ln() / sigma.max(1e-6));
    slower / (1.0 - quantile)
}

/// What decides how long a step takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    MinSeconds,
    MinRequests,
    /// The gates need this long to show safety.
    Evidence,
    /// Safety would take longer than the step's time limit.
    TimeLimit,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepEstimate {
    pub weight: u32,
    pub seconds: f64,
    pub limited_by: Limit,
    /// Expected seconds until each enforced gate is shown safe (infinite: not at this
    /// traffic).
    pub gates: Vec<(GateKind, f64)>,
}

/// Expected seconds per step for `plan` at `traffic`.
pub fn steps(plan: &Plan, traffic: &Traffic) -> Vec<StepEstimate> {
    // Safety is shown at the plan's whole α on every gate (see `gate`).
    let threshold = (1.0 / plan.alpha).ln();
    let rps = traffic.requests_per_second.max(0.0);
    plan.steps
        .iter()
        .map(|step| {
            let share = f64::from(step.weight) / 10_000.0;
            let canary_rps = rps * share;
            let mut gates = Vec::new();
            if let Some(g) = plan
                .gates
                .errors
                .as_ref()
                .filter(|g| g.mode == Mode::Enforce)
            {
                let t = ratio_gate_seconds(
                    rps,
                    share,
                    traffic.error_rate,
                    safe_limit(g.tolerated_ratio, plan.detect_errors()),
                    f64::from(g.min_increase_bp) / 10_000.0,
                    threshold,
                );
                gates.push((GateKind::Errors, t));
            }
            if let Some(g) = plan
                .gates
                .latency
                .as_ref()
                .filter(|g| g.mode == Mode::Enforce)
            {
                let spread = traffic.latency_spread.unwrap_or(DEFAULT_LATENCY_SPREAD);
                let detect = plan
                    .detect_latency()
                    .map(|f| slow_share_ratio(f, spread, g.quantile));
                let t = ratio_gate_seconds(
                    rps,
                    share,
                    1.0 - g.quantile,
                    safe_limit(g.tolerated_ratio, detect),
                    f64::from(g.min_increase_bp) / 10_000.0,
                    threshold,
                );
                gates.push((GateKind::Latency, t));
            }
            if let Some(g) = plan
                .gates
                .ceiling
                .as_ref()
                .filter(|g| g.mode == Mode::Enforce)
            {
                let level = f64::from(g.max_error_rate_bp) / 10_000.0;
                let drift = rate_safe_drift(canary_rps, traffic.error_rate, level);
                gates.push((
                    GateKind::Ceiling,
                    seconds(threshold + cost(SAFE_GRID.len() + 1), drift),
                ));
            }
            let evidence = gates.iter().map(|g| g.1).fold(0.0, f64::max);
            let by_requests = if step.min_requests == 0 {
                0.0
            } else if canary_rps > 0.0 {
                step.min_requests as f64 / canary_rps
            } else {
                f64::INFINITY
            };
            let min_seconds = f64::from(step.min_seconds);
            let (mut seconds, mut limited_by) = (min_seconds, Limit::MinSeconds);
            if by_requests > seconds {
                (seconds, limited_by) = (by_requests, Limit::MinRequests);
            }
            if evidence > seconds {
                (seconds, limited_by) = (evidence, Limit::Evidence);
            }
            if seconds > f64::from(step.max_seconds) {
                (seconds, limited_by) = (f64::from(step.max_seconds), Limit::TimeLimit);
            }
            StepEstimate {
                weight: step.weight,
                seconds,
                limited_by,
                gates,
            }
        })
        .collect()
}

/// The ratio a gate's safe side tests against: `detect`, at least `tolerated`.
fn safe_limit(tolerated: f64, detect: Option<f64>) -> f64 {
    detect.map_or(tolerated, |d| d.max(tolerated))
}

/// Expected seconds until `gate` shows safety from where its evidence stands, if the rest of
/// its step brings what the step's `step_seconds` brought so far and the canary behaves like
/// the baseline. `None`: nothing to go by (no traffic yet).
pub fn remaining(gate: &Gate, step_seconds: u64) -> Option<f64> {
    let seconds = step_seconds.max(1) as f64;
    let (c, b) = (gate.step_canary, gate.step_baseline);
    let total = c.requests + b.requests;
    if c.requests == 0 {
        return None;
    }
    let canary_rps = c.requests as f64 / seconds;
    let threshold = gate.safe_threshold();
    // The baseline's rate, or the canary's own where it has no baseline to go by.
    let rate = if b.requests > 0 { b.rate() } else { c.rate() };
    let best = |log_lr: &[f64]| log_lr.iter().copied().fold(0.0, f64::max);
    let mut paths = Vec::new();
    let union = if gate.ratio.is_some() && gate.below.is_some() {
        std::f64::consts::LN_2
    } else {
        0.0
    };
    if let Some(r) = &gate.ratio {
        let share = c.requests as f64 / total as f64;
        let events = total as f64 / seconds * rate;
        let drift = ratio_safe_drift(share, r.safe_limit(), events);
        let needed = threshold + union + cost(SAFE_GRID.len()) - best(&r.safe.log_lr);
        paths.push((needed, drift));
    }
    let own = gate.below.as_ref().or(if gate.ratio.is_none() {
        gate.above.as_ref()
    } else {
        None
    });
    if let Some(t) = own {
        let rate = if gate.ratio.is_none() { c.rate() } else { rate };
        let drift = rate_safe_drift(canary_rps, rate, t.level);
        let needed = threshold + union + cost(SAFE_GRID.len() + 1) - best(&t.safe.log_lr);
        paths.push((needed, drift));
    }
    paths
        .into_iter()
        .map(|(needed, drift)| seconds_for(needed.max(0.0), drift))
        .reduce(f64::min)
}

fn seconds_for(needed: f64, drift: f64) -> f64 {
    if needed <= 0.0 {
        0.0
    } else {
        seconds(needed, drift)
    }
}

/// The mixture's price for not knowing the best alternative: `ln` of the grid size.
fn cost(points: usize) -> f64 {
    (points as f64).ln()
}

fn seconds(needed: f64, drift: f64) -> f64 {
    if drift > 0.0 {
        needed / drift
    } else {
        f64::INFINITY
    }
}

/// A ratio gate is safe when either its ratio test (below `limit`) or the canary's own rate
/// below `δ` is.
fn ratio_gate_seconds(
    rps: f64,
    share: f64,
    rate: f64,
    limit: f64,
    increase: f64,
    threshold: f64,
) -> f64 {
    let ratio = ratio_safe_drift(share, limit, rps * rate);
    if increase <= 0.0 {
        return seconds(threshold + cost(SAFE_GRID.len()), ratio);
    }
    let union = std::f64::consts::LN_2;
    let by_ratio = seconds(threshold + union + cost(SAFE_GRID.len()), ratio);
    let by_rate = seconds(
        threshold + union + cost(SAFE_GRID.len() + 1),
        rate_safe_drift(rps * share, rate, increase),
    );
    by_ratio.min(by_rate)
}

/// Expected growth per second of the best safe alternative of the ratio test against
/// `limit`, when canary and baseline share `events_per_second` in proportion to their traffic.
fn ratio_safe_drift(share: f64, limit: f64, events_per_second: f64) -> f64 {
    if share <= 0.0 || share >= 1.0 {
        return 0.0;
    }
    let base = (share * limit + 1.0 - share).ln();
    SAFE_GRID
        .iter()
        .map(|m| {
            events_per_second * (share * m.ln() + base - (share * limit * m + 1.0 - share).ln())
        })
        .fold(0.0, f64::max)
}

/// Expected growth per second of the best safe alternative of a rate test against `level`,
/// for `requests_per_second` requests with event rate `rate`.
fn rate_safe_drift(requests_per_second: f64, rate: f64, level: f64) -> f64 {
    if rate >= level {
        return 0.0;
    }
    let per_request = |p: f64| {
        let events = if rate > 0.0 {
            rate * (p / level).ln()
        } else {
            0.0
        };
        events + (1.0 - rate) * ((1.0 - p) / (1.0 - level)).ln()
    };
    let odds = level / (1.0 - level);
    let best = SAFE_GRID
        .iter()
        .map(|m| {
            let o = odds * m;
            per_request(o / (1.0 + o))
        })
        .chain((rate == 0.0).then(|| -(1.0 - level).ln()))
        .fold(0.0, f64::max);
    requests_per_second * best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Scenario, run};

    #[test]
    fn more_traffic_decides_sooner() {
        let mut plan = Plan::through("s", "v2", &[500, 2500]);
        for s in &mut plan.steps {
            s.min_seconds = 0;
            s.min_requests = 0;
            s.max_seconds = 86_400;
        }
        let slow = steps(
            &plan,
            &Traffic {
                requests_per_second: 10.0,
                error_rate: 0.01,
                latency_spread: None,
            },
        );
        let fast = steps(
            &plan,
            &Traffic {
                requests_per_second: 1000.0,
                error_rate: 0.01,
                latency_spread: None,
            },
        );
        for (s, f) in slow.iter().zip(&fast) {
            assert!(f.seconds < s.seconds / 10.0, "{s:?} {f:?}");
            assert_eq!(f.limited_by, Limit::Evidence);
        }
    }

    #[test]
    fn minimums_and_limits_bound_the_estimate() {
        let plan = Plan::through("s", "v2", &[500]);
        let busy = steps(
            &plan,
            &Traffic {
                requests_per_second: 1e6,
                error_rate: 0.0,
                latency_spread: None,
            },
        );
        assert_eq!(
            (busy[0].seconds, busy[0].limited_by),
            (60.0, Limit::MinSeconds)
        );
        let idle = steps(
            &plan,
            &Traffic {
                requests_per_second: 0.5,
                error_rate: 0.01,
                latency_spread: None,
            },
        );
        assert_eq!(
            (idle[0].seconds, idle[0].limited_by),
            (600.0, Limit::TimeLimit)
        );
        let mut counted = plan.clone();
        counted.steps[0].min_requests = 1_000_000;
        let few = steps(
            &counted,
            &Traffic {
                requests_per_second: 1e5,
                error_rate: 0.0,
                latency_spread: None,
            },
        );
        assert_eq!(
            (few[0].seconds, few[0].limited_by),
            (200.0, Limit::MinRequests),
            "{few:?}"
        );
    }

    #[test]
    fn estimates_are_close_to_simulated_rollouts() {
        // One step, decided by evidence alone: the simulated median is within a factor of two
        // of the estimate.
        let mut plan = Plan::through("s", "v2", &[2000]);
        plan.steps[0].min_seconds = 0;
        plan.steps[0].min_requests = 0;
        plan.steps[0].max_seconds = 86_400;
        let scenario = Scenario::healthy(200.0, 0.005);
        let estimate = steps(
            &plan,
            &Traffic {
                requests_per_second: 200.0,
                error_rate: 0.005,
                latency_spread: None,
            },
        )[0]
        .seconds;
        let mut simulated: Vec<u64> = (0..101)
            .map(|seed| run(&plan, &scenario, seed, 100_000).seconds)
            .collect();
        simulated.sort_unstable();
        let median = simulated[50] as f64;
        assert!(
            median > estimate / 2.0 && median < estimate * 2.0,
            "estimate {estimate} s, simulated median {median} s"
        );
    }
}
