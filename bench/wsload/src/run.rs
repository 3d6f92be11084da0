//! Owns one process's run: a single-threaded mio loop that opens its connections at the ramp
//! rate (from rotating source addresses), drives them, fires each connection's heartbeat
//! from a wheel of time slots (connection i in slot i mod slots, so they are spread evenly
//! over the interval), moves through the phases (ramp, warm-up, hold, close), and ends by
//! itself: at the give-up deadline, on a signal, or when nothing is left to hold. A
//! subscriber shard under a coordinator (coord.rs) also ends when its parent says so, and
//! then counts what its subscribers lost against what the parent published.

use crate::conn::{self, Conn, Ctx, Plan};
use crate::coord;
use crate::report::{Counters, Phase, Stats};
use crate::signals;
use crate::sub::Sub;
use mio::{Events, Interest, Poll, Token};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// How long the close phase may take at most.
pub const CLOSE_BOUND: Duration = Duration::from_secs(10);
/// Beyond the ramp, warm-up and hold, how long a run waits for stragglers before giving up.
pub const GIVE_UP_SLACK: Duration = Duration::from_secs(60);
/// Opens per loop turn at most, so events keep being served while a big ramp runs.
const OPENS_PER_TURN: usize = 1024;

pub struct RunSpec {
    pub plan: Plan,
    pub target: SocketAddr,
    /// This process's connections.
    pub connections: usize,
    /// This process's new connections per second (0: unlimited).
    pub ramp: f64,
    /// Source addresses 127.0.0.2.. to rotate through (0: the kernel's choice).
    pub sources: u32,
    /// Connection j of this process is connection j * stride + offset of the whole run, which
    /// picks its source address: shards interleave so together they rotate like one process.
    pub stride: u64,
    pub offset: u64,
    /// Echo: traffic before measuring starts (idle modes: zero).
    pub warmup: Duration,
    /// The hold (idle modes) or measurement window (echo).
    pub hold: Duration,
    /// Each connection's own heartbeat interval (0: off).
    pub heartbeat: Duration,
    /// A shard under a coordinator: the hold ends when the parent says so.
    pub coordinated: bool,
}

impl RunSpec {
    fn ramp_time(&self) -> Duration {
        if self.ramp > 0.0 {
            Duration::from_secs_f64(self.connections as f64 / self.ramp)
        } else {
            Duration::ZERO
        }
    }

    /// When a run gives up waiting for connections to settle, counted from its start.
    pub fn give_up_after(&self) -> Duration {
        self.ramp_time() + self.warmup + self.hold + GIVE_UP_SLACK
    }

    /// Connection j of this process's number in the whole run.
    fn global(&self, j: usize) -> u64 {
        j as u64 * self.stride + self.offset
    }

    fn source(&self, j: usize) -> Option<IpAddr> {
        source_address(self.sources, self.global(j))
    }
}

/// The source address of connection `n` of a whole run: 127.0.0.2 upwards, rotating through
/// `sources` addresses (0: none, the kernel picks).
pub fn source_address(sources: u32, n: u64) -> Option<IpAddr> {
    (sources > 0).then(|| {
        let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        IpAddr::V4(Ipv4Addr::from(first + (n % u64::from(sources)) as u32))
    })
}

/// How a process's run went.
pub struct Outcome {
    pub stats: Stats,
    pub held_seconds: f64,
    pub gave_up: bool,
}

/// Spreads heartbeats: `slots` slots per interval, connection j in slot j mod slots.
struct Wheel {
    slots: usize,
    slot: Duration,
    next: Instant,
    cursor: usize,
}

impl Wheel {
    fn new(interval: Duration, now: Instant) -> Wheel {
        let slots = (interval.as_millis() / 10).clamp(1, 100_000) as usize;
        let slot = interval / slots as u32;
        Wheel {
            slots,
            slot,
            next: now + slot,
            cursor: 0,
        }
    }
}

/// Runs to the end. `tick` is called every loop turn with the counters and the phase (it
/// decides itself whether to print anything).
pub fn run(spec: RunSpec, tick: &mut dyn FnMut(&Counters, Phase)) -> Result<Outcome, String> {
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(4096);
    let n = spec.connections;
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(n);
    let mut live = 0usize;
    let mut stats = Stats::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let epoch = Instant::now();
    let give_up = epoch + spec.give_up_after();
    let mut phase = Phase::Ramp;
    let mut gave_up = false;
    // Set when every connection has connected or failed.
    let mut hold_from: Option<Instant> = None;
    let mut hold_end: Option<Instant> = None;
    let mut close_at: Option<Instant> = None;
    let mut wheel = (!spec.heartbeat.is_zero()).then(|| Wheel::new(spec.heartbeat, epoch));
    // Subscribers whose connections are gone, kept for the final count of what they lost.
    let mut gone: Vec<Sub> = Vec::new();

    loop {
        let now = Instant::now();
        let now_us = (now - epoch).as_micros() as u64;

        // Open connections, at the ramp rate if one is set.
        if phase < Phase::Close {
            let allowed = if spec.ramp > 0.0 {
                ((now - epoch).as_secs_f64() * spec.ramp) as usize + 1
            } else {
                n
            }
            .min(n)
            .min(conns.len() + OPENS_PER_TURN);
            while conns.len() < allowed {
                let j = conns.len();
                match Conn::open(spec.target, spec.source(j), &spec.plan, now_us) {
                    Ok(mut c) => {
                        if let Some(sub) = &spec.plan.sub {
                            let k = sub.channels.len() as u64;
                            let channel = (spec.global(j) % k) as u32;
                            c.sub = Some(Sub::new(channel, sub.sse));
                        }
                        poll.registry()
                            .register(
                                &mut c.link.stream,
                                Token(j),
                                Interest::READABLE | Interest::WRITABLE,
                            )
                            .map_err(|e| format!("register: {e}"))?;
                        conns.push(Some(c));
                        live += 1;
                    }
                    Err(e) => {
                        conn::open_failed(&mut stats, &e);
                        conns.push(None);
                    }
                }
            }
        }

        // Phases.
        let settled = conns.len() == n && stats.count.connected + stats.count.failed >= n as u64;
        if phase == Phase::Ramp && settled {
            let warm_end = now + spec.warmup;
            hold_from = Some(warm_end);
            hold_end = Some(warm_end + spec.hold);
            phase = if spec.warmup.is_zero() {
                Phase::Hold
            } else {
                Phase::Warmup
            };
        }
        if phase == Phase::Warmup && hold_from.is_some_and(|t| now >= t) {
            phase = Phase::Hold;
        }
        let told = spec.coordinated && coord::end_requested();
        let mut stop = phase < Phase::Close
            && (signals::stop_requested() || told || hold_end.is_some_and(|t| now >= t));
        // Nothing left to hold: every connection failed or was lost.
        if phase == Phase::Hold && live == 0 {
            stop = true;
        }
        if phase < Phase::Close && now >= give_up {
            gave_up = !settled;
            if gave_up {
                eprintln!("wsload: giving up: not every connection settled in time");
            }
            stop = true;
        }
        if stop {
            phase = Phase::Close;
            close_at = Some(now);
            let mut cx = Ctx {
                plan: &spec.plan,
                stats: &mut stats,
                measuring: false,
                now_us,
                scratch: &mut scratch,
            };
            for slot in conns.iter_mut() {
                if let Some(c) = slot
                    && !c.begin_close(&mut cx)
                {
                    retire(&poll, slot, &mut live, &mut gone);
                }
            }
            // Never-attempted connections (a stop during the ramp) failed too.
            cx.stats.count.failed += (n - conns.len()) as u64;
        }
        if phase == Phase::Close && (live == 0 || close_at.is_some_and(|t| now >= t + CLOSE_BOUND))
        {
            break;
        }
        let measuring = phase == Phase::Hold;

        // Heartbeats that are due.
        let mut timeout = if spec.ramp > 0.0 && phase == Phase::Ramp {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(20)
        };
        if let Some(w) = &mut wheel
            && phase < Phase::Close
        {
            let mut cx = Ctx {
                plan: &spec.plan,
                stats: &mut stats,
                measuring,
                now_us,
                scratch: &mut scratch,
            };
            let mut fired = 0;
            while now >= w.next && fired < w.slots {
                let mut j = w.cursor;
                while j < conns.len() {
                    if let Some(c) = &mut conns[j]
                        && let Err(e) = c.heartbeat(&mut cx)
                    {
                        c.fail(cx.stats, &e);
                        retire(&poll, &mut conns[j], &mut live, &mut gone);
                    }
                    j += w.slots;
                }
                w.cursor = (w.cursor + 1) % w.slots;
                w.next += w.slot;
                fired += 1;
            }
            if now >= w.next {
                // A whole interval behind: skip ahead rather than fire everything twice.
                w.next = now + w.slot;
            }
            timeout = timeout.min(w.next.saturating_duration_since(now));
        }

        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            // A signal (SA_RESTART does not restart epoll_wait): the next turn looks at it.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => events.clear(),
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        let mut cx = Ctx {
            plan: &spec.plan,
            stats: &mut stats,
            measuring,
            now_us,
            scratch: &mut scratch,
        };
        for ev in events.iter() {
            let Some(slot) = conns.get_mut(ev.token().0) else {
                continue;
            };
            // Per event: a big batch takes long enough to matter to the round trips.
            cx.now_us = epoch.elapsed().as_micros() as u64;
            if let Some(c) = slot
                && !c.drive(&mut cx)
            {
                retire(&poll, slot, &mut live, &mut gone);
            }
        }
        tick(&stats.count, phase);
    }
    let held_seconds = match (hold_from, close_at) {
        (Some(from), Some(to)) => to.saturating_duration_since(from).as_secs_f64(),
        _ => 0.0,
    };
    // A coordinated shard that ended early (all its subscribers gone, or a signal) still
    // needs to know what was published to count what they lost.
    if spec.coordinated {
        let wait_until = epoch + spec.give_up_after() + CLOSE_BOUND;
        while !coord::end_requested() && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(10));
            tick(&stats.count, Phase::Close);
        }
    }
    let subs = conns
        .iter()
        .flatten()
        .filter_map(|c| c.sub.as_deref())
        .chain(gone.iter());
    count_losses(subs, coord::published(), &mut stats.count);
    tick(&stats.count, Phase::Done);
    Ok(Outcome {
        stats,
        held_seconds,
        gave_up,
    })
}

/// Forgets a finished connection: off the poll set, out of its slot, no longer live. A
/// subscriber's track is kept in `gone`.
fn retire(poll: &Poll, slot: &mut Option<Conn>, live: &mut usize, gone: &mut Vec<Sub>) {
    if let Some(mut c) = slot.take() {
        let _ = poll.registry().deregister(&mut c.link.stream);
        *live -= 1;
        gone.extend(c.sub.take().map(|s| *s));
    }
}

/// Counts what the subscribers that subscribed were owed and lost, on their own channel and
/// on the shared one: against what was published when the parent said, otherwise only the
/// gaps between what they saw.
fn count_losses<'a>(
    subs: impl Iterator<Item = &'a Sub>,
    published: Option<&crate::publish::Published>,
    count: &mut Counters,
) {
    for sub in subs.filter(|s| s.subscribed) {
        let c = sub.channel as usize;
        match published {
            Some(p) if c < p.sent.len() => {
                count.expected += p.accepted(c);
                count.events_lost += sub.track.lost(p.sent[c], &p.failed[c]);
                count.broadcast_expected += p.shared_sent - p.shared_failed.len() as u64;
                count.broadcasts_lost += sub.shared.lost(p.shared_sent, &p.shared_failed);
            }
            _ => {
                count.events_lost += sub.track.lost(0, &[]);
                count.broadcasts_lost += sub.shared.lost(0, &[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Published;

    #[test]
    fn losses_are_counted_per_channel_for_both_kinds() {
        // Two subscribers on channels 0 and 1; 3 events went to each channel, of which
        // channel 1's number 2 was refused; 4 broadcasts, number 3 refused.
        let p = Published {
            sent: vec![3, 3],
            failed: vec![vec![], vec![2]],
            shared_sent: 4,
            shared_failed: vec![3],
        };
        let mut a = Sub::new(0, false);
        let mut b = Sub::new(1, false);
        a.subscribed = true;
        b.subscribed = true;
        for s in [0, 1, 2] {
            a.track.record(s);
        }
        b.track.record(0); // 1 lost; 2 refused
        for s in [0, 2] {
            a.shared.record(s); // 1 lost
        }
        for s in [0, 1, 2] {
            b.shared.record(s);
        }
        // One that never subscribed owes nothing.
        let c = Sub::new(0, false);
        let mut count = Counters::default();
        count_losses([&*a, &*b, &*c].into_iter(), Some(&p), &mut count);
        assert_eq!((count.expected, count.events_lost), (5, 1));
        assert_eq!((count.broadcast_expected, count.broadcasts_lost), (6, 1));
    }

    #[test]
    fn sources_rotate_from_127_0_0_2() {
        assert_eq!(source_address(0, 5), None);
        assert_eq!(
            source_address(3, 0),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_address(3, 4),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
    }
}
