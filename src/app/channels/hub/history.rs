//! Owns the recovery history of CHANNELS.md §4: each channel's last `history_size` events
//! within `history_ttl`, the positions that order them, and the bound on the memory they hold.
//!
//! A position is `(milliseconds, n)`: the publish time on the node's clock, and a counter for
//! events in the same millisecond, never going backwards on a channel. That is the shape of a
//! Redis Streams entry ID, so that when channels are joined through Redis (CHANNELS.md §5) a
//! stream's IDs can be the positions themselves and stay valid on every node.
//!
//! What a recovery may claim: a channel record knows every event on its channel since it was
//! made; a record is only forgotten once its last event is older than the TTL, so a channel
//! without a record had no event within the TTL. Recovering from a position older than what
//! the record can vouch for, or over an event already forgotten, is a failure, never a silent
//! gap.

use super::Key;
use std::collections::VecDeque;
use std::sync::Arc;

/// A place in a channel's sequence of events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub ms: u64,
    pub n: u64,
}

impl Pos {
    /// The next position after `self` for an event published at `now_ms`.
    pub fn after(self, now_ms: u64) -> Pos {
        if now_ms > self.ms {
            Pos { ms: now_ms, n: 1 }
        } else {
            Pos {
                ms: self.ms,
                n: self.n + 1,
            }
        }
    }

    /// `ms-n`, as [`Display`](std::fmt::Display) writes it.
    pub fn parse(s: &str) -> Option<Pos> {
        let (ms, n) = number_pair(s, '-')?;
        Some(Pos { ms, n })
    }
}

/// Two decimal numbers joined by `sep` (`12-3`), nothing else: no sign, no spaces, at most
/// 19 digits each, so that a client's ID never parses into something it did not write.
pub fn number_pair(s: &str, sep: char) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(sep)?;
    let digits = |t: &str| !t.is_empty() && t.len() <= 19 && t.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.n)
    }
}

/// One event as an event stream sends it.
#[derive(Clone)]
pub struct Entry {
    pub pos: Pos,
    /// The whole chunk (`id:` line, then the event's lines), shared by every single-channel
    /// stream and the history.
    pub chunk: Arc<[u8]>,
    /// Where the event's lines (after the `id:` line) start in `chunk`, and how long they are:
    /// a stream over several channels sends them under its own `id:`.
    pub lines: (u32, u32),
    pub at_ms: u64,
}

impl Entry {
    pub fn lines(&self) -> &[u8] {
        let (at, len) = self.lines;
        &self.chunk[at as usize..(at + len) as usize]
    }

    /// What keeping it costs, roughly: its bytes and its bookkeeping.
    pub fn cost(&self) -> usize {
        self.chunk.len() + std::mem::size_of::<Entry>() + std::mem::size_of::<(Key, Pos, u64)>()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub size: usize,
    pub ttl_ms: u64,
    /// Bytes one shard's histories may hold.
    pub shard_bytes: usize,
}

/// What a recovery found.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// These events (maybe none) are exactly the ones missed, in order.
    Events(Vec<Pos>),
    /// The history no longer reaches back that far (or the position is not one of ours).
    Failed,
}

/// One channel's kept events.
#[derive(Default)]
pub struct History {
    entries: VecDeque<Entry>,
    /// The newest position forgotten: recovering from before it fails.
    forgotten: Pos,
}

/// What a change to the histories freed or added, for the app's gauges.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub events: i64,
    pub bytes: i64,
}

impl Delta {
    fn add(&mut self, e: &Entry) {
        self.events += 1;
        self.bytes += e.cost() as i64;
    }
    fn remove(&mut self, e: &Entry) {
        self.events -= 1;
        self.bytes -= e.cost() as i64;
    }
}

impl History {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest position forgotten (for the memory cap or the size).
    pub fn forgotten(&self) -> Pos {
        self.forgotten
    }

    /// Keeps `entry` (the newest), forgetting the oldest past `size`.
    fn push(&mut self, entry: Entry, size: usize, delta: &mut Delta) -> usize {
        let mut dropped_here = 0;
        if size == 0 {
            self.forgotten = entry.pos;
            return 0;
        }
        delta.add(&entry);
        self.entries.push_back(entry);
        while self.entries.len() > size {
            self.pop_oldest(delta);
            dropped_here += 1;
        }
        dropped_here
    }

    fn pop_oldest(&mut self, delta: &mut Delta) -> Option<Pos> {
        let e = self.entries.pop_front()?;
        self.forgotten = self.forgotten.max(e.pos);
        delta.remove(&e);
        Some(e.pos)
    }

    fn oldest(&self) -> Option<Pos> {
        self.entries.front().map(|e| e.pos)
    }

    /// The events after `from`, given that the channel is now at `last` and that its record
    /// vouches for nothing before `floor`.
    pub fn since(&self, from: Pos, last: Pos, floor: Pos, now_ms: u64, ttl_ms: u64) -> Replay {
        if from > last || from < floor || from < self.forgotten {
            return Replay::Failed;
        }
        let missed: Vec<&Entry> = self.entries.iter().filter(|e| e.pos > from).collect();
        if missed
            .iter()
            .any(|e| e.at_ms.saturating_add(ttl_ms) <= now_ms)
        {
            return Replay::Failed; // expired, only not swept yet
        }
        Replay::Events(missed.iter().map(|e| e.pos).collect())
    }

    /// The positions of the kept events, oldest first (for tests).
    #[cfg(test)]
    pub fn entries_positions(&self) -> Vec<Pos> {
        self.entries.iter().map(|e| e.pos).collect()
    }

    /// The kept event at `pos`.
    pub fn get(&self, pos: Pos) -> Option<&Entry> {
        let i = self.entries.binary_search_by(|e| e.pos.cmp(&pos)).ok()?;
        self.entries.get(i)
    }
}

/// A shard's events in the order they were kept: the oldest go first when the shard is over
/// its bytes or past the TTL. An entry a channel dropped by itself (over `history_size`)
/// stays here as a stale mark until it reaches the front or the queue is compacted.
#[derive(Default)]
pub struct Fifo {
    queue: VecDeque<(Key, Pos, u64)>,
    bytes: usize,
    stale: usize,
}

/// The histories of one shard, by channel: the shard's channels lend theirs through `history`.
pub trait Histories {
    fn history(&mut self, key: &Key) -> Option<&mut History>;
}

impl Fifo {
    /// Keeps `entry` on `key`'s channel, then forgets what is past the TTL or over the shard's
    /// bytes, oldest first. Returns what changed, per app.
    pub fn keep(
        &mut self,
        shard: &mut impl Histories,
        key: &Key,
        entry: Entry,
        limits: Limits,
        deltas: &mut Vec<(u16, Delta)>,
    ) {
        let now_ms = entry.at_ms;
        self.expire(shard, now_ms, limits.ttl_ms, deltas);
        let Some(h) = shard.history(key) else {
            return;
        };
        let pos = entry.pos;
        let cost = entry.cost();
        let mut delta = Delta::default();
        let dropped = h.push(entry, limits.size, &mut delta);
        if limits.size > 0 {
            self.queue.push_back((key.clone(), pos, now_ms));
            self.bytes += cost;
            self.stale += dropped;
        }
        if dropped > 0 {
            // What the channel dropped by itself no longer counts against the shard's bytes.
            self.bytes = self
                .bytes
                .saturating_sub((-delta.bytes + cost as i64).max(0) as usize);
        }
        push_delta(deltas, key.0, delta);
        while self.bytes > limits.shard_bytes && self.pop_front(shard, deltas) {}
        if self.stale > 64 && self.stale > self.queue.len() / 2 {
            self.compact(shard);
        }
    }

    /// Forgets every event older than the TTL (the front of the queue is the oldest).
    pub fn expire(
        &mut self,
        shard: &mut impl Histories,
        now_ms: u64,
        ttl_ms: u64,
        deltas: &mut Vec<(u16, Delta)>,
    ) {
        while let Some(&(_, _, at)) = self.queue.front() {
            if at.saturating_add(ttl_ms) > now_ms {
                break;
            }
            self.pop_front(shard, deltas);
        }
    }

    /// Forgets the oldest queued event if its channel still has it. False when empty.
    fn pop_front(&mut self, shard: &mut impl Histories, deltas: &mut Vec<(u16, Delta)>) -> bool {
        let Some((key, pos, _)) = self.queue.pop_front() else {
            return false;
        };
        let live = shard.history(&key).filter(|h| h.oldest() == Some(pos));
        match live {
            Some(h) => {
                let mut delta = Delta::default();
                h.pop_oldest(&mut delta);
                self.bytes = self.bytes.saturating_sub((-delta.bytes).max(0) as usize);
                push_delta(deltas, key.0, delta);
            }
            None => self.stale = self.stale.saturating_sub(1),
        }
        true
    }

    /// Drops the stale marks.
    fn compact(&mut self, shard: &mut impl Histories) {
        self.queue.retain(|(key, pos, _)| {
            shard
                .history(key)
                .and_then(|h| h.oldest())
                .is_some_and(|oldest| oldest <= *pos)
        });
        self.stale = 0;
    }
}

fn push_delta(deltas: &mut Vec<(u16, Delta)>, app: u16, d: Delta) {
    if d == Delta::default() {
        return;
    }
    match deltas.iter_mut().find(|(a, _)| *a == app) {
        Some((_, t)) => {
            t.events += d.events;
            t.bytes += d.bytes;
        }
        None => deltas.push((app, d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<Key, History>);
    impl Histories for Map {
        fn history(&mut self, key: &Key) -> Option<&mut History> {
            self.0.get_mut(key)
        }
    }

    fn entry(pos: Pos, at_ms: u64, len: usize) -> Entry {
        Entry {
            pos,
            chunk: vec![b'x'; len].into(),
            lines: (0, len as u32),
            at_ms,
        }
    }

    fn key(name: &str) -> Key {
        (0, name.into())
    }

    #[test]
    fn positions_order_by_time_then_count_and_round_trip() {
        let p = Pos::default().after(1000);
        assert_eq!(p, Pos { ms: 1000, n: 1 });
        assert_eq!(p.after(1000), Pos { ms: 1000, n: 2 });
        assert_eq!(p.after(999), Pos { ms: 1000, n: 2 }, "the clock went back");
        assert_eq!(p.after(1001), Pos { ms: 1001, n: 1 });
        assert!(p.after(1000) < p.after(1001));
        assert_eq!(Pos::parse(&p.to_string()), Some(p));
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-1-1",
            "+1-1",
            "99999999999999999999-1",
        ] {
            assert_eq!(Pos::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed_or_fails() {
        let k = key("c");
        let mut map = Map(HashMap::from([(k.clone(), History::default())]));
        let mut fifo = Fifo::default();
        let limits = Limits {
            size: 3,
            ttl_ms: 10_000,
            shard_bytes: 1 << 20,
        };
        let mut deltas = Vec::new();
        let mut last = Pos { ms: 100, n: 0 };
        let mut all = Vec::new();
        for t in 0..5 {
            last = last.after(100 + t);
            all.push(last);
            fifo.keep(&mut map, &k, entry(last, 100 + t, 10), limits, &mut deltas);
        }
        let h = map.0.get(&k).unwrap();
        let floor = Pos { ms: 90, n: 0 };
        assert_eq!(
            h.since(all[1], last, floor, 200, 10_000),
            Replay::Events(all[2..].to_vec())
        );
        assert_eq!(
            h.since(all[4], last, floor, 200, 10_000),
            Replay::Events(vec![])
        );
        assert_eq!(
            h.since(all[0], last, floor, 200, 10_000),
            Replay::Failed,
            "forgotten"
        );
        let future = last.after(500);
        assert_eq!(h.since(future, last, floor, 200, 10_000), Replay::Failed);
        assert_eq!(
            h.since(Pos { ms: 50, n: 0 }, last, floor, 200, 10_000),
            Replay::Failed
        );
        assert_eq!(
            h.since(all[2], last, floor, 20_000, 10_000),
            Replay::Failed,
            "expired"
        );
        assert_eq!(
            deltas,
            vec![(
                0,
                Delta {
                    events: 3,
                    bytes: 3 * entry(last, 0, 10).cost() as i64
                }
            )]
        );
    }

    #[test]
    fn the_oldest_events_of_a_shard_go_first_when_it_is_full_or_past_the_ttl() {
        let (a, b) = (key("a"), key("b"));
        let mut map = Map(HashMap::from([
            (a.clone(), History::default()),
            (b.clone(), History::default()),
        ]));
        let mut fifo = Fifo::default();
        let one = entry(Pos::default(), 0, 100).cost();
        let limits = Limits {
            size: 100,
            ttl_ms: 1_000,
            shard_bytes: 3 * one,
        };
        let mut deltas = Vec::new();
        let mut p = Pos::default();
        for (t, k) in [(1, &a), (2, &b), (3, &a), (4, &b)] {
            p = p.after(t);
            fifo.keep(&mut map, k, entry(p, t, 100), limits, &mut deltas);
        }
        // a's first event went to make room.
        assert_eq!(map.0[&a].entries.len(), 1);
        assert_eq!(map.0[&b].entries.len(), 2);
        assert_eq!(fifo.bytes, 3 * one);
        fifo.expire(&mut map, 1_002, 1_000, &mut deltas);
        assert_eq!(
            map.0[&b].entries.len(),
            1,
            "b's event at 2 expired; 3 and 4 live"
        );
        assert_eq!(map.0[&a].entries.len(), 1);
        fifo.expire(&mut map, 10_000, 1_000, &mut deltas);
        assert!(map.0[&a].is_empty() && map.0[&b].is_empty());
        assert_eq!(fifo.bytes, 0);
        let total: i64 = deltas.iter().map(|(_, d)| d.bytes).sum();
        assert_eq!(total, 0);
    }

    use proptest::prelude::*;

    proptest! {
        /// Against a log of everything published: a recovery that answers events answers
        /// exactly the published events after the position, none missing; one that fails has
        /// a reason (ahead of the channel, before what the record vouches for, or an event
        /// after the position no longer kept); the shard's byte count is what its channels
        /// hold; positions stay ordered.
        #[test]
        fn recovery_is_exact_or_fails_for_a_reason(
            ops in proptest::collection::vec((0u8..3, 0u64..40, 1usize..300), 1..300),
            size in 0usize..12,
            ttl_ms in 50u64..400,
            cap_events in 2usize..30,
            probes in proptest::collection::vec((0u8..3, any::<prop::sample::Index>()), 1..20),
        ) {
            let keys: Vec<Key> = (0..3).map(|i| key(&format!("c{i}"))).collect();
            let mut map = Map(keys.iter().map(|k| (k.clone(), History::default())).collect());
            let mut fifo = Fifo::default();
            let one = entry(Pos::default(), 0, 100).cost();
            let limits = Limits { size, ttl_ms, shard_bytes: cap_events * one };
            let mut deltas = Vec::new();
            let mut now = 1_000u64;
            let mut last = [Pos { ms: now, n: 0 }; 3];
            let mut log: Vec<Vec<Pos>> = vec![Vec::new(); 3];
            for (c, dt, len) in ops {
                let c = usize::from(c);
                now += dt;
                last[c] = last[c].after(now);
                log[c].push(last[c]);
                fifo.keep(&mut map, &keys[c], entry(last[c], now, len), limits, &mut deltas);
            }
            let held: usize = map.0.values().flat_map(|h| h.entries.iter()).map(Entry::cost).sum();
            prop_assert_eq!(fifo.bytes, held);
            let bytes: i64 = deltas.iter().map(|(_, d)| d.bytes).sum();
            prop_assert_eq!(bytes, held as i64);
            let floor = Pos { ms: 1_000, n: 0 };
            for (c, at) in probes {
                let c = usize::from(c);
                let h = &map.0[&keys[c]];
                prop_assert!(h.entries.iter().zip(h.entries.iter().skip(1)).all(|(a, b)| a.pos < b.pos));
                let mut candidates = vec![floor];
                candidates.extend(&log[c]);
                let from = *at.get(&candidates);
                let after: Vec<Pos> = log[c].iter().copied().filter(|p| *p > from).collect();
                match h.since(from, last[c], floor, now, ttl_ms) {
                    Replay::Events(got) => prop_assert_eq!(got, after),
                    Replay::Failed => {
                        let kept = |p: &Pos| h.get(*p).is_some_and(|e| e.at_ms + ttl_ms > now);
                        prop_assert!(
                            from > last[c] || from < floor || !after.iter().all(kept),
                            "failed without a reason: from {from}, after {after:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn stale_marks_of_events_a_channel_dropped_itself_do_not_pile_up() {
        let k = key("hot");
        let mut map = Map(HashMap::from([(k.clone(), History::default())]));
        let mut fifo = Fifo::default();
        let limits = Limits {
            size: 10,
            ttl_ms: u64::MAX / 4,
            shard_bytes: usize::MAX,
        };
        let mut deltas = Vec::new();
        let mut p = Pos::default();
        for t in 0..10_000 {
            p = p.after(t);
            fifo.keep(&mut map, &k, entry(p, t, 8), limits, &mut deltas);
        }
        assert!(fifo.queue.len() < 200, "{}", fifo.queue.len());
        assert_eq!(fifo.bytes, 10 * entry(p, 0, 8).cost());
        assert_eq!(map.0[&k].entries.len(), 10);
    }
}
