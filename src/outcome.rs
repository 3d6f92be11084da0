//! Owns the vocabulary of how connections end and fail: the reasons and codes that the protocols
//! report and the metrics count, one label each. It sits below both, so that `metrics` need not
//! import the protocols that import it.

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
    /// A WebSocket close handshake completed (or timed out waiting for the peer's close).
    WsClosed,
    /// A WebSocket protocol violation (1002, 1007, 1009 sent).
    ProtocolError,
    /// A WebSocket peer did not answer a ping within `websocket.pong_timeout`.
    HeartbeatTimeout,
    /// A peer that stopped reading kept its output over the cap for too long (1008 sent).
    SlowReader,
    /// The TLS handshake or a record failed (an alert sent), or plaintext on the TLS port.
    TlsError,
    /// `server.proxy_protocol`: no valid PROXY header (missing, malformed, or not complete
    /// within `http.header_timeout`).
    ProxyHeader,
    /// Over `server.max_connections_per_ip` or `server.connection_rate_per_ip` (answered 429 or
    /// closed with 1013, or closed before TLS).
    PerIpLimit,
}

impl CloseReason {
    pub const ALL: [CloseReason; 17] = [
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
        CloseReason::WsClosed,
        CloseReason::ProtocolError,
        CloseReason::HeartbeatTimeout,
        CloseReason::SlowReader,
        CloseReason::TlsError,
        CloseReason::ProxyHeader,
        CloseReason::PerIpLimit,
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
            CloseReason::WsClosed => "ws_closed",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::TlsError => "tls_error",
            CloseReason::ProxyHeader => "proxy_header",
            CloseReason::PerIpLimit => "per_ip_limit",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// HTTP/2's error codes (RFC 9113 §7) by number, as `/metrics` labels them: the codes of the
/// GOAWAY and RST_STREAM frames the server sends.
pub const H2_ERROR_LABELS: [&str; 14] = [
    "no_error",
    "protocol_error",
    "internal_error",
    "flow_control_error",
    "settings_timeout",
    "stream_closed",
    "frame_size_error",
    "refused_stream",
    "cancel",
    "compression_error",
    "connect_error",
    "enhance_your_calm",
    "inadequate_security",
    "http_1_1_required",
];

/// Why a TLS connection failed, one metrics label each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Not TLS at all: bytes that do not parse as TLS records.
    BadRecord,
    /// A plaintext HTTP request on the TLS port (answered 400).
    PlaintextHttp,
    /// No protocol version, cipher suite or group in common (TLS 1.1 and older land here).
    Incompatible,
    /// No ALPN protocol in common.
    NoAlpn,
    /// The peer sent a fatal alert (for example, it does not trust our certificate).
    AlertReceived,
    /// A record failed to decrypt or a handshake message broke the protocol.
    Protocol,
    /// The handshake did not complete within `http.header_timeout`.
    Timeout,
    /// The peer closed during the handshake.
    Eof,
    /// Anything else, after the handshake included.
    Other,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 9] = [
        TlsFailure::BadRecord,
        TlsFailure::PlaintextHttp,
        TlsFailure::Incompatible,
        TlsFailure::NoAlpn,
        TlsFailure::AlertReceived,
        TlsFailure::Protocol,
        TlsFailure::Timeout,
        TlsFailure::Eof,
        TlsFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TlsFailure::BadRecord => "bad_record",
            TlsFailure::PlaintextHttp => "plaintext_http",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::NoAlpn => "no_alpn",
            TlsFailure::AlertReceived => "alert_received",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Eof => "eof",
            TlsFailure::Other => "other",
        }
    }
}

/// WebSocket close codes counted separately in metrics; anything else is "other".
pub const COUNTED_CODES: [u16; 9] = [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011];
