//! Owns one HTTP/1.1 connection's state: the bytes of a request not yet complete, whether the
//! connection persists after each response (RFC 9112 §9.3), its deadlines (idle, request,
//! maximum age) and what happens when they pass. Everything about keep-alive is decided here
//! and nowhere else. Sans-I/O: bytes and a `Context` in, response bytes and an `Action` out.

use super::body::BodyDecoder;
use super::exchange::{self, Answer, Reply, ReplyBody};
use super::request::{
    BodyFraming, Limits, Method, RequestHead, Version, parse_head, path_and_query,
};
use super::response::{self, Body, Head, Persist};
use super::upgrade;
use crate::config::Config;
use crate::log::access::Request;
use crate::proto::handler::ROUTE_OVER_LIMIT;
use crate::proto::{Action, CloseReason, Context, OUTPUT_CAP, feed_buffered, ms};

/// The longest request target we accept (nginx's default large header buffer is 8 KiB too).
pub const MAX_TARGET_BYTES: usize = 8192;

/// Where the connection is in reading its current request.
enum Reading {
    /// Between requests: no byte of the next one has arrived.
    Idle,
    /// Part of a request head has arrived, starting at this time.
    Head { started: u64 },
    /// The head is complete; the body is arriving. Boxed: most connections never have one, and
    /// an idle connection should stay small.
    Body(Box<BodyState>),
}

struct BodyState {
    head: RequestHead,
    /// The method token and then the request target, copied out of the input because the head
    /// bytes are consumed (one allocation for both: the target routes, both are logged).
    line: Vec<u8>,
    method_len: usize,
    decoder: BodyDecoder,
    body: Vec<u8>,
    last_progress: u64,
    /// When the head began arriving, for the access log.
    started: u64,
}

impl BodyState {
    fn target(&self) -> &[u8] {
        &self.line[self.method_len..]
    }

    fn logged(&self) -> Logged<'_> {
        Logged {
            request: Some(Request {
                method: &self.line[..self.method_len],
                target: self.target(),
                version: self.head.version.as_str(),
            }),
            started: self.started,
        }
    }
}

/// What the access log says about the request a response answers: the request, when its head
/// was understood, and when its head began arriving.
#[derive(Clone, Copy)]
struct Logged<'a> {
    request: Option<Request<'a>>,
    started: u64,
}

impl Logged<'_> {
    /// For input that never became a request head.
    fn unparsed(started: u64) -> Logged<'static> {
        Logged {
            request: None,
            started,
        }
    }
}

/// What answering a request needs to know about it once its head bytes are gone: for a reply
/// the application gives later, and for the access log line of an upgrade.
struct Held {
    version: Version,
    head_only: bool,
    wants_persist: bool,
    /// The method token and then the request target.
    line: Vec<u8>,
    method_len: usize,
    started: u64,
}

impl Held {
    fn new(head: &RequestHead, method: &[u8], target: &[u8], started: u64) -> Held {
        let mut line = Vec::with_capacity(method.len() + target.len());
        line.extend_from_slice(method);
        line.extend_from_slice(target);
        Held {
            version: head.version,
            head_only: head.method == Method::Head,
            wants_persist: wants_persist(head),
            line,
            method_len: method.len(),
            started,
        }
    }

    fn logged(&self) -> Logged<'_> {
        Logged {
            request: Some(Request {
                method: &self.line[..self.method_len],
                target: &self.line[self.method_len..],
                version: self.version.as_str(),
            }),
            started: self.started,
        }
    }
}

/// What the connection becomes after its last HTTP exchange.
pub enum UpgradeKind {
    /// A validated WebSocket handshake, waiting for the session layer above to negotiate the
    /// extensions, write the 101 and open the WebSocket (which HTTP knows nothing of).
    WebSocket {
        accept: [u8; 28],
        /// The values of every `Sec-WebSocket-Extensions` header, in order.
        extension_offers: Vec<Vec<u8>>,
    },
    /// An event stream whose response head is written: the body's chunks follow.
    EventStream,
}

/// A connection leaving HTTP request/response for what the application chose.
pub struct Upgraded {
    pub kind: UpgradeKind,
    pub route: u16,
    held: Held,
}

impl Upgraded {
    /// The request target of the upgrade (the application reads its path and query).
    pub fn target(&self) -> &[u8] {
        &self.held.line[self.held.method_len..]
    }

    /// Logs the 101 once the layer above has written it (`bytes` long).
    pub fn log(&self, cx: &Context<'_>, bytes: usize) {
        let log = self.held.logged();
        cx.log_access(log.request, 101, bytes, log.started);
    }
}

pub struct Http1Conn {
    /// Input not yet consumed: only a partial request, or requests held back while output is
    /// over `OUTPUT_CAP`. Empty, with no allocation, on an idle connection.
    buf: Vec<u8>,
    reading: Reading,
    created: u64,
    /// The last time a byte arrived or the last response finished sending.
    last_activity: u64,
    requests: u64,
    /// Requests are buffered but not processed until output drains.
    paused: bool,
    /// A response announcing `Connection: close` is queued: further input is ignored.
    closing: bool,
    /// The peer sent EOF; close once buffered requests are answered.
    eof: bool,
    /// A validated upgrade, for the layer above (between `Action::Upgrade` and its take).
    upgrade: Option<Box<Upgraded>>,
    /// The application will answer the current request later (`Answer::Later`); nothing more
    /// is read until it does.
    awaiting: Option<Box<Held>>,
}

impl Http1Conn {
    pub fn new(now: u64) -> Http1Conn {
        Http1Conn {
            buf: Vec::new(),
            reading: Reading::Idle,
            created: now,
            last_activity: now,
            requests: 0,
            paused: false,
            closing: false,
            eof: false,
            upgrade: None,
            awaiting: None,
        }
    }

    /// While no request has begun, the bytes held back because they may yet turn out to be
    /// another protocol's start (HTTP/2's preface, see `Session::on_input`); None once HTTP/1.1
    /// is certain.
    pub fn sniffed(&self) -> Option<&[u8]> {
        (self.requests == 0 && matches!(self.reading, Reading::Idle) && !self.closing)
            .then_some(&self.buf[..])
    }

    /// Holds `bytes` unprocessed behind [`Http1Conn::sniffed`]'s: too few yet to tell.
    pub fn hold(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Feeds received bytes (or nothing, to resume after output drained).
    pub fn on_input(&mut self, input: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.closing {
            return Action::Continue;
        }
        if !input.is_empty() {
            self.last_activity = cx.now;
        }
        self.paused = false;
        let mut pending = std::mem::take(&mut self.buf);
        if self.awaiting.is_some() {
            // Held until the application answers the request before these.
            pending.extend_from_slice(input);
            self.buf = pending;
            return Action::Continue;
        }
        let action = feed_buffered(&mut pending, input, keeps_input, |bytes| {
            self.process(bytes, cx, out)
        });
        self.buf = pending;
        if action == Action::Continue && self.eof && !self.read_paused() {
            return self.on_eof(cx, out);
        }
        action
    }

    /// The peer will send nothing more.
    pub fn on_eof(&mut self, _cx: &Context<'_>, _out: &mut Vec<u8>) -> Action {
        self.eof = true;
        if self.read_paused() {
            // Answer what is buffered first; `on_input(&[])` after the drain comes back here.
            return Action::Continue;
        }
        Action::Close {
            reason: CloseReason::PeerClosed,
            linger: false,
        }
    }

    /// Called when the deadline from [`Http1Conn::deadline`] has passed.
    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let now = cx.now;
        let http = &cx.config.http;
        if self.closing || self.paused || self.awaiting.is_some() {
            // Output is not draining: the peer stopped reading.
            return if now >= self.last_activity + ms(http.keepalive_timeout) {
                close(CloseReason::IdleTimeout, false)
            } else {
                Action::Continue
            };
        }
        match &self.reading {
            Reading::Idle => {
                if now >= self.created + ms(http.max_connection_age) {
                    close(CloseReason::MaxAge, false)
                } else if now >= self.last_activity + ms(http.keepalive_timeout) {
                    close(CloseReason::IdleTimeout, false)
                } else {
                    Action::Continue
                }
            }
            Reading::Head { started } if now >= started + ms(http.header_timeout) => {
                self.request_timeout(cx, out)
            }
            Reading::Body(b) if now >= b.last_progress + ms(http.header_timeout) => {
                self.request_timeout(cx, out)
            }
            _ => Action::Continue,
        }
    }

    /// The server is draining: close now if idle, otherwise finish the current request and
    /// close after it (every later response says `Connection: close`).
    pub fn on_drain(&mut self, _cx: &Context<'_>, _out: &mut Vec<u8>) -> Action {
        if matches!(self.reading, Reading::Idle) && self.buf.is_empty() && !self.closing {
            return close(CloseReason::Shutdown, false);
        }
        Action::Continue
    }

    /// The upgrade validated by the last call (after `Action::Upgrade`).
    pub fn take_upgrade(&mut self) -> Option<Box<Upgraded>> {
        self.upgrade.take()
    }

    /// The application's reply to the request it answered with `Answer::Later`; requests
    /// that arrived behind it are processed now.
    pub fn on_reply(&mut self, reply: Reply<'_>, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let Some(held) = self.awaiting.take() else {
            return Action::Continue;
        };
        let action = self.write_reply(&held, reply, held.logged(), cx, out);
        if action != Action::Continue {
            return action;
        }
        self.on_input(&[], cx, out)
    }

    /// The request that waited (`Answer::Later`) is an event stream after all.
    pub fn on_stream_later(&mut self, route: u16, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let Some(held) = self.awaiting.take() else {
            return Action::Continue;
        };
        let held = *held;
        // The access log names the request by a copy of its line: the Held itself moves on.
        let line = held.line.clone();
        let log = Logged {
            request: Some(Request {
                method: &line[..held.method_len],
                target: &line[held.method_len..],
                version: held.version.as_str(),
            }),
            started: held.started,
        };
        self.stream_held(held, route, log, cx, out)
    }

    /// Unconsumed input, handed over after an upgrade.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// All queued output has been sent: the idle clock starts now.
    pub fn on_output_drained(&mut self, now: u64) {
        self.last_activity = now;
    }

    /// True while requests are held back because too much output is queued, or because the
    /// application has not yet answered the current one.
    pub fn read_paused(&self) -> bool {
        self.paused || self.awaiting.is_some()
    }

    /// The next time `on_timeout` has something to do.
    pub fn deadline(&self, config: &Config) -> u64 {
        let http = &config.http;
        if self.closing || self.paused || self.awaiting.is_some() {
            return self.last_activity + ms(http.keepalive_timeout);
        }
        match &self.reading {
            Reading::Idle => (self.last_activity + ms(http.keepalive_timeout))
                .min(self.created + ms(http.max_connection_age)),
            Reading::Head { started } => started + ms(http.header_timeout),
            Reading::Body(b) => b.last_progress + ms(http.header_timeout),
        }
    }

    /// Handles as many complete requests from `data` as it holds; returns how many bytes were
    /// consumed. Stops early when output passes `OUTPUT_CAP` (the rest waits for the drain) or
    /// when the connection is to close (the rest is discarded).
    fn process(&mut self, data: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> (usize, Action) {
        let limits = Limits {
            max_header_bytes: cx.config.http.max_header_bytes,
            max_target_bytes: MAX_TARGET_BYTES,
        };
        let max_body = cx.config.http.max_body_bytes as u64;
        let mut pos = 0;
        loop {
            if let Reading::Body(b) = &mut self.reading {
                match b.decoder.decode(&data[pos..], &mut b.body) {
                    Err(e) => {
                        let Reading::Body(b) = std::mem::replace(&mut self.reading, Reading::Idle)
                        else {
                            unreachable!("matched Body above")
                        };
                        let log = b.logged();
                        return (data.len(), self.error(e.status(), e.reason(), log, cx, out));
                    }
                    Ok(d) => {
                        pos += d.consumed;
                        if !d.done {
                            if d.consumed > 0 {
                                b.last_progress = cx.now;
                            }
                            return (pos, Action::Continue);
                        }
                    }
                }
                let Reading::Body(b) = std::mem::replace(&mut self.reading, Reading::Idle) else {
                    unreachable!("matched Body above")
                };
                let method = &b.line[..b.method_len];
                let action = self.dispatch(
                    &b.head,
                    method,
                    b.target(),
                    None,
                    &b.body,
                    b.started,
                    cx,
                    out,
                );
                if let Some(stop) = self.stop_after(action, pos, data.len()) {
                    return stop;
                }
                continue;
            }
            if pos == data.len() {
                return (pos, Action::Continue);
            }
            if out.len() >= OUTPUT_CAP {
                self.paused = true;
                return (pos, Action::Continue);
            }
            let started = match self.reading {
                Reading::Head { started } => started,
                _ => cx.now,
            };
            let head = match parse_head(&data[pos..], &limits) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    if matches!(self.reading, Reading::Idle) {
                        self.reading = Reading::Head { started: cx.now };
                    }
                    return (pos, Action::Continue);
                }
                Err(e) => {
                    let log = Logged::unparsed(started);
                    return (data.len(), self.error(e.status(), e.reason(), log, cx, out));
                }
            };
            self.reading = Reading::Idle;
            self.requests += 1;
            cx.metrics.requests.inc();
            let head_bytes = &data[pos..pos + head.head_len];
            pos += head.head_len;
            let target = &head_bytes[head.target.clone()];
            let method = head.method_token(head_bytes);
            let log = Logged {
                request: Some(Request {
                    method,
                    target,
                    version: head.version.as_str(),
                }),
                started,
            };
            let framing = head.framing;
            if let BodyFraming::Length(n) = framing
                && n > max_body
            {
                return (
                    data.len(),
                    self.error(413, "request body too large", log, cx, out),
                );
            }
            if framing == BodyFraming::None || framing == BodyFraming::Length(0) {
                let upgrade = Some(head_bytes);
                let action = self.dispatch(&head, method, target, upgrade, &[], started, cx, out);
                match action {
                    // The rest of the input belongs to the WebSocket.
                    Action::Upgrade => return (pos, action),
                    Action::Continue if self.awaiting.is_some() => return (pos, action),
                    Action::Continue => continue,
                    _ => return (data.len(), action),
                }
            }
            let mut decoder = BodyDecoder::new(framing, max_body);
            let mut body = Vec::new();
            match decoder.decode(&data[pos..], &mut body) {
                Err(e) => return (data.len(), self.error(e.status(), e.reason(), log, cx, out)),
                Ok(d) if d.done => {
                    pos += d.consumed;
                    let action =
                        self.dispatch(&head, method, target, None, &body, started, cx, out);
                    if let Some(stop) = self.stop_after(action, pos, data.len()) {
                        return stop;
                    }
                }
                Ok(d) => {
                    pos += d.consumed;
                    // RFC 9110 §10.1.1: only an HTTP/1.1 client waits for 100 Continue.
                    if head.expect_continue && head.version == Version::Http11 {
                        response::write_continue(out);
                    }
                    let mut line = Vec::with_capacity(method.len() + target.len());
                    line.extend_from_slice(method);
                    line.extend_from_slice(target);
                    self.reading = Reading::Body(Box::new(BodyState {
                        head,
                        line,
                        method_len: method.len(),
                        decoder,
                        body,
                        last_progress: cx.now,
                        started,
                    }));
                    return (pos, Action::Continue);
                }
            }
        }
    }

    /// Hands one complete request to the application and carries out its answer. `head_bytes`
    /// is the head as received when it is still at hand (a bodiless request), which is what
    /// an upgrade needs; a request with a body cannot be an upgrade.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        head: &RequestHead,
        method: &[u8],
        target: &[u8],
        head_bytes: Option<&[u8]>,
        body: &[u8],
        started: u64,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        let (path, query) = path_and_query(target);
        let req = exchange::Request {
            method: head.method,
            version: head.version,
            target,
            path,
            query,
            body,
            last_event_id: head
                .last_event_id
                .as_ref()
                .and_then(|r| head_bytes.and_then(|b| b.get(r.clone()))),
        };
        let log = Logged {
            request: Some(Request {
                method,
                target,
                version: head.version.as_str(),
            }),
            started,
        };
        if cx.over_limit {
            return self.over_limit(head, method, target, head_bytes, started, log, cx, out);
        }
        match cx.app.request(&req, cx) {
            Answer::Reply(reply) => {
                let held = Held {
                    version: head.version,
                    head_only: head.method == Method::Head,
                    wants_persist: wants_persist(head),
                    line: Vec::new(),
                    method_len: 0,
                    started,
                };
                self.write_reply(&held, reply, log, cx, out)
            }
            Answer::Upgrade { route } => {
                let held = Held::new(head, method, target, started);
                self.upgrade(head, head_bytes, route, held, log, cx, out)
            }
            Answer::Stream { route } => {
                let held = Held::new(head, method, target, started);
                self.stream_held(held, route, log, cx, out)
            }
            Answer::Later => {
                self.awaiting = Some(Box::new(Held::new(head, method, target, started)));
                Action::Continue
            }
        }
    }

    /// After a request was dispatched: where processing of the input stops, if it does. A
    /// close discards the rest; a reply the application gives later keeps the rest (from
    /// `pos`) for when it comes.
    fn stop_after(&self, action: Action, pos: usize, len: usize) -> Option<(usize, Action)> {
        match action {
            Action::Continue if self.awaiting.is_none() => None,
            Action::Continue => Some((pos, action)),
            _ => Some((len, action)),
        }
    }

    /// Writes the application's reply to a request and decides whether the connection
    /// persists.
    fn write_reply(
        &mut self,
        req: &Held,
        reply: Reply<'_>,
        log: Logged<'_>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        let http = &cx.config.http;
        let before = out.len();
        let close_reason = if !req.wants_persist {
            Some(CloseReason::Requested)
        } else if self.requests >= http.keepalive_requests {
            Some(CloseReason::MaxRequests)
        } else if cx.now >= self.created + ms(http.max_connection_age) {
            Some(CloseReason::MaxAge)
        } else if cx.draining {
            Some(CloseReason::Shutdown)
        } else {
            None
        };
        let persist = match (close_reason, req.version) {
            (Some(_), _) => Persist::Close,
            (None, Version::Http10) => Persist::KeepAlive10,
            (None, Version::Http11 | Version::Http2) => Persist::KeepAlive11,
        };
        let rhead = Head {
            status: reply.status,
            content_type: reply.content_type,
            extra_headers: reply.extra_headers,
            persist,
            head_only: req.head_only,
        };
        match &reply.body {
            ReplyBody::Bytes(b) => response::write_response(out, &rhead, &Body::Full(b), cx.date),
            // HTTP/1.0 has no chunked coding: send the same bytes with a length.
            ReplyBody::Chunks(chunks) if req.version == Version::Http10 => {
                let joined = chunks.concat();
                response::write_response(out, &rhead, &Body::Full(&joined), cx.date)
            }
            ReplyBody::Chunks(chunks) => {
                let slices: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
                response::write_response(out, &rhead, &Body::Chunked(&slices), cx.date)
            }
        }
        cx.metrics.response(reply.status);
        cx.log_access(log.request, reply.status, out.len() - before, log.started);
        match close_reason {
            Some(reason) => {
                self.closing = true;
                // Linger: the client may already have sent more requests behind this one.
                close(reason, true)
            }
            None => Action::Continue,
        }
    }

    /// Answers malformed or refused input and closes: after a framing error we cannot know
    /// where the next request would start (RFC 9112 §9.3 on closing after errors).
    fn error(
        &mut self,
        status: u16,
        reason: &str,
        log: Logged<'_>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        self.error_with(status, reason, "", log, cx, out)
    }

    fn error_with(
        &mut self,
        status: u16,
        reason: &str,
        extra_headers: &str,
        log: Logged<'_>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        let before = out.len();
        self.closing = true;
        self.reading = Reading::Idle;
        // An API whose answers are JSON gets its refusals in JSON too (the application says
        // which paths those are).
        let json = log
            .request
            .is_some_and(|r| cx.app.json_errors(path_and_query(r.target).0));
        let (content_type, body) = if json {
            let escaped = reason.replace('\\', "\\\\").replace('"', "\\\"");
            ("application/json", format!("{{\"error\":\"{escaped}\"}}"))
        } else {
            ("text/plain", format!("{reason}\n"))
        };
        let head = Head {
            status,
            content_type,
            extra_headers,
            persist: Persist::Close,
            head_only: false,
        };
        response::write_response(out, &head, &Body::Full(body.as_bytes()), cx.date);
        cx.metrics.response(status);
        cx.log_access(log.request, status, out.len() - before, log.started);
        close(CloseReason::BadRequest, true)
    }

    /// The first request of a connection whose address is over a per-address limit: a
    /// WebSocket upgrade is completed only to be closed with 1013 (try again later), as a
    /// WebSocket client understands; anything else gets 429 with `Retry-After`. Either way
    /// the connection ends.
    #[allow(clippy::too_many_arguments)]
    fn over_limit(
        &mut self,
        head: &RequestHead,
        method: &[u8],
        target: &[u8],
        head_bytes: Option<&[u8]>,
        started: u64,
        log: Logged<'_>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if head.upgrade_websocket && head.connection_upgrade {
            let held = Held::new(head, method, target, started);
            return self.upgrade(head, head_bytes, ROUTE_OVER_LIMIT, held, log, cx, out);
        }
        let reason = "too many connections from this address; try again later";
        match self.error_with(429, reason, "Retry-After: 1\r\n", log, cx, out) {
            Action::Close { linger, .. } => Action::Close {
                reason: CloseReason::PerIpLimit,
                linger,
            },
            other => other,
        }
    }

    /// Validates an upgrade the application asked for and keeps it for the layer above, which
    /// writes the 101 and opens the WebSocket; a bad handshake gets the refusal chosen by
    /// [`upgrade::check`] (400, or 426 with the version we speak) and a close.
    #[allow(clippy::too_many_arguments)]
    fn upgrade(
        &mut self,
        head: &RequestHead,
        head_bytes: Option<&[u8]>,
        route: u16,
        held: Held,
        log: Logged<'_>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if cx.draining {
            return self.error(503, "server shutting down", log, cx, out);
        }
        let Some(head_bytes) = head_bytes else {
            return self.error(400, "a WebSocket upgrade has no body", log, cx, out);
        };
        match upgrade::check(head, head_bytes) {
            Ok(accept) => {
                let extension_offers = head
                    .ws_extensions
                    .iter()
                    .map(|r| head_bytes[r.clone()].to_vec())
                    .collect();
                self.upgrade = Some(Box::new(Upgraded {
                    kind: UpgradeKind::WebSocket {
                        accept,
                        extension_offers,
                    },
                    route,
                    held,
                }));
                cx.metrics.ws_upgrades.inc();
                cx.metrics.response(101);
                self.closing = true;
                Action::Upgrade
            }
            Err(r) => self.error_with(r.status, r.reason, r.extra_headers, log, cx, out),
        }
    }

    /// Starts an event stream: the `200 text/event-stream` head with a chunked body that does
    /// not end, then the connection is the stream's (the layer above opens it). A stream is
    /// the last exchange on its connection. HTTP/1.0 has no chunked coding and HEAD no body:
    /// both are refused.
    fn stream_held(
        &mut self,
        held: Held,
        route: u16,
        log: Logged<'_>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if cx.draining {
            return self.error(503, "server shutting down", log, cx, out);
        }
        if held.version == Version::Http10 {
            return self.error(505, "an event stream needs HTTP/1.1", log, cx, out);
        }
        if &held.line[..held.method_len] != b"GET" {
            return self.error_with(
                405,
                "an event stream is a GET",
                "Allow: GET\r\n",
                log,
                cx,
                out,
            );
        }
        let before = out.len();
        response::write_event_stream_head(out, cx.date);
        cx.metrics.response(200);
        cx.log_access(log.request, 200, out.len() - before, log.started);
        self.upgrade = Some(Box::new(Upgraded {
            kind: UpgradeKind::EventStream,
            route,
            held,
        }));
        self.closing = true;
        Action::Upgrade
    }

    /// 408 before closing a connection whose request stalled, so a client that was about to
    /// send knows the request was not processed and may retry it (RFC 9110 §15.5.9).
    fn request_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        self.closing = true;
        let before = out.len();
        let reading = std::mem::replace(&mut self.reading, Reading::Idle);
        let head = Head {
            status: 408,
            content_type: "text/plain",
            extra_headers: "",
            persist: Persist::Close,
            head_only: false,
        };
        response::write_response(out, &head, &Body::Full(b"request timeout\n"), cx.date);
        cx.metrics.response(408);
        let log = match &reading {
            Reading::Body(b) => b.logged(),
            Reading::Head { started } => Logged::unparsed(*started),
            Reading::Idle => Logged::unparsed(cx.now),
        };
        cx.log_access(log.request, 408, out.len() - before, log.started);
        close(CloseReason::RequestTimeout, true)
    }
}

/// Whether the client wants the connection to persist after this request.
fn wants_persist(head: &RequestHead) -> bool {
    match head.version {
        Version::Http11 | Version::Http2 => !head.connection_close,
        // The HTTP/1.0 keep-alive extension (RFC 9112 §9.3, Appendix C.2.2).
        Version::Http10 => head.connection_keep_alive && !head.connection_close,
    }
}

/// After these actions the rest of the input still matters: it is kept (Continue) or handed to
/// the next protocol (Upgrade).
fn keeps_input(action: Action) -> bool {
    matches!(action, Action::Continue | Action::Upgrade)
}

fn close(reason: CloseReason, linger: bool) -> Action {
    Action::Close { reason, linger }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::access::Peer;
    use crate::log::{Format, writer};
    use crate::metrics::Metrics;

    /// Feeds `steps` (engine time, bytes; empty bytes: the deadline passed) to one connection
    /// with the access log on; returns the lines it wrote and the bytes of output of each step.
    fn access_lines(steps: &[(u64, &[u8])]) -> (Vec<String>, Vec<usize>) {
        let config = Config::default();
        let metrics = Metrics::new(1);
        let (log, read) = writer::capture(Format::Text);
        let (ws, tls) = (Default::default(), Default::default());
        let mut conn = Http1Conn::new(0);
        let mut sizes = Vec::new();
        for &(now, bytes) in steps {
            log.set_time(now, 1_796_479_200_000 + now);
            let cx = Context {
                now,
                date: b"Thu, 01 Jan 1970 00:00:00 GMT",
                config: &config,
                metrics: &metrics.workers[0],
                all_metrics: &metrics,
                draining: false,
                stopping: false,
                ws_scratch: &ws,
                tls_scratch: &tls,
                access: Some(&log),
                peer: Peer::from("192.0.2.7:40000".parse::<std::net::SocketAddr>().unwrap()),
                over_limit: false,
                app: &crate::app::WorkerApp::standalone(),
                conn: Default::default(),
            };
            let mut out = Vec::new();
            if bytes.is_empty() {
                conn.on_timeout(&cx, &mut out);
            } else {
                conn.on_input(bytes, &cx, &mut out);
            }
            sizes.push(out.len());
        }
        log.flush();
        (read().lines().map(str::to_string).collect(), sizes)
    }

    #[test]
    fn each_response_gets_a_line_saying_what_it_answered() {
        let (lines, sizes) = access_lines(&[
            (5, b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                10,
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe",
            ),
            (35, b"llo"),
            (40, b"GET /nope HT"),
            (
                47,
                b"TP/1.1\r\nHost: a\r\n\r\nBREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            (
                50,
                b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n",
            ),
        ]);
        assert_eq!(
            lines[0],
            format!(
                "192.0.2.7:40000 [2026-12-05T14:00:00.005Z] \"GET /plaintext HTTP/1.1\" 200 {} 0.000",
                sizes[0]
            )
        );
        // The body arrived 25 ms after the head began: that is the request's duration.
        assert!(lines[1].ends_with(&format!("\"POST /echo HTTP/1.1\" 200 {} 0.025", sizes[2])));
        assert!(
            lines[2].ends_with("\"GET /nope HTTP/1.1\" 404 137 0.007"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("\"BREW /pot HTTP/1.1\" 501 "),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains("\"GET /x HTTP/1.1\" 413 "),
            "{}",
            lines[4]
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn unparsable_input_and_stalled_heads_are_logged_without_a_request() {
        let (lines, sizes) = access_lines(&[(3, b"NOT HTTP AT ALL\r\n\r\n")]);
        assert_eq!(
            lines,
            [format!(
                "192.0.2.7:40000 [2026-12-05T14:00:00.003Z] \"-\" 400 {} 0.000",
                sizes[0]
            )]
        );
        let (lines, sizes) = access_lines(&[(100, b"GET /slow HTTP/1.1\r\n"), (60_100, b"")]);
        assert_eq!(
            lines,
            [format!(
                "192.0.2.7:40000 [2026-12-05T14:01:00.100Z] \"-\" 408 {} 60.000",
                sizes[1]
            )]
        );
    }
}
