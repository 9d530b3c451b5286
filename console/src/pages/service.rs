//! One service: its automated rollout (if it has one), its versions and endpoints, the
//! policy in plain words, live charts per version, the proxies and the revision they run,
//! one-click promote with undo, and the weights of a running split edited in place.

use std::collections::BTreeMap;

use grayline_rollout::RolloutView;
use grayline_routing::api::{InstanceView, Point, ProxyStatus, SeriesView, ServiceRecord};
use grayline_routing::{Policy, Route, Split, StickyKey, Weight, describe};
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::{self, ApiError};
use crate::components::chart::{Line, LineChart};
use crate::components::rollout_panel::RolloutPanel;
use crate::components::split_bar::SplitBar;
use crate::components::weights::WeightsEditor;
use crate::format::{self, default_split, micros, percent, rps, share, version_color};
use crate::live::Live;
use crate::pages::{poll, proxies_current};
use crate::session::Session;

/// Seconds the charts show.
const CHART_SECONDS: i64 = 120;

#[component]
pub fn ServicePage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    // Remount everything when the service changes.
    view! { {move || { let n = name(); view! { <Service name=n /> } }} }
}

#[component]
fn Service(name: String) -> impl IntoView {
    let session = Session::get();
    let query = use_query_map();
    let record = RwSignal::new(None::<Result<ServiceRecord, ApiError>>);
    let proxies = RwSignal::new(Vec::<ProxyStatus>::new());
    let instances = RwSignal::new(Vec::<InstanceView>::new());
    let totals = RwSignal::new(Vec::<SeriesView>::new());
    let history = RwSignal::new(Vec::<SeriesView>::new());
    let rollout = RwSignal::new(None::<RolloutView>);
    let banner = RwSignal::new(
        query
            .with_untracked(|q| q.get("applied"))
            .map(|rev| Banner {
                text: format!("Release applied as revision {rev}."),
                undo: None,
            }),
    );

    let n = name.clone();
    poll(2_000, move || {
        let n = n.clone();
        async move {
            let Some(auth) = session.auth_now() else {
                return;
            };
            let r = session.check(api::service(&auth, &n).await);
            record.set(Some(r));
            if let Ok(p) = session.check(api::proxies(&auth).await) {
                proxies.set(p.proxies);
            }
            if let Ok(i) = session.check(api::instances(&auth, &n).await) {
                instances.set(i.instances);
            }
            if let Ok(s) = session.check(api::stats(&auth, &n, 3600).await) {
                totals.set(s.series);
            }
            if let Ok(r) = session.check(api::service_rollout(&auth, &n).await) {
                rollout.set(r);
            }
        }
    });
    let n = name.clone();
    spawn_local(async move {
        let Some(auth) = session.auth_now() else {
            return;
        };
        if let Ok(s) = api::stats(&auth, &n, CHART_SECONDS as u32).await {
            history.set(s.series);
        }
    });

    view! {
        {move || banner.get().map(|b| view! { <BannerView banner=b state=banner record=record /> })}
        {move || match record.get() {
            None => view! { <p class="muted">"Loading…"</p> }.into_any(),
            Some(Err(e)) if e.status == 404 => view! {
                <section><h1>{name.clone()}</h1><p class="error" role="alert">{e.message}</p>
                <A href="/">"Back to the overview"</A></section>
            }.into_any(),
            Some(Err(e)) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
            Some(Ok(r)) => view! { <Details record=r proxies=proxies instances=instances totals=totals history=history banner=banner state=record rollout=rollout /> }.into_any(),
        }}
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Banner {
    text: String,
    /// Restoring this revision undoes what the banner reports.
    undo: Option<u64>,
}

#[component]
fn BannerView(
    banner: Banner,
    state: RwSignal<Option<Banner>>,
    record: RwSignal<Option<Result<ServiceRecord, ApiError>>>,
) -> impl IntoView {
    let session = Session::get();
    let busy = RwSignal::new(false);
    let undo = banner.undo.map(|revision| {
        let undo = move |_| {
            let Some(auth) = session.auth_now() else { return };
            let Some(Ok(current)) = record.get_untracked() else { return };
            busy.set(true);
            spawn_local(async move {
                match session.check(api::restore(&auth, &current.service.name, revision).await) {
                    Ok(r) => {
                        state.set(Some(Banner {
                            text: format!("Undone: revision {revision} restored as revision {}.", r.revision),
                            undo: None,
                        }));
                        record.set(Some(Ok(r)));
                    }
                    Err(e) => state.set(Some(Banner {
                        text: format!("Undo failed: {}", e.message),
                        undo: Some(revision),
                    })),
                }
                busy.set(false);
            });
        };
        let may_undo = move || {
            record.with(|r| match r {
                Some(Ok(r)) => session.may("operator", Some(&r.service.name)),
                _ => false,
            })
        };
        view! { <button type="button" class="primary" id="undo" hidden=move || !may_undo() disabled=move || busy.get() on:click=undo>"Undo"</button> }
    });
    view! {
        <div class="banner" role="status" id="banner">
            <span>{banner.text}</span>
            {undo}
            <button type="button" class="link" aria-label="Dismiss" on:click=move |_| state.set(None)>"✕"</button>
        </div>
    }
}

#[component]
fn Details(
    record: ServiceRecord,
    proxies: RwSignal<Vec<ProxyStatus>>,
    instances: RwSignal<Vec<InstanceView>>,
    totals: RwSignal<Vec<SeriesView>>,
    history: RwSignal<Vec<SeriesView>>,
    banner: RwSignal<Option<Banner>>,
    state: RwSignal<Option<Result<ServiceRecord, ApiError>>>,
    rollout: RwSignal<Option<RolloutView>>,
) -> impl IntoView {
    let session = Session::get();
    let s = record.service.clone();
    let name = s.name.clone();
    let revision = record.revision;
    let shares = default_split(&s);
    let share_of = move |v: &str| shares.iter().find(|(n, _)| n == v).map_or(0, |(_, bp)| *bp);
    let hosts = if s.hosts.is_empty() {
        "any host".into()
    } else {
        s.hosts.join(", ")
    };
    let confirm = RwSignal::new(None::<String>);

    let version_cards = s
        .versions
        .iter()
        .map(|v| {
            let version = v.name.clone();
            let is_stable = s.stable == v.name;
            let (svc, ver) = (name.clone(), version.clone());
            let names = StoredValue::new((svc, ver));
            let total_of = move |mirrored: bool| {
                names.with_value(|(svc, ver)| {
                    totals.with(|t| {
                        t.iter()
                            .find(|x| {
                                x.service == *svc
                                    && x.version == *ver
                                    && x.proxy_id.is_empty()
                                    && x.mirrored == mirrored
                            })
                            .map_or(0, |x| x.totals.requests)
                    })
                })
            };
            let total = move || total_of(false);
            // Copies a route sends it, or sent it within the hour: counted apart.
            let mirror_target = s.policy.rules.iter().filter_map(|r| r.mirror.as_ref())
                .chain(&s.policy.default_mirror)
                .any(|m| m.version == v.name);
            let show_mirrored = move || mirror_target || total_of(true) > 0;
            let live = Live::get();
            let key = StoredValue::new((name.clone(), version.clone()));
            let rate = move || key.with_value(|(s, v)| live.rate(s, v, 5));
            let latest = move || {
                key.with_value(|(s, v)| live.points(s, v))
                    .into_iter()
                    .rev()
                    .find(|p| p.requests > 0)
                    .unwrap_or_default()
            };
            let mirrored_rate = move || key.with_value(|(s, v)| live.mirrored_rate(s, v, 5));
            let mirrored_latest = move || {
                key.with_value(|(s, v)| live.mirrored_points(s, v))
                    .into_iter()
                    .rev()
                    .find(|p| p.requests > 0)
                    .unwrap_or_default()
            };
            let mirrored_id = format!("mirrored-{version}");
            let mirrored_total_id = format!("mirrored-total-{version}");
            let promote_version = version.clone();
            let operate = key;
            let tls = v.tls.is_some();
            let protocol = match (v.protocol, tls) {
                (grayline_routing::Protocol::Http1, false) => "HTTP/1.1",
                (grayline_routing::Protocol::Http1, true) => "HTTP/1.1 over TLS",
                (grayline_routing::Protocol::H2c, _) => "h2c (HTTP/2)",
                (grayline_routing::Protocol::H2, _) => "h2 (HTTP/2 over TLS)",
                (grayline_routing::Protocol::Auto, false) => "HTTP/1.1 or h2c, as the client",
                (grayline_routing::Protocol::Auto, true) => "HTTP/1.1 or h2 over TLS, as the client",
            };
            let settings = format!(
                "{protocol} · {} · timeout {} ms · {} · breaker {}",
                match v.load_balance {
                    grayline_routing::LoadBalance::RoundRobin => "round robin",
                    grayline_routing::LoadBalance::Random => "random",
                    grayline_routing::LoadBalance::SessionSticky => "session sticky",
                },
                v.timeout_ms,
                if v.max_concurrent == 0 { "no concurrency limit".to_string() } else { format!("at most {} in flight", v.max_concurrent) },
                if v.breaker.enabled {
                    format!("{} % of ≥ {} requests, {} ms sleep", v.breaker.error_threshold_percent, v.breaker.request_volume, v.breaker.sleep_window_ms)
                } else {
                    "off".to_string()
                },
            );
            let color = version_color(&s, &v.name);
            view! {
                <article class="card version" data-version=version.clone()>
                    <div class="title-row">
                        <h3><i class="dot" style=format!("background: {color}")></i>{version.clone()}
                            {is_stable.then(|| view! { <span class="badge">"stable"</span> })}</h3>
                        <span class="share">{share(share_of(&version))}</span>
                    </div>
                    <p class="muted small">{endpoints_line(v)}</p>
                    <p class="muted small">{settings}</p>
                    {(!v.lane.is_empty()).then(|| view! {
                        <p class="small" id=format!("lane-{version}")>"In lane " <span class="badge lane">{v.lane.clone()}</span></p>
                    })}
                    <dl class="numbers">
                        <div><dt>"Requests/s"</dt><dd>{move || rps(rate().rps)}</dd></div>
                        <div><dt>"Errors"</dt><dd>{move || percent(rate().error_percent)}</dd></div>
                        {move || (rate().fallback_percent > 0.0).then(|| view! {
                            <div title="Answered by the proxy's fallback (breaker open or concurrency limit reached) without asking the version; not counted as its errors">
                                <dt>"Fallbacks"</dt><dd class="fallbacks">{percent(rate().fallback_percent)}</dd></div>
                        })}
                        <div><dt>"p50 / p95 / p99"</dt><dd>{move || { let p = latest(); format!("{} / {} / {}", micros(p.p50_us), micros(p.p95_us), micros(p.p99_us)) }}</dd></div>
                        <div><dt>"Requests, last hour"</dt><dd id=format!("total-{version}")>{total}</dd></div>
                    </dl>
                    {move || show_mirrored().then(|| view! {
                        <div class="mirrored" id=mirrored_id.clone()>
                            <h4>"Mirrored copies" <span class="muted small">" (answers discarded, not live traffic)"</span></h4>
                            <dl class="numbers">
                                <div><dt>"Copies/s"</dt><dd>{move || rps(mirrored_rate().rps)}</dd></div>
                                <div><dt>"Errors"</dt><dd>{move || percent(mirrored_rate().error_percent)}</dd></div>
                                <div><dt>"p50 / p99"</dt><dd>{move || { let p = mirrored_latest(); format!("{} / {}", micros(p.p50_us), micros(p.p99_us)) }}</dd></div>
                                <div><dt>"Copies, last hour"</dt><dd id=mirrored_total_id.clone()>{move || total_of(true)}</dd></div>
                            </dl>
                        </div>
                    })}
                    <button type="button" id=format!("promote-{version}")
                        hidden=move || !operate.with_value(|(s, _)| session.may("operator", Some(s)))
                        on:click=move |_| confirm.set(Some(promote_version.clone()))>
                        {format!("Promote {version}")}
                    </button>
                </article>
            }
        })
        .collect_view();

    let lines = policy_lines(&s);
    let policy_summary = describe::policy(&s).join("; ");
    let charts = view! { <Charts service=s.clone() history=history /> };
    let proxy_rows = move || {
        let name = name.clone();
        proxies
            .get()
            .into_iter()
            .filter(|p| p.services.is_empty() || p.services.contains(&name))
            .map(|p| {
                let current = p.applied_revision >= revision;
                let ejected = ejected_endpoints(&p, &name);
                view! {
                    <tr>
                        <td>{p.id.clone()}</td>
                        <td>{if p.connected { "connected" } else { "disconnected" }}</td>
                        <td class:warn=!current>{format!("{}{}", p.applied_revision, if current { " ✓" } else { " (behind)" })}</td>
                        <td class="error">{proxy_problems(&p).into_iter().map(|e| view! { <div>{e}</div> }).collect_view()}</td>
                        <td class="warn ejected">{ejected.into_iter().map(|e| view! { <div>{e}</div> }).collect_view()}</td>
                        <td class="muted">{format::time(p.last_seen_unix_ms)}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    let service_name = s.name.clone();
    let proxies_line = move || {
        let (current, total) = proxies.with(|p| proxies_current(p, &service_name, revision));
        format!("{current} of {total} connected proxies run revision {revision}")
    };
    let dialog_service = s.clone();
    let takes_instances = s.versions.iter().any(|v| v.instances.is_some());
    let resolved: Vec<String> = s
        .versions
        .iter()
        .filter_map(|v| v.dns().map(|d| format!("{} resolves {d}", v.name)))
        .collect();
    let instances_line = move || {
        let n = instances.with(Vec::len);
        let mut line = format!("{n} registered, refreshed every 2 s");
        if !resolved.is_empty() {
            line.push_str(&format!(
                "; by DNS, each proxy: {} (see a proxy's /config)",
                resolved.join(", ")
            ));
        }
        line
    };
    let out_on = move |address: &str| {
        let mut out = Vec::new();
        proxies.with(|ps| {
            for p in ps {
                for e in p.ejected_endpoints.iter().filter(|e| e.endpoint == address) {
                    let why = if e.reason == "health_check" {
                        "health check"
                    } else {
                        "outlier"
                    };
                    out.push(format!("{} ({why})", p.id));
                }
            }
        });
        out.join(", ")
    };
    let instance_rows = move || {
        instances
            .get()
            .into_iter()
            .map(|i| {
                let taken = if i.versions.is_empty() {
                    "none (no traffic)".to_string()
                } else {
                    i.versions.join(", ")
                };
                let out = out_on(&i.address);
                let metadata = i
                    .metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                view! {
                    <tr data-address=i.address.clone()>
                        <td>{i.address.clone()}</td>
                        <td>{i.tag.clone()}</td>
                        <td class:warn=i.versions.is_empty()>{taken}</td>
                        <td class="warn">{out}</td>
                        <td>{i.registered_by.clone()}</td>
                        <td class="muted">{format!("{} (TTL {} s)", format::time(i.last_renewed_unix_ms), i.ttl_seconds)}</td>
                        <td class="muted small">{metadata}</td>
                    </tr>
                }
            })
            .collect_view()
    };
    view! {
        <section>
            <div class="title-row">
                <h1>{s.name.clone()}</h1>
                <span class="muted">{format!("{hosts} · {} · revision {revision}", s.path_prefix)}</span>
                <span class="spacer"></span>
                <A href=format!("/release?service={}", s.name) attr:class="button" attr:hidden=move || !session.may("admin", None)>"New release"</A>
                <A href=format!("/services/{}/history", s.name) attr:class="button" attr:id="history-link">"History"</A>
            </div>
            <SplitBar service=s.clone() />
            {move || rollout.get().map(|v| view! { <RolloutPanel view=v state=rollout /> })}
            <h2>"Policy"</h2>
            <ul class="plain" id="policy-plain" title=policy_summary>{lines.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
            <WeightEdit record=record.clone() state=state banner=banner />
            <h2>"Versions"</h2>
            <div class="versions-grid">{version_cards}</div>
            {takes_instances.then(|| view! {
                <h2>"Instances"</h2>
                <p class="muted">{instances_line}</p>
                <table class="instances" id="instances">
                    <thead><tr><th>"Address"</th><th>"Tag"</th><th>"Taken by"</th><th>"Out on"</th><th>"Registered by"</th><th>"Last renewed"</th><th>"Metadata"</th></tr></thead>
                    <tbody>{instance_rows}</tbody>
                </table>
            })}
            <h2>"Live"</h2>
            {charts}
            <h2>"Proxies"</h2>
            <p class="muted">{proxies_line}</p>
            <table class="proxies">
                <thead><tr><th>"Proxy"</th><th>"Stream"</th><th>"Applied revision"</th><th>"Problems"</th><th>"Endpoints out"</th><th>"Last seen"</th></tr></thead>
                <tbody>{proxy_rows}</tbody>
            </table>
        </section>
        {move || confirm.get().map(|v| view! {
            <PromoteDialog service=dialog_service.clone() version=v revision=revision confirm=confirm banner=banner state=state />
        })}
    }
}

/// Where a version's endpoints come from, in a line.
fn endpoints_line(v: &grayline_routing::Version) -> String {
    match (v.tag(), v.dns()) {
        (Some(tag), _) => format!("the instances registered with tag {tag}"),
        (_, Some(dns)) => format!("what {dns} resolves to"),
        _ => v.endpoints.join(", "),
    }
}

/// What is wrong with a proxy, one line each: a rejected token, a rejected config, a config
/// applied but not saved.
fn proxy_problems(p: &ProxyStatus) -> Vec<String> {
    let mut out = Vec::new();
    if !p.token_error.is_empty() {
        out.push(format!(
            "token rejected at {}: {}",
            format::time(p.token_rejected_unix_ms),
            p.token_error
        ));
    }
    if !p.nack_error.is_empty() {
        out.push(format!(
            "revision {} rejected: {}",
            p.nack_revision, p.nack_error
        ));
    }
    if !p.ack_warning.is_empty() {
        out.push(p.ack_warning.clone());
    }
    out
}

/// The proxy's ejected endpoints of `service`'s versions: "v2 10.0.0.7:8080 until 12:00:31".
fn ejected_endpoints(p: &ProxyStatus, service: &str) -> Vec<String> {
    p.ejected_endpoints
        .iter()
        .filter(|e| e.service == service)
        .map(|e| {
            format!(
                "{} {} until {}",
                e.version,
                e.endpoint,
                format::time(e.until_unix_ms)
            )
        })
        .collect()
}

fn policy_lines(s: &grayline_routing::Service) -> Vec<String> {
    describe::policy(s)
}

#[component]
fn PromoteDialog(
    service: grayline_routing::Service,
    version: String,
    revision: u64,
    confirm: RwSignal<Option<String>>,
    banner: RwSignal<Option<Banner>>,
    state: RwSignal<Option<Result<ServiceRecord, ApiError>>>,
) -> impl IntoView {
    let session = Session::get();
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let button = NodeRef::<html::Button>::new();
    Effect::new(move |_| {
        if let Some(b) = button.get() {
            let _ = b.focus();
        }
    });
    let rules = service.policy.rules.len();
    let now = describe::policy(&service).join("; ");
    let what = format!(
        "{version} becomes the stable version and takes 100 % of the traffic of {}. {}The policy now in force ({now}) is replaced. You can undo this right after.",
        service.name,
        if rules > 0 {
            format!("Its {rules} content rule(s) are removed. ")
        } else {
            String::new()
        },
    );
    let name = service.name.clone();
    let v = version.clone();
    let promote = move |_| {
        let Some(auth) = session.auth_now() else {
            return;
        };
        busy.set(true);
        let (name, v) = (name.clone(), v.clone());
        spawn_local(async move {
            match session.check(api::promote(&auth, &name, &v, revision).await) {
                Ok(r) => {
                    banner.set(Some(Banner {
                        text: format!("{v} promoted: 100 % and stable (revision {}).", r.revision),
                        undo: Some(revision),
                    }));
                    state.set(Some(Ok(r)));
                    confirm.set(None);
                }
                Err(e) => error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    view! {
        <div class="overlay">
            <div class="dialog card" role="dialog" aria-modal="true" aria-labelledby="promote-title" id="promote-dialog"
                on:keydown=move |ev| if ev.key() == "Escape" { confirm.set(None) }>
                <h2 id="promote-title">{format!("Promote {version}?")}</h2>
                <p>{what}</p>
                {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                <div class="row-actions">
                    <button type="button" on:click=move |_| confirm.set(None)>"Cancel"</button>
                    <button type="button" class="primary" id="promote-confirm" node_ref=button disabled=move || busy.get() on:click=promote>
                        {format!("Promote {version}")}
                    </button>
                </div>
            </div>
        </div>
    }
}

/// The weights of the running split, changed in place.
#[component]
fn WeightEdit(
    record: ServiceRecord,
    state: RwSignal<Option<Result<ServiceRecord, ApiError>>>,
    banner: RwSignal<Option<Banner>>,
) -> impl IntoView {
    let session = Session::get();
    let s = record.service.clone();
    let service_name = s.name.clone();
    let sticky: Option<StickyKey> = match &s.policy.default_route {
        Some(Route::Split(split)) => split.sticky.clone(),
        _ => None,
    };
    let current: BTreeMap<String, u32> = default_split(&s).into_iter().collect();
    let weights = RwSignal::new(current);
    let takes_rest = RwSignal::new(false);
    let errors = RwSignal::new(Vec::<String>::new());
    let message = RwSignal::new(None::<String>);
    let names: Vec<String> = s.versions.iter().map(|v| v.name.clone()).collect();
    let stable = s.stable.clone();
    let names2 = names.clone();
    let stable2 = stable.clone();
    let effective = Signal::derive(move || {
        let w = weights.get();
        let others: u32 = names2
            .iter()
            .filter(|n| **n != stable2)
            .map(|n| w.get(n).copied().unwrap_or(0))
            .sum();
        names2
            .iter()
            .map(|n| {
                let bp = if *n == stable2 && takes_rest.get() {
                    10_000u32.saturating_sub(others)
                } else {
                    w.get(n).copied().unwrap_or(0)
                };
                (n.clone(), bp)
            })
            .collect::<Vec<_>>()
    });
    let save = move |_| {
        let Some(auth) = session.auth_now() else {
            return;
        };
        let policy = Policy {
            rules: s.policy.rules.clone(),
            default_route: Some(Route::Split(Split {
                weights: effective
                    .get_untracked()
                    .into_iter()
                    .map(|(version, weight)| Weight { version, weight })
                    .collect(),
                sticky: sticky.clone(),
            })),
            default_mirror: None,
        };
        let name = s.name.clone();
        let revision = record.revision;
        spawn_local(async move {
            match session.check(api::set_policy(&auth, &name, &policy, revision).await) {
                Ok(r) => {
                    errors.set(Vec::new());
                    banner.set(Some(Banner {
                        text: format!("Weights saved as revision {}.", r.revision),
                        undo: Some(revision),
                    }));
                    state.set(Some(Ok(r)));
                }
                Err(e) => {
                    let mut list: Vec<String> = e
                        .fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect();
                    if list.is_empty() {
                        list.push(e.message.clone());
                    }
                    errors.set(list);
                    message.set(Some("Nothing was changed.".into()));
                }
            }
        });
    };
    view! {
        <details class="weight-edit" hidden=move || !session.may("operator", Some(&service_name))>
            <summary id="edit-weights">"Edit the weights in place"</summary>
            <WeightsEditor id="edit"
                weights=effective
                stable=Signal::derive(move || stable.clone())
                set_weight=Callback::new(move |(v, bp): (String, u32)| weights.update(|w| { w.insert(v, bp); }))
                takes_rest=takes_rest.into()
                set_takes_rest=Callback::new(move |on: bool| takes_rest.set(on))
                errors=errors.into() />
            {move || message.get().map(|m| view! { <p class="muted">{m}</p> })}
            <button type="button" class="primary" id="edit-save" on:click=save>"Save weights"</button>
        </details>
    }
}

/// Requests/s and error % for every version, and latency percentiles per version, over the
/// last two minutes, from the statistics history and then the live ticks.
#[component]
fn Charts(service: grayline_routing::Service, history: RwSignal<Vec<SeriesView>>) -> impl IntoView {
    let live = Live::get();
    let versions: Vec<(String, &'static str)> = service
        .versions
        .iter()
        .map(|v| (v.name.clone(), version_color(&service, &v.name)))
        .collect();
    let name = service.name.clone();
    let series = Memo::new(move |_| {
        let mut out: Vec<(String, &'static str, Vec<Point>)> = Vec::new();
        for (version, color) in &versions {
            let mut by_second: BTreeMap<i64, Point> = BTreeMap::new();
            history.with(|h| {
                if let Some(s) = h
                    .iter()
                    .find(|s| s.version == *version && s.proxy_id.is_empty() && !s.mirrored)
                {
                    for p in &s.points {
                        by_second.insert(p.time_unix_s, p.clone());
                    }
                }
            });
            for p in live.points(&name, version) {
                by_second.insert(p.time_unix_s, p);
            }
            let newest = by_second.keys().next_back().copied().unwrap_or(0);
            let points = (newest - CHART_SECONDS + 1..=newest)
                .map(|t| {
                    by_second.get(&t).cloned().unwrap_or(Point {
                        time_unix_s: t,
                        ..Point::default()
                    })
                })
                .collect();
            out.push((version.clone(), *color, points));
        }
        out
    });
    let metric = move |f: fn(&Point) -> f64| {
        Signal::derive(move || {
            series
                .get()
                .into_iter()
                .map(|(label, color, points)| Line {
                    label,
                    color,
                    points: points.iter().map(|p| (p.time_unix_s, f(p))).collect(),
                })
                .collect::<Vec<_>>()
        })
    };
    let requests = metric(|p| p.requests as f64);
    let errors = metric(|p| {
        if p.answered() == 0 {
            0.0
        } else {
            p.status_5xx as f64 * 100.0 / p.answered() as f64
        }
    });
    let latency_charts = service
        .versions
        .iter()
        .map(|v| {
            let version = v.name.clone();
            let color = version_color(&service, &v.name);
            let lines = Signal::derive(move || {
                let points = series
                    .get()
                    .into_iter()
                    .find(|(l, _, _)| *l == version)
                    .map(|(_, _, p)| p)
                    .unwrap_or_default();
                let line = |label: &str, c: &'static str, f: fn(&Point) -> u64| Line {
                    label: label.to_string(),
                    color: c,
                    points: points
                        .iter()
                        .filter(|p| p.requests > 0)
                        .map(|p| (p.time_unix_s, f(p) as f64 / 1000.0))
                        .collect(),
                };
                vec![
                    line("p50", color, |p| p.p50_us),
                    line("p95", "#9aa0a6", |p| p.p95_us),
                    line("p99", "#3c4043", |p| p.p99_us),
                ]
            });
            view! { <LineChart title=format!("{} latency (ms)", v.name) lines=lines format=|v| format!("{v:.1}") min_top=1.0 /> }
        })
        .collect_view();
    view! {
        <div class="charts">
            <LineChart title="Requests per second" lines=requests format=|v| format!("{v:.0}") min_top=5.0 />
            <LineChart title="Errors (% of requests answered 5xx)" lines=errors format=|v| format!("{v:.0}%") min_top=5.0 />
            {latency_charts}
        </div>
    }
}
