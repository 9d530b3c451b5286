//! The server's command line: flags (or environment variables) to serve, and the `export`,
//! `import` and `migrate` commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::store::etcd::EtcdUrl;

/// The store a server runs on.
#[derive(Clone, Debug)]
pub enum StoreChoice {
    Sled,
    Etcd(EtcdUrl),
}

/// Where `migrate` copies to.
#[derive(Clone, Debug)]
pub struct Destination {
    pub store: StoreChoice,
    /// The data directory, for sled.
    pub data_dir: PathBuf,
}

fn parse_destination(s: &str) -> Result<Destination, String> {
    if let Some(dir) = s.strip_prefix("sled:") {
        if dir.is_empty() {
            return Err("`sled:` needs a data directory, e.g. `sled:/var/lib/grayline`".into());
        }
        return Ok(Destination {
            store: StoreChoice::Sled,
            data_dir: PathBuf::from(dir),
        });
    }
    match parse_store(s)? {
        StoreChoice::Sled => Err("give the destination's directory: `sled:<data-dir>`".into()),
        store => Ok(Destination {
            store,
            data_dir: PathBuf::new(),
        }),
    }
}

fn parse_store(s: &str) -> Result<StoreChoice, String> {
    if s == "sled" {
        return Ok(StoreChoice::Sled);
    }
    if s.starts_with("etcd://") || s.starts_with("etcds://") {
        return EtcdUrl::parse(s).map(StoreChoice::Etcd);
    }
    Err(format!(
        "`{s}` is neither `sled` nor an `etcd://host:port[,host:port][/prefix]` URL"
    ))
}

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
    #[command(flatten)]
    pub etcd_tls: EtcdTlsArgs,
}

/// How the server reaches an `etcds://` store (any command).
#[derive(Clone, Debug, Default, Args)]
pub struct EtcdTlsArgs {
    /// PEM CA certificates etcd's certificates chain to (without it, the system's roots).
    #[arg(long, global = true, env = "GRAYLINE_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd (with `--etcd-key`), as etcd's `--client-cert-auth`
    /// asks.
    #[arg(long, global = true, env = "GRAYLINE_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of `--etcd-cert`.
    #[arg(long, global = true, env = "GRAYLINE_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    fn apply(&self, store: &mut StoreChoice) {
        if let StoreChoice::Etcd(url) = store {
            url.tls.ca = self.etcd_ca.clone();
            url.tls.identity = self.etcd_cert.clone().zip(self.etcd_key.clone());
        }
    }
}

impl Cli {
    /// The command line with the `--etcd-*` settings given to every etcd store it names.
    pub fn with_etcd_tls(mut self) -> Cli {
        let tls = self.etcd_tls.clone();
        tls.apply(&mut self.serve.store);
        match &mut self.command {
            None => {}
            Some(Command::Export(a)) => tls.apply(&mut a.store),
            Some(Command::Import(a)) => tls.apply(&mut a.store),
            Some(Command::Migrate(a)) => {
                tls.apply(&mut a.store);
                tls.apply(&mut a.to.store);
            }
        }
        self
    }
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Writes the whole store of a stopped server as JSON: services, the complete history
    /// and rollouts (not statistics).
    Export(ExportArgs),
    /// Builds the store of a new, empty data directory from an export.
    Import(ImportArgs),
    /// Copies the services, their whole history, the rollouts and the statistics (the last
    /// hour per second, a week per minute, the proxies' watermarks) from a store into
    /// another, empty one (sled into etcd, or back). Stop the servers writing to the source
    /// first.
    Migrate(MigrateArgs),
}

#[derive(Clone, Debug, Args)]
pub struct MigrateArgs {
    /// The source's data directory, when the source is sled.
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,
    /// The source: `sled` (in `--data-dir`) or `etcd://host:port[,host:port…][/prefix]`.
    #[arg(long, env = "GRAYLINE_STORE", default_value = "sled", value_parser = parse_store)]
    pub store: StoreChoice,
    /// The destination: `etcd://host:port[,host:port…][/prefix]`, or `sled:<data-dir>`.
    #[arg(long, value_parser = parse_destination)]
    pub to: Destination,
}

#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// The data directory of the server (which must be stopped), when the store is sled.
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,
    /// The store to export: `sled` (in `--data-dir`) or `etcd://host:port[,host:port…][/prefix]`
    /// (replicas may keep running: the export is the catalog of the moment it is read).
    #[arg(long, env = "GRAYLINE_STORE", default_value = "sled", value_parser = parse_store)]
    pub store: StoreChoice,
    /// Where to write the export; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The new data directory: missing, empty, or holding only the tokens to keep
    /// (`admin.token`, `proxy.token`, `webhook.secret`), when the store is sled.
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,
    /// The store to build: `sled` (in `--data-dir`) or an empty
    /// `etcd://host:port[,host:port…][/prefix]`.
    #[arg(long, env = "GRAYLINE_STORE", default_value = "sled", value_parser = parse_store)]
    pub store: StoreChoice,
    /// The export to read; `-` for standard input.
    pub input: PathBuf,
}

/// How the server serves.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Directory for the sled store and the admin and proxy tokens. Created if missing.
    #[arg(long, env = "GRAYLINE_DATA_DIR", default_value = "grayline-data")]
    pub data_dir: PathBuf,

    /// Where the catalog, the statistics and the rollouts live: `sled` (embedded, in
    /// `<data-dir>/db`; one server) or `etcd://host:port[,host:port…][/prefix]` (shared by
    /// every replica on the same etcd cluster and prefix).
    #[arg(long, env = "GRAYLINE_STORE", default_value = "sled", value_parser = parse_store)]
    pub store: StoreChoice,

    /// Address of the console and the JSON API.
    #[arg(long, env = "GRAYLINE_HTTP_LISTEN", default_value = "127.0.0.1:7080")]
    pub http_listen: SocketAddr,

    /// Address of the gRPC config API and the proxy streams.
    #[arg(long, env = "GRAYLINE_GRPC_LISTEN", default_value = "127.0.0.1:7070")]
    pub grpc_listen: SocketAddr,

    /// The gRPC URL other replicas reach this one at (`http://host:port`), when the store is
    /// etcd. Defaults to `http://` and the bound gRPC address, which only works when that is
    /// not a wildcard like 0.0.0.0.
    #[arg(long, env = "GRAYLINE_ADVERTISE")]
    pub advertise: Option<String>,

    /// A file holding the admin token, instead of `<data-dir>/admin.token`; read, never
    /// created. Give every replica the same one.
    #[arg(long, env = "GRAYLINE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// A file holding the proxy token, instead of `<data-dir>/proxy.token`.
    #[arg(long, env = "GRAYLINE_PROXY_TOKEN_FILE")]
    pub proxy_token_file: Option<PathBuf>,

    /// A file holding the token applications register their instances with, instead of
    /// `<data-dir>/registration.token`. It can register, renew and deregister instances and
    /// nothing else.
    #[arg(long, env = "GRAYLINE_REGISTRATION_TOKEN_FILE")]
    pub registration_token_file: Option<PathBuf>,

    /// A file holding the secret rollout webhooks are signed with, instead of
    /// `<data-dir>/webhook.secret`.
    #[arg(long, env = "GRAYLINE_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Directory of tokens with roles (`viewer`, `operator`, `admin`), one `<name>.yaml` each;
    /// re-read when it changes. See docs/operations.md.
    #[arg(long, env = "GRAYLINE_TOKENS_DIR")]
    pub tokens_dir: Option<PathBuf>,

    /// PEM certificate chain for the HTTP and gRPC listeners (with `--tls-key`); re-read when
    /// the file changes.
    #[arg(long, env = "GRAYLINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "GRAYLINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates proxies' client certificates must chain to: with it, the proxy
    /// APIs take only a proxy whose certificate names its id (and its token).
    #[arg(long, env = "GRAYLINE_PROXY_CLIENT_CA", requires = "tls_cert")]
    pub proxy_client_ca: Option<PathBuf>,

    /// PEM certificate revocation lists of the proxies' CA (comma-separated files): a revoked
    /// proxy certificate fails the handshake. Read at start.
    #[arg(
        long,
        env = "GRAYLINE_PROXY_CLIENT_CRL",
        requires = "proxy_client_ca",
        value_delimiter = ','
    )]
    pub proxy_client_crl: Vec<PathBuf>,

    /// PEM CA certificates the other replicas' certificates chain to, for the calls one
    /// replica makes to another over `https://` (without it, the system's roots).
    #[arg(long, env = "GRAYLINE_PEER_CA")]
    pub peer_ca: Option<PathBuf>,

    /// Serve without TLS on an address other machines can reach (refused otherwise): for a
    /// network the operator trusts, or TLS terminated in front of the server.
    #[arg(long, env = "GRAYLINE_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,

    /// The Prometheus HTTP API (`http://127.0.0.1:9090`) the rollouts' metric gates query,
    /// unless their plan names another (`prometheus_url`).
    #[arg(long, env = "GRAYLINE_PROMETHEUS_URL", value_parser = prometheus_url)]
    pub prometheus_url: Option<String>,

    /// Directory of the built console (Trunk's `dist`). Without it, `/` explains how to build it.
    #[arg(long, env = "GRAYLINE_CONSOLE_DIR")]
    pub console_dir: Option<PathBuf>,

    /// Log format: `text` or `json`. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "GRAYLINE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// An `http://` or `https://` base URL with a host.
fn prometheus_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with(['/', ':']) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Config {
    /// The certificate files, when TLS is on.
    pub fn tls(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    /// How proxies prove who they are, when they must.
    pub fn proxy_client_auth(&self) -> Option<crate::tls::ClientAuth> {
        Some(crate::tls::ClientAuth {
            ca: self.proxy_client_ca.clone()?,
            crls: self.proxy_client_crl.clone(),
        })
    }

    /// How this replica reaches the others.
    pub fn peer_tls(&self) -> grayline_proto::tls::ClientTls {
        grayline_proto::tls::ClientTls {
            ca: self.peer_ca.clone(),
            identity: None,
            flags: ("--peer-ca", "", ""),
        }
    }

    /// Refuses plaintext listeners other machines can reach unless the operator said so.
    pub fn check_plaintext(&self) -> anyhow::Result<()> {
        if self.tls_cert.is_some() {
            return Ok(());
        }
        let exposed: Vec<String> = [
            ("--http-listen", self.http_listen),
            ("--grpc-listen", self.grpc_listen),
        ]
        .into_iter()
        .filter(|(_, addr)| !crate::tls::is_loopback(addr))
        .map(|(flag, addr)| format!("{flag} {addr}"))
        .collect();
        if exposed.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            self.insecure_plaintext,
            "{} reach beyond this machine without TLS: tokens would cross the network in clear. \
             Give --tls-cert and --tls-key, or say --insecure-plaintext if the network is yours \
             (or TLS ends in front of the server)",
            exposed.join(" and ")
        );
        tracing::warn!(
            listeners = exposed.join(", "),
            "serving plaintext beyond this machine (--insecure-plaintext): tokens and config cross the network in clear"
        );
        Ok(())
    }

    /// The token files given by flag.
    pub fn token_files(&self) -> crate::auth::TokenFiles {
        crate::auth::TokenFiles {
            roles_dir: self.tokens_dir.clone(),
            admin: self.admin_token_file.clone(),
            proxy: self.proxy_token_file.clone(),
            registration: self.registration_token_file.clone(),
            webhook: self.webhook_secret_file.clone(),
        }
    }
}
