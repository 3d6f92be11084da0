//! Owns what the HTTP layer hands up to the application and takes back: a parsed request with
//! its complete body, and the answer: a reply to frame, an upgrade to WebSocket, or a reply that
//! will come later (a publish waits for its fan-out). Framing, persistence and errors stay in
//! the HTTP layer; what a path means belongs to the application.

use super::request::{Method, Version};
use std::borrow::Cow;

/// One complete request, borrowed from the connection's input.
pub struct Request<'a> {
    pub method: Method,
    pub version: Version,
    /// The request target as sent, and its path and query split once.
    pub target: &'a [u8],
    pub path: &'a [u8],
    pub query: Option<&'a [u8]>,
    /// The complete body (empty when the request had none).
    pub body: &'a [u8],
    /// The `Last-Event-ID` header of a bodiless request (an event stream reconnecting).
    pub last_event_id: Option<&'a [u8]>,
}

pub enum ReplyBody<'a> {
    Bytes(Cow<'a, [u8]>),
    Chunks(Vec<Vec<u8>>),
}

pub struct Reply<'a> {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines, each ending in CRLF (e.g. `Allow` on a 405).
    pub extra_headers: &'static str,
    pub body: ReplyBody<'a>,
}

impl<'a> Reply<'a> {
    pub fn text(status: u16, body: &'static str) -> Reply<'a> {
        Reply {
            status,
            content_type: "text/plain",
            extra_headers: "",
            body: ReplyBody::Bytes(Cow::Borrowed(body.as_bytes())),
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Reply<'a> {
        Reply {
            status,
            content_type: "application/json",
            extra_headers: "",
            body: ReplyBody::Bytes(Cow::Owned(body)),
        }
    }

    pub fn not_allowed(allow: &'static str) -> Reply<'a> {
        Reply {
            extra_headers: allow,
            ..Reply::text(405, "method not allowed\n")
        }
    }
}

/// What the application decided about a request.
pub enum Answer<'a> {
    Reply(Reply<'a>),
    /// The path is a WebSocket endpoint: complete the handshake (or refuse a bad one with the
    /// HTTP layer's 400/426), then hand the connection's messages to `route`.
    Upgrade {
        route: u16,
    },
    /// The path is an event stream: the HTTP layer writes a `200 text/event-stream` head with
    /// a chunked body that does not end, then hands the connection to `route`
    /// (`Handler::stream_open`, then deliveries) until it closes.
    Stream {
        route: u16,
    },
    /// The reply comes later, through the engine (`Session::on_reply`); the connection reads
    /// no further request until then, so pipelined replies keep their order.
    Later,
}
