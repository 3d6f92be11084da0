//! Owns the hierarchical timing wheel that drives every timeout and heartbeat. Each key (a
//! connection's slab index) holds at most one entry, its nearest deadline. Levels of 64 slots
//! with a `u64` occupancy bitmap each (as tokio's timer) make the next expiry a few bit
//! operations, and entries link intrusively through a per-key node table, so arming, re-arming
//! and cancelling are O(1) and allocate nothing once the table has grown to the key space. Pure:
//! time is whatever milliseconds the caller passes in.

/// Slots per level, and the bits of time each level consumes.
const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
/// 64^6 ms is about 2,200 years: one "block". Deadlines beyond the current block wait in an
/// overflow list that is re-placed when the clock enters the next block.
const LEVELS: usize = 6;
/// The level index of the list of entries already due when armed.
const DUE: u8 = LEVELS as u8;
/// The level index of the overflow list.
const OVERFLOW: u8 = LEVELS as u8 + 1;
const NIL: u32 = u32::MAX;
const MAX_SPAN: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);

#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    deadline: u64,
    level: u8,
    slot: u8,
    armed: bool,
}

const EMPTY: Node = Node {
    prev: NIL,
    next: NIL,
    deadline: 0,
    level: 0,
    slot: 0,
    armed: false,
};

struct Level {
    occupied: u64,
    heads: [u32; SLOTS],
}

pub struct Wheel {
    /// The time up to which everything due has been expired.
    elapsed: u64,
    levels: [Level; LEVELS],
    /// Entries armed at or before `elapsed`: they fire on the next `expire`.
    due: u32,
    /// Entries beyond the current block.
    overflow: u32,
    nodes: Vec<Node>,
    len: usize,
}

impl Wheel {
    /// A wheel whose clock starts at `now_ms`.
    pub fn new(now_ms: u64) -> Wheel {
        Wheel::with_capacity(now_ms, 0)
    }

    /// Pre-sizes the node table for keys below `keys`, so arming them never allocates.
    pub fn with_capacity(now_ms: u64, keys: usize) -> Wheel {
        Wheel {
            elapsed: now_ms,
            levels: std::array::from_fn(|_| Level {
                occupied: 0,
                heads: [NIL; SLOTS],
            }),
            due: NIL,
            overflow: NIL,
            nodes: vec![EMPTY; keys],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arms `key` at `deadline_ms`, replacing any entry it had.
    pub fn arm(&mut self, key: usize, deadline_ms: u64) {
        assert!(key < NIL as usize, "wheel keys are u32 slab indices");
        if key >= self.nodes.len() {
            self.nodes.resize(key + 1, EMPTY);
        }
        if self.nodes[key].armed {
            self.unlink(key as u32);
        } else {
            self.len += 1;
        }
        self.nodes[key].deadline = deadline_ms;
        self.nodes[key].armed = true;
        self.place(key as u32);
    }

    /// Removes `key`'s entry if it has one.
    pub fn cancel(&mut self, key: usize) {
        if self.nodes.get(key).is_some_and(|n| n.armed) {
            self.unlink(key as u32);
            self.nodes[key].armed = false;
            self.len -= 1;
        }
    }

    /// The armed deadline of `key`, if any.
    pub fn deadline(&self, key: usize) -> Option<u64> {
        self.nodes.get(key).filter(|n| n.armed).map(|n| n.deadline)
    }

    /// A time no later than the earliest deadline at which `expire` has work to do: the exact
    /// deadline for entries within 64 ms, the start of their slot for later ones (waking then
    /// moves them to a finer level).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.due != NIL {
            return Some(self.elapsed);
        }
        self.next_expiry().map(|(t, _, _)| t)
    }

    /// The earliest slot to process: (start time, level, slot); level OVERFLOW means the
    /// overflow list, due when the next block starts.
    fn next_expiry(&self) -> Option<(u64, usize, usize)> {
        let wheel = (0..LEVELS)
            .filter_map(|l| self.next_slot(l).map(|(s, t)| (t, l, s)))
            .min();
        let overflow = (self.overflow != NIL).then(|| {
            (
                (self.elapsed | (MAX_SPAN - 1)).saturating_add(1),
                OVERFLOW as usize,
                0,
            )
        });
        wheel.into_iter().chain(overflow).min()
    }

    /// Removes every entry whose deadline is `<= now_ms` and pushes its key to `fired`.
    /// Time never goes backwards: an earlier `now_ms` does nothing.
    pub fn expire(&mut self, now_ms: u64, fired: &mut Vec<usize>) {
        if now_ms < self.elapsed {
            return;
        }
        while self.due != NIL {
            let key = self.due;
            self.unlink(key);
            self.fire(key, now_ms, fired);
        }
        while let Some((start, level, slot)) = self.next_expiry() {
            if start > now_ms {
                break;
            }
            // Advance to the slot's start and empty it: entries due by now fire, the rest move
            // to the finer level their remaining time now belongs to. The overflow list comes
            // last in its block (the levels are empty by then), so a jump of several blocks goes
            // straight to `now_ms`'s block instead of re-placing the list once per block.
            self.elapsed = if level == OVERFLOW as usize {
                debug_assert!(self.levels.iter().all(|l| l.occupied == 0));
                start.max(now_ms & !(MAX_SPAN - 1))
            } else {
                start
            };
            let mut key = if level == OVERFLOW as usize {
                std::mem::replace(&mut self.overflow, NIL)
            } else {
                let lvl = &mut self.levels[level];
                lvl.occupied &= !(1u64 << slot);
                std::mem::replace(&mut lvl.heads[slot], NIL)
            };
            while key != NIL {
                let next = self.nodes[key as usize].next;
                let node = &mut self.nodes[key as usize];
                node.prev = NIL;
                node.next = NIL;
                if node.deadline <= now_ms {
                    self.fire(key, now_ms, fired);
                } else {
                    self.place(key);
                }
                key = next;
            }
        }
        self.elapsed = now_ms;
    }

    fn fire(&mut self, key: u32, now_ms: u64, fired: &mut Vec<usize>) {
        let node = &mut self.nodes[key as usize];
        debug_assert!(node.armed && node.deadline <= now_ms, "fired early");
        node.armed = false;
        self.len -= 1;
        fired.push(key as usize);
    }

    /// The earliest occupied slot of `level` and when it starts.
    fn next_slot(&self, level: usize) -> Option<(usize, u64)> {
        let lvl = &self.levels[level];
        if lvl.occupied == 0 {
            return None;
        }
        let shift = SLOT_BITS * level as u32;
        let slot_span = 1u64 << shift;
        let level_span = slot_span << SLOT_BITS;
        let now_slot = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
        let rotated = lvl.occupied.rotate_right(now_slot);
        let slot = ((rotated.trailing_zeros() + now_slot) % SLOTS as u32) as usize;
        let level_start = self.elapsed & !(level_span - 1);
        let start = level_start + slot as u64 * slot_span;
        // Entries are placed only in slots of the current turn of their level at or after
        // `elapsed`, so a slot never lies behind the clock.
        debug_assert!(start + slot_span > self.elapsed);
        Some((slot, start.max(self.elapsed)))
    }

    /// Links `key` into the list its deadline belongs to, relative to `elapsed`.
    fn place(&mut self, key: u32) {
        let deadline = self.nodes[key as usize].deadline;
        if deadline <= self.elapsed {
            self.push_front(key, DUE, 0);
            return;
        }
        if (self.elapsed ^ deadline) >= MAX_SPAN {
            self.push_front(key, OVERFLOW, 0);
            return;
        }
        // The highest bit in which the deadline differs from now picks the level.
        let masked = (self.elapsed ^ deadline) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        let level = (significant / SLOT_BITS) as usize;
        debug_assert!(level < LEVELS);
        let slot = ((deadline >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as u8;
        self.push_front(key, level as u8, slot);
    }

    fn push_front(&mut self, key: u32, level: u8, slot: u8) {
        let head = if level == DUE {
            &mut self.due
        } else if level == OVERFLOW {
            &mut self.overflow
        } else {
            &mut self.levels[level as usize].heads[slot as usize]
        };
        let old = *head;
        *head = key;
        if old != NIL {
            self.nodes[old as usize].prev = key;
        }
        let node = &mut self.nodes[key as usize];
        node.prev = NIL;
        node.next = old;
        node.level = level;
        node.slot = slot;
        if level < DUE {
            self.levels[level as usize].occupied |= 1u64 << slot;
        }
    }

    fn unlink(&mut self, key: u32) {
        let Node {
            prev,
            next,
            level,
            slot,
            ..
        } = self.nodes[key as usize];
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else if level == DUE {
            self.due = next;
        } else if level == OVERFLOW {
            self.overflow = next;
        } else {
            let lvl = &mut self.levels[level as usize];
            debug_assert_eq!(lvl.heads[slot as usize], key);
            lvl.heads[slot as usize] = next;
            if next == NIL {
                lvl.occupied &= !(1u64 << slot);
            }
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let node = &mut self.nodes[key as usize];
        node.prev = NIL;
        node.next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn expire(w: &mut Wheel, now: u64) -> Vec<usize> {
        let mut v = Vec::new();
        w.expire(now, &mut v);
        v.sort();
        v
    }

    #[test]
    fn fires_exactly_at_the_deadline() {
        let mut w = Wheel::new(0);
        w.arm(3, 10);
        assert_eq!(w.next_deadline(), Some(10));
        assert!(expire(&mut w, 9).is_empty());
        assert_eq!(expire(&mut w, 10), vec![3]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn rearm_moves_and_cancel_removes() {
        let mut w = Wheel::new(0);
        w.arm(1, 100);
        w.arm(1, 50);
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(1), Some(50));
        w.arm(2, 60);
        w.cancel(2);
        w.cancel(2);
        assert_eq!(expire(&mut w, 200), vec![1]);
        assert_eq!(w.deadline(1), None);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_expire() {
        let mut w = Wheel::new(1000);
        w.arm(0, 5);
        assert_eq!(w.next_deadline(), Some(1000));
        assert_eq!(expire(&mut w, 1000), vec![0]);
    }

    #[test]
    fn cascades_across_level_boundaries() {
        let mut w = Wheel::new(0);
        let ds = [
            63u64,
            64,
            65,
            4095,
            4096,
            4097,
            262_143,
            262_144,
            16_777_216,
            1 << 40,
        ];
        for (k, d) in ds.iter().enumerate() {
            w.arm(k, *d);
        }
        let mut now = 0;
        let mut seen = Vec::new();
        while let Some(next) = w.next_deadline() {
            assert!(next >= now);
            now = next;
            for k in expire(&mut w, now) {
                assert_eq!(ds[k], now, "key {k} fired at {now}");
                seen.push(k);
            }
        }
        assert_eq!(seen.len(), ds.len());
    }

    #[test]
    fn big_jumps_fire_everything_due_and_nothing_else() {
        let mut w = Wheel::new(0);
        for k in 0..1000 {
            w.arm(k, (k as u64) * 997 % 100_000);
        }
        let fired = expire(&mut w, 50_000);
        assert!(fired.iter().all(|&k| (k as u64) * 997 % 100_000 <= 50_000));
        assert_eq!(fired.len() + w.len(), 1000);
        assert_eq!(expire(&mut w, 100_000).len() + fired.len(), 1000);
    }

    #[test]
    fn far_future_deadlines_are_kept() {
        let mut w = Wheel::new(5);
        w.arm(0, u64::MAX - 1);
        let years = 100 * 365 * 86_400_000u64;
        assert!(expire(&mut w, years).is_empty());
        assert_eq!(w.deadline(0), Some(u64::MAX - 1));
    }

    #[test]
    fn many_keys_in_one_slot_with_cancels_in_the_middle() {
        let mut w = Wheel::with_capacity(0, 10_000);
        for k in 0..10_000 {
            w.arm(k, 5_000);
        }
        for k in (0..10_000).step_by(3) {
            w.cancel(k);
        }
        assert!(expire(&mut w, 4_999).is_empty());
        let want: Vec<usize> = (0..10_000).filter(|k| k % 3 != 0).collect();
        assert_eq!(expire(&mut w, 5_000), want);
        assert!(w.is_empty());
    }

    #[test]
    fn a_jump_of_many_blocks_does_not_walk_them() {
        // 2^28 blocks of 64^6 ms between now and the deadline: one pass, not one per block.
        let mut w = Wheel::new(0);
        w.arm(0, u64::MAX);
        w.arm(1, 1 << 40);
        assert_eq!(expire(&mut w, u64::MAX - (1 << 37)), vec![1]);
        assert!(w.next_deadline().is_some_and(|t| t > u64::MAX - (1 << 37)));
        assert_eq!(expire(&mut w, u64::MAX), vec![0]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Arm(usize, u64),
        Cancel(usize),
        Advance(u64),
        /// Wake at `next_deadline`, as the engine does.
        Wake,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..64, prop_oneof![0u64..100, 0u64..5_000, 0u64..300_000]).prop_map(|(k, d)| Op::Arm(k, d)),
            1 => (0usize..64).prop_map(Op::Cancel),
            3 => prop_oneof![0u64..10, 0u64..1_000, 0u64..100_000].prop_map(Op::Advance),
            1 => Just(Op::Wake),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_a_btreemap_model(start in 0u64..1_000_000, ops in proptest::collection::vec(op(), 1..200)) {
            let mut w = Wheel::new(start);
            let mut model: BTreeMap<usize, u64> = BTreeMap::new();
            let mut now = start;
            for op in ops {
                match op {
                    Op::Arm(k, d) => { w.arm(k, now + d); model.insert(k, now + d); }
                    Op::Cancel(k) => { w.cancel(k); model.remove(&k); }
                    Op::Advance(d) => {
                        now += d;
                        let fired = expire(&mut w, now);
                        let want: Vec<usize> = model.iter().filter(|(_, d)| **d <= now).map(|(k, _)| *k).collect();
                        prop_assert_eq!(&fired, &want);
                        model.retain(|_, d| *d > now);
                    }
                    Op::Wake => {
                        // Waking at next_deadline must make progress: something fires, or the
                        // following next_deadline is strictly later (no 0-ms spinning).
                        if let Some(t) = w.next_deadline() {
                            now = now.max(t);
                            let fired = expire(&mut w, now);
                            let want: Vec<usize> = model.iter().filter(|(_, d)| **d <= now).map(|(k, _)| *k).collect();
                            prop_assert_eq!(&fired, &want);
                            model.retain(|_, d| *d > now);
                            let after = w.next_deadline();
                            prop_assert!(!fired.is_empty() || after.is_none_or(|a| a > t), "no progress at {}: next {:?}", t, after);
                        }
                    }
                }
                prop_assert_eq!(w.len(), model.len());
                match (w.next_deadline(), model.values().min()) {
                    (None, None) => {}
                    (Some(next), Some(min)) => prop_assert!(next <= *min, "next_deadline {} after earliest {}", next, min),
                    (next, min) => prop_assert!(false, "next_deadline {:?}, earliest {:?}", next, min),
                }
                for k in 0..64 {
                    prop_assert_eq!(w.deadline(k), model.get(&k).copied());
                }
            }
        }
    }
}
