//! The server's command line: flags (or environment variables) to serve, and the `export`
//! and `import` commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Grayline control plane: stores services and policies, serves the config API and the
/// console, and streams config to proxies. Without a command it serves.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "grayline-server",
    version,
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Writes the whole store of a stopped server as JSON: services, the complete history
    /// and rollouts (not statistics).
    Export(ExportArgs),
    /// Builds the store of a new, empty data directory from an export.
    Import(ImportArgs),
}

#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// The data directory of the server (which must be stopped).
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,
    /// Where to write the export; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The new data directory: missing, empty, or holding only the tokens to keep
    /// (`admin.token`, `proxy.token`, `webhook.secret`).
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,
    /// The export to read; `-` for standard input.
    pub input: PathBuf,
}

/// How the server serves.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Directory for the sled store and the admin and proxy tokens. Created if missing.
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,

    /// Address of the console and the JSON API.
    #[arg(long, env = "GRAYLINE_HTTP_LISTEN", default_value = "127.0.0.1:7080")]
    pub http_listen: SocketAddr,

    /// Address of the gRPC config API and the proxy streams.
    #[arg(long, env = "GRAYLINE_GRPC_LISTEN", default_value = "127.0.0.1:7070")]
    pub grpc_listen: SocketAddr,

    /// Directory of the built console (Trunk's `dist`). Without it, `/` explains how to build it.
    #[arg(long, env = "GRAYLINE_CONSOLE_DIR")]
    pub console_dir: Option<PathBuf>,

    /// Log format: `text` or `json`. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "GRAYLINE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}
