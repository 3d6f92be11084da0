//! Owns the engine simulation: drives one `proto::Session` through a list of events the way
//! `engine::worker` does, and checks the bounds a connection must keep whatever it is fed.
//!
//! What the simulation copies from the worker (`on_recv`, `on_send`, `apply`, `run_timers`):
//! - received bytes go to `on_input`; after a call, its output is sent at once (moved to the
//!   sink) and `on_output_drained` follows; a session that paused its reading gets
//!   `on_input(&[])` once its output is out, and nothing more is read until it stops pausing;
//! - `Action::Upgrade` swaps the session for a WebSocket one and feeds it the bytes that came
//!   behind the handshake; `Action::Close` ends the run (the worker reads no more input after
//!   it, lingering or not);
//! - time passes only between events; a timer fires when `now` reaches `deadline()`; a stop
//!   request (SIGTERM with `server.drain_delay`) makes every later call see `stopping`; the drain
//!   is one `on_drain`, and every later call sees `draining` (and `stopping`); the stream ends
//!   with `on_eof`.
//!
//! Bounds checked after every call: the output of one call stays within `OUTPUT_CAP` plus one
//! response or frame, and the heap the connection holds (everything allocated since the run
//! began, less the sink and the output buffer) stays within its configured limits plus the piece
//! being processed, however long the stream is.

use crate::env::Env;
use crate::heap;
use holdfast::metrics::Metrics;
use holdfast::proto::{Action, CloseReason, Context, OUTPUT_CAP, Session};

/// The jitter seed the worker would derive from the slot; fixed so runs compare.
pub const SEED: u32 = 0x5eed;

pub enum Event {
    /// Bytes from the peer, delivered in pieces as the split says.
    Data(Vec<u8>),
    /// Milliseconds pass, then the timer fires if the deadline has come.
    Advance(u64),
    /// A stop was requested and the drain delay runs: `/healthz` fails, all else as usual.
    Stop,
    /// The server starts draining (SIGTERM, once any drain delay has passed).
    Drain,
}

/// What one run produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Everything sent, in order.
    pub sink: Vec<u8>,
    /// Where the WebSocket frames start in `sink` (after the 101), if the session upgraded.
    pub ws_start: Option<usize>,
    /// Why the session ended, if it did before or at the end of the stream.
    pub close: Option<CloseReason>,
}

/// The largest single response the built-in endpoints make besides an echo: `/stream` with the
/// most chunks it serves (about 1.7 MB), with room to spare. `/metrics` is far smaller.
const MAX_FIXED_RESPONSE: usize = 2 << 20;
/// Compression contexts (a deflater per window size in the scratch, or a connection's own
/// inflater and deflater with context takeover) and the scratch buffers the worker keeps.
const CONTEXT_SLACK: usize = 1 << 20;
/// Pieces one event is cut into at most (the last takes the rest): enough for every cut that
/// matters in a stream, few enough that a long stream stays fast.
const MAX_PIECES: usize = 2048;
/// Resumptions in a row (a paused session fed nothing after its output drained) before we call
/// it a livelock: each must answer at least one pipelined request or frame.
const MAX_RESUMES: usize = 1 << 20;

struct Driver<'e> {
    env: &'e Env,
    metrics: &'e Metrics,
    session: Session,
    now: u64,
    stopping: bool,
    draining: bool,
    out: Vec<u8>,
    sink: Vec<u8>,
    ws_start: Option<usize>,
    close: Option<CloseReason>,
    baseline: usize,
    /// The piece being processed (it may be held whole while the session pauses).
    piece_len: usize,
}

/// Runs `session` through `events`. With `cuts`, every `Data` event is cut into pieces as
/// [`crate::splits::pieces`] does; without, each is delivered in one piece.
pub fn run(
    env: &Env,
    metrics: &Metrics,
    session: Session,
    now: u64,
    events: &[Event],
    cuts: Option<(&[u8], usize)>,
) -> Outcome {
    let mut d = Driver {
        env,
        metrics,
        session,
        now,
        stopping: false,
        draining: false,
        out: Vec::new(),
        sink: Vec::new(),
        ws_start: None,
        close: None,
        baseline: heap::live_bytes(),
        piece_len: 0,
    };
    if d.session.is_ws() {
        d.ws_start = Some(0);
    }
    for event in events {
        if d.close.is_some() {
            break;
        }
        match event {
            Event::Data(bytes) => {
                // The worker never delivers an empty read as input (that is EOF).
                let pieces: Box<dyn Iterator<Item = &[u8]>> = match cuts {
                    Some((lengths, scale)) => {
                        Box::new(crate::splits::pieces(bytes, lengths, scale).at_most(MAX_PIECES))
                    }
                    None => Box::new(std::iter::once(&bytes[..]).filter(|b| !b.is_empty())),
                };
                for piece in pieces {
                    if d.close.is_some() {
                        break;
                    }
                    d.piece_len = piece.len();
                    let a = d.call(|s, cx, out| s.on_input(piece, cx, out));
                    d.apply(a);
                }
                d.piece_len = 0;
            }
            Event::Advance(ms) => {
                d.now += ms;
                if d.now >= d.session.deadline(&env.config) {
                    let a = d.call(|s, cx, out| s.on_timeout(cx, out));
                    d.apply(a);
                }
            }
            Event::Stop => d.stopping = true,
            Event::Drain => {
                if !d.draining {
                    d.draining = true;
                    let a = d.call(|s, cx, out| s.on_drain(cx, out));
                    d.apply(a);
                }
            }
        }
    }
    if d.close.is_none() {
        let a = d.call(|s, cx, out| s.on_eof(cx, out));
        d.apply(a);
    }
    Outcome {
        sink: d.sink,
        ws_start: d.ws_start,
        close: d.close,
    }
}

impl Driver<'_> {
    fn call(
        &mut self,
        f: impl FnOnce(&mut Session, &Context<'_>, &mut Vec<u8>) -> Action,
    ) -> Action {
        let cx = self
            .env
            .cx(self.metrics, self.now, self.stopping, self.draining);
        let action = f(&mut self.session, &cx, &mut self.out);
        self.check_output_bound();
        self.check_heap_bound();
        if !self.out.is_empty() {
            self.sink.extend_from_slice(&self.out);
            self.out.clear();
            self.session.on_output_drained(self.now);
        }
        action
    }

    fn apply(&mut self, mut action: Action) {
        let mut resumes = 0;
        loop {
            match action {
                Action::Continue => {
                    if !self.session.read_paused() {
                        return;
                    }
                    resumes += 1;
                    assert!(
                        resumes < MAX_RESUMES,
                        "livelock: paused after every resumption"
                    );
                    // Its output is out (moved to the sink): the worker resumes reading.
                    action = self.call(|s, cx, out| s.on_input(&[], cx, out));
                }
                Action::Close { reason, .. } => {
                    self.close = Some(reason);
                    return;
                }
                Action::Upgrade => {
                    assert!(!self.session.is_ws(), "Upgrade from a WebSocket session");
                    // The WebSocket part of the stream starts after the 101, which the
                    // upgrade writes ahead of the first frames.
                    let before = self.sink.len();
                    action = self.call(|s, cx, out| s.upgrade(SEED, cx, out));
                    let head_end = self.sink[before..]
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(self.sink.len(), |p| before + p + 4);
                    self.ws_start = Some(head_end);
                }
            }
        }
    }

    /// One call queues at most `OUTPUT_CAP` plus one response (HTTP: the largest fixed
    /// response or an echo of the largest body; WebSocket: an echo of the largest message).
    fn check_output_bound(&self) {
        let c = &self.env.config;
        let one = MAX_FIXED_RESPONSE
            .max(c.http.max_body_bytes + 1024)
            .max(c.websocket.max_message_bytes + 1024);
        assert!(
            self.out.len() <= OUTPUT_CAP + one,
            "one call queued {} bytes of output",
            self.out.len()
        );
    }

    /// The heap held now, less the sink and the output buffer, stays within what the limits
    /// let a connection hold: a request head, a body, a message in progress (and its frame), the
    /// piece being processed, and the compression contexts.
    fn check_heap_bound(&self) {
        let c = &self.env.config;
        let held = heap::live_bytes()
            .saturating_sub(self.baseline)
            .saturating_sub(self.sink.capacity())
            .saturating_sub(self.out.capacity());
        let bound = 2 * self.piece_len
            + 2 * c.http.max_header_bytes
            + 2 * c.http.max_body_bytes
            + 4 * c.websocket.max_message_bytes
            + CONTEXT_SLACK;
        assert!(
            held <= bound,
            "the connection holds {held} bytes of heap (bound {bound}, piece {})",
            self.piece_len
        );
    }
}
