//! Owns the per-worker provided buffer ring: the memory multishot recv writes into. Because the
//! kernel picks a buffer only when data arrives, an idle connection holds no read buffer at all;
//! a buffer is lent for the few microseconds between a completion and its processing, then handed
//! straight back.

use io_uring::IoUring;
use io_uring::types::BufRingEntry;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// A registered buffer ring with `entries` buffers of `buf_size` bytes each.
pub struct BufRing {
    /// The ring of `io_uring_buf` descriptors shared with the kernel (page-aligned mmap).
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    /// The buffers themselves, one contiguous mmap.
    bufs: NonNull<u8>,
    bufs_bytes: usize,
    entries: u16,
    buf_size: u32,
    bgid: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    published: u16,
}

fn mmap_anon(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the result
    // is checked against MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap never returns null on success"))
}

impl BufRing {
    /// Allocates and registers the ring as buffer group `bgid`. `entries` must be a power of two
    /// no larger than 32768 (a kernel limit).
    pub fn new(uring: &IoUring, bgid: u16, entries: u16, buf_size: u32) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 32768);
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let bufs_bytes = entries as usize * buf_size as usize;
        let ring = mmap_anon(ring_bytes)?.cast::<BufRingEntry>();
        let bufs = match mmap_anon(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `ring` was mapped just above with this length and is not shared yet.
                unsafe { libc::munmap(ring.as_ptr().cast(), ring_bytes) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            ring,
            ring_bytes,
            bufs,
            bufs_bytes,
            entries,
            buf_size,
            bgid,
            tail: 0,
            published: 0,
        };
        // SAFETY: the ring memory is page-aligned (mmap), `entries` long, and stays mapped until
        // `Drop`, which runs only after the worker's ring (and so the registration) is gone: the
        // worker drops its IoUring before its BufRing (field order in `Worker`).
        unsafe {
            uring.submitter().register_buf_ring_with_flags(
                ring.as_ptr() as u64,
                entries,
                bgid,
                0,
            )?;
        }
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    pub fn group(&self) -> u16 {
        self.bgid
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.entries && len <= self.buf_size as usize);
        // SAFETY: `bid` and `len` are bounds-checked above; the kernel handed this buffer to us in
        // a completion, so it no longer writes to it until we give it back with `recycle`, which
        // takes `&mut self` and so cannot run while this borrow lives.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(bid as usize * self.buf_size as usize),
                len,
            )
        }
    }

    /// Gives buffer `bid` back to the kernel (visible after the next `publish`).
    pub fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        self.push(bid);
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `idx` < entries, so the write is inside the ring mapping; the kernel reads only
        // entries between the published head and tail, and this one lies past the published tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(self.bufs.as_ptr() as u64 + bid as u64 * self.buf_size as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel with one release store, once per loop
    /// turn rather than once per buffer.
    pub fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // SAFETY: the tail field lives inside the first ring entry, which is mapped; the kernel
        // reads it with acquire semantics, so a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
        self.published = self.tail;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were created in `new` with these lengths and nothing refers to
        // them any more: the kernel registration died with the ring, which is dropped first.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
            libc::munmap(self.bufs.as_ptr().cast(), self.bufs_bytes);
        }
    }
}
