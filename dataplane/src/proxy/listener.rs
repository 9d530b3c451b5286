//! Accepts client connections (HTTP/1.1 with keep-alive, or h2c; over TLS with HTTP/2 or
//! HTTP/1.1 by ALPN when the listener has a certificate) and serves them through the proxy
//! until shutdown, then lets open requests finish. A TLS handshake runs in the connection's
//! own task, never in the accept loop.
//!
//! Traffic is served by workers laid out as nginx lays out its worker processes
//! ([`spawn_workers`]): one OS thread each, with a single-threaded runtime of its own, all
//! accepting from the one listening socket. A connection, its requests, the upstream
//! connections they use (each worker has its own pools) and every task they spawn stay on
//! the worker that accepted it: no task is stolen by another thread, and no wake-up crosses
//! cores. What workers share is read-mostly: the routing state, and the per-version
//! counters, which are sharded by thread.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::{Peer, Proxy};

/// Worker threads serving `listener`, each with a [`Proxy`] of its own from `proxy`, until
/// `shutdown`; join them to wait for their open requests to finish.
pub fn spawn_workers(
    workers: usize,
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxy: impl Fn() -> Proxy,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    listener.set_nonblocking(true)?;
    crate::upstream::client::reserve_slots(workers.max(1));
    (0..workers.max(1))
        .map(|i| {
            let (listener, tls) = (listener.try_clone()?, tls.clone());
            let (proxy, shutdown) = (Arc::new(proxy()), shutdown.clone());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("grayline-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => serve(listener, tls, proxy, shutdown).await,
                            Err(e) => tracing::error!(error = %e, "a worker cannot listen"),
                        }
                    });
                })
        })
        .collect()
}

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let addr = peer;
        let peer = Arc::new(Peer::over(peer, tls.is_some()));
        let service = service_fn(move |req| {
            let (proxy, peer) = (proxy.clone(), peer.clone());
            async move { Ok::<_, Infallible>(proxy.handle(req, &peer).await) }
        });
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let (acceptor, builder) = (acceptor.clone(), builder.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open 10 s after shutdown; closing them");
    }
}
