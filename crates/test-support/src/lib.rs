//! Test helpers shared by the workspace: a self-signed certificate, rustls configs that use
//! the ring provider, and connected TLS client/server pairs over memory or TCP.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::DuplexStream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// A certificate for `localhost` and `127.0.0.1`, with its key.
#[derive(Debug)]
pub struct TestCert {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The private key, DER.
    pub key: PrivateKeyDer<'static>,
}

impl TestCert {
    /// Makes a fresh self-signed certificate.
    pub fn new() -> Self {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen makes a cert");
        TestCert {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()).into(),
        }
    }

    /// A server config with this certificate, advertising `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .expect("the test certificate is valid");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A client config that trusts only this certificate, asking for `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.clone())
            .expect("the test certificate parses");
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

/// The crypto provider every test uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server name tests connect to.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid DNS name")
}

/// A TLS client and server connected through memory, handshake done.
pub async fn duplex_pair(
    buffer: usize,
) -> (
    client::TlsStream<DuplexStream>,
    server::TlsStream<DuplexStream>,
) {
    let cert = TestCert::new();
    let (client_io, server_io) = tokio::io::duplex(buffer);
    let connector = TlsConnector::from(cert.client_config(&[]));
    let acceptor = TlsAcceptor::from(cert.server_config(&[]));
    let (client, server) = tokio::join!(
        connector.connect(server_name(), client_io),
        acceptor.accept(server_io)
    );
    (
        client.expect("client handshake"),
        server.expect("server handshake"),
    )
}

/// A TLS client and server connected over loopback TCP, handshake done.
pub async fn tcp_pair() -> io::Result<(client::TlsStream<TcpStream>, server::TlsStream<TcpStream>)>
{
    let cert = TestCert::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let connector = TlsConnector::from(cert.client_config(&[]));
    let acceptor = TlsAcceptor::from(cert.server_config(&[]));
    let (client, server) = tokio::join!(
        async {
            let tcp = TcpStream::connect(addr).await?;
            connector.connect(server_name(), tcp).await
        },
        async {
            let (tcp, _) = listener.accept().await?;
            acceptor.accept(tcp).await
        }
    );
    Ok((client?, server?))
}
