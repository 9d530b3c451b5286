//! Grayline's web console: a Leptos app rendered in the browser, talking only to the
//! server's documented JSON API. The request simulator runs the routing crate compiled to
//! wasm — the very engine the proxies run.

mod api;
mod app;
mod components;
mod diff;
mod format;
mod live;
mod pages;
mod session;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
