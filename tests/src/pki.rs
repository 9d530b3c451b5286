//! Certificates made at test time: a CA, and leaf certificates it signs for the names and
//! addresses a test serves on. Nothing is checked in.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test CA in a directory.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, PEM, as `ca.pem` in the directory.
    pub ca: PathBuf,
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
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by the CA, written as
    /// `<file>.pem` and `<file>.key` (replacing what is there).
    pub fn issue(&self, file: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, file);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        // The key first: a reader between the two writes sees a pair that does not match
        // (refused) rather than none.
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        leaf
    }
}
