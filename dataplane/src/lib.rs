//! Grayline's data plane: a reverse proxy that routes each request to a service version as
//! the server's policy says, governs each version (load balancing, timeout, concurrency
//! limit, circuit breaker, fallback), keeps serving its last good config through
//! control-plane outages, and reports per-version statistics.
//!
//! [`run`] wires the rooms, each of which only uses the ones listed after it:
//!
//! - [`proxy`]: the request path — accept, decide, govern, forward, and the answers the
//!   proxy makes itself;
//! - [`telemetry`]: the statistics stream to the server, the Prometheus metrics and the
//!   admin port;
//! - [`control`]: the config stream, the last good config on disk, the proxy's problems;
//! - [`uplink`]: the line to the servers both streams use (replicas, backoff, token);
//! - [`traffic`]: mesh traffic — mirrored copies and full-link lanes;
//! - [`routes`]: the compiled routing state and each version's governance, swapped in
//!   atomically per config push and read by the request path without locks;
//! - [`discovery`]: the instances of versions that take them from the registry, and the
//!   registration of the application this proxy fronts;
//! - [`upstream`]: pooled HTTP/1.1 and h2c clients, request bodies, gRPC on the wire;
//! - [`resilience`]: circuit breaker, outlier detection, retry budget;
//! - [`stats`]: the per-version counters the request path writes.

pub mod config;
pub mod control;
pub mod discovery;
pub mod proxy;
pub mod resilience;
pub mod routes;
pub mod stats;
pub mod telemetry;
pub mod traffic;
pub mod uplink;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use http::header::HeaderName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::persist::ConfigFile;
use crate::control::{ConfigState, Identity};
use crate::proxy::{Proxy, Settings};
use crate::telemetry::admin;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::report::Reporter;
use crate::uplink::servers::Servers;

#[derive(Debug)]
pub struct Listeners {
    pub traffic: TcpListener,
    pub admin: TcpListener,
}

/// Serves until `shutdown` completes, then drains open requests.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen_tls = config.listen_tls()?;
    let token = std::fs::read_to_string(&config.token_file)
        .with_context(|| {
            format!(
                "reading the proxy token from {}",
                config.token_file.display()
            )
        })?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        config.token_file.display()
    );
    let version_header =
        HeaderName::from_bytes(config.version_header.as_bytes()).with_context(|| {
            format!(
                "--version-header `{}` is not a header name",
                config.version_header
            )
        })?;
    let lane_header = HeaderName::from_bytes(config.lane_header.as_bytes()).with_context(|| {
        format!(
            "--lane-header `{}` is not a header name",
            config.lane_header
        )
    })?;

    let routing = Arc::new(ArcSwapOption::empty());
    let stats = Arc::new(stats::Registry::default());
    let state = Arc::new(ConfigState::new(
        routing.clone(),
        routes::Builder::new(config.upstream_allow.clone()),
        stats.clone(),
        ConfigFile::new(&config.state_dir),
    ));
    let metrics = Arc::new(Metrics::serving(routing, &state.signals));
    match state.load_saved() {
        Ok(Some(revision)) => tracing::info!(
            revision,
            "serving the saved config until the server answers"
        ),
        Ok(None) => tracing::info!("no saved config; waiting for the server"),
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "the saved config cannot be served; no config until the server sends one"
        ),
    }

    let stop = CancellationToken::new();
    // The config stream stops first, so it renews no registration after the deregistration.
    let control_stop = stop.child_token();
    let proxy_id = config.proxy_id();
    let servers = Arc::new(Servers::new(config.server.clone(), config.server_tls())?);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(control::run(
        state.clone(),
        servers.clone(),
        Identity {
            proxy_id: proxy_id.clone(),
            services: config.services.clone(),
            token: token.clone(),
            registration: config.registration(),
        },
        control_stop.clone(),
    ));
    let resolver = discovery::dns::resolver(&config.dns_server);
    let dns_state = state.clone();
    tasks.spawn(discovery::dns::run(
        resolver,
        state.dns_names.subscribe(),
        move |name, endpoints| dns_state.resolved(name, endpoints),
        stop.clone(),
    ));
    tasks.spawn(discovery::health::run(
        state.health_targets.subscribe(),
        stop.clone(),
    ));
    if !config.no_stats {
        let reporter = Arc::new(Reporter::new(
            stats,
            state.routing.clone(),
            metrics.clone(),
            proxy_id.clone(),
        ));
        tasks.spawn(
            reporter
                .clone()
                .run_ticker(config.stats_interval, stop.clone()),
        );
        tasks.spawn(reporter.run_sender(servers.clone(), token.clone(), stop.clone()));
    }
    let admin = admin::app(Arc::new(admin::Admin {
        config: state.clone(),
        metrics,
    }));
    let admin_stop = stop.clone();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listeners.admin, admin)
            .with_graceful_shutdown(async move { admin_stop.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    let settings = Settings {
        trusted_proxies: config.trusted_proxies.clone(),
        version_header,
        lane_header,
        tag_responses: config.tag_responses,
        stats: !config.no_stats,
    };
    let routing = state.routing.clone();
    let workers = config.workers();
    let listen_tls = listen_tls.map(|(acceptor, certs)| {
        tasks.spawn(certs.watch(stop.clone()));
        acceptor
    });
    let traffic = proxy::listener::spawn_workers(
        workers,
        listeners.traffic.into_std()?,
        listen_tls,
        move || Proxy::new(routing.clone(), settings.clone()),
        stop.clone(),
    )
    .context("starting the worker threads")?;
    tracing::info!(id = %proxy_id, servers = %servers.describe(), workers, "proxy running");

    shutdown.await;
    tracing::info!("shutting down");
    control_stop.cancel();
    if let Some(registration) = config.registration() {
        control::deregister(&servers, &token, &registration).await;
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    // The workers let their open requests finish (at most 10 s) and end.
    let _ = tokio::task::spawn_blocking(move || {
        for worker in traffic {
            let _ = worker.join();
        }
    })
    .await;
    Ok(())
}
