//! The server's configuration, from flags or environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Grayline control plane: stores services and policies, serves the config API and the
/// console, and streams config to proxies.
#[derive(Clone, Debug, Parser)]
#[command(name = "grayline-server", version, args_override_self = true)]
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
