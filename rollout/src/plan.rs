//! A rollout plan: which canary, the weight steps it climbs, the gates that judge it and who is
//! told. Plans arrive from operators, so [`Plan::check`] names every field that is wrong.

use grayline_routing::{FieldError, Invalid, Service, StickyKey};
use serde::{Deserialize, Serialize};

/// The most steps a plan may have.
pub const MAX_STEPS: usize = 32;
/// The most webhooks a plan may name.
pub const MAX_WEBHOOKS: usize = 8;
/// The longest a step may be timed: a day.
pub const MAX_STEP_SECONDS: u32 = 86_400;
pub const MAX_WEBHOOK_TIMEOUT_MS: u32 = 60_000;
pub const MAX_WEBHOOK_RETRIES: u32 = 10;
pub const MAX_URL_LEN: usize = 2048;

/// How one canary version of a service is rolled out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub service: String,
    /// The version being rolled out; the baseline is the service's stable version.
    pub canary: String,
    /// The chance of a wrong decision a whole rollout may take: shared by the enforced gates,
    /// in each direction (rolling back a good canary; declaring a step safe for a bad one).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Weights the canary climbs, in order; after the last step completes the canary is
    /// promoted (it becomes stable and takes all traffic).
    pub steps: Vec<Step>,
    /// Seconds at the start that the gates do not judge: a version that just got its first
    /// requests is slow while connections open and caches fill. They count towards the
    /// first step's time.
    #[serde(default = "default_warmup_seconds")]
    pub warmup_seconds: u32,
    #[serde(default)]
    pub gates: Gates,
    /// What the rollout must be able to catch. A step is shown safe when the canary is shown
    /// not to be this much worse than the baseline; `null`: only when it is shown within the
    /// gates' tolerated ratios (far more traffic).
    #[serde(default = "default_detect")]
    pub detect: Option<Detect>,
    /// What keeps a user on their version as the weight grows. Unset: the sticky key of the
    /// service's current split, else a `grayline-user` cookie the proxies mint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyKey>,
    /// Told about every transition; those with `ask` must also agree to each advance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Where the metric gates' queries go (`http://` or `https://`, the Prometheus HTTP API's
    /// base); unset: the server's `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
}

pub fn default_alpha() -> f64 {
    0.01
}

fn default_detect() -> Option<Detect> {
    Some(Detect::default())
}

/// The regressions a rollout must be able to catch: a canary this much worse is promoted
/// with probability at most α, because its safety is never shown; one as good as the
/// baseline shows safety at this limit much sooner than at the tolerated ratio. A limit
/// below its gate's tolerated ratio is judged at the tolerated ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detect {
    /// The canary's error rate this many times the baseline's (`2`, or `"2x"`); `null`: the
    /// error gate's tolerated ratio.
    #[serde(deserialize_with = "times")]
    pub errors: Option<f64>,
    /// Every canary request this many times slower than the baseline's (`1.2`, or `"1.2x"`):
    /// turned into the share above the latency gate's threshold such a canary would show, from
    /// the baseline's own latencies when the threshold is frozen. `null`: the latency gate's
    /// tolerated ratio.
    #[serde(deserialize_with = "times")]
    pub latency: Option<f64>,
}

impl Default for Detect {
    fn default() -> Self {
        Detect {
            errors: Some(2.0),
            latency: Some(1.2),
        }
    }
}

/// The most a detect ratio may be.
pub const MAX_DETECT: f64 = 100.0;

/// A ratio written as a number (`2`) or with its sign (`"2x"`, `"2×"`).
fn times<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Times {
        Number(f64),
        Text(String),
    }
    match Option::<Times>::deserialize(d)? {
        None => Ok(None),
        Some(Times::Number(n)) => Ok(Some(n)),
        Some(Times::Text(t)) => {
            let number = t.trim().trim_end_matches(['x', 'X', '×']).trim();
            number.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a ratio: write a number such as 2 or \"2x\""
                ))
            })
        }
    }
}

pub fn default_warmup_seconds() -> u32 {
    10
}

/// The longest warm-up a plan may ask for.
pub const MAX_WARMUP_SECONDS: u32 = 3600;

/// One weight the canary holds until the step is decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The canary's share in basis points (1 = 0.01 %), 1 to 9999; the stable version has
    /// the rest.
    pub weight: u32,
    /// Observed seconds the step lasts at least.
    #[serde(default = "default_min_seconds")]
    pub min_seconds: u32,
    /// Canary requests the step sees at least.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Observed seconds after which a step with neither harm nor safety shown is decided by
    /// `on_timeout`.
    #[serde(default = "default_max_seconds")]
    pub max_seconds: u32,
    /// Unset: `advance` for every step but the last, `pause` for the last (see
    /// [`Plan::on_timeout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// A person must approve before the next step (or the promotion).
    #[serde(default, skip_serializing_if = "is_false")]
    pub approval: bool,
}

pub fn default_min_seconds() -> u32 {
    60
}
pub fn default_min_requests() -> u64 {
    100
}
pub fn default_max_seconds() -> u32 {
    600
}

impl Step {
    /// A step at `weight` with the default minimums and limit.
    pub fn at(weight: u32) -> Step {
        Step {
            weight,
            min_seconds: default_min_seconds(),
            min_requests: default_min_requests(),
            max_seconds: default_max_seconds(),
            on_timeout: None,
            approval: false,
        }
    }
}

/// What a step that reached its time limit without a decision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// No harm was shown at the plan's α: go on to the next step (the gates keep judging
    /// there). Not for the last step, after which there is none.
    Advance,
    /// Wait for a person to resume (for another time limit), skip, promote or abort.
    Pause,
    /// Send all traffic back to the stable version.
    Rollback,
    /// The last step only: promote on time alone, recorded as promoted without safety shown.
    Promote,
}

impl OnTimeout {
    pub fn name(self) -> &'static str {
        match self {
            OnTimeout::Advance => "advance",
            OnTimeout::Pause => "pause",
            OnTimeout::Rollback => "rollback",
            OnTimeout::Promote => "promote",
        }
    }
}

/// Whether a gate acts or only reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    /// Judged and shown, never acted on.
    DryRun,
}

/// The gates, each judged every second. `null` turns one off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    #[serde(default = "default_errors")]
    pub errors: Option<ErrorGate>,
    #[serde(default = "default_latency")]
    pub latency: Option<LatencyGate>,
    #[serde(default)]
    pub ceiling: Option<CeilingGate>,
    /// Gates on metrics the application already has, read from Prometheus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricGate>,
    /// Gates on the application events the service declares, counted by the proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventGate>,
    /// The sample-ratio guard: on by default, `null` turns it off.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: Option<SampleRatioGuard>,
}

fn default_sample_ratio() -> Option<SampleRatioGuard> {
    Some(SampleRatioGuard::default())
}

/// The sample-ratio guard: the canary's share of new visitors — requests that carry none of
/// the service's sticky keys, whose version is a fresh draw — against the step's weight.
/// A share shown above `weight × tolerated_ratio` or below `weight / tolerated_ratio`
/// pauses the rollout before any gate's verdict is trusted: the versions are no longer a
/// randomized comparison (a rule sending people to one of them, a proxy on an old
/// revision).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleRatioGuard {
    pub tolerated_ratio: f64,
    pub mode: Mode,
}

impl Default for SampleRatioGuard {
    fn default() -> Self {
        SampleRatioGuard {
            tolerated_ratio: 1.1,
            mode: Mode::Enforce,
        }
    }
}

fn default_errors() -> Option<ErrorGate> {
    Some(ErrorGate::default())
}
fn default_latency() -> Option<LatencyGate> {
    Some(LatencyGate::default())
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            errors: default_errors(),
            latency: default_latency(),
            ceiling: None,
            metrics: Vec::new(),
            events: Vec::new(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

/// The canary's error rate (5xx answers, including connect errors and timeouts, and
/// fallbacks) against the baseline's in the same seconds. Harm is a rate more than
/// `tolerated_ratio` times the baseline's *and* more than `min_increase_bp` above it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorGate {
    pub tolerated_ratio: f64,
    /// Basis points of requests (10 = 0.1 percentage points).
    pub min_increase_bp: u32,
    pub mode: Mode,
}

impl Default for ErrorGate {
    fn default() -> Self {
        ErrorGate {
            tolerated_ratio: 1.5,
            min_increase_bp: 10,
            mode: Mode::Enforce,
        }
    }
}

/// The share of canary requests slower than the baseline's `quantile` (frozen when the
/// rollout starts), against the baseline's share above the same latency in the same seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyGate {
    /// 0.5 to 0.999, e.g. 0.99 for the baseline's p99.
    pub quantile: f64,
    pub tolerated_ratio: f64,
    /// Basis points of requests.
    pub min_increase_bp: u32,
    pub mode: Mode,
}

impl Default for LatencyGate {
    fn default() -> Self {
        LatencyGate {
            quantile: 0.99,
            tolerated_ratio: 1.5,
            min_increase_bp: 50,
            mode: Mode::Enforce,
        }
    }
}

/// The canary's error rate alone, against a fixed ceiling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeilingGate {
    /// Basis points, 1 to 9999 (500 = 5 %).
    pub max_error_rate_bp: u32,
    #[serde(default)]
    pub mode: Mode,
}

/// The most metric gates a plan may have.
pub const MAX_METRIC_GATES: usize = 16;
/// The most event gates a plan may have (a service declares at most eight events).
pub const MAX_EVENT_GATES: usize = 8;

/// A gate on an application event the service declares (`events` of the service): the
/// proxies count the canary's and the baseline's answers that carry it in the judged
/// sample, per second, and the gate judges them exactly as the error gate judges errors —
/// events per judged request, canary against baseline in the same seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventGate {
    /// The service's event; also the gate's name.
    pub event: String,
    /// `bad_events` (more is harm, the default) or `good_events` (fewer is harm).
    #[serde(default = "bad_events")]
    pub kind: MetricKind,
    /// Harm is the canary's rate above this multiple of the baseline's (bad events), or
    /// below the baseline's divided by it (good events).
    #[serde(default = "default_metric_ratio")]
    pub tolerated_ratio: f64,
    /// …and by more than this share of requests (0.001 = 0.1 points).
    #[serde(default)]
    pub min_difference: f64,
    /// A step is shown safe when the canary is shown less than this many times worse;
    /// `null`: less than the tolerated ratio.
    #[serde(default = "metric_detect", deserialize_with = "times")]
    pub detect: Option<f64>,
    #[serde(default)]
    pub mode: Mode,
}

fn bad_events() -> MetricKind {
    MetricKind::BadEvents
}

impl EventGate {
    /// A gate on `event` with every default, as a plan that names only the event has it.
    pub fn new(event: &str) -> EventGate {
        EventGate {
            event: event.to_string(),
            kind: bad_events(),
            tolerated_ratio: default_metric_ratio(),
            min_difference: 0.0,
            detect: metric_detect(),
            mode: Mode::default(),
        }
    }
}
/// The longest a metric gate's query template may be.
pub const MAX_QUERY_LEN: usize = 4096;
/// The longest a metric gate's interval may be: an hour.
pub const MAX_METRIC_INTERVAL_SECONDS: u32 = 3600;

/// A gate on a metric the application already has: a PromQL query per version, judged every
/// `interval_seconds` against the baseline's answer for the same interval.
///
/// Query templates name the version as `{{version}}` (required), and may use `{{interval}}`
/// (the interval as a PromQL duration, `10s`) and `{{service}}`:
/// `sum(increase(checkout_failed_total{version="{{version}}"}[{{interval}}]))`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricGate {
    /// How the gate is shown and named in reasons: lowercase letters, digits, `-` and `_`,
    /// unique in the plan.
    pub name: String,
    pub kind: MetricKind,
    /// The events in one interval (`bad_events`, `good_events`), or the value of one interval
    /// (`bad_value`, `good_value`); one number per version.
    pub query: String,
    /// Event kinds only: the exposures the events are out of in the same interval (requests,
    /// payments, sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<String>,
    /// 1 to 3600; at least the scrape interval of the series it reads.
    #[serde(default = "default_metric_interval")]
    pub interval_seconds: u32,
    /// Harm is the canary this many times worse than the baseline: its bad events' rate
    /// (or value) above this multiple of the baseline's, its good events' rate (or value)
    /// below the baseline's divided by it.
    #[serde(default = "default_metric_ratio")]
    pub tolerated_ratio: f64,
    /// …and worse by more than this much: a share of exposures for event kinds (0.001 = 0.1
    /// points), the metric's own unit for value kinds.
    #[serde(default)]
    pub min_difference: f64,
    /// A step is shown safe when the canary is shown less than this many times worse (`2`,
    /// `"1.25x"`); `null`: less than the tolerated ratio (far more data).
    #[serde(default = "metric_detect", deserialize_with = "times")]
    pub detect: Option<f64>,
    /// Seconds without an answer for either version after which the rollout pauses (it goes
    /// on by itself once answers come back); at least the interval.
    #[serde(default = "default_no_data_seconds")]
    pub no_data_seconds: u32,
    #[serde(default)]
    pub mode: Mode,
}

/// What a metric gate's query counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Bad events per exposure (errors per request, declines per payment): more is harm.
    BadEvents,
    /// Good events per exposure (conversions per session): fewer is harm.
    GoodEvents,
    /// A value per interval where higher is harm (queue lag, CPU per request).
    BadValue,
    /// A value per interval where lower is harm (throughput per instance).
    GoodValue,
}

impl MetricKind {
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::BadEvents => "bad_events",
            MetricKind::GoodEvents => "good_events",
            MetricKind::BadValue => "bad_value",
            MetricKind::GoodValue => "good_value",
        }
    }

    /// Counts of events out of exposures, judged like the error gate.
    pub fn counts(self) -> bool {
        matches!(self, MetricKind::BadEvents | MetricKind::GoodEvents)
    }

    /// Lower is harm.
    pub fn good(self) -> bool {
        matches!(self, MetricKind::GoodEvents | MetricKind::GoodValue)
    }
}

pub fn default_metric_interval() -> u32 {
    10
}
pub fn default_metric_ratio() -> f64 {
    1.2
}
pub fn default_metric_detect() -> f64 {
    1.5
}
fn metric_detect() -> Option<f64> {
    Some(default_metric_detect())
}
pub fn default_no_data_seconds() -> u32 {
    120
}

/// The placeholders a query template may use.
pub const PLACEHOLDERS: [&str; 3] = ["version", "interval", "service"];

/// A template with its placeholders filled in: `{{version}}`, `{{interval}}` (as `10s`),
/// `{{service}}`.
pub fn fill(template: &str, service: &str, version: &str, interval_seconds: u32) -> String {
    template
        .replace("{{version}}", version)
        .replace("{{interval}}", &format!("{interval_seconds}s"))
        .replace("{{service}}", service)
}

/// What is wrong with a query template: no `{{version}}`, an unknown or unclosed
/// placeholder, too long.
fn check_template(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("empty: write a PromQL query with {{version}} in it".into());
    }
    if template.len() > MAX_QUERY_LEN {
        return Err(format!("longer than {MAX_QUERY_LEN} characters"));
    }
    let mut rest = template;
    let mut version = false;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err("a `{{` is not closed with `}}`".into());
        };
        let name = after[..close].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{{{name}}}}}`: use {{{{version}}}}, {{{{interval}}}} or {{{{service}}}}"
            ));
        }
        if after[..close] != *name {
            return Err(format!("write `{{{{{name}}}}}` without spaces"));
        }
        version |= name == "version";
        rest = &after[close + 2..];
    }
    if !version {
        return Err(
            "has no {{version}}: the query must select one version, e.g. \
             `sum(rate(x_total{version=\"{{version}}\"}[{{interval}}]))`"
                .into(),
        );
    }
    Ok(())
}

/// A receiver of the rollout's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://`.
    pub url: String,
    /// Before each advance, ask this receiver; anything but a 2xx pauses the rollout.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ask: bool,
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u32,
    /// Further attempts after a failed delivery, with doubling backoff from one second.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
}

pub fn default_webhook_timeout_ms() -> u32 {
    5_000
}
pub fn default_webhook_retries() -> u32 {
    3
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Plan {
    /// A plan with default gates through `weights`.
    pub fn through(service: &str, canary: &str, weights: &[u32]) -> Plan {
        Plan {
            service: service.to_string(),
            canary: canary.to_string(),
            alpha: default_alpha(),
            steps: weights.iter().map(|w| Step::at(*w)).collect(),
            warmup_seconds: default_warmup_seconds(),
            gates: Gates::default(),
            detect: default_detect(),
            sticky: None,
            webhooks: Vec::new(),
            prometheus_url: None,
        }
    }

    /// Checks the plan on its own and against the service it rolls out (`None`: the service
    /// does not exist). Field paths are relative to the plan.
    pub fn check(&self, service: Option<&Service>) -> Result<(), Invalid> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| errors.push(FieldError::new(field, message));
        match service {
            None => err("service", format!("service `{}` not found", self.service)),
            Some(s) if s.version(&self.canary).is_none() => err(
                "canary",
                format!(
                    "service `{}` has no version `{}`; it has {}",
                    s.name,
                    self.canary,
                    s.versions
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(s) if s.stable == self.canary => err(
                "canary",
                format!(
                    "`{}` is already the stable version of `{}`; roll out another version",
                    self.canary, s.name
                ),
            ),
            Some(_) => {}
        }
        if !(self.alpha > 0.0 && self.alpha <= 0.25) {
            err(
                "alpha",
                format!(
                    "{} is out of range: use a value above 0 and at most 0.25",
                    self.alpha
                ),
            );
        }
        if self.warmup_seconds > MAX_WARMUP_SECONDS {
            err(
                "warmup_seconds",
                format!(
                    "{} is out of range: 0 to {MAX_WARMUP_SECONDS}",
                    self.warmup_seconds
                ),
            );
        }
        if self.steps.is_empty() {
            err("steps", "a plan needs at least one step".into());
        } else if self.steps.len() > MAX_STEPS {
            err(
                "steps",
                format!("at most {MAX_STEPS} steps, got {}", self.steps.len()),
            );
        }
        let mut previous = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let path = |f: &str| format!("steps[{i}].{f}");
            if step.weight == 0 || step.weight >= 10_000 {
                err(
                    &path("weight"),
                    format!(
                        "{} is out of range: a step gives the canary 1 to 9999 basis points; \
                         the promotion after the last step gives it all",
                        step.weight
                    ),
                );
            } else if step.weight <= previous {
                err(
                    &path("weight"),
                    format!(
                        "{} is not above the previous step's {previous}: weights must rise",
                        step.weight
                    ),
                );
            }
            previous = previous.max(step.weight);
            let last = i + 1 == self.steps.len();
            match step.on_timeout {
                Some(OnTimeout::Advance) if last => err(
                    &path("on_timeout"),
                    "the last step has no next step to advance to: `pause` (the default) waits \
                     for a person, `promote` promotes on time alone (recorded as promoted \
                     without safety shown), `rollback` rolls back"
                        .into(),
                ),
                Some(OnTimeout::Promote) if !last => err(
                    &path("on_timeout"),
                    "only the last step promotes; use `advance`, `pause` or `rollback`".into(),
                ),
                _ => {}
            }
            if step.max_seconds == 0 || step.max_seconds > MAX_STEP_SECONDS {
                err(
                    &path("max_seconds"),
                    format!(
                        "{} is out of range: 1 to {MAX_STEP_SECONDS}",
                        step.max_seconds
                    ),
                );
            } else if step.min_seconds > step.max_seconds {
                err(
                    &path("min_seconds"),
                    format!(
                        "{} is above the step's max_seconds ({})",
                        step.min_seconds, step.max_seconds
                    ),
                );
            }
        }
        if let Some(g) = &self.gates.errors {
            check_ratio(
                g.tolerated_ratio,
                g.min_increase_bp,
                "gates.errors",
                &mut err,
            );
        }
        if let Some(g) = &self.gates.latency {
            check_ratio(
                g.tolerated_ratio,
                g.min_increase_bp,
                "gates.latency",
                &mut err,
            );
            if !(0.5..=0.999).contains(&g.quantile) {
                err(
                    "gates.latency.quantile",
                    format!("{} is out of range: 0.5 to 0.999", g.quantile),
                );
            }
        }
        if let Some(d) = &self.detect {
            if let Some(r) = d.errors
                && !(r > 1.0 && r <= MAX_DETECT)
            {
                err(
                    "detect.errors",
                    format!("{r} is out of range: above 1 and at most {MAX_DETECT}"),
                );
            }
            if let Some(f) = d.latency
                && !(f > 1.0 && f <= 10.0)
            {
                err(
                    "detect.latency",
                    format!("{f} is out of range: a canary above 1 and at most 10 times slower"),
                );
            }
        }
        if let Some(g) = &self.gates.ceiling
            && (g.max_error_rate_bp == 0 || g.max_error_rate_bp >= 10_000)
        {
            err(
                "gates.ceiling.max_error_rate_bp",
                format!("{} is out of range: 1 to 9999", g.max_error_rate_bp),
            );
        }
        check_metrics(&self.gates.metrics, &mut err);
        check_events(&self.gates.events, service, &mut err);
        if let Some(g) = &self.gates.sample_ratio
            && !(g.tolerated_ratio > 1.0 && g.tolerated_ratio <= 10.0)
        {
            err(
                "gates.sample_ratio.tolerated_ratio",
                format!(
                    "{} is out of range: above 1 and at most 10",
                    g.tolerated_ratio
                ),
            );
        }
        if let Some(url) = &self.prometheus_url
            && let Err(e) = check_url(url)
        {
            err("prometheus_url", e);
        }
        if self.enforced_gates() == 0 {
            err(
                "gates",
                "no gate is enforced: a rollout needs at least one gate that can roll it back"
                    .into(),
            );
        }
        if self.webhooks.len() > MAX_WEBHOOKS {
            err(
                "webhooks",
                format!(
                    "at most {MAX_WEBHOOKS} webhooks, got {}",
                    self.webhooks.len()
                ),
            );
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if let Err(e) = check_url(&w.url) {
                err(&format!("webhooks[{i}].url"), e);
            }
            if w.timeout_ms == 0 || w.timeout_ms > MAX_WEBHOOK_TIMEOUT_MS {
                err(
                    &format!("webhooks[{i}].timeout_ms"),
                    format!(
                        "{} is out of range: 1 to {MAX_WEBHOOK_TIMEOUT_MS}",
                        w.timeout_ms
                    ),
                );
            }
            if w.retries > MAX_WEBHOOK_RETRIES {
                err(
                    &format!("webhooks[{i}].retries"),
                    format!("{} is out of range: 0 to {MAX_WEBHOOK_RETRIES}", w.retries),
                );
            }
        }
        Invalid::check(errors)
    }

    /// What step `i` does at its time limit: its own `on_timeout`, else `advance` — or, for
    /// the last step, `pause`: a promotion is earned by evidence unless the plan says
    /// `promote`.
    pub fn on_timeout(&self, i: usize) -> OnTimeout {
        let last = i + 1 >= self.steps.len();
        match self.steps.get(i).and_then(|s| s.on_timeout) {
            Some(t) => t,
            None if last => OnTimeout::Pause,
            None => OnTimeout::Advance,
        }
    }

    /// The error gate's detect ratio, if the plan has one.
    pub fn detect_errors(&self) -> Option<f64> {
        self.detect.as_ref().and_then(|d| d.errors)
    }

    /// The latency factor the latency gate must catch, if the plan has one.
    pub fn detect_latency(&self) -> Option<f64> {
        self.detect.as_ref().and_then(|d| d.latency)
    }

    /// How many gates can act; the plan's α is shared among them.
    pub fn enforced_gates(&self) -> usize {
        let g = &self.gates;
        [
            g.errors.as_ref().map(|g| g.mode),
            g.latency.as_ref().map(|g| g.mode),
            g.ceiling.as_ref().map(|g| g.mode),
        ]
        .into_iter()
        .filter(|m| *m == Some(Mode::Enforce))
        .count()
            + g.metrics.iter().filter(|m| m.mode == Mode::Enforce).count()
            + g.events.iter().filter(|e| e.mode == Mode::Enforce).count()
    }
}

fn check_ratio(ratio: f64, increase_bp: u32, path: &str, err: &mut impl FnMut(&str, String)) {
    if !(ratio > 1.0 && ratio <= 100.0) {
        err(
            &format!("{path}.tolerated_ratio"),
            format!("{ratio} is out of range: above 1 and at most 100"),
        );
    }
    if increase_bp >= 10_000 {
        err(
            &format!("{path}.min_increase_bp"),
            format!("{increase_bp} is out of range: 0 to 9999"),
        );
    }
}

fn check_metrics(metrics: &[MetricGate], err: &mut impl FnMut(&str, String)) {
    if metrics.len() > MAX_METRIC_GATES {
        err(
            "gates.metrics",
            format!(
                "at most {MAX_METRIC_GATES} metric gates, got {}",
                metrics.len()
            ),
        );
    }
    for (i, m) in metrics.iter().enumerate() {
        let path = |f: &str| format!("gates.metrics[{i}].{f}");
        let name_ok = !m.name.is_empty()
            && m.name.len() <= 64
            && m.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            err(
                &path("name"),
                format!(
                    "`{}` is not a gate name: 1 to 64 lowercase letters, digits, `-` and `_`",
                    m.name
                ),
            );
        } else if metrics[..i].iter().any(|o| o.name == m.name) {
            err(
                &path("name"),
                format!("`{}` names another metric gate of this plan too", m.name),
            );
        } else if ["errors", "latency", "ceiling"].contains(&m.name.as_str()) {
            err(
                &path("name"),
                format!("`{}` is a built-in gate's name; choose another", m.name),
            );
        }
        if let Err(e) = check_template(&m.query) {
            err(&path("query"), e);
        }
        match (&m.exposure, m.kind.counts()) {
            (Some(e), true) => {
                if let Err(e) = check_template(e) {
                    err(&path("exposure"), e);
                }
            }
            (None, true) => err(
                &path("exposure"),
                format!(
                    "a `{}` gate needs the query of what its events are out of (requests, \
                     payments, sessions), with {{{{version}}}} in it",
                    m.kind.name()
                ),
            ),
            (Some(_), false) => err(
                &path("exposure"),
                format!(
                    "a `{}` gate judges the query's value alone; remove `exposure`",
                    m.kind.name()
                ),
            ),
            (None, false) => {}
        }
        if m.interval_seconds == 0 || m.interval_seconds > MAX_METRIC_INTERVAL_SECONDS {
            err(
                &path("interval_seconds"),
                format!(
                    "{} is out of range: 1 to {MAX_METRIC_INTERVAL_SECONDS}",
                    m.interval_seconds
                ),
            );
        }
        check_ratios(m.tolerated_ratio, m.detect, &path, err);
        let most = if m.kind.counts() { 0.9999 } else { 1e15 };
        if !(m.min_difference >= 0.0 && m.min_difference <= most) {
            err(
                &path("min_difference"),
                if m.kind.counts() {
                    format!(
                        "{} is out of range: a share of exposures, 0 to {most}",
                        m.min_difference
                    )
                } else {
                    format!("{} is out of range: 0 or more", m.min_difference)
                },
            );
        }
        if m.no_data_seconds < m.interval_seconds || m.no_data_seconds > MAX_STEP_SECONDS {
            err(
                &path("no_data_seconds"),
                format!(
                    "{} is out of range: from the interval ({} s) to {MAX_STEP_SECONDS}",
                    m.no_data_seconds, m.interval_seconds
                ),
            );
        }
    }
}

/// A custom gate's tolerated ratio and detect ratio, at `path(field)`.
fn check_ratios(
    tolerated_ratio: f64,
    detect: Option<f64>,
    path: &impl Fn(&str) -> String,
    err: &mut impl FnMut(&str, String),
) {
    if !(tolerated_ratio > 1.0 && tolerated_ratio <= 100.0) {
        err(
            &path("tolerated_ratio"),
            format!("{tolerated_ratio} is out of range: above 1 and at most 100"),
        );
    }
    if let Some(d) = detect
        && !(d > 1.0 && d <= MAX_DETECT)
    {
        err(
            &path("detect"),
            format!("{d} is out of range: above 1 and at most {MAX_DETECT}"),
        );
    }
}

/// Event gates: each names an event the service declares (when the service is known), once.
fn check_events(
    events: &[EventGate],
    service: Option<&Service>,
    err: &mut impl FnMut(&str, String),
) {
    if events.len() > MAX_EVENT_GATES {
        err(
            "gates.events",
            format!(
                "at most {MAX_EVENT_GATES} event gates, got {}",
                events.len()
            ),
        );
    }
    for (i, e) in events.iter().enumerate() {
        let path = |f: &str| format!("gates.events[{i}].{f}");
        if let Some(problem) = grayline_routing::name_problem(&e.event, "event") {
            err(&path("event"), problem);
        } else if events[..i].iter().any(|o| o.event == e.event) {
            err(
                &path("event"),
                format!("`{}` is judged by another event gate of this plan", e.event),
            );
        } else if let Some(s) = service
            && !s.events.iter().any(|d| d.name == e.event)
        {
            let declared: Vec<&str> = s.events.iter().map(|d| d.name.as_str()).collect();
            err(
                &path("event"),
                format!(
                    "service `{}` declares no event `{}`; it declares {}",
                    s.name,
                    e.event,
                    if declared.is_empty() {
                        "none (see the service's `events`)".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
        }
        if !e.kind.counts() {
            err(
                &path("kind"),
                format!(
                    "an event gate counts events: `bad_events` or `good_events`, not `{}`",
                    e.kind.name()
                ),
            );
        }
        check_ratios(e.tolerated_ratio, e.detect, &path, err);
        if !(e.min_difference >= 0.0 && e.min_difference <= 0.9999) {
            err(
                &path("min_difference"),
                format!(
                    "{} is out of range: a share of requests, 0 to 0.9999",
                    e.min_difference
                ),
            );
        }
    }
}

/// An `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} characters"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("`{url}` has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` contains spaces or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use grayline_routing::Version;

    fn shop() -> Service {
        let mut s = Service::single("shop", Version::new("v1", &["127.0.0.1:1"]));
        s.versions.push(Version::new("v2", &["127.0.0.1:2"]));
        s
    }

    fn fields(plan: &Plan, service: Option<&Service>) -> Vec<String> {
        match plan.check(service) {
            Ok(()) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_default_plan_is_valid() {
        let plan = Plan::through("shop", "v2", &[500, 2500, 5000]);
        assert_eq!(fields(&plan, Some(&shop())), Vec::<String>::new());
        assert_eq!(plan.enforced_gates(), 2);
    }

    #[test]
    fn bad_plans_name_their_fields() {
        let s = shop();
        let check = |edit: fn(&mut Plan), want: &[&str]| {
            let mut plan = Plan::through("shop", "v2", &[500, 2500]);
            edit(&mut plan);
            assert_eq!(fields(&plan, Some(&s)), want, "{plan:?}");
        };
        check(|p| p.canary = "v9".into(), &["canary"]);
        check(|p| p.canary = "v1".into(), &["canary"]);
        check(|p| p.alpha = 0.0, &["alpha"]);
        check(|p| p.alpha = 0.5, &["alpha"]);
        check(|p| p.alpha = f64::NAN, &["alpha"]);
        check(|p| p.steps.clear(), &["steps"]);
        check(|p| p.warmup_seconds = 7200, &["warmup_seconds"]);
        check(|p| p.steps[1].weight = 500, &["steps[1].weight"]);
        check(|p| p.steps[1].weight = 10_000, &["steps[1].weight"]);
        check(|p| p.steps[0].weight = 0, &["steps[0].weight"]);
        check(|p| p.steps[0].min_seconds = 700, &["steps[0].min_seconds"]);
        check(|p| p.steps[0].max_seconds = 0, &["steps[0].max_seconds"]);
        check(
            |p| p.steps[1].on_timeout = Some(OnTimeout::Advance),
            &["steps[1].on_timeout"],
        );
        check(
            |p| p.steps[0].on_timeout = Some(OnTimeout::Promote),
            &["steps[0].on_timeout"],
        );
        check(
            |p| p.detect.as_mut().unwrap().errors = Some(1.0),
            &["detect.errors"],
        );
        check(
            |p| p.detect.as_mut().unwrap().latency = Some(20.0),
            &["detect.latency"],
        );
        check(
            |p| p.gates.errors.as_mut().unwrap().tolerated_ratio = 1.0,
            &["gates.errors.tolerated_ratio"],
        );
        check(
            |p| p.gates.latency.as_mut().unwrap().quantile = 0.2,
            &["gates.latency.quantile"],
        );
        check(
            |p| {
                p.gates.ceiling = Some(CeilingGate {
                    max_error_rate_bp: 0,
                    mode: Mode::Enforce,
                })
            },
            &["gates.ceiling.max_error_rate_bp"],
        );
        check(
            |p| {
                p.gates.errors = None;
                p.gates.latency.as_mut().unwrap().mode = Mode::DryRun;
            },
            &["gates"],
        );
        check(
            |p| {
                p.webhooks.push(Webhook {
                    url: "ftp://x".into(),
                    ask: false,
                    timeout_ms: 0,
                    retries: 99,
                })
            },
            &[
                "webhooks[0].url",
                "webhooks[0].timeout_ms",
                "webhooks[0].retries",
            ],
        );
        let plan = Plan::through("nope", "v2", &[500]);
        assert_eq!(fields(&plan, None), ["service"]);
    }

    #[test]
    fn bad_metric_gates_name_their_fields() {
        let s = shop();
        let gate = || MetricGate {
            name: "checkout".into(),
            kind: MetricKind::GoodEvents,
            query: r#"sum(increase(paid_total{version="{{version}}"}[{{interval}}]))"#.into(),
            exposure: Some(
                r#"sum(increase(carts_total{version="{{version}}"}[{{interval}}]))"#.into(),
            ),
            interval_seconds: 10,
            tolerated_ratio: 1.2,
            min_difference: 0.0,
            detect: Some(1.5),
            no_data_seconds: 120,
            mode: Mode::Enforce,
        };
        let check = |edit: &dyn Fn(&mut MetricGate), want: &[&str]| {
            let mut plan = Plan::through("shop", "v2", &[500]);
            let mut g = gate();
            edit(&mut g);
            plan.gates.metrics.push(g);
            assert_eq!(fields(&plan, Some(&s)), want, "{plan:?}");
        };
        check(&|_| {}, &[]);
        check(
            &|g| g.query = "sum(paid_total)".into(),
            &["gates.metrics[0].query"],
        );
        check(
            &|g| g.query = "x{v=\"{{versoin}}\"}".into(),
            &["gates.metrics[0].query"],
        );
        check(
            &|g| g.query = "x{v=\"{{version\"}".into(),
            &["gates.metrics[0].query"],
        );
        check(
            &|g| g.query = "x{v=\"{{ version }}\"}".into(),
            &["gates.metrics[0].query"],
        );
        check(&|g| g.exposure = None, &["gates.metrics[0].exposure"]);
        check(
            &|g| g.kind = MetricKind::BadValue,
            &["gates.metrics[0].exposure"],
        );
        check(
            &|g| g.interval_seconds = 0,
            &["gates.metrics[0].interval_seconds"],
        );
        check(
            &|g| g.no_data_seconds = 5,
            &["gates.metrics[0].no_data_seconds"],
        );
        check(
            &|g| g.tolerated_ratio = 1.0,
            &["gates.metrics[0].tolerated_ratio"],
        );
        check(
            &|g| g.min_difference = 1.5,
            &["gates.metrics[0].min_difference"],
        );
        check(&|g| g.detect = Some(0.5), &["gates.metrics[0].detect"]);
        check(&|g| g.name = "Checkout!".into(), &["gates.metrics[0].name"]);
        check(&|g| g.name = "errors".into(), &["gates.metrics[0].name"]);
        let mut plan = Plan::through("shop", "v2", &[500]);
        plan.gates.metrics = vec![gate(), gate()];
        plan.prometheus_url = Some("prometheus:9090".into());
        assert_eq!(
            fields(&plan, Some(&s)),
            ["gates.metrics[1].name", "prometheus_url"]
        );
        // A metric gate alone can be the one enforced gate; a dry-run one cannot.
        let mut plan = Plan::through("shop", "v2", &[500]);
        plan.gates.errors = None;
        plan.gates.latency = None;
        plan.gates.metrics.push(gate());
        assert_eq!(plan.enforced_gates(), 1);
        assert_eq!(fields(&plan, Some(&s)), Vec::<String>::new());
        plan.gates.metrics[0].mode = Mode::DryRun;
        assert_eq!(fields(&plan, Some(&s)), ["gates"]);
    }

    #[test]
    fn the_sample_ratio_guard_is_on_unless_the_plan_turns_it_off() {
        let on: Plan = serde_json::from_str(
            r#"{"service": "shop", "canary": "v2", "steps": [{"weight": 500}]}"#,
        )
        .unwrap();
        assert_eq!(on.gates.sample_ratio, Some(SampleRatioGuard::default()));
        let off: Plan = serde_json::from_str(
            r#"{"service": "shop", "canary": "v2", "steps": [{"weight": 500}],
                "gates": {"sample_ratio": null}}"#,
        )
        .unwrap();
        assert_eq!(off.gates.sample_ratio, None);
        assert_eq!(off.enforced_gates(), 2, "the guard is not a gate");
        let mut bad = on.clone();
        bad.gates.sample_ratio = Some(SampleRatioGuard {
            tolerated_ratio: 1.0,
            mode: Mode::Enforce,
        });
        assert_eq!(
            fields(&bad, Some(&shop())),
            ["gates.sample_ratio.tolerated_ratio"]
        );
    }

    #[test]
    fn event_gates_judge_events_the_service_declares() {
        let mut s = shop();
        s.events = vec![grayline_routing::Event {
            name: "declined".into(),
            statuses: vec![402],
        }];
        let gate =
            || -> EventGate { serde_json::from_str(r#"{"event": "declined"}"#).expect("defaults") };
        assert_eq!(gate().kind, MetricKind::BadEvents);
        assert_eq!((gate().tolerated_ratio, gate().detect), (1.2, Some(1.5)));
        assert_eq!(EventGate::new("declined"), gate(), "the same defaults");
        let check = |edit: &dyn Fn(&mut EventGate), want: &[&str]| {
            let mut plan = Plan::through("shop", "v2", &[500]);
            let mut g = gate();
            edit(&mut g);
            plan.gates.events.push(g);
            assert_eq!(fields(&plan, Some(&s)), want, "{plan:?}");
        };
        check(&|_| {}, &[]);
        check(&|g| g.event = "paid".into(), &["gates.events[0].event"]);
        check(&|g| g.event = "no way".into(), &["gates.events[0].event"]);
        check(
            &|g| g.kind = MetricKind::BadValue,
            &["gates.events[0].kind"],
        );
        check(
            &|g| g.tolerated_ratio = 0.9,
            &["gates.events[0].tolerated_ratio"],
        );
        check(&|g| g.detect = Some(1.0), &["gates.events[0].detect"]);
        check(
            &|g| g.min_difference = -0.1,
            &["gates.events[0].min_difference"],
        );
        let mut plan = Plan::through("shop", "v2", &[500]);
        plan.gates.events = vec![gate(), gate()];
        assert_eq!(fields(&plan, Some(&s)), ["gates.events[1].event"]);
        let e = plan.check(Some(&shop())).unwrap_err();
        assert!(
            e.errors[0]
                .message
                .contains("declares no event `declined`; it declares none"),
            "{e}"
        );
        // An event gate counts among the enforced gates.
        plan.gates.events.pop();
        assert_eq!(plan.enforced_gates(), 3);
    }

    #[test]
    fn templates_are_filled() {
        assert_eq!(
            fill(
                r#"sum(rate(x{version="{{version}}",app="{{service}}"}[{{interval}}]))"#,
                "shop",
                "v2",
                10
            ),
            r#"sum(rate(x{version="v2",app="shop"}[10s]))"#
        );
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http:///path").is_err());
        assert!(check_url("http://:80/").is_err());
        assert!(check_url("http://a b/").is_err());
        assert!(check_url("example.com").is_err());
    }

    #[test]
    fn json_defaults_and_null_turns_a_gate_off() {
        let plan: Plan = serde_json::from_str(
            r#"{"service": "shop", "canary": "v2", "steps": [{"weight": 100}],
                "gates": {"latency": null, "ceiling": {"max_error_rate_bp": 500}}}"#,
        )
        .unwrap();
        assert_eq!(plan.alpha, 0.01);
        assert_eq!(plan.steps[0], Step::at(100));
        assert!(plan.gates.errors.is_some() && plan.gates.latency.is_none());
        assert_eq!(plan.gates.ceiling.as_ref().unwrap().mode, Mode::Enforce);
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
        assert_eq!(plan.detect, Some(Detect::default()));
    }

    #[test]
    fn the_last_step_pauses_at_its_limit_unless_the_plan_says_otherwise() {
        let mut plan = Plan::through("shop", "v2", &[500, 2500, 5000]);
        assert_eq!(plan.on_timeout(0), OnTimeout::Advance);
        assert_eq!(plan.on_timeout(2), OnTimeout::Pause);
        plan.steps[2].on_timeout = Some(OnTimeout::Promote);
        plan.steps[0].on_timeout = Some(OnTimeout::Rollback);
        assert_eq!(plan.on_timeout(2), OnTimeout::Promote);
        assert_eq!(plan.on_timeout(0), OnTimeout::Rollback);
        assert_eq!(fields(&plan, Some(&shop())), Vec::<String>::new());
    }

    #[test]
    fn detect_takes_numbers_or_times_and_null_means_the_tolerated_ratio() {
        let parse = |detect: &str| {
            serde_json::from_str::<Plan>(&format!(
                r#"{{"service": "shop", "canary": "v2", "steps": [{{"weight": 100}}],
                    "detect": {detect}}}"#
            ))
        };
        let plan = parse(r#"{"errors": "3x", "latency": 1.25}"#).unwrap();
        assert_eq!(
            (plan.detect_errors(), plan.detect_latency()),
            (Some(3.0), Some(1.25))
        );
        let plan = parse(r#"{"errors": "2×"}"#).unwrap();
        assert_eq!(
            (plan.detect_errors(), plan.detect_latency()),
            (Some(2.0), Some(1.2))
        );
        let plan = parse(r#"{"latency": null}"#).unwrap();
        assert_eq!(
            (plan.detect_errors(), plan.detect_latency()),
            (Some(2.0), None)
        );
        let plan = parse("null").unwrap();
        assert_eq!((plan.detect_errors(), plan.detect_latency()), (None, None));
        let err = parse(r#"{"errors": "double"}"#).unwrap_err().to_string();
        assert!(err.contains("`double` is not a ratio"), "{err}");
        assert!(
            parse(r#"{"error": 2}"#).is_err(),
            "unknown fields are refused"
        );
    }
}
