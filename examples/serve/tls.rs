//! The example servers' TLS config: the given PEM files, or a self-signed certificate for
//! localhost and 127.0.0.1 made at start; ALPN h2 and http/1.1; the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the config from `cert` and `key` (PEM files) if both are given.
pub(crate) fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<ServerConfig>, BoxError> {
    let (chain, key) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            (chain, key)
        }
        _ => {
            let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            let certified = rcgen::generate_simple_self_signed(names)?;
            let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
            (vec![certified.cert.der().clone()], key.into())
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
