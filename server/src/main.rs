//! `grayline-server`: parse the configuration, set up logging, bind, run until a signal.

use anyhow::Context as _;
use clap::Parser;
use grayline_server::config::Config;
use grayline_server::{Listeners, prepare, run};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }

    let prepared = prepare(config.clone()).await?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding the HTTP listener to {}", config.http_listen))?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("binding the gRPC listener to {}", config.grpc_listen))?;
    // One machine-readable line on stdout, for scripts and tests that bind port 0.
    println!(
        "{{\"event\":\"listening\",\"http\":\"{}\",\"grpc\":\"{}\"}}",
        http.local_addr()?,
        grpc.local_addr()?
    );
    run(prepared, Listeners { http, grpc }, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
