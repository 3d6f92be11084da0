//! HTTP/1.1 (RFC 9112): request heads, body framing, responses, the persistence rules of §9,
//! the HTTP side of a WebSocket upgrade, and what is handed to the application and back.

pub mod body;
pub mod conn;
pub mod date;
pub mod exchange;
pub mod request;
pub mod response;
pub mod upgrade;

pub use conn::Http1Conn;
