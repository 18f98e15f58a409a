//! Which certificates the balancer trusts when a node's endpoint is
//! `https://`: the system's roots, plus a private CA the operator names
//! (nodes of a private network often carry certificates of their own CA).
//! Plain `http://` endpoints keep working beside them.

use std::sync::Arc;

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
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
        // The SDK's client panics on a certificate it cannot parse: refuse
        // any here.
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

    /// The shared client of the S3 requests to nodes (pooled keep-alive
    /// connections, `TCP_NODELAY` on) and a connector for the health probes
    /// over `http`, both reaching `http://` and `https://` nodes and
    /// verifying certificates alike. The system's roots are read once for
    /// both.
    pub(crate) fn clients(
        &self,
        http: HttpConnector,
    ) -> (SharedHttpClient, HttpsConnector<HttpConnector>) {
        let system = Self::system_roots();
        let mut store = TrustStore::empty().with_native_roots(!system.is_empty());
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system);
        if let Some(pem) = &self.private_ca {
            store = store.with_pem_certificate(pem.clone());
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).flatten());
        }
        let context = TlsContext::builder().with_trust_store(store);
        let sdk = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::rustls(CryptoMode::Ring))
            .tls_context(context.build().unwrap_or_default())
            .build_https();
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let probe = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        (sdk, probe)
    }
}
