//! `grayline-field`: the field test of automated rollouts at the field's own rates and step
//! lengths (`bench/field-rollouts` runs it on release binaries). Prints one table per round
//! and the totals.
//!
//! ```text
//! grayline-field [--profile field|sized] [--rounds N] [--seed N] [--only case,case]
//! ```
//! `field`: ten services at 40 requests/s each, 1 % errors, 10 % → 25 % → 50 %, 20 to 60 s
//! a step, everything else default — the rollouts the field tried. `sized`: the same mix at
//! 200 requests/s with steps of up to five minutes, long enough for safety to be shown.

use std::time::Duration;

use grayline_tests::field::{self, Case, Outcome, SharedOutage};
use serde_json::{Value, json};

fn plan(min: u32, max: u32) -> Value {
    let steps: Vec<Value> = [1000, 2500, 5000]
        .iter()
        .map(|w| json!({"weight": w, "min_seconds": min, "max_seconds": max}))
        .collect();
    json!({ "steps": steps })
}

fn cases(profile: &str) -> Vec<Case> {
    let (rps, p) = match profile {
        "field" => (40.0, plan(20, 60)),
        _ => (200.0, plan(30, 300)),
    };
    let e = 0.01;
    let outage = |start: u64, seconds: u64, error_rate: f64| SharedOutage {
        start,
        seconds,
        error_rate,
    };
    let shared = |name: &str, o: SharedOutage| Case {
        outage: Some(o),
        ..Case::healthy(name, rps, e, p.clone())
    };
    vec![
        Case::healthy("healthy-1", rps, e, p.clone()),
        Case::healthy("healthy-2", rps, e, p.clone()),
        shared("outage-40pct-15s", outage(15, 15, 0.4)),
        shared("outage-40pct-15s-late", outage(45, 15, 0.4)),
        shared("outage-80pct-60s", outage(15, 60, 0.8)),
        shared("outage-10pct-5min", outage(15, 300, 0.1)),
        Case::errors("errors-3x", rps, e, 0.03, p.clone()),
        Case::errors("errors-10x", rps, e, 0.10, p.clone()),
        Case::slower("latency-plus-30ms", rps, e, 30, p.clone()),
        Case::healthy("thin-5rps", 5.0, e, p.clone()),
    ]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut profile, mut rounds, mut seed) = ("field".to_string(), 1u32, 20_261_205u64);
    let mut only: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--profile" => profile = value()?,
            "--rounds" => rounds = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--only" => only = value()?.split(',').map(str::to_string).collect(),
            other => anyhow::bail!(
                "unknown argument {other}: use --profile field|sized, --rounds N, --seed N, --only case,case"
            ),
        }
    }
    anyhow::ensure!(
        profile == "field" || profile == "sized",
        "--profile: `{profile}` is not field or sized"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut all: Vec<Outcome> = Vec::new();
    for round in 0..rounds {
        let seed = seed.wrapping_add(u64::from(round) * 1000);
        println!("round {} of {rounds} ({profile}, seed {seed})", round + 1);
        let mut cases = cases(&profile);
        if !only.is_empty() {
            cases.retain(|c| only.contains(&c.name));
            anyhow::ensure!(!cases.is_empty(), "--only: no case of that name");
        }
        let out = runtime.block_on(field::run(&cases, seed, Duration::from_secs(3600)));
        println!("{}", field::report(&out));
        all.extend(out);
    }
    println!("all rounds:\n{}", field::report(&all));
    Ok(())
}
