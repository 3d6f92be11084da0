//! Owns the server's counters: one block per worker, written only by that worker (so an
//! increment is a plain load and store, not a locked instruction), summed when `/metrics` is
//! scraped, and rendered in the Prometheus text exposition format, together with the standard
//! `process_*` metrics that `process` reads from /proc.

mod process;

use crate::outcome::{COUNTED_CODES, CloseReason, H2_ERROR_LABELS, TlsFailure};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// One worker's counters. Padded to its own cache lines so workers do not false-share. Every
/// field must stay an atomic (or an array of them): under a supervisor this block lives in memory
/// shared between processes, where all-zero bytes must be a valid, empty block.
#[repr(align(128))]
#[derive(Default)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub closed: [Counter; CloseReason::ALL.len()],
    pub requests: Counter,
    /// Final responses by status class, `1xx` (101 upgrades) to `5xx`; see `response`.
    pub responses: [Counter; STATUS_CLASSES.len()],
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
    /// New connections over a per-address limit: `server.max_connections_per_ip`, then
    /// `server.connection_rate_per_ip`.
    pub per_ip_refusals: [Counter; 2],
    pub tls_handshakes_full: Counter,
    pub tls_handshakes_resumed: Counter,
    pub tls_failures: [Counter; TlsFailure::ALL.len()],
    /// KeyUpdates this server started (on `tls.key_update_bytes` or `tls.key_update_interval`).
    pub tls_key_updates_sent: Counter,
    /// KeyUpdates received from peers, including their answers to ours.
    pub tls_key_updates_received: Counter,
    /// Close frames sent or received, by code: `COUNTED_CODES`, then 1005 (no code), then other.
    pub ws_closes: [Counter; WS_CODE_SLOTS],
    /// Heartbeat round trips (ping sent to pong received), by bucket of `PING_RTT_BOUNDS_MS`,
    /// the last bucket for anything slower.
    pub ws_ping_rtt_buckets: [Counter; PING_RTT_BOUNDS_MS.len() + 1],
    pub ws_ping_rtt_sum_ms: Counter,
    /// Access log lines dropped because the writer thread fell behind.
    pub access_log_dropped: Counter,
    /// Connections that spoke HTTP/2 (by ALPN or prior knowledge).
    pub h2_connections: Counter,
    /// HTTP/2 error frames sent, by code: GOAWAY (a connection error; NO_ERROR is a graceful
    /// close, not counted), then RST_STREAM (a stream error).
    pub h2_goaways: [Counter; H2_ERROR_LABELS.len()],
    pub h2_resets: [Counter; H2_ERROR_LABELS.len()],
}

/// Upper bounds (ms) of the heartbeat round-trip histogram's buckets. The engine clock counts
/// whole milliseconds, so the first bucket holds every round trip under a millisecond.
pub const PING_RTT_BOUNDS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000,
];

const WS_CODE_SLOTS: usize = COUNTED_CODES.len() + 2;

/// The `code` label values of `holdfast_responses_total`, one per status class.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl WorkerMetrics {
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason.index()].inc();
    }
    pub fn timeout(&self, kind: TimeoutKind) {
        self.timeouts[kind as usize].inc();
    }
    /// Records one heartbeat round trip.
    pub fn ws_ping_rtt(&self, ms: u64) {
        let bucket = PING_RTT_BOUNDS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(PING_RTT_BOUNDS_MS.len());
        self.ws_ping_rtt_buckets[bucket].inc();
        self.ws_ping_rtt_sum_ms.add(ms);
    }

    /// An HTTP/2 error frame sent: `code` as RFC 9113 numbers it.
    pub fn h2_error(&self, stream: bool, code: u32) {
        let counters = if stream {
            &self.h2_resets
        } else {
            &self.h2_goaways
        };
        if let Some(c) = counters.get(code as usize) {
            c.inc();
        }
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

    /// Counts one final response by its class. `100 Continue` is not one (it is an interim
    /// response: the final one follows and is counted), so the HTTP layer does not report it;
    /// `101 Switching Protocols` ends the HTTP exchange and is. A status outside 100–599 cannot
    /// be sent and is not counted.
    pub fn response(&self, status: u16) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses.get(usize::from(i)))
        {
            c.inc();
        }
    }
}

/// A counter's exposition name, help text, and how to read it from one worker.
type CounterDef = (&'static str, &'static str, fn(&WorkerMetrics) -> u64);

/// One process's shared header: the open-connection gauge that enforces
/// `server.max_connections` across its workers, and what the supervisor knows of it. All atomics,
/// like `WorkerMetrics`, because under a supervisor it lives in memory shared between processes
/// (all-zero bytes are a valid, empty header).
#[repr(C, align(128))]
#[derive(Default)]
pub struct ProcessHeader {
    pub open: AtomicU64,
    pub pid: AtomicU64,
    /// Written by the supervisor: how often this process slot was restarted.
    pub restarts: AtomicU64,
}

/// One process's counters: its header and one block per worker.
#[derive(Clone, Copy)]
pub struct ProcessBlock {
    pub header: &'static ProcessHeader,
    pub workers: &'static [WorkerMetrics],
}

/// The counters this process writes, and every sibling's when a supervisor runs several
/// processes, so that `/metrics` from any of them reports each one (label `process`).
pub struct Metrics {
    /// This process's workers, indexed by worker.
    pub workers: &'static [WorkerMetrics],
    header: &'static ProcessHeader,
    processes: Vec<ProcessBlock>,
    /// Label series with `process="i"`: set when a supervisor runs several processes.
    per_process: bool,
}

impl Metrics {
    /// A lone process's counters. They live as long as the process, so the allocation is leaked
    /// once at start-up.
    pub fn new(workers: usize) -> Metrics {
        let block = ProcessBlock {
            header: Box::leak(Box::default()),
            workers: Box::leak((0..workers).map(|_| WorkerMetrics::default()).collect()),
        };
        block
            .header
            .pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        Metrics {
            workers: block.workers,
            header: block.header,
            processes: vec![block],
            per_process: false,
        }
    }

    /// The counters of process `me` among `processes`, all in memory shared by a supervisor.
    pub fn shared(processes: Vec<ProcessBlock>, me: usize) -> Metrics {
        let own = processes[me];
        own.header
            .pid
            .store(std::process::id() as u64, Ordering::Relaxed);
        Metrics {
            workers: own.workers,
            header: own.header,
            processes,
            per_process: true,
        }
    }

    /// Reserves a connection slot; false when `max` are already open in this process.
    pub fn try_open(&self, max: usize) -> bool {
        let prev = self.header.open.fetch_add(1, Ordering::Relaxed);
        if prev >= max as u64 {
            self.header.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn release(&self) {
        self.header.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Writes one series per process: `name{process="i",extra} value`, or `name{extra} value`
    /// for a lone process.
    fn series(&self, s: &mut String, name: &str, extra: &str, get: impl Fn(&ProcessBlock) -> u64) {
        self.series_text(s, name, extra, |p| get(p).to_string());
    }

    /// `series` for a value that is not a whole number.
    fn series_text(
        &self,
        s: &mut String,
        name: &str,
        extra: &str,
        get: impl Fn(&ProcessBlock) -> String,
    ) {
        for (i, p) in self.processes.iter().enumerate() {
            let v = get(p);
            let _ = writeln!(s, "{name}{} {v}", self.labels(i, extra));
        }
    }

    /// The label set of process `i`'s series: `process="i"` under a supervisor, then `extra`.
    fn labels(&self, i: usize, extra: &str) -> String {
        match (self.per_process, extra.is_empty()) {
            (false, true) => String::new(),
            (false, false) => format!("{{{extra}}}"),
            (true, true) => format!("{{process=\"{i}\"}}"),
            (true, false) => format!("{{process=\"{i}\",{extra}}}"),
        }
    }

    /// The standard `process_*` families of every process, read now (see `process`).
    fn process_families(&self, s: &mut String) {
        let pids = self
            .processes
            .iter()
            .map(|p| p.header.pid.load(Ordering::Relaxed));
        let stats = process::read_each(pids);
        for f in process::FAMILIES {
            Self::family(s, f.name, f.kind, f.help);
            for (i, st) in stats.iter().enumerate() {
                if let Some(v) = st.as_ref().and_then(f.value) {
                    let _ = writeln!(s, "{}{} {v}", f.name, self.labels(i, ""));
                }
            }
        }
    }

    /// Like `series`, for a counter summed over a process's workers.
    fn counter(
        &self,
        s: &mut String,
        name: &str,
        extra: &str,
        get: impl Fn(&WorkerMetrics) -> u64,
    ) {
        self.series(s, name, extra, |p| p.workers.iter().map(&get).sum());
    }

    fn family(s: &mut String, name: &str, kind: &str, help: &str) {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048 * self.processes.len());
        for (name, help, get) in COUNTERS {
            Self::family(&mut s, name, "counter", help);
            self.counter(&mut s, name, "", get);
        }
        let name = "holdfast_connections_open";
        Self::family(&mut s, name, "gauge", "Connections open now.");
        self.series(&mut s, name, "", |p| p.header.open.load(Ordering::Relaxed));
        let name = "holdfast_connections_closed_total";
        Self::family(&mut s, name, "counter", "Connections closed, by reason.");
        for r in CloseReason::ALL {
            let extra = format!("reason=\"{}\"", r.label());
            self.counter(&mut s, name, &extra, |w| w.closed[r.index()].get());
        }
        let name = "holdfast_responses_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "HTTP final responses, by status class (101 upgrades are 1xx; 100 Continue is not counted).",
        );
        for (i, class) in STATUS_CLASSES.iter().enumerate() {
            let extra = format!("code=\"{class}\"");
            self.counter(&mut s, name, &extra, |w| w.responses[i].get());
        }
        let name = "holdfast_timeouts_total";
        Self::family(&mut s, name, "counter", "Timeouts, by kind.");
        for k in TimeoutKind::ALL {
            let extra = format!("kind=\"{}\"", k.label());
            self.counter(&mut s, name, &extra, |w| w.timeouts[k as usize].get());
        }
        let name = "holdfast_ws_connections_open";
        Self::family(&mut s, name, "gauge", "WebSocket connections open now.");
        self.counter(&mut s, name, "", |w| {
            w.ws_upgrades.get().saturating_sub(w.ws_closed.get())
        });
        let name = "holdfast_ws_closes_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "WebSocket close frames sent or received, by code.",
        );
        let labels = COUNTED_CODES
            .iter()
            .map(|c| c.to_string())
            .chain(["1005".to_string(), "other".to_string()]);
        for (i, label) in labels.enumerate() {
            let extra = format!("code=\"{label}\"");
            self.counter(&mut s, name, &extra, |w| w.ws_closes[i].get());
        }
        let name = "holdfast_ws_ping_rtt_seconds";
        Self::family(
            &mut s,
            name,
            "histogram",
            "WebSocket heartbeat round trips, server ping to pong (millisecond clock).",
        );
        let bucket = format!("{name}_bucket");
        for (i, bound) in PING_RTT_BOUNDS_MS
            .iter()
            .map(Some)
            .chain([None])
            .enumerate()
        {
            let le = bound.map_or("+Inf".to_string(), |b| format!("{}", *b as f64 / 1000.0));
            self.counter(&mut s, &bucket, &format!("le=\"{le}\""), |w| {
                w.ws_ping_rtt_buckets[..=i].iter().map(Counter::get).sum()
            });
        }
        self.counter(&mut s, &format!("{name}_count"), "", |w| {
            w.ws_ping_rtt_buckets.iter().map(Counter::get).sum()
        });
        // The sum in seconds, as Prometheus expects, from whole milliseconds.
        self.series_text(&mut s, &format!("{name}_sum"), "", |p| {
            let ms: u64 = p.workers.iter().map(|w| w.ws_ping_rtt_sum_ms.get()).sum();
            format!("{}.{:03}", ms / 1000, ms % 1000)
        });
        let name = "holdfast_tls_handshakes_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "TLS handshakes completed, full or resumed.",
        );
        self.counter(&mut s, name, "kind=\"full\"", |w| {
            w.tls_handshakes_full.get()
        });
        self.counter(&mut s, name, "kind=\"resumed\"", |w| {
            w.tls_handshakes_resumed.get()
        });
        let name = "holdfast_per_ip_refusals_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "New connections over a per-address limit (answered 429, closed with 1013, or closed \
             before TLS), by limit.",
        );
        for (i, limit) in ["connections", "rate"].into_iter().enumerate() {
            let extra = format!("limit=\"{limit}\"");
            self.counter(&mut s, name, &extra, |w| w.per_ip_refusals[i].get());
        }
        let name = "holdfast_http2_connections_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "Connections that spoke HTTP/2 (ALPN h2, or h2c with prior knowledge).",
        );
        self.counter(&mut s, name, "", |w| w.h2_connections.get());
        let name = "holdfast_http2_errors_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "HTTP/2 errors the server answered, by scope (connection: GOAWAY; stream: \
             RST_STREAM) and RFC 9113 error code.",
        );
        for (scope, stream) in [("connection", false), ("stream", true)] {
            for (i, code) in H2_ERROR_LABELS.iter().enumerate() {
                if !stream && i == 0 {
                    continue; // a graceful GOAWAY is no error
                }
                let extra = format!("scope=\"{scope}\",code=\"{code}\"");
                self.counter(&mut s, name, &extra, |w| {
                    if stream {
                        w.h2_resets[i].get()
                    } else {
                        w.h2_goaways[i].get()
                    }
                });
            }
        }
        let name = "holdfast_tls_failures_total";
        Self::family(
            &mut s,
            name,
            "counter",
            "TLS connections that failed, by reason.",
        );
        for f in TlsFailure::ALL {
            let extra = format!("reason=\"{}\"", f.label());
            self.counter(&mut s, name, &extra, |w| w.tls_failures[f as usize].get());
        }
        let name = "holdfast_build_info";
        Self::family(
            &mut s,
            name,
            "gauge",
            "Always 1: the labels name the build of the process that answered this scrape.",
        );
        let _ = writeln!(s, "{name}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        let name = "holdfast_workers";
        Self::family(&mut s, name, "gauge", "Worker threads.");
        self.series(&mut s, name, "", |p| p.workers.len() as u64);
        self.process_families(&mut s);
        if self.per_process {
            let name = "holdfast_process_pid";
            Self::family(
                &mut s,
                name,
                "gauge",
                "The process id serving each process slot.",
            );
            self.series(&mut s, name, "", |p| p.header.pid.load(Ordering::Relaxed));
            let name = "holdfast_process_restarts_total";
            Self::family(
                &mut s,
                name,
                "counter",
                "Times the supervisor restarted a process slot.",
            );
            self.series(&mut s, name, "", |p| {
                p.header.restarts.load(Ordering::Relaxed)
            });
        }
        s
    }
}

/// The plain counters: exposition name, help text, and how to read one worker's value.
const COUNTERS: [CounterDef; 17] = [
    (
        "holdfast_connections_accepted_total",
        "Connections accepted.",
        |w| w.accepted.get(),
    ),
    ("holdfast_requests_total", "HTTP requests parsed.", |w| {
        w.requests.get()
    }),
    (
        "holdfast_received_bytes_total",
        "Bytes received from clients (as read from the sockets: TLS records when encrypted).",
        |w| w.bytes_in.get(),
    ),
    (
        "holdfast_sent_bytes_total",
        "Bytes sent to clients (as written to the sockets: TLS records when encrypted).",
        |w| w.bytes_out.get(),
    ),
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
    (
        "holdfast_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind (its queue was full).",
        |w| w.access_log_dropped.get(),
    ),
];

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
    fn under_a_supervisor_every_series_carries_its_process() {
        let blocks: Vec<ProcessBlock> = (0..2)
            .map(|_| ProcessBlock {
                header: Box::leak(Box::default()),
                workers: Box::leak(vec![WorkerMetrics::default()].into_boxed_slice()),
            })
            .collect();
        blocks[0].workers[0].requests.add(2);
        blocks[1].workers[0].closed(CloseReason::IdleTimeout);
        let m = Metrics::shared(blocks, 1);
        assert!(m.try_open(1));
        let text = m.render();
        assert!(
            text.contains("holdfast_requests_total{process=\"0\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("holdfast_requests_total{process=\"1\"} 0\n"));
        assert!(text.contains(
            "holdfast_connections_closed_total{process=\"1\",reason=\"idle_timeout\"} 1\n"
        ));
        assert!(text.contains("holdfast_connections_open{process=\"1\"} 1\n"));
        let pid = std::process::id();
        assert!(text.contains(&format!("holdfast_process_pid{{process=\"1\"}} {pid}\n")));
        assert!(text.contains("holdfast_process_pid{process=\"0\"} 0\n"));
        assert_eq!(
            text.matches("# TYPE holdfast_requests_total counter")
                .count(),
            1
        );
    }

    #[test]
    fn responses_are_counted_by_status_class() {
        let m = Metrics::new(1);
        for status in [101, 200, 204, 301, 404, 408, 503, 0, 99, 600, u16::MAX] {
            m.workers[0].response(status);
        }
        let text = m.render();
        for (class, n) in [("1xx", 1), ("2xx", 2), ("3xx", 1), ("4xx", 2), ("5xx", 1)] {
            let line = format!("holdfast_responses_total{{code=\"{class}\"}} {n}\n");
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn ping_round_trips_render_as_a_cumulative_histogram() {
        let m = Metrics::new(1);
        for ms in [0, 0, 3, 150, 40_000] {
            m.workers[0].ws_ping_rtt(ms);
        }
        let text = m.render();
        for line in [
            "holdfast_ws_ping_rtt_seconds_bucket{le=\"0.001\"} 2\n",
            "holdfast_ws_ping_rtt_seconds_bucket{le=\"0.005\"} 3\n",
            "holdfast_ws_ping_rtt_seconds_bucket{le=\"0.2\"} 4\n",
            "holdfast_ws_ping_rtt_seconds_bucket{le=\"30\"} 4\n",
            "holdfast_ws_ping_rtt_seconds_bucket{le=\"+Inf\"} 5\n",
            "holdfast_ws_ping_rtt_seconds_count 5\n",
            "holdfast_ws_ping_rtt_seconds_sum 40.153\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn build_info_names_the_version_once() {
        let text = Metrics::new(2).render();
        let line = format!(
            "holdfast_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(text.matches(&line).count(), 1, "{text}");
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
