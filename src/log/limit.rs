//! Owns rate limiting of repeated log lines. A condition that can repeat per connection or per
//! event (an EMFILE accept storm, a socket option that fails on every connection) prints at most
//! one line per call site every [`INTERVAL_MS`]; the next line that gets through says how many
//! were held back (`... (and 57 more like this in the last 10s)`). When a storm ends, a sweeper
//! thread prints the count that no later line would carry, so an operator always learns how
//! often it happened.
//!
//! The decisions ([`RateLimit::check`], [`RateLimit::sweep`]) take the time as an argument, so
//! they are tested with an injected clock; only [`RateLimit::emit`] and the sweeper read it.

use super::Level;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

/// One line per call site per interval.
pub const INTERVAL_MS: u64 = 10_000;

/// One call site's state. Lives in a `static` that the `limited!` macro declares at the call
/// site, shared by every thread that reaches it.
pub struct RateLimit {
    /// When the last line got through, in [`now_ms`] + 1 (0: never).
    shown_at: AtomicU64,
    /// Lines held back since then.
    suppressed: AtomicU64,
    /// The last line shown, repeated in the sweeper's summary.
    last: Mutex<Option<(Level, String)>>,
    /// On the sweeper's watch list.
    watched: AtomicBool,
}

/// What to do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Print it; `suppressed` lines were held back over the last `since_ms`.
    Show { suppressed: u64, since_ms: u64 },
    /// Hold it back; `first` when it is the first held back since the last line shown.
    Suppress { first: bool },
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    pub const fn new() -> RateLimit {
        RateLimit {
            shown_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            last: Mutex::new(None),
            watched: AtomicBool::new(false),
        }
    }

    /// Decides about one occurrence at `now` (milliseconds on any monotonic clock).
    pub fn check(&self, now: u64) -> Verdict {
        let t = now + 1;
        let shown = self.shown_at.load(Ordering::Acquire);
        let open = shown == 0 || t >= shown + INTERVAL_MS;
        if open
            && self
                .shown_at
                .compare_exchange(shown, t, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::AcqRel);
            let since_ms = if shown == 0 { 0 } else { t - shown };
            return Verdict::Show {
                suppressed,
                since_ms,
            };
        }
        let before = self.suppressed.fetch_add(1, Ordering::AcqRel);
        Verdict::Suppress { first: before == 0 }
    }

    /// When the lines held back may be reported: the end of the current interval.
    pub fn due_at(&self) -> u64 {
        (self.shown_at.load(Ordering::Acquire) + INTERVAL_MS).saturating_sub(1)
    }

    /// For the sweeper at `now`: once the interval is over, the count of lines held back and
    /// the time they span; the interval restarts, as if a line had been shown.
    pub fn sweep(&self, now: u64) -> Option<(u64, u64)> {
        let t = now + 1;
        let shown = self.shown_at.load(Ordering::Acquire);
        if shown == 0 || t < shown + INTERVAL_MS || self.suppressed.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.shown_at
            .compare_exchange(shown, t, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let n = self.suppressed.swap(0, Ordering::AcqRel);
        (n > 0).then_some((n, t - shown))
    }

    /// Logs one occurrence if it gets through (the `limited!` macro checks the level first).
    pub fn emit(&'static self, level: Level, args: std::fmt::Arguments<'_>) {
        match self.check(now_ms()) {
            Verdict::Show {
                suppressed,
                since_ms,
            } => {
                let msg = args.to_string();
                let line = if suppressed > 0 {
                    format!(
                        "{msg} (and {suppressed} more like this in the last {})",
                        span(since_ms)
                    )
                } else {
                    msg.clone()
                };
                super::emit_str(level, &line);
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((level, msg));
            }
            Verdict::Suppress { first: true } => watch(self),
            Verdict::Suppress { first: false } => {}
        }
    }

    /// The sweeper's line for `n` occurrences nobody reported.
    fn summarize(&self, n: u64, since_ms: u64) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((level, msg)) = last {
            super::emit_str(
                level,
                &format!("{n} more like this in the last {}: {msg}", span(since_ms)),
            );
        }
    }
}

/// `10s`, `5m`, `3h`: how long a count of held-back lines spans, in the unit that reads best.
pub fn span(ms: u64) -> String {
    let s = (ms + 500) / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", (s + 30) / 60),
        _ => format!("{}h", (s + 1800) / 3600),
    }
}

/// Milliseconds on the process's monotonic clock (from the first call).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Call sites holding back lines, for the sweeper.
static WATCHED: Mutex<Vec<&'static RateLimit>> = Mutex::new(Vec::new());
static WAKE: Condvar = Condvar::new();

/// Puts a call site on the sweeper's list (starting the sweeper the first time). Reached once per
/// interval per call site at most, so its lock and wake-up cost nothing in a storm.
fn watch(limit: &'static RateLimit) {
    if limit.watched.swap(true, Ordering::AcqRel) {
        return;
    }
    static SWEEPER: OnceLock<()> = OnceLock::new();
    SWEEPER.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("holdfast-logsweep".into())
            .spawn(|| {
                super::block_signals();
                sweeper()
            });
    });
    WATCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(limit);
    WAKE.notify_one();
}

/// Sleeps until the earliest watched interval ends, then prints the counts that are due. Idle
/// (blocked, no wake-ups) while nothing is held back.
fn sweeper() {
    let mut list = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = now_ms();
        let Some(next) = list.iter().map(|l| l.due_at()).min() else {
            list = WAKE.wait(list).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        if next > now {
            let wait = std::time::Duration::from_millis(next - now);
            list = WAKE
                .wait_timeout(list, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        let mut due = Vec::new();
        list.retain(|l| {
            let keep = l.due_at() > now;
            if !keep {
                due.push(*l);
            }
            keep
        });
        drop(list);
        for l in due {
            // Off the list first: a line held back after the sweep below puts it back.
            l.watched.store(false, Ordering::Release);
            if let Some((n, since)) = l.sweep(now) {
                l.summarize(n, since);
            }
        }
        list = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_one_carries_the_count() {
        let l = RateLimit::new();
        assert_eq!(
            l.check(5_000),
            Verdict::Show {
                suppressed: 0,
                since_ms: 0
            }
        );
        assert_eq!(l.check(5_001), Verdict::Suppress { first: true });
        for t in 5_002..5_058 {
            assert_eq!(l.check(t), Verdict::Suppress { first: false });
        }
        assert_eq!(l.check(14_999), Verdict::Suppress { first: false });
        assert_eq!(
            l.check(15_000),
            Verdict::Show {
                suppressed: 58,
                since_ms: 10_000
            }
        );
        // A quiet stretch, then one more: it shows, with nothing held back.
        assert_eq!(
            l.check(90_000),
            Verdict::Show {
                suppressed: 0,
                since_ms: 75_000
            }
        );
    }

    #[test]
    fn the_clock_may_start_at_zero() {
        let l = RateLimit::new();
        assert!(matches!(l.check(0), Verdict::Show { .. }));
        assert_eq!(l.check(0), Verdict::Suppress { first: true });
        assert!(matches!(l.check(9_999), Verdict::Suppress { .. }));
        assert_eq!(
            l.check(10_000),
            Verdict::Show {
                suppressed: 2,
                since_ms: 10_000
            }
        );
    }

    #[test]
    fn the_sweeper_reports_what_no_later_line_carried() {
        let l = RateLimit::new();
        assert_eq!(l.sweep(0), None, "nothing shown yet");
        l.check(1_000);
        assert_eq!(l.sweep(20_000), None, "nothing held back");
        l.check(20_000);
        l.check(20_001);
        l.check(20_002);
        assert_eq!(l.due_at(), 30_000);
        assert_eq!(l.sweep(29_999), None, "the interval is not over");
        assert_eq!(l.sweep(30_000), Some((2, 10_000)));
        assert_eq!(l.sweep(40_000), None, "reported once");
        // The sweep restarted the interval: the next occurrence is held back, not shown twice.
        assert_eq!(l.check(30_001), Verdict::Suppress { first: true });
        assert_eq!(
            l.check(40_000),
            Verdict::Show {
                suppressed: 1,
                since_ms: 10_000
            }
        );
    }

    #[test]
    fn threads_racing_on_one_call_site_lose_no_count() {
        let l = std::sync::Arc::new(RateLimit::new());
        let shown = std::sync::Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (l, shown) = (l.clone(), shown.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Verdict::Show { suppressed, .. } = l.check(100) {
                            shown.fetch_add(1 + suppressed, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let Verdict::Show { suppressed, .. } = l.check(10_100) else {
            panic!("the interval is over")
        };
        assert_eq!(shown.load(Ordering::Relaxed) + suppressed, 40_000);
    }

    #[test]
    fn spans_read_in_a_sensible_unit() {
        assert_eq!(span(10_000), "10s");
        assert_eq!(span(119_000), "119s");
        assert_eq!(span(600_000), "10m");
        assert_eq!(span(3 * 3_600_000), "3h");
    }
}
