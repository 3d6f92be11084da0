//! Owns the built-in endpoints of DESIGN §1: what each path answers. It sees a parsed request
//! (method, target, complete body) and returns a reply; framing, persistence and errors belong
//! to the HTTP layer.

use super::channels::Hub;
use crate::proto::Context;
use crate::proto::http1::exchange::{Reply, ReplyBody, Request};
use crate::proto::http1::request::Method;
use std::borrow::Cow;

/// The largest `/stream?chunks=N` we serve: enough for tests and benchmarks, small enough that
/// one request cannot make us build an unbounded response.
pub const MAX_STREAM_CHUNKS: u32 = 100_000;

const GET_HEAD: &str = "Allow: GET, HEAD\r\n";

/// Answers one request, given its path and query (already split by the HTTP layer). `body` is
/// the complete request body (empty when it had none).
pub fn route<'a>(req: &Request<'a>, cx: &Context<'_>, channels: Option<&Hub>) -> Reply<'a> {
    let (method, path, query, body) = (req.method, req.path, req.query, req.body);
    if method == Method::Other {
        // RFC 9110 §9.1: a method the server does not recognise is 501, not 405.
        return Reply::text(501, "method not implemented\n");
    }
    let get_like = matches!(method, Method::Get | Method::Head);
    match path {
        // `OPTIONS *` asks about the server as a whole (RFC 9110 §9.3.7).
        b"*" if method == Method::Options => Reply {
            extra_headers: "Allow: GET, HEAD, POST, OPTIONS\r\n",
            ..Reply::text(200, "")
        },
        b"/plaintext" if get_like => Reply::text(200, "Hello, World!"),
        // A stopping server fails its health check first, so load balancers stop sending it
        // new connections before its listeners close (`server.drain_delay`).
        b"/healthz" if get_like && cx.stopping => Reply::text(503, "draining\n"),
        b"/healthz" if get_like => Reply::text(200, "ok"),
        b"/echo" if method == Method::Post => Reply {
            status: 200,
            content_type: "application/octet-stream",
            extra_headers: "",
            body: ReplyBody::Bytes(Cow::Borrowed(body)),
        },
        b"/echo" => Reply::not_allowed("Allow: POST\r\n"),
        b"/stream" if get_like => stream(query),
        b"/metrics" if get_like => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            extra_headers: "",
            body: ReplyBody::Bytes(Cow::Owned(metrics(cx, channels).into_bytes())),
        },
        b"/plaintext" | b"/healthz" | b"/stream" | b"/metrics" => Reply::not_allowed(GET_HEAD),
        _ => Reply::text(404, "not found\n"),
    }
}

/// The server's series, then the channels' (CHANNELS.md §6).
fn metrics(cx: &Context<'_>, channels: Option<&Hub>) -> String {
    let mut text = cx.all_metrics.render();
    if let Some(hub) = channels {
        hub.render_metrics(&mut text);
    }
    text
}

fn stream<'a>(query: Option<&[u8]>) -> Reply<'a> {
    let n = query
        .into_iter()
        .flat_map(|q| q.split(|&b| b == b'&'))
        .find_map(|kv| kv.strip_prefix(b"chunks="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u32>().ok());
    match n {
        Some(n) if n <= MAX_STREAM_CHUNKS => Reply {
            status: 200,
            content_type: "text/plain",
            extra_headers: "",
            body: ReplyBody::Chunks(
                (0..n)
                    .map(|i| format!("chunk {i}\n").into_bytes())
                    .collect(),
            ),
        },
        _ => Reply::text(400, "stream needs ?chunks=N with N from 0 to 100000\n"),
    }
}
