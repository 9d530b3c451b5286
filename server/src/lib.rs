//! Grayline's control plane.
//!
//! [`run`] serves everything on two already-bound listeners (so tests can bind port 0): the
//! HTTP side ([`http`]: console, JSON API) and the gRPC side ([`grpc`]: config API, proxy
//! config stream). Both front ends call the same [`operations`], which write through the
//! [`store`]: sled on one machine, or etcd shared by several replicas. [`serve`] is the
//! binary's whole life: prepare, bind, run, and seal a sled store after a clean stop;
//! [`export`] is its `export` and `import` commands, [`migrate`] its `migrate`.

pub mod access;
pub mod auth;
pub mod config;
pub mod error;
pub mod export;
pub mod grpc;
pub mod http;
pub mod instances;
pub mod metrics;
pub mod migrate;
pub mod operations;
pub mod proxies;
pub mod rollouts;
pub mod stats;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::config::{Config, StoreChoice};
use crate::metrics::ServerMetrics;
use crate::operations::Operations;
use crate::proxies::Registry;
use crate::rollouts::Rollouts;
use crate::stats::StatsStore;
use crate::store::{Backend, Store};

/// The sockets the server answers on, and the certificate they present when TLS is on.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
    pub tls: Option<Arc<tls::Reloading>>,
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

/// Creates the data directory, the tokens and opens the store (sled here, or etcd shared
/// with other replicas): everything that can fail before the server answers. A damaged
/// store is refused here, with what to do.
pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let tokens = Tokens::load(&config.data_dir, &config.token_files())?;
    if let StoreChoice::Etcd(_) = config.store {
        match &config.advertise {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                anyhow::bail!("--advertise `{url}` must be an http:// or https:// URL");
            }
            None if config.grpc_listen.ip().is_unspecified() => anyhow::bail!(
                "--grpc-listen {} is a wildcard, which other replicas cannot dial: \
                 give --advertise http://<this host>:{}",
                config.grpc_listen,
                config.grpc_listen.port()
            ),
            _ => {}
        }
    }
    let ops = open(&config, &tokens)
        .await
        .map_err(|e| export::explained(e, &config.data_dir, "the server does not start on it"))?;
    // Everything is read back and checked; from here on the store changes.
    ops.store.unseal()?;
    Ok(Prepared {
        config,
        tokens,
        ops,
    })
}

async fn open(config: &Config, tokens: &Tokens) -> anyhow::Result<Arc<Operations>> {
    let metrics = Arc::new(ServerMetrics::new());
    let (store, stats, keep) = match &config.store {
        StoreChoice::Sled => {
            let store = Arc::new(Store::open(&export::db_dir(&config.data_dir))?);
            let durable = store.durable().context("a sled store has a group commit")?;
            let disk = stats::Disk {
                tree: store.tree("stats")?,
                minutes: store.tree("stats_minutes")?,
                durable: durable.clone(),
            };
            let stats = Arc::new(StatsStore::open(disk, metrics.clone())?);
            let keep = instances::Keep::Sled {
                tree: store.tree("instances")?,
                durable,
            };
            (store, stats, keep)
        }
        StoreChoice::Etcd(url) => {
            let store = Store::open_etcd(url.clone()).await?;
            let Backend::Etcd(etcd) = store.backend() else {
                unreachable!("open_etcd opens etcd")
            };
            let stats =
                StatsStore::open_etcd(stats::etcd::EtcdStats::new(etcd.clone()), metrics.clone())
                    .await?;
            let keep =
                instances::Keep::Etcd(Box::new(instances::etcd::EtcdInstances::new(etcd.clone())));
            (store, stats, keep)
        }
    };
    let instances = instances::Instances::open(store.clone(), keep).await?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        store = %store.describe(),
        revision = store.catalog().revision,
        services = store.catalog().services.len(),
        admin_token = %tokens.admin_path.display(),
        proxy_token = %tokens.proxy_path.display(),
        webhook_secret = %tokens.webhook_path.display(),
        "store opened"
    );
    let rollouts = Rollouts::open(
        store.clone(),
        stats.clone(),
        instances.clone(),
        tokens.webhook_secret(),
        tokens.admin_token().to_string(),
        config.peer_tls(),
        config.prometheus_url.clone(),
    )
    .await?;
    Ok(Arc::new(Operations {
        store,
        proxies: Arc::new(Registry::default()),
        instances,
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
    config.check_plaintext()?;
    // A certificate that does not load stops the start, before anything is opened.
    let tls = config.tls().map(tls::Reloading::open).transpose()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let prepared = runtime.block_on(prepare(config))?;
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
            "{{\"event\":\"listening\",\"http\":\"{}\",\"grpc\":\"{}\",\"tls\":{}}}",
            http.local_addr()?,
            grpc.local_addr()?,
            tls.is_some()
        );
        run(prepared, Listeners { http, grpc, tls }, shutdown).await
    });
    // Stops every task (rollouts, statistics, streams): after this nothing writes.
    runtime.shutdown_timeout(DRAIN_TIMEOUT);
    match store.seal() {
        Ok(()) if matches!(store.backend(), Backend::Sled(_)) => tracing::info!("store sealed"),
        Ok(()) => {}
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
    tokens.spawn_watch(stop.clone());
    let routes = grpc::routes(
        ops.clone(),
        tokens,
        config.proxy_client_ca.is_some(),
        stop.clone(),
    );
    // How the other replicas reach this one (the rollouts' leader forwards to it).
    let scheme = if listeners.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let me = match &config.advertise {
        Some(url) => url.clone(),
        None => format!("{scheme}://{}", listeners.grpc.local_addr()?),
    };
    ops.rollouts.clone().spawn(stop.clone(), me.clone());
    ops.instances.spawn(stop.clone());
    if let Backend::Etcd(etcd) = ops.store.backend() {
        proxies::shared::spawn(ops.proxies.clone(), etcd.clone(), me, stop.clone());
        etcd.spawn_upkeep(ops.metrics.clone(), stop.clone());
    }
    // Close each second's statistics and publish it to live subscribers.
    let ticker_stop = stop.clone();
    let stats = ops.stats.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    stats.tick(store::now_unix_ms() / 1000);
                    // The minutes that ended, and anything a failed commit left.
                    if let Err(e) = stats.commit_pending().await {
                        tracing::warn!(error = %e, "statistics not committed; retried each second");
                    }
                }
                () = ticker_stop.cancelled() => return,
            }
        }
    });
    // What is past the hour leaves the disk at once (after a long stop, the whole store) and
    // then once a minute, on a blocking thread, never on the workers that serve; only from
    // here, once the store is unsealed, and it stops between batches at `stop`, so nothing
    // writes after the drain and the seal is of what stays.
    let prune_stop = stop.clone();
    let stats = ops.stats.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(stats::PRUNE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = prune_stop.cancelled() => return,
            }
            let (stats, stop) = (stats.clone(), prune_stop.clone());
            let pruned = tokio::task::spawn_blocking(move || {
                stats.prune_disk(store::now_unix_ms() / 1000, &stop)
            })
            .await;
            if let Err(e) = pruned.map_err(anyhow::Error::from).and_then(|r| r) {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "pruning old statistics failed; will retry"
                );
            }
        }
    });

    let http_addr = listeners.http.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_stop = stop.clone();
    let grpc_stop = stop.clone();
    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_routes(routes);
    let (http, grpc) = match &listeners.tls {
        None => {
            let http = tokio::spawn(async move {
                axum::serve(listeners.http, app.into_make_service())
                    .with_graceful_shutdown(async move { http_stop.cancelled().await })
                    .await
            });
            let grpc = tokio::spawn(async move {
                grpc_server
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listeners.grpc),
                        async move { grpc_stop.cancelled().await },
                    )
                    .await
            });
            (http, grpc)
        }
        Some(certificate) => {
            certificate.spawn_watch(stop.clone());
            let web = certificate.server_config(&[b"h2", b"http/1.1"], None)?;
            let accepted = tls::accept(listeners.http, web, stop.clone());
            let listener = tls::TlsListener {
                accepted,
                local: http_addr,
            };
            let http = tokio::spawn(async move {
                axum::serve(listener, app.into_make_service())
                    .with_graceful_shutdown(async move { http_stop.cancelled().await })
                    .await
            });
            // gRPC is HTTP/2 only.
            let clients = config
                .proxy_client_auth()
                .map(tls::ClientVerifier::open)
                .transpose()?;
            if let Some(verifier) = &clients {
                verifier.spawn_watch(stop.clone());
            }
            let rpc = certificate.server_config(&[b"h2"], clients.as_ref())?;
            let accepted = tls::accept(listeners.grpc, rpc, stop.clone());
            let incoming = tokio_stream::wrappers::ReceiverStream::new(accepted)
                .map(|(tls, _)| Ok::<_, std::io::Error>(tls));
            let grpc = tokio::spawn(async move {
                grpc_server
                    .serve_with_incoming_shutdown(
                        incoming,
                        async move { grpc_stop.cancelled().await },
                    )
                    .await
            });
            (http, grpc)
        }
    };
    tracing::info!(http = %http_addr, grpc = %grpc_addr, tls = listeners.tls.is_some(), "serving");

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
