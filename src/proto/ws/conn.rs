//! Owns one WebSocket connection after the upgrade: frame validation (RFC 6455 §5), message
//! assembly across fragments with incremental UTF-8 checks, handing each complete message to
//! the application's route, control frames (answered even between fragments), the close
//! handshake (§7), server heartbeats (jittered pings, a pong deadline), the idle timeout, the
//! drain, frames delivered from other connections, and backpressure. Sans-I/O: bytes and a
//! `Context` in, frames and an `Action` out; the engine asks for `deadline()`.

use super::Sender;
use super::deflate::{Deflate, InflateError, Params, Scratch};
use super::frame::{
    self, FrameHeader, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};
use super::sender::RSV1;
use super::utf8::Utf8Validator;
use crate::config::Config;
use crate::proto::handler::{self, Drain, WsVerdict};
use crate::proto::{Action, CloseReason, Context, OUTPUT_CAP, feed_buffered, ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's, until the deadline.
    CloseSent {
        deadline: u64,
    },
    /// The handshake is over (or failed); only the TCP close remains. The deadline bounds how
    /// long a peer that does not read can keep our last frame queued.
    Closed {
        deadline: u64,
    },
}

pub struct WsConn {
    /// Bytes of an incomplete frame; empty (no allocation) between frames.
    buf: Vec<u8>,
    /// The unmasked payload of a fragmented message so far; empty between messages.
    msg: Vec<u8>,
    /// Opcode of the fragmented message in progress (0: none).
    msg_opcode: u8,
    utf8: Utf8Validator,
    state: State,
    paused: bool,
    paused_since: u64,
    /// Last data message received, for `websocket.idle_timeout`.
    last_data: u64,
    /// When the next server ping is due (u64::MAX: pings disabled).
    next_ping: u64,
    /// When an outstanding ping must have been answered (u64::MAX: none outstanding).
    pong_deadline: u64,
    /// xorshift state for ping jitter.
    rng: u32,
    /// The fragmented message in progress was compressed (RSV1 on its first frame).
    msg_compressed: bool,
    /// permessage-deflate, when negotiated. Boxed: most connections do not use it.
    deflate: Option<Box<Deflate>>,
    /// The application route that handles this connection's messages.
    route: u16,
    /// During a drain, the close the application asked for and when it is due (boxed: only
    /// while draining).
    drain: Option<Box<(u64, Drain)>>,
}

/// Rounds a heartbeat deadline up to a multiple of a slack of a 32nd of its `span`, at most
/// 100 ms. Deadlines of all connections then fall on shared boundaries, so a worker holding
/// 20,000 connections pinged every 30 s wakes 10 times a second for a batch of ~70 pings instead
/// of ~670 times for one or two: the wake-ups, not the pings, were most of the heartbeat CPU
/// (measured: 24 → 11 µs per ping and pong). Larger batches would cost round-trip time.
fn with_slack(deadline: u64, span: u64) -> u64 {
    let slack = (span / 32).clamp(1, 100);
    deadline.div_ceil(slack) * slack
}

/// A pong answering one of our pings later than this is a stale or forged payload, not a round
/// trip.
const PLAUSIBLE_RTT_MS: u64 = 3_600_000;

impl WsConn {
    /// A connection that has just been upgraded, its messages for `route`. `seed` makes
    /// jitter differ between connections upgraded in the same millisecond.
    pub fn new(
        now: u64,
        config: &Config,
        seed: u32,
        deflate: Option<Params>,
        route: u16,
    ) -> WsConn {
        let mut c = WsConn {
            buf: Vec::new(),
            msg: Vec::new(),
            msg_opcode: 0,
            utf8: Utf8Validator::default(),
            state: State::Open,
            paused: false,
            paused_since: 0,
            last_data: now,
            next_ping: u64::MAX,
            pong_deadline: u64::MAX,
            rng: seed | 1,
            msg_compressed: false,
            deflate: deflate.map(|p| Box::new(Deflate::new(p))),
            route,
            drain: None,
        };
        c.schedule_ping(now, config);
        c
    }

    /// The handshake is done: the application says hello (or refuses) on the new connection.
    /// `target` is the request target of the upgrade.
    pub fn open(&mut self, target: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let verdict = if self.route == handler::ROUTE_OVER_LIMIT {
            handler::WsVerdict::Close {
                code: handler::CLOSE_TRY_AGAIN_LATER,
                reason: "too many connections from this address".into(),
            }
        } else {
            let mut tx = Sender::new(out, self.deflate.as_deref_mut(), cx.ws_scratch, cx.metrics);
            cx.app.ws_open(self.route, target, cx, &mut tx)
        };
        self.verdict(verdict, cx, out)
    }

    /// Queues a frame framed once for many connections (an event fanned out), unless this
    /// connection has more than `slow_cap` bytes unsent: then it is closed with `slow_code`,
    /// since a subscriber that does not keep up must not hold the others back or grow without
    /// bound.
    pub fn deliver(
        &mut self,
        frame_bytes: &[u8],
        unsent: usize,
        slow_cap: usize,
        slow_code: u16,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.state != State::Open {
            return Action::Continue;
        }
        if unsent.max(out.len()) > slow_cap {
            cx.metrics.ws_slow_reader_closes.inc();
            return self.fail(
                slow_code,
                "client did not keep up",
                CloseReason::SlowReader,
                cx,
                out,
            );
        }
        out.extend_from_slice(frame_bytes);
        cx.metrics.ws_messages_out.inc();
        Action::Continue
    }

    /// See [`crate::proto::Session::takes_shared`].
    pub fn takes_shared(&self, unsent: usize, slow_cap: usize) -> bool {
        self.state == State::Open && unsent <= slow_cap
    }

    fn verdict(&mut self, verdict: WsVerdict, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        match verdict {
            WsVerdict::Continue => Action::Continue,
            WsVerdict::Close { code, reason } => {
                self.fail(code, &reason, CloseReason::WsClosed, cx, out)
            }
        }
    }

    pub fn on_input(&mut self, input: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if matches!(self.state, State::Closed { .. }) {
            return Action::Continue;
        }
        self.paused = false;
        let mut pending = std::mem::take(&mut self.buf);
        let action = feed_buffered(
            &mut pending,
            input,
            |a| a == Action::Continue,
            |bytes| self.process(bytes, cx, out),
        );
        self.buf = pending;
        action
    }

    /// The peer closed TCP without a close handshake (1006 in the peer's terms).
    pub fn on_eof(&mut self, cx: &Context<'_>, _out: &mut Vec<u8>) -> Action {
        if self.state == State::Open {
            cx.metrics.ws_close_code(1006);
        }
        self.state = State::Closed { deadline: cx.now };
        Action::Close {
            reason: CloseReason::PeerClosed,
            linger: false,
        }
    }

    pub fn on_timeout(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let now = cx.now;
        let ws = &cx.config.websocket;
        match self.state {
            State::Closed { deadline } | State::CloseSent { deadline } if now >= deadline => {
                return Action::Close {
                    reason: CloseReason::WsClosed,
                    linger: false,
                };
            }
            State::Open => {}
            _ => return Action::Continue,
        }
        if let Some(d) = self.drain.as_deref()
            && now >= d.0
        {
            let Drain { code, reason, .. } = d.1;
            self.drain = None;
            return self.start_close(code, reason, cx, out);
        }
        if self.paused && now >= self.paused_since + ms(ws.pong_timeout) {
            // RFC 6455 §7.4.1 1008: the peer breaks our policy by not reading.
            cx.metrics.ws_slow_reader_closes.inc();
            return self.fail(
                1008,
                "peer is not reading",
                CloseReason::SlowReader,
                cx,
                out,
            );
        }
        if now >= self.pong_deadline {
            cx.metrics.ws_heartbeat_timeouts.inc();
            cx.metrics.ws_close_code(1006);
            self.state = State::Closed { deadline: now };
            return Action::Close {
                reason: CloseReason::HeartbeatTimeout,
                linger: false,
            };
        }
        if now >= self.next_ping {
            let payload = now.to_be_bytes();
            frame::write_header(out, true, 0, OP_PING, payload.len());
            out.extend_from_slice(&payload);
            cx.metrics.ws_pings_sent.inc();
            // The deadline runs from the first unanswered ping: later pings must not extend it,
            // or a silent peer would live forever whenever ping_interval <= pong_timeout.
            if self.pong_deadline == u64::MAX {
                let timeout = ms(ws.pong_timeout);
                self.pong_deadline = with_slack(now + timeout, timeout);
            }
            self.schedule_ping(now, cx.config);
        }
        if !ws.idle_timeout.is_zero() && now >= self.last_data + ms(ws.idle_timeout) {
            return self.start_close(1000, "idle timeout", cx, out);
        }
        Action::Continue
    }

    /// The server is draining: close with what the application says (the echo: 1001 now;
    /// channels: 4200 at a moment spread over half the shutdown timeout), then wait
    /// (boundedly) for the peer's close.
    pub fn on_drain(&mut self, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        if self.state != State::Open {
            return Action::Continue;
        }
        let drain = cx.app.ws_drain(self.route, cx);
        if drain.after_ms == 0 {
            return self.start_close(drain.code, drain.reason, cx, out);
        }
        self.drain = Some(Box::new((cx.now + drain.after_ms, drain)));
        Action::Continue
    }

    pub fn on_output_drained(&mut self, _now: u64) {}

    pub fn read_paused(&self) -> bool {
        self.paused
    }

    pub fn deadline(&self, config: &Config) -> u64 {
        let ws = &config.websocket;
        match self.state {
            State::CloseSent { deadline } | State::Closed { deadline } => deadline,
            State::Open => {
                let mut d = self.next_ping.min(self.pong_deadline);
                if self.paused {
                    d = d.min(self.paused_since + ms(ws.pong_timeout));
                }
                if !ws.idle_timeout.is_zero() {
                    d = d.min(self.last_data + ms(ws.idle_timeout));
                }
                if let Some(drain) = self.drain.as_deref() {
                    d = d.min(drain.0);
                }
                d
            }
        }
    }

    /// Handles every complete frame in `data`; returns the bytes consumed.
    fn process(&mut self, data: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> (usize, Action) {
        let max_message = cx.config.websocket.max_message_bytes as u64;
        let mut pos = 0;
        while pos < data.len() {
            if out.len() >= OUTPUT_CAP {
                if !self.paused {
                    self.paused = true;
                    self.paused_since = cx.now;
                }
                return (pos, Action::Continue);
            }
            let h = match frame::parse_header(&data[pos..]) {
                Ok(Some(h)) => h,
                Ok(None) => return (pos, Action::Continue),
                Err(frame::BadLength) => {
                    return (
                        data.len(),
                        self.protocol_error("invalid payload length", cx, out),
                    );
                }
            };
            if let Err(why) = self.validate(&h) {
                return (data.len(), self.protocol_error(why, cx, out));
            }
            let data_frame = !h.is_control();
            if data_frame && self.msg.len() as u64 + h.payload_len > max_message {
                return (
                    data.len(),
                    self.fail(1009, "message too big", CloseReason::ProtocolError, cx, out),
                );
            }
            let total = h.header_len as u64 + h.payload_len;
            if ((data.len() - pos) as u64) < total {
                return (pos, Action::Continue);
            }
            let payload = &data[pos + h.header_len..pos + total as usize];
            pos += total as usize;
            let mask = h.mask.expect("validated: client frames are masked");
            let action = match h.opcode {
                OP_PING => {
                    if self.state == State::Open {
                        frame::write_header(out, true, 0, OP_PONG, payload.len());
                        frame::unmask_into(out, payload, mask, 0);
                    }
                    Action::Continue
                }
                OP_PONG => {
                    self.pong_deadline = u64::MAX;
                    cx.metrics.ws_pongs_received.inc();
                    // Our pings carry the time they were sent; an answer to one gives the
                    // heartbeat round trip. Pongs that carry anything else are not timed.
                    if payload.len() == 8 {
                        let mut sent = [0u8; 8];
                        sent.copy_from_slice(payload);
                        frame::unmask_in_place(&mut sent, mask, 0);
                        let sent = u64::from_be_bytes(sent);
                        if sent <= cx.now && cx.now - sent < PLAUSIBLE_RTT_MS {
                            cx.metrics.ws_ping_rtt(cx.now - sent);
                        }
                    }
                    Action::Continue
                }
                OP_CLOSE => {
                    let mut body = Vec::with_capacity(payload.len());
                    frame::unmask_into(&mut body, payload, mask, 0);
                    self.on_close_frame(&body, cx, out)
                }
                _ if self.state != State::Open => Action::Continue,
                _ => self.on_data_frame(&h, payload, mask, cx, out),
            };
            if action != Action::Continue {
                return (data.len(), action);
            }
        }
        (pos, Action::Continue)
    }

    /// RFC 6455 §5.2, §5.4, §5.5: everything about a header that makes it a protocol error.
    fn validate(&self, h: &FrameHeader) -> Result<(), &'static str> {
        // RSV1 belongs to permessage-deflate, and only on a message's first frame (RFC 7692
        // §6.1); RSV2 and RSV3 belong to nothing we negotiate.
        let rsv1_allowed = self.deflate.is_some() && matches!(h.opcode, OP_TEXT | OP_BINARY);
        if h.rsv & !RSV1 != 0 || (h.rsv & RSV1 != 0 && !rsv1_allowed) {
            return Err("reserved bits set without an extension");
        }
        if h.mask.is_none() {
            return Err("client frames must be masked");
        }
        match h.opcode {
            OP_PING | OP_PONG | OP_CLOSE => {
                if !h.fin {
                    return Err("fragmented control frame");
                }
                if h.payload_len > frame::MAX_CONTROL_PAYLOAD as u64 {
                    return Err("control frame payload over 125 bytes");
                }
            }
            OP_CONTINUATION if self.msg_opcode == 0 => {
                return Err("continuation frame without a message to continue");
            }
            OP_TEXT | OP_BINARY if self.msg_opcode != 0 => {
                return Err("new message inside a fragmented message");
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
            _ => return Err("reserved opcode"),
        }
        Ok(())
    }

    fn on_data_frame(
        &mut self,
        h: &FrameHeader,
        payload: &[u8],
        mask: [u8; 4],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        self.last_data = cx.now;
        let compressed = h.rsv & RSV1 != 0;
        let whole = h.fin && h.opcode != OP_CONTINUATION;
        if whole {
            // A single-frame message that needs (de)compression: work in the worker's scratch
            // buffers so that the connection itself keeps nothing.
            let mut wire = Scratch::lend(&mut cx.ws_scratch.borrow_mut().buf);
            frame::unmask_into(&mut wire, payload, mask, 0);
            let action = self.finish_message(h.opcode, compressed, &wire, cx, out);
            Scratch::keep(&mut cx.ws_scratch.borrow_mut().buf, wire);
            return action;
        }
        if h.opcode != OP_CONTINUATION {
            self.msg_opcode = h.opcode;
            self.msg_compressed = compressed;
            self.utf8 = Utf8Validator::default();
        }
        let start = self.msg.len();
        frame::unmask_into(&mut self.msg, payload, mask, 0);
        // Uncompressed text is checked as it arrives, so a bad message fails before it ends.
        if self.msg_opcode == OP_TEXT && !self.msg_compressed && !self.utf8.feed(&self.msg[start..])
        {
            return self.fail(
                1007,
                "invalid UTF-8 in a text message",
                CloseReason::ProtocolError,
                cx,
                out,
            );
        }
        if !h.fin {
            return Action::Continue;
        }
        let msg = std::mem::take(&mut self.msg);
        let action = self.finish_message(self.msg_opcode, self.msg_compressed, &msg, cx, out);
        // Give the memory back: an idle connection holds no message buffer.
        self.msg_opcode = 0;
        self.msg_compressed = false;
        action
    }

    /// A complete message as received (`compressed` per RSV1): inflate, validate, echo.
    fn finish_message(
        &mut self,
        opcode: u8,
        compressed: bool,
        wire: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        cx.metrics.ws_messages_in.inc();
        if !compressed {
            return self.finish_plain(opcode, wire, cx, out);
        }
        // Inflated into the worker's buffer, which goes back to it whatever the outcome.
        let mut plain = Scratch::lend(&mut cx.ws_scratch.borrow_mut().plain);
        let action = self.finish_compressed(opcode, wire, &mut plain, cx, out);
        Scratch::keep(&mut cx.ws_scratch.borrow_mut().plain, plain);
        action
    }

    /// Inflates a compressed message into `plain_buf` (the worker's), then as `finish_plain`.
    fn finish_compressed(
        &mut self,
        opcode: u8,
        wire: &[u8],
        plain_buf: &mut Vec<u8>,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        let Some(d) = self.deflate.as_mut() else {
            unreachable!("validate() refuses RSV1 without deflate");
        };
        let cap = cx.config.websocket.max_message_bytes;
        let inflated = d.inflate(&mut cx.ws_scratch.borrow_mut(), wire, plain_buf, cap);
        match inflated {
            Ok(()) => self.finish_plain(opcode, plain_buf, cx, out),
            Err(InflateError::TooBig) => self.fail(
                1009,
                "message too big once inflated",
                CloseReason::ProtocolError,
                cx,
                out,
            ),
            Err(InflateError::Corrupt) => self.fail(
                1007,
                "invalid compressed data",
                CloseReason::ProtocolError,
                cx,
                out,
            ),
        }
    }

    /// A complete message, uncompressed: validate, echo.
    fn finish_plain(
        &mut self,
        opcode: u8,
        plain: &[u8],
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if opcode == OP_TEXT && std::str::from_utf8(plain).is_err() {
            return self.fail(
                1007,
                "invalid UTF-8 in a text message",
                CloseReason::ProtocolError,
                cx,
                out,
            );
        }
        let verdict = {
            let mut tx = Sender::new(out, self.deflate.as_deref_mut(), cx.ws_scratch, cx.metrics);
            cx.app
                .ws_message(self.route, opcode == OP_TEXT, plain, cx, &mut tx)
        };
        self.verdict(verdict, cx, out)
    }

    /// RFC 6455 §5.5.1, §7.1.5, §7.4: validate the peer's close and answer it.
    fn on_close_frame(&mut self, body: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        let code = match body.len() {
            0 => None,
            1 => return self.protocol_error("close frame with a 1-byte payload", cx, out),
            _ => {
                let code = u16::from_be_bytes([body[0], body[1]]);
                if !valid_close_code(code) {
                    return self.protocol_error("invalid close code", cx, out);
                }
                if std::str::from_utf8(&body[2..]).is_err() {
                    return self.fail(
                        1007,
                        "invalid UTF-8 in the close reason",
                        CloseReason::ProtocolError,
                        cx,
                        out,
                    );
                }
                Some(code)
            }
        };
        cx.metrics.ws_close_code(code.unwrap_or(1005));
        let linger = match self.state {
            State::Open => {
                // Echo the peer's code (an empty close is answered with an empty close).
                match code {
                    Some(c) => write_close(out, c, ""),
                    None => frame::write_header(out, true, 0, OP_CLOSE, 0),
                }
                true
            }
            // The answer to our close: the handshake is complete.
            _ => false,
        };
        self.state = State::Closed {
            deadline: cx.now + close_wait(cx.config),
        };
        Action::Close {
            reason: CloseReason::WsClosed,
            linger,
        }
    }

    /// Starts a close we initiate and keeps reading until the peer answers.
    fn start_close(
        &mut self,
        code: u16,
        reason: &str,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        write_close(out, code, reason);
        cx.metrics.ws_close_code(code);
        self.state = State::CloseSent {
            deadline: cx.now + close_wait(cx.config),
        };
        Action::Continue
    }

    fn protocol_error(&mut self, why: &str, cx: &Context<'_>, out: &mut Vec<u8>) -> Action {
        self.fail(1002, why, CloseReason::ProtocolError, cx, out)
    }

    /// _Fail the WebSocket Connection_ (RFC 6455 §7.1.7): send a close with `code`, then close
    /// TCP after it is sent (lingering, so the frame is not lost to a reset).
    fn fail(
        &mut self,
        code: u16,
        why: &str,
        reason: CloseReason,
        cx: &Context<'_>,
        out: &mut Vec<u8>,
    ) -> Action {
        if self.state == State::Open {
            write_close(out, code, why);
            cx.metrics.ws_close_code(code);
        }
        self.state = State::Closed {
            deadline: cx.now + close_wait(cx.config),
        };
        self.msg = Vec::new();
        Action::Close {
            reason,
            linger: true,
        }
    }

    /// Schedules the next ping. The first comes after half to all of an interval, at random,
    /// so that a burst of connections upgraded together (a reconnect storm after a restart)
    /// spreads its pings over half an interval; later ones come an interval apart, less up to a
    /// tenth, so they keep drifting rather than lining up again.
    fn schedule_ping(&mut self, now: u64, config: &Config) {
        let interval = ms(config.websocket.ping_interval);
        if interval == 0 {
            self.next_ping = u64::MAX;
            return;
        }
        let first = self.next_ping == u64::MAX;
        let spread = if first { interval / 2 } else { interval / 10 };
        let jitter = u64::from(self.next_random()) % spread.max(1);
        self.next_ping = with_slack(now + interval - jitter, interval);
    }

    fn next_random(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        self.rng
    }
}

/// RFC 6455 §7.4.1–7.4.2: codes a peer may send. 1004–1006 and 1015 are reserved and never
/// sent; 1016–2999 are unassigned; 3000–4999 are for libraries and applications.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(frame::MAX_CONTROL_PAYLOAD - 2)];
    frame::write_header(out, true, 0, OP_CLOSE, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// How long we wait for a peer's close after ours (and for our last frame to drain).
fn close_wait(config: &Config) -> u64 {
    ms(config.websocket.pong_timeout).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::proto::ws::deflate;
    use proptest::prelude::*;
    use std::time::Duration;

    /// One WsConn driven in memory, with the context the engine would give it.
    struct Harness {
        config: Config,
        metrics: Metrics,
        now: u64,
        conn: Option<WsConn>,
        scratch: std::cell::RefCell<deflate::Scratch>,
        tls_scratch: std::cell::RefCell<crate::proto::tls::Scratch>,
    }

    impl Harness {
        fn new(tweak: impl FnOnce(&mut Config)) -> Harness {
            let mut config = Config::default();
            tweak(&mut config);
            let conn = Some(WsConn::new(0, &config, 42, None, crate::app::ROUTE_ECHO));
            Harness {
                config,
                metrics: Metrics::new(1),
                now: 0,
                conn,
                scratch: Default::default(),
                tls_scratch: Default::default(),
            }
        }
        fn with<R>(
            &mut self,
            f: impl FnOnce(&mut WsConn, &Context<'_>, &mut Vec<u8>) -> R,
        ) -> (R, Vec<u8>) {
            let cx = Context {
                now: self.now,
                date: b"Thu, 01 Jan 1970 00:00:00 GMT",
                config: &self.config,
                metrics: &self.metrics.workers[0],
                all_metrics: &self.metrics,
                draining: false,
                stopping: false,
                ws_scratch: &self.scratch,
                tls_scratch: &self.tls_scratch,
                access: None,
                peer: Default::default(),
                over_limit: false,
                app: &crate::app::WorkerApp::standalone(),
                conn: Default::default(),
            };
            let mut out = Vec::new();
            let r = f(self.conn.as_mut().unwrap(), &cx, &mut out);
            (r, out)
        }
        fn feed(&mut self, bytes: &[u8]) -> (Action, Vec<u8>) {
            self.with(|c, cx, out| c.on_input(bytes, cx, out))
        }
        fn tick(&mut self, now: u64) -> (Action, Vec<u8>) {
            self.now = now;
            self.with(|c, cx, out| c.on_timeout(cx, out))
        }
        fn deadline(&self) -> u64 {
            self.conn.as_ref().unwrap().deadline(&self.config)
        }
    }

    const NO_TAKEOVER: Params = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
    };

    fn with_deflate(p: Params) -> Harness {
        let mut h = Harness::new(no_pings);
        h.conn = Some(WsConn::new(
            0,
            &h.config,
            42,
            Some(p),
            crate::app::ROUTE_ECHO,
        ));
        h
    }

    /// Compresses like a client would (its own context, reset per message).
    fn compress(plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Deflate::new(NO_TAKEOVER).deflate(&mut deflate::Scratch::default(), plain, &mut out);
        out
    }

    fn inflate(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Deflate::new(NO_TAKEOVER)
            .inflate(&mut deflate::Scratch::default(), wire, &mut out, 1 << 24)
            .unwrap();
        out
    }

    /// (rsv, opcode, payload) of each server frame in `out`.
    fn frames(out: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut v = Vec::new();
        let mut pos = 0;
        while let Ok(Some(h)) = frame::parse_header(&out[pos..]) {
            let end = pos + h.header_len + h.payload_len as usize;
            v.push((h.rsv, h.opcode, out[pos + h.header_len..end].to_vec()));
            pos = end;
        }
        v
    }

    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        frame::client_frame(fin, opcode, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    fn server(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_header(&mut out, true, 0, opcode, payload.len());
        out.extend_from_slice(payload);
        out
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    /// The close code of the first close frame in `out`.
    fn close_code(out: &[u8]) -> Option<u16> {
        let mut pos = 0;
        while let Ok(Some(h)) = frame::parse_header(&out[pos..]) {
            let p = &out[pos + h.header_len..pos + h.header_len + h.payload_len as usize];
            if h.opcode == OP_CLOSE {
                return Some(if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                });
            }
            pos += h.header_len + h.payload_len as usize;
        }
        None
    }

    fn no_pings(c: &mut Config) {
        c.websocket.ping_interval = Duration::ZERO;
    }

    #[test]
    fn echoes_text_and_binary_with_their_opcodes() {
        let mut h = Harness::new(no_pings);
        let mut input = client(true, OP_TEXT, "héllo".as_bytes());
        input.extend(client(true, OP_BINARY, &[0, 1, 2, 255]));
        let (a, out) = h.feed(&input);
        assert_eq!(a, Action::Continue);
        let mut want = server(OP_TEXT, "héllo".as_bytes());
        want.extend(server(OP_BINARY, &[0, 1, 2, 255]));
        assert_eq!(out, want);
    }

    #[test]
    fn fragments_are_joined_and_control_frames_answered_in_between() {
        let mut h = Harness::new(no_pings);
        let mut input = client(false, OP_TEXT, b"fra");
        input.extend(client(true, OP_PING, b"p"));
        input.extend(client(false, OP_CONTINUATION, b"gmen"));
        input.extend(client(true, OP_CONTINUATION, b"ted"));
        let (_, out) = h.feed(&input);
        let mut want = server(OP_PONG, b"p");
        want.extend(server(OP_TEXT, b"fragmented"));
        assert_eq!(out, want);
    }

    #[test]
    fn protocol_errors_close_with_1002() {
        let mut unmasked = server(OP_TEXT, b"x");
        unmasked[1] &= 0x7f;
        let mut rsv = client(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", unmasked),
            ("rsv1 without extension", rsv),
            ("reserved opcode 3", client(true, 3, b"")),
            ("reserved opcode 0xB", client(true, 0xB, b"")),
            ("control over 125", client(true, OP_PING, &[0; 126])),
            ("fragmented control", client(false, OP_PING, b"")),
            (
                "continuation without start",
                client(true, OP_CONTINUATION, b"x"),
            ),
            (
                "new message inside fragmented",
                [client(false, OP_TEXT, b"a"), client(true, OP_BINARY, b"b")].concat(),
            ),
            ("1-byte close", client(true, OP_CLOSE, &[3])),
        ];
        for (why, input) in cases {
            let mut h = Harness::new(no_pings);
            let (a, out) = h.feed(&input);
            assert_eq!(close_code(&out), Some(1002), "{why}");
            assert_eq!(
                a,
                Action::Close {
                    reason: CloseReason::ProtocolError,
                    linger: true
                },
                "{why}"
            );
        }
    }

    #[test]
    fn invalid_utf8_closes_with_1007_also_across_fragments() {
        let mut h = Harness::new(no_pings);
        assert_eq!(
            close_code(&h.feed(&client(true, OP_TEXT, &[0xff])).1),
            Some(1007)
        );
        // "κ" split across fragments is fine; a bad continuation in the next fragment is not.
        let mut h = Harness::new(no_pings);
        let (_, out) = h.feed(
            &[
                client(false, OP_TEXT, &[0xCE]),
                client(true, OP_CONTINUATION, &[0xBA]),
            ]
            .concat(),
        );
        assert_eq!(out, server(OP_TEXT, "κ".as_bytes()));
        let mut h = Harness::new(no_pings);
        let (_, out) = h.feed(&client(false, OP_TEXT, &[0xCE]));
        assert!(out.is_empty());
        let (_, out) = h.feed(&client(false, OP_CONTINUATION, &[0x28]));
        assert_eq!(
            close_code(&out),
            Some(1007),
            "fails fast, before the message ends"
        );
        // A message that ends inside a character.
        let mut h = Harness::new(no_pings);
        let (_, out) = h.feed(
            &[
                client(false, OP_TEXT, b"a"),
                client(true, OP_CONTINUATION, &[0xE2, 0x82]),
            ]
            .concat(),
        );
        assert_eq!(close_code(&out), Some(1007));
    }

    #[test]
    fn close_handshake_echoes_valid_codes_and_rejects_invalid_ones() {
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let mut h = Harness::new(no_pings);
            let (a, out) = h.feed(&client(true, OP_CLOSE, &close_payload(code, "bye")));
            assert_eq!(close_code(&out), Some(code));
            assert_eq!(
                a,
                Action::Close {
                    reason: CloseReason::WsClosed,
                    linger: true
                }
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            let mut h = Harness::new(no_pings);
            let (_, out) = h.feed(&client(true, OP_CLOSE, &close_payload(code, "")));
            assert_eq!(close_code(&out), Some(1002), "code {code}");
        }
        let mut h = Harness::new(no_pings);
        let (_, out) = h.feed(&client(true, OP_CLOSE, &[0x03, 0xE8, 0xff, 0xfe]));
        assert_eq!(close_code(&out), Some(1007));
        let mut h = Harness::new(no_pings);
        let (_, out) = h.feed(&client(true, OP_CLOSE, b""));
        assert_eq!(out, server(OP_CLOSE, b""));
    }

    #[test]
    fn messages_over_the_limit_close_with_1009() {
        let limit = |c: &mut Config| {
            no_pings(c);
            c.websocket.max_message_bytes = 100;
        };
        let mut h = Harness::new(limit);
        assert_eq!(
            close_code(&h.feed(&client(true, OP_BINARY, &[0; 101])).1),
            Some(1009)
        );
        let mut h = Harness::new(limit);
        let (_, out) = h.feed(
            &[
                client(false, OP_BINARY, &[0; 60]),
                client(true, OP_CONTINUATION, &[0; 41]),
            ]
            .concat(),
        );
        assert_eq!(close_code(&out), Some(1009));
        // The header alone is enough: a 1 GiB frame is refused before its payload arrives.
        let mut h = Harness::new(limit);
        let mut big = Vec::new();
        frame::write_header(&mut big, true, 0, OP_BINARY, 1 << 30);
        big[1] |= 0x80;
        big.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(close_code(&h.feed(&big).1), Some(1009));
    }

    #[test]
    fn heartbeats_ping_on_schedule_and_close_the_silent() {
        let mut h = Harness::new(|c| {
            c.websocket.ping_interval = Duration::from_secs(30);
            c.websocket.pong_timeout = Duration::from_secs(10);
        });
        let first = h.deadline();
        assert!(
            (15_000..=30_000).contains(&first),
            "first ping within the second half: {first}"
        );
        let (a, out) = h.tick(first);
        assert_eq!(a, Action::Continue);
        let ping = frame::parse_header(&out).unwrap().unwrap();
        assert_eq!(ping.opcode, OP_PING);
        assert_eq!(h.deadline(), first + 10_000, "now waiting for the pong");
        // A pong clears it, and its echo of our send time gives the round trip (7 ms here); the
        // next ping comes an interval later.
        h.now = first + 7;
        h.feed(&client(true, OP_PONG, &out[2..]));
        let w = &h.metrics.workers[0];
        assert_eq!(w.ws_ping_rtt_sum_ms.get(), 7);
        assert_eq!(w.ws_ping_rtt_buckets[3].get(), 1, "the 5-10 ms bucket");
        assert!(h.deadline() > first + 20_000);
        let second = h.deadline();
        h.tick(second);
        // No pong this time: closed at the pong deadline and counted.
        let (a, _) = h.tick(second + 10_000);
        assert_eq!(
            a,
            Action::Close {
                reason: CloseReason::HeartbeatTimeout,
                linger: false
            }
        );
        assert_eq!(h.metrics.workers[0].ws_heartbeat_timeouts.get(), 1);
        assert_eq!(h.metrics.workers[0].ws_pings_sent.get(), 2);
    }

    #[test]
    fn later_pings_do_not_extend_the_pong_deadline() {
        let mut h = Harness::new(|c| {
            c.websocket.ping_interval = Duration::from_millis(200);
            c.websocket.pong_timeout = Duration::from_millis(300);
        });
        let first = h.deadline();
        h.tick(first);
        let pong_due = with_slack(first + 300, 300);
        assert!(
            pong_due - (first + 300) < 300 / 32,
            "slack is a 32nd of the timeout"
        );
        let closed_at = loop {
            let now = h.deadline();
            if h.tick(now).0 != Action::Continue {
                break now;
            }
        };
        assert_eq!(closed_at, pong_due);
    }

    #[test]
    fn jitter_spreads_connections_upgraded_together() {
        // 100,000 connections upgraded in the same millisecond, 30 s interval: their first
        // pings spread evenly over 15 s, in batches on 100 ms boundaries (the slack).
        let config = Config::default();
        let mut per_batch = std::collections::HashMap::<u64, u32>::new();
        for s in 0..100_000u32 {
            let c = WsConn::new(
                0,
                &config,
                s.wrapping_mul(2_654_435_761) ^ s,
                None,
                crate::app::ROUTE_ECHO,
            );
            assert!((15_000..=30_000).contains(&c.next_ping));
            assert_eq!(c.next_ping % 100, 0, "on a slack boundary");
            *per_batch.entry(c.next_ping).or_default() += 1;
        }
        // 150 batches of about 667; none much bigger than that.
        assert!(per_batch.len() >= 150, "only {} batches", per_batch.len());
        let busiest = per_batch.values().max().copied().unwrap();
        assert!(busiest <= 850, "{busiest} pings in one batch");
    }

    #[test]
    fn pings_from_the_client_get_the_same_payload_back() {
        let mut h = Harness::new(no_pings);
        let (_, out) = h.feed(&client(true, OP_PING, b"are you there"));
        assert_eq!(out, server(OP_PONG, b"are you there"));
    }

    #[test]
    fn idle_timeout_and_drain_start_a_close_and_wait_for_the_peer() {
        let mut h = Harness::new(|c| {
            no_pings(c);
            c.websocket.idle_timeout = Duration::from_secs(5);
        });
        assert_eq!(h.deadline(), 5_000);
        let (a, out) = h.tick(5_000);
        assert_eq!((a, close_code(&out)), (Action::Continue, Some(1000)));
        // Data after our close is ignored; the peer's close completes the handshake.
        assert!(h.feed(&client(true, OP_TEXT, b"late")).1.is_empty());
        let (a, out) = h.feed(&client(true, OP_CLOSE, &close_payload(1000, "")));
        assert!(out.is_empty());
        assert_eq!(
            a,
            Action::Close {
                reason: CloseReason::WsClosed,
                linger: false
            }
        );

        let mut h = Harness::new(no_pings);
        let (a, out) = h.with(|c, cx, out| c.on_drain(cx, out));
        assert_eq!((a, close_code(&out)), (Action::Continue, Some(1001)));
        // A peer that never answers is closed when the wait ends.
        let d = h.deadline();
        assert_eq!(
            h.tick(d).0,
            Action::Close {
                reason: CloseReason::WsClosed,
                linger: false
            }
        );
    }

    #[test]
    fn a_peer_that_does_not_read_is_paused_then_closed_with_1008() {
        let mut h = Harness::new(no_pings);
        let msg = client(true, OP_BINARY, &[7; 60_000]);
        let input: Vec<u8> = std::iter::repeat_n(msg, 8).flatten().collect();
        // Output over the cap: the rest of the input waits, and reading pauses.
        let (a, out) = h.with(|c, cx, out| {
            out.reserve(OUTPUT_CAP);
            c.on_input(&input, cx, out)
        });
        assert_eq!(a, Action::Continue);
        assert!(out.len() >= OUTPUT_CAP && out.len() < 8 * 60_000);
        assert!(h.conn.as_ref().unwrap().read_paused());
        let d = h.deadline();
        let (a, out) = h.tick(d);
        assert_eq!(close_code(&out), Some(1008));
        assert_eq!(
            a,
            Action::Close {
                reason: CloseReason::SlowReader,
                linger: true
            }
        );
    }

    #[test]
    fn deflate_messages_in_and_out() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(40);
        let mut h = with_deflate(NO_TAKEOVER);
        let mut f = client(true, OP_TEXT, &compress(text.as_bytes()));
        f[0] |= 0x40; // RSV1
        let (a, out) = h.feed(&f);
        assert_eq!(a, Action::Continue);
        let got = frames(&out);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1), (RSV1, OP_TEXT), "echoed compressed");
        assert_eq!(inflate(&got[0].2), text.as_bytes());
        // Fragmented and compressed: RSV1 on the first frame only.
        let wire = compress(text.as_bytes());
        let (a1, b1) = wire.split_at(wire.len() / 2);
        let mut first = client(false, OP_TEXT, a1);
        first[0] |= 0x40;
        let (_, out) = h.feed(&[first, client(true, OP_CONTINUATION, b1)].concat());
        assert_eq!(inflate(&frames(&out)[0].2), text.as_bytes());
        // Short messages go out uncompressed.
        let (_, out) = h.feed(&client(true, OP_BINARY, b"tiny"));
        assert_eq!(frames(&out), vec![(0, OP_BINARY, b"tiny".to_vec())]);
        assert!(
            !h.conn
                .as_ref()
                .unwrap()
                .deflate
                .as_ref()
                .unwrap()
                .holds_context()
        );
    }

    #[test]
    fn deflate_misuse_and_bombs() {
        // RSV1 on a continuation or a control frame: 1002.
        for bad in [
            [client(false, OP_TEXT, b"a"), {
                let mut c = client(true, OP_CONTINUATION, b"b");
                c[0] |= 0x40;
                c
            }]
            .concat(),
            {
                let mut c = client(true, OP_PING, b"");
                c[0] |= 0x40;
                c
            },
        ] {
            let mut h = with_deflate(NO_TAKEOVER);
            assert_eq!(close_code(&h.feed(&bad).1), Some(1002));
        }
        // A bomb: 64 MiB of zeros in a small frame, against the 16 MiB default cap: 1009.
        let mut h = with_deflate(NO_TAKEOVER);
        let bomb = compress(&vec![0u8; 64 << 20]);
        let mut f = Vec::new();
        frame::write_header(&mut f, true, RSV1, OP_BINARY, bomb.len());
        f[1] |= 0x80;
        f.extend_from_slice(&[0; 4]); // a zero mask leaves the payload as is
        f.extend_from_slice(&bomb);
        assert_eq!(close_code(&h.feed(&f).1), Some(1009));
        // Garbage that is not deflate: 1007.
        let mut h = with_deflate(NO_TAKEOVER);
        let mut g = client(true, OP_BINARY, &[0xff; 200]);
        g[0] |= 0x40;
        assert_eq!(close_code(&h.feed(&g).1), Some(1007));
    }

    proptest! {
        /// Random messages, fragmented at random and delivered in random pieces, come back
        /// whole and in order, each with its opcode.
        #[test]
        fn random_messages_round_trip_through_fragmentation_and_splits(
            msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 1usize..4), 1..8),
            splits in proptest::collection::vec(1usize..97, 1..20),
        ) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for (text, bytes, pieces) in &msgs {
                let payload: Vec<u8> = if *text { String::from_utf8_lossy(bytes).into_owned().into_bytes() } else { bytes.clone() };
                let opcode = if *text { OP_TEXT } else { OP_BINARY };
                want.extend(server(opcode, &payload));
                let size = payload.len().div_ceil(*pieces).max(1);
                let chunks: Vec<&[u8]> = if payload.is_empty() { vec![&payload[..]] } else { payload.chunks(size).collect() };
                for (i, c) in chunks.iter().enumerate() {
                    let op = if i == 0 { opcode } else { OP_CONTINUATION };
                    wire.extend(client(i + 1 == chunks.len(), op, c));
                }
            }
            let mut h = Harness::new(no_pings);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut k = 0;
            while pos < wire.len() {
                let end = (pos + splits[k % splits.len()]).min(wire.len());
                k += 1;
                let (a, out) = h.feed(&wire[pos..end]);
                prop_assert_eq!(a, Action::Continue);
                got.extend(out);
                pos = end;
            }
            prop_assert_eq!(got, want);
        }
    }

    /// Found while writing the fuzz target's server-stream check (fuzz/ws_conn): with context
    /// takeover, an echo sent uncompressed (deflating did not shrink it) left the server's
    /// deflater ahead of the client's inflater, so the next compressed echo referred to bytes
    /// the client never had and could not be inflated.
    #[test]
    fn an_echo_sent_uncompressed_is_not_in_the_deflate_context() {
        let mut h = with_deflate(Params {
            server_no_context_takeover: false,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
        });
        let mut x: u32 = 12345;
        let noise: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        // The client keeps its inflater across messages, as takeover allows.
        let mut client_inflater = Deflate::new(Params {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
        });
        let mut scratch = deflate::Scratch::default();
        for _ in 0..3 {
            let (a, out) = h.feed(&client(true, OP_BINARY, &noise));
            assert_eq!(a, Action::Continue);
            let [(rsv, opcode, payload)] = &frames(&out)[..] else {
                panic!("one echo");
            };
            assert_eq!(*opcode, OP_BINARY);
            let plain = if rsv & RSV1 != 0 {
                let mut plain = Vec::new();
                client_inflater
                    .inflate(&mut scratch, payload, &mut plain, 1 << 20)
                    .expect("the client can inflate the echo");
                plain
            } else {
                payload.clone()
            };
            assert_eq!(plain, noise);
        }
    }
}
