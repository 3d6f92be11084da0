//! Owns the TLS client setup: one rustls `ClientConfig` per process (so its in-memory session
//! store lets later connections resume: TLS 1.3 tickets, TLS 1.2 session IDs or tickets),
//! trusting a `--ca` PEM file or, with `--insecure`, any certificate at all; and the store that
//! forgets every session, for full handshakes that still offer tickets, or counts TLS 1.3
//! tickets, for a client that waits for one.

use crate::cli::{Common, TlsVersion};
use rustls::NamedGroup;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What each TLS connection is built from.
pub struct TlsPlan {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// Builds the shared client configuration from the TLS flags.
pub fn plan(args: &Common, host: &str) -> Result<TlsPlan, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match args.tls_version {
        TlsVersion::V12 => &[&rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
        TlsVersion::Any => rustls::ALL_VERSIONS,
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls: {e}"))?;
    let mut config = match (&args.ca, args.insecure) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        (Some(path), false) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {}: no certificates", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, false) => {
            return Err("a TLS URL needs --ca FILE or --insecure".into());
        }
    };
    config.resumption = if args.no_resume {
        rustls::client::Resumption::disabled()
    } else {
        rustls::client::Resumption::in_memory_sessions(256)
    };
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| format!("--url host {host:?}: {e}"))?;
    Ok(TlsPlan {
        config: Arc::new(config),
        name,
    })
}

/// Makes every handshake of `plan` a full one that still looks like a first visit: the client
/// offers session tickets and takes them, but never keeps a session to resume (unlike
/// `Resumption::disabled()`, after which the server issues no ticket at all).
pub fn forget_sessions(plan: &mut TlsPlan) {
    use_store(plan, Arc::new(Forgetful));
}

/// Makes the plan's session store count the TLS 1.3 tickets it is given (see
/// [`tickets_stored`]), for a client that must not close before its ticket has arrived.
pub fn count_tickets(plan: &mut TlsPlan) {
    use_store(
        plan,
        Arc::new(Counting {
            inner: ClientSessionMemoryCache::new(256),
            tls13: Mutex::new(VecDeque::new()),
        }),
    );
}

/// Replaces the plan's session store (the rest of its configuration stays).
fn use_store(plan: &mut TlsPlan, store: Arc<dyn ClientSessionStore>) {
    let mut config = (*plan.config).clone();
    config.resumption = rustls::client::Resumption::store(store);
    plan.config = Arc::new(config);
}

static TICKETS: AtomicU64 = AtomicU64::new(0);

/// TLS 1.3 tickets stored so far by stores that [`count_tickets`] made. The loop is single
/// threaded, so a rise across one connection's read means that connection got a ticket.
pub fn tickets_stored() -> u64 {
    TICKETS.load(Ordering::Relaxed)
}

/// TLS 1.3 tickets kept at most (each is used once; rustls's own store keeps 8 per server,
/// fewer than the connections a run keeps in flight).
const TLS13_TICKETS: usize = 4096;

/// The in-memory store, with a deeper pool of TLS 1.3 tickets, counting them as they go in.
#[derive(Debug)]
struct Counting {
    inner: ClientSessionMemoryCache,
    tls13: Mutex<VecDeque<Tls13ClientSessionValue>>,
}

impl ClientSessionStore for Counting {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    /// One server per run, so the pool ignores the name.
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        TICKETS.fetch_add(1, Ordering::Relaxed);
        let mut pool = self.tls13.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() == TLS13_TICKETS {
            pool.pop_front();
        }
        pool.push_back(value);
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let mut pool = self.tls13.lock().unwrap_or_else(|e| e.into_inner());
        pool.pop_back()
    }
}

/// A session store that keeps nothing.
#[derive(Debug)]
struct Forgetful;

impl ClientSessionStore for Forgetful {
    fn set_kx_hint(&self, _: ServerName<'static>, _: NamedGroup) {}
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        None
    }
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(&self, _: ServerName<'static>, _: Tls13ClientSessionValue) {}
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        None
    }
}

/// Takes any certificate chain, but still checks that the handshake was signed by the key in
/// the certificate it was given (so a broken server is still caught).
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
