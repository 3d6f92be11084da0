//! Owns the memory that server processes under one supervisor share: one `ProcessBlock` of
//! counters per process, in a memfd the supervisor creates and every child maps, so that
//! `/metrics` answered by any process reports every process, and a restarted process's slot can
//! be cleared by the supervisor.

use crate::metrics::{ProcessBlock, ProcessHeader, WorkerMetrics};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// A mapping of `processes` blocks, each a `ProcessHeader` and `workers` `WorkerMetrics`. Never
/// unmapped: the counters live as long as the process.
pub struct SharedMetrics {
    base: usize,
    processes: usize,
    workers: usize,
}

fn block_bytes(workers: usize) -> usize {
    size_of::<ProcessHeader>() + workers * size_of::<WorkerMetrics>()
}

impl SharedMetrics {
    /// Creates the zero-filled region (supervisor side). The fd is close-on-exec; the supervisor
    /// clears that only in the children it starts.
    pub fn create(processes: usize, workers: usize) -> Result<(SharedMetrics, OwnedFd), String> {
        let len = processes * block_bytes(workers);
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(c"holdfast-metrics".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        nix::unistd::ftruncate(&fd, len as i64).map_err(|e| format!("ftruncate: {e}"))?;
        let shared = SharedMetrics::map(fd.as_raw_fd(), processes, workers)?;
        Ok((shared, fd))
    }

    /// Maps the region a supervisor created (child side), checking that its size is the one
    /// this binary expects for `processes` × `workers`.
    pub fn open(fd: RawFd, processes: usize, workers: usize) -> Result<SharedMetrics, String> {
        let len = processes * block_bytes(workers);
        let st = nix::sys::stat::fstat(
            // SAFETY: the fd was inherited from the supervisor and stays open for the process's
            // life; it is only borrowed for this call.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        )
        .map_err(|e| format!("shared metrics fd {fd}: {e}"))?;
        if st.st_size as usize != len {
            return Err(format!(
                "shared metrics fd {fd} holds {} bytes, expected {len} (supervisor and server \
                 from different builds?)",
                st.st_size
            ));
        }
        SharedMetrics::map(fd, processes, workers)
    }

    fn map(fd: RawFd, processes: usize, workers: usize) -> Result<SharedMetrics, String> {
        let len = processes * block_bytes(workers);
        // SAFETY: a fresh shared mapping of a memfd at least `len` bytes long; the kernel picks
        // the address. It is never unmapped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(SharedMetrics {
            base: ptr as usize,
            processes,
            workers,
        })
    }

    /// Every process's counters, as references that live for the rest of the process.
    pub fn blocks(&self) -> Vec<ProcessBlock> {
        (0..self.processes).map(|p| self.block(p)).collect()
    }

    fn block(&self, process: usize) -> ProcessBlock {
        let start = self.base + process * block_bytes(self.workers);
        // SAFETY: `start` is page-aligned plus a multiple of the block size, itself a multiple
        // of 128 (both types are align(128)), so both casts are aligned; the bytes lie inside
        // the mapping, which is never unmapped ('static); both types consist only of atomics,
        // for which all-zero bytes (a fresh memfd) and any value another process stored are
        // valid, and every access is atomic.
        unsafe {
            ProcessBlock {
                header: &*(start as *const ProcessHeader),
                workers: std::slice::from_raw_parts(
                    (start + size_of::<ProcessHeader>()) as *const WorkerMetrics,
                    self.workers,
                ),
            }
        }
    }

    /// Clears a dead process's slot before its replacement starts, keeping the restart count
    /// (plus one): the gauges must not count connections that died with it.
    pub fn reset_for_restart(&self, process: usize) {
        let block = block_bytes(self.workers);
        let start = self.base + process * block;
        let header = self.block(process).header;
        let restarts = header.restarts.load(Ordering::Relaxed);
        for word in 0..block / 8 {
            // SAFETY: 8-aligned words inside this process's block of the mapping. Every field of
            // the block is an AtomicU64 (or padding no one reads), and other processes touch the
            // fields only atomically, so an atomic store of 0 races with nothing.
            let w = unsafe { &*((start + word * 8) as *const AtomicU64) };
            w.store(0, Ordering::Relaxed);
        }
        header.restarts.store(restarts + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_see_the_same_counters_and_a_reset_clears_one_slot() {
        let (creator, fd) = SharedMetrics::create(2, 3).unwrap();
        let child = SharedMetrics::open(fd.as_raw_fd(), 2, 3).unwrap();
        let (a, b) = (creator.blocks(), child.blocks());
        b[1].workers[2].requests.add(7);
        b[1].header.open.store(5, Ordering::Relaxed);
        b[0].workers[0].requests.inc();
        assert_eq!(a[1].workers[2].requests.get(), 7);
        assert_eq!(a[1].header.open.load(Ordering::Relaxed), 5);
        creator.reset_for_restart(1);
        assert_eq!(b[1].workers[2].requests.get(), 0);
        assert_eq!(b[1].header.open.load(Ordering::Relaxed), 0);
        assert_eq!(b[1].header.restarts.load(Ordering::Relaxed), 1);
        assert_eq!(
            b[0].workers[0].requests.get(),
            1,
            "the other slot is untouched"
        );
        assert!(
            SharedMetrics::open(fd.as_raw_fd(), 2, 4).is_err(),
            "size mismatch"
        );
    }
}
