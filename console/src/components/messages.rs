//! Error and success messages next to the fields and actions they are about.

use leptos::prelude::*;

/// The messages for one field, or nothing.
#[component]
pub fn FieldErrors(
    #[prop(into)] messages: Signal<Vec<String>>,
    #[prop(into)] id: String,
) -> impl IntoView {
    view! {
        {move || {
            let list = messages.get();
            (!list.is_empty()).then(|| view! {
                <ul class="field-errors" role="alert" id=id.clone()>
                    {list.into_iter().map(|m| view! { <li>{m}</li> }).collect_view()}
                </ul>
            })
        }}
    }
}
