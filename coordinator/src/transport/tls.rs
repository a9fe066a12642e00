//! TLS for the coordinator's listener (rustls): the certificate and key from PEM files, swapped atomically when they
//! are reloaded (SIGHUP) so that the listener and its open connections are never dropped, and optional client
//! certificates (mTLS) verified against `--client-ca`.
//!
//! Client certificates are *requested*, not required, at the handshake: operators and `/healthz` connect without
//! one, and the HTTP layer refuses participant routes on a connection that did not present a verified one
//! ([`PeerTls`]). A certificate that is presented but does not chain to the CA fails the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Why TLS could not be set up; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{path}: the private key does not belong to the certificate ({detail})")]
    KeyMismatch { path: PathBuf, detail: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the coordinator's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign participants' client certificates (mTLS); `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// What a connection's TLS told about the peer, attached to every request of that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTls {
    /// The listener asks for client certificates (`--client-ca`): participant routes need one.
    pub client_cert_required: bool,
    /// The peer presented a client certificate that chains to `--client-ca` (rustls verified it at the handshake).
    pub client_cert_verified: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_err(path: &Path, detail: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, format!("cannot read PEM certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// Reads and checks a certificate chain and its key (the key must match the leaf certificate).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("cannot read a PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| TlsError::KeyMismatch {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The server certificate, swapped atomically by [`ReloadingCert::reload`]: new handshakes use the new one, open
/// connections keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl ReloadingCert {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(load_certified_key(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// Re-reads both files; on any error the current certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_certified_key(&self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls configuration of the listener and the handle that reloads its certificate.
pub fn server_config(
    files: &TlsFiles,
) -> Result<(Arc<ServerConfig>, Arc<ReloadingCert>), TlsError> {
    let cert = Arc::new(ReloadingCert::load(&files.cert, &files.key)?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| file_err(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_err(ca, format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert.clone());
    // HTTP/1.1 only: the server speaks nothing else (no h2 over ALPN).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert))
}

/// Reloads the certificate and key on every SIGHUP, logging the outcome (a bad file keeps the old certificate).
pub fn reload_on_sighup(cert: Arc<ReloadingCert>) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match cert.reload() {
                Ok(()) => tracing::info!(cert = %cert.cert.display(), "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate NOT reloaded; the previous one stays in use")
                }
            }
        }
    });
    Ok(())
}
