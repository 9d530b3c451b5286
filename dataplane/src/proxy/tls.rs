//! TLS on the proxy's client listener, for edge use (`--listen-tls-cert/--listen-tls-key`,
//! and `--listen-tls-sni host=cert.pem:key.pem` for more host names): rustls with aws-lc,
//! TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN. The certificate a client gets is the one
//! named for the host it asks for (SNI), else the default pair. Read at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|name| self.hosts.get(&name.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

/// The listener's TLS config: the default pair, and one per SNI host.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    sni: &[SniPair],
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
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
    let mut config = rustls::ServerConfig::builder_with_provider(grayline_proto::tls::provider())
        .with_safe_default_protocol_versions()
        .context("TLS 1.2 and 1.3 with aws-lc")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { default, hosts }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
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
