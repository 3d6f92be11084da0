//! Owns the WebSocket echo at `/ws` (DESIGN §1): every message comes back as it came, with its
//! opcode. The benchmarks against other servers measure this.

use crate::proto::handler::{Drain, WsVerdict};
use crate::proto::ws::Sender;
use crate::proto::ws::frame::{OP_BINARY, OP_TEXT};

pub fn on_message(text: bool, payload: &[u8], tx: &mut Sender<'_>) -> WsVerdict {
    tx.send(if text { OP_TEXT } else { OP_BINARY }, payload);
    WsVerdict::Continue
}

/// An echo connection has nothing to resume: close at once with 1001 (going away).
pub const DRAIN: Drain = Drain {
    code: 1001,
    reason: "server shutting down",
    after_ms: 0,
};
