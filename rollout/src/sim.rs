//! Seeded synthetic traffic for simulated rollouts: Poisson arrivals split between canary and
//! baseline by the current weight, errors and slow requests drawn per request (binomial), and
//! log-normal latencies — and the production world that breaks those assumptions for both
//! versions at once ([`World`]): shared outages, traffic swings, latency spikes, heavy users
//! on a sticky split, and the proxies' breakers and retries in the loop. Everything is
//! reproducible from a seed.

use grayline_routing::StickyKey;

use crate::estimate::slow_share_ratio;
use crate::judge::{LatencyThreshold, Phase, Promotion, Rollout, Sample, Second};
use crate::plan::{MAX_EVENT_GATES, Plan};

/// xoshiro256** seeded through splitmix64: small, fast, good enough for simulations.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1).
    pub fn f64(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.f64(), self.f64());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Poisson: exact (Knuth) below a mean of 30, a rounded normal above.
    pub fn poisson(&mut self, mean: f64) -> u64 {
        if mean <= 0.0 {
            return 0;
        }
        if mean >= 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.f64();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }

    /// Binomial, exact: geometric skips between successes, so it costs O(n·min(p, 1−p)).
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        let log_q = (1.0 - p).ln();
        let (mut count, mut position) = (0, 0u64);
        loop {
            let skip = (self.f64().ln() / log_q).floor() as u64 + 1;
            position = position.saturating_add(skip);
            if position > n {
                return count;
            }
            count += 1;
        }
    }
}

/// The standard normal distribution function (Abramowitz–Stegun 7.1.26, error < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// The `q` quantile of the standard normal, by bisection.
pub fn normal_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// What a simulated service looks like.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Mean requests per second to the service (Poisson).
    pub requests_per_second: f64,
    pub baseline_errors: f64,
    pub canary_errors: f64,
    /// Median latency of the baseline, microseconds; latencies are log-normal.
    pub median_us: f64,
    /// Spread of `ln(latency)`.
    pub sigma: f64,
    /// The canary's latencies are the baseline's times this.
    pub latency_factor: f64,
    /// The baseline quantile the latency gate freezes.
    pub quantile: f64,
    /// What production does to both versions at once.
    pub world: World,
}

/// What breaks the simple model's assumptions in production, all of it hitting canary and
/// baseline alike: the judge must not take any of it for the canary's harm.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    /// A dependency both versions share fails: their error rates jump together.
    pub outages: Vec<Outage>,
    /// Traffic swings up and down by a factor.
    pub swing: Option<Swing>,
    /// Both versions slow down together.
    pub spikes: Vec<Spike>,
    /// A few users carry a large share of the traffic; a sticky split keeps each on one side.
    /// The judge sees each once a second, as the proxies judge (with protections in the
    /// loop, every request: the two are not simulated together).
    pub heavy_users: Vec<HeavyUser>,
    /// Judge every request, as before the proxies judged one per user and second.
    pub judge_every_request: bool,
    /// The proxies' own protections, in the loop.
    pub protections: Option<Protections>,
    /// New visitors, for the sample-ratio guard (none: the guard sees nothing).
    pub visitors: Option<Visitors>,
    /// Roll back only when one gate alone shows harm at its share of α (the Bonferroni
    /// split), not on the gates' evidence averaged: for comparison.
    pub harm_alone: bool,
}

/// New visitors of the two versions: `per_second` arrive (Poisson), and each lands on the
/// canary with the step's weight times `skew` (1: the split as planned; 0.8: a tenth of
/// the traffic becomes 8 %).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Visitors {
    pub per_second: f64,
    pub skew: f64,
}

/// Seconds `[start, start + seconds)` of the rollout in which every request of both versions
/// also fails with probability `error_rate`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outage {
    pub start: u64,
    pub seconds: u64,
    pub error_rate: f64,
}

/// Traffic multiplied by a factor that climbs from 1 to `factor` and back (geometrically,
/// as a sine) every `period_seconds`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Swing {
    pub factor: f64,
    pub period_seconds: f64,
}

/// Seconds in which both versions' latencies are multiplied by `factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    pub start: u64,
    pub seconds: u64,
    pub factor: f64,
}

/// One user with a share of all requests and an error rate of their own (their requests
/// fail as often on either version), kept on one version by the sticky split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeavyUser {
    pub share: f64,
    pub error_rate: f64,
}

/// Each version's circuit breaker (judged every 100 ms, as requests complete) and budgeted
/// retries, as the proxy runs them.
#[derive(Clone, Debug, PartialEq)]
pub struct Protections {
    pub breaker: grayline_routing::model::Breaker,
    /// The breaker opens on the plain share of failures in its window (the rule before
    /// [`grayline_routing::model::Breaker::trips`]).
    pub plain_share_breaker: bool,
    /// Fallbacks are counted as the version's 5xx answers (the accounting before they were
    /// counted apart).
    pub fallbacks_as_errors: bool,
    /// Failed requests are tried once more within the retry budget (20 % of the last 10 s
    /// plus 10 a second).
    pub retries: bool,
}

impl Protections {
    /// The proxy's defaults: breaker at 50 % over 10 s, judged beyond chance; fallbacks apart.
    pub fn defaults() -> Protections {
        Protections {
            breaker: grayline_routing::model::Breaker::default(),
            plain_share_breaker: false,
            fallbacks_as_errors: false,
            retries: false,
        }
    }

    /// The protections as they were when the field saw healthy canaries rolled back.
    pub fn before() -> Protections {
        Protections {
            plain_share_breaker: true,
            fallbacks_as_errors: true,
            ..Protections::defaults()
        }
    }
}

impl Scenario {
    /// The same error rate and latency on both versions.
    pub fn healthy(requests_per_second: f64, errors: f64) -> Scenario {
        Scenario {
            requests_per_second,
            baseline_errors: errors,
            canary_errors: errors,
            median_us: 20_000.0,
            sigma: 0.5,
            latency_factor: 1.0,
            quantile: 0.99,
            world: World::default(),
        }
    }

    /// Both versions at `baseline` errors, but the canary at `canary`.
    pub fn canary_errors(requests_per_second: f64, baseline: f64, canary: f64) -> Scenario {
        Scenario {
            canary_errors: canary,
            ..Scenario::healthy(requests_per_second, baseline)
        }
    }

    /// Both versions at `errors`, the canary's latencies `factor` times the baseline's.
    pub fn canary_slower(requests_per_second: f64, errors: f64, factor: f64) -> Scenario {
        Scenario {
            latency_factor: factor,
            ..Scenario::healthy(requests_per_second, errors)
        }
    }

    /// The baseline's latency at the gate's quantile: what the gate freezes.
    pub fn threshold_us(&self) -> f64 {
        self.median_us * (self.sigma * normal_quantile(self.quantile)).exp()
    }

    /// What the latency gate freezes: the threshold, and the slow share a canary the plan's
    /// detect factor slower would show, as a ratio.
    pub fn latency_threshold(&self, plan: &Plan) -> LatencyThreshold {
        LatencyThreshold {
            threshold_us: self.threshold_us() as u64,
            detect_ratio: plan
                .detect_latency()
                .map(|f| slow_share_ratio(f, self.sigma, self.quantile)),
        }
    }

    /// The share of requests slower than the threshold: (canary, baseline).
    pub fn slow_shares(&self) -> (f64, f64) {
        self.slow_shares_at(1.0)
    }

    /// The same while both versions are `spike` times slower.
    fn slow_shares_at(&self, spike: f64) -> (f64, f64) {
        let z = normal_quantile(self.quantile);
        let above = |factor: f64| 1.0 - normal_cdf(z - factor.ln() / self.sigma);
        (above(self.latency_factor * spike), above(spike))
    }

    /// One latency, microseconds.
    pub fn latency_us(&self, rng: &mut Rng, canary: bool) -> f64 {
        let factor = if canary { self.latency_factor } else { 1.0 };
        self.median_us * factor * (self.sigma * rng.normal()).exp()
    }

    /// A generator of seconds for this scenario; the heavy users' sides are drawn from `rng`.
    pub fn stream(&self, rng: &mut Rng) -> Stream<'_> {
        Stream {
            scenario: self,
            buckets: self
                .world
                .heavy_users
                .iter()
                .map(|_| (rng.next_u64() % 10_000) as u32)
                .collect(),
            light: 1.0 - self.world.heavy_users.iter().map(|u| u.share).sum::<f64>(),
            second: 0,
            versions: [Guard::default(), Guard::default()],
        }
    }
}

/// Ticks of a second in which breakers are judged.
const TICKS: u64 = 10;
/// Ticks a breaker's window spans (its 10 s).
const WINDOW_TICKS: usize = 100;

/// One version's protections as the proxy keeps them.
#[derive(Clone, Debug, Default)]
struct Guard {
    /// (requests, failures) of the window's ticks, newest last.
    window: std::collections::VecDeque<(u64, u64)>,
    /// While open: the tick from which a probe may go.
    open_until: Option<u64>,
    /// (requests, retries) of the last ten seconds, per second.
    budget: std::collections::VecDeque<(u64, u64)>,
}

/// A version's requests of one tick, drawn and then passed through its protections.
#[derive(Clone, Copy, Debug, Default)]
struct Tick {
    answered: u64,
    failed: u64,
    refused: u64,
}

impl Guard {
    /// Lets `requests` through the breaker and retries: each fails with `p` (the same for a
    /// retry), except that `failures` is how many of them failed at the first try.
    fn pass(
        &mut self,
        rng: &mut Rng,
        protections: &Protections,
        tick: u64,
        requests: u64,
        failures: u64,
        p: f64,
    ) -> Tick {
        let settings = &protections.breaker;
        let (mut requests, mut failures) = (requests, failures);
        let mut out = Tick::default();
        if let Some(until) = self.open_until {
            if tick < until || requests == 0 {
                return Tick {
                    refused: requests,
                    ..Tick::default()
                };
            }
            // Half-open: one probe decides.
            let probe_failed = rng.f64() < failures as f64 / requests as f64;
            out.answered += 1;
            out.failed += u64::from(probe_failed);
            if probe_failed {
                self.open_until = Some(tick + u64::from(settings.sleep_window_ms) / 100);
                out.refused = requests - 1;
                return out;
            }
            self.open_until = None;
            self.window.clear();
            requests -= 1;
            failures = failures.min(requests);
        }
        let mut failed = failures;
        if protections.retries && failed > 0 {
            let (sent, retried) = self
                .budget
                .iter()
                .fold((0, 0), |(a, b), (r, t)| (a + r, b + t));
            let allowed = (sent + requests) / 5 + 100;
            let retries = failed.min(allowed.saturating_sub(retried));
            failed = failed - retries + rng.binomial(retries, p);
            if let Some(last) = self.budget.back_mut() {
                last.1 += retries;
            }
        }
        if let Some(last) = self.budget.back_mut() {
            last.0 += requests;
        }
        out.answered += requests;
        out.failed += failed;
        self.window.push_back((requests, failed));
        if self.window.len() > WINDOW_TICKS {
            self.window.pop_front();
        }
        if settings.enabled && !settings.force_closed && failed > 0 {
            let (total, bad) = self
                .window
                .iter()
                .fold((0, 0), |(a, b), (r, f)| (a + r, b + f));
            let trips = if protections.plain_share_breaker {
                total >= u64::from(settings.request_volume)
                    && bad * 100 >= u64::from(settings.error_threshold_percent) * total
            } else {
                settings.trips(total, bad)
            };
            if trips {
                self.open_until = Some(tick + 1 + u64::from(settings.sleep_window_ms) / 100);
            }
        }
        out
    }

    fn new_second(&mut self) {
        self.budget.push_back((0, 0));
        if self.budget.len() > 10 {
            self.budget.pop_front();
        }
    }
}

/// Seconds of one scenario, with its state: the heavy users' sides and, with protections,
/// each version's breaker window and retry budget.
#[derive(Clone, Debug)]
pub struct Stream<'a> {
    scenario: &'a Scenario,
    /// Each heavy user's sticky bucket: on the canary while it is below the weight.
    buckets: Vec<u32>,
    /// The share of traffic of everyone but the heavy users.
    light: f64,
    /// Seconds generated so far.
    second: u64,
    /// Canary, baseline.
    versions: [Guard; 2],
}

impl Stream<'_> {
    /// The next second, at the canary's `weight` (basis points).
    pub fn second(&mut self, rng: &mut Rng, time_unix_s: i64, weight: u32) -> Second {
        let s = self.scenario;
        let w = &s.world;
        let t = self.second;
        self.second += 1;
        let during = |start: u64, seconds: u64| t >= start && t < start + seconds;
        let outage = w
            .outages
            .iter()
            .filter(|o| during(o.start, o.seconds))
            .fold(0.0, |p: f64, o| 1.0 - (1.0 - p) * (1.0 - o.error_rate));
        let spike = w
            .spikes
            .iter()
            .filter(|x| during(x.start, x.seconds))
            .fold(1.0, |f, x| f * x.factor);
        let swing = w.swing.map_or(1.0, |sw| {
            let phase = (std::f64::consts::TAU * t as f64 / sw.period_seconds).cos();
            sw.factor.powf(0.5 - 0.5 * phase)
        });
        let fail = |p: f64| 1.0 - (1.0 - p) * (1.0 - outage);
        let (pc, pb) = (fail(s.canary_errors), fail(s.baseline_errors));
        let rps = s.requests_per_second * swing;
        let share = f64::from(weight) / 10_000.0;

        // Requests and first-try failures of each version: the light users split by the
        // weight, each heavy user wholly on the side their bucket falls.
        // Each version's (requests, failures), and its judged sample's: a light user sends
        // one request, a heavy user's first request of the second stands for all of theirs
        // (unless the world judges every request, as before).
        let draw = |rng: &mut Rng, mean: f64| {
            let light = rng.poisson(mean * self.light);
            let canary = rng.binomial(light, share);
            let mut c = (canary, rng.binomial(canary, pc));
            let mut b = (light - canary, rng.binomial(light - canary, pb));
            let (mut jc, mut jb) = (c, b);
            for (user, bucket) in w.heavy_users.iter().zip(&self.buckets) {
                let n = rng.poisson(mean * user.share);
                let failed = rng.binomial(n, fail(user.error_rate));
                let (side, judged) = if *bucket < weight {
                    (&mut c, &mut jc)
                } else {
                    (&mut b, &mut jb)
                };
                side.0 += n;
                side.1 += failed;
                if w.judge_every_request {
                    judged.0 += n;
                    judged.1 += failed;
                } else if n > 0 {
                    judged.0 += 1;
                    judged.1 += u64::from(rng.f64() * (n as f64) < failed as f64);
                }
            }
            ((c, b), (jc, jb))
        };
        let (canary, baseline) = match &w.protections {
            None => {
                let (_, (c, b)) = draw(rng, rps);
                let tick = |(n, f): (u64, u64)| Tick {
                    answered: n,
                    failed: f,
                    refused: 0,
                };
                (tick(c), tick(b))
            }
            Some(p) => {
                for g in &mut self.versions {
                    g.new_second();
                }
                let (mut c, mut b) = (Tick::default(), Tick::default());
                for k in 0..TICKS {
                    let tick = t * TICKS + k;
                    let ((cn, bn), _) = draw(rng, rps / TICKS as f64);
                    let add = |into: &mut Tick, x: Tick| {
                        into.answered += x.answered;
                        into.failed += x.failed;
                        into.refused += x.refused;
                    };
                    add(&mut c, self.versions[0].pass(rng, p, tick, cn.0, cn.1, pc));
                    add(&mut b, self.versions[1].pass(rng, p, tick, bn.0, bn.1, pb));
                }
                (c, b)
            }
        };
        let (slow_c, slow_b) = s.slow_shares_at(spike);
        let legacy = w
            .protections
            .as_ref()
            .is_some_and(|p| p.fallbacks_as_errors);
        let mut sample = |x: Tick, slow: f64| {
            let slow = rng.binomial(x.answered, slow);
            if legacy {
                // The proxy's 503s were counted as the version's answers.
                Sample {
                    requests: x.answered + x.refused,
                    errors: x.failed + x.refused,
                    slow,
                    ..Sample::default()
                }
            } else {
                Sample {
                    requests: x.answered,
                    errors: x.failed,
                    slow,
                    refused: x.refused,
                    ..Sample::default()
                }
            }
        };
        let mut second = Second {
            time_unix_s,
            canary: sample(canary, slow_c),
            baseline: sample(baseline, slow_b),
        };
        if let Some(v) = w.visitors {
            let n = rng.poisson(v.per_second);
            let canary = rng.binomial(n, (share * v.skew).min(1.0));
            second.canary.fresh = canary;
            second.baseline.fresh = n - canary;
        }
        second
    }
}

/// How one simulated rollout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub rolled_back: bool,
    pub promoted: bool,
    /// How it was promoted, if it was.
    pub promotion: Option<Promotion>,
    /// Paused at the end (a last step without safety shown, or a long hold).
    pub paused: bool,
    /// Seconds until it ended (or the simulation's limit, or its pause).
    pub seconds: u64,
    /// Canary requests until it ended.
    pub canary_requests: u64,
    /// The sample-ratio guard found the split not as planned (and paused it, or noted it in
    /// a dry run).
    pub mismatch: bool,
}

/// Runs `plan` against `scenario`, judging every second, for at most `limit` seconds; a
/// rollout that pauses ends the run.
pub fn run(plan: &Plan, scenario: &Scenario, seed: u64, limit: u64) -> Outcome {
    run_with_metrics(plan, scenario, &[], seed, limit)
}

/// A metric a simulated application exports for one of `plan`'s metric gates (in the same
/// order), with what the canary does to it.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Exposures arrive at `per_second` (Poisson, split by the weight); each is an event
    /// with probability `rate`, the canary's `rate × effect`.
    Events {
        per_second: f64,
        rate: f64,
        effect: f64,
    },
    /// One value per interval: `level × (1 + noise·N(0, 1))`, the canary's `× effect`.
    Value { level: f64, noise: f64, effect: f64 },
}

/// Seconds `[start, start + seconds)` in which a dependency both versions share moves every
/// metric of both by `factor` (rates capped at 1): a shared outage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    pub start: u64,
    pub seconds: u64,
    pub factor: f64,
}

/// What the shifts under way at second `at` of the rollout multiply rates by.
fn factor_at(shifts: &[Shift], at: u64) -> f64 {
    shifts
        .iter()
        .filter(|s| (s.start..s.start + s.seconds).contains(&at))
        .map(|s| s.factor)
        .product()
}

impl Metric {
    /// One interval of `seconds` ending at second `t` of the rollout, at `weight`.
    fn reading(
        &self,
        rng: &mut Rng,
        seconds: f64,
        weight: u32,
        shift: f64,
    ) -> (crate::gate::Reading, crate::gate::Reading) {
        use crate::gate::Reading;
        match *self {
            Metric::Events {
                per_second,
                rate,
                effect,
            } => {
                let share = f64::from(weight) / 10_000.0;
                let mut one = |share: f64, rate: f64| {
                    let exposures = rng.poisson(per_second * seconds * share);
                    let events = rng.binomial(exposures, (rate * shift).min(1.0));
                    Reading::Events {
                        events: events as f64,
                        exposures: exposures as f64,
                    }
                };
                let canary = one(share, rate * effect);
                (canary, one(1.0 - share, rate))
            }
            Metric::Value {
                level,
                noise,
                effect,
            } => {
                let mut one =
                    |level: f64| Reading::Value(level * shift * (1.0 + noise * rng.normal()));
                let canary = one(level * effect);
                (canary, one(level))
            }
        }
    }
}

/// [`run`], with the metrics of the plan's metric gates (`metrics[i]` for
/// `plan.gates.metrics[i]`; `shifts` move them all at once) answered for every interval as it
/// falls due.
pub fn run_with_metrics(
    plan: &Plan,
    scenario: &Scenario,
    metrics: &[(Metric, Vec<Shift>)],
    seed: u64,
    limit: u64,
) -> Outcome {
    run_with_application(plan, scenario, metrics, &[], seed, limit)
}

/// An application event the proxies count: each judged request carries it with probability
/// `rate`, the canary's `rate × effect` (capped at 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AppEvent {
    pub rate: f64,
    pub effect: f64,
}

/// [`run_with_metrics`], with the events of the plan's event gates too (`events[i]` for
/// `plan.gates.events[i]`), drawn among each second's judged requests of each version.
pub fn run_with_application(
    plan: &Plan,
    scenario: &Scenario,
    metrics: &[(Metric, Vec<Shift>)],
    events: &[(AppEvent, Vec<Shift>)],
    seed: u64,
    limit: u64,
) -> Outcome {
    let mut rng = Rng::new(seed);
    let t0 = 1_700_000_000;
    let (mut rollout, _) = Rollout::start(
        seed,
        plan.clone(),
        "baseline",
        StickyKey::ClientIp,
        "simulation",
        t0 * 1000,
        Some(scenario.latency_threshold(plan)),
    );
    rollout.harm_alone = scenario.world.harm_alone;
    let mut stream = scenario.stream(&mut rng);
    let mut canary_requests = 0;
    let mut seconds = 0;
    while seconds < limit && !rollout.phase.is_done() {
        if matches!(rollout.phase, Phase::Paused { .. }) {
            break;
        }
        seconds += 1;
        let t = t0 + seconds as i64;
        let mut second = stream.second(&mut rng, t, rollout.weight());
        for (i, (event, shifts)) in events.iter().enumerate().take(MAX_EVENT_GATES) {
            let shift = factor_at(shifts, seconds);
            let canary = (event.rate * event.effect * shift).min(1.0);
            second.canary.events[i] = rng.binomial(second.canary.requests, canary);
            let baseline = (event.rate * shift).min(1.0);
            second.baseline.events[i] = rng.binomial(second.baseline.requests, baseline);
        }
        canary_requests += second.canary.requests;
        rollout.observe(&second, t * 1000);
        for (gate, end) in rollout.metrics_due(t, 0) {
            let Some(g) = rollout.metric_gate(gate) else {
                continue;
            };
            let i = plan.gates.metrics.iter().position(|p| p.name == g.name);
            let Some((metric, shifts)) = i.and_then(|i| metrics.get(i)) else {
                continue;
            };
            let shift = factor_at(shifts, (end - t0) as u64);
            let interval = f64::from(g.interval_seconds);
            let readings = metric.reading(&mut rng, interval, rollout.weight(), shift);
            rollout.observe_metric(gate, end, Ok(readings), t * 1000);
        }
    }
    Outcome {
        rolled_back: matches!(rollout.phase, Phase::RolledBack { .. }),
        promoted: rollout.phase == Phase::Promoted,
        promotion: rollout.promotion,
        paused: matches!(rollout.phase, Phase::Paused { .. }),
        seconds,
        canary_requests,
        mismatch: rollout.guard.as_ref().is_some_and(|g| g.mismatch.is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_have_the_right_means() {
        let mut rng = Rng::new(7);
        let n = 20_000;
        let mean = |f: &mut dyn FnMut() -> u64| (0..n).map(|_| f() as f64).sum::<f64>() / n as f64;
        let m = mean(&mut || rng.poisson(2.0));
        assert!((m - 2.0).abs() < 0.05, "{m}");
        let m = mean(&mut || rng.poisson(100.0));
        assert!((m - 100.0).abs() < 0.5, "{m}");
        let m = mean(&mut || rng.binomial(1000, 0.01));
        assert!((m - 10.0).abs() < 0.15, "{m}");
        let m = mean(&mut || rng.binomial(100, 0.9));
        assert!((m - 90.0).abs() < 0.15, "{m}");
        assert_eq!(rng.binomial(10, 1.0), 10);
        assert_eq!(rng.binomial(10, 0.0), 0);
    }

    #[test]
    fn the_normal_distribution() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_quantile(0.99) - 2.326).abs() < 1e-3);
    }

    #[test]
    fn slow_shares_follow_the_latency_factor() {
        let mut s = Scenario::healthy(100.0, 0.01);
        let (c, b) = s.slow_shares();
        assert!((c - 0.01).abs() < 1e-6 && (b - 0.01).abs() < 1e-12);
        s.latency_factor = 1.5;
        let (c, _) = s.slow_shares();
        assert!(c > 0.05 && c < 0.1, "{c}");
    }

    #[test]
    fn runs_are_reproducible() {
        let plan = Plan::through("s", "v2", &[1000, 5000]);
        let s = Scenario::healthy(50.0, 0.01);
        assert_eq!(run(&plan, &s, 3, 2000), run(&plan, &s, 3, 2000));
    }
}
