//! WebSocket (RFC 6455): the opening handshake, the frame codec, incremental UTF-8 validation,
//! and the per-connection state machine with heartbeats and the close handshake.

pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod utf8;

pub use conn::WsConn;
