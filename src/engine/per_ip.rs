//! Owns the admission of connections per client address (`server.max_connections_per_ip`,
//! `server.connection_rate_per_ip`): how many connections each address holds in this process
//! and a token bucket of the new ones it opens, shared by the workers (one lock among
//! `SHARDS`, so that workers accepting at once rarely wait for each other).
//!
//! An address has an entry only while it holds a connection or its bucket is refilling (at
//! most a second after its last new connection), so the table is bounded by the connections
//! held plus one second's new addresses, swept now and then.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const SHARDS: usize = 64;
/// A shard drops its idle, refilled entries after this many admissions.
const SWEEP_EVERY: u32 = 4096;
/// One connection's worth of tokens (the bucket counts in thousandths, so that refilling
/// `rate` per second is exact per millisecond).
const TOKEN: u64 = 1000;

/// What an address may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted,
    /// It holds `server.max_connections_per_ip` already.
    TooMany,
    /// It opened `server.connection_rate_per_ip` in the last second.
    TooFast,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    tokens: u64,
    at_ms: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<IpAddr, Entry>,
    admissions: u32,
}

pub struct PerIp {
    max: u32,
    rate: u32,
    shards: Box<[Mutex<Shard>]>,
}

impl PerIp {
    /// `max` connections held, `rate` new per second (0: that limit is off). None when both
    /// are off: nothing is counted then.
    pub fn new(max: usize, rate: u32) -> Option<PerIp> {
        (max > 0 || rate > 0).then(|| PerIp {
            max: u32::try_from(max).unwrap_or(u32::MAX),
            rate,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn capacity(&self) -> u64 {
        u64::from(self.rate) * TOKEN
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        ip.hash(&mut h);
        // A panic while holding the lock leaves plain counts behind: still usable.
        self.shards[h.finish() as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Refills `e`'s bucket up to `now_ms`.
    fn refill(&self, e: &mut Entry, now_ms: u64) {
        if self.rate > 0 {
            let gained = now_ms.saturating_sub(e.at_ms) * u64::from(self.rate);
            e.tokens = (e.tokens + gained).min(self.capacity());
        }
        e.at_ms = now_ms;
    }

    fn idle(&self, e: &Entry) -> bool {
        e.open == 0 && (self.rate == 0 || e.tokens >= self.capacity())
    }

    /// A new connection from `ip`: admitted (and counted, until [`PerIp::release`]) or not.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> Verdict {
        let ip = ip.to_canonical();
        let mut shard = self.shard(&ip);
        shard.admissions = shard.admissions.wrapping_add(1);
        if shard.admissions.is_multiple_of(SWEEP_EVERY) {
            let entries = std::mem::take(&mut shard.entries);
            shard.entries = entries
                .into_iter()
                .filter_map(|(k, mut e)| {
                    self.refill(&mut e, now_ms);
                    (!self.idle(&e)).then_some((k, e))
                })
                .collect();
        }
        let capacity = self.capacity();
        let e = shard.entries.entry(ip).or_insert(Entry {
            open: 0,
            tokens: capacity,
            at_ms: now_ms,
        });
        self.refill(e, now_ms);
        let verdict = if self.max > 0 && e.open >= self.max {
            Verdict::TooMany
        } else if self.rate > 0 && e.tokens < TOKEN {
            Verdict::TooFast
        } else {
            if self.rate > 0 {
                e.tokens -= TOKEN;
            }
            e.open += 1;
            Verdict::Admitted
        };
        if self.idle(e) {
            shard.entries.remove(&ip);
        }
        verdict
    }

    /// An admitted connection from `ip` is closed.
    pub fn release(&self, ip: IpAddr, now_ms: u64) {
        let ip = ip.to_canonical();
        let mut shard = self.shard(&ip);
        if let Some(e) = shard.entries.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            self.refill(e, now_ms);
            if self.idle(e) {
                shard.entries.remove(&ip);
            }
        }
    }

    /// Addresses with an entry now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).entries.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn off_when_both_limits_are_zero() {
        assert!(PerIp::new(0, 0).is_none());
    }

    #[test]
    fn an_address_holds_at_most_max_and_gets_its_room_back_on_close() {
        let t = PerIp::new(2, 0).unwrap();
        assert_eq!(t.admit(ip(1), 0), Verdict::Admitted);
        assert_eq!(t.admit(ip(1), 0), Verdict::Admitted);
        assert_eq!(t.admit(ip(1), 0), Verdict::TooMany);
        assert_eq!(
            t.admit(ip(2), 0),
            Verdict::Admitted,
            "others are not affected"
        );
        t.release(ip(1), 0);
        assert_eq!(t.admit(ip(1), 0), Verdict::Admitted);
        for _ in 0..2 {
            t.release(ip(1), 0);
        }
        t.release(ip(2), 0);
        assert_eq!(
            t.tracked(),
            0,
            "nothing is kept for an address with no connection"
        );
    }

    #[test]
    fn the_rate_refills_over_a_second_in_bursts_of_rate() {
        let t = PerIp::new(0, 4).unwrap();
        for _ in 0..4 {
            assert_eq!(t.admit(ip(1), 1000), Verdict::Admitted);
        }
        assert_eq!(t.admit(ip(1), 1000), Verdict::TooFast);
        assert_eq!(
            t.admit(ip(1), 1100),
            Verdict::TooFast,
            "0.4 of a connection back"
        );
        assert_eq!(
            t.admit(ip(1), 1250),
            Verdict::Admitted,
            "one back after 250 ms"
        );
        for _ in 0..5 {
            t.release(ip(1), 1250);
        }
        assert_eq!(t.tracked(), 1, "kept while its bucket refills");
        t.release(ip(1), 5000);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_the_ipv4_one() {
        let t = PerIp::new(1, 0).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(t.admit(ip(1), 0), Verdict::Admitted);
        assert_eq!(t.admit(mapped, 0), Verdict::TooMany);
    }
}
