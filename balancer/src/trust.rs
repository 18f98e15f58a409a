//! Which certificates the balancer trusts when a node's endpoint is
//! `https://`: the system's roots, plus a private CA the operator names
//! (nodes of a private network often carry certificates of their own CA).
//! Plain `http://` endpoints keep working beside them.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::BalancerError;

/// The certificate authorities node certificates are verified against.
#[derive(Debug, Clone, Default)]
pub struct NodeTrust {
    /// A private CA's certificates, PEM.
    private_ca: Option<Vec<u8>>,
}

impl NodeTrust {
    /// The system's roots and the CA certificates in `pem`.
    ///
    /// # Errors
    /// [`BalancerError::Tls`] when `pem` holds no certificate.
    pub fn with_private_ca(pem: Vec<u8>) -> Result<Self, BalancerError> {
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BalancerError::Tls(format!("private CA: {e}")))?;
        // A certificate that cannot be parsed is refused here rather than
        // silently left out of the trust store.
        let (valid, invalid) = RootCertStore::empty().add_parsable_certificates(certs);
        if valid == 0 || invalid > 0 {
            return Err(BalancerError::Tls(format!(
                "the private CA file must hold PEM CA certificates only ({valid} usable, {invalid} not)"
            )));
        }
        Ok(Self {
            private_ca: Some(pem),
        })
    }

    fn system_roots() -> Vec<CertificateDer<'static>> {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::warn!(errors = ?found.errors, "no system root certificates: only a private CA verifies https nodes");
        }
        found.certs
    }

    /// The connector of every request to nodes (S3 and health probes),
    /// reaching `http://` and `https://` nodes alike and verifying
    /// certificates against the system's roots and the private CA.
    pub(crate) fn connector(&self, http: HttpConnector) -> HttpsConnector<HttpConnector> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(Self::system_roots());
        if let Some(pem) = &self.private_ca {
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).flatten());
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http)
    }
}
