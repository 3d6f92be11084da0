//! TLS for both HTTP/1.1 and WebSocket, with rustls (the *ring* provider: it builds with only a
//! C compiler, and its AEAD seals our session tickets). This module owns the server-wide TLS
//! state built once at start (the rustls `ServerConfig`, the reloadable certificate, the
//! ticket keys, the TLS 1.2 session cache) and re-exports the per-connection glue.

pub mod certs;
pub mod session;
pub mod tickets;

use crate::config::TlsConfig;
use crate::log;
use certs::{CertSource, CertStore};
use rustls::ServerConfig;
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache};
use std::sync::Arc;
use tickets::TicketKeys;

pub use crate::outcome::TlsFailure;
pub use session::TlsSession;

/// TLS state shared by every worker.
pub struct TlsShared {
    pub config: Arc<ServerConfig>,
    pub(crate) certs: Arc<CertStore>,
    tickets: Option<Arc<TicketKeys>>,
    pub self_signed: bool,
}

impl TlsShared {
    /// Builds the server config. Errors are one line naming the key and the file.
    pub fn new(tls: &TlsConfig) -> Result<TlsShared, String> {
        let provider = Arc::new(server_provider());
        let (source, self_signed) = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => (
                CertSource::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                false,
            ),
            _ => (CertSource::SelfSigned, true),
        };
        let certs = Arc::new(CertStore::new(source, Arc::clone(&provider))?);
        let versions: &[&rustls::SupportedProtocolVersion] = if tls.min_version == "1.3" {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("tls.min_version: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn rustls::server::ResolvesServerCert>);
        // Our suite order, not the client's: see `server_provider`.
        config.ignore_client_order = true;
        config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.session_storage = if tls.session_cache == 0 {
            Arc::new(NoServerSessionStorage {})
        } else {
            ServerSessionMemoryCache::new(tls.session_cache)
        };
        let tickets = if tls.tickets {
            let keys = match &tls.ticket_key_file {
                Some(path) => TicketKeys::from_file(path, tls.ticket_rotation)
                    .map_err(|e| format!("tls.ticket_key_file: {e}"))?,
                None => TicketKeys::generated(tls.ticket_rotation)
                    .map_err(|e| format!("tls.tickets: {e}"))?,
            };
            let keys = Arc::new(keys);
            config.ticketer = Arc::clone(&keys) as Arc<dyn rustls::server::ProducesTickets>;
            // One ticket per full handshake is enough for a client that keeps its connection
            // for hours; each costs a seal and ~200 bytes on the wire.
            config.send_tls13_tickets = 1;
            Some(keys)
        } else {
            None
        };
        Ok(TlsShared {
            config: Arc::new(config),
            certs,
            tickets,
            self_signed,
        })
    }

    /// SIGHUP: re-read the certificate, key and ticket key file. What fails keeps its old
    /// value; every outcome is one log line.
    pub fn reload(&self) {
        match self.certs.reload() {
            Ok(true) => log::info!("SIGHUP: reloaded tls.cert and tls.key"),
            Ok(false) => log::info!("SIGHUP: the certificate is self-signed; nothing to reload"),
            Err(e) => log::warn!("SIGHUP: {e}; keeping the current certificate"),
        }
        if let Some(keys) = &self.tickets
            && let Err(e) = keys.reload()
        {
            log::warn!("SIGHUP: tls.ticket_key_file: {e}; keeping the keys in use");
        }
    }
}

/// The *ring* provider with its cipher suites in the server's order of preference: AES-128-GCM,
/// then AES-256-GCM, then ChaCha20-Poly1305, in each TLS version (Mozilla's "intermediate"
/// order). Clients such as OpenSSL list AES-256-GCM-SHA384 first; AES-128 is as safe here, and
/// its SHA-256 key schedule (with SHA-NI on current CPUs) makes a TLS 1.2 resumption ~15 %
/// cheaper for the server and the client alike (measured: 77–89 to 66–68 µs of server CPU,
/// `bench/tls.sh`), because the TLS 1.2 PRF is most of what a resumption computes.
fn server_provider() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    provider
}

/// A worker's staging buffers, lent to one TLS call at a time.
#[derive(Default)]
pub struct Scratch {
    pub incoming: Vec<u8>,
    pub plain: Vec<u8>,
}

/// rustls's errors, by the failure label they count under.
impl TlsFailure {
    pub fn from_error(e: &rustls::Error, handshaking: bool) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_) if handshaking => TlsFailure::BadRecord,
            E::PeerIncompatible(_) => TlsFailure::Incompatible,
            E::NoApplicationProtocol => TlsFailure::NoAlpn,
            E::AlertReceived(_) => TlsFailure::AlertReceived,
            E::DecryptError
            | E::PeerMisbehaved(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::InvalidMessage(_) => TlsFailure::Protocol,
            _ => TlsFailure::Other,
        }
    }
}
