//! The shell: sign-in gate, header and navigation, routes.

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::live::Live;
use crate::pages::history::HistoryPage;
use crate::pages::overview::Overview;
use crate::pages::service::ServicePage;
use crate::pages::wizard::Wizard;
use crate::session::{Session, SignIn};

#[component]
pub fn App() -> impl IntoView {
    let session = Session::load();
    provide_context(session);
    provide_context(Live::start(session));
    view! {
        <Router>
            {move || if session.auth.get().is_some() {
                view! { <Shell /> }.into_any()
            } else {
                view! { <SignIn /> }.into_any()
            }}
        </Router>
    }
}

#[component]
fn Shell() -> impl IntoView {
    let session = Session::get();
    let live = Live::get();
    let actor = move || session.auth.get().map(|a| a.actor).unwrap_or_default();
    // A store that refuses writes is an outage of its own: every change fails until an
    // operator makes room (docs/operations.md). Said on every page, not only on a failed save.
    let refusing = RwSignal::new(None::<String>);
    crate::pages::poll(5_000, move || async move {
        refusing.set(crate::api::store_refusing().await);
    });
    view! {
        <header class="top">
            <A href="/" attr:class="brand">"Grayline"</A>
            <nav aria-label="Main">
                <A href="/">"Overview"</A>
                <Show when=move || session.may("admin", None)>
                    <A href="/release">"New release"</A>
                </Show>
            </nav>
            <span class="live" class:on=move || live.connected.get()
                title=move || if live.connected.get() { "Live statistics connected" } else { "Live statistics disconnected" }>
                {move || if live.connected.get() { "● live" } else { "○ offline" }}
            </span>
            <span class="who">{actor}</span>
            <span class="role" id="role" title="What this token may do">
                {move || session.grant.get().map(|g| match g.services {
                    Some(list) => format!("{} of {}", g.role, list.join(", ")),
                    None => g.role,
                })}
            </span>
            <button class="link" id="sign-out" on:click=move |_| session.sign_out(None)>"Sign out"</button>
        </header>
        {move || refusing.get().map(|why| view! {
            <div class="banner error" role="alert" id="store-banner">
                {format!("Changes cannot be saved now — {why}")}
            </div>
        })}
        <main class="page">
            <Routes fallback=|| view! { <section><h1>"Not found"</h1><p>"There is no such page. " <A href="/">"Back to the overview"</A></p></section> }>
                <Route path=path!("/") view=Overview />
                <Route path=path!("/release") view=Wizard />
                <Route path=path!("/services/:name") view=ServicePage />
                <Route path=path!("/services/:name/history") view=HistoryPage />
            </Routes>
        </main>
    }
}
