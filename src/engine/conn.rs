//! Owns one connection's slab slot: its socket, generation, which operations it has in flight,
//! its output (a buffer that exists only while there is something to send), and its protocol
//! state. The rules here are what make it safe to free a slot: never while the kernel may still
//! read a buffer of it or post a completion for it.

use super::outq::{OutQueue, Seg, Spare};
use crate::proto::CloseReason;
use crate::proto::Session;
use std::os::fd::RawFd;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving the protocol.
    Open,
    /// Write side shut down; draining the peer's input until EOF or `lingering_timeout`.
    Linger,
    /// Waiting for in-flight operations to finish before the socket is closed.
    Closing,
}

pub struct Conn {
    pub fd: RawFd,
    pub generation: u32,
    pub phase: Phase,
    /// A multishot recv is armed (until its final completion arrives).
    pub recv_armed: bool,
    /// An AsyncCancel for the armed recv is already submitted.
    pub recv_cancelled: bool,
    /// The peer sent EOF or the socket failed: never re-arm recv.
    pub read_done: bool,
    /// Reading stopped because too much output is queued.
    pub read_paused: bool,
    pub send_inflight: bool,
    pub shutdown_inflight: bool,
    /// The buffer the kernel is sending from; never touched until its completion arrives.
    pub sending: Option<Vec<u8>>,
    pub sent: usize,
    /// Output produced while a send is in flight (or before the end-of-turn flush).
    pub pending: Option<Vec<u8>>,
    /// Output queued ahead of `pending` that includes frames shared with other connections;
    /// present only while there is some. While it exists, sends are `sendmsg`s over it.
    pub queue: Option<Box<OutQueue>>,
    /// In the flush list for this loop turn.
    pub dirty: bool,
    /// What to do once all output is sent.
    pub close_after_flush: Option<(CloseReason, bool)>,
    /// The deadline the wheel holds for this slot (u64::MAX: none).
    pub armed_deadline: u64,
    /// `server.proxy_protocol`: the PROXY header has not been read yet.
    pub proxy_header: Option<Box<ProxyWait>>,
    pub proto: Session,
}

impl Conn {
    pub fn new(fd: RawFd, generation: u32, proto: Session) -> Conn {
        Conn {
            fd,
            generation,
            phase: Phase::Open,
            recv_armed: false,
            recv_cancelled: false,
            read_done: false,
            read_paused: false,
            send_inflight: false,
            shutdown_inflight: false,
            sending: None,
            sent: 0,
            pending: None,
            queue: None,
            dirty: false,
            close_after_flush: None,
            armed_deadline: u64::MAX,
            proxy_header: None,
            proto,
        }
    }

    /// True when the kernel holds no reference to this slot: no buffer being sent, no armed
    /// recv, no shutdown pending. Only then may the slot be freed and the socket closed.
    pub fn quiescent(&self) -> bool {
        !self.recv_armed && !self.send_inflight && !self.shutdown_inflight
    }

    /// Why the connection is closing: what the protocol asked for, or the peer going away.
    pub fn close_reason(&self) -> CloseReason {
        self.close_after_flush
            .map(|(r, _)| r)
            .unwrap_or(CloseReason::PeerClosed)
    }

    pub fn has_output(&self) -> bool {
        self.send_inflight
            || self.pending.as_ref().is_some_and(|p| !p.is_empty())
            || self.queue.as_ref().is_some_and(|q| !q.is_empty())
    }

    /// Bytes queued and not yet acknowledged by the kernel: what a slow reader has let pile up.
    pub fn unsent(&self) -> usize {
        let sending = self.sending.as_ref().map_or(0, |b| b.len() - self.sent);
        let pending = self.pending.as_ref().map_or(0, Vec::len);
        sending + pending + self.queue.as_ref().map_or(0, |q| q.unsent())
    }

    /// Drops queued output of which nothing is on its way to the kernel: for a subscriber being
    /// closed as too slow, whose close frame should come next.
    pub fn discard_unsent(&mut self) {
        self.pending = None;
        let inflight = self.send_inflight && self.sending.is_none();
        if let Some(q) = self.queue.as_mut() {
            q.discard_unstarted(inflight);
        }
    }

    /// Queues a frame shared with other connections behind everything queued so far; a new
    /// queue comes from `spare` (the worker's drained ones) when it has one.
    pub fn queue_shared(&mut self, frame: Arc<[u8]>, spare: &mut Spare) {
        let q = self
            .queue
            .get_or_insert_with(|| spare.pop().unwrap_or_else(OutQueue::new));
        if let Some(p) = self.pending.take_if(|p| !p.is_empty()) {
            q.push(Seg::Owned(p));
        }
        q.push(Seg::Shared(frame));
    }
}

/// A connection waiting for its PROXY header.
pub struct ProxyWait {
    /// When it is given up (`http.header_timeout` after the accept).
    pub deadline: u64,
    /// What arrived of it so far (empty until a header comes in pieces).
    pub gathered: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN §6: a slab slot (socket, generation, state, timer links, protocol state) fits in
    /// 256 bytes, so a million idle connections cost a quarter of a GiB of slots at most.
    #[test]
    fn a_slot_fits_the_memory_budget() {
        let slot = std::mem::size_of::<Conn>();
        println!("Conn: {slot} bytes");
        assert!(slot <= 256, "Conn is {slot} bytes");
    }
}
