//! HTTP/1.1 (RFC 9112): request heads, body framing, responses, and the persistence rules of §9.

pub mod body;
pub mod request;
