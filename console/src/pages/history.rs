//! A service's revisions: who changed what and when, the difference between any two
//! revisions, and restoring any of them.

use grayline_routing::api::HistoryEntry;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;

use crate::api;
use crate::diff::{self, Change};
use crate::format;
use crate::pages::poll;
use crate::session::Session;

#[component]
pub fn HistoryPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    view! { {move || { let n = name(); view! { <History name=n /> } }} }
}

fn pretty(s: &Option<grayline_routing::Service>) -> String {
    match s {
        Some(s) => serde_json::to_string_pretty(s).unwrap_or_default(),
        None => "(no service)".to_string(),
    }
}

#[component]
fn History(name: String) -> impl IntoView {
    let session = Session::get();
    let entries = RwSignal::new(None::<Result<Vec<HistoryEntry>, String>>);
    // The two revisions being compared: (older, newer).
    let picked = RwSignal::new(Vec::<u64>::new());
    let pending_restore = RwSignal::new(None::<u64>);
    let message = RwSignal::new(None::<String>);
    let service = StoredValue::new(name.clone());
    let may_restore = move || service.with_value(|s| session.may("operator", Some(s)));
    let n = name.clone();
    poll(3_000, move || {
        let n = n.clone();
        async move {
            let Some(auth) = session.auth_now() else {
                return;
            };
            entries.set(Some(
                session
                    .check(api::history(&auth, &n).await)
                    .map(|h| h.entries)
                    .map_err(|e| e.message),
            ));
        }
    });
    let toggle = move |revision: u64| {
        picked.update(|p| {
            if let Some(i) = p.iter().position(|r| *r == revision) {
                p.remove(i);
            } else {
                p.push(revision);
                if p.len() > 2 {
                    p.remove(0);
                }
            }
        })
    };
    let n = StoredValue::new(name.clone());
    let restore = Callback::new(move |revision: u64| {
        let Some(auth) = session.auth_now() else {
            return;
        };
        let n = n.get_value();
        spawn_local(async move {
            match session.check(api::restore(&auth, &n, revision).await) {
                Ok(r) => message.set(Some(format!(
                    "Revision {revision} restored as revision {}.",
                    r.revision
                ))),
                Err(e) => message.set(Some(format!("Restore failed: {}", e.message))),
            }
            pending_restore.set(None);
            if let Ok(h) = api::history(&auth, &n).await {
                entries.set(Some(Ok(h.entries)));
            }
        });
    });
    // What to compare: the two picked revisions, or the newest change against its previous state.
    let comparison = move || {
        let list = entries.get().and_then(Result::ok)?;
        let picked = picked.get();
        let (old, new, title) = if picked.len() == 2 {
            let mut revs = picked.clone();
            revs.sort();
            let find = |r: u64| list.iter().find(|e| e.revision == r).cloned();
            let (a, b) = (find(revs[0])?, find(revs[1])?);
            (
                pretty(&a.after),
                pretty(&b.after),
                format!("Revision {} → revision {}", a.revision, b.revision),
            )
        } else {
            let e = picked
                .first()
                .and_then(|r| list.iter().find(|e| e.revision == *r))
                .or(list.first())?
                .clone();
            (
                pretty(&e.before),
                pretty(&e.after),
                format!("What revision {} changed", e.revision),
            )
        };
        Some((title, diff::lines(&old, &new)))
    };
    view! {
        <section class="history">
            <div class="title-row">
                <h1>{format!("History of {name}")}</h1>
                <span class="spacer"></span>
                <A href=format!("/services/{name}") attr:class="button">"Back to the service"</A>
            </div>
            {move || message.get().map(|m| view! { <div class="banner" role="status" id="history-message">{m}</div> })}
            <p class="muted">"Tick two revisions to compare them; with one or none ticked, a revision is compared with the state before it."</p>
            {move || match entries.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Some(Ok(list)) => {
                    let current = list.first().map_or(0, |e| e.revision);
                    view! {
                        <table class="history-table">
                            <thead><tr><th>"Compare"</th><th>"Revision"</th><th>"When"</th><th>"Who"</th><th>"What"</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|e| {
                                    let revision = e.revision;
                                    let restorable = e.after.is_some() && revision != current;
                                    view! {
                                        <tr data-revision=revision.to_string()>
                                            <td><input type="checkbox" aria-label=format!("Compare revision {revision}")
                                                prop:checked=move || picked.with(|p| p.contains(&revision))
                                                on:change=move |_| toggle(revision) /></td>
                                            <td>{revision}</td>
                                            <td>{format::time(e.time_unix_ms)}</td>
                                            <td title="The actor, and the name of the token that made the change">{e.who()}</td>
                                            <td><span class="badge">{e.action.as_str()}</span>" "{e.summary.clone()}</td>
                                            <td>{restorable.then(|| view! {
                                                <span>{move || if pending_restore.get() == Some(revision) {
                                                    view! {
                                                        <button type="button" class="primary" id=format!("restore-confirm-{revision}")
                                                            on:click=move |_| restore.run(revision)>{format!("Restore revision {revision}")}</button>
                                                        <button type="button" class="link" on:click=move |_| pending_restore.set(None)>"Cancel"</button>
                                                    }.into_any()
                                                } else {
                                                    view! {
                                                        <button type="button" id=format!("restore-{revision}")
                                                            hidden=move || !may_restore()
                                                            on:click=move |_| pending_restore.set(Some(revision))>"Restore"</button>
                                                    }.into_any()
                                                }}</span>
                                            })}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                }
            }}
            {move || comparison().map(|(title, lines)| view! {
                <h2>{title}</h2>
                <pre class="diff" id="diff">
                    {lines.into_iter().map(|(change, line)| {
                        let (class, mark) = match change {
                            Change::Same => ("same", "  "),
                            Change::Added => ("added", "+ "),
                            Change::Removed => ("removed", "- "),
                        };
                        view! { <span class=class>{mark}{line}"\n"</span> }
                    }).collect_view()}
                </pre>
            })}
        </section>
    }
}
