//! The cluster's certificates: a CA made on first start and kept in `<data-dir>/pki`, the
//! serving certificate, client certificates (user = CN, groups = O) and the admin kubeconfig.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Errors while making or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to build certificate {name}: {source}")]
    Cert { name: String, source: rcgen::Error },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, able to sign new certificates.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as written on disk (what clients trust).
    pub cert_pem: String,
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        what: "read",
        path: path.into(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|source| PkiError::Io {
            what: "create",
            path: tmp.clone(),
            source,
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| PkiError::Io {
            what: "write",
            path: tmp.clone(),
            source,
        })?;
    fs::rename(&tmp, path).map_err(|source| PkiError::Io {
        what: "rename",
        path: path.into(),
        source,
    })
}

fn cert_err(name: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        name: name.to_string(),
        source,
    }
}

impl ClusterCa {
    /// Loads the CA from `dir` (`ca.crt`, `ca.key`) or makes and saves a new one.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            what: "create",
            path: dir.into(),
            source,
        })?;
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if crt.exists() && key.exists() {
            let cert_pem = read(&crt)?;
            let key = KeyPair::from_pem(&read(&key)?).map_err(cert_err("ca"))?;
            let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(cert_err("ca"))?;
            // Re-signing yields a certificate with the same subject and key, which is all
            // that signing needs; clients keep trusting the PEM on disk.
            let cert = params.self_signed(&key).map_err(cert_err("ca"))?;
            return Ok(ClusterCa {
                cert,
                key,
                cert_pem,
            });
        }
        let key = KeyPair::generate().map_err(cert_err("ca"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "berth-ca");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(cert_err("ca"))?;
        let cert_pem = cert.pem();
        write(&key_path(dir), &key.serialize_pem(), true)?;
        write(&crt, &cert_pem, false)?;
        Ok(ClusterCa {
            cert,
            key,
            cert_pem,
        })
    }

    /// Signs a client certificate for `user` in `groups`.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, user)
    }

    /// Signs a serving certificate for the given DNS names and IP addresses.
    pub fn server_cert(
        &self,
        dns: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<CertPair, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "berth-apiserver");
        params.distinguished_name = dn;
        for d in dns {
            let name = d.clone().try_into().map_err(cert_err(d))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "apiserver")
    }

    fn sign(&self, params: CertificateParams, name: &str) -> Result<CertPair, PkiError> {
        let key = KeyPair::generate().map_err(cert_err(name))?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_err(name))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// Loads `<dir>/<name>.crt|.key` or signs and saves a new client certificate.
pub fn load_or_create_client(
    ca: &ClusterCa,
    dir: &Path,
    name: &str,
    user: &str,
    groups: &[&str],
) -> Result<CertPair, PkiError> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if crt.exists() && key.exists() {
        return Ok(CertPair {
            cert_pem: read(&crt)?,
            key_pem: read(&key)?,
        });
    }
    let pair = ca.client_cert(user, groups)?;
    write(&key, &pair.key_pem, true)?;
    write(&crt, &pair.cert_pem, false)?;
    Ok(pair)
}

/// A kubeconfig for `server` trusting `ca_pem` and authenticating with `client`.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertPair, user: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: {user}\ncurrent-context: berth\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\n",
        ca = b64(ca_pem),
        crt = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write(path, contents, true)
}
