//! Owns the interface between the protocols and the applications above them (DESIGN §2a). The
//! sans-I/O protocols parse; what a request or a message means is decided by a [`Handler`] the
//! engine gives them in the [`Context`](super::Context). The traits are defined here, below the
//! applications that implement them, so that nothing in `proto` or `engine` imports an
//! application: the built-in endpoints, the echo and the channels plug in from above.
//!
//! Work that crosses connections (an event fanned out to subscribers, a reply that waited for
//! that fan-out) is not done inside a protocol call, where one connection is borrowed: the
//! handler queues it as [`Work`] and the engine applies it between calls.

use super::http1::exchange::{Answer, Reply, Request};
use super::ws::Sender;
use super::{CloseReason, Context};
use std::borrow::Cow;
use std::sync::Arc;

/// A connection as the engine names it: its slab slot and the generation of that slot, so that
/// work addressed to a connection that has since closed (and whose slot was reused) is dropped;
/// and, on an HTTP/2 connection, the stream (0: the connection itself), so that a reply, an
/// event stream's deliveries and its end reach the stream they are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
    pub stream: u32,
}

/// What a WebSocket application wants after a message or an open.
/// The route of a WebSocket the protocol layer opens only to close it with 1013 (try again
/// later): its client's address is over a per-address limit. Applications number their own
/// routes from 1 up and never see this one.
pub const ROUTE_OVER_LIMIT: u16 = u16::MAX;

/// WebSocket close code 1013 (RFC 6455 §7.4.2, IANA registry): try again later.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsVerdict {
    Continue,
    /// Send a close frame with this code and reason and close.
    Close {
        code: u16,
        reason: Cow<'static, str>,
    },
}

/// What a WebSocket connection does when the server drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    pub code: u16,
    pub reason: &'static str,
    /// Milliseconds from the start of the drain until the close is sent: channel connections
    /// are spread out so that their clients do not all reconnect in the same second.
    pub after_ms: u64,
}

/// What an event stream does when the server drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDrain {
    /// The last bytes of the body before it ends (an event telling the client to reconnect).
    pub last: &'static [u8],
    /// Milliseconds from the start of the drain until the stream ends.
    pub after_ms: u64,
}

/// Cross-connection work for the engine.
pub enum Work {
    /// Queue `frame` (bytes ready for the wire, framed once for every recipient) on each
    /// connection. A connection whose unsent output is past `slow_cap` bytes is closed with
    /// `slow_code` instead: it did not keep up, and the others must not wait for it.
    Deliver {
        frame: Arc<[u8]>,
        to: Vec<ConnId>,
        slow_cap: usize,
        slow_code: u16,
    },
    /// The reply to a request that answered [`Answer::Later`].
    Reply { to: ConnId, reply: Reply<'static> },
    /// A request that answered [`Answer::Later`] is an event stream after all, ready now: as
    /// if it had answered [`Answer::Stream`] with `route`.
    Stream { to: ConnId, route: u16 },
}

/// One worker's application: called by the protocols with a [`Context`], and by the engine
/// between calls. Single-threaded (one per worker), so implementations use interior
/// mutability rather than `&mut self`, which lets a protocol hold it while it is borrowed.
pub trait Handler {
    /// A complete HTTP request.
    fn request<'b>(&self, req: &Request<'b>, cx: &Context<'_>) -> Answer<'b>;
    /// A WebSocket the application accepted (`Answer::Upgrade`) is open; `target` is the
    /// request target of the upgrade. Its first messages go to `tx`.
    fn ws_open(
        &self,
        route: u16,
        target: &[u8],
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) -> WsVerdict;
    /// A complete, valid message (text is valid UTF-8, already inflated).
    fn ws_message(
        &self,
        route: u16,
        text: bool,
        payload: &[u8],
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) -> WsVerdict;
    /// How a WebSocket connection of `route` ends when the server drains.
    fn ws_drain(&self, route: u16, cx: &Context<'_>) -> Drain;
    /// An event stream the application accepted (`Answer::Stream`) has its response head;
    /// `target` is its request target. Its first body bytes (whole chunks) go to `out`.
    /// False ends the stream at once.
    fn stream_open(&self, route: u16, target: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> bool {
        let _ = (route, target, cx, out);
        false
    }
    /// How an event stream of `route` ends when the server drains.
    fn stream_drain(&self, route: u16, cx: &Context<'_>) -> StreamDrain {
        let _ = (route, cx);
        StreamDrain {
            last: b"",
            after_ms: 0,
        }
    }
    /// The connection `cx.conn` is gone (for `reason`): forget it.
    fn closed(&self, cx: &Context<'_>, reason: CloseReason);
    /// Called by the engine once per loop turn and after each wake-up: read the mailbox,
    /// run what is due, and queue the resulting work.
    fn poll(&self, cx: &Context<'_>);
    /// Moves the queued work out.
    fn take_work(&self, into: &mut Vec<Work>);
    /// Whether the HTTP layer's own refusals (400, 408, 413…) on `path` are JSON
    /// (`{"error":"…"}`) rather than text, as an API whose every answer is JSON needs.
    fn json_errors(&self, path: &[u8]) -> bool {
        let _ = path;
        false
    }
}

/// Wakes one worker's event loop (its eventfd, read on its ring).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Where a worker sits: its index in its process, the process's index under the supervisor,
/// and the number of workers per process.
#[derive(Debug, Clone, Copy)]
pub struct WorkerPlace {
    pub index: usize,
    pub process: usize,
    pub workers: usize,
}

/// Where a server process sits on its node: its index among `count` processes started by one
/// supervisor, and a number (the supervisor's pid) that tells this node's processes from
/// another server's on the same host.
#[derive(Debug, Clone, Copy)]
pub struct ProcessPlace {
    pub index: usize,
    pub count: usize,
    pub group: u32,
}

/// The node-wide application: makes each worker's [`Handler`].
pub trait Application: Send + Sync {
    /// Called once before the workers start; `wakers[i]` wakes worker `i` of this process.
    /// An error stops the server with that line.
    fn start(&self, place: ProcessPlace, workers: usize, wakers: Vec<Waker>) -> Result<(), String>;
    /// Called on the worker's own thread.
    fn worker(&self, place: WorkerPlace) -> Box<dyn Handler>;
}
