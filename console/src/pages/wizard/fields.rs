//! Form fields bound to the wizard's draft: each reads and writes one part of it and shows
//! the errors whose field key falls under its own.

use leptos::prelude::*;

use super::draft::{Draft, path_starts_with};
use crate::components::messages::FieldErrors;

/// The draft and the errors to show, shared by every field.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub draft: RwSignal<Draft>,
    pub errors: Signal<Vec<(String, String)>>,
}

impl Form {
    /// Messages for the field `key` (and anything under it).
    pub fn messages(&self, key: &str) -> Vec<String> {
        self.errors.with(|errors| {
            errors
                .iter()
                .filter(|(k, _)| path_starts_with(k, key))
                .map(|(k, m)| {
                    let rest = &k[key.len()..];
                    if rest.is_empty() {
                        m.clone()
                    } else {
                        format!("{}: {m}", rest.trim_start_matches('.'))
                    }
                })
                .collect()
        })
    }

    fn messages_signal(self, key: String) -> Signal<Vec<String>> {
        Signal::derive(move || self.messages(&key))
    }
}

/// A text input (or textarea) with its label and errors.
#[component]
pub fn TextField(
    form: Form,
    #[prop(into)] id: String,
    #[prop(into)] label: String,
    /// The error key this field shows.
    #[prop(into)]
    key: String,
    get: impl Fn(&Draft) -> String + Send + Sync + Copy + 'static,
    set: impl Fn(&mut Draft, String) + Send + Sync + Copy + 'static,
    #[prop(optional)] placeholder: &'static str,
    #[prop(optional)] multiline: bool,
    #[prop(optional)] numeric: bool,
    #[prop(optional)] hint: &'static str,
) -> impl IntoView {
    let draft = form.draft;
    let messages = form.messages_signal(key);
    let invalid = move || !messages.with(Vec::is_empty);
    let value = move || draft.with(get);
    let errors_id = format!("{id}-errors");
    let input = if multiline {
        view! {
            <textarea id=id.clone() rows="3" placeholder=placeholder aria-invalid=move || invalid().to_string()
                aria-describedby=errors_id.clone()
                prop:value=value
                on:input=move |ev| draft.update(|d| set(d, event_target_value(&ev)))></textarea>
        }
        .into_any()
    } else {
        view! {
            <input id=id.clone() type="text" placeholder=placeholder aria-invalid=move || invalid().to_string()
                aria-describedby=errors_id.clone()
                inputmode=if numeric { "numeric" } else { "text" }
                prop:value=value
                on:input=move |ev| draft.update(|d| set(d, event_target_value(&ev))) />
        }
        .into_any()
    };
    view! {
        <div class="field" class:invalid=invalid>
            <label for=id.clone()>{label}</label>
            {input}
            {(!hint.is_empty()).then(|| view! { <small class="muted">{hint}</small> })}
            <FieldErrors messages=messages id=errors_id />
        </div>
    }
}

/// A select with its label.
#[component]
pub fn SelectField(
    form: Form,
    #[prop(into)] id: String,
    #[prop(into)] label: String,
    /// (value, text) pairs.
    options: Signal<Vec<(String, String)>>,
    get: impl Fn(&Draft) -> String + Send + Sync + Copy + 'static,
    set: impl Fn(&mut Draft, String) + Send + Sync + Copy + 'static,
    #[prop(optional, into)] key: String,
) -> impl IntoView {
    let draft = form.draft;
    let messages = form.messages_signal(if key.is_empty() {
        format!("-{id}")
    } else {
        key
    });
    let errors_id = format!("{id}-errors");
    view! {
        <div class="field">
            <label for=id.clone()>{label}</label>
            <select id=id.clone()
                prop:value=move || draft.with(get)
                on:change=move |ev| draft.update(|d| set(d, event_target_value(&ev)))>
                {move || {
                    let current = draft.with(get);
                    options.get().into_iter().map(|(value, text)| {
                        let selected = value == current;
                        view! { <option value=value selected=selected>{text}</option> }
                    }).collect_view()
                }}
            </select>
            <FieldErrors messages=messages id=errors_id />
        </div>
    }
}

/// A checkbox with its label.
#[component]
pub fn CheckField(
    form: Form,
    #[prop(into)] id: String,
    #[prop(into)] label: String,
    get: impl Fn(&Draft) -> bool + Send + Sync + Copy + 'static,
    set: impl Fn(&mut Draft, bool) + Send + Sync + Copy + 'static,
) -> impl IntoView {
    let draft = form.draft;
    view! {
        <div class="field check">
            <input id=id.clone() type="checkbox"
                prop:checked=move || draft.with(get)
                on:change=move |ev| draft.update(|d| set(d, event_target_checked(&ev))) />
            <label for=id>{label}</label>
        </div>
    }
}
