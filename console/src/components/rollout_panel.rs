//! A service's automated rollout, live: where it is and why, the step timeline, each gate's
//! evidence against its threshold with canary and baseline rates and their intervals, every
//! transition in plain words, and the controls its state allows.

use grayline_rollout::gate::MetricState;
use grayline_rollout::judge::{Promotion, rate_percent};
use grayline_rollout::plan::MetricKind;
use grayline_rollout::{Gate, GateKind, Mode, Phase, RolloutView, Verdict};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::format::{self, micros, share};
use crate::session::Session;

fn phase_words(p: &Phase, promotion: Option<Promotion>) -> &'static str {
    match p {
        Phase::Running => "running",
        Phase::AwaitingApproval => "awaiting approval",
        Phase::Confirming => "asking webhooks",
        Phase::Paused { .. } => "paused",
        Phase::Promoted if promotion.is_some_and(|p| !p.earned()) => {
            "promoted without safety shown"
        }
        Phase::Promoted => "promoted",
        Phase::RolledBack { .. } => "rolled back",
        Phase::Aborted { .. } => "aborted",
    }
}

/// The controls a phase allows, as (action, label).
fn controls(p: &Phase, baseline: &str) -> Vec<(&'static str, String)> {
    let abort = ("abort", format!("Abort: all traffic to {baseline}"));
    let common = |mut v: Vec<(&'static str, String)>| {
        v.push(("skip", "Skip to the next step".into()));
        v.push(("promote", "Promote now".into()));
        v.push(abort.clone());
        v
    };
    match p {
        Phase::Running | Phase::Confirming => common(vec![("pause", "Pause".into())]),
        Phase::AwaitingApproval => common(vec![
            ("approve", "Approve the next step".into()),
            ("pause", "Pause".into()),
        ]),
        Phase::Paused { .. } => common(vec![("resume", "Resume".into())]),
        Phase::RolledBack { .. } | Phase::Aborted { .. } => {
            vec![("retry", "Retry from the first step".into())]
        }
        Phase::Promoted => Vec::new(),
    }
}

fn gate_name(g: &Gate) -> String {
    match (&g.metric, &g.event, g.kind) {
        (Some(m), _, _) => format!("Metric {}", m.name),
        (None, Some(e), _) => format!("Event {}", e.name),
        (None, None, GateKind::Errors) => "Errors".into(),
        (None, None, GateKind::Latency) => "Latency".into(),
        (None, None, GateKind::Ceiling) => "Error ceiling".into(),
        (None, None, GateKind::Metric) => "Metric".into(),
        (None, None, GateKind::Event) => "Event".into(),
    }
}

/// What a metric gate reads and how its last intervals went, in words.
fn metric_words(m: &MetricState, query: Option<&str>) -> String {
    let kind = match m.kind {
        MetricKind::BadEvents => "bad events per exposure (more is harm)",
        MetricKind::GoodEvents => "good events per exposure (fewer is harm)",
        MetricKind::BadValue => "a value per interval (higher is harm)",
        MetricKind::GoodValue => "a value per interval (lower is harm)",
    };
    let mut words = format!(
        "{kind}, every {} s: {} intervals judged, {} without an answer",
        m.interval_seconds, m.intervals, m.missing
    );
    if let Some(p) = &m.problem {
        words.push_str(&format!(" (last: {p})"));
    }
    if let Some(q) = query {
        words.push_str(&format!(" · {q}"));
    }
    words
}

fn verdict_words(v: Verdict) -> &'static str {
    match v {
        Verdict::Undecided => "no decision yet",
        Verdict::Harm => "harm shown",
        Verdict::Safe => "shown safe",
        Verdict::Waiting => "waiting for the baseline's latency",
    }
}

/// Evidence as a share of the way to its threshold, 0–100 (log scale).
fn progress(log10: f64, threshold: f64) -> f64 {
    (log10.max(0.0) / threshold * 100.0).clamp(0.0, 100.0)
}

#[component]
pub fn RolloutPanel(view: RolloutView, state: RwSignal<Option<RolloutView>>) -> impl IntoView {
    let session = Session::get();
    let busy = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let r = view.rollout.clone();
    let id = r.id;
    let service = StoredValue::new(r.plan.service.clone());
    let may_control = move || service.with_value(|s| session.may("operator", Some(s)));
    let phase = r.phase.clone();
    let done = phase.is_done();
    let steps = r.plan.steps.clone();
    let current = r.step;
    let timeline = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let class = if matches!(phase, Phase::Promoted) || i < current {
                "done"
            } else if i == current && !done {
                "current"
            } else if i == current {
                "stopped"
            } else {
                "todo"
            };
            let detail = (i == current && !done).then(|| {
                format!(
                    " · {} of {} s, {} canary requests{}{}",
                    r.step_seconds,
                    r.step_limit_seconds(),
                    r.step_canary_requests,
                    if s.approval { " · then approval" } else { "" },
                    if r.hold.held { " · held" } else { "" }
                )
            });
            view! {
                <li class=class id=format!("rollout-step-{i}")>
                    <strong>{share(s.weight)}</strong>
                    {s.approval.then(|| view! { <span class="badge">"approval"</span> })}
                    {detail}
                </li>
            }
        })
        .collect_view();
    let promoted_class = if matches!(phase, Phase::Promoted) {
        "done"
    } else {
        "todo"
    };
    let threshold = r.latency_threshold_us;
    let baseline = r.baseline.clone();
    let gates = r
        .gates
        .iter()
        .zip(view.summaries.iter())
        .map(|(g, s)| {
            let metric = g.metric.as_deref();
            let query = metric.and_then(|m| {
                r.plan.gates.metrics.iter().find(|p| p.name == m.name).map(|p| p.query.as_str())
            });
            let what = match g.kind {
                GateKind::Metric => metric.map_or(String::new(), |m| metric_words(m, query)),
                GateKind::Event => match &g.event {
                    Some(e) if e.good => format!(
                        "judged requests whose answer carried `{}` (fewer is harm), counted by the proxies",
                        e.name
                    ),
                    Some(e) => format!(
                        "judged requests whose answer carried `{}` (more is harm), counted by the proxies",
                        e.name
                    ),
                    None => String::new(),
                },
                GateKind::Latency => match threshold {
                    Some(t) => format!("requests slower than {}'s p{} ({})", baseline,
                        r.plan.gates.latency.as_ref().map_or(99.0, |l| l.quantile * 100.0), micros(t)),
                    None => "slow requests (threshold not frozen yet)".into(),
                },
                _ => "errors".into(),
            };
            let interval = |rate: f64, (lo, hi): (f64, f64)| {
                format!("{} ({} – {})", rate_percent(rate), rate_percent(lo), rate_percent(hi))
            };
            let kind = match (g.kind, metric, &g.event) {
                (_, Some(m), _) => format!("metric-{}", m.name),
                (_, None, Some(e)) => format!("event-{}", e.name),
                (GateKind::Errors, None, None) => "errors".into(),
                (GateKind::Latency, None, None) => "latency".into(),
                (GateKind::Ceiling, None, None) => "ceiling".into(),
                (GateKind::Metric, None, None) => "metric".into(),
                (GateKind::Event, None, None) => "event".into(),
            };
            // Value kinds: the share of intervals worse than the limit, and the means.
            let values = metric.filter(|m| !m.kind.counts()).map(|m| {
                let n = m.intervals.max(1) as f64;
                (m.canary_sum / n, m.baseline_sum / n)
            });
            let harm = progress(s.harm_log10, s.threshold_log10);
            let safe = progress(s.safe_log10, s.safe_threshold_log10);
            view! {
                <tr id=format!("rollout-gate-{kind}") class=format!("verdict-{}", match g.verdict { Verdict::Harm => "harm", Verdict::Safe => "safe", _ => "open" })>
                    <td><strong>{gate_name(g)}</strong>
                        {(g.mode == Mode::DryRun).then(|| view! { <span class="badge">"dry run"</span> })}
                        <div class="muted small">{what}</div></td>
                    <td>{verdict_words(g.verdict)}</td>
                    <td class="num">{match values {
                            Some((c, _)) => format!("mean {c:.4}"),
                            None => interval(s.canary_rate, s.canary_interval),
                        }}<div class="muted small">{match values {
                            Some(_) => format!("worse than tolerated in {} of {} intervals", g.canary.events, g.canary.requests),
                            None => format!("{} of {}", g.canary.events, g.canary.requests),
                        }}</div></td>
                    <td class="num">{match values {
                            Some((_, b)) => Some(format!("mean {b:.4}")),
                            None => (g.kind != GateKind::Ceiling).then(|| interval(s.baseline_rate, s.baseline_interval)),
                        }}
                        <div class="muted small">{(g.kind != GateKind::Ceiling && values.is_none()).then(|| format!("{} of {}", g.baseline.events, g.baseline.requests))}</div></td>
                    <td class="num">{match (values, metric.is_some_and(|m| m.kind.good())) {
                            (Some(_), _) => "≤ half the intervals".to_string(),
                            (None, true) => format!("≥ {}", rate_percent(s.limit_rate)),
                            (None, false) => format!("≤ {}", rate_percent(s.limit_rate)),
                        }}
                        <div class="muted small">{(s.safe_ratio > 0.0).then(|| format!("safe below {:.2}×", s.safe_ratio))}</div></td>
                    <td>
                        <div class="evidence" title=format!("harm 10^{:.1} of 10^{:.1} needed, safety 10^{:.1} of 10^{:.1}", s.harm_log10, s.threshold_log10, s.safe_log10, s.safe_threshold_log10)>
                            <span class="bar harm" style=format!("width: {harm:.0}%")></span>
                        </div>
                        <div class="evidence">
                            <span class="bar safe" style=format!("width: {safe:.0}%")></span>
                        </div>
                        <div class="muted small">{format!("harm {harm:.0} %, safety {safe:.0} % of the way")}</div>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let transitions = r
        .transitions
        .iter()
        .rev()
        .map(|t| {
            view! {
                <li>
                    <span class="muted small">{format!("{} · {}", format::time(t.time_unix_ms), t.actor)}</span>
                    <div>{t.reason.clone()}</div>
                </li>
            }
        })
        .collect_view();
    let buttons = controls(&phase, &r.baseline)
        .into_iter()
        .map(|(action, label)| {
            let run = move |_| {
                let Some(auth) = session.auth_now() else { return };
                busy.set(true);
                error.set(None);
                spawn_local(async move {
                    match session.check(api::control_rollout(&auth, id, action).await) {
                        Ok(v) => state.set(Some(v)),
                        Err(e) => error.set(Some(e.message)),
                    }
                    busy.set(false);
                });
            };
            let class = if matches!(action, "abort") { "danger" } else if matches!(action, "approve" | "resume" | "retry") { "primary" } else { "" };
            view! {
                <button type="button" class=class id=format!("rollout-{action}") hidden=move || !may_control() disabled=move || busy.get() on:click=run>{label}</button>
            }
        })
        .collect_view();
    let reason = view.reason().to_string();
    // The gates' harm evidence averaged: what rolls back when several gates see harm at once.
    let together = (r.gates.iter().filter(|g| g.mode == Mode::Enforce).count() > 1).then(|| {
        format!(
            "All gates together: harm evidence 10^{:.1} of 10^{:.1} needed ({:.0} % of the way). The enforced gates' evidence is averaged, so harm that several gates see at once rolls back before any one gate's bar is full.",
            view.harm_log10,
            view.harm_threshold_log10,
            progress(view.harm_log10, view.harm_threshold_log10)
        )
    });
    let guard = r.guard.as_ref().zip(view.guard.as_ref()).map(|(g, s)| {
        let verdict = match (&g.mismatch, g.mode) {
            (Some(_), Mode::DryRun) => "mismatch (dry run)",
            (Some(_), Mode::Enforce) => "mismatch: the rollout waits",
            (None, _) if g.step.requests == 0 => "no new visitors counted yet",
            (None, _) => "as planned so far",
        };
        let class = if g.mismatch.is_some() { "error" } else { "muted small" };
        let words = format!(
            "Sample ratio: the canary got {} of {} new visitors this step ({}, interval {} – {}) for {}; tolerated {} – {}; {verdict}. Evidence of more 10^{:.1}, of fewer 10^{:.1}, of 10^{:.1} needed.",
            g.step.events,
            g.step.requests,
            rate_percent(s.share),
            rate_percent(s.interval.0),
            rate_percent(s.interval.1),
            rate_percent(g.expected),
            rate_percent(s.low),
            rate_percent(s.high),
            s.over_log10,
            s.under_log10,
            s.threshold_log10,
        );
        (words, class)
    });
    let fallbacks = (r.canary_fallbacks + r.baseline_fallbacks > 0).then(|| {
        format!(
            "Answered by the proxies' fallbacks (breaker open or concurrency limit reached), not judged: {} of {}'s requests, {} of {}'s.",
            r.canary_fallbacks, r.plan.canary, r.baseline_fallbacks, r.baseline
        )
    });
    view! {
        <section class="card rollout" id="rollout" aria-labelledby="rollout-title">
            <div class="title-row">
                <h2 id="rollout-title">{format!("Rollout {id}: {} against {}", r.plan.canary, r.baseline)}</h2>
                <span class=format!("badge phase {}{}", phase.name(), if r.promotion.is_some_and(|p| !p.earned()) { " unearned" } else { "" }) id="rollout-phase">{phase_words(&phase, r.promotion)}</span>
                <span class="muted">{format!("attempt {} · started by {} · now {} to {}", r.attempt, r.started_by, share(view.weight), r.plan.canary)}</span>
            </div>
            <p id="rollout-reason">{reason}</p>
            <ol class="timeline" id="rollout-steps">
                {timeline}
                <li class=promoted_class><strong>"promote"</strong></li>
            </ol>
            <table class="gates" id="rollout-gates">
                <thead><tr><th>"Gate"</th><th>"Verdict"</th><th>"Canary"</th><th>"Baseline"</th><th>"Held to"</th><th>"Evidence"</th></tr></thead>
                <tbody>{gates}</tbody>
            </table>
            <p class="muted small">"Rates with intervals that hold however often they are looked at. A gate decides when its evidence reaches the end of its bar: harm (red) rolls back, safety (green) in every gate moves on; the last step promotes only on safety shown unless the plan says otherwise."</p>
            {together.map(|t| view! { <p class="muted small" id="rollout-together">{t}</p> })}
            {guard.map(|(words, class)| view! { <p class=class id="rollout-guard">{words}</p> })}
            {fallbacks.map(|f| view! { <p class="muted small" id="rollout-fallbacks">{f}</p> })}
            <div class="row-actions" id="rollout-controls">{buttons}</div>
            {move || error.get().map(|e| view! { <p class="error" role="alert" id="rollout-error">{e}</p> })}
            <details open=!done>
                <summary>"What happened"</summary>
                <ol class="transitions plain" id="rollout-transitions">{transitions}</ol>
            </details>
        </section>
    }
}
