//! Owns one TLS connection: rustls's unbuffered server state machine between the engine's
//! ciphertext and the HTTP/1.1 or WebSocket session inside. Sans-I/O like the rest of `proto`:
//! ciphertext in, ciphertext appended to the engine's output, an [`Action`] out.
//!
//! Why the unbuffered API: rustls's buffered `ServerConnection` keeps its own plaintext and
//! ciphertext buffers for the life of the connection (about 7.4 KiB idle); here the engine owns
//! the bytes, a partial record is the only input we hold between reads, and an idle connection
//! keeps only rustls's key schedule and record state.
//!
//! The inner session writes plaintext into the engine's output exactly as it does on a plain
//! connection (so its backpressure sees the queued bytes); each time we move that plaintext to a
//! per-worker staging buffer and encrypt it when rustls next lets us write, which keeps the
//! order of handshake records (a KeyUpdate) and application data right.

use super::{Scratch, TlsFailure};
use crate::config::{ALPN_H2, ALPN_HTTP1};
use crate::proto::h2::H2Conn;
use crate::proto::http1::Http1Conn;
use crate::proto::http1::response::{Body, Head, Persist, write_response};
use crate::proto::{Action, CloseReason, Context, Session};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};
use std::sync::Arc;

/// TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;

pub struct TlsSession {
    conn: UnbufferedServerConnection,
    inner: Inner,
    /// Ciphertext of an incomplete record, kept between reads (empty otherwise).
    incoming: Vec<u8>,
    /// Until the handshake completes, the connection's only deadline.
    handshake_deadline: u64,
    handshaking: bool,
    tls13: bool,
    /// Plaintext encrypted since the last key update (TLS 1.3).
    sent_since_update: u64,
    last_update: u64,
    /// The inner session asked to close; no more application data is read.
    closing: Option<Action>,
    close_notify_sent: bool,
    /// The peer's TCP FIN came without a close_notify. It is gone or truncating: a close with
    /// nothing left to send owes it no close_notify, which would only draw an RST from its
    /// closed socket (an extra round of packets per connection for clients that just close).
    peer_fin: bool,
    /// Nothing has arrived yet: the first byte tells TLS from plaintext HTTP.
    fresh: bool,
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>, now: u64, header_timeout: u64, ws_seed: u32) -> Self {
        TlsSession {
            conn: UnbufferedServerConnection::new(config)
                .expect("a server config built at start always makes connections"),
            inner: Inner {
                session: Session::Http1(Http1Conn::new(now)),
                ws_seed,
            },
            incoming: Vec::new(),
            handshake_deadline: now.saturating_add(header_timeout),
            handshaking: true,
            tls13: false,
            sent_since_update: 0,
            last_update: now,
            closing: None,
            close_notify_sent: false,
            peer_fin: false,
            fresh: true,
        }
    }

    pub fn on_input(&mut self, input: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.fresh && !input.is_empty() {
            self.fresh = false;
            if input[0].is_ascii_uppercase() {
                // A plaintext request on the TLS port (an `http://` URL pointed at it): say so
                // in a way a person reading curl's output understands, then close.
                cx.metrics.tls_failure(TlsFailure::PlaintextHttp);
                let before = out.len();
                plaintext_answer(out, cx.date);
                cx.metrics.response(400);
                cx.log_access(None, 400, out.len() - before, cx.now);
                return Action::Close {
                    reason: CloseReason::TlsError,
                    linger: true,
                };
            }
        }
        // Empty input is the engine resuming a session that paused for its output to drain.
        let resume = input.is_empty() && !self.handshaking && self.closing.is_none();
        self.step(input, cx, out, resume, |s, cx, o| s.on_input(&[], cx, o))
    }

    /// TCP EOF without a close_notify.
    pub fn on_eof(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.handshaking {
            if !self.fresh {
                cx.metrics.tls_failure(TlsFailure::Eof);
            }
            return close(CloseReason::PeerClosed);
        }
        self.peer_fin = true;
        self.step(&[], cx, out, true, |s, cx, o| s.on_eof(cx, o))
    }

    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.handshaking {
            if cx.now < self.handshake_deadline {
                return Action::Continue;
            }
            cx.metrics.tls_failure(TlsFailure::Timeout);
            return close(CloseReason::RequestTimeout);
        }
        // A key update that fell due is sent by `pump` when it reaches a writable state.
        let inner_due = self.closing.is_none() && self.inner.session.deadline(cx.config) <= cx.now;
        self.step(&[], cx, out, inner_due, |s, cx, o| s.on_timeout(cx, o))
    }

    pub fn on_drain(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.handshaking {
            return close(CloseReason::Shutdown);
        }
        self.step(&[], cx, out, true, |s, cx, o| s.on_drain(cx, o))
    }

    /// The application's late reply to the inner HTTP session.
    pub fn on_reply(
        &mut self,
        reply: crate::proto::http1::exchange::Reply<'static>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.handshaking || self.closing.is_some() {
            return Action::Continue;
        }
        self.step(&[], cx, out, true, |s, cx, o| s.on_reply(reply, cx, o))
    }

    /// A request that answered later is an event stream: its head, encrypted.
    pub fn on_stream_later(&mut self, route: u16, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.handshaking || self.closing.is_some() {
            return Action::Continue;
        }
        self.step(&[], cx, out, true, |s, cx, o| {
            s.on_stream_later(route, cx, o)
        })
    }

    /// A frame fanned out to the inner WebSocket session: encrypted for this connection.
    pub fn deliver(
        &mut self,
        frame: &[u8],
        unsent: usize,
        slow_cap: usize,
        slow_code: u16,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.handshaking || self.closing.is_some() {
            return Action::Continue;
        }
        self.step(&[], cx, out, true, |s, cx, o| {
            s.deliver(frame, unsent, slow_cap, slow_code, cx, o)
        })
    }

    /// One call from the engine after the handshake: optionally the inner session first (its
    /// plaintext staged), then rustls over `input`, with the worker's buffers lent for the call.
    fn step(
        &mut self,
        input: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        call_inner: bool,
        f: impl FnOnce(&mut Session, &Context<'_>, &mut Vec<u8>) -> Action,
    ) -> Action {
        let mut turn = Turn::new(cx);
        if call_inner {
            let action = self.inner.call(cx, out, &mut turn.plain, f);
            note(&mut self.closing, action);
        }
        let action = self.pump(input, cx, out, &mut turn);
        turn.finish(cx);
        action
    }

    pub fn on_output_drained(&mut self, now: u64) {
        self.inner.session.on_output_drained(now);
    }

    pub fn read_paused(&self) -> bool {
        !self.handshaking && self.inner.session.read_paused()
    }

    pub fn is_ws(&self) -> bool {
        self.inner.session.is_ws()
    }

    pub fn substreams(&self) -> Vec<u32> {
        self.inner.session.substreams()
    }

    pub fn deadline(&self, config: &crate::config::Config) -> u64 {
        if self.handshaking {
            return self.handshake_deadline;
        }
        let inner = self.inner.session.deadline(config);
        match self.key_update_at(config) {
            Some(at) if self.closing.is_none() => inner.min(at),
            _ => inner,
        }
    }

    fn key_update_at(&self, config: &crate::config::Config) -> Option<u64> {
        key_update_at(self.tls13, self.last_update, config)
    }

    /// Drives rustls over `input` (appended to any partial record we hold) until it needs more
    /// bytes: handshake records out, application data to the inner session, staged plaintext
    /// encrypted, key updates and close_notify sent when due.
    fn pump(
        &mut self,
        input: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        turn: &mut Turn,
    ) -> Action {
        let mut buf = std::mem::take(&mut self.incoming);
        if buf.is_empty() {
            buf = std::mem::take(&mut turn.incoming);
        }
        buf.extend_from_slice(input);
        let mut offset = 0;
        let mut failed: Option<rustls::Error> = None;
        let counting_peer_records = !self.handshaking && self.tls13;
        let (mut records, mut app_records, mut closes) = (0u64, 0u64, 0u64);
        let mut wrote_plain = false;
        loop {
            // After an error, exactly one more call: rustls hands over a fatal alert it queued
            // before it looks at input again. A call after that would deframe the bad bytes a
            // second time (and queue a second alert). The window stays the true remaining
            // input even so: rustls's handshake deframer may hold offsets into it (a partial
            // handshake message), and a shorter window would make it slice out of bounds.
            let last_call = failed.is_some();
            let status = self.conn.process_tls_records(&mut buf[offset..]);
            let discard = status.discard;
            let mut stop = false;
            match status.state {
                Err(e) => {
                    stop = failed.is_some();
                    // Otherwise one more round: rustls may have queued an alert for the peer.
                    failed.get_or_insert(e);
                }
                Ok(ConnectionState::ReadTraffic(mut reader)) => {
                    while let Some(record) = reader.next_record() {
                        let Ok(record) = record else { break };
                        app_records += 1;
                        if self.closing.is_some() {
                            continue; // Closing: later input is read and dropped.
                        }
                        let payload = record.payload;
                        let action = self.inner.call(cx, out, &mut turn.plain, |s, cx, o| {
                            s.on_input(payload, cx, o)
                        });
                        note(&mut self.closing, action);
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encoder)) => {
                    if let Err(e) = append(out, 2048, |spare| encoder.encode(spare)) {
                        failed.get_or_insert(rustls::Error::General(e));
                        stop = true;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The bytes are in `out`; the engine sends them at the end of this turn.
                    transmit.done();
                }
                Ok(ConnectionState::BlockedHandshake) => stop = true,
                Ok(ConnectionState::PeerClosed) => {
                    closes += 1;
                    if self.closing.is_none() {
                        let action = self
                            .inner
                            .call(cx, out, &mut turn.plain, |s, cx, o| s.on_eof(cx, o));
                        note(&mut self.closing, action);
                    }
                }
                Ok(ConnectionState::Closed) => {
                    stop = true;
                    note(&mut self.closing, close(CloseReason::PeerClosed));
                }
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    if self.handshaking || failed.is_some() {
                        stop = true; // handled below, outside rustls's borrow
                    } else {
                        if !turn.plain.is_empty() {
                            let plain = &turn.plain;
                            if let Err(e) =
                                append(out, plain.len() + 64, |spare| writer.encrypt(plain, spare))
                            {
                                failed.get_or_insert(rustls::Error::General(e));
                                offset += discard;
                                break;
                            }
                            self.sent_since_update += plain.len() as u64;
                            turn.plain.clear();
                            wrote_plain = true;
                        }
                        if let Some(action) = self.closing {
                            let owed = !self.peer_fin || wrote_plain;
                            if !self.close_notify_sent && is_orderly(action) && owed {
                                self.close_notify_sent = true;
                                let _ = append(out, 64, |spare| writer.queue_close_notify(spare));
                            }
                            stop = true;
                        } else if key_update_due(
                            self.tls13,
                            self.sent_since_update,
                            self.last_update,
                            cx,
                        ) {
                            if writer.refresh_traffic_keys().is_ok() {
                                cx.metrics.tls_key_updates_sent.inc();
                            }
                            self.sent_since_update = 0;
                            self.last_update = cx.now;
                        } else {
                            stop = true;
                        }
                    }
                }
                Ok(_) => stop = true, // early data is never enabled
            }
            if last_call {
                stop = true;
            }
            if counting_peer_records {
                records += count_records(&buf[offset..offset + discard]);
            }
            offset += discard;
            if self.handshaking && !self.conn.is_handshaking() {
                // Go round again: a ticket and the first request may follow.
                self.handshake_done(cx);
                continue;
            }
            if stop {
                break;
            }
        }
        // A record that carried no application data and no close_notify after a TLS 1.3
        // handshake can only be a KeyUpdate: we ask for no post-handshake authentication, and
        // a client sends no tickets.
        let updates = records.saturating_sub(app_records + closes);
        if updates > 0 {
            cx.metrics.tls_key_updates_received.add(updates);
        }
        buf.drain(..offset.min(buf.len()));
        if buf.is_empty() {
            turn.incoming = buf;
        } else {
            self.incoming = buf;
        }
        if let Some(e) = failed {
            let why = TlsFailure::from_error(&e, self.handshaking);
            cx.metrics.tls_failure(why);
            crate::log::debug!("tls: connection failed ({}): {e}", why.label());
            return close(CloseReason::TlsError);
        }
        self.closing.unwrap_or(Action::Continue)
    }

    fn handshake_done(&mut self, cx: &Context<'_>) {
        self.handshaking = false;
        self.tls13 = self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
        self.last_update = cx.now;
        // ALPN decides what runs inside (RFC 7301), and no ALPN at all means HTTP/1.1. We only
        // offer what we speak (config validation), so another name is a bug: close rather than
        // speak HTTP/1.1 to a client that was promised something else.
        // Timers for the first request start now, not at accept.
        self.inner.session = match self.conn.alpn_protocol() {
            None => Session::Http1(Http1Conn::new(cx.now)),
            Some(p) if p == ALPN_HTTP1.as_bytes() => Session::Http1(Http1Conn::new(cx.now)),
            Some(p) if p == ALPN_H2.as_bytes() => Session::H2(Box::new(H2Conn::new(cx.now))),
            Some(_) => {
                cx.metrics.tls_failure(TlsFailure::NoAlpn);
                note(&mut self.closing, close(CloseReason::TlsError));
                return;
            }
        };
        if self.conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            cx.metrics.tls_handshakes_resumed.inc();
        } else {
            cx.metrics.tls_handshakes_full.inc();
        }
    }
}

/// Remembers the first close the inner session asks for.
fn note(closing: &mut Option<Action>, action: Action) {
    if matches!(action, Action::Close { .. }) && closing.is_none() {
        *closing = Some(action);
    }
}

/// The HTTP/1.1 or WebSocket session inside the TLS connection.
struct Inner {
    session: Session,
    /// Seeds the WebSocket session's heartbeat jitter after an upgrade.
    ws_seed: u32,
}

impl Inner {
    /// Runs one call, moving the plaintext it wrote into `plain` (to be encrypted when rustls
    /// next lets us write), and performs an upgrade to WebSocket inside the TLS session: the
    /// engine never sees it, since what follows the handshake is plaintext it cannot feed back.
    fn call(
        &mut self,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        f: impl FnOnce(&mut Session, &Context<'_>, &mut Vec<u8>) -> Action,
    ) -> Action {
        let start = out.len();
        let mut action = f(&mut self.session, cx, out);
        if action == Action::Upgrade {
            let seed = self.ws_seed ^ cx.now as u32;
            action = self.session.upgrade(seed, cx, out);
        }
        plain.extend_from_slice(&out[start..]);
        out.truncate(start);
        action
    }
}

/// Per-call borrowed buffers from the worker's scratch, returned when the call ends, so that a
/// connection holds no buffer of its own between calls.
struct Turn {
    incoming: Vec<u8>,
    plain: Vec<u8>,
}

impl Turn {
    fn new(cx: &Context<'_>) -> Turn {
        let mut s = cx.tls_scratch.borrow_mut();
        Turn {
            incoming: std::mem::take(&mut s.incoming),
            plain: std::mem::take(&mut s.plain),
        }
    }

    fn finish(mut self, cx: &Context<'_>) {
        let mut s: std::cell::RefMut<'_, Scratch> = cx.tls_scratch.borrow_mut();
        self.incoming.clear();
        self.plain.clear();
        s.incoming = self.incoming;
        s.plain = self.plain;
    }
}

/// When the interval-driven key update falls due (TLS 1.3 only; a zero interval disables it).
fn key_update_at(tls13: bool, last_update: u64, config: &crate::config::Config) -> Option<u64> {
    let interval = crate::proto::ms(config.tls.key_update_interval);
    (tls13 && interval > 0).then(|| last_update.saturating_add(interval))
}

/// A TLS 1.3 key update is due: enough bytes sent under the current key, or enough time.
/// (The caller has checked that the connection is not closing.)
fn key_update_due(tls13: bool, sent: u64, last_update: u64, cx: &Context<'_>) -> bool {
    tls13
        && (sent >= cx.config.tls.key_update_bytes
            || key_update_at(tls13, last_update, cx.config).is_some_and(|at| cx.now >= at))
}

fn close(reason: CloseReason) -> Action {
    Action::Close {
        reason,
        linger: false,
    }
}

/// Closes we announce with close_notify: everything but a dead socket.
fn is_orderly(action: Action) -> bool {
    !matches!(
        action,
        Action::Close {
            reason: CloseReason::IoError,
            ..
        }
    )
}

/// Counts whole TLS records in `bytes` (rustls discards only whole records).
fn count_records(mut bytes: &[u8]) -> u64 {
    let mut n = 0;
    while bytes.len() >= RECORD_HEADER {
        let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
        let end = (RECORD_HEADER + len).min(bytes.len());
        bytes = &bytes[end..];
        n += 1;
    }
    n
}

/// Errors that say how much room they needed.
trait NeedsRoom {
    fn required(&self) -> Option<usize>;
}

macro_rules! needs_room {
    ($($error:ident),*) => {$(
        impl NeedsRoom for $error {
            fn required(&self) -> Option<usize> {
                match self {
                    $error::InsufficientSize(InsufficientSizeError { required_size }) => {
                        Some(*required_size)
                    }
                    _ => None,
                }
            }
        }
    )*};
}

needs_room!(EncodeError, EncryptError);

/// Lets rustls write at the end of `out`, growing it to what rustls says it needs.
fn append<E: NeedsRoom + std::fmt::Display>(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), String> {
    let start = out.len();
    let mut room = guess;
    for _ in 0..3 {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match e.required() {
                Some(need) if need > room => room = need,
                _ => {
                    out.truncate(start);
                    return Err(e.to_string());
                }
            },
        }
    }
    out.truncate(start);
    Err("rustls kept asking for more room".into())
}

/// The answer to a plaintext HTTP request on the TLS port (nginx sends 400 too), written by
/// the same encoder as every other response.
fn plaintext_answer(out: &mut Vec<u8>, date: &[u8]) {
    let head = Head {
        status: 400,
        content_type: "text/plain",
        extra_headers: "",
        persist: Persist::Close,
        head_only: false,
    };
    write_response(
        out,
        &head,
        &Body::Full(b"This port speaks TLS: use https://\n"),
        date,
    );
}

#[cfg(test)]
mod tests {
    //! A rustls client and a `TlsSession` wired together in memory, no sockets.
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::proto::tls::TlsShared;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection};
    use std::cell::RefCell;
    use std::io::{Read, Write};

    struct Pair {
        config: Config,
        metrics: Metrics,
        ws: RefCell<crate::proto::ws::deflate::Scratch>,
        tls: RefCell<Scratch>,
        client: ClientConnection,
        server: TlsSession,
        now: u64,
        last: Action,
    }

    impl Pair {
        fn new(tweak: impl FnOnce(&mut Config)) -> Pair {
            let mut config = Config::default();
            tweak(&mut config);
            let shared = TlsShared::new(&config.tls).unwrap();
            let root = shared.certs.current().cert[0].clone();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client_config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                server: TlsSession::new(Arc::clone(&shared.config), 0, 60_000, 7),
                client: ClientConnection::new(Arc::new(client_config), name).unwrap(),
                config,
                metrics: Metrics::new(1),
                ws: Default::default(),
                tls: Default::default(),
                now: 0,
                last: Action::Continue,
            }
        }

        fn with(
            &mut self,
            f: impl FnOnce(&mut TlsSession, &Context<'_>, &mut Vec<u8>) -> Action,
        ) -> Vec<u8> {
            let all = Metrics::new(1);
            let cx = Context {
                now: self.now,
                date: b"Thu, 01 Jan 1970 00:00:00 GMT",
                config: &self.config,
                metrics: &self.metrics.workers[0],
                all_metrics: &all,
                draining: false,
                stopping: false,
                ws_scratch: &self.ws,
                tls_scratch: &self.tls,
                access: None,
                peer: Default::default(),
                over_limit: false,
                app: &crate::app::WorkerApp::standalone(),
                conn: Default::default(),
            };
            let mut out = Vec::new();
            self.last = f(&mut self.server, &cx, &mut out);
            out
        }

        /// Moves bytes both ways until neither side has anything to say.
        fn run(&mut self) {
            for _ in 0..20 {
                let mut to_server = Vec::new();
                while self.client.wants_write() {
                    self.client.write_tls(&mut to_server).unwrap();
                }
                let to_client = if to_server.is_empty() {
                    Vec::new()
                } else {
                    self.with(|s, cx, out| s.on_input(&to_server, cx, out))
                };
                if to_client.is_empty() && to_server.is_empty() {
                    return;
                }
                let mut slice = &to_client[..];
                while !slice.is_empty() {
                    self.client.read_tls(&mut slice).unwrap();
                    self.client.process_new_packets().unwrap();
                }
            }
            panic!("the pair did not settle");
        }

        fn plaintext(&mut self) -> String {
            let mut got = Vec::new();
            let _ = self.client.reader().read_to_end(&mut got);
            String::from_utf8(got).unwrap()
        }
    }

    #[test]
    fn handshake_request_key_update_and_close_notify() {
        let mut p = Pair::new(|c| c.tls.key_update_interval = std::time::Duration::from_secs(1));
        p.run();
        assert!(!p.client.is_handshaking());
        assert_eq!(p.metrics.workers[0].tls_handshakes_full.get(), 1);
        p.client
            .writer()
            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        p.run();
        assert!(p.plaintext().ends_with("\r\n\r\nHello, World!"));
        assert!(p.server.incoming.is_empty(), "no buffer held while idle");

        // The interval passes: the deadline says so, the timeout sends a KeyUpdate, and the
        // client's answer (it must update too; rustls sends it with its next write) is counted.
        assert_eq!(p.server.deadline(&p.config), 1000);
        p.now = 1000;
        let out = p.with(|s, cx, out| s.on_timeout(cx, out));
        let mut slice = &out[..];
        p.client.read_tls(&mut slice).unwrap();
        p.client.process_new_packets().unwrap();
        p.run();
        assert_eq!(p.metrics.workers[0].tls_key_updates_sent.get(), 1);
        assert_eq!(p.server.deadline(&p.config), 2000);
        p.client
            .writer()
            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        p.run();
        assert!(p.plaintext().ends_with("Hello, World!"));
        assert_eq!(p.metrics.workers[0].tls_key_updates_received.get(), 1);
        assert!(matches!(
            p.last,
            Action::Close {
                reason: CloseReason::Requested,
                ..
            }
        ));
        // The response was followed by close_notify.
        let mut buf = [0u8; 16];
        assert_eq!(p.client.reader().read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_partial_record_is_kept_until_the_rest_arrives() {
        let mut p = Pair::new(|_| {});
        p.run();
        p.client
            .writer()
            .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut wire = Vec::new();
        p.client.write_tls(&mut wire).unwrap();
        let (a, b) = wire.split_at(7);
        assert!(p.with(|s, cx, out| s.on_input(a, cx, out)).is_empty());
        assert_eq!(p.server.incoming.len(), 7);
        let out = p.with(|s, cx, out| s.on_input(b, cx, out));
        assert!(p.server.incoming.is_empty());
        let mut slice = &out[..];
        p.client.read_tls(&mut slice).unwrap();
        p.client.process_new_packets().unwrap();
        assert!(p.plaintext().ends_with("Hello, World!"));
    }

    #[test]
    fn a_malformed_client_hello_is_a_tls_error_not_a_panic() {
        for bad in [
            &b"\x16\x03\x01\x00\x05hello"[..],
            b"\x16\x03\x01\x00\x00",
            b"\x16\x03\x01\x00\x04\x01\x00\x00\x00",
            b"\x15\x03\x03\x00\x02\x02\x28",
            b"\x17\x03\x03\x00\x03abc",
        ] {
            let mut p = Pair::new(|_| {});
            let out = p.with(|s, cx, out| s.on_input(bad, cx, out));
            assert!(
                matches!(
                    p.last,
                    Action::Close {
                        reason: CloseReason::TlsError,
                        ..
                    }
                ),
                "{bad:?}: {:?}",
                p.last
            );
            // What goes back, if anything, is one fatal alert (a plaintext record: 21, version,
            // length 2, level 2 = fatal, description).
            assert!(
                out.is_empty() || (out.len() == 7 && out[0] == 21 && out[3..6] == [0, 2, 2]),
                "{bad:?}: {out:?}"
            );
        }
    }
}
