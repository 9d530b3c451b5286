//! Editing a weighted split: a slider and a percentage field per version (0.01 % steps),
//! with the stable version optionally taking whatever the others leave.

use leptos::prelude::*;

use crate::components::messages::FieldErrors;
use crate::format::share;

#[component]
pub fn WeightsEditor(
    /// Prefix of the element ids: `{id}-{version}-slider`, `{id}-{version}-percent`.
    #[prop(into)]
    id: String,
    /// Effective weights in basis points, in version order.
    weights: Signal<Vec<(String, u32)>>,
    stable: Signal<String>,
    set_weight: Callback<(String, u32)>,
    takes_rest: Signal<bool>,
    set_takes_rest: Callback<bool>,
    errors: Signal<Vec<String>>,
    /// Offer "the stable version takes the rest" (a rule's own split does not).
    #[prop(default = true)]
    offer_rest: bool,
    #[prop(default = "Traffic ratio")] legend: &'static str,
) -> impl IntoView {
    let total = move || weights.with(|w| w.iter().map(|(_, bp)| u64::from(*bp)).sum::<u64>());
    // Rows are keyed by version, so dragging a slider never rebuilds the row under the pointer.
    let names =
        Memo::new(move |_| weights.with(|w| w.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()));
    let (total_id, errors_id, rest_id) = (
        format!("{id}-total"),
        format!("{id}-errors"),
        format!("{id}-rest"),
    );
    let row_id = StoredValue::new(id.clone());
    view! {
        <fieldset class="weights" id=id.clone()>
            <legend>{legend}</legend>
            {offer_rest.then(|| view! {
                <div class="field check">
                    <input type="checkbox" id=rest_id.clone()
                        prop:checked=move || takes_rest.get()
                        on:change=move |ev| set_takes_rest.run(event_target_checked(&ev)) />
                    <label for=rest_id.clone()>"The stable version takes the rest"</label>
                </div>
            })}
            <For each=move || names.get() key=|n| n.clone() children=move |version: String| {
                let key = StoredValue::new(version.clone());
                let bp = move || key.with_value(|v| weights.with(|w| w.iter().find(|(n, _)| n == v).map_or(0, |(_, bp)| *bp)));
                let is_stable = move || key.with_value(|v| stable.with(|s| s == v));
                let locked = move || is_stable() && takes_rest.get();
                let id = row_id.get_value();
                let percent_id = format!("{id}-{version}-percent");
                view! {
                    <div class="weight-row">
                        <label for=percent_id.clone()>{version.clone()}{move || is_stable().then_some(" (stable)")}</label>
                        <input type="range" min="0" max="10000" step="1" id=format!("{id}-{version}-slider")
                            aria-label=format!("{version} share, in basis points")
                            prop:value=move || bp().to_string() disabled=locked
                            on:input=move |ev| {
                                let v = event_target_value(&ev).parse::<u32>().unwrap_or(0).min(10_000);
                                set_weight.run((key.get_value(), v));
                            } />
                        <span class="percent-input">
                            <input type="number" min="0" max="100" step="0.01" id=percent_id
                                prop:value=move || format!("{:.2}", f64::from(bp()) / 100.0) disabled=locked
                                on:change=move |ev| {
                                    // An emptied field is not a zero; wait for a number.
                                    if let Ok(pct) = event_target_value(&ev).trim().parse::<f64>() {
                                        let v = (pct * 100.0).round().clamp(0.0, 10_000.0) as u32;
                                        set_weight.run((key.get_value(), v));
                                    }
                                } />
                            " %"
                        </span>
                    </div>
                }
            } />
            <p class="total" class:error=move || total() != 10_000 id=total_id>
                {move || format!("Total: {}", share(total().min(u64::from(u32::MAX)) as u32))}
                {move || (total() != 10_000).then_some(" — the shares must add up to 100 %")}
            </p>
            <FieldErrors messages=errors id=errors_id />
        </fieldset>
    }
}
