//! Step 3: the policy — a traffic ratio over any number of versions (optionally sticky),
//! ordered rules on request content, each sending matching requests to a version, or an
//! automatic rollout of one canary.

use grayline_routing::useragent::{Browser, Os};
use leptos::prelude::*;

use super::draft::{ConditionDraft, ConditionKind, Draft, Mode, Op, Rest, StickyKind};
use super::fields::{CheckField, Form, SelectField, TextField};
use super::rollout_step::RolloutEditor;
use crate::components::messages::FieldErrors;
use crate::components::weights::WeightsEditor;

#[component]
pub fn PolicyStep(form: Form) -> impl IntoView {
    let draft = form.draft;
    let mode = Memo::new(move |_| draft.with(|d| d.mode));
    let rest = Memo::new(move |_| draft.with(|d| d.rest));
    let any_rule_split = Memo::new(move |_| draft.with(|d| d.rules.iter().any(|r| r.split)));
    view! {
        <h2>"Policy"</h2>
        <fieldset class="mode">
            <legend>"Send traffic to the canaries by"</legend>
            <label class="radio">
                <input type="radio" name="mode" id="wizard-mode-ratio" prop:checked=move || mode.get() == Mode::Ratio
                    on:change=move |_| draft.update(|d| d.mode = Mode::Ratio) />
                "Traffic ratio — a share of all requests"
            </label>
            <label class="radio">
                <input type="radio" name="mode" id="wizard-mode-content" prop:checked=move || mode.get() == Mode::Content
                    on:change=move |_| draft.update(|d| {
                        d.mode = Mode::Content;
                        if d.rules.is_empty() { d.add_rule(); }
                    }) />
                "Request content — header, cookie, query, OS, browser or source IP"
            </label>
            <label class="radio">
                <input type="radio" name="mode" id="wizard-mode-rollout" prop:checked=move || mode.get() == Mode::Rollout
                    on:change=move |_| draft.update(|d| d.mode = Mode::Rollout) />
                "Automatic rollout — weight steps that promote or roll back by themselves"
            </label>
            <label class="radio">
                <input type="radio" name="mode" id="wizard-mode-mirror" prop:checked=move || mode.get() == Mode::Mirror
                    on:change=move |_| draft.update(|d| d.mode = Mode::Mirror) />
                "Mirror first — copy a share of the requests to the canary, which answers nobody yet"
            </label>
        </fieldset>
        {move || match mode.get() {
            Mode::Mirror => view! { <MirrorEditor form=form /> }.into_any(),
            Mode::Rollout => view! { <RolloutEditor form=form /> }.into_any(),
            Mode::Ratio => view! { <Ratio form=form /> }.into_any(),
            Mode::Content => view! {
                <Rules form=form />
                <div class="field">
                    <label for="wizard-rest">"Requests no rule matches go to"</label>
                    <select id="wizard-rest"
                        on:change=move |ev| draft.update(|d| d.rest = if event_target_value(&ev) == "ratio" { Rest::Ratio } else { Rest::Stable })>
                        <option value="stable" selected=move || draft.with(|d| d.rest == Rest::Stable)>
                            {move || format!("the stable version ({})", draft.with(Draft::stable_name))}
                        </option>
                        <option value="ratio" selected=move || draft.with(|d| d.rest == Rest::Ratio)>"a traffic ratio"</option>
                    </select>
                </div>
                {move || (rest.get() == Rest::Ratio).then(|| view! { <Ratio form=form /> })}
                {move || (rest.get() != Rest::Ratio && any_rule_split.get()).then(|| view! { <StickyChoice form=form /> })}
            }.into_any(),
        }}
    }
}

/// The weights and the sticky key of the default split.
#[component]
fn Ratio(form: Form) -> impl IntoView {
    let draft = form.draft;
    view! {
        <WeightsEditor id="wizard-weights"
            weights=Signal::derive(move || draft.with(Draft::effective_weights))
            stable=Signal::derive(move || draft.with(Draft::stable_name))
            set_weight=Callback::new(move |(version, bp): (String, u32)| draft.update(|d| { d.weights.insert(version, bp); }))
            takes_rest=Signal::derive(move || draft.with(|d| d.stable_takes_rest))
            set_takes_rest=Callback::new(move |on: bool| draft.update(|d| {
                if !on {
                    // Keep the stable version's current share as its own weight.
                    let stable = d.stable_name();
                    let current = d.effective_weights().into_iter().find(|(n, _)| *n == stable).map_or(0, |(_, w)| w);
                    d.weights.insert(stable, current);
                }
                d.stable_takes_rest = on;
            }))
            errors=Signal::derive(move || form.messages("weights")) />
        <StickyChoice form=form />
    }
}

/// Mirror mode: which canary gets the copies, and what share of the requests.
#[component]
fn MirrorEditor(form: Form) -> impl IntoView {
    let draft = form.draft;
    let options = Signal::derive(move || {
        draft.with(|d| {
            let stable = d.stable_name();
            d.version_names()
                .into_iter()
                .filter(|n| *n != stable && !n.is_empty())
                .map(|n| (n.clone(), n))
                .collect::<Vec<_>>()
        })
    });
    view! {
        <p class="muted">
            "Every client is still answered as the policy says now. Of the requests the default route takes, this share is also sent, as a copy, to the canary: its answers are thrown away and counted apart (as mirrored), so you can watch it on real traffic before it serves anyone."
        </p>
        <div class="grid2">
            <SelectField form=form id="wizard-mirror-version" label="Copies go to" key="mirror.version"
                options=options get=|d: &Draft| d.mirror_target() set=|d: &mut Draft, v| d.mirror_to = v />
            <TextField form=form id="wizard-mirror-percent" label="Share of requests copied (%)" key="mirror.weight"
                numeric=true hint="e.g. 10 for one request in ten"
                get=|d: &Draft| d.mirror_percent.clone() set=|d: &mut Draft, v| d.mirror_percent = v />
        </div>
    }
}

/// The key that keeps a user on one version, for every split of the policy.
#[component]
fn StickyChoice(form: Form) -> impl IntoView {
    let draft = form.draft;
    let sticky_memo = Memo::new(move |_| draft.with(|d| d.sticky));
    let sticky = move || sticky_memo.get();
    view! {
        <div class="grid2">
            <div class="field">
                <label for="wizard-sticky">"Keep each user on one version (stickiness)"</label>
                <select id="wizard-sticky" on:change=move |ev| draft.update(|d| {
                    d.sticky = match event_target_value(&ev).as_str() {
                        "cookie" => StickyKind::Cookie,
                        "header" => StickyKind::Header,
                        "client_ip" => StickyKind::ClientIp,
                        _ => StickyKind::None,
                    };
                    if matches!(d.sticky, StickyKind::Cookie) && d.sticky_name.is_empty() {
                        d.sticky_name = "uid".into();
                    }
                })>
                    <option value="none" selected=move || sticky() == StickyKind::None>"No: each request independently"</option>
                    <option value="cookie" selected=move || sticky() == StickyKind::Cookie>"By cookie (set when missing)"</option>
                    <option value="header" selected=move || sticky() == StickyKind::Header>"By header"</option>
                    <option value="client_ip" selected=move || sticky() == StickyKind::ClientIp>"By client IP"</option>
                </select>
            </div>
            {move || matches!(sticky(), StickyKind::Cookie | StickyKind::Header).then(|| view! {
                <TextField form=form id="wizard-sticky-name" label="Cookie or header name" key="sticky"
                    get=|d: &Draft| d.sticky_name.clone() set=|d: &mut Draft, v| d.sticky_name = v />
            })}
        </div>
    }
}

#[component]
fn Rules(form: Form) -> impl IntoView {
    let draft = form.draft;
    let ids = move || draft.with(|d| d.rules.iter().map(|r| r.id).collect::<Vec<_>>());
    view! {
        <p class="muted">"Rules are tried in order; the first whose conditions all hold decides."</p>
        <For each=ids key=|id| *id children=move |id| view! { <RuleEditor form=form id=id /> } />
        <button type="button" id="wizard-add-rule" on:click=move |_| draft.update(Draft::add_rule)>"Add a rule"</button>
    }
}

#[component]
fn RuleEditor(form: Form, id: u64) -> impl IntoView {
    let draft = form.draft;
    let index = move || draft.with(|d| d.rules.iter().position(|r| r.id == id).unwrap_or(0));
    let dom = draft.with_untracked(|d| d.rules.iter().position(|r| r.id == id).unwrap_or(0));
    let key = format!("rule-{id}");
    let cond_ids = move || {
        draft.with(|d| {
            d.rules
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.conditions.iter().map(|c| c.id).collect::<Vec<_>>())
                .unwrap_or_default()
        })
    };
    let versions = Signal::derive(move || {
        let mut options: Vec<(String, String)> = draft.with(|d| {
            d.version_names()
                .into_iter()
                .map(|v| (v.clone(), v))
                .collect()
        });
        options.push((
            SPLIT.to_string(),
            "a split of several versions…".to_string(),
        ));
        options
    });
    let split = Memo::new(move |_| draft.with(|d| d.rules.iter().any(|r| r.id == id && r.split)));
    let move_by = move |delta: isize| {
        draft.update(|d| {
            let i = d.rules.iter().position(|r| r.id == id).unwrap_or(0);
            let j = i as isize + delta;
            if j >= 0 && (j as usize) < d.rules.len() {
                d.rules.swap(i, j as usize);
            }
        })
    };
    let route_key = format!("{key}.route");
    let rule_errors = format!("{key}.conditions");
    view! {
        <fieldset class="rule-card">
            <legend>{move || format!("Rule {}", index() + 1)}</legend>
            <div class="grid2">
                <TextField form=form id=format!("wizard-rule-{dom}-name") label="Name (optional)" key=format!("{key}.name")
                    get=move |d: &Draft| d.rules.iter().find(|r| r.id == id).map(|r| r.name.clone()).unwrap_or_default()
                    set=move |d: &mut Draft, v| if let Some(r) = d.rules.iter_mut().find(|r| r.id == id) { r.name = v } />
                <SelectField form=form id=format!("wizard-rule-{dom}-version") label="Matching requests go to" options=versions
                    key=route_key.clone()
                    get=move |d: &Draft| d.rules.iter().find(|r| r.id == id)
                        .map(|r| if r.split { SPLIT.to_string() } else { r.version.clone() }).unwrap_or_default()
                    set=move |d: &mut Draft, v: String| if let Some(r) = d.rules.iter_mut().find(|r| r.id == id) {
                        if v == SPLIT {
                            if !r.split && r.weights.is_empty() {
                                // Start from everything on the version chosen so far.
                                r.weights.insert(r.version.clone(), 10_000);
                            }
                            r.split = true;
                        } else {
                            r.split = false;
                            r.version = v;
                        }
                    } />
            </div>
            {move || split.get().then(|| {
                let route_key = route_key.clone();
                view! {
                    <WeightsEditor id=format!("wizard-rule-{dom}-weights")
                        legend="Split of the matching requests"
                        offer_rest=false
                        weights=Signal::derive(move || draft.with(|d| {
                            d.rules.iter().find(|r| r.id == id).map(|r| d.rule_weights(r)).unwrap_or_default()
                        }))
                        stable=Signal::derive(String::new)
                        set_weight=Callback::new(move |(version, bp): (String, u32)| draft.update(|d| {
                            if let Some(r) = d.rules.iter_mut().find(|r| r.id == id) { r.weights.insert(version, bp); }
                        }))
                        takes_rest=Signal::derive(|| false)
                        set_takes_rest=Callback::new(|_: bool| {})
                        errors=Signal::derive(move || form.messages(&route_key)) />
                }
            })}
            <For each=cond_ids key=|c| *c children=move |cid| view! { <ConditionEditor form=form rule=id id=cid rule_dom=dom /> } />
            <FieldErrors messages=Signal::derive(move || form.messages(&rule_errors)) id=format!("wizard-rule-{dom}-errors") />
            <div class="row-actions">
                <button type="button" id=format!("wizard-rule-{dom}-add-condition") on:click=move |_| draft.update(|d| {
                    let cid = d.id();
                    if let Some(r) = d.rules.iter_mut().find(|r| r.id == id) { r.conditions.push(ConditionDraft::new(cid)); }
                })>"Add a condition"</button>
                <button type="button" class="link" on:click=move |_| move_by(-1) aria-label="Move the rule up">"↑ Up"</button>
                <button type="button" class="link" on:click=move |_| move_by(1) aria-label="Move the rule down">"↓ Down"</button>
                <button type="button" class="link danger" on:click=move |_| draft.update(|d| d.rules.retain(|r| r.id != id))>"Remove rule"</button>
            </div>
        </fieldset>
    }
}

/// The select value that stands for "a split" among the version names.
const SPLIT: &str = "__split__";

fn cond(d: &Draft, rule: u64, id: u64) -> Option<&ConditionDraft> {
    d.rules
        .iter()
        .find(|r| r.id == rule)?
        .conditions
        .iter()
        .find(|c| c.id == id)
}

fn cond_mut(d: &mut Draft, rule: u64, id: u64) -> Option<&mut ConditionDraft> {
    d.rules
        .iter_mut()
        .find(|r| r.id == rule)?
        .conditions
        .iter_mut()
        .find(|c| c.id == id)
}

macro_rules! cond_text {
    ($rule:expr, $id:expr, $field:ident) => {
        (
            move |d: &Draft| {
                cond(d, $rule, $id)
                    .map(|c| c.$field.clone())
                    .unwrap_or_default()
            },
            move |d: &mut Draft, v: String| {
                if let Some(c) = cond_mut(d, $rule, $id) {
                    c.$field = v;
                }
            },
        )
    };
}

#[component]
fn ConditionEditor(form: Form, rule: u64, id: u64, rule_dom: usize) -> impl IntoView {
    let draft = form.draft;
    let dom_index = draft.with_untracked(|d| {
        d.rules
            .iter()
            .find(|r| r.id == rule)
            .and_then(|r| r.conditions.iter().position(|c| c.id == id))
            .unwrap_or(0)
    });
    let dom = format!("wizard-rule-{rule_dom}-cond-{dom_index}");
    let key = format!("rule-{rule}.cond-{id}");
    let kind_memo = Memo::new(move |_| {
        draft.with(|d| cond(d, rule, id).map_or(ConditionKind::Header, |c| c.kind))
    });
    let kind = move || kind_memo.get();
    let kinds = Signal::derive(|| {
        ConditionKind::ALL
            .iter()
            .map(|(_, k, label)| (k.to_string(), label.to_string()))
            .collect::<Vec<_>>()
    });
    let ops = Signal::derive(|| {
        Op::ALL
            .iter()
            .map(|(_, k, label)| (k.to_string(), label.to_string()))
            .collect::<Vec<_>>()
    });
    let families = Signal::derive(move || {
        let names: Vec<&str> = match kind() {
            ConditionKind::Os => Os::ALL.iter().map(|o| o.name()).collect(),
            _ => Browser::ALL.iter().map(|b| b.name()).collect(),
        };
        names
            .into_iter()
            .map(|n| (n.to_string(), n.to_string()))
            .collect::<Vec<_>>()
    });
    let (name_get, name_set) = cond_text!(rule, id, name);
    let (value_get, value_set) = cond_text!(rule, id, value);
    let (min_get, min_set) = cond_text!(rule, id, min_version);
    let (max_get, max_set) = cond_text!(rule, id, max_version);
    let (cidr_get, cidr_set) = cond_text!(rule, id, cidrs);
    let (fam_get, fam_set) = cond_text!(rule, id, family);
    let takes_value_memo =
        Memo::new(move |_| draft.with(|d| cond(d, rule, id).is_some_and(|c| c.op.takes_value())));
    let takes_value = move || takes_value_memo.get();
    let errors_key = key.clone();
    let d2 = dom.clone();
    view! {
        <div class="condition">
            <SelectField form=form id=format!("{dom}-kind") label="Condition" options=kinds
                get=move |d: &Draft| cond(d, rule, id).map(|c| c.kind.key().to_string()).unwrap_or_default()
                set=move |d: &mut Draft, v: String| if let Some(c) = cond_mut(d, rule, id) {
                    c.kind = ConditionKind::from_key(&v);
                    c.family = if c.kind == ConditionKind::Os { "android".into() } else { "chrome".into() };
                } />
            {move || {
                let dom = d2.clone();
                match kind() {
                    ConditionKind::Header | ConditionKind::Cookie | ConditionKind::Query => view! {
                        <TextField form=form id=format!("{dom}-name") label="Name" key="-" placeholder="x-canary"
                            get=name_get set=name_set />
                        <SelectField form=form id=format!("{dom}-op") label="Test" options=ops
                            get=move |d: &Draft| cond(d, rule, id).map(|c| c.op.key().to_string()).unwrap_or_default()
                            set=move |d: &mut Draft, v: String| if let Some(c) = cond_mut(d, rule, id) { c.op = Op::from_key(&v) } />
                        {move || takes_value().then(|| view! {
                            <TextField form=form id=format!("{}-value", dom.clone()) label="Value" key="-" get=value_get set=value_set />
                        })}
                    }.into_any(),
                    ConditionKind::Os | ConditionKind::Browser => view! {
                        <SelectField form=form id=format!("{dom}-family") label="Family" options=families get=fam_get set=fam_set />
                        <TextField form=form id=format!("{dom}-min") label="From version" key="-" placeholder="any" get=min_get set=min_set />
                        <TextField form=form id=format!("{dom}-max") label="Up to version" key="-" placeholder="any" get=max_get set=max_set />
                    }.into_any(),
                    ConditionKind::SourceIp => view! {
                        <TextField form=form id=format!("{dom}-cidrs") label="Networks (CIDR, comma-separated)" key="-"
                            placeholder="10.0.0.0/8, 192.168.1.7" get=cidr_get set=cidr_set />
                    }.into_any(),
                }
            }}
            <CheckField form=form id=format!("{dom}-negate") label="Not (invert)"
                get=move |d: &Draft| cond(d, rule, id).is_some_and(|c| c.negate)
                set=move |d: &mut Draft, v| if let Some(c) = cond_mut(d, rule, id) { c.negate = v } />
            <button type="button" class="link danger" aria-label="Remove this condition"
                on:click=move |_| draft.update(|d| if let Some(r) = d.rules.iter_mut().find(|r| r.id == rule) { r.conditions.retain(|c| c.id != id) })>"✕"</button>
            <FieldErrors messages=Signal::derive(move || form.messages(&errors_key)) id=format!("{dom}-errors") />
        </div>
    }
}
