//! Every service at a glance: its split, its stable version, live requests/s and error %
//! per version, and how many proxies run its latest revision; and the full-link lanes:
//! which service has a version in which lane, and where the others fall back to.
//!
//! With thousands of services the cards come in natural order (svc2 before svc10), a page
//! of [`PAGE`] at a time, and a search box narrows them by name as one types. Past one page
//! the overview is a compact table — a row per service: split, requests/s, worst error
//! rate, proxies on its revision — whose headers sort it; cards remain a choice.

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
    // "cards", "table", or empty: table past one page of services, cards up to it.
    let layout = RwSignal::new(String::new());
    let live = Live::get();
    let proxies = RwSignal::new(Vec::<ProxyStatus>::new());
    // The catalog revision on screen.
    let seen = StoredValue::new(None::<u64>);
    poll(2_000, move || async move {
        let Some(auth) = session.auth_now() else {
            return;
        };
        match session.check(api::services(&auth).await) {
            // The same revision: nothing to sort or draw again (thousands of services).
            Ok(list) if seen.get_value() == Some(list.revision) => {}
            Ok(mut list) => {
                list.services.sort_by(|a, b| {
                    grayline_routing::natural::cmp(&a.service.name, &b.service.name)
                });
                seen.set_value(Some(list.revision));
                services.set(Some(Ok(list.services)))
            }
            Err(e) => {
                seen.set_value(None);
                services.set(Some(Err(e.message)))
            }
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
                <A href="/release" attr:class="button primary" attr:id="new-release" attr:hidden=move || !session.may("admin", None)>"New release"</A>
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
                    <select id="services-order" prop:value=move || order.get()
                        on:change=move |ev| { order.set(event_target_value(&ev)); page.set(0); }>
                        <option value="name">"name"</option>
                        <option value="traffic">"requests/s"</option>
                        <option value="errors">"errors"</option>
                    </select>
                </label>
                <label>"Show as "
                    <select id="services-layout" prop:value=move || layout.get()
                        on:change=move |ev| layout.set(event_target_value(&ev))>
                        <option value="">"table past one page"</option>
                        <option value="table">"table"</option>
                        <option value="cards">"cards"</option>
                    </select>
                </label>
            </div>
            {move || match services.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Some(Ok(list)) if list.is_empty() => view! {
                    <div class="card empty">
                        <p>"No services yet. A release starts with a service, its stable version and a canary."</p>
                        <A href="/release" attr:class="button primary" attr:hidden=move || !session.may("admin", None)>"Start a release"</A>
                    </div>
                }.into_any(),
                Some(Ok(list)) => {
                    let lanes = lane_table(&list);
                    let all = list.len();
                    let wanted = query.get().trim().to_lowercase();
                    let ordering = order.get();
                    let (rollout, errors, stale) = (only_rollout.get(), only_errors.get(), only_proxies.get());
                    // Rates only when a filter or the order needs them: they change every second.
                    let rates = if errors || ordering != "name" { live.rates(5) } else { Default::default() };
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
                    match ordering.as_str() {
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
                    let table = match layout.get().as_str() {
                        "table" => true,
                        "cards" => false,
                        _ => all > PAGE,
                    };
                    let page_of: Vec<ServiceRecord> = found.into_iter().skip(first).take(PAGE).collect();
                    let entries = if table {
                        let rows = page_of.into_iter().map(|r| {
                            let rollout = running.contains(&r.service.name);
                            view! { <ServiceRow record=r proxies=proxies rollout=rollout /> }
                        }).collect_view();
                        let sort = move |by: &'static str| move |_| { order.set(by.to_string()); page.set(0); };
                        let sorted = move |by: &'static str| move || if order.get() == by { "descending" } else { "none" };
                        view! {
                            <table class="services" id="services-table">
                                <thead><tr>
                                    <th aria-sort=sorted("name")><button class="link" id="sort-name" on:click=sort("name")>"Service"</button></th>
                                    <th>"Split"</th>
                                    <th class="num" aria-sort=sorted("traffic")><button class="link" id="sort-traffic" on:click=sort("traffic")>"Requests/s"</button></th>
                                    <th class="num" aria-sort=sorted("errors")><button class="link" id="sort-errors" on:click=sort("errors")>"Worst errors"</button></th>
                                    <th>"Proxies"</th>
                                </tr></thead>
                                <tbody>{rows}</tbody>
                            </table>
                        }.into_any()
                    } else {
                        page_of.into_iter().map(|r| view! { <ServiceCard record=r proxies=proxies /> }).collect_view().into_any()
                    };
                    view! {
                        <p class="muted" id="services-count">{count}</p>
                        {entries}
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

/// Of the proxies: how many run `revision` of `service`, how many serve it, and how many
/// connected ones rejected that revision.
fn proxies_on(proxies: &[ProxyStatus], service: &str, revision: u64) -> (usize, usize, usize) {
    let (current, total) = proxies_current(proxies, service, revision);
    let nacks = proxies
        .iter()
        .filter(|p| p.connected && p.nack_revision >= revision)
        .count();
    (current, total, nacks)
}

/// One service as a row of the compact table: its name (a link), the split, requests/s and
/// the worst error rate over its versions (live, the last 5 s), and its proxies.
#[component]
fn ServiceRow(
    record: ServiceRecord,
    proxies: RwSignal<Vec<ProxyStatus>>,
    rollout: bool,
) -> impl IntoView {
    let live = Live::get();
    let s = record.service;
    let revision = record.revision;
    let name = s.name.clone();
    let split = default_split(&s)
        .into_iter()
        .filter(|(_, bp)| *bp > 0)
        .map(|(v, bp)| format!("{v} {}", share(bp)))
        .collect::<Vec<_>>()
        .join(" · ");
    let rules = s.policy.rules.len();
    let split = if rules == 0 {
        split
    } else {
        format!("{split} (after {rules} rule(s))")
    };
    let versions = StoredValue::new((
        name.clone(),
        s.versions
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>(),
    ));
    let totals = move || {
        versions.with_value(|(service, versions)| {
            versions
                .iter()
                .map(|v| live.rate(service, v, 5))
                .fold((0.0, 0.0_f64), |(rps, worst), r| {
                    (rps + r.rps, worst.max(r.error_percent))
                })
        })
    };
    let service_name = name.clone();
    let proxy_cell = move || {
        let (current, total, nacks) = proxies.with(|p| proxies_on(p, &service_name, revision));
        let text = if total == 0 {
            "none connected".to_string()
        } else if nacks > 0 {
            format!("{current} of {total} · {nacks} rejected")
        } else {
            format!("{current} of {total}")
        };
        let warn = current < total || nacks > 0;
        view! { <span class:warn=warn>{text}</span> }
    };
    let href = format!("/services/{name}");
    let data_service = name.clone();
    view! {
        <tr class="service-row" data-service=data_service>
            <th scope="row"><A href=href>{name}</A>
                {rollout.then(|| view! { <span class="badge">"rollout"</span> })}</th>
            <td class="small">{split}</td>
            <td class="num" data-metric="rps">{move || rps(totals().0)}</td>
            <td class="num" data-metric="errors">{move || percent(totals().1)}</td>
            <td class="small">{proxy_cell}</td>
        </tr>
    }
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
        let (current, total, nacks) = proxies.with(|p| proxies_on(p, &service_name, revision));
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
