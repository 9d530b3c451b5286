//! Step 4: the release in plain words, anything still wrong (with a way back to it), and a
//! simulator that decides typed-in requests with the very engine the proxies run.

use grayline_routing::lane::is_lane_name;
use grayline_routing::useragent::{classify, samples::SAMPLES};
use grayline_routing::{CompiledService, Lane, Matched, RequestFacts, Sticky, describe};
use leptos::prelude::*;

use super::draft::{Draft, Mode, step_of};
use super::fields::Form;
use super::rollout_step::RolloutReview;
use crate::api;
use crate::format::share;
use crate::session::Session;
use leptos::task::spawn_local;

#[component]
pub fn ReviewStep(
    form: Form,
    local: Memo<Vec<(String, String)>>,
    go: Callback<usize>,
) -> impl IntoView {
    let draft = form.draft;
    let built = Memo::new(move |_| draft.with(|d| d.build().0));
    let heading = move || {
        draft.with(|d| match &d.base {
            Some(b) => format!("Update {} (now at revision {})", b.service.name, b.revision),
            None => format!("Create service {}", d.name.trim()),
        })
    };
    // The instances registered now, for canaries that take them by tag.
    let registered = RwSignal::new(None::<Vec<grayline_routing::api::InstanceView>>);
    let service_name = draft.with_untracked(|d| d.name.trim().to_string());
    if draft.with_untracked(|d| d.canaries.iter().any(|c| !c.tag.trim().is_empty())) {
        let session = Session::get();
        spawn_local(async move {
            let Some(auth) = session.auth_now() else {
                return;
            };
            if let Ok(i) = api::instances(&auth, &service_name).await {
                registered.set(Some(i.instances));
            }
        });
    }
    let added = move || {
        draft.with(|d| {
            d.canaries
                .iter()
                .map(|c| match (c.tag.trim(), c.dns.trim()) {
                    ("", "") => format!(
                        "{} → {}",
                        c.name.trim(),
                        super::draft::split_list(&c.endpoints).join(", ")
                    ),
                    ("", dns) => {
                        format!("{} → what {dns} resolves to, on each proxy", c.name.trim())
                    }
                    (tag, _) => {
                        let now = registered.with(|r| {
                            r.as_ref().map(|list| {
                                let of: Vec<&str> = list
                                    .iter()
                                    .filter(|i| i.tag == tag)
                                    .map(|i| i.address.as_str())
                                    .collect();
                                if of.is_empty() {
                                    " — none registered now: it would answer with its fallback"
                                        .to_string()
                                } else {
                                    format!(" — registered now: {}", of.join(", "))
                                }
                            })
                        });
                        format!(
                            "{} → the instances tagged {tag}{}",
                            c.name.trim(),
                            now.unwrap_or_default()
                        )
                    }
                })
                .collect::<Vec<_>>()
        })
    };
    view! {
        <h2>{heading}</h2>
        <h3>"Canary versions"</h3>
        <ul class="plain">{move || added().into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
        <h3>"Policy"</h3>
        <ul class="plain" id="wizard-plain">
            {move || describe::policy(&built.get()).into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}
        </ul>
        {move || (draft.with(|d| d.mode) == Mode::Rollout).then(|| view! { <RolloutReview draft=draft /> })}
        {move || {
            let problems = local.get();
            (!problems.is_empty()).then(|| view! {
                <div class="problems" role="alert" id="wizard-problems">
                    <h3>"Fix these before applying"</h3>
                    <ul>
                        {problems.into_iter().map(|(key, message)| {
                            let step = step_of(&key);
                            view! {
                                <li>{message}" "
                                    <button type="button" class="link" on:click=move |_| go.run(step)>
                                        {format!("(step {})", step + 1)}
                                    </button>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                </div>
            })
        }}
        <Simulator draft=draft />
    }
}

/// Parses `Name: value` lines.
fn header_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[component]
fn Simulator(draft: RwSignal<Draft>) -> impl IntoView {
    let headers = RwSignal::new(String::new());
    let cookies = RwSignal::new(String::new());
    let query = RwSignal::new(String::new());
    let agent = RwSignal::new(SAMPLES[0].0.to_string());
    let ip = RwSignal::new("203.0.113.10".to_string());
    let lane = RwSignal::new(String::new());
    let roll = RwSignal::new(js_sys::Math::random());

    let result = Memo::new(move |_| {
        let (service, _, _) = draft.with(Draft::build);
        let compiled = CompiledService::compile(&service).map_err(|e| e.to_string())?;
        let mut facts = RequestFacts::default()
            .with_user_agent(&agent.get())
            .with_client_ip(&ip.get());
        for (k, v) in header_lines(&headers.get()) {
            facts = facts.with_header(&k, &v);
        }
        if !cookies.get().trim().is_empty() {
            facts = facts.with_header("cookie", cookies.get().trim());
        }
        let arrived = lane.get().trim().to_string();
        if !arrived.is_empty() {
            if !is_lane_name(&arrived) {
                return Err(format!(
                    "`{arrived}` is not a lane name: use letters, digits, `.`, `_` and `-`"
                ));
            }
            facts = facts.with_lane(&arrived);
        }
        for pair in query
            .get()
            .trim_start_matches('?')
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            facts = facts.with_query(k, v);
        }
        let random = (roll.get() * 1e15) as u64;
        let d = compiled.decide(&facts, random);
        let ua = classify(&facts.user_agent);
        let random_split = d.bucket.is_some() && !matches!(d.sticky, Sticky::Key(_));
        let odds = random_split.then(|| {
            compiled
                .default_ranges()
                .filter(|_| d.matched == Matched::Default)
                .map(|ranges| {
                    ranges
                        .iter()
                        .map(|(v, a, b)| {
                            format!("{} {}", service.versions[*v].name, share(u32::from(b - a)))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        });
        let onward = match d.lane {
            Lane::None => None,
            Lane::Carried => Some(arrived),
            Lane::Entered(l) => Some(l.to_string()),
        };
        Ok::<_, String>((
            d.version_name.to_string(),
            describe::decision(&service, &d),
            format!(
                "{} {} · {} {}",
                ua.os, ua.os_version, ua.browser, ua.browser_version
            ),
            odds,
            onward,
        ))
    });

    view! {
        <section class="simulator" aria-labelledby="sim-title">
            <h3 id="sim-title">"Try a request"</h3>
            <p class="muted">"Decided in your browser by the same engine the proxies run."</p>
            <div class="grid2">
                <div class="field">
                    <label for="sim-headers">"Headers (Name: value, one per line)"</label>
                    <textarea id="sim-headers" rows="3" placeholder="x-canary: 1"
                        prop:value=move || headers.get() on:input=move |ev| headers.set(event_target_value(&ev))></textarea>
                </div>
                <div class="field">
                    <label for="sim-cookies">"Cookies"</label>
                    <input id="sim-cookies" type="text" placeholder="uid=alice; beta=yes"
                        prop:value=move || cookies.get() on:input=move |ev| cookies.set(event_target_value(&ev)) />
                    <label for="sim-query">"Query string"</label>
                    <input id="sim-query" type="text" placeholder="preview=true"
                        prop:value=move || query.get() on:input=move |ev| query.set(event_target_value(&ev)) />
                </div>
            </div>
            <div class="field">
                <label for="sim-agent-preset">"Browser"</label>
                <select id="sim-agent-preset" on:change=move |ev| agent.set(event_target_value(&ev))>
                    {SAMPLES.iter().filter(|s| !s.0.is_empty()).map(|(ua, os, osv, browser, bv)| view! {
                        <option value=*ua>{format!("{os} {osv} · {browser} {bv}")}</option>
                    }).collect_view()}
                </select>
                <label for="sim-agent">"User-Agent"</label>
                <input id="sim-agent" type="text" prop:value=move || agent.get() on:input=move |ev| agent.set(event_target_value(&ev)) />
            </div>
            <div class="grid2">
                <div class="field">
                    <label for="sim-ip">"Client IP"</label>
                    <input id="sim-ip" type="text" prop:value=move || ip.get() on:input=move |ev| ip.set(event_target_value(&ev)) />
                </div>
                <div class="field">
                    <label for="sim-lane">"Lane it arrives in (from a trusted proxy)"</label>
                    <input id="sim-lane" type="text" placeholder="gray" prop:value=move || lane.get() on:input=move |ev| lane.set(event_target_value(&ev)) />
                </div>
            </div>
            <div class="sim-result" id="sim-result" aria-live="polite">
                {move || match result.get() {
                    Err(e) => view! { <p class="error">"The policy is not valid yet: "{e}</p> }.into_any(),
                    Ok((version, why, ua, odds, onward)) => view! {
                        <p class="answer">"→ " <strong id="sim-version">{version}</strong></p>
                        <p id="sim-why">{why}</p>
                        {onward.map(|l| view! { <p id="sim-lane-out">"The next service sees it in lane " <strong>{l}</strong></p> })}
                        <p class="muted">"User-Agent reads as " {ua}</p>
                        {odds.map(|o| view! {
                            <p class="muted">"A new request without a sticky key lands at random: " {o} " "
                                <button type="button" class="link" id="sim-reroll" on:click=move |_| roll.set(js_sys::Math::random())>"try again"</button>
                            </p>
                        })}
                    }.into_any(),
                }}
            </div>
        </section>
    }
}
