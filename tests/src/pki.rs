//! Certificates made at test time: a CA, and leaf certificates it signs for the names and
//! addresses a test serves on. Nothing is checked in.

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// A test CA in a directory.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM, as `ca.pem` in the directory.
    pub ca: PathBuf,
    /// The next serial number.
    serial: AtomicU64,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca", &self.ca).finish()
    }
}

/// A leaf certificate's files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, DER, to compare with what a server presents.
    pub der: Vec<u8>,
    pub serial: u64,
    /// SHA-256 of its public key (SPKI), base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes to trust it.
    pub spki_sha256: String,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca,
            serial: AtomicU64::new(1),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by the CA, written as
    /// `<file>.pem` and `<file>.key` (replacing what is there).
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        self.issue_until(file, names, OffsetDateTime::now_utc() + Duration::days(1))
    }

    /// [`Pki::issue`] for a certificate that expired an hour ago.
    pub fn issue_expired(&self, file: &str, names: &[&str]) -> Leaf {
        self.issue_until(file, names, OffsetDateTime::now_utc() - Duration::hours(1))
    }

    /// A certificate revocation list of the CA revoking `leaves`, written as `<file>.pem`.
    pub fn revoke(&self, file: &str, leaves: &[&Leaf]) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: leaves
                .iter()
                .map(|l| RevokedCertParams {
                    serial_number: SerialNumber::from(l.serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("crl");
        let path = self.dir.join(format!("{file}.pem"));
        std::fs::write(&path, crl.pem().expect("crl pem")).expect("write crl");
        path
    }

    fn issue_until(&self, file: &str, names: &[&str], not_after: OffsetDateTime) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = not_after;
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
            serial,
            spki_sha256: {
                use base64::Engine as _;
                use sha2::Digest as _;
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(
                    rcgen::PublicKeyData::subject_public_key_info(&key),
                ))
            },
        };
        // The key first: a reader between the two writes sees a pair that does not match
        // (refused) rather than none.
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        leaf
    }
}
