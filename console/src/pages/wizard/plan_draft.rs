//! The automatic-rollout part of the wizard's draft: the canary, its steps and gates as the
//! form holds them (text, so half-typed numbers survive), presets, and how it becomes a
//! [`Plan`] checked by the same code as the server's. Error keys are the plan's own field
//! paths under `rollout.` (`rollout.steps[1].weight`), so the server's errors land on the
//! same fields as the form's.

use grayline_rollout::estimate::StepEstimate;
use grayline_rollout::plan::{Detect, EventGate, MAX_STEP_SECONDS, MetricGate, MetricKind};
use grayline_rollout::{
    CeilingGate, ErrorGate, Gates, LatencyGate, Mode as GateMode, OnTimeout, Plan, Step,
};
use grayline_routing::Service;

/// Steps and timings to start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Seconds per step: a rollout decides within a few minutes (demos, staging).
    Quick,
    /// 5 %, 25 %, 50 %; two to ten minutes each.
    Standard,
    /// Like standard, with a person approving the step to 50 %.
    Approval,
    /// 1 %, 5 %, 25 %, 50 %; five to thirty minutes each.
    Careful,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Quick,
        Preset::Standard,
        Preset::Approval,
        Preset::Careful,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Preset::Quick => "quick",
            Preset::Standard => "standard",
            Preset::Approval => "approval",
            Preset::Careful => "careful",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Preset::Quick => {
                "Quick: 10 %, 30 %, 60 %, 20 s to 1 min each, then promoted on time if safety is not shown (demos)"
            }
            Preset::Standard => "Standard: 5 %, 25 %, 50 %, 2 to 10 min each",
            Preset::Approval => "With approval: 5 %, 25 %, then a person approves 50 %",
            Preset::Careful => "Careful: 1 %, 5 %, 25 %, 50 %, 5 to 30 min each",
        }
    }

    pub fn from_key(key: &str) -> Preset {
        Preset::ALL
            .into_iter()
            .find(|p| p.key() == key)
            .unwrap_or(Preset::Standard)
    }
}

/// One step as the form holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepDraft {
    /// The canary's share, in percent.
    pub percent: String,
    pub min_seconds: String,
    pub max_seconds: String,
    pub min_requests: String,
    /// `None`: the plan's default (go on; the last step pauses).
    pub on_timeout: Option<OnTimeout>,
    pub approval: bool,
}

impl StepDraft {
    fn new(percent: f64, min: u32, max: u32, approval: bool) -> StepDraft {
        StepDraft {
            percent: trim_number(percent),
            min_seconds: min.to_string(),
            max_seconds: max.to_string(),
            min_requests: "100".into(),
            on_timeout: None,
            approval,
        }
    }
}

/// The rollout as the form holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanDraft {
    pub canary: String,
    pub preset: Preset,
    pub steps: Vec<StepDraft>,
    /// Percent.
    pub alpha: String,
    pub warmup_seconds: String,
    pub error_ratio: String,
    pub error_increase_bp: String,
    pub error_dry_run: bool,
    pub latency: bool,
    /// Percent, e.g. 99.
    pub latency_quantile: String,
    pub latency_ratio: String,
    pub latency_dry_run: bool,
    /// Percent; empty: no ceiling.
    pub ceiling: String,
    /// What the rollout must catch, as ratios ("2", "1.2"); empty: at the tolerated ratio.
    pub detect_errors: String,
    pub detect_latency: String,
    /// Gates on Prometheus queries.
    pub metrics: Vec<MetricDraft>,
    /// Gates on the events the service declares, counted by the proxies.
    pub events: Vec<EventDraft>,
}

/// An event gate as typed: one of the service's declared events.
#[derive(Clone, Debug, PartialEq)]
pub struct EventDraft {
    pub event: String,
    /// `GoodEvents` (fewer is harm) or `BadEvents`.
    pub kind: MetricKind,
    pub tolerated_ratio: String,
    /// Empty: the tolerated ratio.
    pub detect: String,
    /// The least increase (decrease for good events) that is harm, in percentage points of
    /// requests; empty: none.
    pub min_difference_points: String,
    pub dry_run: bool,
}

/// A metric gate as typed.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricDraft {
    pub name: String,
    pub kind: MetricKind,
    pub query: String,
    /// Event kinds only.
    pub exposure: String,
    pub interval_seconds: String,
    pub tolerated_ratio: String,
    /// Empty: the tolerated ratio.
    pub detect: String,
    /// The least difference that is harm, in the metric's own unit (a share of exposures for
    /// event kinds); empty: none.
    pub min_difference: String,
    /// Seconds without answers before the rollout pauses.
    pub no_data_seconds: String,
    pub dry_run: bool,
}

impl MetricDraft {
    /// A new gate counting good events (conversions per session), the common start.
    pub fn new(name: String) -> MetricDraft {
        MetricDraft {
            name,
            kind: MetricKind::GoodEvents,
            query: r#"sum(increase(conversions_total{version="{{version}}"}[{{interval}}]))"#
                .into(),
            exposure: r#"sum(increase(sessions_total{version="{{version}}"}[{{interval}}]))"#
                .into(),
            interval_seconds: "10".into(),
            tolerated_ratio: "1.2".into(),
            detect: "1.5".into(),
            min_difference: String::new(),
            no_data_seconds: grayline_rollout::plan::default_no_data_seconds().to_string(),
            dry_run: false,
        }
    }
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl PlanDraft {
    pub fn new(preset: Preset) -> PlanDraft {
        let mut d = PlanDraft {
            canary: String::new(),
            preset,
            steps: Vec::new(),
            alpha: "1".into(),
            warmup_seconds: "10".into(),
            error_ratio: "1.5".into(),
            error_increase_bp: "10".into(),
            error_dry_run: false,
            latency: true,
            latency_quantile: "99".into(),
            latency_ratio: "1.5".into(),
            latency_dry_run: false,
            ceiling: String::new(),
            detect_errors: "2".into(),
            detect_latency: "1.2".into(),
            metrics: Vec::new(),
            events: Vec::new(),
        };
        d.apply_preset(preset);
        d
    }

    /// Replaces the steps (and the warm-up) with the preset's.
    pub fn apply_preset(&mut self, preset: Preset) {
        self.preset = preset;
        let s = StepDraft::new;
        let on_time = |mut steps: Vec<StepDraft>| {
            if let Some(last) = steps.last_mut() {
                last.on_timeout = Some(OnTimeout::Promote);
            }
            steps
        };
        (self.steps, self.warmup_seconds) = match preset {
            Preset::Quick => (
                on_time(vec![
                    s(10.0, 20, 60, false),
                    s(30.0, 20, 60, false),
                    s(60.0, 20, 60, false),
                ]),
                "5".into(),
            ),
            Preset::Standard => (
                vec![
                    s(5.0, 120, 600, false),
                    s(25.0, 120, 600, false),
                    s(50.0, 120, 600, false),
                ],
                "10".into(),
            ),
            Preset::Approval => (
                vec![
                    s(5.0, 120, 600, false),
                    s(25.0, 120, 600, true),
                    s(50.0, 120, 600, false),
                ],
                "10".into(),
            ),
            Preset::Careful => (
                vec![
                    s(1.0, 300, 1800, false),
                    s(5.0, 300, 1800, false),
                    s(25.0, 300, 1800, false),
                    s(50.0, 300, 1800, false),
                ],
                "30".into(),
            ),
        };
    }

    /// Removes step `i` (never the only one); what the last step did at its limit stays with
    /// the last step.
    pub fn remove_step(&mut self, i: usize) {
        if self.steps.len() < 2 || i >= self.steps.len() {
            return;
        }
        let removed = self.steps.remove(i);
        if i == self.steps.len()
            && let Some(last) = self.steps.last_mut()
            && matches!(removed.on_timeout, Some(OnTimeout::Promote))
        {
            last.on_timeout = removed.on_timeout;
        }
    }

    /// Adds a metric gate with a name no other has.
    pub fn add_metric(&mut self) {
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    "conversions".to_string()
                } else {
                    format!("metric-{n}")
                }
            })
            .find(|n| !self.metrics.iter().any(|m| m.name == *n))
            .expect("a free name");
        self.metrics.push(MetricDraft::new(name));
    }

    /// Adds a gate on the first of `declared` (the service's events) that has none yet, or
    /// on the first one; nothing when the service declares none.
    pub fn add_event(&mut self, declared: &[String]) {
        let Some(event) = declared
            .iter()
            .find(|e| !self.events.iter().any(|g| g.event == **e))
            .or(declared.first())
        else {
            return;
        };
        let defaults = EventGate::new(event);
        self.events.push(EventDraft {
            event: event.clone(),
            kind: defaults.kind,
            tolerated_ratio: trim_number(defaults.tolerated_ratio),
            detect: defaults.detect.map_or(String::new(), trim_number),
            min_difference_points: String::new(),
            dry_run: false,
        });
    }

    pub fn add_step(&mut self) {
        let last = self.steps.last().cloned();
        let percent = last
            .as_ref()
            .and_then(|s| s.percent.trim().parse::<f64>().ok())
            .map_or(10.0, |p| (p * 2.0).min(90.0));
        let mut step = last.unwrap_or_else(|| StepDraft::new(10.0, 60, 600, false));
        step.percent = trim_number(percent);
        step.approval = false;
        // What the last step did at its limit stays with the last step.
        if let Some(previous) = self.steps.last_mut()
            && matches!(previous.on_timeout, Some(OnTimeout::Promote))
        {
            previous.on_timeout = None;
        } else {
            step.on_timeout = None;
        }
        self.steps.push(step);
    }

    /// Sets each step's time limit to one and a half times what its evidence needs by
    /// `estimates` (whole minutes, at least the step's minimum, at most a day); a step whose
    /// evidence cannot come at that traffic keeps its limit.
    pub fn fit_time_limits(&mut self, estimates: &[StepEstimate]) {
        for (step, e) in self.steps.iter_mut().zip(estimates) {
            let needed = e.gates.iter().map(|g| g.1).fold(0.0, f64::max);
            if e.gates.is_empty() || !needed.is_finite() {
                continue;
            }
            let min = step.min_seconds.trim().parse::<f64>().unwrap_or(0.0);
            let limit = ((needed * 1.5 / 60.0).ceil() * 60.0)
                .max(min)
                .max(60.0)
                .min(f64::from(MAX_STEP_SECONDS));
            step.max_seconds = format!("{limit:.0}");
        }
    }

    /// The plan for rolling `self.canary` out on `service`, and the entries that are not
    /// numbers (keyed by field).
    pub fn build(&self, service: &Service) -> (Plan, Vec<(String, String)>) {
        let mut bad = Vec::new();
        let mut number = |text: &str, key: String, what: &str| -> f64 {
            match text.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => v,
                _ => {
                    bad.push((key, format!("`{}` is not a number ({what})", text.trim())));
                    0.0
                }
            }
        };
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = |f: &str| format!("rollout.steps[{i}].{f}");
                Step {
                    weight: (number(&s.percent, key("weight"), "percent") * 100.0).round() as u32,
                    min_seconds: number(&s.min_seconds, key("min_seconds"), "seconds") as u32,
                    max_seconds: number(&s.max_seconds, key("max_seconds"), "seconds") as u32,
                    min_requests: number(&s.min_requests, key("min_requests"), "requests") as u64,
                    on_timeout: s.on_timeout,
                    approval: s.approval,
                }
            })
            .collect();
        let mode = |dry: bool| {
            if dry {
                GateMode::DryRun
            } else {
                GateMode::Enforce
            }
        };
        let errors = Some(ErrorGate {
            tolerated_ratio: number(
                &self.error_ratio,
                "rollout.gates.errors.tolerated_ratio".into(),
                "ratio",
            ),
            min_increase_bp: number(
                &self.error_increase_bp,
                "rollout.gates.errors.min_increase_bp".into(),
                "basis points",
            ) as u32,
            mode: mode(self.error_dry_run),
        });
        let latency = self.latency.then(|| LatencyGate {
            quantile: number(
                &self.latency_quantile,
                "rollout.gates.latency.quantile".into(),
                "percent",
            ) / 100.0,
            tolerated_ratio: number(
                &self.latency_ratio,
                "rollout.gates.latency.tolerated_ratio".into(),
                "ratio",
            ),
            min_increase_bp: LatencyGate::default().min_increase_bp,
            mode: mode(self.latency_dry_run),
        });
        let ceiling = (!self.ceiling.trim().is_empty()).then(|| CeilingGate {
            max_error_rate_bp: (number(
                &self.ceiling,
                "rollout.gates.ceiling.max_error_rate_bp".into(),
                "percent",
            ) * 100.0)
                .round() as u32,
            mode: GateMode::Enforce,
        });
        let mut ratio = |text: &str, key: &str| {
            let text = text.trim().trim_end_matches(['x', '×']).trim();
            (!text.is_empty()).then(|| number(text, key.into(), "ratio"))
        };
        let detect = Detect {
            errors: ratio(&self.detect_errors, "rollout.detect.errors"),
            latency: ratio(&self.detect_latency, "rollout.detect.latency"),
        };
        let metrics = self
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let key = |f: &str| format!("rollout.gates.metrics[{i}].{f}");
                MetricGate {
                    name: m.name.trim().to_string(),
                    kind: m.kind,
                    query: m.query.trim().to_string(),
                    exposure: m.kind.counts().then(|| m.exposure.trim().to_string()),
                    interval_seconds: ratio(&m.interval_seconds, &key("interval_seconds"))
                        .unwrap_or(0.0) as u32,
                    tolerated_ratio: ratio(&m.tolerated_ratio, &key("tolerated_ratio"))
                        .unwrap_or(0.0),
                    min_difference: ratio(&m.min_difference, &key("min_difference")).unwrap_or(0.0),
                    detect: ratio(&m.detect, &key("detect")),
                    no_data_seconds: ratio(&m.no_data_seconds, &key("no_data_seconds"))
                        .unwrap_or(0.0) as u32,
                    mode: mode(m.dry_run),
                }
            })
            .collect();
        let events = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let key = |f: &str| format!("rollout.gates.events[{i}].{f}");
                EventGate {
                    event: e.event.trim().to_string(),
                    kind: e.kind,
                    tolerated_ratio: ratio(&e.tolerated_ratio, &key("tolerated_ratio"))
                        .unwrap_or(0.0),
                    min_difference: ratio(&e.min_difference_points, &key("min_difference"))
                        .unwrap_or(0.0)
                        / 100.0,
                    detect: ratio(&e.detect, &key("detect")),
                    mode: mode(e.dry_run),
                }
            })
            .collect();
        let plan = Plan {
            service: service.name.clone(),
            canary: self.canary.clone(),
            alpha: number(&self.alpha, "rollout.alpha".into(), "percent") / 100.0,
            steps,
            warmup_seconds: number(
                &self.warmup_seconds,
                "rollout.warmup_seconds".into(),
                "seconds",
            ) as u32,
            gates: Gates {
                errors,
                latency,
                ceiling,
                metrics,
                events,
                // On, as in every plan; files and the APIs can turn it off.
                sample_ratio: Gates::default().sample_ratio,
            },
            detect: (detect.errors.is_some() || detect.latency.is_some()).then_some(detect),
            sticky: None,
            webhooks: Vec::new(),
            prometheus_url: None,
        };
        (plan, bad)
    }

    /// Everything wrong with the plan for `service`, keyed by field, checked as the server
    /// will.
    pub fn check(&self, service: &Service) -> Vec<(String, String)> {
        let (plan, mut errors) = self.build(service);
        if let Err(invalid) = plan.check(Some(service)) {
            for e in invalid.errors {
                let key = format!("rollout.{}", e.field);
                if !errors.iter().any(|(k, _)| *k == key) {
                    errors.push((key, e.message));
                }
            }
        }
        errors
    }
}

/// The form key of a server error about the plan (`plan.steps[0].weight`).
pub fn locate(path: &str) -> String {
    match path.strip_prefix("plan.") {
        Some(rest) => format!("rollout.{rest}"),
        None if path == "plan" => "rollout".into(),
        None => path.to_string(),
    }
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

    #[test]
    fn metric_gates_build_and_their_errors_name_the_row() {
        let mut d = PlanDraft::new(Preset::Standard);
        d.canary = "v2".into();
        d.add_metric();
        d.add_metric();
        assert_eq!(d.metrics[1].name, "metric-2");
        assert_eq!(d.check(&shop()), vec![]);
        let (plan, _) = d.build(&shop());
        assert_eq!(plan.gates.metrics.len(), 2);
        assert_eq!(plan.enforced_gates(), 4);
        assert!(plan.gates.metrics[0].exposure.is_some());
        d.metrics[1].min_difference = "2.5".into();
        d.metrics[1].no_data_seconds = "300".into();
        d.metrics[1].dry_run = true;
        let (plan, _) = d.build(&shop());
        let m = &plan.gates.metrics[1];
        assert_eq!((m.min_difference, m.no_data_seconds), (2.5, 300));
        assert_eq!(m.mode, GateMode::DryRun);
        d.metrics[1].no_data_seconds = "1".into();
        let keys: Vec<String> = d.check(&shop()).into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.contains(&"rollout.gates.metrics[1].no_data_seconds".to_string()),
            "{keys:?}"
        );
        d.metrics[1].no_data_seconds = "120".into();
        d.metrics[1].query = "sum(x)".into();
        d.metrics[1].interval_seconds = "soon".into();
        d.metrics[0].kind = MetricKind::BadValue;
        let keys: Vec<String> = d.check(&shop()).into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.contains(&"rollout.gates.metrics[1].query".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"rollout.gates.metrics[1].interval_seconds".to_string()),
            "{keys:?}"
        );
        // A value gate has no exposure: the typed one is not sent.
        assert!(
            !keys
                .iter()
                .any(|k| k.starts_with("rollout.gates.metrics[0]")),
            "{keys:?}"
        );
    }

    #[test]
    fn event_gates_take_the_service_s_declared_events_and_errors_name_the_row() {
        let mut service = shop();
        let mut d = PlanDraft::new(Preset::Standard);
        d.canary = "v2".into();
        d.add_event(&[]);
        assert!(d.events.is_empty(), "no declared events: no gate");
        service.events = vec![
            grayline_routing::Event {
                name: "converted".into(),
                statuses: Vec::new(),
            },
            grayline_routing::Event {
                name: "declined".into(),
                statuses: vec![402],
            },
        ];
        let declared: Vec<String> = service.events.iter().map(|e| e.name.clone()).collect();
        d.add_event(&declared);
        d.add_event(&declared);
        assert_eq!(d.events[0].event, "converted");
        assert_eq!(d.events[1].event, "declined");
        d.events[0].kind = MetricKind::GoodEvents;
        assert_eq!(d.check(&service), vec![]);
        let (plan, _) = d.build(&service);
        assert_eq!(plan.gates.events.len(), 2);
        assert_eq!(plan.enforced_gates(), 4);
        assert!(plan.gates.events[0].kind.good());
        d.events[1].min_difference_points = "0.5".into();
        d.events[1].dry_run = true;
        let (plan, _) = d.build(&service);
        assert_eq!(plan.gates.events[1].min_difference, 0.005);
        assert_eq!(plan.gates.events[1].mode, GateMode::DryRun);
        assert_eq!(plan.enforced_gates(), 3, "a dry-run gate is not enforced");
        d.events[1].event = "refunded".into();
        d.events[0].tolerated_ratio = "soon".into();
        let keys: Vec<String> = d.check(&service).into_iter().map(|(k, _)| k).collect();
        for want in [
            "rollout.gates.events[1].event",
            "rollout.gates.events[0].tolerated_ratio",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} in {keys:?}");
        }
    }

    #[test]
    fn presets_build_valid_plans() {
        for preset in Preset::ALL {
            let mut d = PlanDraft::new(preset);
            d.canary = "v2".into();
            assert_eq!(d.check(&shop()), vec![], "{preset:?}");
            let (plan, _) = d.build(&shop());
            assert_eq!(plan.alpha, 0.01);
            assert!(plan.steps.windows(2).all(|w| w[0].weight < w[1].weight));
            assert_eq!(Preset::from_key(preset.key()), preset);
        }
        let d = PlanDraft::new(Preset::Approval);
        assert!(d.steps[1].approval);
    }

    #[test]
    fn errors_are_keyed_by_the_plan_paths() {
        let mut d = PlanDraft::new(Preset::Standard);
        d.canary = "v1".into();
        d.steps[1].percent = "2".into();
        d.steps[2].max_seconds = "soon".into();
        d.steps[0].on_timeout = Some(OnTimeout::Promote);
        d.alpha = "50".into();
        d.detect_errors = "1".into();
        let keys: Vec<String> = d.check(&shop()).into_iter().map(|(k, _)| k).collect();
        for want in [
            "rollout.canary",
            "rollout.steps[1].weight",
            "rollout.steps[2].max_seconds",
            "rollout.steps[0].on_timeout",
            "rollout.alpha",
            "rollout.detect.errors",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} in {keys:?}");
        }
        assert_eq!(locate("plan.steps[1].weight"), "rollout.steps[1].weight");
        assert_eq!(locate("plan"), "rollout");
    }

    #[test]
    fn detect_builds_from_text_and_empty_means_the_tolerated_ratio() {
        let mut d = PlanDraft::new(Preset::Standard);
        d.canary = "v2".into();
        let (plan, bad) = d.build(&shop());
        assert!(bad.is_empty());
        assert_eq!(plan.detect, Some(Detect::default()));
        d.detect_errors = "3x".into();
        d.detect_latency = String::new();
        let (plan, _) = d.build(&shop());
        assert_eq!(
            (plan.detect_errors(), plan.detect_latency()),
            (Some(3.0), None)
        );
        d.detect_errors = String::new();
        assert_eq!(d.build(&shop()).0.detect, None);
    }

    #[test]
    fn time_limits_fit_the_estimate() {
        use grayline_rollout::estimate::{self, Limit, Traffic};
        let mut d = PlanDraft::new(Preset::Quick);
        d.canary = "v2".into();
        let traffic = Traffic {
            requests_per_second: 40.0,
            error_rate: 0.01,
            latency_spread: None,
        };
        let before = estimate::steps(&d.build(&shop()).0, &traffic);
        assert!(
            before.iter().all(|e| e.limited_by == Limit::TimeLimit),
            "{before:?}"
        );
        d.fit_time_limits(&before);
        let after = estimate::steps(&d.build(&shop()).0, &traffic);
        for (e, s) in after.iter().zip(&d.steps) {
            assert_eq!(e.limited_by, Limit::Evidence, "{e:?}");
            assert!(s.max_seconds.parse::<u32>().unwrap() % 60 == 0);
        }
        assert_eq!(d.check(&shop()), vec![]);
        // Nothing to go by: the limits stay.
        let mut idle = PlanDraft::new(Preset::Quick);
        let none = estimate::steps(
            &idle.build(&shop()).0,
            &Traffic {
                requests_per_second: 0.0,
                ..traffic
            },
        );
        idle.fit_time_limits(&none);
        assert_eq!(idle.steps[0].max_seconds, "60");
    }

    #[test]
    fn removing_the_last_step_keeps_its_promotion_on_time() {
        let mut d = PlanDraft::new(Preset::Quick);
        d.remove_step(2);
        assert_eq!(d.steps.len(), 2);
        assert_eq!(d.steps[1].on_timeout, Some(OnTimeout::Promote));
        d.canary = "v2".into();
        assert_eq!(d.check(&shop()), vec![]);
        d.remove_step(0);
        d.remove_step(0);
        assert_eq!(d.steps.len(), 1, "the only step stays");
    }

    #[test]
    fn added_steps_climb() {
        let mut d = PlanDraft::new(Preset::Quick);
        d.add_step();
        assert_eq!(d.steps.last().unwrap().percent, "90");
        d.canary = "v2".into();
        assert_eq!(d.check(&shop()), vec![]);
    }
}
