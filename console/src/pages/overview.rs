//! Every service at a glance: its split, its stable version, live requests/s and error %
//! per version, and how many proxies run its latest revision; and the full-link lanes:
//! which service has a version in which lane, and where the others fall back to.
//!
//! With thousands of services the cards come in natural order (svc2 before svc10), a page
//! of [`PAGE`] at a time, and a search box narrows them by name as one types.

use grayline_routing::api::{ProxyStatus, ServiceRecord};
use leptos::prelude::*;
use leptos_router::components::A;

use crate::api;
use crate::components::split_bar::SplitBar;
use crate::format::{default_split, percent, rps, share, version_color};
use crate::live::Live;
use crate::pages::{poll, proxies_current};
use crate::session::Session;

/// Service cards per page.
const PAGE: usize = 50;

#[component]
pub fn Overview() -> impl IntoView {
    let session = Session::get();
    let services = RwSignal::new(None::<Result<Vec<ServiceRecord>, String>>);
    let query = RwSignal::new(String::new());
    let page = RwSignal::new(0usize);
    let in_rollout = RwSignal::new(Vec::<String>::new());
    // Filters: a rollout running, a version failing more than the stable one, proxies behind
    // the newest revision or rejecting it; and the order.
    let only_rollout = RwSignal::new(false);
    let only_errors = RwSignal::new(false);
    let only_proxies = RwSignal::new(false);
    let order = RwSignal::new("name".to_string());
    let live = Live::get();
    let proxies = RwSignal::new(Vec::<ProxyStatus>::new());
    poll(2_000, move || async move {
        let Some(auth) = session.auth_now() else {
            return;
        };
        match session.check(api::services(&auth).await) {
            Ok(mut list) => {
                list.services.sort_by(|a, b| {
                    grayline_routing::natural::cmp(&a.service.name, &b.service.name)
                });
                services.set(Some(Ok(list.services)))
            }
            Err(e) => services.set(Some(Err(e.message))),
        }
        if let Ok(p) = session.check(api::proxies(&auth).await) {
            proxies.set(p.proxies);
        }
        if let Ok(names) = session.check(api::services_in_rollout(&auth).await) {
            in_rollout.set(names);
        }
    });

    view! {
        <section>
            <div class="title-row">
                <h1>"Services"</h1>
                <A href="/release" attr:class="button primary" attr:id="new-release">"New release"</A>
            </div>
            <div class="title-row filters">
                <input type="search" id="service-search" placeholder="Find a service by name" aria-label="Find a service by name"
                    prop:value=move || query.get()
                    on:input=move |ev| { query.set(event_target_value(&ev)); page.set(0); } />
                <label><input type="checkbox" id="filter-rollout" prop:checked=move || only_rollout.get()
                    on:change=move |ev| { only_rollout.set(event_target_checked(&ev)); page.set(0); } />" rollout running"</label>
                <label><input type="checkbox" id="filter-errors" prop:checked=move || only_errors.get()
                    on:change=move |ev| { only_errors.set(event_target_checked(&ev)); page.set(0); } />" errors above stable"</label>
                <label><input type="checkbox" id="filter-proxies" prop:checked=move || only_proxies.get()
                    on:change=move |ev| { only_proxies.set(event_target_checked(&ev)); page.set(0); } />" proxies behind or rejecting"</label>
                <label>"Sort by "
                    <select id="services-order" on:change=move |ev| { order.set(event_target_value(&ev)); page.set(0); }>
                        <option value="name" selected=true>"name"</option>
                        <option value="traffic">"requests/s"</option>
                        <option value="errors">"errors"</option>
                    </select>
                </label>
            </div>
            {move || match services.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Some(Ok(list)) if list.is_empty() => view! {
                    <div class="card empty">
                        <p>"No services yet. A release starts with a service, its stable version and a canary."</p>
                        <A href="/release" attr:class="button primary">"Start a release"</A>
                    </div>
                }.into_any(),
                Some(Ok(list)) => {
                    let lanes = lane_table(&list);
                    let all = list.len();
                    let wanted = query.get().trim().to_lowercase();
                    let order = order.get();
                    let (rollout, errors, stale) = (only_rollout.get(), only_errors.get(), only_proxies.get());
                    // Rates only when a filter or the order needs them: they change every second.
                    let rates = if errors || order != "name" { live.rates(5) } else { Default::default() };
                    let worst = |r: &ServiceRecord| {
                        let rate = |v: &str| rates.get(&(r.service.name.clone(), v.to_string())).cloned().unwrap_or_default();
                        let stable = rate(&r.service.stable).error_percent;
                        let versions = r.service.versions.iter().map(|v| rate(&v.name));
                        let (rps, worst) = versions.fold((0.0, 0.0_f64), |(rps, worst), x| (rps + x.rps, worst.max(x.error_percent)));
                        (rps, worst, stable)
                    };
                    let running = in_rollout.get();
                    let behind = |r: &ServiceRecord| proxies.with(|p| {
                        let (current, total) = proxies_current(p, &r.service.name, r.revision);
                        current < total || p.iter().any(|p| p.connected && p.nack_revision >= r.revision
                            && (p.services.is_empty() || p.services.contains(&r.service.name)))
                    });
                    let mut found: Vec<(ServiceRecord, (f64, f64, f64))> = list
                        .into_iter()
                        .filter(|r| wanted.is_empty() || r.service.name.to_lowercase().contains(&wanted))
                        .filter(|r| !rollout || running.contains(&r.service.name))
                        .filter(|r| !stale || behind(r))
                        .map(|r| { let w = worst(&r); (r, w) })
                        .filter(|(_, (_, worst, stable))| !errors || worst > stable)
                        .collect();
                    match order.as_str() {
                        "traffic" => found.sort_by(|a, b| b.1.0.total_cmp(&a.1.0)),
                        "errors" => found.sort_by(|a, b| b.1.1.total_cmp(&a.1.1)),
                        _ => {}
                    }
                    let found: Vec<ServiceRecord> = found.into_iter().map(|(r, _)| r).collect();
                    let wanted = if rollout || errors || stale {
                        let mut parts = vec![wanted];
                        parts.extend(rollout.then(|| "rollout running".to_string()));
                        parts.extend(errors.then(|| "errors above stable".to_string()));
                        parts.extend(stale.then(|| "proxies behind".to_string()));
                        parts.retain(|p| !p.is_empty());
                        parts.join(", ")
                    } else {
                        wanted
                    };
                    let pages = found.len().div_ceil(PAGE).max(1);
                    let current = page.get().min(pages - 1);
                    let first = current * PAGE;
                    let shown = found.len().saturating_sub(first).min(PAGE);
                    let count = match found.len() {
                        0 => format!("No service of {all} matches “{wanted}”"),
                        n => {
                            let plural = if n == 1 { "service" } else { "services" };
                            let range = if n <= PAGE { format!("{n} {plural}") } else { format!("{}–{} of {n} {plural}", first + 1, first + shown) };
                            if wanted.is_empty() { range } else { format!("{range} matching “{wanted}” (of {all})") }
                        }
                    };
                    let (at_first, at_last) = (current == 0, current + 1 == pages);
                    let pager = (pages > 1).then(|| view! {
                        <div class="title-row pager">
                            <button id="page-previous" disabled=at_first on:click=move |_| page.set(current.saturating_sub(1))>"Previous"</button>
                            <span class="muted">{format!("page {} of {pages}", current + 1)}</span>
                            <button id="page-next" disabled=at_last on:click=move |_| page.set(current + 1)>"Next"</button>
                        </div>
                    });
                    view! {
                        <p class="muted" id="services-count">{count}</p>
                        {found.into_iter().skip(first).take(PAGE).map(|r| view! { <ServiceCard record=r proxies=proxies /> }).collect_view()}
                        {pager}
                        {lanes}
                    }.into_any()
                }
            }}
        </section>
    }
}

/// Lanes × services: each service's version in the lane, or the stable version a request in
/// that lane falls back to. Nothing when no service has a version in a lane.
fn lane_table(list: &[ServiceRecord]) -> Option<impl IntoView + use<>> {
    let mut lanes: Vec<&str> = list
        .iter()
        .flat_map(|r| r.service.versions.iter())
        .map(|v| v.lane.as_str())
        .filter(|l| !l.is_empty())
        .collect();
    lanes.sort_unstable();
    lanes.dedup();
    if lanes.is_empty() {
        return None;
    }
    let header = list
        .iter()
        .map(|r| view! { <th>{r.service.name.clone()}</th> })
        .collect_view();
    let rows = lanes
        .iter()
        .map(|lane| {
            let cells = list
                .iter()
                .map(|r| match r.service.lane_version(lane) {
                    Some(v) => view! { <td data-service=r.service.name.clone()>{v.name.clone()}</td> }.into_any(),
                    None => view! {
                        <td class="fallback" data-service=r.service.name.clone()>{format!("{} (stable)", r.service.stable)}</td>
                    }.into_any(),
                })
                .collect_view();
            view! { <tr data-lane=lane.to_string()><th scope="row"><span class="badge lane">{lane.to_string()}</span></th>{cells}</tr> }
        })
        .collect_view();
    Some(view! {
        <h2>"Lanes"</h2>
        <p class="muted">"A request in a lane goes to each service's version in that lane; where a service has none, to its stable version, and the lane goes on with it."</p>
        <table class="lanes" id="lanes">
            <thead><tr><th>"Lane"</th>{header}</tr></thead>
            <tbody>{rows}</tbody>
        </table>
    })
}

#[component]
fn ServiceCard(record: ServiceRecord, proxies: RwSignal<Vec<ProxyStatus>>) -> impl IntoView {
    let live = Live::get();
    let s = record.service.clone();
    let name = s.name.clone();
    let revision = record.revision;
    let shares = default_split(&s);
    let share_of = move |v: &str| {
        shares
            .iter()
            .find(|(n, _)| n == v)
            .map(|(_, bp)| *bp)
            .unwrap_or(0)
    };
    let rows = s
        .versions
        .iter()
        .map(|v| {
            let key = StoredValue::new((name.clone(), v.name.clone()));
            let stable = s.stable == v.name;
            let rate = move || key.with_value(|(service, version)| live.rate(service, version, 5));
            view! {
                <tr>
                    <td><i class="dot" style=format!("background: {}", version_color(&s, &v.name))></i>{v.name.clone()}
                        {stable.then(|| view! { <span class="badge">"stable"</span> })}
                        {(!v.lane.is_empty()).then(|| view! { <span class="badge lane">{v.lane.clone()}</span> })}</td>
                    <td>{share(share_of(&v.name))}</td>
                    <td class="num" data-version=v.name.clone() data-metric="rps">{move || rps(rate().rps)}</td>
                    <td class="num">{move || percent(rate().error_percent)}</td>
                </tr>
            }
        })
        .collect_view();
    let rules = s.policy.rules.len();
    let hosts = if s.hosts.is_empty() {
        "any host".to_string()
    } else {
        s.hosts.join(", ")
    };
    let service_name = name.clone();
    let proxy_line = move || {
        let (current, total) = proxies.with(|p| proxies_current(p, &service_name, revision));
        let nacks = proxies.with(|p| {
            p.iter()
                .filter(|p| p.connected && p.nack_revision >= revision)
                .count()
        });
        let text = if total == 0 {
            "no proxy connected".to_string()
        } else {
            format!("{current} of {total} proxies run revision {revision}")
        };
        view! {
            <span class:warn=move || { current < total || nacks > 0 }>{text}</span>
            {(nacks > 0).then(|| view! { <span class="error">{format!(" · {nacks} rejected it")}</span> })}
        }
    };
    let href = format!("/services/{name}");
    let data_service = name.clone();
    view! {
        <article class="card service-card" data-service=data_service>
            <div class="title-row">
                <h2><A href=href>{name}</A></h2>
                <span class="muted">{format!("{hosts} · {}", s.path_prefix)}</span>
            </div>
            <SplitBar service=s.clone() />
            <p class="muted small">
                {if rules == 0 { "No content rules".to_string() } else { format!("{rules} content rule(s) before the split") }}
                " · " {proxy_line}
            </p>
            <table class="versions">
                <thead><tr><th>"Version"</th><th>"Share"</th><th>"Requests/s"</th><th>"Errors"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </article>
    }
}
