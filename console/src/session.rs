//! Who is signed in: the admin token and the operator's name, kept in `localStorage` so a
//! reload keeps the session. A token the server rejects signs the user out with a message.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError, Auth, Grant, SessionInfo};

fn grant_of(info: &SessionInfo) -> Grant {
    Grant {
        role: info.role.clone(),
        services: info.services.clone(),
    }
}

const TOKEN_KEY: &str = "grayline.token";
const ACTOR_KEY: &str = "grayline.actor";

#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub auth: RwSignal<Option<Auth>>,
    /// What the token may do; asked of the server at sign-in and at every start (not kept
    /// in the browser: a token's role may change), nothing until it answers.
    pub grant: RwSignal<Option<Grant>>,
    /// Why the user was signed out, shown on the sign-in page.
    pub notice: RwSignal<Option<String>>,
}

fn storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}

impl Session {
    /// The session saved in this browser, if any.
    pub fn load() -> Session {
        let saved = storage().and_then(|s| {
            let token = s.get_item(TOKEN_KEY).ok().flatten()?;
            let actor = s.get_item(ACTOR_KEY).ok().flatten().unwrap_or_default();
            Some(Auth { token, actor })
        });
        let session = Session {
            auth: RwSignal::new(saved),
            grant: RwSignal::new(None),
            notice: RwSignal::new(None),
        };
        if let Some(auth) = session.auth_now() {
            spawn_local(async move {
                if let Ok(info) = session.check(api::session(&auth).await) {
                    session.grant.set(Some(grant_of(&info)));
                }
            });
        }
        session
    }

    /// Whether the signed-in token's role covers `need` (for `service`, when given): the
    /// console offers only what the server would take.
    pub fn may(&self, need: &str, service: Option<&str>) -> bool {
        self.grant
            .with(|g| g.as_ref().is_some_and(|g| g.may(need, service)))
    }

    pub fn get() -> Session {
        expect_context::<Session>()
    }

    /// The current credentials, without tracking.
    pub fn auth_now(&self) -> Option<Auth> {
        self.auth.get_untracked()
    }

    pub fn sign_in(&self, auth: Auth) {
        if let Some(s) = storage() {
            let _ = s.set_item(TOKEN_KEY, &auth.token);
            let _ = s.set_item(ACTOR_KEY, &auth.actor);
        }
        self.notice.set(None);
        self.auth.set(Some(auth));
    }

    pub fn sign_out(&self, notice: Option<String>) {
        self.grant.set(None);
        if let Some(s) = storage() {
            let _ = s.remove_item(TOKEN_KEY);
            let _ = s.remove_item(ACTOR_KEY);
        }
        self.notice.set(notice);
        self.auth.set(None);
    }

    /// Passes a result through, signing out when the server rejected the token.
    pub fn check<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        if let Err(e) = &result
            && e.is_unauthenticated()
        {
            self.sign_out(Some(format!("Signed out: {}", e.message)));
        }
        result
    }
}

/// The sign-in page.
#[component]
pub fn SignIn() -> impl IntoView {
    let session = Session::get();
    let token = RwSignal::new(String::new());
    let actor = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let auth = Auth {
            token: token.get_untracked().trim().to_string(),
            actor: actor.get_untracked().trim().to_string(),
        };
        if auth.token.is_empty() {
            error.set(Some("Paste the admin token.".into()));
            return;
        }
        busy.set(true);
        error.set(None);
        spawn_local(async move {
            match api::session(&auth).await {
                Ok(info) => {
                    session.grant.set(Some(grant_of(&info)));
                    session.sign_in(Auth {
                        actor: info.actor,
                        ..auth
                    })
                }
                Err(e) if e.is_unauthenticated() => error.set(Some(format!(
                    "The server did not accept this token. {}",
                    e.message
                ))),
                Err(e) => error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };

    view! {
        <main class="signin">
            <form class="card" on:submit=submit>
                <h1>"Sign in to Grayline"</h1>
                {move || session.notice.get().map(|n| view! { <p class="notice" role="status">{n}</p> })}
                <p class="hint">
                    "Use the admin token the server created on its first start: the file "
                    <code>"admin.token"</code>" in its data directory (with "<code>"scripts/run"</code>": "
                    <code>".grayline-demo/data/admin.token"</code>")."
                </p>
                <label for="signin-token">"Admin token"</label>
                <input id="signin-token" type="password" autocomplete="off" required
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev)) />
                <label for="signin-actor">"Your name " <span class="muted">"(recorded in the history; optional)"</span></label>
                <input id="signin-actor" type="text" maxlength="64"
                    prop:value=move || actor.get()
                    on:input=move |ev| actor.set(event_target_value(&ev)) />
                {move || error.get().map(|e| view! { <p class="error" role="alert" id="signin-error">{e}</p> })}
                <button type="submit" class="primary" id="signin-submit" disabled=move || busy.get()>
                    {move || if busy.get() { "Checking…" } else { "Sign in" }}
                </button>
            </form>
        </main>
    }
}
