//! TLS termination: the certificate is served by a resolver that can be reloaded (SIGHUP or
//! a changed file, as when Kubernetes updates a mounted Secret) without a restart. ALPN
//! offers HTTP/1.1 only, so refresh grants always take the one HTTP/1.1 path that is tested
//! end to end.

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("TLS certificate {cert} / key {key}: {message}")]
pub struct CertError {
    cert: String,
    key: String,
    message: String,
}

/// Serves the current certificate; `reload` swaps in a new one.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let error = |message: String| CertError {
        cert: cert_file.display().to_string(),
        key: key_file.display().to_string(),
        message,
    };
    pingora::tls::install_default_crypto_provider();
    let (certs, key) = pingora::tls::load_certs_and_key_files(
        &cert_file.display().to_string(),
        &key_file.display().to_string(),
    )
    .map_err(|e| error(e.to_string()))?
    .ok_or_else(|| error("no certificate or key found".to_owned()))?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| error("no TLS crypto provider installed".to_owned()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| error(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing_key)))
}

impl ReloadingCert {
    /// Load the certificate chain and key (PEM).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, CertError> {
        let key = load(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new((key, modified(cert_file).max(modified(key_file)))),
        }))
    }

    /// Load the files again; on failure keep serving the previous certificate.
    pub fn reload(&self) -> Result<(), CertError> {
        let key = load(&self.cert_file, &self.key_file)?;
        let stamp = modified(&self.cert_file).max(modified(&self.key_file));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (key, stamp);
        Ok(())
    }

    /// Reload when either file changed since the last load.
    pub fn reload_if_changed(&self) -> Option<Result<(), CertError>> {
        let stamp = modified(&self.cert_file).max(modified(&self.key_file));
        let known = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        (stamp != known).then(|| self.reload())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}

/// Pingora TLS settings serving `cert` with ALPN `http/1.1` only.
pub fn settings(cert: Arc<ReloadingCert>) -> pingora::listeners::tls::TlsSettings {
    let mut settings = pingora::listeners::tls::TlsSettings::with_callbacks(Box::new(NoCallbacks))
        .expect("TLS settings with a resolver");
    settings.set_cert_resolver(cert);
    settings.set_alpn(pingora::protocols::ALPN::H1);
    settings
}

struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}
