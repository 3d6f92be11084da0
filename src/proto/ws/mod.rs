//! WebSocket (RFC 6455) after the handshake: the frame codec, permessage-deflate, incremental
//! UTF-8 validation, the per-connection state machine with heartbeats and the close handshake,
//! and the [`Sender`] through which applications write messages.

pub mod conn;
pub mod deflate;
pub mod frame;
pub mod sender;
pub mod utf8;

pub use conn::WsConn;
pub use sender::Sender;
