//! How numbers, shares and times read in the console.

use grayline_routing::{Route, Service};

/// Basis points as a percentage: `1000` → `10 %`, `1` → `0.01 %`.
pub fn share(bp: u32) -> String {
    grayline_routing::engine::percent(u64::from(bp))
}

pub fn rps(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}/s")
    } else {
        format!("{v:.1}/s")
    }
}

pub fn percent(v: f64) -> String {
    format!("{v:.1} %")
}

pub fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// A timestamp in the browser's locale.
pub fn time(unix_ms: i64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(unix_ms as f64));
    String::from(date.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
}

/// What the default route does, as (version, basis points), in the service's version order.
pub fn default_split(s: &Service) -> Vec<(String, u32)> {
    let mut shares: Vec<(String, u32)> = match &s.policy.default_route {
        None => vec![(s.stable.clone(), 10_000)],
        Some(Route::Version(v)) => vec![(v.clone(), 10_000)],
        Some(Route::Split(split)) => split
            .weights
            .iter()
            .filter(|w| w.weight > 0)
            .map(|w| (w.version.clone(), w.weight))
            .collect(),
    };
    let order = |name: &str| {
        s.versions
            .iter()
            .position(|v| v.name == name)
            .unwrap_or(usize::MAX)
    };
    shares.sort_by_key(|(v, _)| order(v));
    shares
}

/// A stable color per version position.
pub fn color(index: usize) -> &'static str {
    const PALETTE: [&str; 8] = [
        "#3b6fd8", "#e0821b", "#2a9d6b", "#c8475b", "#7b5cc4", "#8a8f2a", "#1f9bb3", "#b0652f",
    ];
    PALETTE[index % PALETTE.len()]
}

pub fn version_color(s: &Service, version: &str) -> &'static str {
    color(
        s.versions
            .iter()
            .position(|v| v.name == version)
            .unwrap_or(0),
    )
}
