//! Owns one HTTP/2 stream's state (RFC 9113 §5.1) as the server sees it: the request arriving
//! (head, body, its flow-control window), then the response leaving (what flow control has not
//! let out yet), or an event stream that stays open for the application's deliveries.

use super::headers::RequestHead;
use crate::proto::ws::WsConn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The request's body is still arriving.
    Receiving,
    /// The request is complete (END_STREAM), waiting for its turn to be answered.
    Ready,
    /// Handed to the application, which answers later (`Answer::Later`).
    Waiting,
    /// The response is being sent: its head is out, body bytes may wait for window.
    Sending,
    /// An event stream (`Answer::Stream`): its head is out and the application delivers to it
    /// as to a connection of its own, until it ends.
    Events,
    /// A WebSocket (RFC 8441 extended CONNECT): the stream's DATA in both directions carries
    /// its frames, run by `socket`.
    Socket,
}

pub struct Stream {
    pub id: u32,
    pub phase: Phase,
    pub head: RequestHead,
    pub body: Vec<u8>,
    /// The engine's clock when the request's head arrived (for the access log).
    pub started: u64,
    /// What the peer may still send on this stream before we open the window more.
    pub recv_window: i64,
    /// What we may still send on this stream (the peer's window for it).
    pub send_window: i64,
    /// Response body bytes flow control has held back, from `sent` on.
    pub outgoing: Vec<u8>,
    pub sent: usize,
    /// The request's side is closed (END_STREAM received).
    pub remote_done: bool,
    /// The response ends (END_STREAM) when `outgoing` is sent; an open event stream does not.
    pub end_after: bool,
    /// An event stream's route, and whether the application knows it (and must be told when
    /// it ends).
    pub route: u16,
    pub registered: bool,
    /// When the event stream last sent something (its heartbeat counts from here).
    pub last_output: u64,
    /// During a drain: when the event stream ends, and its last bytes.
    pub drain: Option<(u64, &'static [u8])>,
    /// The WebSocket session of a `Socket` stream.
    pub socket: Option<Box<WsConn>>,
}

impl Stream {
    pub fn new(id: u32, head: RequestHead, started: u64, recv: i64, send: i64) -> Stream {
        Stream {
            id,
            phase: Phase::Receiving,
            head,
            body: Vec::new(),
            started,
            recv_window: recv,
            send_window: send,
            outgoing: Vec::new(),
            sent: 0,
            remote_done: false,
            end_after: true,
            route: 0,
            registered: false,
            last_output: started,
            drain: None,
            socket: None,
        }
    }

    /// Response body bytes still to send.
    pub fn unsent(&self) -> &[u8] {
        &self.outgoing[self.sent..]
    }

    /// An extended CONNECT for a WebSocket (RFC 8441 §4).
    pub fn is_websocket_connect(&self) -> bool {
        self.head.method == b"CONNECT" && self.head.protocol.as_deref() == Some(b"websocket")
    }

    /// Queues body bytes behind what is waiting.
    pub fn queue(&mut self, bytes: &[u8]) {
        if self.sent == self.outgoing.len() {
            self.outgoing.clear();
            self.sent = 0;
        }
        self.outgoing.extend_from_slice(bytes);
    }
}
