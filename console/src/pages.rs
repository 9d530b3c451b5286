//! One module per page.

pub mod history;
pub mod overview;
pub mod service;
pub mod wizard;

use std::future::Future;

use leptos::prelude::*;

/// Runs `f` now and then every `every_ms` while the calling component is mounted.
pub fn poll<F, Fut>(every_ms: u32, mut f: F)
where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (task, abort) = futures::future::abortable(async move {
        loop {
            f().await;
            gloo_timers::future::TimeoutFuture::new(every_ms).await;
        }
    });
    leptos::task::spawn_local(async move {
        let _ = task.await;
    });
    on_cleanup(move || abort.abort());
}

/// How many of the proxies that serve `service` run `revision` or newer: (up to date, total).
pub fn proxies_current(
    proxies: &[grayline_routing::api::ProxyStatus],
    service: &str,
    revision: u64,
) -> (usize, usize) {
    let serving: Vec<_> = proxies
        .iter()
        .filter(|p| {
            p.connected && (p.services.is_empty() || p.services.iter().any(|s| s == service))
        })
        .collect();
    let current = serving
        .iter()
        .filter(|p| p.applied_revision >= revision)
        .count();
    (current, serving.len())
}
