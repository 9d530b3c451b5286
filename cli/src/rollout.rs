//! `grayline rollout …`: start a plan (and follow it to the end, for pipelines), see where a
//! rollout is, list them, and every control.

use std::time::{Duration, Instant};

use grayline_proto::v1 as pb;
use grayline_rollout::Plan;
use grayline_rollout::plan::MetricKind;
use grayline_rollout::view::{MetricPreview, reading_words};

use crate::args::{Output, RolloutCommand};
use crate::connect::Connection;
use crate::exit::{Code, Failure, Result};
use crate::output::{self, Table, share};
use crate::source;
use crate::wire;

/// The rollout an argument names: an id, or a service (its newest rollout).
async fn resolve(c: &mut Connection, rollout: &str) -> Result<u64> {
    if let Ok(id) = rollout.parse::<u64>() {
        return Ok(id);
    }
    let r = c
        .rollouts
        .get_rollout(pb::GetRolloutRequest {
            id: 0,
            service: rollout.to_string(),
        })
        .await?
        .into_inner();
    Ok(r.id)
}

async fn get(c: &mut Connection, id: u64) -> Result<pb::RolloutStatus> {
    Ok(c.rollouts
        .get_rollout(pb::GetRolloutRequest {
            id,
            service: String::new(),
        })
        .await?
        .into_inner())
}

fn done(phase: &str) -> bool {
    matches!(phase, "promoted" | "rolled_back" | "aborted")
}

fn phase_words(phase: &str) -> String {
    phase.replace('_', " ")
}

/// The phase in words, with how a promotion was earned.
fn status_words(r: &pb::RolloutStatus) -> String {
    match r.promotion.as_str() {
        "time_limit" | "person" if r.phase == "promoted" => {
            "promoted without safety shown".to_string()
        }
        _ => phase_words(&r.phase),
    }
}

fn rate(r: f64) -> String {
    grayline_rollout::judge::rate_percent(r)
}

/// The sample-ratio guard in one line.
fn guard_line(g: &pb::SampleRatioStatus) -> String {
    let dry = if g.mode == pb::GateMode::DryRun as i32 {
        " (dry run)"
    } else {
        ""
    };
    let verdict = if !g.mismatch.is_empty() {
        "MISMATCH"
    } else if g.visitors == 0 {
        "no new visitors yet"
    } else {
        "as planned so far"
    };
    format!(
        "sample ratio{dry}: {verdict}: canary {} of {} new visitors this step ({}, interval {} to {}) \
         for {}, tolerated {} to {}; evidence more 10^{:.1}, fewer 10^{:.1}, of 10^{:.1}",
        g.canary_visitors,
        g.visitors,
        rate(g.share),
        rate(g.share_low),
        rate(g.share_high),
        rate(g.expected),
        rate(g.low),
        rate(g.high),
        g.over_log10,
        g.under_log10,
        g.threshold_log10,
    )
}

/// A rollout as JSON, the fields the gRPC status carries.
pub fn to_json(r: &pb::RolloutStatus) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "service": r.service, "canary": r.canary, "baseline": r.baseline,
        "phase": r.phase, "reason": r.reason, "step": r.step, "steps": r.plan.as_ref().map_or(0, |p| p.steps.len()),
        "weight": r.weight, "attempt": r.attempt, "started_by": r.started_by,
        "started_unix_ms": r.started_unix_ms, "step_seconds": r.step_seconds,
        "step_canary_requests": r.step_canary_requests, "observed_seconds": r.observed_seconds,
        "latency_threshold_us": r.latency_threshold_us, "revision": r.revision,
        "promotion": (!r.promotion.is_empty()).then_some(&r.promotion),
        "canary_fallbacks": r.canary_fallbacks, "baseline_fallbacks": r.baseline_fallbacks,
        "held": r.held, "step_limit_seconds": r.step_limit_seconds,
        "latency_detect_ratio": r.latency_detect_ratio,
        "harm_log10": r.harm_log10, "harm_threshold_log10": r.harm_threshold_log10,
        "sample_ratio": r.sample_ratio.as_ref().map(|g| serde_json::json!({
            "mode": if g.mode == pb::GateMode::DryRun as i32 { "dry_run" } else { "enforce" },
            "expected": g.expected, "low": g.low, "high": g.high,
            "visitors": g.visitors, "canary_visitors": g.canary_visitors,
            "share": g.share, "interval": [g.share_low, g.share_high],
            "over_log10": g.over_log10, "under_log10": g.under_log10,
            "threshold_log10": g.threshold_log10,
            "mismatch": (!g.mismatch.is_empty()).then_some(&g.mismatch),
            "total_visitors": g.total_visitors, "total_canary_visitors": g.total_canary_visitors,
        })),
        "gates": r.gates.iter().map(|g| serde_json::json!({
            "gate": g.gate, "mode": if g.mode == pb::GateMode::DryRun as i32 { "dry_run" } else { "enforce" },
            "verdict": g.verdict, "harm_log10": g.harm_log10, "safe_log10": g.safe_log10,
            "threshold_log10": g.threshold_log10, "safe_threshold_log10": g.safe_threshold_log10,
            "canary": {"requests": g.canary_requests, "events": g.canary_events, "rate": g.canary_rate, "interval": [g.canary_low, g.canary_high]},
            "baseline": {"requests": g.baseline_requests, "events": g.baseline_events, "rate": g.baseline_rate, "interval": [g.baseline_low, g.baseline_high]},
            "limit_rate": g.limit_rate, "safe_ratio": g.safe_ratio,
            "metric": g.metric.as_ref().map(metric_json),
            "event": (!g.event.is_empty()).then(|| serde_json::json!({"name": g.event, "good": g.good_event})),
        })).collect::<Vec<_>>(),
        "transitions": r.transitions.iter().map(|t| serde_json::json!({
            "seq": t.seq, "time_unix_ms": t.time_unix_ms, "from": t.from, "to": t.to,
            "step": t.step, "weight": t.weight, "actor": t.actor, "reason": t.reason,
        })).collect::<Vec<_>>(),
    })
}

fn metric_json(m: &pb::MetricGateStatus) -> serde_json::Value {
    serde_json::json!({
        "name": m.name, "kind": kind_name(m.kind), "interval_seconds": m.interval_seconds,
        "intervals": m.intervals, "missing": m.missing,
        "last_end_unix_s": m.last_end_unix_s, "last_data_unix_s": m.last_data_unix_s,
        "last_canary": m.last_canary, "last_baseline": m.last_baseline,
        "canary_mean": m.canary_mean, "baseline_mean": m.baseline_mean,
        "problem": (!m.problem.is_empty()).then_some(&m.problem),
        "paused_rollout": m.paused_rollout,
    })
}

fn kind_name(kind: i32) -> &'static str {
    match pb::MetricKind::try_from(kind) {
        Ok(pb::MetricKind::BadEvents) => "bad_events",
        Ok(pb::MetricKind::GoodEvents) => "good_events",
        Ok(pb::MetricKind::BadValue) => "bad_value",
        Ok(pb::MetricKind::GoodValue) => "good_value",
        Err(_) => "unknown",
    }
}

/// A gate's canary and baseline columns and what the canary is held to.
fn gate_figures(g: &pb::GateStatus) -> (String, String, String) {
    let counted = |r: f64, lo: f64, hi: f64, n: u64| {
        format!("{} [{} – {}] of {n}", rate(r), rate(lo), rate(hi))
    };
    let canary = counted(
        g.canary_rate,
        g.canary_low,
        g.canary_high,
        g.canary_requests,
    );
    let baseline = counted(
        g.baseline_rate,
        g.baseline_low,
        g.baseline_high,
        g.baseline_requests,
    );
    match &g.metric {
        Some(m) if matches!(kind_name(m.kind), "bad_value" | "good_value") => (
            format!(
                "mean {:.4}, worse in {} of {} intervals",
                m.canary_mean, g.canary_events, g.canary_requests
            ),
            format!("mean {:.4}", m.baseline_mean),
            "≤ half the intervals".into(),
        ),
        Some(m) if kind_name(m.kind) == "good_events" => {
            (canary, baseline, format!("≥ {}", rate(g.limit_rate)))
        }
        None if g.good_event => (canary, baseline, format!("≥ {}", rate(g.limit_rate))),
        _ if g.gate == "ceiling" => (canary, String::new(), format!("≤ {}", rate(g.limit_rate))),
        _ => (canary, baseline, format!("≤ {}", rate(g.limit_rate))),
    }
}

fn transition_line(t: &pb::RolloutTransition) -> String {
    format!("{}  {}  {}", wire::time(t.time_unix_ms), t.actor, t.reason)
}

/// The rollout for people.
pub fn render(r: &pb::RolloutStatus) -> String {
    let steps = r.plan.as_ref().map_or(0, |p| p.steps.len());
    let mut out = format!(
        "rollout {} of {} on {} against {}: {}, step {} of {steps}, {} to the canary (attempt {})\n{}\n",
        r.id,
        r.canary,
        r.service,
        r.baseline,
        status_words(r),
        r.step + 1,
        share(r.weight),
        r.attempt,
        r.reason
    );
    if !done(&r.phase) {
        out.push_str(&format!(
            "step time {} of {} s, {} canary requests{}\n",
            r.step_seconds,
            r.step_limit_seconds,
            r.step_canary_requests,
            if r.held {
                " (held: a version's own protection answers most requests)"
            } else {
                ""
            }
        ));
    }
    if let Some(g) = &r.sample_ratio {
        out.push_str(&guard_line(g));
        out.push('\n');
    }
    if r.canary_fallbacks + r.baseline_fallbacks > 0 {
        out.push_str(&format!(
            "fallbacks, not judged: {} of the canary's requests, {} of the baseline's\n",
            r.canary_fallbacks, r.baseline_fallbacks
        ));
    }
    let mut t = Table::new(&[
        "GATE",
        "VERDICT",
        "CANARY",
        "BASELINE",
        "HELD TO",
        "SAFE BELOW",
        "HARM",
        "SAFETY",
    ]);
    for g in &r.gates {
        let dry = if g.mode == pb::GateMode::DryRun as i32 {
            " (dry run)"
        } else {
            ""
        };
        let name = match &g.metric {
            Some(m) => format!("metric {}", m.name),
            None if !g.event.is_empty() => format!("event {}", g.event),
            None => g.gate.clone(),
        };
        let (canary, baseline, held_to) = gate_figures(g);
        t.row(vec![
            format!("{name}{dry}"),
            g.verdict.clone(),
            canary,
            baseline,
            held_to,
            if g.safe_ratio > 0.0 {
                format!("{:.2}×", g.safe_ratio)
            } else {
                String::new()
            },
            format!("10^{:.1}/{:.1}", g.harm_log10, g.threshold_log10),
            format!("10^{:.1}/{:.1}", g.safe_log10, g.safe_threshold_log10),
        ]);
    }
    out.push_str(&t.render());
    let enforced = r
        .gates
        .iter()
        .filter(|g| g.mode != pb::GateMode::DryRun as i32)
        .count();
    if enforced > 1 {
        out.push_str(&format!(
            "\ngates together: harm 10^{:.1}/{:.1} (the enforced gates' harm evidence averaged)",
            r.harm_log10, r.harm_threshold_log10
        ));
    }
    for g in &r.gates {
        let Some(m) = &g.metric else { continue };
        let query = r
            .plan
            .as_ref()
            .and_then(|p| p.gates.as_ref())
            .and_then(|gates| gates.metrics.iter().find(|q| q.name == m.name))
            .map_or("", |q| q.query.as_str());
        out.push_str(&format!(
            "\nmetric {}: {}, every {} s; {} intervals judged, {} without an answer{}{}\n  {query}",
            m.name,
            kind_name(m.kind),
            m.interval_seconds,
            m.intervals,
            m.missing,
            if m.problem.is_empty() {
                String::new()
            } else {
                format!(" (last: {})", m.problem)
            },
            if m.paused_rollout {
                "; paused the rollout until it has answers"
            } else {
                ""
            },
        ));
    }
    out.push_str("\n\n");
    for tr in &r.transitions {
        out.push_str(&transition_line(tr));
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn print_status(r: &pb::RolloutStatus, format: Output) -> Result<()> {
    output::print(format, &to_json(r), || render(r))
}

/// Follows a rollout until it ends (or `timeout`), printing each transition as it happens.
/// Keeps trying through a server that is briefly unreachable.
async fn follow(
    c: &mut Connection,
    id: u64,
    timeout: Duration,
    format: Output,
) -> Result<pb::RolloutStatus> {
    let deadline = Instant::now() + timeout;
    let mut printed = 0;
    loop {
        match get(c, id).await {
            Ok(r) => {
                if format == Output::Table {
                    for t in r.transitions.iter().skip(printed) {
                        println!("{}", transition_line(t));
                    }
                }
                printed = r.transitions.len();
                if done(&r.phase) {
                    return Ok(r);
                }
            }
            Err(e) if e.code == Code::Unavailable => eprintln!("{e}; trying again"),
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                Code::NotLive,
                format!(
                    "rollout {id} did not finish within {}",
                    humantime::format_duration(timeout)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Exit 0 for a rollout promoted on evidence, 9 for one promoted without safety shown, 7 for
/// one rolled back or aborted.
fn outcome(r: &pb::RolloutStatus) -> Result<()> {
    match r.phase.as_str() {
        "promoted" if r.promotion == "time_limit" || r.promotion == "person" => Err(Failure::new(
            Code::Unearned,
            format!(
                "rollout {} promoted without safety shown: {}",
                r.id, r.reason
            ),
        )),
        "promoted" => Ok(()),
        _ => Err(Failure::new(
            Code::RolledBack,
            format!("rollout {} {}: {}", r.id, phase_words(&r.phase), r.reason),
        )),
    }
}

async fn control(
    c: &mut Connection,
    rollout: &str,
    action: pb::RolloutAction,
    format: Output,
) -> Result<()> {
    let id = resolve(c, rollout).await?;
    let r = c
        .rollouts
        .control_rollout(pb::ControlRolloutRequest {
            id,
            action: action as i32,
        })
        .await?
        .into_inner();
    print_status(&r, format)
}

/// A refusal of a plan file's plan, with each field's line: `plan.steps[1].weight: …` →
/// `plan.yaml:7: plan.steps[1].weight: …`.
fn in_plan_file(file: &str, s: tonic::Status) -> Failure {
    let f = Failure::from(s);
    if f.code != Code::Invalid {
        return f.context(file);
    }
    let parts: Vec<String> = f
        .message
        .split("; ")
        .map(|part| match part.split_once(": ") {
            Some((field, msg)) if field.starts_with("plan") => {
                let rel = field
                    .strip_prefix("plan")
                    .unwrap_or(field)
                    .trim_start_matches('.');
                match source::line_in(file, rel) {
                    Some(l) => format!("{file}:{l}: {field}: {msg}"),
                    None => format!("{file}: {field}: {msg}"),
                }
            }
            _ => format!("{file}: {part}"),
        })
        .collect();
    Failure::invalid(parts.join("\n"))
}

/// A metric or event gate's last hour, for people: both versions' means and the minutes
/// with data.
fn render_preview(p: &MetricPreview, (what, kind): (&str, MetricKind)) -> String {
    let show = |v| reading_words(kind, v);
    let (canary, baseline) = p.means();
    let mut out = format!(
        "{what} {}: the last hour, a point every {} s\n{}: mean {}\n{}: mean {}\n",
        p.gate,
        p.step_seconds,
        p.canary,
        show(canary),
        p.baseline,
        show(baseline),
    );
    let mut t = Table::new(&["TIME", p.canary.as_str(), p.baseline.as_str()]);
    for q in p.with_data() {
        t.row(vec![
            wire::time(q.time_unix_s * 1000),
            show(q.canary),
            show(q.baseline),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!("\n\nasked: {}", p.canary_queries.join("  ÷  ")));
    out
}

pub async fn run(c: &mut Connection, command: &RolloutCommand, format: Output) -> Result<()> {
    use pb::RolloutAction as A;
    match command {
        RolloutCommand::Start { file, wait } => {
            let plan: Plan = source::read_one(file)?;
            let started = c
                .rollouts
                .start_rollout(pb::StartRolloutRequest {
                    plan: Some(grayline_proto::plan_to_pb(&plan)),
                })
                .await
                .map_err(|s| in_plan_file(file, s))?
                .into_inner();
            match wait {
                None => print_status(&started, format),
                Some(timeout) => {
                    if format == Output::Table {
                        println!(
                            "rollout {} of {} on {} started",
                            started.id, started.canary, started.service
                        );
                    }
                    let end = follow(c, started.id, *timeout, format).await?;
                    if format != Output::Table {
                        print_status(&end, format)?;
                    }
                    outcome(&end)
                }
            }
        }
        RolloutCommand::Preview { file, gate } => {
            let plan: Plan = source::read_one(file)?;
            // A metric gate of the name comes first, as on the server.
            let metric = plan.gates.metrics.iter().find(|g| g.name == *gate);
            let event = plan.gates.events.iter().find(|g| g.event == *gate);
            let kind = match (metric, event) {
                (Some(g), _) => ("metric", g.kind),
                (None, Some(e)) => ("event", e.kind),
                (None, None) => ("metric", MetricKind::BadValue),
            };
            let p = c
                .rollouts
                .preview_metric_gate(pb::PreviewMetricGateRequest {
                    plan: Some(grayline_proto::plan_to_pb(&plan)),
                    gate: gate.clone(),
                })
                .await
                .map_err(|s| in_plan_file(file, s))?
                .into_inner();
            let p = grayline_proto::preview_from_pb(p);
            let json = serde_json::to_value(&p).expect("a preview serializes");
            output::print(format, &json, || render_preview(&p, kind))
        }
        RolloutCommand::Status { rollout, watch } => {
            let id = resolve(c, rollout).await?;
            loop {
                let r = get(c, id).await?;
                if *watch && format == Output::Table {
                    print!("\x1b[2J\x1b[H");
                }
                print_status(&r, format)?;
                if !*watch || done(&r.phase) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        RolloutCommand::List { service, active } => {
            let list = c
                .rollouts
                .list_rollouts(pb::ListRolloutsRequest {
                    service: service.clone().unwrap_or_default(),
                    active_only: *active,
                })
                .await?
                .into_inner()
                .rollouts;
            let json: Vec<_> = list.iter().map(to_json).collect();
            output::print(format, &json, || {
                let mut t = Table::new(&[
                    "ID",
                    "SERVICE",
                    "CANARY",
                    "PHASE",
                    "STEP",
                    "WEIGHT",
                    "STARTED (UTC)",
                    "BY",
                ]);
                for r in &list {
                    let steps = r.plan.as_ref().map_or(0, |p| p.steps.len());
                    t.row(vec![
                        r.id.to_string(),
                        r.service.clone(),
                        r.canary.clone(),
                        status_words(r),
                        format!("{}/{steps}", r.step + 1),
                        share(r.weight),
                        wire::time(r.started_unix_ms),
                        r.started_by.clone(),
                    ]);
                }
                t.render()
            })
        }
        RolloutCommand::Pause { rollout } => control(c, rollout, A::Pause, format).await,
        RolloutCommand::Resume { rollout } => control(c, rollout, A::Resume, format).await,
        RolloutCommand::Approve { rollout } => control(c, rollout, A::Approve, format).await,
        RolloutCommand::Skip { rollout } => control(c, rollout, A::Skip, format).await,
        RolloutCommand::Promote { rollout } => control(c, rollout, A::Promote, format).await,
        RolloutCommand::Abort { rollout } => control(c, rollout, A::Abort, format).await,
        RolloutCommand::Retry { rollout } => control(c, rollout, A::Retry, format).await,
    }
}
