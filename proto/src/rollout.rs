//! Conversions between rollout messages and `grayline-rollout`'s plan and state. A plan from
//! the wire takes the same defaults as one from JSON; unknown enum numbers are field-path
//! errors under `plan.`.

use grayline_rollout::plan::MetricKind;
use grayline_rollout::{self as r, GateKind, Mode, OnTimeout, RolloutView, Verdict};
use grayline_routing::{FieldError, Invalid};

use crate::convert::{sticky_from_pb, sticky_to_pb};
use crate::v1 as pb;

fn mode_from(mode: i32, path: &str, errors: &mut Vec<FieldError>) -> Mode {
    match pb::GateMode::try_from(mode) {
        Ok(pb::GateMode::Enforce) => Mode::Enforce,
        Ok(pb::GateMode::DryRun) => Mode::DryRun,
        Err(_) => {
            errors.push(FieldError::new(path, format!("unknown gate mode {mode}")));
            Mode::Enforce
        }
    }
}

fn mode_to(mode: Mode) -> i32 {
    match mode {
        Mode::Enforce => pb::GateMode::Enforce as i32,
        Mode::DryRun => pb::GateMode::DryRun as i32,
    }
}

fn kind_from(kind: i32, path: &str, errors: &mut Vec<FieldError>) -> MetricKind {
    match pb::MetricKind::try_from(kind) {
        Ok(pb::MetricKind::BadEvents) => MetricKind::BadEvents,
        Ok(pb::MetricKind::GoodEvents) => MetricKind::GoodEvents,
        Ok(pb::MetricKind::BadValue) => MetricKind::BadValue,
        Ok(pb::MetricKind::GoodValue) => MetricKind::GoodValue,
        Err(_) => {
            errors.push(FieldError::new(path, format!("unknown metric kind {kind}")));
            MetricKind::BadEvents
        }
    }
}

fn kind_to(kind: MetricKind) -> i32 {
    let k = match kind {
        MetricKind::BadEvents => pb::MetricKind::BadEvents,
        MetricKind::GoodEvents => pb::MetricKind::GoodEvents,
        MetricKind::BadValue => pb::MetricKind::BadValue,
        MetricKind::GoodValue => pb::MetricKind::GoodValue,
    };
    k as i32
}

fn metric_from(i: usize, m: pb::MetricGate, errors: &mut Vec<FieldError>) -> r::plan::MetricGate {
    let path = |f: &str| format!("plan.gates.metrics[{i}].{f}");
    r::plan::MetricGate {
        name: m.name,
        kind: kind_from(m.kind, &path("kind"), errors),
        query: m.query,
        exposure: m.exposure,
        interval_seconds: m
            .interval_seconds
            .unwrap_or_else(r::plan::default_metric_interval),
        tolerated_ratio: m
            .tolerated_ratio
            .unwrap_or_else(r::plan::default_metric_ratio),
        min_difference: m.min_difference.unwrap_or(0.0),
        detect: detect_from(m.detect),
        no_data_seconds: m
            .no_data_seconds
            .unwrap_or_else(r::plan::default_no_data_seconds),
        mode: mode_from(m.mode, &path("mode"), errors),
    }
}

fn metric_to(m: &r::plan::MetricGate) -> pb::MetricGate {
    pb::MetricGate {
        name: m.name.clone(),
        kind: kind_to(m.kind),
        query: m.query.clone(),
        exposure: m.exposure.clone(),
        interval_seconds: Some(m.interval_seconds),
        tolerated_ratio: Some(m.tolerated_ratio),
        min_difference: Some(m.min_difference),
        detect: Some(m.detect.unwrap_or(0.0)),
        no_data_seconds: Some(m.no_data_seconds),
        mode: mode_to(m.mode),
    }
}

fn event_from(i: usize, e: pb::EventGate, errors: &mut Vec<FieldError>) -> r::plan::EventGate {
    let path = |f: &str| format!("plan.gates.events[{i}].{f}");
    r::plan::EventGate {
        event: e.event,
        kind: kind_from(e.kind, &path("kind"), errors),
        tolerated_ratio: e
            .tolerated_ratio
            .unwrap_or_else(r::plan::default_metric_ratio),
        min_difference: e.min_difference.unwrap_or(0.0),
        detect: detect_from(e.detect),
        mode: mode_from(e.mode, &path("mode"), errors),
    }
}

fn event_to(e: &r::plan::EventGate) -> pb::EventGate {
    pb::EventGate {
        event: e.event.clone(),
        kind: kind_to(e.kind),
        tolerated_ratio: Some(e.tolerated_ratio),
        min_difference: Some(e.min_difference),
        detect: Some(e.detect.unwrap_or(0.0)),
        mode: mode_to(e.mode),
    }
}

/// A custom gate's detect ratio: unset is the default, 0 the tolerated ratio.
fn detect_from(detect: Option<f64>) -> Option<f64> {
    match detect {
        None => Some(r::plan::default_metric_detect()),
        Some(0.0) => None,
        Some(d) => Some(d),
    }
}

/// A plan from the wire; field paths start at `plan`.
pub fn plan_from_pb(p: pb::RolloutPlan) -> Result<r::Plan, Invalid> {
    let mut errors = Vec::new();
    let steps = p
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| r::Step {
            weight: s.weight,
            min_seconds: s.min_seconds.unwrap_or_else(r::plan::default_min_seconds),
            min_requests: s.min_requests.unwrap_or_else(r::plan::default_min_requests),
            max_seconds: s.max_seconds.unwrap_or_else(r::plan::default_max_seconds),
            on_timeout: s.on_timeout.map(|t| match pb::OnTimeout::try_from(t) {
                Ok(pb::OnTimeout::Advance) => OnTimeout::Advance,
                Ok(pb::OnTimeout::Pause) => OnTimeout::Pause,
                Ok(pb::OnTimeout::Rollback) => OnTimeout::Rollback,
                Ok(pb::OnTimeout::Promote) => OnTimeout::Promote,
                Err(_) => {
                    errors.push(FieldError::new(
                        format!("plan.steps[{i}].on_timeout"),
                        format!("unknown value {t}"),
                    ));
                    OnTimeout::Pause
                }
            }),
            approval: s.approval,
        })
        .collect();
    let defaults = r::Gates::default();
    let g = p.gates.unwrap_or_default();
    let errors_gate = match g.errors {
        None => defaults.errors,
        Some(e) if e.disabled => None,
        Some(e) => {
            let d = r::ErrorGate::default();
            Some(r::ErrorGate {
                tolerated_ratio: e.tolerated_ratio.unwrap_or(d.tolerated_ratio),
                min_increase_bp: e.min_increase_bp.unwrap_or(d.min_increase_bp),
                mode: mode_from(e.mode, "plan.gates.errors.mode", &mut errors),
            })
        }
    };
    let latency_gate = match g.latency {
        None => defaults.latency,
        Some(l) if l.disabled => None,
        Some(l) => {
            let d = r::LatencyGate::default();
            Some(r::LatencyGate {
                quantile: l.quantile.unwrap_or(d.quantile),
                tolerated_ratio: l.tolerated_ratio.unwrap_or(d.tolerated_ratio),
                min_increase_bp: l.min_increase_bp.unwrap_or(d.min_increase_bp),
                mode: mode_from(l.mode, "plan.gates.latency.mode", &mut errors),
            })
        }
    };
    let ceiling = g.ceiling.map(|c| r::CeilingGate {
        max_error_rate_bp: c.max_error_rate_bp,
        mode: mode_from(c.mode, "plan.gates.ceiling.mode", &mut errors),
    });
    let events = g
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| event_from(i, e, &mut errors))
        .collect();
    let metrics = g
        .metrics
        .into_iter()
        .enumerate()
        .map(|(i, m)| metric_from(i, m, &mut errors))
        .collect();
    let sticky = p
        .sticky
        .and_then(|k| sticky_from_pb(k, "plan.sticky", &mut errors));
    let detect = match p.detect {
        None => Some(r::plan::Detect::default()),
        Some(d) if d.disabled => None,
        Some(d) => {
            let defaults = r::plan::Detect::default();
            // 0: this gate at its tolerated ratio.
            let ratio = |v: Option<f64>, default: Option<f64>| match v {
                None => default,
                Some(0.0) => None,
                Some(v) => Some(v),
            };
            Some(r::plan::Detect {
                errors: ratio(d.errors, defaults.errors),
                latency: ratio(d.latency, defaults.latency),
            })
        }
    };
    let webhooks = p
        .webhooks
        .into_iter()
        .map(|w| r::Webhook {
            url: w.url,
            ask: w.ask,
            timeout_ms: w
                .timeout_ms
                .unwrap_or_else(r::plan::default_webhook_timeout_ms),
            retries: w.retries.unwrap_or_else(r::plan::default_webhook_retries),
        })
        .collect();
    let sample_ratio = match g.sample_ratio {
        None => defaults.sample_ratio,
        Some(s) if s.disabled => None,
        Some(s) => {
            let d = r::plan::SampleRatioGuard::default();
            Some(r::plan::SampleRatioGuard {
                tolerated_ratio: s.tolerated_ratio.unwrap_or(d.tolerated_ratio),
                mode: mode_from(s.mode, "plan.gates.sample_ratio.mode", &mut errors),
            })
        }
    };
    let plan = r::Plan {
        service: p.service,
        canary: p.canary,
        alpha: p.alpha.unwrap_or_else(r::plan::default_alpha),
        steps,
        warmup_seconds: p
            .warmup_seconds
            .unwrap_or_else(r::plan::default_warmup_seconds),
        gates: r::Gates {
            errors: errors_gate,
            latency: latency_gate,
            ceiling,
            metrics,
            events,
            sample_ratio,
        },
        detect,
        sticky,
        webhooks,
        prometheus_url: p.prometheus_url,
    };
    Invalid::check(errors).map(|()| plan)
}

pub fn plan_to_pb(p: &r::Plan) -> pb::RolloutPlan {
    pb::RolloutPlan {
        service: p.service.clone(),
        canary: p.canary.clone(),
        alpha: Some(p.alpha),
        warmup_seconds: Some(p.warmup_seconds),
        steps: p
            .steps
            .iter()
            .map(|s| pb::RolloutStep {
                weight: s.weight,
                min_seconds: Some(s.min_seconds),
                min_requests: Some(s.min_requests),
                max_seconds: Some(s.max_seconds),
                on_timeout: s.on_timeout.map(|t| {
                    let t = match t {
                        OnTimeout::Advance => pb::OnTimeout::Advance,
                        OnTimeout::Pause => pb::OnTimeout::Pause,
                        OnTimeout::Rollback => pb::OnTimeout::Rollback,
                        OnTimeout::Promote => pb::OnTimeout::Promote,
                    };
                    t as i32
                }),
                approval: s.approval,
            })
            .collect(),
        gates: Some(pb::RolloutGates {
            errors: Some(match &p.gates.errors {
                None => pb::ErrorGate {
                    disabled: true,
                    ..Default::default()
                },
                Some(e) => pb::ErrorGate {
                    disabled: false,
                    tolerated_ratio: Some(e.tolerated_ratio),
                    min_increase_bp: Some(e.min_increase_bp),
                    mode: mode_to(e.mode),
                },
            }),
            latency: Some(match &p.gates.latency {
                None => pb::LatencyGate {
                    disabled: true,
                    ..Default::default()
                },
                Some(l) => pb::LatencyGate {
                    disabled: false,
                    quantile: Some(l.quantile),
                    tolerated_ratio: Some(l.tolerated_ratio),
                    min_increase_bp: Some(l.min_increase_bp),
                    mode: mode_to(l.mode),
                },
            }),
            ceiling: p.gates.ceiling.as_ref().map(|c| pb::CeilingGate {
                max_error_rate_bp: c.max_error_rate_bp,
                mode: mode_to(c.mode),
            }),
            metrics: p.gates.metrics.iter().map(metric_to).collect(),
            events: p.gates.events.iter().map(event_to).collect(),
            sample_ratio: Some(match &p.gates.sample_ratio {
                None => pb::SampleRatioGuard {
                    disabled: true,
                    ..Default::default()
                },
                Some(g) => pb::SampleRatioGuard {
                    disabled: false,
                    tolerated_ratio: Some(g.tolerated_ratio),
                    mode: mode_to(g.mode),
                },
            }),
        }),
        detect: Some(match &p.detect {
            None => pb::RolloutDetect {
                disabled: true,
                ..Default::default()
            },
            Some(d) => pb::RolloutDetect {
                disabled: false,
                errors: Some(d.errors.unwrap_or(0.0)),
                latency: Some(d.latency.unwrap_or(0.0)),
            },
        }),
        sticky: p.sticky.as_ref().map(sticky_to_pb),
        webhooks: p
            .webhooks
            .iter()
            .map(|w| pb::RolloutWebhook {
                url: w.url.clone(),
                ask: w.ask,
                timeout_ms: Some(w.timeout_ms),
                retries: Some(w.retries),
            })
            .collect(),
        prometheus_url: p.prometheus_url.clone(),
    }
}

/// A metric gate's preview on the wire.
pub fn preview_to_pb(p: r::view::MetricPreview) -> pb::MetricGatePreview {
    pb::MetricGatePreview {
        gate: p.gate,
        canary: p.canary,
        baseline: p.baseline,
        step_seconds: p.step_seconds,
        points: p
            .points
            .into_iter()
            .map(|q| pb::MetricPreviewPoint {
                time_unix_s: q.time_unix_s,
                canary: q.canary,
                baseline: q.baseline,
            })
            .collect(),
        canary_queries: p.canary_queries,
        baseline_queries: p.baseline_queries,
    }
}

/// A metric gate's preview from the wire.
pub fn preview_from_pb(p: pb::MetricGatePreview) -> r::view::MetricPreview {
    r::view::MetricPreview {
        gate: p.gate,
        canary: p.canary,
        baseline: p.baseline,
        step_seconds: p.step_seconds,
        points: p
            .points
            .into_iter()
            .map(|q| r::view::PreviewPoint {
                time_unix_s: q.time_unix_s,
                canary: q.canary,
                baseline: q.baseline,
            })
            .collect(),
        canary_queries: p.canary_queries,
        baseline_queries: p.baseline_queries,
    }
}

pub fn transition_to_pb(t: &r::Transition) -> pb::RolloutTransition {
    pb::RolloutTransition {
        seq: t.seq,
        time_unix_ms: t.time_unix_ms,
        from: t.from.clone(),
        to: t.to.clone(),
        step: t.step as u32,
        weight: t.weight,
        actor: t.actor.clone(),
        reason: t.reason.clone(),
    }
}

fn gate_name(kind: GateKind) -> &'static str {
    match kind {
        GateKind::Errors => "errors",
        GateKind::Latency => "latency",
        GateKind::Ceiling => "ceiling",
        GateKind::Metric => "metric",
        GateKind::Event => "event",
    }
}

fn metric_status(m: &r::gate::MetricState, paused: bool) -> pb::MetricGateStatus {
    let n = m.intervals.max(1) as f64;
    pb::MetricGateStatus {
        name: m.name.clone(),
        kind: kind_to(m.kind),
        interval_seconds: m.interval_seconds,
        intervals: m.intervals,
        missing: m.missing,
        last_end_unix_s: m.last_end_unix_s,
        last_data_unix_s: m.last_data_unix_s,
        last_canary: m.last.map(|l| l.0),
        last_baseline: m.last.map(|l| l.1),
        canary_mean: m.canary_sum / n,
        baseline_mean: m.baseline_sum / n,
        problem: m.problem.clone().unwrap_or_default(),
        paused_rollout: paused,
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Undecided => "undecided",
        Verdict::Harm => "harm",
        Verdict::Safe => "safe",
        Verdict::Waiting => "waiting",
    }
}

pub fn status_to_pb(v: &RolloutView) -> pb::RolloutStatus {
    let ro = &v.rollout;
    pb::RolloutStatus {
        id: ro.id,
        service: ro.plan.service.clone(),
        canary: ro.plan.canary.clone(),
        baseline: ro.baseline.clone(),
        plan: Some(plan_to_pb(&ro.plan)),
        phase: ro.phase.name().to_string(),
        reason: v.reason().to_string(),
        step: ro.step as u32,
        weight: v.weight,
        attempt: ro.attempt,
        started_by: ro.started_by.clone(),
        started_unix_ms: ro.started_unix_ms,
        step_started_unix_ms: ro.step_started_unix_ms,
        step_seconds: ro.step_seconds,
        step_canary_requests: ro.step_canary_requests,
        observed_seconds: ro.observed_seconds,
        latency_threshold_us: ro.latency_threshold_us,
        gates: ro
            .gates
            .iter()
            .zip(&v.summaries)
            .map(|(g, s)| pb::GateStatus {
                gate: gate_name(g.kind).to_string(),
                mode: mode_to(g.mode),
                verdict: verdict_name(g.verdict).to_string(),
                harm_log10: s.harm_log10,
                safe_log10: s.safe_log10,
                threshold_log10: s.threshold_log10,
                safe_threshold_log10: s.safe_threshold_log10,
                canary_requests: g.canary.requests,
                canary_events: g.canary.events,
                baseline_requests: g.baseline.requests,
                baseline_events: g.baseline.events,
                canary_rate: s.canary_rate,
                canary_low: s.canary_interval.0,
                canary_high: s.canary_interval.1,
                baseline_rate: s.baseline_rate,
                baseline_low: s.baseline_interval.0,
                baseline_high: s.baseline_interval.1,
                limit_rate: s.limit_rate,
                alpha: g.alpha,
                safe_ratio: s.safe_ratio,
                metric: g.metric.as_deref().map(|m| {
                    let paused = ro.no_data_pause.as_deref() == Some(g.title().as_str());
                    metric_status(m, paused)
                }),
                event: g.event.as_ref().map_or(String::new(), |e| e.name.clone()),
                good_event: g.event.as_ref().is_some_and(|e| e.good),
            })
            .collect(),
        transitions: ro.transitions.iter().map(transition_to_pb).collect(),
        revision: v.revision,
        promotion: ro.promotion.map_or("", |p| p.name()).to_string(),
        canary_fallbacks: ro.canary_fallbacks,
        baseline_fallbacks: ro.baseline_fallbacks,
        held: ro.hold.held,
        step_limit_seconds: if ro.phase.is_done() {
            0
        } else {
            ro.step_limit_seconds()
        },
        latency_detect_ratio: ro.latency_detect_ratio,
        sample_ratio: ro.guard.as_ref().map(guard_status),
        harm_log10: v.harm_log10,
        harm_threshold_log10: v.harm_threshold_log10,
    }
}

fn guard_status(g: &r::guard::Guard) -> pb::SampleRatioStatus {
    let s = g.summary();
    pb::SampleRatioStatus {
        mode: mode_to(g.mode),
        expected: g.expected,
        low: s.low,
        high: s.high,
        visitors: g.step.requests,
        canary_visitors: g.step.events,
        share: s.share,
        share_low: s.interval.0,
        share_high: s.interval.1,
        over_log10: s.over_log10,
        under_log10: s.under_log10,
        threshold_log10: s.threshold_log10,
        mismatch: g.mismatch.clone().unwrap_or_default(),
        total_visitors: g.total.requests,
        total_canary_visitors: g.total.events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_defaults_match_json() {
        let mut plan = r::Plan::through("shop", "v2", &[500, 5000]);
        plan.steps[1].approval = true;
        plan.steps[1].on_timeout = Some(OnTimeout::Promote);
        plan.detect = Some(r::plan::Detect {
            errors: Some(3.0),
            latency: None,
        });
        plan.gates.latency = None;
        plan.gates.ceiling = Some(r::CeilingGate {
            max_error_rate_bp: 300,
            mode: Mode::DryRun,
        });
        plan.sticky = Some(grayline_routing::StickyKey::Header("x-user".into()));
        plan.prometheus_url = Some("http://127.0.0.1:9090".into());
        plan.gates.metrics.push(r::plan::MetricGate {
            name: "paid".into(),
            kind: MetricKind::GoodEvents,
            query: "sum(increase(paid{v=\"{{version}}\"}[{{interval}}]))".into(),
            exposure: Some("sum(increase(carts{v=\"{{version}}\"}[{{interval}}]))".into()),
            interval_seconds: 5,
            tolerated_ratio: 1.1,
            min_difference: 0.01,
            detect: None,
            no_data_seconds: 60,
            mode: Mode::DryRun,
        });
        plan.gates.sample_ratio = Some(r::plan::SampleRatioGuard {
            tolerated_ratio: 1.25,
            mode: Mode::DryRun,
        });
        plan.gates.events.push(r::plan::EventGate {
            event: "paid".into(),
            kind: MetricKind::GoodEvents,
            tolerated_ratio: 1.3,
            min_difference: 0.002,
            detect: Some(2.0),
            mode: Mode::Enforce,
        });
        plan.webhooks.push(r::Webhook {
            url: "http://127.0.0.1:1/".into(),
            ask: true,
            timeout_ms: 100,
            retries: 0,
        });
        assert_eq!(plan_from_pb(plan_to_pb(&plan)).unwrap(), plan);
        let sparse = pb::RolloutPlan {
            service: "shop".into(),
            canary: "v2".into(),
            steps: vec![pb::RolloutStep {
                weight: 500,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            plan_from_pb(sparse).unwrap(),
            r::Plan::through("shop", "v2", &[500])
        );
        let mut strict = plan.clone();
        strict.detect = None;
        assert_eq!(plan_from_pb(plan_to_pb(&strict)).unwrap(), strict);
        let bad = pb::RolloutPlan {
            steps: vec![pb::RolloutStep {
                on_timeout: Some(9),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = plan_from_pb(bad).unwrap_err();
        assert_eq!(err.errors[0].field, "plan.steps[0].on_timeout");
    }
}
