//! Sans-I/O protocol state machines. Nothing here sees a file descriptor, the ring or the clock:
//! each call takes bytes and a [`Context`] (holding `now`), appends what to send to an output
//! buffer, and returns an [`Action`]; the engine asks for the next deadline afterwards. This is
//! what makes the protocols testable without sockets and fuzzable.

pub mod h2;
pub mod handler;
pub mod http1;
pub mod proxy;
pub mod sse;
pub mod text;
pub mod tls;
pub mod ws;

pub use crate::outcome::CloseReason;

use crate::config::Config;
use crate::log::access::{Peer, Request, WorkerLog};
use crate::metrics::WorkerMetrics;
use h2::H2Conn;
use handler::{ConnId, Handler};
use http1::Http1Conn;
use http1::conn::UpgradeKind;
use http1::exchange::Reply;
use sse::StreamConn;
use tls::TlsSession;
use ws::WsConn;

/// What the engine does after a protocol call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Send everything queued, then close. With `linger`, the engine first shuts down its write
    /// side and drains the peer's input for up to `http.lingering_timeout`, so a peer that is
    /// still sending reads our last response instead of an RST (RFC 9112 §9.6).
    Close {
        reason: CloseReason,
        linger: bool,
    },
    /// The HTTP layer answered a WebSocket upgrade with 101: switch the connection to
    /// [`Session::Ws`] and feed it whatever followed the handshake.
    Upgrade,
}

/// Everything a protocol call may read besides its input: the engine's millisecond clock, the
/// cached `Date` header value, the configuration, this worker's metrics, whether the server
/// is draining, and (while the access log is on) the worker's access log and the client's
/// address.
pub struct Context<'a> {
    pub now: u64,
    /// IMF-fixdate (RFC 9110 §5.6.7), refreshed by the engine once a second.
    pub date: &'a [u8],
    pub config: &'a Config,
    pub metrics: &'a WorkerMetrics,
    /// The metrics of every worker, for `/metrics`.
    pub all_metrics: &'a crate::metrics::Metrics,
    pub draining: bool,
    /// A stop was requested: true from the stop signal on, through `server.drain_delay` (when
    /// everything but `/healthz` is served as usual) and the drain (when `draining` is true too).
    pub stopping: bool,
    /// The worker's shared compression contexts and buffers (single-threaded, so a RefCell).
    pub ws_scratch: &'a std::cell::RefCell<ws::deflate::Scratch>,
    /// The worker's TLS staging buffers.
    pub tls_scratch: &'a std::cell::RefCell<tls::Scratch>,
    /// The worker's access log, when `log.access` is on.
    pub access: Option<&'a WorkerLog>,
    /// The client's address (known only while the access log is on).
    pub peer: Peer,
    /// The client's address is over a per-address limit (`server.max_connections_per_ip`,
    /// `server.connection_rate_per_ip`): its first request is refused.
    pub over_limit: bool,
    /// This worker's application: what requests and messages mean.
    pub app: &'a dyn Handler,
    /// The connection this call is about (default for calls about no connection).
    pub conn: ConnId,
}

impl Context<'_> {
    /// One access log line for a response of `bytes` to `request` (None: the head was not
    /// understood) whose head began arriving at `started`, if the access log is on and samples
    /// it. Costs one branch when it is off.
    #[inline]
    pub fn log_access(
        &self,
        request: Option<Request<'_>>,
        status: u16,
        bytes: usize,
        started: u64,
    ) {
        if let Some(log) = self.access
            && log.wants(status)
        {
            let duration = self.now.saturating_sub(started);
            log.write(self.peer, request, status, bytes as u64, duration);
        }
    }
}

/// Runs `process` over received bytes without copying them in the common case: when nothing
/// is pending, it parses straight from `input` (the engine's receive buffer) and only an
/// unconsumed tail is copied into `pending`; otherwise `input` is appended and the whole is
/// processed. `process` returns how many bytes it consumed; the rest is kept only when `keep`
/// says the action still needs it. Callers take `pending` out of `self` first, so that
/// `process` may borrow `self`.
pub fn feed_buffered(
    pending: &mut Vec<u8>,
    input: &[u8],
    keep: impl Fn(Action) -> bool,
    mut process: impl FnMut(&[u8]) -> (usize, Action),
) -> Action {
    if pending.is_empty() {
        let (consumed, action) = process(input);
        if keep(action) && consumed < input.len() {
            pending.extend_from_slice(&input[consumed..]);
        }
        action
    } else {
        pending.extend_from_slice(input);
        let (consumed, action) = process(pending);
        if keep(action) {
            pending.drain(..consumed);
        } else {
            pending.clear();
        }
        if pending.is_empty() {
            // Give the memory back: an idle connection holds no input buffer.
            *pending = Vec::new();
        }
        action
    }
}

/// A configured duration as engine milliseconds. Clamped far below u64::MAX so that adding it
/// to `now` can never overflow (a "1000000d" timeout simply never fires).
pub fn ms(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
}

/// Output a connection may queue before it stops reading: bounds the memory a client that
/// pipelines requests but does not read responses can make us hold.
#[cfg(not(fuzzing))]
pub const OUTPUT_CAP: usize = 256 * 1024;
/// Under the fuzz targets (`--cfg fuzzing`, set by cargo-fuzz) the cap is small, so that the
/// stop-reading path is reached by streams short enough to run tens of millions of times.
#[cfg(fuzzing)]
pub const OUTPUT_CAP: usize = 16 * 1024;

/// The protocol a connection speaks now. It starts as HTTP/1.1 and may become WebSocket after
/// an upgrade or an event stream after its response head; on the TLS listener these run
/// inside [`TlsSession`] (boxed: rustls's state is
/// large, and plain connections should not pay for it in their slab slot). The engine only ever
/// sees this enum.
pub enum Session {
    Http1(Http1Conn),
    /// Boxed: its streams and HPACK state are larger than an HTTP/1.1 connection's.
    H2(Box<H2Conn>),
    Ws(WsConn),
    Stream(StreamConn),
    Tls(Box<TlsSession>),
}

/// What a connection's first bytes (`held` then `input`) say about HTTP/2's preface.
#[derive(PartialEq, Eq)]
enum Preface {
    /// Its request line (16 bytes, which no HTTP/1.1 request starts with) has come, and as much
    /// of the rest as has come matches.
    Yes,
    /// Fewer than 16 bytes so far, all of them the preface's: too soon to tell.
    Maybe,
    No,
}

fn preface(held: &[u8], input: &[u8]) -> Preface {
    let want = h2::frame::PREFACE;
    let total = held.len() + input.len();
    let same = held.iter().chain(input).zip(want).all(|(a, b)| a == b);
    match (same, total) {
        (false, _) => Preface::No,
        (true, 16..) => Preface::Yes,
        (true, _) => Preface::Maybe,
    }
}

/// Forwards a call to whichever protocol the session speaks.
macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Session::Http1($c) => $call,
            Session::H2($c) => $call,
            Session::Ws($c) => $call,
            Session::Stream($c) => $call,
            Session::Tls($c) => $call,
        }
    };
}

impl Session {
    pub fn on_input(&mut self, input: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if let Session::Http1(h) = self
            && !input.is_empty()
            && let Some(held) = h.sniffed()
        {
            // HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3): the client's preface says so,
            // however its bytes were cut into reads.
            match preface(held, input) {
                Preface::Yes => {
                    let mut bytes = h.take_buffer();
                    bytes.extend_from_slice(input);
                    *self = Session::H2(Box::new(H2Conn::new(cx.now)));
                    return self.on_input(&bytes, cx, out);
                }
                Preface::Maybe => {
                    h.hold(input);
                    return Action::Continue;
                }
                Preface::No => {}
            }
        }
        dispatch!(self, c => c.on_input(input, cx, out))
    }
    pub fn on_eof(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        dispatch!(self, c => c.on_eof(cx, out))
    }
    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        dispatch!(self, c => c.on_timeout(cx, out))
    }
    pub fn on_drain(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        dispatch!(self, c => c.on_drain(cx, out))
    }
    pub fn on_output_drained(&mut self, now: u64) {
        dispatch!(self, c => c.on_output_drained(now))
    }
    pub fn read_paused(&self) -> bool {
        dispatch!(self, c => c.read_paused())
    }
    pub fn deadline(&self, config: &Config) -> u64 {
        match self {
            Session::Http1(c) => c.deadline(config),
            Session::H2(c) => c.deadline(config),
            Session::Ws(c) => c.deadline(config),
            Session::Stream(c) => c.deadline(),
            Session::Tls(c) => c.deadline(config),
        }
    }
    /// The streams of an HTTP/2 connection the application knows as connections of their own
    /// (event streams): when the connection ends, so do they.
    pub fn substreams(&self) -> Vec<u32> {
        match self {
            Session::H2(h) => h.event_streams(),
            Session::Tls(t) => t.substreams(),
            Session::Http1(_) | Session::Ws(_) | Session::Stream(_) => Vec::new(),
        }
    }

    pub fn is_ws(&self) -> bool {
        match self {
            Session::Ws(_) => true,
            Session::Http1(_) | Session::H2(_) | Session::Stream(_) => false,
            Session::Tls(t) => t.is_ws(),
        }
    }

    /// After [`Action::Upgrade`]: for a WebSocket, negotiates the extensions, writes the 101,
    /// becomes a WebSocket session for the route the application chose, lets the application
    /// open it, and feeds it whatever the client sent after its handshake (its first frames, if
    /// it did not wait for the 101); for an event stream (its head already written), becomes
    /// the stream and lets the application write its first events. Done here, above the
    /// protocols, so that none imports another.
    pub fn upgrade(&mut self, seed: u32, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let Session::Http1(h) = self else {
            // A TLS session upgrades inside itself and never returns Upgrade.
            return Action::Continue;
        };
        let (Some(up), rest) = (h.take_upgrade(), h.take_buffer()) else {
            return Action::Close {
                reason: CloseReason::IoError,
                linger: false,
            };
        };
        let (accept, extension_offers) = match &up.kind {
            UpgradeKind::WebSocket {
                accept,
                extension_offers,
            } => (accept, extension_offers),
            UpgradeKind::EventStream => {
                let heartbeat = ms(cx.config.channels.sse_heartbeat);
                let mut conn = StreamConn::new(cx.now, up.route, heartbeat);
                let action = conn.open(up.target(), cx, out);
                *self = Session::Stream(conn);
                return action;
            }
        };
        let ws = &cx.config.websocket;
        let deflate = if ws.permessage_deflate {
            ws::deflate::negotiate(
                extension_offers.iter().map(Vec::as_slice),
                ws.deflate_context_takeover,
            )
        } else {
            None
        };
        let before = out.len();
        let extensions = deflate.as_ref().map_or("", |(_, h)| h.as_str());
        http1::upgrade::write_switching_protocols(out, accept, extensions);
        up.log(cx, out.len() - before);
        let mut conn = WsConn::new(cx.now, cx.config, seed, deflate.map(|(p, _)| p), up.route);
        let action = conn.open(up.target(), cx, out);
        *self = Session::Ws(conn);
        if action != Action::Continue || rest.is_empty() {
            return action;
        }
        self.on_input(&rest, cx, out)
    }

    /// The application's late reply to a request it answered with `Answer::Later`.
    pub fn on_reply(
        &mut self,
        reply: Reply<'static>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        match self {
            Session::Http1(h) => h.on_reply(reply, cx, out),
            Session::H2(h) => h.on_reply(reply, cx, out),
            Session::Tls(t) => t.on_reply(reply, cx, out),
            Session::Ws(_) | Session::Stream(_) => Action::Continue,
        }
    }

    /// A request that answered `Answer::Later` is an event stream after all (see
    /// `Work::Stream`).
    pub fn on_stream_later(&mut self, route: u16, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        match self {
            Session::Http1(h) => h.on_stream_later(route, cx, out),
            Session::Tls(t) => t.on_stream_later(route, cx, out),
            Session::H2(h) => h.on_stream_later(route, cx, out),
            Session::Ws(_) | Session::Stream(_) => Action::Continue,
        }
    }

    /// Whether a frame fanned out from elsewhere may be queued as it is, shared with the other
    /// recipients: a plain WebSocket that is open and has at most `slow_cap` bytes unsent.
    /// Otherwise [`Session::deliver`] decides (TLS encrypts per connection; a slow reader is
    /// closed).
    pub fn takes_shared(&self, unsent: usize, slow_cap: usize) -> bool {
        match self {
            Session::Ws(w) => w.takes_shared(unsent, slow_cap),
            Session::Stream(s) => s.takes_shared(unsent, slow_cap),
            Session::Http1(_) | Session::H2(_) | Session::Tls(_) => false,
        }
    }

    /// A WebSocket or event stream straight on TCP (not inside TLS): its queued output is whole
    /// frames or chunks, so unsent ones may be dropped when it is closed as too slow.
    pub fn is_plain_framed(&self) -> bool {
        matches!(self, Session::Ws(_) | Session::Stream(_))
    }

    /// A frame fanned out from elsewhere (see [`WsConn::deliver`]); `unsent` is what the
    /// connection already has queued.
    pub fn deliver(
        &mut self,
        frame: &[u8],
        unsent: usize,
        slow_cap: usize,
        slow_code: u16,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        match self {
            Session::Ws(w) => w.deliver(frame, unsent, slow_cap, slow_code, cx, out),
            Session::Stream(s) => s.deliver(frame, unsent, slow_cap, cx, out),
            Session::Tls(t) => t.deliver(frame, unsent, slow_cap, slow_code, cx, out),
            Session::H2(h) => h.deliver(frame, unsent, slow_cap, slow_code, cx, out),
            Session::Http1(_) => Action::Continue,
        }
    }
}
