//! TLS as every Grayline binary uses it. Clients (the proxy, the CLI, a replica calling
//! another) reach a server at an `https://` URL, verified against a CA file when one is
//! given (else the system's roots), optionally presenting a client certificate; an
//! `http://` URL stays plaintext, and is refused when TLS settings were given for it (they
//! would silently do nothing). Listeners (the server's, the proxy's) load their certificate
//! pairs with [`certified_key`], on [`provider`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// TLS settings of a client, as its flags give them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA certificates the server's certificate must chain to (`--server-ca`, `--ca`).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, PEM.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// What the flags are called, for messages: `(ca, cert, key)`.
    pub flags: (&'static str, &'static str, &'static str),
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

impl ClientTls {
    /// Whether any TLS setting was given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// tonic's config for these settings (files read now; an error names the flag).
    pub fn config(&self) -> Result<ClientTlsConfig, String> {
        let mut config = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &self.ca {
            let pem = read(ca, self.flags.0)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(format!(
                    "{} {}: holds no PEM certificate",
                    self.flags.0,
                    ca.display()
                ));
            }
            config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &self.identity {
            let identity = Identity::from_pem(read(cert, self.flags.1)?, read(key, self.flags.2)?);
            config = config.identity(identity);
        }
        Ok(config)
    }

    /// An endpoint for `url`: TLS for `https://`, plaintext for `http://` (refused when TLS
    /// settings were given).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("`{url}` is not a URL like https://host:7070: {e}"))?;
        if url.starts_with("https://") {
            return endpoint
                .tls_config(self.config()?)
                .map_err(|e| format!("TLS for {url}: {e}"));
        }
        if self.is_set() {
            return Err(format!(
                "{url} is plaintext but TLS settings were given ({}); use https://",
                [self.flags.0, self.flags.1]
                    .into_iter()
                    .zip([self.ca.is_some(), self.identity.is_some()])
                    .filter(|(_, set)| *set)
                    .map(|(flag, _)| flag)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(endpoint)
    }
}

/// What tells a changed file from the one read: its modification time and length, for each
/// of `paths` in order (`None` and 0 for one that cannot be read). Every reloading TLS
/// setting compares these.
pub type Stamps = Vec<(Option<std::time::SystemTime>, u64)>;

/// The [`Stamps`] of `paths`, now.
pub fn stamps<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Stamps {
    paths
        .into_iter()
        .map(|p| std::fs::metadata(p.as_ref()).map_or((None, 0), |m| (m.modified().ok(), m.len())))
        .collect()
}

/// The crypto every Grayline TLS endpoint uses: aws-lc.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its key: the chain is PEM with one certificate
/// at least, the key a PEM private key (PKCS#8, PKCS#1 or SEC1) that matches the first. The
/// error names the flag (`cert_flag`, `key_flag`) and the file at fault.
pub fn certified_key(
    cert: &Path,
    key: &Path,
    (cert_flag, key_flag): (&str, &str),
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert_flag} {}: cannot read it: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_flag} {}: not PEM certificates: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_flag} {}: holds no certificate",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{key_flag} {}: not a PEM private key: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        format!(
            "{key_flag} {} does not go with {cert_flag} {}: {e}",
            key.display(),
            cert.display()
        )
    })
}
