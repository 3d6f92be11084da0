//! Owns one Server-Sent Events stream after its response head: an HTTP/1.1 response that never
//! ends by itself, its body a chunked `text/event-stream`. What the events are is the
//! application's business; this layer frames chunks, keeps idle streams alive with a comment
//! line (so that load balancers with idle timeouts never cut them), ends the body cleanly on
//! drain, and ignores whatever the client sends (a stream has no requests behind it). Sans-I/O:
//! bytes and a `Context` in, bytes and an `Action` out; the engine asks for `deadline()`.

use crate::proto::handler::StreamDrain;
use crate::proto::{Action, CloseReason, Context, ms};

/// The end of a chunked body (RFC 9112 §7.1).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The heartbeat: an SSE comment line, which every client ignores.
pub const HEARTBEAT: &[u8] = b":\n";

/// An event stream's content type and the fields beside it in its response head: never
/// cached, and not buffered by an nginx in front (`X-Accel-Buffering`).
pub const CONTENT_TYPE: &str = "text/event-stream";
pub const HEAD_FIELDS: &str = "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";

/// How long an ended stream's last bytes may take to leave before the connection is closed
/// anyway (a client that stopped reading must not hold it open).
const END_GRACE_MS: u64 = 5_000;

/// Appends `body` as one chunk (nothing for an empty body: an empty chunk would end it).
pub fn chunk(out: &mut Vec<u8>, body: &[u8]) {
    if body.is_empty() {
        return;
    }
    write_hex(out, body.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Appends the bodies of the chunks in `framed` (as [`chunk`] writes them, for HTTP/1.1) to
/// `out`: the same events for a stream that frames them otherwise (HTTP/2 DATA). Stops at the
/// last chunk or at anything that is not a chunk.
pub fn unchunk(mut framed: &[u8], out: &mut Vec<u8>) {
    while let Some(crlf) = memchr::memmem::find(framed, b"\r\n") {
        let Some(len) = std::str::from_utf8(&framed[..crlf])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            return;
        };
        let start = crlf + 2;
        if len == 0 || framed.len() < start + len + 2 {
            return;
        }
        out.extend_from_slice(&framed[start..start + len]);
        framed = &framed[start + len + 2..];
    }
}

/// Where the body of a chunk written by [`chunk`] starts, for a body of `len` bytes.
pub fn chunk_header_len(len: usize) -> usize {
    hex_digits(len) + 2
}

fn hex_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 16 {
        n >>= 4;
        d += 1;
    }
    d
}

fn write_hex(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = hex_digits(n);
    for i in (0..digits).rev() {
        out.push(HEX[(n >> (4 * i)) & 0xf]);
    }
}

pub struct StreamConn {
    route: u16,
    /// The last time output went out (or the stream opened): the heartbeat counts from here.
    last_output: u64,
    /// When to look again whether a heartbeat is due. Moves only when the timer fires, so that
    /// a busy stream does not re-arm its timer on every event it sends.
    next_check: u64,
    /// During a drain, the last event the application asked for and when it is due.
    drain: Option<Box<(u64, StreamDrain)>>,
    /// The stream has ended: the close, and when it happens whether or not the last bytes
    /// have left.
    ended: Option<(u64, CloseReason)>,
}

impl StreamConn {
    pub fn new(now: u64, route: u16, heartbeat: u64) -> StreamConn {
        StreamConn {
            route,
            last_output: now,
            next_check: now.saturating_add(heartbeat.max(1)),
            drain: None,
            ended: None,
        }
    }

    /// The response head is written: the application writes the stream's first chunks (or
    /// ends it at once).
    pub fn open(&mut self, target: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if cx.app.stream_open(self.route, target, cx, out) {
            Action::Continue
        } else {
            self.end(None, CloseReason::Requested, cx.now, out)
        }
    }

    /// Queues chunks framed once for many streams (an event fanned out), unless this stream
    /// has more than `slow_cap` bytes unsent: a client that does not keep up is cut off (its
    /// `EventSource` reconnects and recovers what it missed from the history).
    pub fn deliver(
        &mut self,
        chunks: &[u8],
        unsent: usize,
        slow_cap: usize,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.ended.is_some() {
            return Action::Continue;
        }
        if unsent.max(out.len()) > slow_cap {
            cx.metrics.ws_slow_reader_closes.inc();
            // It is not reading: its queued chunks are dropped and it is closed at once.
            self.ended = Some((cx.now, CloseReason::SlowReader));
            return Action::Close {
                reason: CloseReason::SlowReader,
                linger: false,
            };
        }
        out.extend_from_slice(chunks);
        Action::Continue
    }

    /// See [`crate::proto::Session::takes_shared`].
    pub fn takes_shared(&self, unsent: usize, slow_cap: usize) -> bool {
        self.ended.is_none() && unsent <= slow_cap
    }

    /// Whatever a client sends on a stream is not a request: dropped.
    pub fn on_input(&mut self, _input: &[u8], _cx: &Context<'_>, _out: &mut Vec<u8>) -> Action {
        Action::Continue
    }

    pub fn on_eof(&mut self, cx: &Context<'_>, _out: &mut Vec<u8>) -> Action {
        self.ended = Some((cx.now, CloseReason::PeerClosed));
        Action::Close {
            reason: CloseReason::PeerClosed,
            linger: false,
        }
    }

    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let now = cx.now;
        if let Some((at, reason)) = self.ended {
            if now < at {
                return Action::Continue;
            }
            return Action::Close {
                reason,
                linger: false,
            };
        }
        if let Some(d) = self.drain.as_deref()
            && now >= d.0
        {
            let last = d.1.last;
            self.drain = None;
            return self.end(Some(last), CloseReason::Shutdown, now, out);
        }
        let heartbeat = ms(cx.config.channels.sse_heartbeat).max(1);
        if now >= self.last_output.saturating_add(heartbeat) {
            chunk(out, HEARTBEAT);
            self.last_output = now;
        }
        self.next_check = self.last_output.saturating_add(heartbeat).max(now + 1);
        Action::Continue
    }

    /// The server is draining: the application's last event at the moment it chooses (spread
    /// over half the shutdown timeout for channels), then the end of the body and a close.
    pub fn on_drain(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.ended.is_some() {
            return Action::Continue;
        }
        let drain = cx.app.stream_drain(self.route, cx);
        if drain.after_ms == 0 {
            return self.end(Some(drain.last), CloseReason::Shutdown, cx.now, out);
        }
        self.drain = Some(Box::new((cx.now + drain.after_ms, drain)));
        Action::Continue
    }

    pub fn on_output_drained(&mut self, now: u64) {
        self.last_output = now;
    }

    pub fn read_paused(&self) -> bool {
        false
    }

    pub fn deadline(&self) -> u64 {
        if let Some((at, _)) = self.ended {
            return at;
        }
        match self.drain.as_deref() {
            Some(d) => self.next_check.min(d.0),
            None => self.next_check,
        }
    }

    /// Ends the body (after `last`, if any) and closes once it is sent, or after a grace.
    fn end(
        &mut self,
        last: Option<&[u8]>,
        reason: CloseReason,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Action {
        if let Some(last) = last {
            chunk(out, last);
        }
        out.extend_from_slice(LAST_CHUNK);
        self.ended = Some((now + END_GRACE_MS, reason));
        Action::Close {
            reason,
            linger: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_framed_with_their_hex_length() {
        let mut out = Vec::new();
        chunk(&mut out, b"data: x\n\n");
        assert_eq!(out, b"9\r\ndata: x\n\n\r\n");
        let body = vec![b'a'; 300];
        let mut out = Vec::new();
        chunk(&mut out, &body);
        assert!(out.starts_with(b"12c\r\n"));
        assert_eq!(chunk_header_len(300), 5);
        assert_eq!(&out[chunk_header_len(300)..][..300], &body[..]);
        let mut out = Vec::new();
        chunk(&mut out, b"");
        assert!(out.is_empty(), "an empty chunk would end the body");
        let mut framed = Vec::new();
        chunk(&mut framed, b"id: 1\n");
        chunk(&mut framed, &body);
        framed.extend_from_slice(LAST_CHUNK);
        chunk(&mut framed, b"after the end");
        let mut plain = Vec::new();
        unchunk(&framed, &mut plain);
        assert_eq!(plain, [&b"id: 1\n"[..], &body].concat());
        for n in [0, 1, 15, 16, 255, 256, 4095, 4096, 1 << 20] {
            let mut out = Vec::new();
            write_hex(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{n:x}"));
        }
    }
}
