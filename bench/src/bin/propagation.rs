//! `grayline-propagation`: connects many simulated proxies to a running server — each with
//! its own connection, speaking the real config stream (Hello, push, ACK) — then makes policy
//! changes one at a time and measures, for each, the time from the write being acknowledged
//! to the last proxy having ACKed it. Also reads the server's resident memory before and
//! after the proxies connect. With several servers (replicas on one etcd), the proxies are
//! spread over them round-robin and the writes go through the first, so the time includes
//! the change reaching the other replicas. Then the same for instance registrations (v2 of
//! the bench service is the instances tagged `bench-v2`): from a registration being
//! acknowledged to the last proxy having ACKed the push that lists it — the path a scale-out
//! takes, against the config write's. With `--churn-seconds`, registrations and
//! deregistrations at `--churn-rate` per second: the server's CPU and the pushes each proxy
//! got per second (coalescing bounds them). With `--catalog N`, N more services (two versions,
//! a sticky 10 % split) are made first, and the bytes each change cost on the wire are
//! measured: the simulated proxies take incremental pushes (as `grayline-proxy` does), or
//! full ones with `--full`. Prints one JSON object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use grayline_proto::v1 as pb;
use grayline_proto::v1::proxy_message::Kind;
use grayline_routing::{Policy, Route, Service, Split, Version, Weight};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
struct Args {
    /// The server's gRPC address; several, comma-separated, for replicas of one store.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    #[arg(long)]
    admin_token_file: std::path::PathBuf,
    #[arg(long)]
    proxy_token_file: std::path::PathBuf,
    /// Simulated proxies.
    #[arg(long, default_value = "100")]
    proxies: usize,
    /// Policy changes to measure.
    #[arg(long, default_value = "50")]
    changes: u32,
    /// The servers' process ids, to read their memory (comma-separated).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Seconds of registration churn to measure after the changes (0: none).
    #[arg(long, default_value = "0")]
    churn_seconds: u64,
    /// Registrations plus deregistrations per second during the churn.
    #[arg(long, default_value = "100")]
    churn_rate: u32,
    /// Milliseconds between one change reaching every proxy and the next change (the server
    /// holds instances-only pushes to one per proxy per 100 ms, so each change is measured
    /// on its own, as a scale event is).
    #[arg(long, default_value = "200")]
    spacing_ms: u64,
    /// Services to have in the catalog besides the bench service (made if missing).
    #[arg(long, default_value = "0")]
    catalog: usize,
    /// The simulated proxies take only full pushes (as proxies before incremental pushes).
    #[arg(long)]
    full: bool,
}

/// One of the catalog's services: two versions, a sticky 10 % split.
fn catalog_service(i: usize) -> Service {
    let name = format!("cat-{i:05}");
    let mut s = Service::single(&name, Version::new("v1", &["127.0.0.1:9"]));
    s.versions.push(Version::new("v2", &["127.0.0.1:10"]));
    s.hosts = vec![format!("{name}.example")];
    s.policy = policy(1000);
    if let Some(Route::Split(split)) = &mut s.policy.default_route {
        split.sticky = Some(grayline_routing::StickyKey::Header("x-user".into()));
    }
    s
}

/// Makes the catalog's services that are missing, 8 writes at a time.
async fn make_catalog(server: &str, token: &str, n: usize) -> anyhow::Result<()> {
    let existing: std::collections::HashSet<String> =
        pb::config_api_client::ConfigApiClient::with_interceptor(
            connect(server).await?,
            bearer(token)?,
        )
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner()
        .services
        .into_iter()
        .filter_map(|r| r.service.map(|s| s.name))
        .collect();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !existing.contains(&format!("cat-{i:05}")))
        .collect();
    let channel = connect(server).await?;
    let writes = futures::stream::iter(missing).map(|i| {
        let mut client = pb::config_api_client::ConfigApiClient::with_interceptor(
            channel.clone(),
            bearer(token).expect("token"),
        );
        async move {
            client
                .create_service(pb::CreateServiceRequest {
                    dry_run: false,
                    service: Some((&catalog_service(i)).into()),
                })
                .await
                .with_context(|| format!("creating cat-{i:05}"))
        }
    });
    let mut writes = std::pin::pin!(writes.buffer_unordered(8));
    while let Some(done) = writes.next().await {
        done?;
    }
    Ok(())
}

/// What a simulated proxy saw in one push: the revision, how many instances of the bench
/// service it lists (for a push that lists them), when, its size on the wire and the
/// services it carried.
type Seen = (u64, Option<usize>, Instant, usize, usize);

/// The CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn bearer(
    token: &str,
) -> anyhow::Result<
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    })
}

async fn connect(server: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(server.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

/// One simulated proxy: ACKs every push at once and reports (revision, when).
async fn proxy(
    channel: Channel,
    token: String,
    id: usize,
    incremental: bool,
    acks: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<()> {
    let mut client =
        pb::proxy_config_client::ProxyConfigClient::with_interceptor(channel, bearer(&token)?);
    let (tx, rx) = mpsc::channel(4);
    tx.send(pb::ProxyMessage {
        kind: Some(Kind::Hello(pb::Hello {
            proxy_id: format!("sim-{id}"),
            last_applied_revision: 0,
            services: vec![],
            proxy_version: "bench".into(),
            incremental,
            ..Default::default()
        })),
    })
    .await?;
    let mut pushes = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut begun = None;
    let mut bytes = 0;
    while let Some(part) = pushes.message().await? {
        bytes += prost::Message::encoded_len(&part);
        let Some(push) = grayline_proto::parts::join(&mut begun, part) else {
            continue;
        };
        let bytes = std::mem::take(&mut bytes);
        let carried = push.services.len();
        tx.send(pb::ProxyMessage {
            kind: Some(Kind::Ack(pb::Ack {
                nonce: push.nonce,
                revision: push.revision,
                warning: String::new(),
            })),
        })
        .await?;
        let listed = push
            .instances
            .iter()
            .find(|l| l.service == "bench")
            .map(|l| l.instances.len())
            .or((!push.instances_only && !push.incremental).then_some(0));
        let _ = acks.send((push.revision, listed, Instant::now(), bytes, carried));
    }
    Ok(())
}

fn policy(canary: u32) -> Policy {
    Policy {
        rules: vec![],
        default_route: Some(Route::Split(Split {
            weights: vec![
                Weight {
                    version: "v1".into(),
                    weight: 10_000 - canary,
                },
                Weight {
                    version: "v2".into(),
                    weight: canary,
                },
            ],
            sticky: None,
        })),
        default_mirror: None,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin_token = std::fs::read_to_string(&args.admin_token_file)?
        .trim()
        .to_string();
    let proxy_token = std::fs::read_to_string(&args.proxy_token_file)?
        .trim()
        .to_string();
    if args.catalog > 0 {
        let t0 = Instant::now();
        make_catalog(&args.server[0], &admin_token, args.catalog).await?;
        eprintln!(
            "catalog of {} services ready in {:.1} s",
            args.catalog,
            t0.elapsed().as_secs_f64()
        );
    }
    let mut admin = pb::config_api_client::ConfigApiClient::with_interceptor(
        connect(&args.server[0]).await?,
        bearer(&admin_token)?,
    );

    let mut service = Service::single("bench", Version::new("v1", &["127.0.0.1:9"]));
    service.versions.push(Version::tagged("v2", "bench-v2"));
    service.hosts = vec!["bench.example".into()];
    let existing = admin
        .get_service(pb::GetServiceRequest {
            name: "bench".into(),
        })
        .await
        .is_ok();
    if !existing {
        admin
            .create_service(pb::CreateServiceRequest {
                dry_run: false,
                service: Some((&service).into()),
            })
            .await
            .context("creating the bench service")?;
    }
    let revision = admin
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner()
        .revision;

    let rss = |pids: &[u32]| -> Option<u64> { pids.iter().map(|p| rss_kb(*p)).sum() };
    let rss_before = rss(&args.server_pid);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    // Connect at most 64 at a time; each proxy then holds its own connection open.
    let connecting = Arc::new(tokio::sync::Semaphore::new(64));
    for id in 0..args.proxies {
        let server = args.server[id % args.server.len()].clone();
        let (token, acks) = (proxy_token.clone(), ack_tx.clone());
        let incremental = !args.full;
        let connecting = connecting.clone();
        tokio::spawn(async move {
            let channel = {
                let _permit = connecting.acquire().await;
                connect(&server).await
            };
            let result = match channel {
                Ok(channel) => proxy(channel, token, id, incremental, acks).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                eprintln!("simulated proxy {id}: {e:#}");
            }
        });
    }
    drop(ack_tx);
    // Every proxy ACKs the current revision first.
    let mut initial = 0;
    let mut first_push_bytes = 0;
    while initial < args.proxies {
        let (r, _, _, bytes, _) = tokio::time::timeout(Duration::from_secs(300), ack_rx.recv())
            .await
            .context("waiting for the proxies to connect")?
            .context("all proxies failed")?;
        if r >= revision {
            initial += 1;
            first_push_bytes = first_push_bytes.max(bytes);
        }
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss(&args.server_pid);

    let mut latencies = Vec::new();
    let mut writes = Vec::new();
    // Bytes pushed to all proxies for each change, and services per push.
    let mut change_bytes = Vec::new();
    let mut change_services = Vec::new();
    let spacing = Duration::from_millis(args.spacing_ms);
    for i in 0..args.changes {
        tokio::time::sleep(spacing).await;
        let t0 = Instant::now();
        let r = admin
            .set_policy(pb::SetPolicyRequest {
                service: "bench".into(),
                policy: Some((&policy(100 + i)).into()),
                expected_revision: None,
            })
            .await?
            .into_inner()
            .revision;
        let acknowledged = Instant::now();
        writes.push((acknowledged - t0).as_secs_f64() * 1000.0);
        let mut seen = 0;
        let mut last = acknowledged;
        let (mut bytes, mut carried) = (0, 0);
        while seen < args.proxies {
            let (rev, _, at, b, c) = tokio::time::timeout(Duration::from_secs(60), ack_rx.recv())
                .await
                .context("waiting for ACKs")?
                .context("proxies gone")?;
            bytes += b;
            carried += c;
            if rev >= r {
                seen += 1;
                last = last.max(at);
            }
        }
        change_bytes.push(bytes as f64);
        change_services.push(carried as f64 / args.proxies as f64);
        latencies.push((last.saturating_duration_since(acknowledged)).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    writes.sort_by(f64::total_cmp);
    change_bytes.sort_by(f64::total_cmp);
    change_services.sort_by(f64::total_cmp);

    // Instance registrations: each one a new instance of v2, seen by every proxy.
    let mut registry = pb::registry_client::RegistryClient::with_interceptor(
        connect(&args.server[0]).await?,
        bearer(&admin_token)?,
    );
    let address = |i: u32| {
        format!(
            "10.{}.{}.{}:80",
            200 + i / 62_500,
            (i / 250) % 250,
            i % 250 + 1
        )
    };
    // Instances an earlier run left (their TTL is long): this run's come after them.
    let before = registry
        .list_instances(pb::ListInstancesRequest {
            service: "bench".into(),
        })
        .await?
        .into_inner()
        .instances
        .len() as u32;
    let mut instance_latencies = Vec::new();
    let mut registrations = Vec::new();
    for i in before..before + args.changes {
        tokio::time::sleep(spacing).await;
        let registered = i as usize + 1;
        let t0 = Instant::now();
        registry
            .register(pb::RegisterRequest {
                service: "bench".into(),
                tag: "bench-v2".into(),
                address: address(i),
                metadata: Default::default(),
                ttl_seconds: Some(600),
            })
            .await?;
        let acknowledged = Instant::now();
        registrations.push((acknowledged - t0).as_secs_f64() * 1000.0);
        let mut seen = 0;
        let mut last = acknowledged;
        while seen < args.proxies {
            let (_, listed, at, _, _) =
                tokio::time::timeout(Duration::from_secs(60), ack_rx.recv())
                    .await
                    .context("waiting for instance ACKs")?
                    .context("proxies gone")?;
            if listed.is_some_and(|n| n >= registered) {
                seen += 1;
                last = last.max(at);
            }
        }
        instance_latencies
            .push((last.saturating_duration_since(acknowledged)).as_secs_f64() * 1000.0);
    }
    instance_latencies.sort_by(f64::total_cmp);
    registrations.sort_by(f64::total_cmp);

    // Churn: register and deregister at the rate, and count what the proxies get.
    let churn = if args.churn_seconds > 0 {
        while ack_rx.try_recv().is_ok() {}
        let cpu_before: Option<u64> = args.server_pid.iter().map(|p| cpu_ticks(*p)).sum();
        let started = Instant::now();
        let mut every =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.churn_rate)));
        let mut n = 0u32;
        let mut ops = 0u64;
        while started.elapsed() < Duration::from_secs(args.churn_seconds) {
            every.tick().await;
            // Odd steps take back what the step before registered: the set stays small.
            let a = address(100_000 + n / 2);
            if n.is_multiple_of(2) {
                registry
                    .register(pb::RegisterRequest {
                        service: "bench".into(),
                        tag: "bench-v2".into(),
                        address: a,
                        metadata: Default::default(),
                        ttl_seconds: Some(600),
                    })
                    .await?;
            } else {
                registry
                    .deregister(pb::InstanceKey {
                        service: "bench".into(),
                        address: a,
                    })
                    .await?;
            }
            n += 1;
            ops += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_after: Option<u64> = args.server_pid.iter().map(|p| cpu_ticks(*p)).sum();
        let mut pushes = 0u64;
        while ack_rx.try_recv().is_ok() {
            pushes += 1;
        }
        let ticks_per_s = 100.0;
        Some(serde_json::json!({
            "seconds": elapsed,
            "operations_per_s": ops as f64 / elapsed,
            "pushes_per_proxy_per_s": pushes as f64 / args.proxies as f64 / elapsed,
            "server_cpu_percent": match (cpu_before, cpu_after) {
                (Some(a), Some(b)) => Some((b - a) as f64 / ticks_per_s / elapsed * 100.0),
                _ => None,
            },
        }))
    } else {
        None
    };
    let per_proxy = match (rss_before, rss_after) {
        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / args.proxies as f64),
        _ => None,
    };
    let out = serde_json::json!({
        "proxies": args.proxies,
        "servers": args.server.len(),
        "changes": args.changes,
        "catalog": args.catalog,
        "incremental": !args.full,
        "first_push_bytes": first_push_bytes,
        "bytes_per_change_all_proxies_p50": percentile(&change_bytes, 0.50),
        "bytes_per_change_per_proxy_p50": percentile(&change_bytes, 0.50) / args.proxies as f64,
        "services_per_push_p50": percentile(&change_services, 0.50),
        "connect_all_s": connect_time.as_secs_f64(),
        "propagation_p50_ms": percentile(&latencies, 0.50),
        "propagation_p99_ms": percentile(&latencies, 0.99),
        "propagation_max_ms": latencies.last().copied().unwrap_or(0.0),
        "write_p50_ms": percentile(&writes, 0.50),
        "write_p99_ms": percentile(&writes, 0.99),
        "instance_propagation_p50_ms": percentile(&instance_latencies, 0.50),
        "instance_propagation_p99_ms": percentile(&instance_latencies, 0.99),
        "instance_propagation_max_ms": instance_latencies.last().copied().unwrap_or(0.0),
        "registration_p50_ms": percentile(&registrations, 0.50),
        "registration_p99_ms": percentile(&registrations, 0.99),
        "churn": churn,
        "server_rss_before_kb": rss_before,
        "server_rss_with_proxies_kb": rss_after,
        "server_kb_per_proxy": per_proxy,
    });
    println!("{out}");
    Ok(())
}
