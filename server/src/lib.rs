//! Grayline's control plane.
//!
//! [`run`] serves everything on two already-bound listeners (so tests can bind port 0): the
//! HTTP side ([`http`]: console, JSON API) and the gRPC side ([`grpc`]: config API, proxy
//! config stream). Both front ends call the same [`operations`], which write through the
//! sled [`store`]. [`serve`] is the binary's whole life: prepare, bind, run, and seal the
//! store after a clean stop; [`export`] is its `export` and `import` commands.

pub mod auth;
pub mod config;
pub mod error;
pub mod export;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod operations;
pub mod proxies;
pub mod rollouts;
pub mod stats;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::config::Config;
use crate::metrics::ServerMetrics;
use crate::operations::Operations;
use crate::proxies::Registry;
use crate::rollouts::Rollouts;
use crate::stats::StatsStore;
use crate::store::Store;

/// The sockets the server answers on.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

/// How long open streams get to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The opened store and tokens, ready to serve.
#[derive(Debug)]
pub struct Prepared {
    config: Config,
    tokens: Tokens,
    ops: Arc<Operations>,
}

/// Creates the data directory, the tokens and opens the store: everything that can fail
/// before the server answers. A damaged store is refused here, with what to do.
pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let tokens = Tokens::load_or_create(&config.data_dir)?;
    let ops = open(&config, &tokens)
        .map_err(|e| export::explained(e, &config.data_dir, "the server does not start on it"))?;
    // Everything is read back and checked; from here on the store changes.
    ops.store.unseal()?;
    Ok(Prepared {
        config,
        tokens,
        ops,
    })
}

fn open(config: &Config, tokens: &Tokens) -> anyhow::Result<Arc<Operations>> {
    let store = Arc::new(Store::open(&export::db_dir(&config.data_dir))?);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        revision = store.catalog().revision,
        services = store.catalog().services.len(),
        admin_token = %tokens.admin_path.display(),
        proxy_token = %tokens.proxy_path.display(),
        webhook_secret = %tokens.webhook_path.display(),
        "store opened"
    );
    let metrics = Arc::new(ServerMetrics::new());
    let stats = StatsStore::open(
        stats::Disk {
            tree: store.tree("stats")?,
            durable: store.durable(),
        },
        metrics.clone(),
    )?;
    let stats = Arc::new(stats);
    let rollouts = Rollouts::open(store.clone(), stats.clone(), tokens.webhook_secret())?;
    Ok(Arc::new(Operations {
        store,
        proxies: Arc::new(Registry::default()),
        stats,
        rollouts: Arc::new(rollouts),
        metrics,
    }))
}

/// The server binary: prepares, binds, prints one `{"event":"listening",…}` line on stdout
/// (for scripts and tests that bind port 0), serves until `shutdown`, and once every task
/// has stopped — nothing writes any more — seals the store for the next start to check.
pub fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let prepared = runtime.block_on(async { prepare(config) })?;
    let store = prepared.ops.store.clone();
    let (http_listen, grpc_listen) = (prepared.config.http_listen, prepared.config.grpc_listen);
    let served = runtime.block_on(async move {
        let http = TcpListener::bind(http_listen)
            .await
            .with_context(|| format!("binding the HTTP listener to {http_listen}"))?;
        let grpc = TcpListener::bind(grpc_listen)
            .await
            .with_context(|| format!("binding the gRPC listener to {grpc_listen}"))?;
        println!(
            "{{\"event\":\"listening\",\"http\":\"{}\",\"grpc\":\"{}\"}}",
            http.local_addr()?,
            grpc.local_addr()?
        );
        run(prepared, Listeners { http, grpc }, shutdown).await
    });
    // Stops every task (rollouts, statistics, streams): after this nothing writes.
    runtime.shutdown_timeout(DRAIN_TIMEOUT);
    match store.seal() {
        Ok(()) => tracing::info!("store sealed"),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "could not seal the store; the next start cannot check that it got everything back"
        ),
    }
    served
}

/// Serves until `shutdown` completes.
pub async fn run(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        tokens,
        ops,
    } = prepared;
    let stop = CancellationToken::new();
    let console_dir = config.console_dir.clone().filter(|dir| {
        let ok = dir.join("index.html").is_file();
        if !ok {
            tracing::warn!(dir = %dir.display(), "no index.html in the console directory; serving a placeholder");
        }
        ok
    });
    let app = http::app(
        Arc::new(http::AppState {
            ops: ops.clone(),
            tokens: tokens.clone(),
            shutdown: stop.clone(),
        }),
        console_dir,
    );
    let routes = grpc::routes(ops.clone(), tokens, stop.clone());
    ops.rollouts.clone().spawn(stop.clone());
    // Close each second's statistics and publish it to live subscribers.
    let ticker_stop = stop.clone();
    let stats = ops.stats.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => stats.tick(store::now_unix_ms() / 1000),
                () = ticker_stop.cancelled() => return,
            }
        }
    });

    let http_addr = listeners.http.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_stop = stop.clone();
    let http = tokio::spawn(async move {
        axum::serve(
            listeners.http,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_stop.cancelled().await })
        .await
    });
    let grpc_stop = stop.clone();
    let grpc = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), async move {
                grpc_stop.cancelled().await
            })
            .await
    });
    tracing::info!(http = %http_addr, grpc = %grpc_addr, "serving");

    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let (h, g) = tokio::join!(http, grpc);
        h.context("http task")?.context("http server")?;
        g.context("grpc task")?.context("grpc server")?;
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
            Ok(())
        }
    }
}
