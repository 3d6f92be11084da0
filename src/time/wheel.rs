//! Hierarchical timing wheel (interface placeholder; implemented in its own change).

/// One entry per key (a slab index); deadlines in milliseconds on the engine's clock.
pub struct Wheel {
    _private: (),
}

impl Wheel {
    /// A wheel whose clock starts at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        let _ = now_ms;
        Wheel { _private: () }
    }
    /// Arms `key` at `deadline_ms`, replacing any entry it had.
    pub fn arm(&mut self, key: usize, deadline_ms: u64) {
        let _ = (key, deadline_ms);
    }
    /// Removes `key`'s entry if it has one.
    pub fn cancel(&mut self, key: usize) {
        let _ = key;
    }
    /// The earliest time at which `expire` may have work to do.
    pub fn next_deadline(&self) -> Option<u64> {
        None
    }
    /// Removes every entry whose deadline is `<= now_ms` and pushes its key to `fired`.
    pub fn expire(&mut self, now_ms: u64, fired: &mut Vec<usize>) {
        let _ = (now_ms, fired);
    }
}
