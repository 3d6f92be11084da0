//! Owns how an application's message becomes a frame on one connection: one frame per message,
//! compressed with the connection's permessage-deflate context when it was negotiated, the
//! message is long enough, and compression actually made it smaller.

use super::deflate::{COMPRESS_THRESHOLD, Deflate, Scratch};
use super::frame::{self, OP_BINARY, OP_TEXT};
use crate::metrics::WorkerMetrics;
use std::cell::RefCell;

/// RSV1 marks a compressed message (RFC 7692 §6).
pub(super) const RSV1: u8 = 0b100;

pub struct Sender<'a> {
    out: &'a mut Vec<u8>,
    deflate: Option<&'a mut Deflate>,
    scratch: &'a RefCell<Scratch>,
    metrics: &'a WorkerMetrics,
}

impl<'a> Sender<'a> {
    pub(super) fn new(
        out: &'a mut Vec<u8>,
        deflate: Option<&'a mut Deflate>,
        scratch: &'a RefCell<Scratch>,
        metrics: &'a WorkerMetrics,
    ) -> Sender<'a> {
        Sender {
            out,
            deflate,
            scratch,
            metrics,
        }
    }

    pub fn text(&mut self, message: &[u8]) {
        self.send(OP_TEXT, message);
    }

    pub fn binary(&mut self, message: &[u8]) {
        self.send(OP_BINARY, message);
    }

    /// Queues a complete frame built elsewhere (an event framed once for many connections).
    pub fn frame(&mut self, frame: &[u8]) {
        self.metrics.ws_messages_out.inc();
        self.out.extend_from_slice(frame);
    }

    /// Bytes queued on the connection and not yet sent, this message included.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Sends `message` with `opcode` (text or binary) as one frame.
    pub fn send(&mut self, opcode: u8, message: &[u8]) {
        self.metrics.ws_messages_out.inc();
        if let Some(d) = self.deflate.as_deref_mut()
            && message.len() >= COMPRESS_THRESHOLD
        {
            let mut scratch = self.scratch.borrow_mut();
            let mut packed = Scratch::lend(&mut scratch.packed);
            d.deflate(&mut scratch, message, &mut packed);
            let smaller = packed.len() < message.len();
            if smaller {
                frame::write_header(self.out, true, RSV1, opcode, packed.len());
                self.out.extend_from_slice(&packed);
            } else {
                d.not_sent();
            }
            Scratch::keep(&mut scratch.packed, packed);
            if smaller {
                return;
            }
        }
        frame::write_header(self.out, true, 0, opcode, message.len());
        self.out.extend_from_slice(message);
    }
}
