//! Owns the server certificate: loading the chain and key from PEM files, generating a
//! self-signed certificate for localhost when none is configured, and swapping in a new one on
//! SIGHUP. Established connections keep the certificate they were shown (they never look at it
//! again); only new handshakes see the swap. A file that fails to load keeps the old
//! certificate in place.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where the certificate comes from.
pub enum CertSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// The resolver handed to rustls: every handshake reads the current certificate.
pub struct CertStore {
    source: CertSource,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    /// Loads (or generates) the certificate. Errors are one line naming the key and the file.
    pub fn new(source: CertSource, provider: Arc<CryptoProvider>) -> Result<CertStore, String> {
        let current = match &source {
            CertSource::Files { cert, key } => load(cert, key, &provider)?,
            CertSource::SelfSigned => self_signed(&provider)?,
        };
        Ok(CertStore {
            source,
            provider,
            current: RwLock::new(Arc::new(current)),
        })
    }

    /// Re-reads the files (SIGHUP). On error the old certificate stays and the error says why.
    /// Returns whether anything changed.
    pub fn reload(&self) -> Result<bool, String> {
        let CertSource::Files { cert, key } = &self.source else {
            return Ok(false);
        };
        let fresh = load(cert, key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(true)
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads a PEM chain and key and checks that they belong together.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "tls.key: cannot read a PEM private key from {}: {}",
            key.display(),
            pem_error(&e)
        )
    })?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        format!(
            "tls.key: {} does not fit the certificate in {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let err = |why: String| format!("tls.cert: cannot read {}: {why}", cert.display());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_error(&e)))?;
    if chain.is_empty() {
        return Err(err("no PEM CERTIFICATE block in the file".into()));
    }
    Ok(chain)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind".into(),
        other => format!("{other:?}"),
    }
}

/// The names a generated certificate covers.
fn self_signed_names() -> Vec<String> {
    vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ]
}

/// A fresh ECDSA P-256 certificate for localhost, 127.0.0.1 and ::1.
fn self_signed(provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let generated = rcgen::generate_simple_self_signed(self_signed_names())
        .map_err(|e| format!("tls: cannot generate a self-signed certificate: {e}"))?;
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    CertifiedKey::from_der(vec![cert], key, provider)
        .map_err(|e| format!("tls: the generated certificate is unusable: {e}"))
}

/// The same kind of certificate as PEM (certificate, key), for a supervisor to hand one
/// certificate to all its processes.
pub fn self_signed_pem() -> Result<(String, String), String> {
    let generated = rcgen::generate_simple_self_signed(self_signed_names())
        .map_err(|e| format!("tls: cannot generate a self-signed certificate: {e}"))?;
    Ok((generated.cert.pem(), generated.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn self_signed_is_generated_for_localhost() {
        let store = CertStore::new(CertSource::SelfSigned, provider()).unwrap();
        assert_eq!(store.current().cert.len(), 1);
        assert!(!store.reload().unwrap(), "nothing to reload");
    }

    #[test]
    fn missing_files_name_the_key_and_the_file() {
        let source = CertSource::Files {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = CertStore::new(source, provider()).unwrap_err();
        assert!(
            err.starts_with("tls.cert: cannot read /nonexistent/cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_reload_keeps_the_old_certificate() {
        let dir = std::env::temp_dir().join(format!("holdfast-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let g = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, g.cert.pem()).unwrap();
        std::fs::write(&key, g.signing_key.serialize_pem()).unwrap();
        let store = CertStore::new(
            CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            provider(),
        )
        .unwrap();
        let before = store.current().cert[0].clone();
        std::fs::write(&cert, "garbage").unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.contains("tls.cert"), "{err}");
        assert_eq!(store.current().cert[0], before);
        // A key that belongs to another certificate is refused too.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, g.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.starts_with("tls.key"), "{err}");
        std::fs::write(&key, g.signing_key.serialize_pem()).unwrap();
        std::fs::write(&cert, other.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(store.reload().unwrap());
        assert_ne!(store.current().cert[0], before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
