//! TLS on the server's listeners (`--tls-cert`, `--tls-key`): rustls with aws-lc, TLS 1.2 and
//! 1.3 only, one certificate for the HTTP (console, JSON API) and gRPC listeners.
//!
//! The certificate is re-read when its files change: a task looks at both files' modification
//! times and sizes every [`WATCH_EVERY`], and a pair that loads (the chain parses, the key
//! matches it) replaces the one in use; new handshakes present it, connections already open
//! (proxy streams) carry on undisturbed. A pair that does not load is logged and the one in
//! use is kept, so a half-written rotation never takes the server off the network.
//!
//! Handshakes run in their own tasks (a slow or silent client holds up nobody else), bounded
//! by [`HANDSHAKE_TIMEOUT`]; what completes is handed to the HTTP server (axum, as a
//! [`Listener`]) or to tonic (as a stream of connections).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use grayline_proto::tls::{Stamps, provider, stamps};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain and key files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn stamp(files: &TlsFiles) -> Stamps {
    stamps([&files.cert, &files.key])
}

/// Reads and checks the pair (see [`grayline_proto::tls::certified_key`]).
pub fn load(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    grayline_proto::tls::certified_key(&files.cert, &files.key, ("--tls-cert", "--tls-key"))
        .map_err(anyhow::Error::msg)
}

/// The certificate in use, replaced when its files change.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    loaded: Mutex<Stamps>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloading {
    /// Loads the pair once; an error names the file at fault.
    pub fn open(files: TlsFiles) -> anyhow::Result<Arc<Reloading>> {
        let loaded = stamp(&files);
        let certified = load(&files)?;
        Ok(Arc::new(Reloading {
            current: ArcSwap::from_pointee(certified),
            loaded: Mutex::new(loaded),
            files,
        }))
    }

    /// Loads the pair again if either file changed since it was last loaded; `Ok(true)`
    /// when the certificate in use was replaced.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = stamp(&self.files);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == now {
            return Ok(false);
        }
        let certified = load(&self.files)?;
        self.current.store(Arc::new(certified));
        // Only a load that worked moves the stamps on: a pair caught half-written is read
        // again at the next look (and reported until it loads), whatever its times say.
        *loaded = now;
        Ok(true)
    }

    /// Watches the files until `stop`.
    pub fn spawn_watch(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        every(WATCH_EVERY, stop, move || match me.reload_if_changed() {
            Ok(true) => tracing::info!(
                cert = %me.files.cert.display(),
                "TLS certificate reloaded; new connections get it"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "TLS certificate files changed but do not load; still serving the previous certificate"
            ),
        });
    }

    /// A server config presenting this certificate, offering `alpn` (in order), and asking
    /// clients for a certificate of `clients` when given (one is not required at the
    /// handshake: the admin APIs share the listener; the proxy APIs require it).
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        clients: Option<&Arc<ClientVerifier>>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS 1.2 and 1.3 with aws-lc")?;
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The CA proxies' client certificates chain to (`--proxy-client-ca`), and certificate
/// revocation lists (`--proxy-client-crl`): a revoked or expired certificate fails the
/// handshake.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub crls: Vec<PathBuf>,
}

impl ClientAuth {
    fn verifier(&self) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.ca)
            .with_context(|| format!("--proxy-client-ca {}: cannot read it", self.ca.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!(
                    "--proxy-client-ca {}: not PEM certificates",
                    self.ca.display()
                )
            })?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--proxy-client-ca {}: holds no certificate",
            self.ca.display()
        );
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("--proxy-client-ca {}", self.ca.display()))?;
        }
        let mut crls = Vec::new();
        for path in &self.crls {
            for crl in rustls::pki_types::CertificateRevocationListDer::pem_file_iter(path)
                .with_context(|| format!("--proxy-client-crl {}: cannot read it", path.display()))?
            {
                crls.push(crl.with_context(|| {
                    format!("--proxy-client-crl {}: not a PEM CRL", path.display())
                })?);
            }
        }
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls(crls)
            .allow_unauthenticated()
            .build()
            .context("--proxy-client-ca, --proxy-client-crl")
    }
}

/// The proxies' client-certificate verifier, built again when a revocation list changes
/// (looked at every [`WATCH_EVERY`]): a certificate revoked by a new list fails the next
/// handshake, without a restart. The CA file is read again with the lists; the CA names the
/// server sends clients as hints stay those read at start.
#[derive(Debug)]
pub struct ClientVerifier {
    auth: ClientAuth,
    current: ArcSwap<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    hints: Vec<rustls::DistinguishedName>,
    /// The revocation lists' modification times when last looked at.
    seen: Mutex<Stamps>,
}

fn crl_stamps(auth: &ClientAuth) -> Stamps {
    stamps(&auth.crls)
}

impl ClientVerifier {
    /// Reads the CA and the revocation lists; an error names the flag and the file.
    pub fn open(auth: ClientAuth) -> anyhow::Result<Arc<ClientVerifier>> {
        let seen = crl_stamps(&auth);
        let verifier = auth.verifier()?;
        Ok(Arc::new(ClientVerifier {
            hints: verifier.root_hint_subjects().to_vec(),
            current: ArcSwap::from_pointee(verifier),
            seen: Mutex::new(seen),
            auth,
        }))
    }

    /// Builds the verifier again if a revocation list changed; `Ok(true)` when replaced.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = crl_stamps(&self.auth);
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        self.current.store(Arc::new(self.auth.verifier()?));
        // Only a load that worked moves the stamps on (see `Reloading::reload_if_changed`).
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(true)
    }

    /// Watches the revocation lists until `stop`.
    pub fn spawn_watch(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        every(WATCH_EVERY, stop, move || match me.reload_if_changed() {
            Ok(true) => tracing::info!("proxy certificate revocation lists read again"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "proxy certificate revocation lists changed but do not load; the ones in use stay"
            ),
        });
    }
}

impl rustls::server::danger::ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current.load().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// Whether the certificate `der` (already verified against the proxies' CA) names proxy
/// `id` among its DNS names.
pub fn certifies(der: &[u8], id: &str) -> bool {
    let der = CertificateDer::from(der);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(id) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Runs `check` every `period` until `stop`, on the runtime: how the server notices files it
/// re-reads when they change (the TLS pair, the tokens directory).
pub fn every(period: Duration, stop: CancellationToken, mut check: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => check(),
                () = stop.cancelled() => return,
            }
        }
    });
}

/// A connection whose handshake completed, and its peer.
pub type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// Accepts on `listener` until `stop`, each handshake in its own task; completed ones come
/// out of the receiver.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    // A plaintext client, an untrusting one, a port scan: theirs to report.
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// Completed TLS connections as axum's listener.
#[derive(Debug)]
pub struct TlsListener {
    pub accepted: mpsc::Receiver<Accepted>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped (shutdown): nothing more comes; the server's graceful
            // shutdown ends the serve loop meanwhile.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Whether serving on `addr` without TLS stays on this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_pair_loads_and_a_bad_one_is_named_and_the_old_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "one.test");
        let reloading = Reloading::open(files.clone()).unwrap();
        let first = reloading.current.load_full();
        assert!(!reloading.reload_if_changed().unwrap(), "nothing changed");

        // A key of another certificate: refused, the old pair stays.
        let other = rcgen::generate_simple_self_signed(vec!["two.test".into()]).unwrap();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        let e = reloading.reload_if_changed().unwrap_err();
        assert!(
            format!("{e:#}").contains("does not go with --tls-cert"),
            "{e:#}"
        );
        assert!(Arc::ptr_eq(&first, &reloading.current.load_full()));

        // The matching certificate follows: replaced.
        std::fs::write(&files.cert, other.cert.pem()).unwrap();
        assert!(reloading.reload_if_changed().unwrap());
        assert_eq!(
            reloading.current.load().cert[0].as_ref(),
            other.cert.der().as_ref()
        );

        std::fs::write(&files.cert, "not a certificate").unwrap();
        let e = load(&files).unwrap_err();
        assert!(format!("{e:#}").contains("--tls-cert"), "{e:#}");
    }
}
