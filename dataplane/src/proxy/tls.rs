//! TLS on the proxy's client listener, for edge use (`--listen-tls-cert/--listen-tls-key`,
//! and `--listen-tls-sni host=cert.pem:key.pem` for more host names): rustls with aws-lc,
//! TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN. The certificate a client gets is the one
//! named for the host it asks for (SNI), else the default pair. The files are read at start
//! and again when any of them changes ([`ListenerCerts::reload_if_changed`], looked at every
//! [`WATCH_EVERY`]): new connections get the new certificates, open ones carry on, and files
//! that do not load keep the certificates in use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use grayline_proto::tls::Stamps;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A host name's own certificate: `host=cert.pem:key.pem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniPair {
    pub host: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Parses `host=cert.pem:key.pem` (the `--listen-tls-sni` form).
pub fn parse_sni(s: &str) -> Result<SniPair, String> {
    let (host, files) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not host=cert.pem:key.pem"))?;
    let (cert, key) = files
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: give the certificate and the key as cert.pem:key.pem"))?;
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() || cert.is_empty() || key.is_empty() {
        return Err(format!("`{s}` is not host=cert.pem:key.pem"));
    }
    Ok(SniPair {
        host,
        cert: cert.into(),
        key: key.into(),
    })
}

/// A pair as [`grayline_proto::tls::certified_key`] reads it, shared by the resolver.
fn load(cert: &Path, key: &Path, flags: (&str, &str)) -> anyhow::Result<Arc<CertifiedKey>> {
    grayline_proto::tls::certified_key(cert, key, flags)
        .map(Arc::new)
        .map_err(anyhow::Error::msg)
}

/// The certificate for a client's SNI, else the default one.
#[derive(Debug)]
struct BySni {
    default: Arc<CertifiedKey>,
    hosts: HashMap<String, Arc<CertifiedKey>>,
}

impl BySni {
    fn resolve(&self, hello: &ClientHello<'_>) -> Arc<CertifiedKey> {
        let named = hello
            .server_name()
            .and_then(|name| self.hosts.get(&name.to_ascii_lowercase()));
        named.unwrap_or(&self.default).clone()
    }
}

/// The listener's certificates, replaced when their files change.
#[derive(Debug)]
pub struct ListenerCerts {
    cert: PathBuf,
    key: PathBuf,
    sni: Vec<SniPair>,
    current: ArcSwap<BySni>,
    /// The files' modification times when last looked at.
    seen: Mutex<Stamps>,
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().resolve(&hello))
    }
}

impl ListenerCerts {
    fn open(cert: &Path, key: &Path, sni: &[SniPair]) -> anyhow::Result<ListenerCerts> {
        let seen = stamps(cert, key, sni);
        Ok(ListenerCerts {
            current: ArcSwap::from_pointee(load_all(cert, key, sni)?),
            seen: Mutex::new(seen),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            sni: sni.to_vec(),
        })
    }

    /// Reads the files again if any changed since they were last looked at; `Ok(true)` when
    /// the certificates in use were replaced. Files that do not load keep the ones in use,
    /// and are tried again at every look until they load.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = stamps(&self.cert, &self.key, &self.sni);
        if *self.seen.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        let loaded = load_all(&self.cert, &self.key, &self.sni)?;
        self.current.store(Arc::new(loaded));
        // Only a load that worked moves the stamps on: files caught half-written are read
        // again at the next look, whatever their times say.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(true)
    }

    /// Looks at the files every [`WATCH_EVERY`] until `stop`, logging what changed.
    pub async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(WATCH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(
                    cert = %self.cert.display(),
                    "listener certificates read again; new connections get them"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "listener certificate files changed but do not load; still serving the previous certificates"
                ),
            }
        }
    }
}

/// The files' modification times, in a fixed order.
fn stamps(cert: &Path, key: &Path, sni: &[SniPair]) -> Stamps {
    let named = sni.iter().flat_map(|p| [p.cert.as_path(), p.key.as_path()]);
    grayline_proto::tls::stamps([cert, key].into_iter().chain(named))
}

/// Every pair, from the files; the error names the flag and the file at fault.
fn load_all(cert: &Path, key: &Path, sni: &[SniPair]) -> anyhow::Result<BySni> {
    let default = load(cert, key, ("--listen-tls-cert", "--listen-tls-key"))?;
    let mut hosts = HashMap::new();
    for pair in sni {
        let certified = load(
            &pair.cert,
            &pair.key,
            ("--listen-tls-sni", "--listen-tls-sni"),
        )?;
        anyhow::ensure!(
            hosts.insert(pair.host.clone(), certified).is_none(),
            "--listen-tls-sni names {} twice",
            pair.host
        );
    }
    Ok(BySni { default, hosts })
}

/// The listener's TLS config (the default pair, and one per SNI host) and its certificates,
/// to watch for changes.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    sni: &[SniPair],
) -> anyhow::Result<(tokio_rustls::TlsAcceptor, Arc<ListenerCerts>)> {
    let certs = Arc::new(ListenerCerts::open(cert, key, sni)?);
    let mut config = rustls::ServerConfig::builder_with_provider(grayline_proto::tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS 1.2 and 1.3 with aws-lc")?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_pairs_parse_and_bad_ones_say_the_form() {
        assert_eq!(
            parse_sni("Shop.Example.com=/c.pem:/k.pem").unwrap(),
            SniPair {
                host: "shop.example.com".into(),
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
            }
        );
        for bad in ["shop", "shop=/c.pem", "=/c.pem:/k.pem"] {
            let e = parse_sni(bad).unwrap_err();
            assert!(e.contains("cert.pem:key.pem"), "{bad}: {e}");
        }
    }
}
