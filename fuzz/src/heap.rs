//! Owns the fuzz binaries' global allocator: the system allocator with a count of the bytes
//! currently allocated, so the connection targets can assert that what a connection holds does
//! not grow with the length of the stream it is fed (no unbounded buffering).

use cap::Cap;
use std::alloc::System;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes allocated on the heap right now, by any Rust code in the process.
pub fn live_bytes() -> usize {
    ALLOCATOR.allocated()
}
