//! Owns a connection's queue of output segments: buffers of its own beside buffers it shares
//! with other connections (an event framed once and fanned out to every subscriber), sent in
//! order with one `sendmsg` over up to [`MAX_IOV`] of them. A connection has a queue only while
//! shared output is waiting, so an idle subscriber pays nothing for it.
//!
//! The rule that makes it safe: while a send is in flight the kernel reads the `msghdr`, the
//! `iovec` array (both inside this boxed queue, so they do not move) and the segments' heap
//! bytes (which do not move when the deque reallocates, since only their handles live in it).
//! Segments are popped, and the queue dropped, only after the send's completion.

use std::collections::VecDeque;
use std::sync::Arc;

/// Segments gathered by one `sendmsg`; more wait for the next.
pub const MAX_IOV: usize = 32;

/// Drained queues kept for reuse. Boxed on purpose (clippy's `vec_box` notwithstanding): a
/// queue's `msghdr` is handed to the kernel by address, so a queue must never move.
#[allow(clippy::vec_box)]
pub type Spare = Vec<Box<OutQueue>>;

pub enum Seg {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Owned(v) => v,
            Seg::Shared(a) => a,
        }
    }
}

pub struct OutQueue {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already sent.
    offset: usize,
    /// Unsent bytes in `segs`.
    bytes: usize,
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

impl OutQueue {
    pub fn new() -> Box<OutQueue> {
        Box::new(OutQueue {
            segs: VecDeque::new(),
            offset: 0,
            bytes: 0,
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV],
            // SAFETY: msghdr is a plain C struct (pointers, lengths, flags, and on some targets
            // private padding) for which all-zero bytes are a valid, empty value.
            msg: unsafe { std::mem::zeroed() },
        })
    }

    pub fn push(&mut self, seg: Seg) {
        let n = seg.bytes().len();
        if n > 0 {
            self.bytes += n;
            self.segs.push_back(seg);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn unsent(&self) -> usize {
        self.bytes
    }

    /// Points the message at the unsent bytes (up to `MAX_IOV` segments) and returns it for a
    /// `sendmsg`. The caller must not touch the queue's front segments until the completion.
    pub fn prepare(&mut self) -> *const libc::msghdr {
        let mut n = 0;
        for (i, seg) in self.segs.iter().take(MAX_IOV).enumerate() {
            let b = seg.bytes();
            let skip = if i == 0 { self.offset } else { 0 };
            self.iov[n] = libc::iovec {
                iov_base: b[skip..].as_ptr() as *mut libc::c_void,
                iov_len: b.len() - skip,
            };
            n += 1;
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n as _;
        &self.msg
    }

    /// Drops every segment no byte of which is on its way (none is in flight and none is partly
    /// sent): a connection being closed for not keeping up gets its close frame next instead
    /// of after megabytes it will never read. `inflight`: a sendmsg over the front segments is
    /// in flight, and they stay until its completion.
    pub fn discard_unstarted(&mut self, inflight: bool) {
        let keep = if inflight {
            self.segs.len().min(MAX_IOV)
        } else {
            usize::from(self.offset > 0).min(self.segs.len())
        };
        self.segs.truncate(keep);
        let total: usize = self.segs.iter().map(|s| s.bytes().len()).sum();
        self.bytes = total - self.offset;
    }

    /// `sent` bytes went out: drops the segments they finished (owned buffers go back to
    /// `recycle`).
    pub fn advance(&mut self, mut sent: usize, mut recycle: impl FnMut(Vec<u8>)) {
        self.bytes = self.bytes.saturating_sub(sent);
        while let Some(front) = self.segs.front() {
            let left = front.bytes().len() - self.offset;
            if sent < left {
                self.offset += sent;
                return;
            }
            sent -= left;
            self.offset = 0;
            if let Some(Seg::Owned(v)) = self.segs.pop_front() {
                recycle(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(q: &mut OutQueue) -> Vec<u8> {
        let msg = q.prepare();
        // SAFETY (test): reads back the iovecs `prepare` just built over live segments.
        let iov = unsafe { std::slice::from_raw_parts((*msg).msg_iov, (*msg).msg_iovlen) };
        iov.iter()
            .flat_map(|v| unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) })
            .copied()
            .collect()
    }

    #[test]
    fn partial_sends_resume_where_they_stopped_and_keep_order() {
        let mut q = OutQueue::new();
        let shared: Arc<[u8]> = Arc::from(&b"SHARED"[..]);
        q.push(Seg::Owned(b"head-".to_vec()));
        q.push(Seg::Shared(Arc::clone(&shared)));
        q.push(Seg::Owned(Vec::new()));
        q.push(Seg::Owned(b"-tail".to_vec()));
        assert_eq!(q.unsent(), 16);
        assert_eq!(unsent(&mut q), b"head-SHARED-tail");
        let mut back = Vec::new();
        q.advance(3, |v| back.push(v));
        assert_eq!(unsent(&mut q), b"d-SHARED-tail");
        q.advance(6, |v| back.push(v));
        assert_eq!(back, [b"head-".to_vec()]);
        assert_eq!(unsent(&mut q), b"ED-tail");
        q.advance(7, |v| back.push(v));
        assert!(q.is_empty());
        assert_eq!(q.unsent(), 0);
        assert_eq!(
            Arc::strong_count(&shared),
            1,
            "the queue let go of the shared frame"
        );
    }

    #[test]
    fn discarding_keeps_only_what_is_on_its_way() {
        let mut q = OutQueue::new();
        for i in 0..40u8 {
            q.push(Seg::Owned(vec![i; 10]));
        }
        q.discard_unstarted(true);
        assert_eq!(q.unsent(), MAX_IOV * 10);
        q.advance(5, |_| {});
        q.discard_unstarted(false);
        assert_eq!(q.unsent(), 5, "the half-sent front segment stays");
        assert_eq!(unsent(&mut q), [0u8; 5]);
        q.advance(5, |_| {});
        q.discard_unstarted(false);
        assert!(q.is_empty());
    }

    #[test]
    fn at_most_max_iov_segments_per_send() {
        let mut q = OutQueue::new();
        for i in 0..(MAX_IOV + 5) {
            q.push(Seg::Owned(vec![i as u8]));
        }
        assert_eq!(unsent(&mut q).len(), MAX_IOV);
        q.advance(MAX_IOV, |_| {});
        assert_eq!(unsent(&mut q).len(), 5);
    }
}
