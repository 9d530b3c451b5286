//! TLS to upstreams: a version's `tls` settings (CA, server name, client certificate; files
//! on the proxy's host) made into rustls client configs, one per ALPN — `http/1.1` for the
//! HTTP/1.1 pool, `h2` for HTTP/2 — with the HTTP/2 clients that use them, one per worker
//! thread (as each worker has its own HTTP/1.1 pool), so a request's upstream connection is
//! driven on its own worker. Versions with the same settings share one [`UpstreamTls`], so
//! they share its connections too.
//!
//! The files are read when the version is built, and again when they change: a connection
//! that opens looks at their modification times, at most every [`RECHECK`], so a rotated
//! client certificate or CA is used by the next connection without a config push. A change
//! that cannot be read (a key without its new certificate yet) keeps the files read before.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use grayline_proto::tls::Stamps;
use grayline_routing::UpstreamTls as Settings;
use http::Uri;
use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::upstream::body::UpstreamBody;
use crate::upstream::client::{CONNECT_TIMEOUT, IDLE_TIMEOUT, connect_tcp, slots};

/// The largest file a `tls` setting may name.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// How often, at most, an opening connection looks whether the files changed.
pub const RECHECK: Duration = Duration::from_secs(2);

/// What a connection offers in its ALPN extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
}

/// HTTP/2 over TLS to the endpoints, pooled per endpoint by hyper-util.
type H2Client = Client<Connector, UpstreamBody>;

/// One `tls` setting, loaded: its client configs, and the HTTP/2 clients that use them.
pub struct UpstreamTls {
    shared: Arc<Shared>,
    /// Each worker's (by its pool's slot), made by its first HTTP/2 request.
    h2: Box<[std::sync::OnceLock<H2Client>]>,
    /// For pools beyond the slots.
    h2_shared: std::sync::OnceLock<H2Client>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("id", &self.id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Tells this setting's pooled HTTP/1.1 connections apart from others to the same
    /// endpoint (plaintext, or other settings): never 0, which is plaintext's.
    id: u64,
    settings: Settings,
    /// `server_name`, when set; else each endpoint's host is the name.
    server_name: Option<ServerName<'static>>,
    loaded: ArcSwap<Loaded>,
    /// When the files were last looked at, and their modification times then.
    seen: Mutex<(Instant, Stamps)>,
}

struct Loaded {
    http1: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
}

impl UpstreamTls {
    /// Reads the files `settings` names. The error names the field and the file.
    pub fn new(settings: &Settings) -> Result<UpstreamTls, String> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let server_name = (!settings.server_name.is_empty())
            .then(|| {
                ServerName::try_from(settings.server_name.clone())
                    .map_err(|e| format!("server_name `{}`: {e}", settings.server_name))
            })
            .transpose()?;
        let shared = Arc::new(Shared {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            server_name,
            loaded: ArcSwap::from_pointee(load(settings)?),
            seen: Mutex::new((Instant::now(), stamps(settings))),
            settings: settings.clone(),
        });
        Ok(UpstreamTls {
            shared,
            h2: (0..slots()).map(|_| std::sync::OnceLock::new()).collect(),
            h2_shared: std::sync::OnceLock::new(),
        })
    }

    /// The HTTP/2 client of the worker whose pool has `slot`.
    pub fn h2(&self, slot: Option<usize>) -> &H2Client {
        let made = match slot {
            Some(i) if i < self.h2.len() => &self.h2[i],
            _ => &self.h2_shared,
        };
        made.get_or_init(|| {
            Client::builder(TokioExecutor::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .pool_idle_timeout(IDLE_TIMEOUT)
                .http2_only(true)
                .http2_initial_stream_window_size(1 << 20)
                .http2_initial_connection_window_size(4 << 20)
                .build(self.connector(Alpn::H2))
        })
    }

    /// Which pooled HTTP/1.1 connections are this setting's (never 0).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// TLS over `tcp` to the endpoint at `authority`, offering `alpn`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        authority: &Authority,
        alpn: Alpn,
    ) -> io::Result<TlsStream<TcpStream>> {
        self.shared.handshake(tcp, authority, alpn).await
    }

    /// A connector for hyper-util's client: TCP, then TLS offering `alpn`.
    pub fn connector(&self, alpn: Alpn) -> Connector {
        Connector {
            shared: self.shared.clone(),
            alpn,
        }
    }
}

impl Shared {
    async fn handshake(
        &self,
        tcp: TcpStream,
        authority: &Authority,
        alpn: Alpn,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = authority.host();
                // `[::1]` is the authority's way of writing an IPv6 address.
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            }
        };
        let loaded = self.current();
        let connector = match alpn {
            Alpn::Http1 => &loaded.http1,
            Alpn::H2 => &loaded.h2,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(done) => done.map_err(|e| {
                io::Error::new(e.kind(), format!("TLS handshake with {authority}: {e}"))
            }),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "TLS handshake with {authority}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    /// The configs to use now, read again first when the files changed.
    fn current(&self) -> Arc<Loaded> {
        let changed = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0.elapsed() < RECHECK {
                None
            } else {
                seen.0 = Instant::now();
                let now = stamps(&self.settings);
                (now != seen.1).then_some(now)
            }
        };
        if let Some(now) = changed {
            match load(&self.settings) {
                Ok(loaded) => {
                    self.loaded.store(Arc::new(loaded));
                    // Only a load that worked moves the stamps on: files caught half-written
                    // are read again at the next look, whatever their times say.
                    self.seen.lock().unwrap_or_else(|e| e.into_inner()).1 = now;
                    tracing::info!(settings = ?self.settings, "upstream TLS files changed; read again");
                }
                Err(error) => tracing::warn!(
                    %error,
                    "upstream TLS files changed but cannot be used; keeping the ones read before"
                ),
            }
        }
        self.loaded.load_full()
    }
}

/// The modification times of the files `settings` names, in a fixed order.
fn stamps(settings: &Settings) -> Stamps {
    let named = [&settings.ca, &settings.client_cert, &settings.client_key];
    grayline_proto::tls::stamps(named.into_iter().filter(|p| !p.is_empty()))
}

/// Both client configs for `settings`, from their files (or the system's roots).
fn load(settings: &Settings) -> Result<Loaded, String> {
    // The paths come from the config: only regular files of a PEM's size are read, so a
    // device or a pipe named there cannot hang the thread that reads it.
    for (field, path) in [
        ("ca", &settings.ca),
        ("client_cert", &settings.client_cert),
        ("client_key", &settings.client_key),
    ] {
        if path.is_empty() {
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{field} {path}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{field} {path}: not a regular file"));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!(
                "{field} {path}: {} bytes, more than a PEM file of certificates or a key ({} KiB at most)",
                meta.len(),
                MAX_FILE_BYTES / 1024
            ));
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    if settings.ca.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(
                "ca: not given, and this host has no system CA certificates; name a CA file"
                    .to_string(),
            );
        }
    } else {
        let ca = &settings.ca;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("ca {ca}: cannot read it: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca {ca}: not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("ca {ca}: holds no certificate"));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca {ca}: not a CA certificate: {e}"))?;
        }
    }
    if !settings.client_key.is_empty() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&settings.client_key).map_or(0, |m| m.permissions().mode());
        if mode & 0o004 != 0 {
            tracing::warn!(
                key = %settings.client_key,
                "an upstream TLS client key every user of this host can read; make it private (chmod o-r)"
            );
        }
    }
    let client = (!settings.client_cert.is_empty())
        .then(|| {
            grayline_proto::tls::certified_key(
                Path::new(&settings.client_cert),
                Path::new(&settings.client_key),
                ("client_cert", "client_key"),
            )
            .map(Arc::new)
        })
        .transpose()?;
    let roots = Arc::new(roots);
    let config = |alpn: &[u8]| -> Result<tokio_rustls::TlsConnector, String> {
        let builder = rustls::ClientConfig::builder_with_provider(grayline_proto::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS 1.2 and 1.3 with aws-lc: {e}"))?
            .with_root_certificates(roots.clone());
        let mut config = match &client {
            Some(key) => builder.with_client_cert_resolver(Arc::new(
                rustls::sign::SingleCertAndKey::from(key.clone()),
            )),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    };
    Ok(Loaded {
        http1: config(b"http/1.1")?,
        h2: config(b"h2")?,
    })
}

/// hyper-util's way to an endpoint over TLS: TCP to the URI's authority, then the handshake.
#[derive(Clone, Debug)]
pub struct Connector {
    shared: Arc<Shared>,
    alpn: Alpn,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsConnection>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (shared, alpn) = (self.shared.clone(), self.alpn);
        Box::pin(async move {
            let authority = uri.authority().cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host"))
            })?;
            let tcp = connect_tcp(&authority, 443).await?;
            let tls = shared.handshake(tcp, &authority, alpn).await?;
            Ok(TokioIo::new(TlsConnection(tls)))
        })
    }
}

/// A TLS connection to an endpoint, as hyper-util's pool wants one: it says whether the
/// endpoint agreed to HTTP/2.
#[derive(Debug)]
pub struct TlsConnection(TlsStream<TcpStream>);

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.get_ref();
        let connected = tcp.connected();
        if session.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
