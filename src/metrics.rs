//! Owns the server's counters: one block per worker, written only by that worker (so an
//! increment is a plain load and store, not a locked instruction), summed when `/metrics` is
//! scraped, and rendered in the Prometheus text exposition format.

use crate::proto::CloseReason;
use crate::proto::tls::TlsFailure;
use crate::proto::ws::conn::COUNTED_CODES;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A counter with a single writer: the owning worker thread.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        // Single writer: load + store is exact and cheaper than fetch_add.
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Kinds of timeout, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Idle,
    Request,
    MaxAge,
    Lingering,
    Shutdown,
}

impl TimeoutKind {
    pub const ALL: [TimeoutKind; 5] = [
        TimeoutKind::Idle,
        TimeoutKind::Request,
        TimeoutKind::MaxAge,
        TimeoutKind::Lingering,
        TimeoutKind::Shutdown,
    ];
    pub fn label(self) -> &'static str {
        match self {
            TimeoutKind::Idle => "idle",
            TimeoutKind::Request => "request",
            TimeoutKind::MaxAge => "max_age",
            TimeoutKind::Lingering => "lingering",
            TimeoutKind::Shutdown => "shutdown",
        }
    }
}

/// One worker's counters. Padded to its own cache lines so workers do not false-share.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub closed: [Counter; CloseReason::ALL.len()],
    pub requests: Counter,
    pub responses_4xx: Counter,
    pub responses_5xx: Counter,
    pub timeouts: [Counter; TimeoutKind::ALL.len()],
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub recv_rearms: Counter,
    /// Protocol calls that panicked (a bug); each closed its connection.
    pub protocol_panics: Counter,
    pub ws_upgrades: Counter,
    pub ws_closed: Counter,
    pub ws_messages_in: Counter,
    pub ws_messages_out: Counter,
    pub ws_pings_sent: Counter,
    pub ws_pongs_received: Counter,
    pub ws_heartbeat_timeouts: Counter,
    pub ws_slow_reader_closes: Counter,
    pub tls_handshakes_full: Counter,
    pub tls_handshakes_resumed: Counter,
    pub tls_failures: [Counter; TlsFailure::ALL.len()],
    /// KeyUpdates this server started (on `tls.key_update_bytes` or `tls.key_update_interval`).
    pub tls_key_updates_sent: Counter,
    /// KeyUpdates received from peers, including their answers to ours.
    pub tls_key_updates_received: Counter,
    /// Close frames sent or received, by code: `COUNTED_CODES`, then 1005 (no code), then other.
    pub ws_closes: [Counter; WS_CODE_SLOTS],
}

const WS_CODE_SLOTS: usize = COUNTED_CODES.len() + 2;

impl WorkerMetrics {
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason.index()].inc();
    }
    pub fn timeout(&self, kind: TimeoutKind) {
        self.timeouts[kind as usize].inc();
    }
    pub fn tls_failure(&self, why: TlsFailure) {
        self.tls_failures[why as usize].inc();
    }

    pub fn ws_close_code(&self, code: u16) {
        let slot = COUNTED_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(if code == 1005 {
                COUNTED_CODES.len()
            } else {
                COUNTED_CODES.len() + 1
            });
        self.ws_closes[slot].inc();
    }

    pub fn response(&self, status: u16) {
        match status {
            400..=499 => self.responses_4xx.inc(),
            500..=599 => self.responses_5xx.inc(),
            _ => {}
        }
    }
}

/// A counter's exposition name, help text, and how to read it from one worker.
type CounterDef = (&'static str, &'static str, fn(&WorkerMetrics) -> u64);

/// All workers' counters plus the one shared gauge: open connections, which enforces
/// `server.max_connections` across workers.
pub struct Metrics {
    pub workers: Vec<WorkerMetrics>,
    pub open: AtomicUsize,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerMetrics::default()).collect(),
            open: AtomicUsize::new(0),
        }
    }

    /// Reserves a connection slot; false when `max` are already open.
    pub fn try_open(&self, max: usize) -> bool {
        let prev = self.open.fetch_add(1, Ordering::Relaxed);
        if prev >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn sum(&self, f: impl Fn(&WorkerMetrics) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let counters: [CounterDef; 18] = [
            (
                "holdfast_connections_accepted_total",
                "Connections accepted.",
                |w| w.accepted.get(),
            ),
            ("holdfast_requests_total", "HTTP requests parsed.", |w| {
                w.requests.get()
            }),
            (
                "holdfast_responses_4xx_total",
                "Responses with a 4xx status.",
                |w| w.responses_4xx.get(),
            ),
            (
                "holdfast_responses_5xx_total",
                "Responses with a 5xx status.",
                |w| w.responses_5xx.get(),
            ),
            ("holdfast_bytes_in_total", "Bytes received.", |w| {
                w.bytes_in.get()
            }),
            ("holdfast_bytes_out_total", "Bytes sent.", |w| {
                w.bytes_out.get()
            }),
            (
                "holdfast_recv_rearms_total",
                "Multishot receives re-armed because the buffer ring ran dry.",
                |w| w.recv_rearms.get(),
            ),
            (
                "holdfast_protocol_panics_total",
                "Protocol calls that panicked (a bug: please report); each closed its connection.",
                |w| w.protocol_panics.get(),
            ),
            (
                "holdfast_ws_upgrades_total",
                "WebSocket upgrades (101 sent).",
                |w| w.ws_upgrades.get(),
            ),
            (
                "holdfast_ws_messages_in_total",
                "WebSocket messages received.",
                |w| w.ws_messages_in.get(),
            ),
            (
                "holdfast_ws_messages_out_total",
                "WebSocket messages sent.",
                |w| w.ws_messages_out.get(),
            ),
            (
                "holdfast_ws_pings_sent_total",
                "WebSocket heartbeat pings sent.",
                |w| w.ws_pings_sent.get(),
            ),
            (
                "holdfast_ws_pongs_received_total",
                "WebSocket pongs received.",
                |w| w.ws_pongs_received.get(),
            ),
            (
                "holdfast_ws_heartbeat_timeouts_total",
                "WebSocket connections closed for not answering a ping in time.",
                |w| w.ws_heartbeat_timeouts.get(),
            ),
            (
                "holdfast_ws_slow_reader_closes_total",
                "WebSocket connections closed (1008) for not reading their output.",
                |w| w.ws_slow_reader_closes.get(),
            ),
            (
                "holdfast_ws_closed_total",
                "WebSocket connections ended.",
                |w| w.ws_closed.get(),
            ),
            (
                "holdfast_tls_key_updates_sent_total",
                "TLS 1.3 KeyUpdates sent on the server's initiative.",
                |w| w.tls_key_updates_sent.get(),
            ),
            (
                "holdfast_tls_key_updates_received_total",
                "TLS 1.3 KeyUpdates received (peer-initiated and answers to ours).",
                |w| w.tls_key_updates_received.get(),
            ),
        ];
        for (name, help, get) in counters {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                self.sum(get)
            );
        }
        let _ = writeln!(
            s,
            "# HELP holdfast_connections_open Connections open now.\n# TYPE holdfast_connections_open gauge\nholdfast_connections_open {}",
            self.open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP holdfast_connections_closed_total Connections closed, by reason.\n# TYPE holdfast_connections_closed_total counter"
        );
        for r in CloseReason::ALL {
            let v = self.sum(|w| w.closed[r.index()].get());
            let _ = writeln!(
                s,
                "holdfast_connections_closed_total{{reason=\"{}\"}} {v}",
                r.label()
            );
        }
        let _ = writeln!(
            s,
            "# HELP holdfast_timeouts_total Timeouts, by kind.\n# TYPE holdfast_timeouts_total counter"
        );
        for k in TimeoutKind::ALL {
            let v = self.sum(|w| w.timeouts[k as usize].get());
            let _ = writeln!(s, "holdfast_timeouts_total{{kind=\"{}\"}} {v}", k.label());
        }
        let ws_open = self
            .sum(|w| w.ws_upgrades.get())
            .saturating_sub(self.sum(|w| w.ws_closed.get()));
        let _ = writeln!(
            s,
            "# HELP holdfast_ws_connections_open WebSocket connections open now.\n# TYPE holdfast_ws_connections_open gauge\nholdfast_ws_connections_open {ws_open}"
        );
        let _ = writeln!(
            s,
            "# HELP holdfast_ws_closes_total WebSocket close frames sent or received, by code.\n# TYPE holdfast_ws_closes_total counter"
        );
        let labels = COUNTED_CODES
            .iter()
            .map(|c| c.to_string())
            .chain(["1005".to_string(), "other".to_string()]);
        for (i, label) in labels.enumerate() {
            let v = self.sum(|w| w.ws_closes[i].get());
            let _ = writeln!(s, "holdfast_ws_closes_total{{code=\"{label}\"}} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP holdfast_tls_handshakes_total TLS handshakes completed, full or resumed.\n# TYPE holdfast_tls_handshakes_total counter\nholdfast_tls_handshakes_total{{kind=\"full\"}} {}\nholdfast_tls_handshakes_total{{kind=\"resumed\"}} {}",
            self.sum(|w| w.tls_handshakes_full.get()),
            self.sum(|w| w.tls_handshakes_resumed.get())
        );
        let _ = writeln!(
            s,
            "# HELP holdfast_tls_failures_total TLS connections that failed, by reason.\n# TYPE holdfast_tls_failures_total counter"
        );
        for f in TlsFailure::ALL {
            let v = self.sum(|w| w.tls_failures[f as usize].get());
            let _ = writeln!(
                s,
                "holdfast_tls_failures_total{{reason=\"{}\"}} {v}",
                f.label()
            );
        }
        let _ = writeln!(
            s,
            "# HELP holdfast_workers Worker threads.\n# TYPE holdfast_workers gauge\nholdfast_workers {}",
            self.workers.len()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_workers_and_renders_labels() {
        let m = Metrics::new(2);
        m.workers[0].requests.add(3);
        m.workers[1].requests.inc();
        m.workers[1].closed(CloseReason::IdleTimeout);
        m.workers[0].timeout(TimeoutKind::Request);
        let text = m.render();
        assert!(text.contains("holdfast_requests_total 4\n"));
        assert!(text.contains("holdfast_connections_closed_total{reason=\"idle_timeout\"} 1\n"));
        assert!(text.contains("holdfast_timeouts_total{kind=\"request\"} 1\n"));
    }

    #[test]
    fn open_gauge_enforces_the_limit() {
        let m = Metrics::new(1);
        assert!(m.try_open(2));
        assert!(m.try_open(2));
        assert!(!m.try_open(2));
        m.release();
        assert!(m.try_open(2));
    }
}
