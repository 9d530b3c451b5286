//! `grayline-stats-load`: many simulated proxies reporting statistics to a running server at
//! once, over the real statistics stream: each sends one numbered report per interval (with
//! a latency histogram per version, as a proxy does) and waits for its acknowledgement. The
//! server acknowledges a report only once it is on disk, so this measures what durable
//! statistics cost: acknowledged reports per second and the time from send to ACK. Prints
//! one JSON object.

use std::time::{Duration, Instant};

use clap::Parser;
use grayline_proto::v1 as pb;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

#[derive(Debug, Parser)]
struct Args {
    /// The server's gRPC address, or several separated by commas (replicas): proxy `i`
    /// reports to the `i`-th modulo their number.
    #[arg(long)]
    server: String,
    #[arg(long)]
    proxy_token_file: std::path::PathBuf,
    /// Simulated proxies, each on its own connection.
    #[arg(long, default_value = "100")]
    proxies: usize,
    /// Versions per report.
    #[arg(long, default_value = "3")]
    versions: usize,
    #[arg(long, default_value = "20")]
    seconds: u64,
    /// Milliseconds between a proxy's reports (a real proxy: 1000).
    #[arg(long, default_value = "1000")]
    interval_ms: u64,
}

fn histogram() -> Vec<u8> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).expect("bounds");
    for i in 0..200u64 {
        h.record(500 + (i * 37) % 5000).expect("in bounds");
    }
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(&h, &mut bytes)
        .expect("serialize");
    bytes
}

async fn proxy(args: &Args, id: usize, token: String) -> anyhow::Result<Vec<Duration>> {
    let servers: Vec<&str> = args.server.split(',').collect();
    let channel = Endpoint::from_shared(servers[id % servers.len()].to_string())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut client = pb::stats_client::StatsClient::with_interceptor(
        channel,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        },
    );
    let (tx, rx) = mpsc::channel(4);
    let mut acks = client.report(ReceiverStream::new(rx)).await?.into_inner();
    let bytes = histogram();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut every = tokio::time::interval(Duration::from_millis(args.interval_ms));
    let mut latencies = Vec::new();
    let mut sequence = 0;
    while Instant::now() < deadline {
        every.tick().await;
        sequence += 1;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let report = pb::StatsReport {
            proxy_id: format!("load-{id}"),
            boot_id: format!("b{id}"),
            sequence,
            time_unix_ms: now_ms,
            versions: (0..args.versions)
                .map(|v| pb::VersionStats {
                    service: "load".into(),
                    version: format!("v{v}"),
                    status_2xx: 197,
                    status_5xx: 3,
                    latency_histogram: bytes.clone(),
                    ..Default::default()
                })
                .collect(),
        };
        let sent = Instant::now();
        tx.send(report).await?;
        match acks.next().await {
            Some(Ok(ack)) if ack.sequence == sequence => latencies.push(sent.elapsed()),
            other => anyhow::bail!("proxy {id}: unexpected answer {other:?}"),
        }
    }
    Ok(latencies)
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Box::leak(Box::new(Args::parse()));
    let token = std::fs::read_to_string(&args.proxy_token_file)?
        .trim()
        .to_string();
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.proxies)
        .map(|id| {
            let (args, token) = (&*args, token.clone());
            tokio::spawn(async move { proxy(args, id, token).await })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "proxies": args.proxies,
            "versions_per_report": args.versions,
            "interval_ms": args.interval_ms,
            "reports_acked": all.len(),
            "acked_per_second": all.len() as f64 / elapsed,
            "ack_ms_p50": quantile(&all, 0.5),
            "ack_ms_p99": quantile(&all, 0.99),
            "ack_ms_max": quantile(&all, 1.0),
        })
    );
    Ok(())
}
