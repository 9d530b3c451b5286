//! `grayline-traffic`: gentle, realistic traffic for the demo. A pool of simulated users,
//! each with a fixed browser (from real User-Agent strings) and a cookie jar that keeps the
//! sticky cookie the proxy hands out, sends requests through the proxy at a steady rate and
//! prints, every few seconds, which versions answered.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use grayline_routing::useragent::samples::SAMPLES;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, Parser)]
#[command(name = "grayline-traffic", version)]
struct Args {
    /// The proxy to send through, `host:port`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    /// `Host` header of the requests (which service they belong to).
    #[arg(long, default_value = "shop.demo")]
    host: String,
    /// Requests per second.
    #[arg(long, default_value = "20")]
    rps: f64,
    /// Simulated users.
    #[arg(long, default_value = "200")]
    users: usize,
    /// Share of users who send `x-canary: 1` (0 to 1).
    #[arg(long, default_value = "0.05")]
    canary_header_share: f64,
    /// Seconds between summaries on stderr.
    #[arg(long, default_value = "10")]
    report_every: u64,
}

struct User {
    agent: &'static str,
    cookies: Vec<String>,
    canary: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rps > 0.0 && args.rps <= 10_000.0,
        "--rps must be in (0, 10000]"
    );
    let browsers: Vec<&str> = SAMPLES
        .iter()
        .map(|s| s.0)
        .filter(|ua| ua.starts_with("Mozilla/5.0 ("))
        .collect();
    let mut users: Vec<User> = (0..args.users.max(1))
        .map(|_| User {
            agent: browsers[fastrand::usize(..browsers.len())],
            cookies: Vec::new(),
            canary: fastrand::f64() < args.canary_header_share,
        })
        .collect();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rps));
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_report = tokio::time::Instant::now();
    eprintln!(
        "sending {} requests/s for host {} through {}",
        args.rps, args.host, args.target
    );
    loop {
        ticker.tick().await;
        let user = &mut users[fastrand::usize(..args.users.max(1))];
        let paths = ["/", "/products", "/cart", "/api/items?page=2"];
        let mut req = Request::get(format!(
            "http://{}{}",
            args.target,
            paths[fastrand::usize(..paths.len())]
        ))
        .header(header::HOST, &args.host)
        .header(header::USER_AGENT, user.agent);
        if !user.cookies.is_empty() {
            req = req.header(header::COOKIE, user.cookies.join("; "));
        }
        if user.canary {
            req = req.header("x-canary", "1");
        }
        let outcome = match client.request(req.body(Empty::new())?).await {
            Ok(resp) => {
                for c in resp.headers().get_all(header::SET_COOKIE) {
                    if let Some(pair) = c.to_str().ok().and_then(|c| c.split(';').next()) {
                        user.cookies.push(pair.to_string());
                    }
                }
                let version = resp
                    .headers()
                    .get("x-grayline-version")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                match version {
                    Some(v) if status.is_success() => v,
                    _ => format!("HTTP {}", status.as_u16()),
                }
            }
            Err(_) => "connection error".to_string(),
        };
        *counts.entry(outcome).or_default() += 1;
        if last_report.elapsed() >= Duration::from_secs(args.report_every) {
            let line: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            eprintln!("last {} s: {}", args.report_every, line.join(", "));
            counts.clear();
            last_report = tokio::time::Instant::now();
        }
    }
}
