//! TLS helpers shared by berth's parts: the client configuration that accepts any server
//! certificate — for https probes and lifecycle hooks (upstream's kubelet does not verify
//! them either), for nodes that announce a self-signed endpoint certificate, and for
//! benchmark clients. The handshake's signatures are still checked; only the certificate
//! chain and name are not.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// A client configuration builder (ring provider, safe default protocol versions) that
/// accepts any server certificate; finish it with `with_no_client_auth()` or
/// `with_client_auth_cert(..)`.
pub fn insecure_client_builder(
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))))
}

/// Accepts any server certificate whose handshake signatures hold (checked with the
/// provider's algorithms).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A handshake with a server whose certificate is self-signed for another name succeeds,
    /// and data flows.
    #[test]
    fn self_signed_servers_are_accepted() {
        let cert =
            rcgen::generate_simple_self_signed(vec!["somewhere.else".into()]).expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
        let client = insecure_client_builder()
            .expect("builder")
            .with_no_client_auth();
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let served = std::thread::spawn(move || {
            let conn = rustls::ServerConnection::new(Arc::new(server)).expect("server");
            let mut tls = rustls::StreamOwned::new(conn, b);
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).expect("read");
            buf
        });
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
        let mut tls = rustls::StreamOwned::new(conn, a);
        tls.write_all(b"hello").expect("write");
        tls.flush().expect("flush");
        assert_eq!(&served.join().expect("server thread"), b"hello");
    }
}
