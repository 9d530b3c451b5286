//! `grayline-server`: parse the configuration, set up logging, bind, run until a signal.

use anyhow::Context as _;
use clap::Parser;
use grayline_server::config::{Command, Config, Destination, StoreChoice};
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

    if let Some(Command::Migrate { to }) = &config.command {
        return migrate(&config, to).await;
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

/// `grayline-server migrate --to …`: progress on stderr, one JSON line on stdout.
async fn migrate(config: &Config, to: &Destination) -> anyhow::Result<()> {
    if let (StoreChoice::Sled, StoreChoice::Sled) = (&config.store, &to.store) {
        let same = std::fs::canonicalize(&config.data_dir).ok()
            == std::fs::canonicalize(&to.data_dir).ok();
        anyhow::ensure!(
            !same || !to.data_dir.exists(),
            "--to is the data directory being migrated"
        );
    }
    let from = grayline_server::migrate::open(&config.store, &config.data_dir)
        .await
        .context("opening the source store")?;
    let dest = grayline_server::migrate::open(&to.store, &to.data_dir)
        .await
        .context("opening the destination store")?;
    eprintln!(
        "copying revision 1 to {} from {} to {}",
        from.catalog().revision,
        from.describe(),
        dest.describe()
    );
    let done = grayline_server::migrate::migrate(&from, &dest, |at, of| {
        eprintln!("  {at} of {of} revisions copied");
    })
    .await?;
    eprintln!(
        "done: {} revisions, {} services, {} rollouts; statistics are not copied",
        done.revision, done.services, done.rollouts
    );
    println!(
        "{{\"event\":\"migrated\",\"revision\":{},\"services\":{},\"rollouts\":{}}}",
        done.revision, done.services, done.rollouts
    );
    Ok(())
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
