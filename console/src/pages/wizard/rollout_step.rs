//! The automatic rollout in the wizard: the plan editor on the policy step (canary, preset,
//! steps, gates), and on the review step the plan in words with an estimate of how long each
//! step needs at the service's current traffic — computed in the browser by the same code
//! the server judges with.

use grayline_rollout::estimate::{self, Limit, Traffic};
use grayline_rollout::plan::MetricKind;
use grayline_rollout::view::reading_words;
use grayline_rollout::{GateKind, OnTimeout};
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::draft::Draft;
use super::fields::{CheckField, Form, TextField};
use super::plan_draft::Preset;
use crate::api;
use crate::components::messages::FieldErrors;
use crate::format::share;
use crate::session::Session;

#[component]
pub fn RolloutEditor(form: Form) -> impl IntoView {
    let draft = form.draft;
    let candidates = Memo::new(move |_| {
        draft.with(|d| {
            let (s, _, _) = d.build();
            s.versions
                .iter()
                .filter(|v| v.name != s.stable)
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
        })
    });
    let chosen = Memo::new(move |_| draft.with(|d| d.rollout_canary(&d.build().0)));
    let stable = move || draft.with(Draft::stable_name);
    let preset = Memo::new(move |_| draft.with(|d| d.plan.preset));
    let count = Memo::new(move |_| draft.with(|d| d.plan.steps.len()));
    let latency = Memo::new(move |_| draft.with(|d| d.plan.latency));
    let metric_count = Memo::new(move |_| draft.with(|d| d.plan.metrics.len()));
    let event_count = Memo::new(move |_| draft.with(|d| d.plan.events.len()));
    let declared = Memo::new(move |_| draft.with(declared_events));
    view! {
        <p class="muted">
            "The canary climbs the steps by itself. Every second its errors and latency are compared with "
            {stable} "'s in the same seconds; harm rolls it back at once, safety shown moves it on, and after the last step it is promoted."
        </p>
        <div class="grid2">
            <div class="field">
                <label for="wizard-rollout-canary">"Version to roll out"</label>
                <select id="wizard-rollout-canary"
                    on:change=move |ev| draft.update(|d| d.plan.canary = event_target_value(&ev))>
                    {move || candidates.get().into_iter().map(|v| {
                        let selected = v == chosen.get();
                        view! { <option value=v.clone() selected=selected>{v.clone()}</option> }
                    }).collect_view()}
                </select>
                <FieldErrors messages=Signal::derive(move || form.messages("rollout.canary")) id="wizard-rollout-canary-errors".to_string() />
            </div>
            <div class="field">
                <label for="wizard-rollout-preset">"Start from"</label>
                <select id="wizard-rollout-preset"
                    on:change=move |ev| draft.update(|d| d.plan.apply_preset(Preset::from_key(&event_target_value(&ev))))>
                    {Preset::ALL.into_iter().map(|p| view! {
                        <option value=p.key() selected=move || preset.get() == p>{p.label()}</option>
                    }).collect_view()}
                </select>
            </div>
        </div>
        <table class="rollout-steps" id="wizard-rollout-steps">
            <thead><tr>
                <th>"Step"</th><th>"Canary %"</th><th>"At least (s)"</th><th>"Canary requests at least"</th>
                <th>"Time limit (s)"</th><th>"At the limit"</th><th>"Approval"</th><th></th>
            </tr></thead>
            <tbody>
                {move || (0..count.get()).map(|i| view! { <StepRow form=form i=i /> }).collect_view()}
            </tbody>
        </table>
        <FieldErrors messages=Signal::derive(move || form.messages("rollout.steps")) id="wizard-rollout-steps-errors".to_string() />
        <div class="row-actions">
            <button type="button" id="wizard-rollout-add-step" on:click=move |_| draft.update(|d| d.plan.add_step())>"Add a step"</button>
            <span class="muted">"After the last step the canary is promoted: stable, with all traffic — once every gate has shown it safe, or as the last step's time limit says."</span>
        </div>
        <fieldset>
            <legend>"Gates"</legend>
            <div class="grid3">
                <TextField form=form id="wizard-rollout-error-ratio" label="Errors: tolerated ratio to the baseline" key="rollout.gates.errors.tolerated_ratio"
                    get=|d: &Draft| d.plan.error_ratio.clone() set=|d: &mut Draft, v| d.plan.error_ratio = v numeric=true />
                <TextField form=form id="wizard-rollout-error-increase" label="… and at least this much more (basis points)" key="rollout.gates.errors.min_increase_bp"
                    get=|d: &Draft| d.plan.error_increase_bp.clone() set=|d: &mut Draft, v| d.plan.error_increase_bp = v numeric=true
                    hint="10 = 0.1 percentage points" />
                <CheckField form=form id="wizard-rollout-error-dry-run" label="Errors gate: dry run only"
                    get=|d: &Draft| d.plan.error_dry_run set=|d: &mut Draft, v| d.plan.error_dry_run = v />
            </div>
            <div class="grid3">
                <TextField form=form id="wizard-rollout-detect-errors" label="Must catch: errors × the baseline's" key="rollout.detect.errors"
                    get=|d: &Draft| d.plan.detect_errors.clone() set=|d: &mut Draft, v| d.plan.detect_errors = v numeric=true
                    hint="a step is safe once this is ruled out; empty: the tolerated ratio (far slower)" />
                <TextField form=form id="wizard-rollout-detect-latency" label="Must catch: latency × the baseline's" key="rollout.detect.latency"
                    get=|d: &Draft| d.plan.detect_latency.clone() set=|d: &mut Draft, v| d.plan.detect_latency = v numeric=true
                    hint="every request this many times slower" />
            </div>
            <CheckField form=form id="wizard-rollout-latency" label="Latency gate: the share of canary requests slower than the baseline's quantile"
                get=|d: &Draft| d.plan.latency set=|d: &mut Draft, v| d.plan.latency = v />
            {move || latency.get().then(|| view! {
                <div class="grid3">
                    <TextField form=form id="wizard-rollout-latency-quantile" label="Baseline quantile (%)" key="rollout.gates.latency.quantile"
                        get=|d: &Draft| d.plan.latency_quantile.clone() set=|d: &mut Draft, v| d.plan.latency_quantile = v numeric=true />
                    <TextField form=form id="wizard-rollout-latency-ratio" label="Tolerated ratio" key="rollout.gates.latency.tolerated_ratio"
                        get=|d: &Draft| d.plan.latency_ratio.clone() set=|d: &mut Draft, v| d.plan.latency_ratio = v numeric=true />
                    <CheckField form=form id="wizard-rollout-latency-dry-run" label="Latency gate: dry run only"
                        get=|d: &Draft| d.plan.latency_dry_run set=|d: &mut Draft, v| d.plan.latency_dry_run = v />
                </div>
            })}
            <div class="grid3">
                <TextField form=form id="wizard-rollout-ceiling" label="Error ceiling for the canary (%)" key="rollout.gates.ceiling"
                    get=|d: &Draft| d.plan.ceiling.clone() set=|d: &mut Draft, v| d.plan.ceiling = v numeric=true
                    hint="empty: no ceiling" />
                <TextField form=form id="wizard-rollout-alpha" label="Chance of a wrong decision (%)" key="rollout.alpha"
                    get=|d: &Draft| d.plan.alpha.clone() set=|d: &mut Draft, v| d.plan.alpha = v numeric=true
                    hint="over the whole rollout, however often it is checked" />
                <TextField form=form id="wizard-rollout-warmup" label="Warm-up not judged (s)" key="rollout.warmup_seconds"
                    get=|d: &Draft| d.plan.warmup_seconds.clone() set=|d: &mut Draft, v| d.plan.warmup_seconds = v numeric=true />
            </div>
        </fieldset>
        <fieldset id="wizard-rollout-metrics">
            <legend>"Metric gates (Prometheus)"</legend>
            <p class="muted">
                "A PromQL query per version — write " <code>"{{version}}"</code> " where the version goes, and "
                <code>"{{interval}}"</code> " for the interval — judged every interval against the baseline's answer. "
                "Try it on the last hour before you start."
            </p>
            {move || (0..metric_count.get()).map(|i| view! { <MetricRow form=form i=i /> }).collect_view()}
            <div class="row-actions">
                <button type="button" id="wizard-rollout-add-metric" on:click=move |_| draft.update(|d| d.plan.add_metric())>"Add a metric gate"</button>
                <FieldErrors messages=Signal::derive(move || form.messages("rollout.prometheus_url")) id="wizard-rollout-prometheus-errors".to_string() />
            </div>
        </fieldset>
        <fieldset id="wizard-rollout-events">
            <legend>"Event gates (counted by the proxies)"</legend>
            <p class="muted">
                "Events the service declares — named by its answers in " <code>"x-grayline-event"</code>
                " or by status codes — per judged request, the canary's against the baseline's in the same seconds. No Prometheus needed."
            </p>
            {move || (0..event_count.get()).map(|i| view! { <EventRow form=form i=i declared=declared /> }).collect_view()}
            <div class="row-actions">
                <button type="button" id="wizard-rollout-add-event" disabled=move || declared.get().is_empty()
                    on:click=move |_| draft.update(|d| d.plan.add_event(&declared.get_untracked()))>"Add an event gate"</button>
                {move || declared.get().is_empty().then(|| view! {
                    <span class="muted" id="wizard-rollout-events-none">"This service declares no events yet: declare them in its configuration (" <code>"events"</code> ") first."</span>
                })}
            </div>
        </fieldset>
    }
}

/// Asks the server for the last hour of the draft plan's gate `name` into `preview`.
fn ask_preview(
    session: Session,
    draft: RwSignal<Draft>,
    name: String,
    preview: RwSignal<Option<Result<api::MetricPreview, String>>>,
    testing: RwSignal<bool>,
) {
    let Some(auth) = session.auth_now() else {
        return;
    };
    let plan = draft.with(Draft::rollout_plan);
    testing.set(true);
    spawn_local(async move {
        let answer = api::preview_metric(&auth, &plan, &name).await;
        preview.set(Some(answer.map_err(|e| {
            let fields: Vec<String> = e
                .fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect();
            if fields.is_empty() {
                e.message
            } else {
                fields.join("; ")
            }
        })));
        testing.set(false);
    });
}

/// A gate's last hour (or why there is none) under the row `id`: the means, the newest ten
/// minutes with data, and what was asked.
fn preview_view(
    id: String,
    kind: MetricKind,
    answer: Result<api::MetricPreview, String>,
) -> AnyView {
    match answer {
        Err(e) => view! { <p class="error" id=format!("{id}-preview-error")>{e}</p> }.into_any(),
        Ok(p) => {
            let reading = |v| reading_words(kind, v);
            let rows = p
                .with_data()
                .rev()
                .take(10)
                .map(|q| {
                    view! {
                        <tr>
                            <td>{crate::format::time(q.time_unix_s * 1000)}</td>
                            <td class="num">{reading(q.canary)}</td>
                            <td class="num">{reading(q.baseline)}</td>
                        </tr>
                    }
                })
                .collect_view();
            let (canary, baseline) = p.means();
            let summary = format!(
                "Last hour, a point a minute: {} {} (mean), {} {}; {} of {} minutes with data.",
                p.canary,
                reading(canary),
                p.baseline,
                reading(baseline),
                p.with_data().count(),
                p.points.len(),
            );
            view! {
                <div class="metric-preview" id=format!("{id}-preview")>
                    <p>{summary}</p>
                    <table class="small">
                        <thead><tr><th>"Minute"</th><th>{p.canary.clone()}</th><th>{p.baseline.clone()}</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                    <p class="muted small">{format!("Asked: {}", p.canary_queries.join(" ÷ "))}</p>
                </div>
            }.into_any()
        }
    }
}

/// The events the service the draft builds declares.
fn declared_events(d: &Draft) -> Vec<String> {
    d.build().0.events.iter().map(|e| e.name.clone()).collect()
}

const EVENT_KINDS: [(MetricKind, &str); 2] = [
    (MetricKind::BadEvents, "bad events (more is harm)"),
    (MetricKind::GoodEvents, "good events (fewer is harm)"),
];

#[component]
fn EventRow(form: Form, i: usize, declared: Memo<Vec<String>>) -> impl IntoView {
    let draft = form.draft;
    let session = Session::get();
    let preview = RwSignal::new(None::<Result<api::MetricPreview, String>>);
    let testing = RwSignal::new(false);
    let test = move |_| {
        let Some(name) = draft.with(|d| d.plan.events.get(i).map(|e| e.event.trim().to_string()))
        else {
            return;
        };
        ask_preview(session, draft, name, preview, testing);
    };
    let messages = Signal::derive(move || form.messages(&format!("rollout.gates.events[{i}]")));
    let current = move || draft.with(|d| d.plan.events.get(i).cloned());
    let text = move |field: &'static str, label: &'static str| {
        let id = format!("wizard-rollout-event-{i}-{}", field.replace('_', "-"));
        let invalid = move || {
            !form
                .messages(&format!("rollout.gates.events[{i}].{field}"))
                .is_empty()
        };
        view! {
            <div class="field">
                <label for=id.clone()>{label}</label>
                <input type="text" id=id spellcheck="false"
                    aria-invalid=move || invalid().to_string()
                    prop:value=move || current().map_or(String::new(), |e| match field {
                        "detect" => e.detect,
                        "min_difference" => e.min_difference_points,
                        _ => e.tolerated_ratio,
                    })
                    on:input=move |ev| {
                        let v = event_target_value(&ev);
                        draft.update(|d| if let Some(e) = d.plan.events.get_mut(i) {
                            match field {
                                "detect" => e.detect = v,
                                "min_difference" => e.min_difference_points = v,
                                _ => e.tolerated_ratio = v,
                            }
                        });
                    } />
            </div>
        }
    };
    view! {
        <div class="metric-gate" id=format!("wizard-rollout-event-{i}")>
            <div class="grid3">
                <div class="field">
                    <label for=format!("wizard-rollout-event-{i}-event")>"Event"</label>
                    <select id=format!("wizard-rollout-event-{i}-event")
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            draft.update(|d| if let Some(e) = d.plan.events.get_mut(i) { e.event = v });
                        }>
                        {move || declared.get().into_iter().map(|name| {
                            let selected = current().is_some_and(|e| e.event == name);
                            view! { <option value=name.clone() selected=selected>{name.clone()}</option> }
                        }).collect_view()}
                    </select>
                </div>
                <div class="field">
                    <label for=format!("wizard-rollout-event-{i}-kind")>"What it is"</label>
                    <select id=format!("wizard-rollout-event-{i}-kind")
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            draft.update(|d| if let Some(e) = d.plan.events.get_mut(i)
                                && let Some((k, _)) = EVENT_KINDS.iter().find(|(k, _)| k.name() == v) {
                                e.kind = *k;
                            });
                        }>
                        {EVENT_KINDS.into_iter().map(|(k, label)| view! {
                            <option value=k.name() selected=move || current().is_some_and(|e| e.kind == k)>{label}</option>
                        }).collect_view()}
                    </select>
                </div>
                <div class="field row-actions">
                    <button type="button" id=format!("wizard-rollout-event-{i}-test") disabled=move || testing.get() on:click=test>
                        {move || if testing.get() { "Asking…" } else { "Show the last hour" }}
                    </button>
                    <button type="button" class="link danger" id=format!("wizard-rollout-event-{i}-remove")
                        on:click=move |_| draft.update(|d| { if i < d.plan.events.len() { d.plan.events.remove(i); } })>"Remove"</button>
                </div>
            </div>
            <div class="grid3">
                {text("tolerated_ratio", "Harm: worse than × the baseline")}
                {text("min_difference", "… and by more than (percentage points)")}
                {text("detect", "Must catch: × the baseline")}
            </div>
            <div class="field check">
                <input type="checkbox" id=format!("wizard-rollout-event-{i}-dry-run")
                    prop:checked=move || current().is_some_and(|e| e.dry_run)
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        draft.update(|d| if let Some(e) = d.plan.events.get_mut(i) { e.dry_run = on });
                    } />
                <label for=format!("wizard-rollout-event-{i}-dry-run")>"Dry run only: judged and shown, never acted on"</label>
            </div>
            <FieldErrors messages=messages id=format!("wizard-rollout-event-{i}-errors") />
            {move || preview.get().map(|answer| {
                let kind = current().map_or(MetricKind::BadEvents, |e| e.kind);
                preview_view(format!("wizard-rollout-event-{i}"), kind, answer)
            })}
        </div>
    }
}

const KINDS: [(MetricKind, &str); 4] = [
    (
        MetricKind::GoodEvents,
        "good events per exposure (fewer is harm)",
    ),
    (
        MetricKind::BadEvents,
        "bad events per exposure (more is harm)",
    ),
    (MetricKind::BadValue, "a value, higher is harm"),
    (MetricKind::GoodValue, "a value, lower is harm"),
];

#[component]
fn MetricRow(form: Form, i: usize) -> impl IntoView {
    let draft = form.draft;
    let session = Session::get();
    let messages = Signal::derive(move || form.messages(&format!("rollout.gates.metrics[{i}]")));
    let preview = RwSignal::new(None::<Result<api::MetricPreview, String>>);
    let testing = RwSignal::new(false);
    let kind = move || {
        draft.with(|d| {
            d.plan
                .metrics
                .get(i)
                .map_or(MetricKind::GoodEvents, |m| m.kind)
        })
    };
    let text = move |field: &'static str, label: &'static str, wide: bool| {
        let get = move |d: &Draft| {
            d.plan
                .metrics
                .get(i)
                .map_or(String::new(), |m| match field {
                    "name" => m.name.clone(),
                    "query" => m.query.clone(),
                    "exposure" => m.exposure.clone(),
                    "interval_seconds" => m.interval_seconds.clone(),
                    "tolerated_ratio" => m.tolerated_ratio.clone(),
                    "min_difference" => m.min_difference.clone(),
                    "no_data_seconds" => m.no_data_seconds.clone(),
                    _ => m.detect.clone(),
                })
        };
        let set = move |d: &mut Draft, v: String| {
            if let Some(m) = d.plan.metrics.get_mut(i) {
                match field {
                    "name" => m.name = v,
                    "query" => m.query = v,
                    "exposure" => m.exposure = v,
                    "interval_seconds" => m.interval_seconds = v,
                    "tolerated_ratio" => m.tolerated_ratio = v,
                    "min_difference" => m.min_difference = v,
                    "no_data_seconds" => m.no_data_seconds = v,
                    _ => m.detect = v,
                }
            }
        };
        let id = format!("wizard-rollout-metric-{i}-{}", field.replace('_', "-"));
        let invalid = move || {
            !form
                .messages(&format!("rollout.gates.metrics[{i}].{field}"))
                .is_empty()
        };
        view! {
            <div class=if wide { "field wide" } else { "field" }>
                <label for=id.clone()>{label}</label>
                <input type="text" id=id spellcheck="false"
                    aria-invalid=move || invalid().to_string()
                    prop:value=move || draft.with(get)
                    on:input=move |ev| draft.update(|d| set(d, event_target_value(&ev))) />
            </div>
        }
    };
    let test = move |_| {
        let Some(name) = draft.with(|d| d.plan.metrics.get(i).map(|m| m.name.trim().to_string()))
        else {
            return;
        };
        ask_preview(session, draft, name, preview, testing);
    };
    let shown = move || {
        let k = kind();
        preview
            .get()
            .map(|answer| preview_view(format!("wizard-rollout-metric-{i}"), k, answer))
    };
    view! {
        <div class="metric-gate" id=format!("wizard-rollout-metric-{i}")>
            <div class="grid3">
                {text("name", "Name", false)}
                <div class="field">
                    <label for=format!("wizard-rollout-metric-{i}-kind")>"What it counts"</label>
                    <select id=format!("wizard-rollout-metric-{i}-kind")
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            draft.update(|d| if let Some(m) = d.plan.metrics.get_mut(i)
                                && let Some((k, _)) = KINDS.iter().find(|(k, _)| k.name() == v) {
                                m.kind = *k;
                            });
                        }>
                        {KINDS.into_iter().map(|(k, label)| view! {
                            <option value=k.name() selected=move || kind() == k>{label}</option>
                        }).collect_view()}
                    </select>
                </div>
                {text("interval_seconds", "Interval (s)", false)}
            </div>
            {text("query", "Query: the events (or the value) in one interval", true)}
            {move || kind().counts().then(|| text("exposure", "Out of: the exposures in the same interval", true))}
            <div class="grid3">
                {text("tolerated_ratio", "Harm: worse than × the baseline", false)}
                {text("detect", "Must catch: × the baseline", false)}
                <div class="field row-actions">
                    <button type="button" id=format!("wizard-rollout-metric-{i}-test") disabled=move || testing.get() on:click=test>
                        {move || if testing.get() { "Asking Prometheus…" } else { "Test the query on the last hour" }}
                    </button>
                    <button type="button" class="link danger" id=format!("wizard-rollout-metric-{i}-remove")
                        on:click=move |_| draft.update(|d| { if i < d.plan.metrics.len() { d.plan.metrics.remove(i); } })>"Remove"</button>
                </div>
            </div>
            <div class="grid3">
                {text("min_difference", "… and by more than (the metric's unit; a share for events)", false)}
                {text("no_data_seconds", "Pause after no answers for (s)", false)}
                <div class="field check">
                    <input type="checkbox" id=format!("wizard-rollout-metric-{i}-dry-run")
                        prop:checked=move || draft.with(|d| d.plan.metrics.get(i).is_some_and(|m| m.dry_run))
                        on:change=move |ev| {
                            let on = event_target_checked(&ev);
                            draft.update(|d| if let Some(m) = d.plan.metrics.get_mut(i) { m.dry_run = on });
                        } />
                    <label for=format!("wizard-rollout-metric-{i}-dry-run")>"Dry run only: judged and shown, never acted on"</label>
                </div>
            </div>
            <FieldErrors messages=messages id=format!("wizard-rollout-metric-{i}-errors") />
            {shown}
        </div>
    }
}

#[component]
fn StepRow(form: Form, i: usize) -> impl IntoView {
    let draft = form.draft;
    let key = format!("rollout.steps[{i}]");
    let messages = Signal::derive(move || form.messages(&format!("rollout.steps[{i}]")));
    let cell = move |field: &'static str, suffix: &'static str| {
        let get = move |d: &Draft| {
            d.plan.steps.get(i).map_or(String::new(), |s| match field {
                "percent" => s.percent.clone(),
                "min" => s.min_seconds.clone(),
                "requests" => s.min_requests.clone(),
                _ => s.max_seconds.clone(),
            })
        };
        let set = move |d: &mut Draft, v: String| {
            if let Some(s) = d.plan.steps.get_mut(i) {
                match field {
                    "percent" => s.percent = v,
                    "min" => s.min_seconds = v,
                    "requests" => s.min_requests = v,
                    _ => s.max_seconds = v,
                }
            }
        };
        let path = match field {
            "percent" => "weight",
            "min" => "min_seconds",
            "requests" => "min_requests",
            _ => "max_seconds",
        };
        let invalid = move || {
            !form
                .messages(&format!("rollout.steps[{i}].{path}"))
                .is_empty()
        };
        view! {
            <td><input type="text" inputmode="numeric" id=format!("wizard-rollout-step-{i}-{suffix}")
                aria-label=format!("step {} {field}", i + 1)
                aria-invalid=move || invalid().to_string()
                prop:value=move || draft.with(get)
                on:input=move |ev| draft.update(|d| set(d, event_target_value(&ev))) /></td>
        }
    };
    let timeout = move || draft.with(|d| d.plan.steps.get(i).and_then(|s| s.on_timeout));
    let last = move || draft.with(|d| i + 1 == d.plan.steps.len());
    view! {
        <tr data-key=key>
            <td>{i + 1}</td>
            {cell("percent", "percent")}
            {cell("min", "min")}
            {cell("requests", "requests")}
            {cell("max", "max")}
            <td>
                <select id=format!("wizard-rollout-step-{i}-timeout") aria-label=format!("step {} at the time limit", i + 1)
                    on:change=move |ev| draft.update(|d| if let Some(s) = d.plan.steps.get_mut(i) {
                        s.on_timeout = match event_target_value(&ev).as_str() {
                            "pause" => Some(OnTimeout::Pause),
                            "rollback" => Some(OnTimeout::Rollback),
                            "promote" => Some(OnTimeout::Promote),
                            _ => None,
                        };
                    })>
                    {move || if last() {
                        view! {
                            <option value="" selected=move || timeout().is_none()>"pause for a person"</option>
                            <option value="promote" selected=move || timeout() == Some(OnTimeout::Promote)>"promote without safety shown"</option>
                            <option value="rollback" selected=move || timeout() == Some(OnTimeout::Rollback)>"roll back"</option>
                        }.into_any()
                    } else {
                        view! {
                            <option value="" selected=move || timeout().is_none()>"go on"</option>
                            <option value="pause" selected=move || timeout() == Some(OnTimeout::Pause)>"pause"</option>
                            <option value="rollback" selected=move || timeout() == Some(OnTimeout::Rollback)>"roll back"</option>
                        }.into_any()
                    }}
                </select>
            </td>
            <td>
                <input type="checkbox" id=format!("wizard-rollout-step-{i}-approval") aria-label=format!("step {} needs approval", i + 1)
                    prop:checked=move || draft.with(|d| d.plan.steps.get(i).is_some_and(|s| s.approval))
                    on:change=move |ev| draft.update(|d| if let Some(s) = d.plan.steps.get_mut(i) { s.approval = event_target_checked(&ev) }) />
            </td>
            <td>
                <button type="button" class="link danger" id=format!("wizard-rollout-step-{i}-remove")
                    on:click=move |_| draft.update(|d| d.plan.remove_step(i))>"Remove"</button>
            </td>
        </tr>
        <tr class="row-errors"><td colspan="8"><FieldErrors messages=messages id=format!("wizard-rollout-step-{i}-errors") /></td></tr>
    }
}

/// Seconds in words: `45 s`, `3 min`, `1.5 h`.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        "—".into()
    } else if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

fn limit_words(l: Limit) -> &'static str {
    match l {
        Limit::MinSeconds => "its minimum time",
        Limit::MinRequests => "its minimum canary requests",
        Limit::Evidence => "the gates to show safety",
        Limit::TimeLimit => "its time limit (safety would take longer; then it goes by the plan)",
    }
}

#[component]
pub fn RolloutReview(draft: RwSignal<Draft>) -> impl IntoView {
    let session = Session::get();
    // The service's traffic over the last five minutes: requests per second and the stable
    // version's error rate.
    let traffic = RwSignal::new(None::<Traffic>);
    if let Some(name) = draft.with_untracked(|d| d.base.as_ref().map(|b| b.service.name.clone())) {
        let stable = draft.with_untracked(Draft::stable_name);
        spawn_local(async move {
            let Some(auth) = session.auth_now() else {
                return;
            };
            if let Ok(stats) = api::stats(&auth, &name, 300).await {
                let requests: u64 = stats.series.iter().map(|s| s.totals.requests).sum();
                // Over the seconds the window has seen traffic, not the whole window: a
                // service younger than five minutes is not slower for it.
                let times = stats
                    .series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|p| p.time_unix_s));
                let (first, last) =
                    times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
                let seconds = if first <= last {
                    (last - first + 1) as f64
                } else {
                    300.0
                };
                let base = stats
                    .series
                    .iter()
                    .find(|s| s.version == stable && s.proxy_id.is_empty());
                let error_rate = base.map_or(0.0, |s| {
                    let t = &s.totals;
                    if t.answered() == 0 {
                        0.0
                    } else {
                        t.status_5xx as f64 / t.answered() as f64
                    }
                });
                // The spread of its latencies, from the median second's p50 and p99.
                let latency_spread = base.and_then(|s| {
                    let median = |f: fn(&grayline_routing::api::Point) -> u64| {
                        let mut v: Vec<u64> = s
                            .points
                            .iter()
                            .filter(|p| p.answered() > 0)
                            .map(f)
                            .collect();
                        v.sort_unstable();
                        v.get(v.len() / 2).copied()
                    };
                    Traffic::spread_from(median(|p| p.p50_us)?, median(|p| p.p99_us)?, 0.99)
                });
                traffic.set(Some(Traffic {
                    requests_per_second: requests as f64 / seconds,
                    error_rate,
                    latency_spread,
                }));
            }
        });
    }
    let plan = Memo::new(move |_| draft.with(Draft::rollout_plan));
    let words = move || {
        let p = plan.get();
        let steps: Vec<String> = p.steps.iter().map(|s| share(s.weight)).collect();
        let mut gates = Vec::new();
        if let Some(g) = &p.gates.errors {
            gates.push(format!(
                "errors up to {}× the baseline's and {} points more{}",
                g.tolerated_ratio,
                f64::from(g.min_increase_bp) / 100.0,
                if g.mode == grayline_rollout::Mode::DryRun {
                    " (dry run)"
                } else {
                    ""
                }
            ));
        }
        if let Some(g) = &p.gates.latency {
            gates.push(format!(
                "slow requests (above the baseline's p{}) up to {}× the baseline's share{}",
                g.quantile * 100.0,
                g.tolerated_ratio,
                if g.mode == grayline_rollout::Mode::DryRun {
                    " (dry run)"
                } else {
                    ""
                }
            ));
        }
        if let Some(g) = &p.gates.ceiling {
            gates.push(format!(
                "canary errors at most {}",
                share(g.max_error_rate_bp)
            ));
        }
        let dry = |mode| {
            if mode == grayline_rollout::Mode::DryRun {
                " (dry run)"
            } else {
                ""
            }
        };
        for g in &p.gates.metrics {
            let way = if g.kind.good() { "lower" } else { "higher" };
            let margin = if g.min_difference > 0.0 {
                format!(" or by at most {}", g.min_difference)
            } else {
                String::new()
            };
            gates.push(format!(
                "metric {} ({}) at most {}× {way} than the baseline's{margin}, every {} s{}",
                g.name,
                g.kind.name().replace('_', " "),
                g.tolerated_ratio,
                g.interval_seconds,
                dry(g.mode)
            ));
        }
        for g in &p.gates.events {
            let way = if g.kind.good() { "fewer" } else { "more" };
            let margin = if g.min_difference > 0.0 {
                format!(" or by at most {:.2} points", g.min_difference * 100.0)
            } else {
                String::new()
            };
            gates.push(format!(
                "event {} at most {}× {way} per request than the baseline's{margin}{}",
                g.event,
                g.tolerated_ratio,
                dry(g.mode)
            ));
        }
        vec![
            format!(
                "Automatic rollout of {} against {}: {} → promote.",
                p.canary,
                draft.with(Draft::stable_name),
                steps.join(" → ")
            ),
            format!("Gates: {}.", gates.join("; ")),
            match &p.detect {
                Some(d) => format!(
                    "A step is shown safe once the canary is shown not to have {} — those it must catch.",
                    [
                        d.errors.map(|r| format!("{r}× the baseline's errors")),
                        d.latency.map(|f| format!("{f}× its latency")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" nor ")
                ),
                None => "A step is shown safe only within the tolerated ratios.".into(),
            },
            match p.on_timeout(p.steps.len().saturating_sub(1)) {
                OnTimeout::Promote => "At the last step's time limit it is promoted anyway, recorded as promoted without safety shown.".into(),
                OnTimeout::Rollback => "At the last step's time limit without safety shown it rolls back.".into(),
                _ => "It is promoted only once every gate has shown it safe; at the last step's time limit without that, it pauses for a person.".into(),
            },
            format!(
                "A wrong decision in either direction at most {} of the time, checked every second.",
                share((p.alpha * 10_000.0).round() as u32)
            ),
        ]
    };
    let estimates = move || {
        let p = plan.get();
        let t = traffic.get();
        let rows = estimate::steps(
            &p,
            &t.unwrap_or(Traffic {
                requests_per_second: 0.0,
                error_rate: 0.0,
                latency_spread: None,
            }),
        );
        rows.into_iter().enumerate().map(|(i, e)| {
            let gates = e.gates.iter().map(|(k, s)| format!("{} {}", match k {
                GateKind::Errors => "errors",
                GateKind::Latency => "latency",
                GateKind::Ceiling => "ceiling",
                GateKind::Metric => "metric",
                GateKind::Event => "event",
            }, duration(*s))).collect::<Vec<_>>().join(", ");
            let approval = if p.steps[i].approval { " + approval" } else { "" };
            view! {
                <tr>
                    <td>{i + 1}</td>
                    <td>{share(e.weight)}</td>
                    <td id=format!("wizard-rollout-estimate-{i}")>{format!("≈ {}{approval}", duration(e.seconds))}</td>
                    <td class="muted">{format!("by {}", limit_words(e.limited_by))}</td>
                    <td class="muted small">{gates}</td>
                </tr>
            }
        }).collect_view()
    };
    // What the estimate means for the promotion, said before the rollout starts.
    let warning = move || {
        let p = plan.get();
        let t = traffic.get()?;
        let last = estimate::steps(&p, &t).pop()?;
        (last.limited_by == Limit::TimeLimit).then(|| {
            let needed = last.gates.iter().map(|g| g.1).fold(0.0, f64::max);
            let what = match p.on_timeout(p.steps.len() - 1) {
                OnTimeout::Promote => "it will likely be promoted without safety shown",
                OnTimeout::Rollback => "it will likely be rolled back",
                _ => "it will likely pause for a person",
            };
            format!(
                "At this traffic the last step cannot show safety within its time limit ({}; it would need about {}): {what}. Longer steps, a larger share, or what it must catch (detect) change that.",
                duration(f64::from(p.steps[p.steps.len() - 1].max_seconds)),
                duration(needed)
            )
        })
    };
    // The estimate drives the plan.
    let fit = move |_| {
        let Some(t) = traffic.get_untracked() else {
            return;
        };
        let rows = estimate::steps(&plan.get_untracked(), &t);
        draft.update(|d| d.plan.fit_time_limits(&rows));
    };
    let traffic_line = move || match traffic.get() {
        Some(t) if t.requests_per_second > 0.0 => format!(
            "At the service's traffic of the last five minutes: {:.1} requests/s, {:.2} % errors on the stable version.",
            t.requests_per_second,
            t.error_rate * 100.0
        ),
        _ => "No traffic seen yet: without requests each step runs to its time limit.".to_string(),
    };
    view! {
        <h3>"Automatic rollout"</h3>
        <ul class="plain" id="wizard-rollout-plain">{move || words().into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
        <p class="muted" id="wizard-rollout-traffic">{traffic_line}</p>
        {move || warning().map(|w| view! {
            <p class="warning" id="wizard-rollout-warning">{w}
                " " <button type="button" id="wizard-rollout-fit" on:click=fit>"Fit the time limits to this traffic"</button></p>
        })}
        <table class="estimates" id="wizard-rollout-estimates">
            <thead><tr><th>"Step"</th><th>"Canary"</th><th>"Likely takes"</th><th>"Decided by"</th><th>"Gates shown safe after"</th></tr></thead>
            <tbody>{estimates}</tbody>
        </table>
    }
}
