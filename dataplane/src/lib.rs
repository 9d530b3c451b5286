//! Grayline's data plane: a reverse proxy that routes each request to a service version as
//! the server's policy says, governs each version (load balancing, timeout, concurrency
//! limit, circuit breaker, fallback), keeps serving its last good config through
//! control-plane outages, and reports per-version statistics.
//!
//! [`run`] wires the parts: [`control`] keeps the config stream and swaps compiled
//! [`runtime::Routing`] states into an `ArcSwap` that [`proxy`] reads without locks;
//! [`report`] sends the [`stats`] the proxy collects; [`admin`] serves health and metrics.

pub mod admin;
pub mod body;
pub mod breaker;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod facts;
pub mod grpc;
pub mod lane;
pub mod listener;
pub mod metrics;
pub mod mirror;
pub mod observed;
pub mod outlier;
pub mod persist;
pub mod proxy;
pub mod report;
pub mod retry_budget;
pub mod runtime;
pub mod servers;
pub mod stats;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use http::header::HeaderName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{ConfigState, Identity};
use crate::metrics::Metrics;
use crate::persist::ConfigFile;
use crate::proxy::{Proxy, Settings};
use crate::report::Reporter;
use crate::servers::Servers;

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
    let metrics = Arc::new(Metrics::serving(routing.clone()));
    let stats = Arc::new(stats::Registry::default());
    let state = Arc::new(ConfigState::new(
        routing,
        runtime::Builder::new(config.upstream_allow.clone()),
        stats.clone(),
        ConfigFile::new(&config.state_dir),
        metrics.clone(),
    ));
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
    let proxy_id = config.proxy_id();
    let servers = Arc::new(Servers::new(config.server.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(control::run(
        state.clone(),
        servers.clone(),
        Identity {
            proxy_id: proxy_id.clone(),
            services: config.services.clone(),
            token: token.clone(),
        },
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
        tasks.spawn(reporter.run_sender(servers.clone(), token, stop.clone()));
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
    let proxy = Arc::new(Proxy::new(
        state.routing.clone(),
        Settings {
            trusted_proxies: config.trusted_proxies.clone(),
            version_header,
            lane_header,
            tag_responses: config.tag_responses,
            stats: !config.no_stats,
        },
    ));
    tasks.spawn(listener::serve(listeners.traffic, proxy, stop.clone()));
    tracing::info!(id = %proxy_id, servers = %servers.describe(), "proxy running");

    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
