//! HTTP/1.1 (RFC 9112): request heads, body framing, responses, and the persistence rules of §9.

pub mod body;
pub mod conn;
pub mod date;
pub mod request;
pub mod response;

pub use conn::Http1Conn;
