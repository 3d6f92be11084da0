//! Owns what wsload measures and how it reports it: counters, HDR histograms of connect time
//! and round-trip latency, a progress line once a second (rewritten in place on a terminal,
//! one line each otherwise), and the final summary as text or JSON.

use hdrhistogram::Histogram;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Stats {
    pub connected: u64,
    pub failed: u64,
    /// Connections lost after they were established.
    pub lost: u64,
    /// Round trips completed inside the measurement window.
    pub messages: u64,
    pub connect_us: Histogram<u64>,
    pub rtt_us: Histogram<u64>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            connected: 0,
            failed: 0,
            lost: 0,
            messages: 0,
            connect_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            rtt_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }
}

pub struct Progress {
    start: Instant,
    last: Instant,
    last_messages: u64,
    tty: bool,
}

impl Progress {
    pub fn new() -> Progress {
        let now = Instant::now();
        Progress {
            start: now,
            last: now,
            last_messages: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Prints a line if a second has passed since the last one.
    pub fn tick(&mut self, stats: &Stats, target: usize, measuring: bool) {
        let now = Instant::now();
        let dt = now - self.last;
        if dt < Duration::from_secs(1) {
            return;
        }
        let rate = (stats.messages - self.last_messages) as f64 / dt.as_secs_f64();
        let line = format!(
            "[{:>4.0}s] connected {}/{} failed {} lost {} | {} msgs {:.0}/s{}",
            (now - self.start).as_secs_f64(),
            stats.connected,
            target,
            stats.failed,
            stats.lost,
            stats.messages,
            rate,
            if measuring { "" } else { " (warming up)" }
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{line:<100}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last = now;
        self.last_messages = stats.messages;
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
        "count": h.len(),
    })
}

/// The summary as one JSON object (for scripts).
pub fn json(stats: &Stats, target: usize, size: usize, measured: Duration) -> String {
    let secs = measured.as_secs_f64();
    serde_json::json!({
        "mode": "echo",
        "connections": target,
        "connected": stats.connected,
        "failed": stats.failed,
        "lost": stats.lost,
        "message_bytes": size,
        "seconds": secs,
        "messages": stats.messages,
        "messages_per_sec": if secs > 0.0 { stats.messages as f64 / secs } else { 0.0 },
        "rtt_us": percentiles(&stats.rtt_us),
        "connect_us": percentiles(&stats.connect_us),
    })
    .to_string()
}

pub fn text(stats: &Stats, target: usize, size: usize, measured: Duration) -> String {
    let secs = measured.as_secs_f64();
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    format!(
        "connections {}/{} (failed {}, lost {})\nmessages {} of {} bytes in {:.1}s: {:.0} msgs/s\nround trip µs: p50 {} p90 {} p99 {} p99.9 {} max {}\nconnect µs:    p50 {} p99 {} max {}",
        stats.connected,
        target,
        stats.failed,
        stats.lost,
        stats.messages,
        size,
        secs,
        if secs > 0.0 {
            stats.messages as f64 / secs
        } else {
            0.0
        },
        p(&stats.rtt_us, 0.5),
        p(&stats.rtt_us, 0.9),
        p(&stats.rtt_us, 0.99),
        p(&stats.rtt_us, 0.999),
        stats.rtt_us.max(),
        p(&stats.connect_us, 0.5),
        p(&stats.connect_us, 0.99),
        stats.connect_us.max(),
    )
}
