//! HTTP/2 (RFC 9113) for the server side, sans-I/O like the other protocols: the framing
//! layer, header blocks (HPACK), the per-stream state and the connection's state machine.
//! A connection becomes HTTP/2 by ALPN `h2` on the TLS listener or by the client's preface
//! on the plain listener (h2c with prior knowledge).

pub mod conn;
pub mod frame;
pub mod headers;
pub mod hpack;
pub mod stream;

pub use conn::H2Conn;
