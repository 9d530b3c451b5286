//! `grayline-server`: parse the command line, set up logging, then serve (until a signal),
//! export, import or migrate.

use clap::Parser;
use grayline_server::config::{Cli, Command};
use grayline_server::{export, migrate, serve};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse().with_etcd_tls();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.serve.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    match cli.command {
        None => serve(cli.serve, shutdown_signal()),
        Some(Command::Export(args)) => export::export_command(&args),
        Some(Command::Import(args)) => export::import_command(&args),
        Some(Command::Migrate(args)) => migrate::migrate_command(&args),
    }
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
