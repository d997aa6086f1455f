//! TLS material: the certificate chain and key from PEM files, turned into a rustls
//! server configuration, and the shared slot that SIGHUP refreshes.
//!
//! Owns: loading and validating `tls.cert` / `tls.key`, the protocol versions (TLS
//! 1.2 and 1.3, rustls' safe defaults, ring provider), and [`TlsSlot`]. Must not:
//! do I/O on a connection; the reactor drives rustls itself (no async).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS material cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Builds the server configuration from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The current TLS configuration, shared by all reactors. SIGHUP replaces it;
/// connections already in TLS keep the one they started with.
#[derive(Debug, Default)]
pub struct TlsSlot {
    current: RwLock<Option<Arc<ServerConfig>>>,
}

impl TlsSlot {
    pub fn new(config: Option<Arc<ServerConfig>>) -> Self {
        Self {
            current: RwLock::new(config),
        }
    }

    pub fn get(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    pub fn set(&self, config: Arc<ServerConfig>) {
        if let Ok(mut c) = self.current.write() {
            *c = Some(config);
        }
    }
}
