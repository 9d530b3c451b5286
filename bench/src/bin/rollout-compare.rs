//! `grayline-rollout-compare`: the same simulated canary streams judged three ways, printed
//! as the table in docs/rollouts.md:
//!
//! - **Grayline**: the rollout judge (anytime-valid gates), checked every second;
//! - **fixed threshold, every interval** (as Flagger and Argo Rollouts analyses do): every
//!   60 s the canary's error rate and p99 latency over the last interval are compared with
//!   fixed limits; an interval without canary requests is a failed check ("no values
//!   found"); the fifth failed check rolls back;
//! - **Mann–Whitney on per-minute values** (as Kayenta's judge does): at the end of each
//!   step, the canary's per-minute error rates and p99 latencies are compared with the
//!   baseline's by a one-sided exact Mann–Whitney test at 5 %, with a 25 % effect-size
//!   tolerance; a metric judged higher fails the step and rolls back.
//!
//! Every method sees the same plan (5 %, 20 %, 50 %, five minutes each, then promotion) and
//! the same seeded scenarios. `--runs N` (default 1000), `--seed S`.
//!
//! A second table does the same for a business metric — checkout conversions per session,
//! where fewer is harm: Grayline's metric gate (`good_events`, every 10 s, tolerated 1.05×,
//! detect 1.25×) against a fixed floor checked every 60 s (the canary's conversion rate
//! below 0.9 × the baseline's true rate, or no sessions, fails a check; five fail) and
//! Mann–Whitney on per-minute conversion rates (the baseline's significantly higher, by more
//! than 25 %, at the end of a step).

use clap::Parser;
use grayline_rollout::plan::{MetricGate, MetricKind};
use grayline_rollout::sim::{Metric, Rng, Scenario, Shift, run, run_with_metrics};
use grayline_rollout::{Mode, Plan};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    runs: u64,
    #[arg(long, default_value_t = 20_261_201)]
    seed: u64,
}

const STEPS: [u32; 3] = [500, 2000, 5000];
const STEP_SECONDS: u64 = 300;
const INTERVAL: u64 = 60;
const FAILED_CHECKS: u32 = 5;
const TOLERATED: f64 = 1.5;

fn plan() -> Plan {
    let mut plan = Plan::through("shop", "v2", &STEPS);
    for s in &mut plan.steps {
        s.min_seconds = 60;
        s.min_requests = 100;
        s.max_seconds = STEP_SECONDS as u32;
    }
    plan
}

/// How one method did on one scenario.
#[derive(Debug, Default)]
struct Tally {
    rolled_back: u64,
    runs: u64,
    requests: Vec<u64>,
    seconds: Vec<u64>,
}

impl Tally {
    fn add(&mut self, rolled_back: bool, requests: u64, seconds: u64) {
        self.runs += 1;
        if rolled_back {
            self.rolled_back += 1;
            self.requests.push(requests);
            self.seconds.push(seconds);
        }
    }

    fn cell(&mut self, healthy: bool) -> String {
        let share = 100.0 * self.rolled_back as f64 / self.runs as f64;
        if healthy {
            return format!("{share:.1} % false rollbacks");
        }
        if self.requests.is_empty() {
            return "0 % caught".to_string();
        }
        self.requests.sort_unstable();
        self.seconds.sort_unstable();
        let mid = self.requests.len() / 2;
        if self.requests[mid] == 0 {
            return format!("{share:.1} % caught; median {} s", self.seconds[mid]);
        }
        format!(
            "{share:.1} % caught; median {} req, {} s",
            self.requests[mid], self.seconds[mid]
        )
    }
}

/// `p` quantile of `v` (sorted in place); `None` for no values.
fn quantile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// One-sided exact Mann–Whitney p-value that `a` tends to be larger than `b` (ties count
/// half), by enumerating every split of the pooled values.
fn mann_whitney_greater(a: &[f64], b: &[f64]) -> f64 {
    let pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    let u = |xs: &[f64], ys: &[f64]| -> f64 {
        xs.iter()
            .map(|x| {
                ys.iter()
                    .map(|y| {
                        if x > y {
                            1.0
                        } else if x == y {
                            0.5
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let observed = u(a, b);
    let (n, k) = (pooled.len(), a.len());
    let (mut at_least, mut total) = (0u64, 0u64);
    // Every k-subset of indices, as a bit mask.
    for mask in 0u32..(1 << n) {
        if mask.count_ones() as usize != k {
            continue;
        }
        let (xs, ys): (Vec<f64>, Vec<f64>) = {
            let mut xs = Vec::with_capacity(k);
            let mut ys = Vec::with_capacity(n - k);
            for (i, v) in pooled.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    xs.push(*v);
                } else {
                    ys.push(*v);
                }
            }
            (xs, ys)
        };
        total += 1;
        if u(&xs, &ys) >= observed - 1e-9 {
            at_least += 1;
        }
    }
    at_least as f64 / total as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    quantile(&mut v, 0.5).unwrap_or(0.0)
}

/// Kayenta-style verdict on one metric: significantly higher and by more than the tolerance.
fn higher(canary: &[f64], baseline: &[f64]) -> bool {
    mann_whitney_greater(canary, baseline) < 0.05 && median(canary) > 1.25 * median(baseline)
}

/// The fixed-threshold and Mann–Whitney judges on one stream, which both follow the plan's
/// fixed schedule until they roll back. Returns (rolled back, canary requests, seconds) for
/// each.
fn classic(s: &Scenario, seed: u64) -> ((bool, u64, u64), (bool, u64, u64)) {
    let mut rng = Rng::new(seed);
    let mut latencies = Rng::new(seed ^ 0x5eed);
    let mut stream = s.stream(&mut rng);
    let threshold_p99 = s.threshold_us() * 1.2;
    let max_error = (s.baseline_errors * TOLERATED).max(0.001);
    // When each rolled back: (canary requests, second).
    let mut flagger: Option<(u64, u64)> = None;
    let mut kayenta: Option<(u64, u64)> = None;
    let mut failed_checks = 0;
    let mut canary_requests = 0u64;
    // Per-interval tallies (fixed threshold) and per-minute series of this step (Kayenta).
    let (mut n, mut e, mut lat) = (0u64, 0u64, Vec::new());
    let mut minutes: Vec<(f64, f64, f64, f64)> = Vec::new();
    let (mut bn, mut be, mut blat) = (0u64, 0u64, Vec::new());
    for second in 1..=STEP_SECONDS * STEPS.len() as u64 {
        let step = ((second - 1) / STEP_SECONDS) as usize;
        let sec = stream.second(&mut rng, second as i64, STEPS[step]);
        canary_requests += sec.canary.requests;
        n += sec.canary.requests;
        e += sec.canary.errors;
        bn += sec.baseline.requests;
        be += sec.baseline.errors;
        for _ in 0..sec.canary.requests {
            lat.push(s.latency_us(&mut latencies, true));
        }
        for _ in 0..sec.baseline.requests {
            blat.push(s.latency_us(&mut latencies, false));
        }
        if second % INTERVAL == 0 {
            let p99 = quantile(&mut lat, 0.99);
            let bp99 = quantile(&mut blat, 0.99).unwrap_or(0.0);
            if flagger.is_none() {
                let failed = match p99 {
                    None => true,
                    Some(p99) => e as f64 / n as f64 > max_error || p99 > threshold_p99,
                };
                if failed {
                    failed_checks += 1;
                }
                if failed_checks >= FAILED_CHECKS {
                    flagger = Some((canary_requests, second));
                }
            }
            let rate = |e: u64, n: u64| if n == 0 { 0.0 } else { e as f64 / n as f64 };
            minutes.push((rate(e, n), p99.unwrap_or(0.0), rate(be, bn), bp99));
            (n, e, bn, be) = (0, 0, 0, 0);
            lat.clear();
            blat.clear();
        }
        if second % STEP_SECONDS == 0 {
            if kayenta.is_none() {
                let col =
                    |f: fn(&(f64, f64, f64, f64)) -> f64| minutes.iter().map(f).collect::<Vec<_>>();
                let errors_high = higher(&col(|m| m.0), &col(|m| m.2));
                let latency_high = higher(&col(|m| m.1), &col(|m| m.3));
                if errors_high || latency_high {
                    kayenta = Some((canary_requests, second));
                }
            }
            minutes.clear();
        }
        if flagger.is_some() && kayenta.is_some() {
            break;
        }
    }
    let out = |r: Option<(u64, u64)>| r.map_or((false, 0, 0), |(req, s)| (true, req, s));
    (out(flagger), out(kayenta))
}

/// Checkout sessions: `per_second` at full weight, converting at `rate` (the canary's
/// `× effect`), both versions' rates `÷ 3` during `outage` (a shared dependency failing).
#[derive(Clone, Copy, Debug)]
struct Conversions {
    per_second: f64,
    rate: f64,
    effect: f64,
    outage: Option<(u64, u64)>,
}

impl Conversions {
    fn shifts(&self) -> Vec<Shift> {
        self.outage
            .map(|(start, seconds)| Shift {
                start,
                seconds,
                factor: 1.0 / 3.0,
            })
            .into_iter()
            .collect()
    }
}

/// The plan with the conversions gate as its only enforced gate.
fn conversions_plan() -> Plan {
    let mut plan = plan();
    if let Some(g) = plan.gates.errors.as_mut() {
        g.mode = Mode::DryRun;
    }
    if let Some(g) = plan.gates.latency.as_mut() {
        g.mode = Mode::DryRun;
    }
    plan.gates.metrics.push(MetricGate {
        name: "conversions".into(),
        kind: MetricKind::GoodEvents,
        query: r#"sum(increase(paid_total{version="{{version}}"}[{{interval}}]))"#.into(),
        exposure: Some(r#"sum(increase(carts_total{version="{{version}}"}[{{interval}}]))"#.into()),
        interval_seconds: 10,
        tolerated_ratio: 1.05,
        min_difference: 0.0,
        detect: Some(1.25),
        no_data_seconds: 600,
        mode: Mode::Enforce,
    });
    plan
}

/// The fixed floor and Mann–Whitney judges on one conversions stream: (rolled back, 0,
/// seconds) for each.
fn classic_conversions(c: &Conversions, seed: u64) -> ((bool, u64, u64), (bool, u64, u64)) {
    let mut rng = Rng::new(seed);
    let floor = 0.9 * c.rate;
    let (mut flagger, mut kayenta): (Option<u64>, Option<u64>) = (None, None);
    let mut failed_checks = 0;
    let (mut n, mut e, mut bn, mut be) = (0u64, 0u64, 0u64, 0u64);
    let mut minutes: Vec<(f64, f64)> = Vec::new();
    for second in 1..=STEP_SECONDS * STEPS.len() as u64 {
        let step = ((second - 1) / STEP_SECONDS) as usize;
        let w = f64::from(STEPS[step]) / 10_000.0;
        let shift = match c.outage {
            Some((start, len)) if (start..start + len).contains(&second) => 1.0 / 3.0,
            _ => 1.0,
        };
        let cs = rng.poisson(c.per_second * w);
        let bs = rng.poisson(c.per_second * (1.0 - w));
        n += cs;
        e += rng.binomial(cs, c.rate * c.effect * shift);
        bn += bs;
        be += rng.binomial(bs, c.rate * shift);
        if second % INTERVAL == 0 {
            if flagger.is_none() {
                // No sessions: "no values found", a failed check.
                if n == 0 || (e as f64 / n as f64) < floor {
                    failed_checks += 1;
                }
                if failed_checks >= FAILED_CHECKS {
                    flagger = Some(second);
                }
            }
            let rate = |e: u64, n: u64| if n == 0 { 0.0 } else { e as f64 / n as f64 };
            minutes.push((rate(e, n), rate(be, bn)));
            (n, e, bn, be) = (0, 0, 0, 0);
        }
        if second % STEP_SECONDS == 0 {
            let canary: Vec<f64> = minutes.iter().map(|m| m.0).collect();
            let baseline: Vec<f64> = minutes.iter().map(|m| m.1).collect();
            if kayenta.is_none() && higher(&baseline, &canary) {
                kayenta = Some(second);
            }
            minutes.clear();
        }
    }
    let out = |r: Option<u64>| r.map_or((false, 0, 0), |s| (true, 0, s));
    (out(flagger), out(kayenta))
}

/// One row of a table: each method's outcome (rolled back, canary requests, seconds) on
/// `args.runs` seeds, as cells.
fn row(
    name: &str,
    healthy: bool,
    args: &Args,
    mut judge: impl FnMut(u64) -> [(bool, u64, u64); 3],
) {
    let mut tallies: [Tally; 3] = Default::default();
    for i in 0..args.runs {
        let outcomes = judge(args.seed.wrapping_add(i));
        for (t, (rolled_back, requests, seconds)) in tallies.iter_mut().zip(outcomes) {
            t.add(rolled_back, requests, seconds);
        }
    }
    let cells: Vec<String> = tallies.iter_mut().map(|t| t.cell(healthy)).collect();
    println!("| {name} | {} |", cells.join(" | "));
}

fn compare_conversions(args: &Args) {
    let base = Conversions {
        per_second: 100.0,
        rate: 0.3,
        effect: 1.0,
        outage: None,
    };
    let scenarios: Vec<(&str, bool, Conversions)> = vec![
        ("same as baseline, 30 %, 100 sessions/s", true, base),
        (
            "same as baseline, 10 sessions/s",
            true,
            Conversions {
                per_second: 10.0,
                ..base
            },
        ),
        (
            "a shared outage: both ÷3 for five minutes",
            true,
            Conversions {
                outage: Some((200, 300)),
                ..base
            },
        ),
        (
            "conversions 10 % lower",
            false,
            Conversions {
                effect: 0.9,
                ..base
            },
        ),
        (
            "conversions 20 % lower",
            false,
            Conversions {
                effect: 0.8,
                ..base
            },
        ),
        (
            "conversions 50 % lower",
            false,
            Conversions {
                effect: 0.5,
                ..base
            },
        ),
    ];
    let plan = conversions_plan();
    let limit = STEP_SECONDS * STEPS.len() as u64;
    println!(
        "\n| conversions scenario | Grayline metric gate (every 10 s) | fixed floor (every 60 s) | Mann–Whitney per minute (each step) |"
    );
    println!("|---|---|---|---|");
    let traffic = Scenario::healthy(100.0, 0.01);
    for (name, healthy, c) in &scenarios {
        let metrics = [(
            Metric::Events {
                per_second: c.per_second,
                rate: c.rate,
                effect: c.effect,
            },
            c.shifts(),
        )];
        row(name, *healthy, args, |seed| {
            let o = run_with_metrics(&plan, &traffic, &metrics, seed, limit);
            let (fl, ka) = classic_conversions(c, seed);
            [(o.rolled_back, 0, o.seconds), fl, ka]
        });
    }
}

fn main() {
    let args = Args::parse();
    let base = Scenario::healthy(100.0, 0.01);
    let with = |f: &dyn Fn(&mut Scenario)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let scenarios: Vec<(&str, bool, Scenario)> = vec![
        (
            "same as baseline, 1 % errors, 100 req/s",
            true,
            base.clone(),
        ),
        (
            "same as baseline, 0.1 % errors",
            true,
            with(&|s| {
                s.baseline_errors = 0.001;
                s.canary_errors = 0.001;
            }),
        ),
        (
            "same as baseline, 2 req/s",
            true,
            with(&|s| s.requests_per_second = 2.0),
        ),
        (
            "errors 2× (2 % vs 1 %)",
            false,
            with(&|s| s.canary_errors = 0.02),
        ),
        (
            "errors 3× (3 % vs 1 %)",
            false,
            with(&|s| s.canary_errors = 0.03),
        ),
        (
            "errors 10× (10 % vs 1 %)",
            false,
            with(&|s| s.canary_errors = 0.10),
        ),
        ("latency +25 %", false, with(&|s| s.latency_factor = 1.25)),
        (
            "sparse: 1 % vs 0 % errors, 20 req/s",
            false,
            with(&|s| {
                s.requests_per_second = 20.0;
                s.baseline_errors = 0.0;
                s.canary_errors = 0.01;
            }),
        ),
        (
            "errors 10× at 2 req/s",
            false,
            with(&|s| {
                s.requests_per_second = 2.0;
                s.canary_errors = 0.10;
            }),
        ),
    ];
    let plan = plan();
    let limit = STEP_SECONDS * STEPS.len() as u64;
    println!(
        "{} runs per scenario, seed {}; plan 5 % → 20 % → 50 % → promote, {} s per step\n",
        args.runs, args.seed, STEP_SECONDS
    );
    println!(
        "| scenario | Grayline (every second) | fixed threshold (every 60 s) | Mann–Whitney per minute (each step) |"
    );
    println!("|---|---|---|---|");
    for (name, healthy, scenario) in &scenarios {
        row(name, *healthy, &args, |seed| {
            let o = run(&plan, scenario, seed, limit);
            let (fl, ka) = classic(scenario, seed);
            [(o.rolled_back, o.canary_requests, o.seconds), fl, ka]
        });
    }
    compare_conversions(&args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_exact() {
        // Complete separation of 5 against 5: 1 of 252 splits.
        let p = mann_whitney_greater(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!((p - 1.0 / 252.0).abs() < 1e-12);
        // All zeros but one: nowhere near significant.
        let p = mann_whitney_greater(&[0.0, 0.02, 0.0, 0.0, 0.0], &[0.0; 5]);
        assert!(p > 0.4, "{p}");
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
