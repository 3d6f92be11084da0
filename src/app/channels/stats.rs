//! Owns the channel figures of CHANNELS.md §6, per app: gauges of connections, subscriptions,
//! occupied channels and presence members; counters of events, deliveries, slow subscribers
//! dropped, auth failures and API answers; the publish-to-queued fan-out histogram. Atomics
//! shared by the workers of a process, rendered into `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (µs) of the fan-out histogram's buckets.
const FANOUT_BUCKETS_US: [u64; 10] = [10, 25, 50, 100, 250, 500, 1000, 2500, 10_000, 100_000];

/// API statuses counted, each with its own series.
pub const API_STATUSES: [u16; 6] = [200, 400, 401, 403, 404, 413];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Private,
    Presence,
    Api,
}

impl AuthFailure {
    const ALL: [AuthFailure; 3] = [
        AuthFailure::Private,
        AuthFailure::Presence,
        AuthFailure::Api,
    ];
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Private => "private",
            AuthFailure::Presence => "presence",
            AuthFailure::Api => "api",
        }
    }
}

#[derive(Default)]
pub struct AppStats {
    pub connections: AtomicI64,
    pub subscriptions: AtomicI64,
    pub occupied_channels: AtomicI64,
    pub presence_members: AtomicI64,
    pub events_api: AtomicU64,
    pub events_client: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_closes: AtomicU64,
    auth_failures: [AtomicU64; 3],
    api: [AtomicU64; API_STATUSES.len() + 1],
    fanout: [AtomicU64; FANOUT_BUCKETS_US.len() + 1],
    fanout_sum_us: AtomicU64,
}

impl AppStats {
    pub fn auth_failed(&self, kind: AuthFailure) {
        self.auth_failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn api_answered(&self, status: u16) {
        let i = API_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(API_STATUSES.len());
        self.api[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One worker queued an event `us` microseconds after it was published.
    pub fn fanout_time(&self, us: u64) {
        let i = FANOUT_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(FANOUT_BUCKETS_US.len());
        self.fanout[i].fetch_add(1, Ordering::Relaxed);
        self.fanout_sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Appends the channel series of every app (`ids[i]` labels `stats[i]`).
pub fn render(out: &mut String, ids: &[&str], stats: &[AppStats]) {
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    fn gauge(a: &AtomicI64) -> u64 {
        a.load(Ordering::Relaxed).max(0) as u64
    }
    type Value = fn(&AppStats) -> u64;
    let simple: [(&str, &str, &str, Value); 6] = [
        (
            "channel_connections",
            "gauge",
            "Open channel connections.",
            |s| gauge(&s.connections),
        ),
        (
            "channel_subscriptions",
            "gauge",
            "Channel subscriptions held.",
            |s| gauge(&s.subscriptions),
        ),
        (
            "channels_occupied",
            "gauge",
            "Channels with at least one subscriber.",
            |s| gauge(&s.occupied_channels),
        ),
        (
            "presence_members",
            "gauge",
            "Presence members, summed over channels.",
            |s| gauge(&s.presence_members),
        ),
        (
            "channel_deliveries_total",
            "counter",
            "Events queued to subscribers.",
            |s| get(&s.deliveries),
        ),
        (
            "channel_slow_subscribers_total",
            "counter",
            "Subscribers closed with 4201 for not keeping up.",
            |s| get(&s.slow_closes),
        ),
    ];
    for (name, kind, help, value) in simple {
        let _ = writeln!(
            out,
            "# HELP holdfast_{name} {help}\n# TYPE holdfast_{name} {kind}"
        );
        for (id, s) in ids.iter().zip(stats) {
            let _ = writeln!(
                out,
                "holdfast_{name}{{app=\"{}\"}} {}",
                escape(id),
                value(s)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_events_total Events published, by source.\n# TYPE holdfast_channel_events_total counter"
    );
    for (id, s) in ids.iter().zip(stats) {
        let id = escape(id);
        let _ = writeln!(
            out,
            "holdfast_channel_events_total{{app=\"{id}\",source=\"api\"}} {}",
            get(&s.events_api)
        );
        let _ = writeln!(
            out,
            "holdfast_channel_events_total{{app=\"{id}\",source=\"client\"}} {}",
            get(&s.events_client)
        );
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_auth_failures_total Refused signatures, by kind.\n# TYPE holdfast_channel_auth_failures_total counter"
    );
    for (id, s) in ids.iter().zip(stats) {
        for k in AuthFailure::ALL {
            let _ = writeln!(
                out,
                "holdfast_channel_auth_failures_total{{app=\"{}\",kind=\"{}\"}} {}",
                escape(id),
                k.label(),
                get(&s.auth_failures[k as usize])
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_api_requests_total HTTP API answers, by status.\n# TYPE holdfast_channel_api_requests_total counter"
    );
    for (id, s) in ids.iter().zip(stats) {
        for (i, st) in API_STATUSES
            .iter()
            .map(|s| s.to_string())
            .chain(["other".to_string()])
            .enumerate()
        {
            let _ = writeln!(
                out,
                "holdfast_channel_api_requests_total{{app=\"{}\",status=\"{st}\"}} {}",
                escape(id),
                get(&s.api[i])
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_fanout_seconds From a publish to each worker having queued it to its subscribers.\n# TYPE holdfast_channel_fanout_seconds histogram"
    );
    for (id, s) in ids.iter().zip(stats) {
        let id = escape(id);
        let mut cumulative = 0;
        for (i, b) in FANOUT_BUCKETS_US.iter().enumerate() {
            cumulative += get(&s.fanout[i]);
            let _ = writeln!(
                out,
                "holdfast_channel_fanout_seconds_bucket{{app=\"{id}\",le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        cumulative += get(&s.fanout[FANOUT_BUCKETS_US.len()]);
        let _ = writeln!(
            out,
            "holdfast_channel_fanout_seconds_bucket{{app=\"{id}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "holdfast_channel_fanout_seconds_sum{{app=\"{id}\"}} {}",
            get(&s.fanout_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "holdfast_channel_fanout_seconds_count{{app=\"{id}\"}} {cumulative}"
        );
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
