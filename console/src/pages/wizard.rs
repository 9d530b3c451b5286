//! The release wizard, after Huawei ASM's grayscale wizard: choose the service and its stable
//! version → define canary versions → choose the policy (a traffic ratio, or rules on request
//! content) → review it in plain words, try requests in a simulator that runs the proxies'
//! engine, and apply. Back and Next keep everything entered; errors — found here by the same
//! engine, or returned by the server — appear at the fields they name.

mod draft;
mod fields;
pub mod plan_draft;
mod policy_step;
mod review_step;
mod rollout_step;

use grayline_routing::api::ServiceRecord;
use grayline_routing::{FallbackPolicy, LoadBalance, Service};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_query_map};

use self::draft::{Draft, Mode, VersionDraft, step_of};
use self::fields::{CheckField, Form, SelectField, TextField};
use crate::api;
use crate::session::Session;

const STEPS: [&str; 4] = ["Service", "Canary versions", "Policy", "Review and apply"];

#[component]
pub fn Wizard() -> impl IntoView {
    let session = Session::get();
    let query = use_query_map();
    let draft = RwSignal::new(Draft::new_service());
    let step = RwSignal::new(0usize);
    let services = RwSignal::new(Vec::<ServiceRecord>::new());
    let load_error = RwSignal::new(None::<String>);
    let server_errors = RwSignal::new(Vec::<(String, String)>::new());
    let general_error = RwSignal::new(None::<String>);
    let show_local = RwSignal::new(false);
    let applying = RwSignal::new(false);

    // The services there are, for choosing one and for host conflicts.
    spawn_local(async move {
        let Some(auth) = session.auth_now() else {
            return;
        };
        match session.check(api::services(&auth).await) {
            Ok(list) => {
                let wanted = query.with_untracked(|q| q.get("service"));
                if let Some(record) =
                    wanted.and_then(|w| list.services.iter().find(|r| r.service.name == w).cloned())
                {
                    draft.set(Draft::for_service(record));
                }
                services.set(list.services);
            }
            Err(e) => load_error.set(Some(e.message)),
        }
    });

    let others = move || -> Vec<Service> {
        let name = draft.with(|d| d.base.as_ref().map(|b| b.service.name.clone()));
        services.with(|list| {
            list.iter()
                .filter(|r| Some(&r.service.name) != name.as_ref())
                .map(|r| r.service.clone())
                .collect()
        })
    };
    let local = Memo::new(move |_| {
        let others = others();
        draft.with(|d| d.check(&others))
    });
    // A change to the draft makes the server's last verdict stale.
    Effect::new(move |_| {
        draft.track();
        server_errors.set(Vec::new());
        general_error.set(None);
    });
    let errors = Signal::derive(move || {
        let mut all = server_errors.get();
        if show_local.get() {
            for e in local.get() {
                if !all.contains(&e) {
                    all.push(e);
                }
            }
        }
        all
    });
    let form = Form { draft, errors };

    let go = move |to: usize| {
        if to == 3 {
            show_local.set(true);
        }
        step.set(to);
    };
    let navigate = use_navigate();
    let apply = move |_| {
        let Some(auth) = session.auth_now() else {
            return;
        };
        show_local.set(true);
        if !local.get_untracked().is_empty() {
            return;
        }
        let (service, map, _) = draft.with_untracked(Draft::build);
        let base = draft.with_untracked(|d| d.base.clone());
        let rollout = draft.with_untracked(|d| (d.mode == Mode::Rollout).then(|| d.rollout_plan()));
        applying.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            // The service first (new versions); an unchanged service is not written again.
            let result = match &base {
                None => api::create_service(&auth, &service).await,
                Some(b) if rollout.is_some() && b.service == service => Ok(b.clone()),
                Some(b) => api::update_service(&auth, &service, b.revision).await,
            };
            let result = match (session.check(result), rollout) {
                (Ok(record), None) => Ok(format!(
                    "/services/{}?applied={}",
                    record.service.name, record.revision
                )),
                (Ok(record), Some(plan)) => {
                    match session.check(api::start_rollout(&auth, &plan).await) {
                        Ok(view) => Ok(format!(
                            "/services/{}?rollout={}",
                            record.service.name, view.rollout.id
                        )),
                        Err(mut e) => {
                            if record.revision != base.as_ref().map_or(0, |b| b.revision) {
                                e.message = format!(
                                    "The versions were saved as revision {}, but the rollout did not start: {}",
                                    record.revision, e.message
                                );
                            }
                            let keys = e
                                .fields
                                .iter()
                                .map(|f| (plan_draft::locate(&f.field), f.message.clone()))
                                .collect();
                            Err((e, keys))
                        }
                    }
                }
                (Err(e), _) => {
                    let keys = e
                        .fields
                        .iter()
                        .map(|f| (map.locate(&f.field), f.message.clone()))
                        .collect();
                    Err((e, keys))
                }
            };
            applying.set(false);
            match result {
                Ok(to) => navigate(&to, Default::default()),
                Err((e, located)) => {
                    let located: Vec<(String, String)> = located;
                    if let Some(first) = located.first() {
                        step.set(step_of(&first.0).min(3));
                    }
                    general_error.set(Some(e.message.clone()));
                    server_errors.set(located);
                }
            }
        });
    };

    let step_errors =
        move |i: usize| errors.with(|e| e.iter().filter(|(k, _)| step_of(k) == i).count());
    view! {
        <section class="wizard">
            <h1>"New release"</h1>
            {move || load_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <ol class="steps" aria-label="Steps">
                {STEPS.iter().enumerate().map(|(i, title)| view! {
                    <li>
                        <button type="button" class="step" id=format!("wizard-step-{i}")
                            aria-current=move || (step.get() == i).then_some("step")
                            on:click=move |_| go(i)>
                            <span class="n">{i + 1}</span>{*title}
                            {move || (step_errors(i) > 0).then(|| view! { <span class="badge error">{step_errors(i)}</span> })}
                        </button>
                    </li>
                }).collect_view()}
            </ol>
            <div class="card step-body">
                {move || match step.get() {
                    0 => view! { <ServiceStep form=form services=services /> }.into_any(),
                    1 => view! { <CanaryStep form=form /> }.into_any(),
                    2 => view! { <policy_step::PolicyStep form=form /> }.into_any(),
                    _ => view! { <review_step::ReviewStep form=form local=local go=Callback::new(go) /> }.into_any(),
                }}
            </div>
            {move || general_error.get().map(|e| view! { <p class="error" role="alert" id="wizard-error">{e}</p> })}
            <div class="wizard-nav">
                <button type="button" id="wizard-back" disabled=move || step.get() == 0
                    on:click=move |_| go(step.get().saturating_sub(1))>"Back"</button>
                {move || if step.get() < 3 {
                    view! { <button type="button" class="primary" id="wizard-next" on:click=move |_| go(step.get() + 1)>"Next"</button> }.into_any()
                } else {
                    view! {
                        <button type="button" class="primary" id="wizard-apply"
                            disabled=move || applying.get() || !local.with(Vec::is_empty)
                            on:click=apply.clone()>
                            {move || if applying.get() { "Applying…" } else { "Apply" }}
                        </button>
                    }.into_any()
                }}
            </div>
        </section>
    }
}

#[component]
fn ServiceStep(form: Form, services: RwSignal<Vec<ServiceRecord>>) -> impl IntoView {
    let draft = form.draft;
    let choice = move || {
        draft.with(|d| {
            d.base
                .as_ref()
                .map(|b| b.service.name.clone())
                .unwrap_or_default()
        })
    };
    // Only a different service re-renders the form below, not every keystroke in it.
    let base = Memo::new(move |_| draft.with(|d| d.base.clone()));
    let choose = move |name: String| {
        let record = services.with(|list| list.iter().find(|r| r.service.name == name).cloned());
        draft.set(match record {
            Some(r) => Draft::for_service(r),
            None => Draft::new_service(),
        });
    };
    view! {
        <h2>"Service and stable version"</h2>
        <div class="field">
            <label for="wizard-service">"Service"</label>
            <select id="wizard-service" prop:value=choice on:change=move |ev| choose(event_target_value(&ev))>
                <option value="" selected=move || choice().is_empty()>"New service…"</option>
                {move || services.get().into_iter().map(|r| {
                    let name = r.service.name.clone();
                    let selected = choice() == name;
                    let value = name.clone();
                    view! { <option value=value selected=selected>{name}</option> }
                }).collect_view()}
            </select>
        </div>
        {move || match base.get() {
            Some(record) => {
                let s = record.service;
                let lines = grayline_routing::describe::policy(&s);
                view! {
                    <p>{format!("{} (revision {}) · stable version ", s.name, record.revision)}<strong>{s.stable.clone()}</strong>
                       {format!(" · versions {}", s.versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", "))}</p>
                    <p class="muted">"Current policy:"</p>
                    <ul class="plain">{lines.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
                    <p class="muted">"The release adds canary versions (or replaces one with the same name) and replaces the policy."</p>
                }.into_any()
            }
            None => view! {
                <div class="grid2">
                    <TextField form=form id="wizard-name" label="Name" key="name" placeholder="checkout"
                        get=|d: &Draft| d.name.clone() set=|d: &mut Draft, v| d.name = v />
                    <TextField form=form id="wizard-prefix" label="Path prefix" key="path_prefix"
                        get=|d: &Draft| d.path_prefix.clone() set=|d: &mut Draft, v| d.path_prefix = v />
                </div>
                <TextField form=form id="wizard-hosts" label="Hosts" key="hosts" placeholder="shop.example.com, *.shop.example.com"
                    hint="Comma-separated; leave empty to take every host."
                    get=|d: &Draft| d.hosts.clone() set=|d: &mut Draft, v| d.hosts = v />
                <h3>"Stable version"</h3>
                <VersionFields form=form target=Target::Stable dom="wizard-stable" key="stable".to_string() />
            }.into_any(),
        }}
    }
}

#[component]
fn CanaryStep(form: Form) -> impl IntoView {
    let draft = form.draft;
    let ids = move || draft.with(|d| d.canaries.iter().map(|c| c.id).collect::<Vec<_>>());
    view! {
        <h2>"Canary versions"</h2>
        <p class="muted">"Each canary is a new version of the service with its own endpoints. Any number of versions can share traffic."</p>
        <For each=ids key=|id| *id children=move |id| {
            let index = draft.with_untracked(|d| d.canaries.iter().position(|c| c.id == id).unwrap_or(0));
            let title = move || draft.with(|d| d.canaries.iter().find(|c| c.id == id).map(|c| c.name.clone()).unwrap_or_default());
            view! {
                <fieldset class="version-card">
                    <legend>{move || format!("Canary {}", title())}</legend>
                    <VersionFields form=form target=Target::Canary(id) dom=format!("wizard-canary-{index}") key=format!("canary-{id}") />
                    <button type="button" class="link danger" id=format!("wizard-canary-{index}-remove")
                        on:click=move |_| draft.update(|d| d.canaries.retain(|c| c.id != id))>"Remove this version"</button>
                </fieldset>
            }
        } />
        <button type="button" id="wizard-add-canary" on:click=move |_| draft.update(Draft::add_canary)>"Add a canary version"</button>
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Stable,
    Canary(u64),
}

fn version(d: &Draft, t: Target) -> Option<&VersionDraft> {
    match t {
        Target::Stable => Some(&d.stable),
        Target::Canary(id) => d.canaries.iter().find(|c| c.id == id),
    }
}

fn version_mut(d: &mut Draft, t: Target) -> Option<&mut VersionDraft> {
    match t {
        Target::Stable => Some(&mut d.stable),
        Target::Canary(id) => d.canaries.iter_mut().find(|c| c.id == id),
    }
}

/// Reads a text part of the targeted version.
macro_rules! text {
    ($t:expr, $field:ident) => {
        (
            move |d: &Draft| version(d, $t).map(|v| v.$field.clone()).unwrap_or_default(),
            move |d: &mut Draft, value: String| {
                if let Some(v) = version_mut(d, $t) {
                    v.$field = value;
                }
            },
        )
    };
}

macro_rules! flag {
    ($t:expr, $field:ident) => {
        (
            move |d: &Draft| version(d, $t).is_some_and(|v| v.$field),
            move |d: &mut Draft, value: bool| {
                if let Some(v) = version_mut(d, $t) {
                    v.$field = value;
                }
            },
        )
    };
}

#[component]
fn VersionFields(
    form: Form,
    target: Target,
    #[prop(into)] dom: String,
    key: String,
) -> impl IntoView {
    let t = target;
    let (name_get, name_set) = text!(t, name);
    let (ep_get, ep_set) = text!(t, endpoints);
    let (tag_get, tag_set) = text!(t, tag);
    let (dns_get, dns_set) = text!(t, dns);
    let (to_get, to_set) = text!(t, timeout_ms);
    let (mc_get, mc_set) = text!(t, max_concurrent);
    let (th_get, th_set) = text!(t, error_threshold_percent);
    let (vol_get, vol_set) = text!(t, request_volume);
    let (sl_get, sl_set) = text!(t, sleep_window_ms);
    let (win_get, win_set) = text!(t, window_ms);
    let (en_get, en_set) = flag!(t, breaker_enabled);
    let (fo_get, fo_set) = flag!(t, force_open);
    let (fc_get, fc_set) = flag!(t, force_closed);
    let lb_options = Signal::derive(|| {
        vec![
            ("round_robin".to_string(), "Round robin".to_string()),
            ("random".to_string(), "Random".to_string()),
            ("session_sticky".to_string(), "Session sticky".to_string()),
        ]
    });
    let fallback_options = Signal::derive(|| {
        vec![
            (
                "fail".to_string(),
                "Fail with 503 and a JSON error".to_string(),
            ),
            (
                "return_empty".to_string(),
                "Return an empty response (204)".to_string(),
            ),
        ]
    });
    let k = |f: &str| format!("{key}.{f}");
    view! {
        <div class="grid2">
            <TextField form=form id=format!("{dom}-name") label="Version name" key=k("name") placeholder="v2"
                get=name_get set=name_set />
            <TextField form=form id=format!("{dom}-endpoints") label="Endpoints (host:port, one per line)" key=k("endpoints")
                multiline=true placeholder="10.0.0.7:8080" get=ep_get set=ep_set />
            <TextField form=form id=format!("{dom}-tag") label="Or: the instances registered with tag" key=k("instances.tag")
                placeholder="1.1.2 (leave the endpoints empty)" get=tag_get set=tag_set />
            <TextField form=form id=format!("{dom}-dns") label="Or: a DNS name the proxies resolve" key=k("instances.dns")
                placeholder="shop-v2.internal:8080 or _http._tcp.shop-v2.internal" get=dns_get set=dns_set />
        </div>
        <div class="grid3">
            <SelectField form=form id=format!("{dom}-lb") label="Load balancing" options=lb_options key=k("load_balance")
                get=move |d: &Draft| version(d, t).map(|v| lb_name(v.load_balance)).unwrap_or_default()
                set=move |d: &mut Draft, value: String| if let Some(v) = version_mut(d, t) { v.load_balance = lb_from(&value) } />
            <TextField form=form id=format!("{dom}-timeout") label="Timeout (ms)" key=k("timeout_ms") numeric=true
                get=to_get set=to_set />
            <TextField form=form id=format!("{dom}-max") label="Max concurrent (0 = no limit)" key=k("max_concurrent") numeric=true
                get=mc_get set=mc_set />
        </div>
        <SelectField form=form id=format!("{dom}-fallback") label="Fallback when the breaker is open or the limit is reached"
            options=fallback_options key=k("fallback")
            get=move |d: &Draft| version(d, t).map(|v| fallback_name(v.fallback)).unwrap_or_default()
            set=move |d: &mut Draft, value: String| if let Some(v) = version_mut(d, t) { v.fallback = fallback_from(&value) } />
        <details class="breaker">
            <summary>"Circuit breaker"</summary>
            <CheckField form=form id=format!("{dom}-breaker-enabled") label="Enabled" get=en_get set=en_set />
            <div class="grid4">
                <TextField form=form id=format!("{dom}-threshold") label="Error threshold (%)" key=k("breaker.error_threshold_percent")
                    numeric=true get=th_get set=th_set />
                <TextField form=form id=format!("{dom}-volume") label="Request volume" key=k("breaker.request_volume")
                    numeric=true get=vol_get set=vol_set />
                <TextField form=form id=format!("{dom}-sleep") label="Sleep window (ms)" key=k("breaker.sleep_window_ms")
                    numeric=true get=sl_get set=sl_set />
                <TextField form=form id=format!("{dom}-window") label="Rolling window (ms)" key=k("breaker.window_ms")
                    numeric=true get=win_get set=win_set />
            </div>
            <CheckField form=form id=format!("{dom}-force-open") label="Force open (always fall back)" get=fo_get set=fo_set />
            <CheckField form=form id=format!("{dom}-force-closed") label="Force closed (never open)" get=fc_get set=fc_set />
        </details>
    }
}

fn lb_name(lb: LoadBalance) -> String {
    match lb {
        LoadBalance::RoundRobin => "round_robin",
        LoadBalance::Random => "random",
        LoadBalance::SessionSticky => "session_sticky",
    }
    .to_string()
}

fn lb_from(s: &str) -> LoadBalance {
    match s {
        "random" => LoadBalance::Random,
        "session_sticky" => LoadBalance::SessionSticky,
        _ => LoadBalance::RoundRobin,
    }
}

fn fallback_name(f: FallbackPolicy) -> String {
    match f {
        FallbackPolicy::Fail => "fail",
        FallbackPolicy::ReturnEmpty => "return_empty",
    }
    .to_string()
}

fn fallback_from(s: &str) -> FallbackPolicy {
    if s == "return_empty" {
        FallbackPolicy::ReturnEmpty
    } else {
        FallbackPolicy::Fail
    }
}
