//! Sans-I/O protocol state machines. Nothing here sees a file descriptor, the ring or the clock:
//! each call takes bytes and a [`Context`] (holding `now`), appends what to send to an output
//! buffer, and returns an [`Action`]; the engine asks for the next deadline afterwards. This is
//! what makes the protocols testable without sockets and fuzzable.

pub mod http1;

use crate::config::Config;
use crate::metrics::WorkerMetrics;

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
}

/// Why a connection ended; each has its own metrics counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (EOF) between requests.
    PeerClosed,
    /// `Connection: close`, or an HTTP/1.0 request without keep-alive.
    Requested,
    /// `http.keepalive_timeout` between requests.
    IdleTimeout,
    /// A request head or body did not arrive within `http.header_timeout` (answered 408).
    RequestTimeout,
    /// `http.keepalive_requests` reached.
    MaxRequests,
    /// `http.max_connection_age` reached.
    MaxAge,
    /// Malformed or refused input, answered with a 4xx/5xx.
    BadRequest,
    /// The server is draining (SIGTERM/SIGINT).
    Shutdown,
    /// A socket error (reset, broken pipe).
    IoError,
    /// `server.max_connections` reached: closed at accept.
    Refused,
}

impl CloseReason {
    pub const ALL: [CloseReason; 10] = [
        CloseReason::PeerClosed,
        CloseReason::Requested,
        CloseReason::IdleTimeout,
        CloseReason::RequestTimeout,
        CloseReason::MaxRequests,
        CloseReason::MaxAge,
        CloseReason::BadRequest,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Requested => "requested",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::RequestTimeout => "request_timeout",
            CloseReason::MaxRequests => "max_requests",
            CloseReason::MaxAge => "max_age",
            CloseReason::BadRequest => "bad_request",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::Refused => "refused",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Everything a protocol call may read besides its input: the engine's millisecond clock, the
/// cached `Date` header value, the configuration, this worker's metrics, and whether the server
/// is draining.
pub struct Context<'a> {
    pub now: u64,
    /// IMF-fixdate (RFC 9110 §5.6.7), refreshed by the engine once a second.
    pub date: &'a [u8],
    pub config: &'a Config,
    pub metrics: &'a WorkerMetrics,
    /// The metrics of every worker, for `/metrics`.
    pub all_metrics: &'a crate::metrics::Metrics,
    pub draining: bool,
}

/// Output a connection may queue before it stops reading: bounds the memory a client that
/// pipelines requests but does not read responses can make us hold.
pub const OUTPUT_CAP: usize = 256 * 1024;
