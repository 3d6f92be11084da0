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
    /// A private channel's `auth` on an event stream.
    Sse,
}

impl AuthFailure {
    const ALL: [AuthFailure; 4] = [
        AuthFailure::Private,
        AuthFailure::Presence,
        AuthFailure::Api,
        AuthFailure::Sse,
    ];
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Private => "private",
            AuthFailure::Presence => "presence",
            AuthFailure::Api => "api",
            AuthFailure::Sse => "sse",
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
    /// Open Server-Sent Events streams.
    pub sse_streams: AtomicI64,
    /// Streams that asked to recover (`Last-Event-ID`): replayed, or told it was too late.
    pub recoveries_ok: AtomicU64,
    pub recoveries_failed: AtomicU64,
    /// Events kept for recovery and their bytes (this process's copy of the history).
    pub history_events: AtomicI64,
    pub history_bytes: AtomicI64,
    auth_failures: [AtomicU64; 4],
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

/// The figures of one app as plain numbers: this process's, or the sum over the node's
/// processes (siblings send theirs over the bus every second). `occupied_channels` and
/// `presence_members` are the node's already in every process and are not summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub connections: u64,
    pub subscriptions: u64,
    pub occupied_channels: u64,
    pub presence_members: u64,
    pub events_api: u64,
    pub events_client: u64,
    pub deliveries: u64,
    pub slow_closes: u64,
    pub sse_streams: u64,
    pub recoveries_ok: u64,
    pub recoveries_failed: u64,
    pub history_events: u64,
    pub history_bytes: u64,
    pub auth_failures: [u64; 4],
    pub api: [u64; API_STATUSES.len() + 1],
    pub fanout: [u64; FANOUT_BUCKETS_US.len() + 1],
    pub fanout_sum_us: u64,
}

impl AppStats {
    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        Snapshot {
            connections: gauge(&self.connections),
            subscriptions: gauge(&self.subscriptions),
            occupied_channels: gauge(&self.occupied_channels),
            presence_members: gauge(&self.presence_members),
            events_api: get(&self.events_api),
            events_client: get(&self.events_client),
            deliveries: get(&self.deliveries),
            slow_closes: get(&self.slow_closes),
            sse_streams: gauge(&self.sse_streams),
            recoveries_ok: get(&self.recoveries_ok),
            recoveries_failed: get(&self.recoveries_failed),
            history_events: gauge(&self.history_events),
            history_bytes: gauge(&self.history_bytes),
            auth_failures: self.auth_failures.each_ref().map(get),
            api: self.api.each_ref().map(get),
            fanout: self.fanout.each_ref().map(get),
            fanout_sum_us: get(&self.fanout_sum_us),
        }
    }
}

/// How many plain figures lead a `to_summed` list.
const SUMMED_FIELDS: usize = 12;

impl Snapshot {
    fn summed_fields(&mut self) -> [&mut u64; SUMMED_FIELDS] {
        [
            &mut self.connections,
            &mut self.subscriptions,
            &mut self.events_api,
            &mut self.events_client,
            &mut self.deliveries,
            &mut self.slow_closes,
            &mut self.fanout_sum_us,
            &mut self.sse_streams,
            &mut self.recoveries_ok,
            &mut self.recoveries_failed,
            &mut self.history_events,
            &mut self.history_bytes,
        ]
    }

    /// The summed figures as a flat list, for the bus (node-wide gauges left out).
    pub fn to_summed(&self) -> Vec<u64> {
        let mut copy = self.clone();
        let mut v: Vec<u64> = copy.summed_fields().into_iter().map(|x| *x).collect();
        v.extend_from_slice(&self.auth_failures);
        v.extend_from_slice(&self.api);
        v.extend_from_slice(&self.fanout);
        v
    }

    /// Adds a sibling's `to_summed` list (ignored if it is not one: another build).
    pub fn add_summed(&mut self, v: &[u64]) {
        let (a, f) = (self.auth_failures.len(), self.fanout.len());
        let api = self.api.len();
        if v.len() != SUMMED_FIELDS + a + api + f {
            return;
        }
        for (field, x) in self.summed_fields().into_iter().zip(v) {
            *field += x;
        }
        let rest = &v[SUMMED_FIELDS..];
        for (t, x) in self.auth_failures.iter_mut().zip(&rest[..a]) {
            *t += x;
        }
        for (t, x) in self.api.iter_mut().zip(&rest[a..a + api]) {
            *t += x;
        }
        for (t, x) in self.fanout.iter_mut().zip(&rest[a + api..]) {
            *t += x;
        }
    }
}

/// Appends the channel series of every app (`ids[i]` labels `figures[i]`).
pub fn render(out: &mut String, ids: &[&str], figures: &[Snapshot]) {
    type Value = fn(&Snapshot) -> u64;
    let simple: [(&str, &str, &str, Value); 9] = [
        (
            "channel_connections",
            "gauge",
            "Open channel connections.",
            |s| s.connections,
        ),
        (
            "channel_subscriptions",
            "gauge",
            "Channel subscriptions held.",
            |s| s.subscriptions,
        ),
        (
            "channels_occupied",
            "gauge",
            "Channels with at least one subscriber.",
            |s| s.occupied_channels,
        ),
        (
            "presence_members",
            "gauge",
            "Presence members, summed over channels.",
            |s| s.presence_members,
        ),
        (
            "channel_deliveries_total",
            "counter",
            "Events queued to subscribers.",
            |s| s.deliveries,
        ),
        (
            "channel_slow_subscribers_total",
            "counter",
            "Subscribers closed for not keeping up (4201 on WebSocket, the stream cut on SSE).",
            |s| s.slow_closes,
        ),
        (
            "sse_streams",
            "gauge",
            "Open Server-Sent Events streams.",
            |s| s.sse_streams,
        ),
        (
            "channel_history_events",
            "gauge",
            "Events kept for recovery (every server process keeps its own copy).",
            |s| s.history_events,
        ),
        (
            "channel_history_bytes",
            "gauge",
            "Bytes of the events kept for recovery, summed over the server processes.",
            |s| s.history_bytes,
        ),
    ];
    for (name, kind, help, value) in simple {
        let _ = writeln!(
            out,
            "# HELP holdfast_{name} {help}\n# TYPE holdfast_{name} {kind}"
        );
        for (id, s) in ids.iter().zip(figures) {
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
    for (id, s) in ids.iter().zip(figures) {
        let id = escape(id);
        let _ = writeln!(
            out,
            "holdfast_channel_events_total{{app=\"{id}\",source=\"api\"}} {}",
            s.events_api
        );
        let _ = writeln!(
            out,
            "holdfast_channel_events_total{{app=\"{id}\",source=\"client\"}} {}",
            s.events_client
        );
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_sse_recoveries_total Streams that asked to recover missed events, by outcome.\n# TYPE holdfast_sse_recoveries_total counter"
    );
    for (id, s) in ids.iter().zip(figures) {
        let id = escape(id);
        let _ = writeln!(
            out,
            "holdfast_sse_recoveries_total{{app=\"{id}\",outcome=\"ok\"}} {}",
            s.recoveries_ok
        );
        let _ = writeln!(
            out,
            "holdfast_sse_recoveries_total{{app=\"{id}\",outcome=\"failed\"}} {}",
            s.recoveries_failed
        );
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_auth_failures_total Refused signatures, by kind.\n# TYPE holdfast_channel_auth_failures_total counter"
    );
    for (id, s) in ids.iter().zip(figures) {
        for k in AuthFailure::ALL {
            let _ = writeln!(
                out,
                "holdfast_channel_auth_failures_total{{app=\"{}\",kind=\"{}\"}} {}",
                escape(id),
                k.label(),
                s.auth_failures[k as usize]
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_api_requests_total HTTP API answers, by status.\n# TYPE holdfast_channel_api_requests_total counter"
    );
    for (id, s) in ids.iter().zip(figures) {
        let labels = API_STATUSES
            .iter()
            .map(|s| s.to_string())
            .chain(["other".to_string()]);
        for (i, st) in labels.enumerate() {
            let _ = writeln!(
                out,
                "holdfast_channel_api_requests_total{{app=\"{}\",status=\"{st}\"}} {}",
                escape(id),
                s.api[i]
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_fanout_seconds From a publish to each worker having queued it to its subscribers.\n# TYPE holdfast_channel_fanout_seconds histogram"
    );
    for (id, s) in ids.iter().zip(figures) {
        let id = escape(id);
        let mut cumulative = 0;
        for (i, b) in FANOUT_BUCKETS_US.iter().enumerate() {
            cumulative += s.fanout[i];
            let _ = writeln!(
                out,
                "holdfast_channel_fanout_seconds_bucket{{app=\"{id}\",le=\"{}\"}} {cumulative}",
                *b as f64 / 1e6
            );
        }
        cumulative += s.fanout[FANOUT_BUCKETS_US.len()];
        let _ = writeln!(
            out,
            "holdfast_channel_fanout_seconds_bucket{{app=\"{id}\",le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "holdfast_channel_fanout_seconds_sum{{app=\"{id}\"}} {}",
            s.fanout_sum_us as f64 / 1e6
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

/// Appends the bus series: messages exchanged with sibling processes or, in a cluster, with
/// the other members through Redis, and what could not cross.
pub fn render_bus(out: &mut String, [inbound, outbound, errors]: [u64; 3]) {
    let _ = writeln!(
        out,
        "# HELP holdfast_channel_bus_messages_total Channel messages exchanged with the node's other \
         server processes, or with the cluster through Redis.\n\
         # TYPE holdfast_channel_bus_messages_total counter\n\
         holdfast_channel_bus_messages_total{{direction=\"in\"}} {inbound}\n\
         holdfast_channel_bus_messages_total{{direction=\"out\"}} {outbound}\n\
         # HELP holdfast_channel_bus_errors_total Channel messages (events, presence changes) \
         that could not cross to another server process or cluster member.\n\
         # TYPE holdfast_channel_bus_errors_total counter\n\
         holdfast_channel_bus_errors_total {errors}"
    );
}

/// Appends the cluster series: whether this member is in touch with Redis, and how many
/// members it hears (itself included).
pub fn render_cluster(out: &mut String, up: bool, members: usize) {
    let _ = writeln!(
        out,
        "# HELP holdfast_cluster_up Whether this server process is subscribed to the cluster's \
         Redis bus.\n# TYPE holdfast_cluster_up gauge\nholdfast_cluster_up {}\n\
         # HELP holdfast_cluster_members Cluster members this process hears, itself included.\n\
         # TYPE holdfast_cluster_members gauge\nholdfast_cluster_members {members}",
        u8::from(up)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_siblings_figures_add_up_and_a_foreign_list_is_ignored() {
        let a = AppStats::default();
        a.connections.fetch_add(2, Ordering::Relaxed);
        a.api_answered(401);
        a.fanout_time(30);
        a.occupied_channels.fetch_add(5, Ordering::Relaxed);
        let mut total = a.snapshot();
        total.add_summed(&a.snapshot().to_summed());
        assert_eq!(total.connections, 4);
        assert_eq!(total.api[2], 2);
        assert_eq!(total.fanout[2], 2);
        assert_eq!(total.occupied_channels, 5, "node-wide already: not summed");
        total.add_summed(&[1, 2, 3]);
        assert_eq!(total.connections, 4);
    }
}
