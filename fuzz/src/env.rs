//! Owns what a protocol call borrows besides its input: a `Config` shaped by the fuzz input (small
//! limits and timeouts, so that limits are hit and timers fire within a short stream), the
//! worker's scratch buffers, and the metrics blocks. Builds the `Context` the way
//! `engine::worker` does.

use arbitrary::Arbitrary;
use holdfast::config::Config;
use holdfast::log::access::Peer;
use holdfast::metrics::{Metrics, ProcessBlock, WorkerMetrics};
use holdfast::proto::{Context, tls, ws};
use std::cell::RefCell;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The cached `Date` value: fixed, so outputs compare byte for byte.
pub const DATE: &[u8] = b"Thu, 01 Jan 1970 00:00:00 GMT";

/// The tunables a connection target varies. Each maps onto a small set of values around the
/// edges that matter (tiny limits, the defaults, timers that fire within a few events).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Knobs {
    max_header: u8,
    max_body: u16,
    keepalive_requests: u8,
    timeouts: u8,
    max_message: u16,
    ws_flags: u8,
}

impl Knobs {
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        let h = &mut c.http;
        h.max_header_bytes = match self.max_header % 4 {
            0 => 16 * 1024,
            1 => 64,
            2 => 512,
            _ => usize::from(self.max_header) * 64,
        };
        h.max_body_bytes = match self.max_body % 8 {
            0 => 1 << 20,
            _ => usize::from(self.max_body >> 3),
        };
        h.keepalive_requests = match self.keepalive_requests % 4 {
            0 => 1000,
            _ => u64::from(self.keepalive_requests % 8),
        };
        // Timers in milliseconds that a few Advance events pass: idle 1..=8 s, request 1..=4 s,
        // age 5..=20 s.
        let t = u64::from(self.timeouts);
        h.keepalive_timeout = Duration::from_millis(1000 * (1 + t % 8));
        h.header_timeout = Duration::from_millis(1000 * (1 + (t >> 3) % 4));
        h.max_connection_age = Duration::from_millis(5000 * (1 + (t >> 5) % 4));
        let w = &mut c.websocket;
        w.ping_interval = Duration::from_millis(match self.ws_flags % 4 {
            0 => 0,
            n => 1000 * u64::from(n),
        });
        w.pong_timeout = Duration::from_millis(500 * (1 + u64::from((self.ws_flags >> 2) % 4)));
        w.idle_timeout = Duration::from_millis(match (self.ws_flags >> 4) % 4 {
            0 | 1 => 0,
            n => 3000 * u64::from(n),
        });
        w.permessage_deflate = self.ws_flags & 0x40 == 0;
        w.deflate_context_takeover = self.ws_flags & 0x80 != 0;
        w.max_message_bytes = match self.max_message % 4 {
            0 => 64 * 1024,
            _ => usize::from(self.max_message >> 2),
        };
        c
    }
}

/// Owns a config and a worker's scratch buffers; lends them to protocol calls.
pub struct Env {
    pub config: Config,
    /// The built-in application (endpoints and the `/ws` echo), as a worker runs it.
    pub app: holdfast::app::WorkerApp,
    pub ws_scratch: RefCell<ws::deflate::Scratch>,
    pub tls_scratch: RefCell<tls::Scratch>,
}

impl Env {
    pub fn new(config: Config) -> Env {
        Env {
            config,
            app: holdfast::app::WorkerApp::standalone(),
            ws_scratch: RefCell::default(),
            tls_scratch: RefCell::default(),
        }
    }

    /// The context of one call. `stopping`: a stop was requested (true from the stop signal on,
    /// through `server.drain_delay`); `draining`: the drain has begun (implies `stopping`). The
    /// access log is off (its lines are not part of what the targets compare) and the peer
    /// unknown, as with `log.access` off.
    pub fn cx<'a>(
        &'a self,
        metrics: &'a Metrics,
        now: u64,
        stopping: bool,
        draining: bool,
    ) -> Context<'a> {
        Context {
            now,
            date: DATE,
            config: &self.config,
            metrics: &metrics.workers[0],
            all_metrics: metrics,
            draining,
            stopping: stopping || draining,
            ws_scratch: &self.ws_scratch,
            tls_scratch: &self.tls_scratch,
            access: None,
            peer: Peer::UNKNOWN,
            over_limit: false,
            app: &self.app,
            conn: Default::default(),
        }
    }
}

/// Every counter of the (only) worker, in a fixed order: what `GET /metrics` would render,
/// without the cost of rendering it after every input.
pub fn counters(m: &Metrics) -> Vec<u64> {
    let w = &m.workers[0];
    let singles = [
        &w.accepted,
        &w.requests,
        &w.bytes_in,
        &w.bytes_out,
        &w.recv_rearms,
        &w.protocol_panics,
        &w.ws_upgrades,
        &w.ws_closed,
        &w.ws_messages_in,
        &w.ws_messages_out,
        &w.ws_pings_sent,
        &w.ws_pongs_received,
        &w.ws_heartbeat_timeouts,
        &w.ws_slow_reader_closes,
        &w.tls_handshakes_full,
        &w.tls_handshakes_resumed,
        &w.tls_key_updates_sent,
        &w.tls_key_updates_received,
        &w.ws_ping_rtt_sum_ms,
        &w.access_log_dropped,
        &w.h2_connections,
    ];
    let arrays = [
        &w.closed[..],
        &w.responses[..],
        &w.timeouts[..],
        &w.tls_failures[..],
        &w.ws_closes[..],
        &w.ws_ping_rtt_buckets[..],
        &w.h2_goaways[..],
        &w.h2_resets[..],
    ];
    singles
        .into_iter()
        .chain(arrays.into_iter().flatten())
        .map(|c| c.get())
        .collect()
}

/// Two metrics blocks for the life of the process, one for each way a stream is fed (whole and
/// in pieces). Metrics leak their counters by design (they live as long as a server), so they
/// are made once. `GET /metrics` renders them into a response: the two blocks start equal and,
/// if the protocol code does not depend on how its input was split, stay equal; targets check
/// that after every input ([`counters`]), which also keeps a failure reproducible from that
/// input alone.
pub fn metrics_pair() -> (&'static Metrics, &'static Metrics) {
    static WHOLE: LazyLock<Metrics> = LazyLock::new(without_process_figures);
    static SPLIT: LazyLock<Metrics> = LazyLock::new(without_process_figures);
    (&WHOLE, &SPLIT)
}

/// One worker's metrics whose process has no pid: `/metrics` then renders the `process_*`
/// families (CPU time, memory, descriptors, read from /proc when scraped) without samples, so
/// the response depends only on the counters and two runs can be compared byte for byte.
fn without_process_figures() -> Metrics {
    let block = ProcessBlock {
        header: Box::leak(Box::default()),
        workers: Box::leak(Box::new([WorkerMetrics::default()])),
    };
    let metrics = Metrics::shared(vec![block], 0);
    block.header.pid.store(0, Ordering::Relaxed);
    metrics
}
