//! `grayline-proxy`: parse the configuration, set up logging, bind, run until a signal.

use anyhow::Context as _;
use clap::Parser;
use grayline_dataplane::config::Config;
use grayline_dataplane::{Listeners, run};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
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
    // This thread runs the control side (config stream, statistics, health checks, the admin
    // port); traffic gets worker threads of its own (`proxy::listener::spawn_workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let traffic = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the traffic listener to {}", config.listen))?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding the admin listener to {}", config.admin_listen))?;
        // One machine-readable line on stdout, for scripts and tests that bind port 0.
        println!(
            "{{\"event\":\"listening\",\"proxy\":\"{}\",\"admin\":\"{}\"}}",
            traffic.local_addr()?,
            admin.local_addr()?
        );
        run(config, Listeners { traffic, admin }, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
