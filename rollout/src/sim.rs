//! Seeded synthetic traffic for simulated rollouts: Poisson arrivals split between canary and
//! baseline by the current weight, errors and slow requests drawn per request (binomial), and
//! log-normal latencies. Everything is reproducible from a seed.

use grayline_routing::StickyKey;

use crate::judge::{Phase, Rollout, Sample, Second};
use crate::plan::Plan;

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
        }
    }

    /// The baseline's latency at the gate's quantile: what the gate freezes.
    pub fn threshold_us(&self) -> f64 {
        self.median_us * (self.sigma * normal_quantile(self.quantile)).exp()
    }

    /// The share of requests slower than the threshold: (canary, baseline).
    pub fn slow_shares(&self) -> (f64, f64) {
        let z = normal_quantile(self.quantile);
        let canary = 1.0 - normal_cdf(z - self.latency_factor.ln() / self.sigma);
        (canary, 1.0 - self.quantile)
    }

    /// One latency, microseconds.
    pub fn latency_us(&self, rng: &mut Rng, canary: bool) -> f64 {
        let factor = if canary { self.latency_factor } else { 1.0 };
        self.median_us * factor * (self.sigma * rng.normal()).exp()
    }

    /// A generator of seconds for this scenario.
    pub fn stream(&self) -> Stream<'_> {
        Stream {
            scenario: self,
            slow: self.slow_shares(),
        }
    }
}

/// Seconds of one scenario, with what is derived from it worked out once.
#[derive(Clone, Debug)]
pub struct Stream<'a> {
    scenario: &'a Scenario,
    /// (canary, baseline) shares of slow requests.
    slow: (f64, f64),
}

impl Stream<'_> {
    /// One second at the canary's `weight` (basis points).
    pub fn second(&self, rng: &mut Rng, time_unix_s: i64, weight: u32) -> Second {
        let s = self.scenario;
        let total = rng.poisson(s.requests_per_second);
        let canary = rng.binomial(total, f64::from(weight) / 10_000.0);
        let mut draw = |n: u64, errors: f64, slow: f64| Sample {
            requests: n,
            errors: rng.binomial(n, errors),
            slow: rng.binomial(n, slow),
        };
        Second {
            time_unix_s,
            canary: draw(canary, s.canary_errors, self.slow.0),
            baseline: draw(total - canary, s.baseline_errors, self.slow.1),
        }
    }
}

/// How one simulated rollout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub rolled_back: bool,
    pub promoted: bool,
    /// Seconds until it ended (or the simulation's limit).
    pub seconds: u64,
    /// Canary requests until it ended.
    pub canary_requests: u64,
}

/// Runs `plan` against `scenario`, judging every second, for at most `limit` seconds.
pub fn run(plan: &Plan, scenario: &Scenario, seed: u64, limit: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let t0 = 1_700_000_000;
    let threshold = scenario.threshold_us() as u64;
    let (mut rollout, _) = Rollout::start(
        seed,
        plan.clone(),
        "baseline",
        StickyKey::ClientIp,
        "simulation",
        t0 * 1000,
        Some(threshold),
    );
    let stream = scenario.stream();
    let mut canary_requests = 0;
    let mut seconds = 0;
    while seconds < limit && !rollout.phase.is_done() {
        seconds += 1;
        let t = t0 + seconds as i64;
        let second = stream.second(&mut rng, t, rollout.weight());
        canary_requests += second.canary.requests;
        rollout.observe(&second, t * 1000);
    }
    Outcome {
        rolled_back: matches!(rollout.phase, Phase::RolledBack { .. }),
        promoted: rollout.phase == Phase::Promoted,
        seconds,
        canary_requests,
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
