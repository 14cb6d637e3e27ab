//! The serving certificate of this machine's node endpoint (logs, exec, attach): issued by
//! the cluster CA in-process for `berth server`; for `berth agent` the files given with
//! `--kubelet-cert`/`--kubelet-key`, or else a self-signed one kept in `<data-dir>/pki`
//! (there is no CertificateSigningRequest API yet), which the Node then announces so the
//! API server knows not to verify it against the cluster CA.

use anyhow::Context;
use berth_node::server::KubeletTls;
use std::net::IpAddr;
use std::path::Path;

/// The names and addresses the node's certificate is valid for.
fn subject_names(node_name: &str) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec![node_name.to_string(), "localhost".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_lowercase();
        if !h.is_empty() && !dns.contains(&h) {
            dns.push(h);
        }
    }
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if let Some(ip) = berth_node::host::primary_address() {
        ips.push(ip);
    }
    (dns, ips)
}

/// `berth server`: a certificate for this node signed by the cluster CA in `pki_dir`.
pub fn issued_by_cluster_ca(pki_dir: &Path, node_name: &str) -> anyhow::Result<KubeletTls> {
    let ca = berth_apiserver::pki::ClusterCa::load_or_create(pki_dir)
        .context("failed to load the cluster CA")?;
    let (dns, ips) = subject_names(node_name);
    let pair = ca
        .server_cert(&dns, &ips)
        .context("failed to issue the node's serving certificate")?;
    Ok(KubeletTls {
        cert_pem: pair.cert_pem,
        key_pem: pair.key_pem,
        client_ca_pem: ca.cert_pem.clone(),
    })
}

/// `berth agent`: the given certificate files, or a self-signed certificate (made once and
/// kept in `<data_dir>/pki`). Returns whether it is self-signed.
pub fn for_agent(
    cert: Option<&Path>,
    key: Option<&Path>,
    cluster_ca: &Path,
    data_dir: &Path,
    node_name: &str,
) -> anyhow::Result<(KubeletTls, bool)> {
    let client_ca_pem = std::fs::read_to_string(cluster_ca)
        .with_context(|| format!("failed to read {}", cluster_ca.display()))?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("failed to read {}", p.display()))
    };
    match (cert, key) {
        (Some(c), Some(k)) => Ok((
            KubeletTls {
                cert_pem: read(c)?,
                key_pem: read(k)?,
                client_ca_pem,
            },
            false,
        )),
        (None, None) => {
            let dir = data_dir.join("pki");
            let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
            if !(crt.exists() && key.exists()) {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
                let (dns, ips) = subject_names(node_name);
                let mut params = rcgen::CertificateParams::new(dns)
                    .context("failed to make the node's certificate")?;
                params
                    .subject_alt_names
                    .extend(ips.into_iter().map(rcgen::SanType::IpAddress));
                let key_pair =
                    rcgen::KeyPair::generate().context("failed to make the node's key")?;
                let cert = params
                    .self_signed(&key_pair)
                    .context("failed to sign the node's certificate")?;
                berth_apiserver::pki::write_private(&key, &key_pair.serialize_pem())
                    .context("failed to save the node's key")?;
                std::fs::write(&crt, cert.pem())
                    .with_context(|| format!("failed to write {}", crt.display()))?;
            }
            Ok((
                KubeletTls {
                    cert_pem: read(&crt)?,
                    key_pem: read(&key)?,
                    client_ca_pem,
                },
                true,
            ))
        }
        _ => anyhow::bail!("--kubelet-cert and --kubelet-key go together"),
    }
}
