//! Owns one HTTP/2 connection (RFC 9113) on the server side, sans-I/O like HTTP/1.1: the
//! preface and SETTINGS exchange, frames in (header blocks with their CONTINUATIONs, bodies,
//! flow control, PING, RST_STREAM, GOAWAY), requests handed to the application in the order
//! they complete, and responses out within the peer's flow-control windows. Connection errors
//! end with GOAWAY and the RFC's code; stream errors with RST_STREAM.
//!
//! Each stream is a connection of its own to the application (`ConnId::stream`): a late reply
//! (`Answer::Later`), an event stream's deliveries and its end are addressed to the stream, so
//! streams never wait for each other. An event stream (`Answer::Stream`) stays open, its
//! events carried in DATA frames, with the same heartbeat, drain and slow-subscriber rules as
//! over HTTP/1.1.

use super::frame::{self, ErrorCode, Head, flag, kind, setting};
use super::headers::{Decoded, Hpack, ResponseHead};
use super::stream::{Phase, Stream};
use crate::log::access::Request as Logged;
use crate::proto::handler::ConnId;
use crate::proto::http1::exchange::{Answer, Reply, ReplyBody, Request};
use crate::proto::http1::request::{Method, Version};
use crate::proto::sse;
use crate::proto::ws::{self, WsConn};
use crate::proto::{Action, CloseReason, Context, OUTPUT_CAP, feed_buffered, ms};
use std::borrow::Cow;

/// The HPACK table size we let the peer use (the protocol's default: we advertise no other).
const TABLE_SIZE: usize = 4096;

/// The payload of our heartbeat PINGs: an ACK carrying it answers ours.
const HEARTBEAT: [u8; 8] = *b"holdfast";

/// Frames that cost us work but carry no request (PING, SETTINGS, PRIORITY, RST_STREAM, empty
/// DATA) a peer may send per second before it is told ENHANCE_YOUR_CALM and cut off: floods
/// of them are a known denial of service (CVE-2019-9512, -9515, -9518).
const CONTROL_FRAMES_PER_SECOND: u32 = 1000;

/// Streams a peer may cancel per second (RST_STREAM on a stream not yet answered), at least:
/// Rapid Reset (CVE-2023-44487) opens and cancels streams to make the server work for nothing.
/// The cap is the larger of this and `http2.max_concurrent_streams`.
const RESETS_PER_SECOND: u32 = 100;

/// How the access log names the protocol (as nginx does).
const ACCESS_LOG_VERSION: &str = "HTTP/2.0";

/// A header block still waiting for its CONTINUATION frames.
struct Continuing {
    /// When its HEADERS frame came: the block must be whole within `http.header_timeout`.
    started: u64,
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
    /// It continues a stream's trailers, not a new request.
    trailers: bool,
}

/// The peer's SETTINGS that shape what we send.
struct PeerSettings {
    initial_window: i64,
    max_frame: usize,
}

pub struct H2Conn {
    /// Input not yet consumed: a partial frame, or frames held back while output is over
    /// `OUTPUT_CAP`. Empty, with no allocation, on an idle connection.
    pending: Vec<u8>,
    preface_done: bool,
    /// Made when the first header block arrives.
    hpack: Option<Box<Hpack>>,
    /// The open streams, in the order they opened (at most `http2.max_concurrent_streams`).
    streams: Vec<Stream>,
    /// The highest stream the peer opened: lower idle IDs are closed (RFC 9113 §5.1.1).
    last_stream: u32,
    continuing: Option<Box<Continuing>>,
    peer: PeerSettings,
    /// What we may still send on the connection, and what the peer may.
    send_window: i64,
    recv_window: i64,
    /// Streams answered so far (for `http.keepalive_requests`).
    answered: u64,
    /// GOAWAY sent, with its last stream: no new stream is taken; the connection closes
    /// when the last one is answered.
    goaway: Option<u32>,
    /// The connection must end: after its output is sent.
    closing: Option<Action>,
    opened_at: u64,
    /// The last request activity (HEADERS, DATA): idle time counts from here.
    last_active: u64,
    /// The last byte from the peer: the heartbeat counts from here.
    last_heard: u64,
    /// Our heartbeat PING is out since then, not yet answered.
    ping_out: Option<u64>,
    /// Since then, data has waited on a flow-control window the peer keeps closed.
    stalled_since: Option<u64>,
    /// This second (engine clock / 1000) and what the peer spent in it: control frames and
    /// streams it cancelled.
    second: u64,
    control_frames: u32,
    resets: u32,
    /// The output was over `OUTPUT_CAP`: input stopped being read until it drains.
    paused: bool,
}

impl H2Conn {
    pub fn new(now: u64) -> H2Conn {
        H2Conn {
            pending: Vec::new(),
            preface_done: false,
            hpack: None,
            streams: Vec::new(),
            last_stream: 0,
            continuing: None,
            peer: PeerSettings {
                initial_window: frame::DEFAULT_WINDOW,
                max_frame: frame::DEFAULT_MAX_FRAME,
            },
            send_window: frame::DEFAULT_WINDOW,
            recv_window: frame::DEFAULT_WINDOW,
            answered: 0,
            goaway: None,
            closing: None,
            opened_at: now,
            last_active: now,
            last_heard: now,
            ping_out: None,
            stalled_since: None,
            second: 0,
            control_frames: 0,
            resets: 0,
            paused: false,
        }
    }

    pub fn on_input(&mut self, input: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.closing.is_some() {
            return Action::Continue;
        }
        if !input.is_empty() {
            self.last_heard = cx.now;
        }
        self.paused = false;
        let mut pending = std::mem::take(&mut self.pending);
        let action = feed_buffered(
            &mut pending,
            input,
            |a| a == Action::Continue,
            |buf| self.process(buf, cx, out),
        );
        self.pending = pending;
        if action != Action::Continue {
            return action;
        }
        self.after(cx, out)
    }

    pub fn on_eof(&mut self, _cx: &Context<'_>, _out: &mut Vec<u8>) -> Action {
        Action::Close {
            reason: CloseReason::PeerClosed,
            linger: false,
        }
    }

    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if let Some(a) = self.closing {
            return a;
        }
        let c = &cx.config.http;
        if let Some(sent) = self.ping_out
            && cx.now >= sent.saturating_add(ms(cx.config.http2.ping_timeout))
        {
            // No answer to our PING: the peer is gone (or hopelessly behind).
            return self.close(CloseReason::HeartbeatTimeout);
        }
        if let Some(since) = self.stalled_since
            && cx.now >= since.saturating_add(ms(cx.config.http2.ping_timeout))
        {
            // A zero-window reader: it asked for data and will not take it. What it holds is
            // bounded (its streams' responses), the time it holds it is bounded here.
            cx.metrics.ws_slow_reader_closes.inc();
            return self.connection_error(
                ErrorCode::EnhanceYourCalm,
                CloseReason::SlowReader,
                cx,
                out,
            );
        }
        let interval = ms(cx.config.http2.ping_interval);
        if interval > 0
            && self.ping_out.is_none()
            && cx.now >= self.last_heard.saturating_add(interval)
        {
            frame::write_ping(out, false, HEARTBEAT);
            self.ping_out = Some(cx.now);
        }
        if let Some(cont) = &self.continuing {
            // A header block that stopped arriving: the client is stalling us.
            if cx.now >= cont.started.saturating_add(ms(c.header_timeout)) {
                return self.connection_error(
                    ErrorCode::ProtocolError,
                    CloseReason::RequestTimeout,
                    cx,
                    out,
                );
            }
        }
        if self.goaway.is_none()
            && cx.now >= self.opened_at.saturating_add(ms(c.max_connection_age))
        {
            self.go_away(ErrorCode::NoError, out);
        }
        if self.streams.is_empty()
            && cx.now >= self.last_active.saturating_add(ms(c.keepalive_timeout))
        {
            if self.goaway.is_none() {
                self.go_away(ErrorCode::NoError, out);
            }
            return self.close(CloseReason::IdleTimeout);
        }
        self.event_timers(cx, out);
        self.after(cx, out)
    }

    /// The server drains: GOAWAY now, the streams in flight are answered, event streams end
    /// when the application says (spread out, with its last event), then the close.
    pub fn on_drain(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.closing.is_some() {
            return Action::Continue;
        }
        if self.goaway.is_none() {
            self.go_away(ErrorCode::NoError, out);
        }
        let mut i = 0;
        while i < self.streams.len() {
            let s = &self.streams[i];
            if s.phase == Phase::Socket {
                let before = self.streams.len();
                self.on_socket(i, cx, out, |ws, cx, o| ws.on_drain(cx, o));
                if self.streams.len() == before {
                    i += 1;
                }
                continue;
            }
            if s.phase == Phase::Events && s.drain.is_none() {
                let d = cx.app.stream_drain(s.route, &stream_cx(cx, s.id));
                if d.after_ms == 0 {
                    self.end_events(i, d.last, CloseReason::Shutdown, cx, out);
                    continue; // `i` may now be the next stream
                }
                self.streams[i].drain = Some((cx.now + d.after_ms, d.last));
            }
            i += 1;
        }
        self.after(cx, out)
    }

    /// Event streams' heartbeats (a comment after `channels.sse_heartbeat` of silence) and
    /// the ends their drain scheduled.
    fn event_timers(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) {
        let heartbeat = ms(cx.config.channels.sse_heartbeat).max(1);
        let mut i = 0;
        while i < self.streams.len() {
            let s = &mut self.streams[i];
            if let Some(ws) = s.socket.as_deref()
                && cx.now >= ws.deadline(cx.config)
            {
                let before = self.streams.len();
                self.on_socket(i, cx, out, |ws, cx, o| ws.on_timeout(cx, o));
                if self.streams.len() == before {
                    i += 1;
                }
                continue;
            }
            if s.phase != Phase::Events {
                i += 1;
                continue;
            }
            if let Some((at, last)) = s.drain
                && cx.now >= at
            {
                self.end_events(i, last, CloseReason::Shutdown, cx, out);
                continue;
            }
            if cx.now >= s.last_output.saturating_add(heartbeat) {
                s.queue(sse::HEARTBEAT);
                s.last_output = cx.now;
            }
            i += 1;
        }
    }

    pub fn on_output_drained(&mut self, _now: u64) {}

    pub fn read_paused(&self) -> bool {
        self.paused
    }

    pub fn deadline(&self, config: &crate::config::Config) -> u64 {
        if self.closing.is_some() {
            return u64::MAX; // the engine closes once the output is out
        }
        let c = &config.http;
        let mut d = self.opened_at.saturating_add(ms(c.max_connection_age));
        if self.goaway.is_some() {
            d = u64::MAX;
        }
        if let Some(since) = self.stalled_since {
            d = d.min(since.saturating_add(ms(config.http2.ping_timeout)));
        }
        match self.ping_out {
            Some(sent) => d = d.min(sent.saturating_add(ms(config.http2.ping_timeout))),
            None if !config.http2.ping_interval.is_zero() => {
                let interval = ms(config.http2.ping_interval);
                d = d.min(self.last_heard.saturating_add(interval));
            }
            None => {}
        }
        if let Some(cont) = &self.continuing {
            d = d.min(cont.started.saturating_add(ms(c.header_timeout)));
        }
        for ws in self.streams.iter().filter_map(|s| s.socket.as_deref()) {
            d = d.min(ws.deadline(config));
        }
        let heartbeat = ms(config.channels.sse_heartbeat).max(1);
        for s in self.streams.iter().filter(|s| s.phase == Phase::Events) {
            d = d.min(s.last_output.saturating_add(heartbeat));
            if let Some((at, _)) = s.drain {
                d = d.min(at);
            }
        }
        if self.streams.is_empty() {
            d = d.min(self.last_active.saturating_add(ms(c.keepalive_timeout)));
        }
        d
    }

    /// The application's late answer to the request that waited.
    pub fn on_reply(
        &mut self,
        reply: Reply<'static>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.closing.is_some() {
            return Action::Continue;
        }
        if let Some(i) = self.waiting(cx.conn.stream) {
            self.respond(i, reply, cx, out);
        }
        self.after(cx, out)
    }

    /// Where stream `id` is, if it waits for the application's late answer.
    fn waiting(&self, id: u32) -> Option<usize> {
        (self.streams.iter()).position(|s| s.id == id && s.phase == Phase::Waiting)
    }

    /// Parses and handles whole frames from `buf`; returns what it consumed.
    fn process(&mut self, buf: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> (usize, Action) {
        let mut at = 0;
        if !self.preface_done {
            let n = buf.len().min(frame::PREFACE.len());
            if buf[..n] != frame::PREFACE[..n] {
                return (
                    buf.len(),
                    self.connection_error(
                        ErrorCode::ProtocolError,
                        CloseReason::BadRequest,
                        cx,
                        out,
                    ),
                );
            }
            if n < frame::PREFACE.len() {
                return (0, Action::Continue);
            }
            self.preface_done = true;
            cx.metrics.h2_connections.inc();
            at = n;
            let streams = cx.config.http2.max_concurrent_streams;
            let list = cx.config.http.max_header_bytes.min(u32::MAX as usize) as u32;
            frame::write_settings(
                out,
                &[
                    (setting::MAX_CONCURRENT_STREAMS, streams),
                    (setting::MAX_HEADER_LIST_SIZE, list),
                    (setting::ENABLE_PUSH, 0),
                    (setting::ENABLE_CONNECT_PROTOCOL, 1),
                ],
            );
        }
        loop {
            if out.len() > OUTPUT_CAP {
                // The peer is not reading what it asked for: stop taking its frames.
                self.paused = true;
                return (at, Action::Continue);
            }
            let Some(head) = Head::parse(&buf[at..]) else {
                return (at, Action::Continue);
            };
            if head.len > frame::DEFAULT_MAX_FRAME {
                return (
                    buf.len(),
                    self.connection_error(
                        ErrorCode::FrameSizeError,
                        CloseReason::BadRequest,
                        cx,
                        out,
                    ),
                );
            }
            let end = at + frame::HEADER_LEN + head.len;
            if buf.len() < end {
                return (at, Action::Continue);
            }
            let payload = &buf[at + frame::HEADER_LEN..end];
            at = end;
            if let Err(code) = self.frame(head, payload, cx, out) {
                return (
                    buf.len(),
                    self.connection_error(code, CloseReason::BadRequest, cx, out),
                );
            }
            // Answer at once what this frame completed or let out: what is sent then does not
            // depend on how the input was cut into reads.
            self.advance(cx, out);
            if let Some(a) = self.closing {
                return (buf.len(), a);
            }
        }
    }

    /// One frame. Err is a connection error (RFC 9113 §5.4.1).
    fn frame(
        &mut self,
        h: Head,
        p: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if let Some(c) = &self.continuing
            && (h.kind != kind::CONTINUATION || h.stream != c.stream)
        {
            return Err(ErrorCode::ProtocolError);
        }
        if cx.now / 1000 != self.second {
            self.second = cx.now / 1000;
            self.control_frames = 0;
            self.resets = 0;
        }
        match h.kind {
            kind::HEADERS | kind::CONTINUATION => self.last_active = cx.now,
            kind::DATA if h.len > 0 || h.has(flag::END_STREAM) => self.last_active = cx.now,
            kind::DATA | kind::PING | kind::SETTINGS | kind::PRIORITY | kind::RST_STREAM => {
                self.control_frames += 1;
                if self.control_frames > CONTROL_FRAMES_PER_SECOND {
                    return Err(ErrorCode::EnhanceYourCalm);
                }
            }
            _ => {}
        }
        match h.kind {
            kind::DATA => self.data(h, p, cx, out),
            kind::HEADERS => self.headers(h, p, cx, out),
            kind::PRIORITY => {
                if h.stream == 0 {
                    return Err(ErrorCode::ProtocolError);
                }
                if p.len() != 5 {
                    self.reset(h.stream, ErrorCode::FrameSizeError, cx, out);
                    return Ok(());
                }
                if u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff == h.stream {
                    self.reset(h.stream, ErrorCode::ProtocolError, cx, out);
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if h.stream == 0 {
                    return Err(ErrorCode::ProtocolError);
                }
                if p.len() != 4 {
                    return Err(ErrorCode::FrameSizeError);
                }
                if h.stream > self.last_stream {
                    return Err(ErrorCode::ProtocolError); // idle
                }
                let before = self.streams.len();
                if let Some(i) = self.streams.iter().position(|s| s.id == h.stream) {
                    self.forget(i, CloseReason::PeerClosed, cx);
                }
                if self.streams.len() < before {
                    self.resets += 1;
                    let cap = RESETS_PER_SECOND.max(cx.config.http2.max_concurrent_streams);
                    if self.resets > cap {
                        return Err(ErrorCode::EnhanceYourCalm);
                    }
                }
                Ok(())
            }
            kind::SETTINGS => self.settings(h, p, out),
            kind::PUSH_PROMISE => Err(ErrorCode::ProtocolError),
            kind::PING => {
                if h.stream != 0 {
                    return Err(ErrorCode::ProtocolError);
                }
                let Ok(payload) = <[u8; 8]>::try_from(p) else {
                    return Err(ErrorCode::FrameSizeError);
                };
                if !h.has(flag::ACK) {
                    frame::write_ping(out, true, payload);
                } else if payload == HEARTBEAT {
                    self.ping_out = None;
                }
                Ok(())
            }
            kind::GOAWAY => {
                if h.stream != 0 {
                    return Err(ErrorCode::ProtocolError);
                }
                if p.len() < 8 {
                    return Err(ErrorCode::FrameSizeError);
                }
                // The peer leaves: answer what is in flight, take nothing new.
                if self.goaway.is_none() {
                    self.go_away(ErrorCode::NoError, out);
                }
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(h, p, cx, out),
            kind::CONTINUATION => {
                let Some(mut c) = self.continuing.take() else {
                    return Err(ErrorCode::ProtocolError);
                };
                if c.block.len() + p.len()
                    > cx.config
                        .http
                        .max_header_bytes
                        .saturating_mul(2)
                        .max(frame::DEFAULT_MAX_FRAME)
                {
                    // A header block without end (CONTINUATION flood): nothing legitimate is
                    // this long once compressed.
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                c.block.extend_from_slice(p);
                if h.has(flag::END_HEADERS) {
                    self.header_block(c.stream, &c.block, c.end_stream, c.trailers, cx, out)
                } else {
                    self.continuing = Some(c);
                    Ok(())
                }
            }
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn headers(
        &mut self,
        h: Head,
        p: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if h.stream == 0 || h.stream.is_multiple_of(2) {
            return Err(ErrorCode::ProtocolError);
        }
        let (mut from, to) = frame::unpad(&h, p).ok_or(ErrorCode::ProtocolError)?;
        if h.has(flag::PRIORITY) {
            if to < from + 5 {
                return Err(ErrorCode::FrameSizeError);
            }
            let dep =
                u32::from_be_bytes([p[from], p[from + 1], p[from + 2], p[from + 3]]) & 0x7fff_ffff;
            if dep == h.stream {
                // A stream that depends on itself (RFC 9113 §5.3.1): a stream error.
                self.reset(h.stream, ErrorCode::ProtocolError, cx, out);
            }
            from += 5;
        }
        let block = &p[from..to];
        let end_stream = h.has(flag::END_STREAM);
        let trailers = if h.stream <= self.last_stream {
            match self.streams.iter().find(|s| s.id == h.stream) {
                Some(s) if s.phase == Phase::Receiving && !s.remote_done => true,
                // On a stream whose request is complete: STREAM_CLOSED (RFC 9113 §5.1).
                Some(_) => return Err(ErrorCode::StreamClosed),
                // A new stream numbered below one already opened (§5.1.1), or one that
                // is closed and forgotten: the same thing to a server that keeps no list.
                None => return Err(ErrorCode::ProtocolError),
            }
        } else {
            false
        };
        if trailers && !end_stream {
            return Err(ErrorCode::ProtocolError);
        }
        if h.has(flag::END_HEADERS) {
            self.header_block(h.stream, block, end_stream, trailers, cx, out)
        } else {
            self.continuing = Some(Box::new(Continuing {
                started: cx.now,
                stream: h.stream,
                block: block.to_vec(),
                end_stream,
                trailers,
            }));
            if !trailers {
                self.last_stream = h.stream;
            }
            Ok(())
        }
    }

    /// A complete header block: a new request, or a request's trailers.
    fn header_block(
        &mut self,
        id: u32,
        block: &[u8],
        end_stream: bool,
        trailers: bool,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        let max_list = cx.config.http.max_header_bytes;
        let hpack = self
            .hpack
            .get_or_insert_with(|| Box::new(Hpack::new(TABLE_SIZE)));
        let decoded = hpack.decode(block, trailers, max_list);
        if !trailers {
            self.last_stream = self.last_stream.max(id);
        }
        match decoded {
            Decoded::Compression => Err(ErrorCode::CompressionError),
            Decoded::Malformed(why) => {
                crate::log::debug!("h2: stream {id} malformed: {why}");
                self.reset(id, ErrorCode::ProtocolError, cx, out);
                Ok(())
            }
            Decoded::Trailers => {
                if let Some(i) = self.streams.iter().position(|s| s.id == id) {
                    self.body_done(i, cx, out);
                }
                Ok(())
            }
            Decoded::Request(head) => {
                if self.goaway.is_some_and(|last| id > last) {
                    // After our GOAWAY: not processed, the client may retry elsewhere.
                    self.reset(id, ErrorCode::RefusedStream, cx, out);
                    return Ok(());
                }
                let limit = cx.config.http2.max_concurrent_streams as usize;
                if self.streams.len() >= limit {
                    self.reset(id, ErrorCode::RefusedStream, cx, out);
                    return Ok(());
                }
                let too_large = head.too_large;
                let send = self.peer.initial_window;
                self.streams
                    .push(Stream::new(id, head, cx.now, frame::DEFAULT_WINDOW, send));
                let i = self.streams.len() - 1;
                if too_large {
                    let reply = Reply::text(431, "request header fields too large\n");
                    self.respond(i, reply, cx, out);
                    return Ok(());
                }
                if end_stream {
                    self.body_done(i, cx, out);
                } else if self.streams[i].is_websocket_connect() {
                    // A tunnel has no request body: what follows is the WebSocket's.
                    self.streams[i].phase = Phase::Ready;
                }
                Ok(())
            }
        }
    }

    fn data(
        &mut self,
        h: Head,
        p: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if h.stream == 0 {
            return Err(ErrorCode::ProtocolError);
        }
        let (from, to) = frame::unpad(&h, p).ok_or(ErrorCode::ProtocolError)?;
        // The whole frame counts against flow control, padding included (RFC 9113 §6.9.1).
        let counted = p.len() as i64;
        self.recv_window -= counted;
        if self.recv_window < 0 {
            return Err(ErrorCode::FlowControlError);
        }
        if counted > 0 {
            // Bodies are bounded by http.max_body_bytes: give the connection's window back.
            frame::write_window_update(out, 0, counted as u32);
            self.recv_window += counted;
        }
        if h.stream > self.last_stream {
            return Err(ErrorCode::ProtocolError); // idle
        }
        let Some(i) = self.streams.iter().position(|s| s.id == h.stream) else {
            self.reset(h.stream, ErrorCode::StreamClosed, cx, out);
            return Ok(());
        };
        let s = &mut self.streams[i];
        if s.remote_done {
            self.reset(h.stream, ErrorCode::StreamClosed, cx, out);
            return Ok(());
        }
        s.recv_window -= counted;
        if s.recv_window < 0 {
            self.reset(h.stream, ErrorCode::FlowControlError, cx, out);
            return Ok(());
        }
        if s.phase == Phase::Socket {
            let end = h.has(flag::END_STREAM);
            if !end && counted > 0 {
                frame::write_window_update(out, h.stream, counted as u32);
                s.recv_window += counted;
            }
            let payload = &p[from..to];
            self.on_socket(i, cx, out, |ws, cx, o| {
                let a = ws.on_input(payload, cx, o);
                if end && a == Action::Continue {
                    ws.on_eof(cx, o) // the client's side of the stream ended: its EOF
                } else {
                    a
                }
            });
            return Ok(());
        }
        if s.phase != Phase::Receiving {
            // Answered early (431, 413): the rest of the body is not wanted.
            if h.has(flag::END_STREAM) {
                s.remote_done = true;
                self.finish_if_done(i);
            }
            return Ok(());
        }
        if s.body.len() + (to - from) > cx.config.http.max_body_bytes {
            let reply = Reply::text(413, "request body too large\n");
            self.respond(i, reply, cx, out);
            return Ok(());
        }
        s.body.extend_from_slice(&p[from..to]);
        if h.has(flag::END_STREAM) {
            self.body_done(i, cx, out);
        } else if counted > 0 {
            frame::write_window_update(out, h.stream, counted as u32);
            self.streams[i].recv_window += counted;
        }
        Ok(())
    }

    /// The request's side ended (END_STREAM): it is complete, unless its length lies.
    fn body_done(&mut self, i: usize, cx: &Context<'_>, out: &mut Vec<u8>) {
        let s = &mut self.streams[i];
        s.remote_done = true;
        if s.phase != Phase::Receiving {
            self.finish_if_done(i);
            return;
        }
        if s.head
            .content_length
            .is_some_and(|n| n != s.body.len() as u64)
        {
            let id = s.id;
            self.reset(id, ErrorCode::ProtocolError, cx, out);
            return;
        }
        s.phase = Phase::Ready;
    }

    fn settings(&mut self, h: Head, p: &[u8], out: &mut Vec<u8>) -> Result<(), ErrorCode> {
        if h.stream != 0 {
            return Err(ErrorCode::ProtocolError);
        }
        if h.has(flag::ACK) {
            return if p.is_empty() {
                Ok(())
            } else {
                Err(ErrorCode::FrameSizeError)
            };
        }
        if !p.len().is_multiple_of(6) {
            return Err(ErrorCode::FrameSizeError);
        }
        for kv in p.chunks_exact(6) {
            let id = u16::from_be_bytes([kv[0], kv[1]]);
            let v = u32::from_be_bytes([kv[2], kv[3], kv[4], kv[5]]);
            match id {
                setting::ENABLE_PUSH if v > 1 => return Err(ErrorCode::ProtocolError),
                setting::INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > frame::MAX_WINDOW {
                        return Err(ErrorCode::FlowControlError);
                    }
                    let delta = v - self.peer.initial_window;
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(ErrorCode::FlowControlError);
                        }
                    }
                    self.peer.initial_window = v;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME as u32..=(1 << 24) - 1).contains(&v) {
                        return Err(ErrorCode::ProtocolError);
                    }
                    self.peer.max_frame = v as usize;
                }
                // The table size only matters to an encoder that indexes (ours does not); the
                // rest are advisory or unknown (ignored, RFC 9113 §6.5.2).
                _ => {}
            }
        }
        frame::write_settings_ack(out);
        Ok(())
    }

    fn window_update(
        &mut self,
        h: Head,
        p: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ErrorCode> {
        if p.len() != 4 {
            return Err(ErrorCode::FrameSizeError);
        }
        let inc = i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
        if h.stream == 0 {
            if inc == 0 {
                return Err(ErrorCode::ProtocolError);
            }
            self.send_window += inc;
            if self.send_window > frame::MAX_WINDOW {
                return Err(ErrorCode::FlowControlError);
            }
            return Ok(());
        }
        if h.stream > self.last_stream {
            return Err(ErrorCode::ProtocolError); // idle
        }
        let Some(s) = self.streams.iter_mut().find(|s| s.id == h.stream) else {
            return Ok(()); // closed: a late update is harmless
        };
        if inc == 0 {
            self.reset(h.stream, ErrorCode::ProtocolError, cx, out);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > frame::MAX_WINDOW {
            self.reset(h.stream, ErrorCode::FlowControlError, cx, out);
        }
        Ok(())
    }

    /// Answers the complete requests in order, sends what the windows allow, and ends a
    /// connection that has said GOAWAY once nothing is left in flight.
    fn advance(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) {
        while self.closing.is_none() {
            let Some(i) = self.streams.iter().position(|s| s.phase == Phase::Ready) else {
                break;
            };
            self.dispatch(i, cx, out);
        }
        self.flush(cx.now, out);
        if self.closing.is_none() && self.goaway.is_some() && self.streams.is_empty() {
            // GOAWAY said, nothing left in flight: done.
            self.close(CloseReason::Requested);
        }
    }

    /// After input, a reply or a timer.
    fn after(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if let Some(a) = self.closing {
            return a;
        }
        self.advance(cx, out);
        if let Some(a) = self.closing {
            return a;
        }
        if self.streams.is_empty() {
            // Give the memory back: an idle connection holds no stream table.
            self.streams = Vec::new();
        }
        Action::Continue
    }

    /// Hands a complete request to the application.
    fn dispatch(&mut self, i: usize, cx: &Context<'_>, out: &mut Vec<u8>) {
        if cx.over_limit {
            let reply = Reply {
                extra_headers: "Retry-After: 1\r\n",
                ..Reply::text(
                    429,
                    "too many connections from this address; try again later\n",
                )
            };
            self.respond(i, reply, cx, out);
            if self.goaway.is_none() {
                self.go_away(ErrorCode::NoError, out);
            }
            return;
        }
        let s = &self.streams[i];
        let path = &s.head.path[..];
        let (p, query) = match memchr::memchr(b'?', path) {
            Some(q) => (&path[..q], Some(&path[q + 1..])),
            None => (path, None),
        };
        // An extended CONNECT for a WebSocket (RFC 8441) is HTTP/2's GET with Upgrade: the
        // application sees the request it knows.
        let method = if s.is_websocket_connect() {
            Method::Get
        } else {
            Method::from_token(&s.head.method)
        };
        let req = Request {
            method,
            version: Version::Http2,
            target: path,
            path: p,
            query,
            body: &s.body,
            last_event_id: s.head.last_event_id.as_deref(),
        };
        let id = s.id;
        let answer = cx.app.request(&req, &stream_cx(cx, id));
        let reply = match answer {
            Answer::Reply(r) => into_static(r),
            Answer::Later => {
                self.streams[i].phase = Phase::Waiting;
                return;
            }
            Answer::Stream { route } => {
                self.open_events(i, route, cx, out);
                return;
            }
            Answer::Upgrade { route } => {
                let s = &self.streams[i];
                if !s.is_websocket_connect() {
                    // A GET with Upgrade headers over HTTP/2 cannot upgrade (RFC 9113 §8.6):
                    // HTTP_1_1_REQUIRED, which clients answer by retrying over HTTP/1.1.
                    self.reset(id, ErrorCode::Http11Required, cx, out);
                    return;
                }
                if s.head.ws_version.as_deref() != Some(b"13") {
                    let reply = Reply {
                        extra_headers: "Sec-WebSocket-Version: 13\r\n",
                        ..Reply::text(426, "WebSocket version 13 only\n")
                    };
                    self.respond(i, reply, cx, out);
                    return;
                }
                self.open_socket(i, route, cx, out);
                return;
            }
        };
        self.respond(i, reply, cx, out);
    }

    /// Writes a response's head and as much of its body as the windows allow.
    fn respond(&mut self, i: usize, reply: Reply<'_>, cx: &Context<'_>, out: &mut Vec<u8>) {
        let head_only = self.streams[i].head.method == b"HEAD";
        let body: Cow<'_, [u8]> = match reply.body {
            ReplyBody::Bytes(b) => b,
            ReplyBody::Chunks(c) => Cow::Owned(c.concat()),
        };
        let before = out.len();
        let mut block = Vec::with_capacity(64);
        ResponseHead {
            status: reply.status,
            content_type: reply.content_type,
            content_length: Some(body.len()),
            extra_lines: reply.extra_headers,
            date: cx.date,
        }
        .encode(&mut block);
        let s = &mut self.streams[i];
        let empty = head_only || body.is_empty();
        frame::write_headers(out, s.id, &block, empty, self.peer.max_frame);
        s.phase = Phase::Sending;
        if !empty {
            s.outgoing = body.into_owned();
            s.sent = 0;
        }
        cx.metrics.response(reply.status);
        let s = &self.streams[i];
        log_stream(s, reply.status, out.len() - before + s.outgoing.len(), cx);
        self.answered += 1;
        if self.goaway.is_none() && self.answered >= cx.config.http.keepalive_requests {
            self.go_away(ErrorCode::NoError, out);
        }
        if empty {
            self.finish_if_done(i);
        }
    }

    /// Sends held-back response bytes as far as the windows allow.
    fn flush(&mut self, now: u64, out: &mut Vec<u8>) {
        let mut stalled = false;
        let mut i = 0;
        while i < self.streams.len() {
            let s = &mut self.streams[i];
            if matches!(s.phase, Phase::Sending | Phase::Events | Phase::Socket)
                && !s.unsent().is_empty()
            {
                while !s.unsent().is_empty() && self.send_window > 0 && s.send_window > 0 {
                    let room =
                        (self.send_window.min(s.send_window) as usize).min(self.peer.max_frame);
                    let n = room.min(s.unsent().len());
                    let last = n == s.unsent().len() && s.end_after;
                    frame::write_data(out, s.id, &s.outgoing[s.sent..s.sent + n], last);
                    s.sent += n;
                    self.send_window -= n as i64;
                    s.send_window -= n as i64;
                }
                if s.unsent().is_empty() {
                    s.outgoing = Vec::new();
                    s.sent = 0;
                    if self.finish_if_done(i) {
                        continue;
                    }
                } else {
                    stalled = true; // waiting on a window the peer does not open
                }
            }
            i += 1;
        }
        self.stalled_since = match (stalled, self.stalled_since) {
            (false, _) => None,
            (true, since) => Some(since.unwrap_or(now)),
        };
    }

    /// Forgets a stream whose response is out. A request answered early (413, 431) may still
    /// be sending: its later DATA finds no stream and is answered STREAM_CLOSED.
    fn finish_if_done(&mut self, i: usize) -> bool {
        let s = &self.streams[i];
        if s.phase != Phase::Sending || !s.unsent().is_empty() {
            return false;
        }
        self.streams.remove(i);
        true
    }

    /// Resets a stream (a stream error) and forgets it.
    fn reset(&mut self, id: u32, code: ErrorCode, cx: &Context<'_>, out: &mut Vec<u8>) {
        cx.metrics.h2_error(true, code as u32);
        frame::write_rst(out, id, code);
        if let Some(i) = self.streams.iter().position(|s| s.id == id) {
            self.forget(i, CloseReason::ProtocolError, cx);
        }
    }

    /// Drops a stream; an event stream the application knows is gone for it too.
    fn forget(&mut self, i: usize, reason: CloseReason, cx: &Context<'_>) {
        let s = self.streams.remove(i);
        if s.registered {
            cx.app.closed(&stream_cx(cx, s.id), reason);
        }
    }

    // ---- WebSockets (RFC 8441) -----------------------------------------------------------

    /// Answers an extended CONNECT with 200 (and the permessage-deflate parameters chosen from
    /// the client's offers, as over HTTP/1.1) and runs a WebSocket session on the stream.
    fn open_socket(&mut self, i: usize, route: u16, cx: &Context<'_>, out: &mut Vec<u8>) {
        let before = out.len();
        let ws = &cx.config.websocket;
        let s = &mut self.streams[i];
        let deflate = if ws.permessage_deflate {
            ws::deflate::negotiate(
                s.head.ws_extensions.iter().map(Vec::as_slice),
                ws.deflate_context_takeover,
            )
        } else {
            None
        };
        let extensions = deflate
            .as_ref()
            .map(|(_, h)| format!("Sec-WebSocket-Extensions: {h}\r\n"))
            .unwrap_or_default();
        let mut block = Vec::with_capacity(64);
        ResponseHead {
            status: 200,
            content_type: "",
            content_length: None,
            extra_lines: &extensions,
            date: cx.date,
        }
        .encode(&mut block);
        frame::write_headers(out, s.id, &block, false, self.peer.max_frame);
        cx.metrics.response(200);
        cx.metrics.ws_upgrades.inc();
        log_stream(s, 200, out.len() - before, cx);
        // Jitter differs between streams and connections opened in the same millisecond.
        let seed = s.id ^ cx.conn.slot.rotate_left(16) ^ cx.now as u32;
        let params = deflate.map(|(p, _)| p);
        s.socket = Some(Box::new(WsConn::new(
            cx.now, cx.config, seed, params, route,
        )));
        s.phase = Phase::Socket;
        s.end_after = false;
        s.registered = true;
        s.body = Vec::new();
        let target = std::mem::take(&mut s.head.path);
        self.on_socket(i, cx, out, |ws, cx, o| ws.open(&target, cx, o));
        if let Some(s) = self.streams.get_mut(i).filter(|s| s.phase == Phase::Socket) {
            s.head.path = target;
        }
    }

    /// Runs one call of stream `i`'s WebSocket session about that stream, queues what it
    /// wrote as the stream's DATA, and ends the stream when the session closes.
    fn on_socket(
        &mut self,
        i: usize,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
        f: impl FnOnce(&mut WsConn, &Context<'_>, &mut Vec<u8>) -> Action,
    ) {
        let s = &mut self.streams[i];
        let Some(ws) = s.socket.as_deref_mut() else {
            return;
        };
        let scx = stream_cx(cx, s.id);
        let mut written = Vec::new();
        let action = f(ws, &scx, &mut written);
        s.queue(&written);
        if let Action::Close { reason, .. } = action {
            s.socket = None;
            cx.metrics.ws_closed.inc();
            self.end_events(i, b"", reason, cx, out);
        }
    }

    // ---- event streams ------------------------------------------------------------------

    /// The streams the application knows as event streams (see `Session::substreams`).
    pub fn event_streams(&self) -> Vec<u32> {
        (self.streams.iter())
            .filter(|s| s.registered)
            .map(|s| s.id)
            .collect()
    }

    /// A request that answered `Answer::Later` is an event stream after all (`Work::Stream`).
    pub fn on_stream_later(&mut self, route: u16, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.closing.is_some() {
            return Action::Continue;
        }
        if let Some(i) = self.waiting(cx.conn.stream) {
            self.open_events(i, route, cx, out);
        }
        self.after(cx, out)
    }

    /// Writes an event stream's head and lets the application write its first events.
    fn open_events(&mut self, i: usize, route: u16, cx: &Context<'_>, out: &mut Vec<u8>) {
        let before = out.len();
        let mut block = Vec::with_capacity(96);
        ResponseHead {
            status: 200,
            content_type: sse::CONTENT_TYPE,
            content_length: None,
            extra_lines: sse::HEAD_FIELDS,
            date: cx.date,
        }
        .encode(&mut block);
        let s = &mut self.streams[i];
        frame::write_headers(out, s.id, &block, false, self.peer.max_frame);
        s.phase = Phase::Events;
        s.route = route;
        s.end_after = false;
        s.registered = true;
        s.last_output = cx.now;
        s.body = Vec::new();
        cx.metrics.response(200);
        log_stream(s, 200, out.len() - before, cx);
        let (id, target) = (s.id, std::mem::take(&mut s.head.path));
        let mut framed = Vec::new();
        let open = cx
            .app
            .stream_open(route, &target, &stream_cx(cx, id), &mut framed);
        self.streams[i].head.path = target;
        self.queue_events(i, &framed, cx.now);
        if !open {
            self.end_events(i, b"", CloseReason::Requested, cx, out);
        }
    }

    /// Queues what the application framed for HTTP/1.1 (chunks) as this stream's body.
    fn queue_events(&mut self, i: usize, framed: &[u8], now: u64) {
        let mut plain = Vec::new();
        sse::unchunk(framed, &mut plain);
        let s = &mut self.streams[i];
        s.queue(&plain);
        s.last_output = now;
    }

    /// Ends an event stream after `last`: the application forgets it now, the body ends when
    /// what is queued is sent.
    fn end_events(
        &mut self,
        i: usize,
        last: &[u8],
        reason: CloseReason,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) {
        let s = &mut self.streams[i];
        s.queue(last);
        s.end_after = true;
        s.phase = Phase::Sending;
        s.drain = None;
        s.registered = false;
        cx.app.closed(&stream_cx(cx, s.id), reason);
        if s.unsent().is_empty() {
            frame::write_data(out, s.id, &[], true);
            self.streams.remove(i);
        }
    }

    /// An event fanned out to this stream (`cx.conn.stream`), framed as HTTP/1.1 chunks.
    /// `unsent` is what the whole connection has queued: past `slow_cap` the client reads
    /// nothing at all and the connection is closed; a stream whose own window holds more than
    /// `slow_cap` is reset (CANCEL). Either way its `EventSource` reconnects and recovers.
    pub fn deliver(
        &mut self,
        frame: &[u8],
        unsent: usize,
        slow_cap: usize,
        slow_code: u16,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.closing.is_some() {
            return Action::Continue;
        }
        let id = cx.conn.stream;
        let Some(i) = (self.streams.iter())
            .position(|s| s.id == id && matches!(s.phase, Phase::Events | Phase::Socket))
        else {
            return Action::Continue;
        };
        if self.streams[i].phase == Phase::Socket {
            let backlog = self.streams[i].unsent().len().max(unsent);
            self.on_socket(i, cx, out, |ws, cx, o| {
                ws.deliver(frame, backlog, slow_cap, slow_code, cx, o)
            });
            return self.after(cx, out);
        }
        if unsent.max(out.len()) > slow_cap {
            cx.metrics.ws_slow_reader_closes.inc();
            return self.close(CloseReason::SlowReader);
        }
        if self.streams[i].unsent().len() > slow_cap {
            cx.metrics.ws_slow_reader_closes.inc();
            self.reset(id, ErrorCode::Cancel, cx, out);
            return self.after(cx, out);
        }
        self.queue_events(i, frame, cx.now);
        self.after(cx, out)
    }

    fn go_away(&mut self, code: ErrorCode, out: &mut Vec<u8>) {
        frame::write_goaway(out, self.last_stream, code);
        self.goaway = Some(self.last_stream);
    }

    fn connection_error(
        &mut self,
        code: ErrorCode,
        reason: CloseReason,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        crate::log::debug!("h2: connection error {}", code.label());
        if self.preface_done {
            cx.metrics.h2_error(false, code as u32);
            frame::write_goaway(out, self.last_stream, code);
        }
        self.close(reason)
    }

    fn close(&mut self, reason: CloseReason) -> Action {
        let a = Action::Close {
            reason,
            linger: true,
        };
        self.closing = Some(a);
        a
    }
}

/// One access log line for stream `s`'s response of `bytes`.
fn log_stream(s: &Stream, status: u16, bytes: usize, cx: &Context<'_>) {
    let logged = Logged {
        method: &s.head.method,
        target: &s.head.path,
        version: ACCESS_LOG_VERSION,
    };
    cx.log_access(Some(logged), status, bytes, s.started);
}

/// The context of a call about stream `id`: the application sees the stream as a connection.
fn stream_cx<'c>(cx: &Context<'c>, id: u32) -> Context<'c> {
    Context {
        conn: ConnId {
            stream: id,
            ..cx.conn
        },
        ..*cx
    }
}

/// A reply's body outlives the request it answered (it may wait for the window).
fn into_static(r: Reply<'_>) -> Reply<'static> {
    Reply {
        status: r.status,
        content_type: r.content_type,
        extra_headers: r.extra_headers,
        body: match r.body {
            ReplyBody::Bytes(b) => ReplyBody::Bytes(Cow::Owned(b.into_owned())),
            ReplyBody::Chunks(c) => ReplyBody::Chunks(c),
        },
    }
}
