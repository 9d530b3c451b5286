//! A small SVG line chart of per-second values, drawn by the app (no chart library).

use leptos::prelude::*;

/// One line: label, color, (unix second, value) points.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub color: &'static str,
    pub points: Vec<(i64, f64)>,
}

const W: f64 = 600.0;
const H: f64 = 150.0;
const PAD_LEFT: f64 = 48.0;
const PAD_BOTTOM: f64 = 18.0;

#[component]
pub fn LineChart(
    #[prop(into)] title: String,
    lines: Signal<Vec<Line>>,
    /// Formats a value for the axis.
    format: fn(f64) -> String,
    /// Smallest top of the y axis.
    #[prop(default = 1.0)]
    min_top: f64,
) -> impl IntoView {
    let geometry = Memo::new(move |_| {
        lines.with(|lines| {
            let (mut t0, mut t1, mut top) = (i64::MAX, i64::MIN, min_top);
            for l in lines {
                for &(t, v) in &l.points {
                    t0 = t0.min(t);
                    t1 = t1.max(t);
                    top = top.max(v);
                }
            }
            if t0 > t1 {
                return None;
            }
            let span = (t1 - t0).max(1) as f64;
            let top = top * 1.1;
            let x = move |t: i64| PAD_LEFT + (t - t0) as f64 / span * (W - PAD_LEFT - 4.0);
            let y = move |v: f64| (H - PAD_BOTTOM) - v / top * (H - PAD_BOTTOM - 6.0);
            let paths: Vec<(String, &'static str, String)> = lines
                .iter()
                .map(|l| {
                    let pts = l
                        .points
                        .iter()
                        .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                        .collect::<Vec<_>>()
                        .join(" ");
                    (l.label.clone(), l.color, pts)
                })
                .collect();
            Some((paths, top, t1 - t0))
        })
    });
    let description = title.clone();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {W} {H}") preserveAspectRatio="none" role="img" aria-label=description>
                <line x1=PAD_LEFT y1=H - PAD_BOTTOM x2=W y2=H - PAD_BOTTOM class="axis" />
                <line x1=PAD_LEFT y1="4" x2=PAD_LEFT y2=H - PAD_BOTTOM class="axis" />
                {move || geometry.get().map(|(paths, top, span)| view! {
                    <text x=PAD_LEFT - 4.0 y="12" class="tick" text-anchor="end">{format(top)}</text>
                    <text x=PAD_LEFT - 4.0 y=H - PAD_BOTTOM class="tick" text-anchor="end">"0"</text>
                    <text x=PAD_LEFT y=H - 4.0 class="tick">{format!("-{span}s")}</text>
                    <text x=W - 4.0 y=H - 4.0 class="tick" text-anchor="end">"now"</text>
                    {paths.into_iter().map(|(label, color, pts)| view! {
                        <polyline points=pts fill="none" stroke=color stroke-width="2" vector-effect="non-scaling-stroke">
                            <title>{label}</title>
                        </polyline>
                    }).collect_view()}
                })}
            </svg>
            <div class="legend">
                {move || lines.get().into_iter().map(|l| view! {
                    <span><i style=format!("background: {}", l.color)></i>{l.label}</span>
                }).collect_view()}
            </div>
        </figure>
    }
}
