//! A service's split as one horizontal bar, a segment per version.

use grayline_routing::Service;
use leptos::prelude::*;

use crate::format::{default_split, share, version_color};

#[component]
pub fn SplitBar(service: Service) -> impl IntoView {
    let shares = default_split(&service);
    let label = shares
        .iter()
        .map(|(v, bp)| format!("{v} {}", share(*bp)))
        .collect::<Vec<_>>()
        .join(", ");
    let segments = shares
        .into_iter()
        .map(|(v, bp)| {
            let style = format!(
                "width: {}%; background: {}",
                f64::from(bp) / 100.0,
                version_color(&service, &v)
            );
            let text = format!("{v} {}", share(bp));
            let title = text.clone();
            view! { <div class="segment" style=style title=title><span>{text}</span></div> }
        })
        .collect_view();
    view! { <div class="split-bar" role="img" aria-label=format!("Split: {label}")>{segments}</div> }
}
