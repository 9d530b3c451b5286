//! The proxy's configuration, from flags or environment variables. Routing itself comes
//! from the server; these are the settings of the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

/// Grayline proxy: routes live HTTP traffic between service versions as the server says.
#[derive(Clone, Debug, Parser)]
#[command(name = "grayline-proxy", version, args_override_self = true)]
pub struct Config {
    /// Address for client traffic (HTTP/1.1 and h2c).
    #[arg(long, env = "GRAYLINE_PROXY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address for /healthz, /readyz, /metrics and /config.
    #[arg(
        long,
        env = "GRAYLINE_PROXY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9901"
    )]
    pub admin_listen: SocketAddr,

    /// The server's gRPC address; several replicas comma-separated (`http://a:7070,http://b:7070`):
    /// the proxy talks to one and moves to another when it cannot be reached.
    #[arg(long, env = "GRAYLINE_SERVER", default_value = "http://127.0.0.1:7070", value_delimiter = ',',
          action = clap::ArgAction::Set)]
    pub server: Vec<String>,

    /// PEM certificate chain the client listener presents (with `--listen-tls-key`): the
    /// listener then serves TLS only (HTTP/2 or HTTP/1.1 by ALPN).
    #[arg(
        long,
        env = "GRAYLINE_PROXY_LISTEN_TLS_CERT",
        requires = "listen_tls_key"
    )]
    pub listen_tls_cert: Option<PathBuf>,

    /// PEM private key of `--listen-tls-cert`.
    #[arg(
        long,
        env = "GRAYLINE_PROXY_LISTEN_TLS_KEY",
        requires = "listen_tls_cert"
    )]
    pub listen_tls_key: Option<PathBuf>,

    /// More certificates, each for the host name a client asks for (SNI):
    /// `host=cert.pem:key.pem`, comma-separated. Others get `--listen-tls-cert`.
    #[arg(long, env = "GRAYLINE_PROXY_LISTEN_TLS_SNI", requires = "listen_tls_cert",
          value_delimiter = ',', value_parser = crate::proxy::tls::parse_sni)]
    pub listen_tls_sni: Vec<crate::proxy::tls::SniPair>,

    /// PEM CA certificates the server's certificate must chain to (for `https://` servers;
    /// without it, the system's roots).
    #[arg(long, env = "GRAYLINE_SERVER_CA")]
    pub server_ca: Option<PathBuf>,

    /// PEM client certificate this proxy presents to the server (with `--tls-key`).
    #[arg(long, env = "GRAYLINE_PROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "GRAYLINE_PROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// File holding the proxy token (the server writes it as `proxy.token` in its data dir).
    #[arg(long, env = "GRAYLINE_PROXY_TOKEN_FILE")]
    pub token_file: PathBuf,

    /// This proxy's identity as the server shows it. Defaults to the host name.
    #[arg(long, env = "GRAYLINE_PROXY_ID")]
    pub id: Option<String>,

    /// Only these services (comma-separated); all when empty.
    #[arg(long, env = "GRAYLINE_PROXY_SERVICES", value_delimiter = ',')]
    pub services: Vec<String>,

    /// Where the last good config is kept, to serve from when the server is unreachable.
    #[arg(
        long,
        env = "GRAYLINE_PROXY_STATE_DIR",
        default_value = "grayline-proxy-state"
    )]
    pub state_dir: PathBuf,

    /// Peers whose `X-Forwarded-For` and lane header are believed (CIDRs, comma-separated).
    /// Others are the client themselves.
    #[arg(long, env = "GRAYLINE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// Networks upstream endpoints must be in (CIDRs, comma-separated); a config with an
    /// endpoint elsewhere, or a host name, is rejected (NACKed). Empty allows any endpoint.
    #[arg(long, env = "GRAYLINE_UPSTREAM_ALLOW", value_delimiter = ',')]
    pub upstream_allow: Vec<IpNet>,

    /// Header that tells the upstream (and, with --tag-responses, the client) which version
    /// was chosen.
    #[arg(
        long,
        env = "GRAYLINE_VERSION_HEADER",
        default_value = "x-grayline-version"
    )]
    pub version_header: String,

    /// Header that carries a request's full-link lane: believed from --trusted-proxies and a
    /// service's lane_sources, stamped on upstream requests. Every proxy of a chain must use
    /// the same one.
    #[arg(long, env = "GRAYLINE_LANE_HEADER", default_value = "x-grayline-lane")]
    pub lane_header: String,

    /// Also put the version header on responses.
    #[arg(long, env = "GRAYLINE_TAG_RESPONSES")]
    pub tag_responses: bool,

    /// Seconds between statistics reports to the server.
    #[arg(long, env = "GRAYLINE_STATS_INTERVAL", default_value = "1", value_parser = parse_seconds)]
    pub stats_interval: Duration,

    /// Do not collect or report per-version statistics.
    #[arg(long, env = "GRAYLINE_NO_STATS")]
    pub no_stats: bool,

    /// Worker threads serving traffic, each with a runtime of its own (default: one per
    /// CPU). The config stream, statistics, health checks and the admin port run on one
    /// more thread.
    #[arg(long, env = "GRAYLINE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// DNS servers (`ip:port`, comma-separated) that resolve versions' `instances.dns`
    /// names; the system's (`/etc/resolv.conf`) when not given.
    #[arg(long, env = "GRAYLINE_DNS_SERVER", value_delimiter = ',')]
    pub dns_server: Vec<SocketAddr>,

    /// Register the application this proxy fronts as an instance of SERVICE (with `--tag`
    /// and `--register-address`), keep it alive over the config stream, and deregister it
    /// on a clean stop; killed, it expires after `--register-ttl`.
    #[arg(long, env = "GRAYLINE_REGISTER", value_name = "SERVICE", requires_all = ["tag", "register_address"])]
    pub register: Option<String>,

    /// The version tag the application registers with (`1.1.2`); versions whose
    /// `instances.tag` is this take it.
    #[arg(long, env = "GRAYLINE_REGISTER_TAG", requires = "register")]
    pub tag: Option<String>,

    /// Where the application serves, as `host:port` other proxies can reach.
    #[arg(long, env = "GRAYLINE_REGISTER_ADDRESS", requires = "register")]
    pub register_address: Option<String>,

    /// Seconds the registration outlives this proxy if it is killed (renewed every third).
    #[arg(long, env = "GRAYLINE_REGISTER_TTL", default_value = "10", value_parser = parse_seconds)]
    pub register_ttl: Duration,

    /// Log format: `text` or `json`. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "GRAYLINE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.05..=3600.0).contains(&secs) {
        return Err("must be between 0.05 and 3600 seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Config {
    /// The client listener's TLS, when it has a certificate (files read now).
    pub fn listen_tls(
        &self,
    ) -> anyhow::Result<
        Option<(
            tokio_rustls::TlsAcceptor,
            std::sync::Arc<crate::proxy::tls::ListenerCerts>,
        )>,
    > {
        match (&self.listen_tls_cert, &self.listen_tls_key) {
            (Some(cert), Some(key)) => {
                crate::proxy::tls::acceptor(cert, key, &self.listen_tls_sni).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// How the proxy reaches the servers over TLS.
    pub fn server_tls(&self) -> grayline_proto::tls::ClientTls {
        grayline_proto::tls::ClientTls {
            ca: self.server_ca.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            flags: ("--server-ca", "--tls-cert", "--tls-key"),
        }
    }

    /// The application to register, when `--register` says so.
    pub fn registration(&self) -> Option<crate::discovery::Registration> {
        Some(crate::discovery::Registration {
            service: self.register.clone()?,
            tag: self.tag.clone()?,
            address: self.register_address.clone()?,
            ttl: self.register_ttl,
        })
    }

    /// Worker threads serving traffic: `--workers`, else one per CPU this process may use.
    pub fn workers(&self) -> usize {
        self.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        )
    }

    pub fn proxy_id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "grayline-proxy".to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_on_commas_and_the_last_flag_wins() {
        let base = ["grayline-proxy", "--token-file", "t"];
        let parse = |extra: &[&str]| Config::try_parse_from(base.iter().chain(extra)).unwrap();
        assert_eq!(
            parse(&["--server", "http://a:1,http://b:2"]).server,
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(
            parse(&["--server", "http://a:1", "--server", "http://c:3"]).server,
            ["http://c:3"]
        );
        assert_eq!(parse(&[]).server, ["http://127.0.0.1:7070"]);
    }

    #[test]
    fn registering_needs_service_tag_and_address() {
        let base = ["grayline-proxy", "--token-file", "t"];
        let parse = |extra: &[&str]| Config::try_parse_from(base.iter().chain(extra));
        assert!(parse(&["--register", "shop", "--tag", "1.1.2"]).is_err());
        assert!(parse(&["--tag", "1.1.2"]).is_err());
        let c = parse(&[
            "--register",
            "shop",
            "--tag",
            "1.1.2",
            "--register-address",
            "127.0.0.1:9001",
        ])
        .unwrap();
        let r = c.registration().unwrap();
        assert_eq!((r.service.as_str(), r.tag.as_str()), ("shop", "1.1.2"));
        assert_eq!(r.ttl, Duration::from_secs(10));
        assert!(parse(&[]).unwrap().registration().is_none());
    }
}
