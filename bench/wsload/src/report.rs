//! Owns what wsload measures and how it reports it: the counters, the HDR histograms (connect
//! time, echo round trip, heartbeat round trip), merging them across shards (a shard sends its
//! histograms as [value, count] pairs), and the final summary as text or one JSON object.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Everything counted, as plain numbers (a shard's progress line carries a copy).
#[derive(Clone, Copy, Default, Debug)]
pub struct Counters {
    pub connected: u64,
    pub failed: u64,
    /// Connections that closed or failed after they were established, before wsload closed them.
    pub lost: u64,
    /// Echo round trips completed inside the measurement window.
    pub messages: u64,
    /// Heartbeats sent (WebSocket pings, or HTTP requests after the first).
    pub heartbeats_sent: u64,
    /// Heartbeats answered (pongs to our pings, responses to our requests).
    pub heartbeats: u64,
    pub server_pings: u64,
    pub server_pings_answered: u64,
    /// Connections that finished the closing handshake when wsload closed them.
    pub closed_clean: u64,
    pub tls_full: u64,
    pub tls_resumed: u64,
    /// Subscribe: events delivered to subscribers (duplicates included).
    pub deliveries: u64,
    /// Subscribe: deliveries of a sequence number the subscriber had already seen.
    pub duplicated: u64,
    /// Subscribe: deliveries that filled an earlier gap.
    pub out_of_order: u64,
    /// Subscribe: deliveries naming a channel other than the subscriber's.
    pub misrouted: u64,
    /// Subscribe, counted at the end: deliveries that never came, and those that should have.
    pub events_lost: u64,
    pub expected: u64,
    /// The publisher: events the API accepted (200), and requests that failed otherwise.
    pub published: u64,
    pub publish_errors: u64,
    /// Subscribe with a shared channel: broadcasts delivered (duplicates included), and,
    /// counted at the end, those that never came and those that should have.
    pub broadcast_deliveries: u64,
    pub broadcasts_lost: u64,
    pub broadcast_expected: u64,
    /// The publisher: broadcasts the API accepted (their errors are in `publish_errors`).
    pub broadcasts: u64,
}

impl Counters {
    fn fields(&self) -> [(&'static str, u64); 23] {
        [
            ("connected", self.connected),
            ("failed", self.failed),
            ("lost", self.lost),
            ("messages", self.messages),
            ("heartbeats_sent", self.heartbeats_sent),
            ("heartbeats", self.heartbeats),
            ("server_pings", self.server_pings),
            ("server_pings_answered", self.server_pings_answered),
            ("closed_clean", self.closed_clean),
            ("tls_full", self.tls_full),
            ("tls_resumed", self.tls_resumed),
            ("deliveries", self.deliveries),
            ("duplicated", self.duplicated),
            ("out_of_order", self.out_of_order),
            ("misrouted", self.misrouted),
            ("events_lost", self.events_lost),
            ("expected", self.expected),
            ("published", self.published),
            ("publish_errors", self.publish_errors),
            ("broadcast_deliveries", self.broadcast_deliveries),
            ("broadcasts_lost", self.broadcasts_lost),
            ("broadcast_expected", self.broadcast_expected),
            ("broadcasts", self.broadcasts),
        ]
    }

    fn fields_mut(&mut self) -> [(&'static str, &mut u64); 23] {
        [
            ("connected", &mut self.connected),
            ("failed", &mut self.failed),
            ("lost", &mut self.lost),
            ("messages", &mut self.messages),
            ("heartbeats_sent", &mut self.heartbeats_sent),
            ("heartbeats", &mut self.heartbeats),
            ("server_pings", &mut self.server_pings),
            ("server_pings_answered", &mut self.server_pings_answered),
            ("closed_clean", &mut self.closed_clean),
            ("tls_full", &mut self.tls_full),
            ("tls_resumed", &mut self.tls_resumed),
            ("deliveries", &mut self.deliveries),
            ("duplicated", &mut self.duplicated),
            ("out_of_order", &mut self.out_of_order),
            ("misrouted", &mut self.misrouted),
            ("events_lost", &mut self.events_lost),
            ("expected", &mut self.expected),
            ("published", &mut self.published),
            ("publish_errors", &mut self.publish_errors),
            ("broadcast_deliveries", &mut self.broadcast_deliveries),
            ("broadcasts_lost", &mut self.broadcasts_lost),
            ("broadcast_expected", &mut self.broadcast_expected),
            ("broadcasts", &mut self.broadcasts),
        ]
    }

    pub fn to_json(self) -> Value {
        Value::Object(
            self.fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect(),
        )
    }

    /// Reads the fields `to_json` wrote (missing ones stay zero).
    pub fn from_json(v: &Value) -> Counters {
        let mut c = Counters::default();
        for (k, slot) in c.fields_mut() {
            *slot = v.get(k).and_then(Value::as_u64).unwrap_or(0);
        }
        c
    }

    pub fn add(&mut self, other: &Counters) {
        for ((_, mine), (_, theirs)) in self.fields_mut().into_iter().zip(other.fields()) {
            *mine += theirs;
        }
    }
}

/// Where a run is; shards report theirs and the parent shows the earliest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Ramp,
    Warmup,
    Hold,
    Close,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Warmup => "warmup",
            Phase::Hold => "hold",
            Phase::Close => "close",
            Phase::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Phase {
        match s {
            "ramp" => Phase::Ramp,
            "warmup" => Phase::Warmup,
            "hold" => Phase::Hold,
            "close" => Phase::Close,
            _ => Phase::Done,
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Records a duration in microseconds (clamped to the histogram's range).
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, h.high()));
}

pub struct Stats {
    pub count: Counters,
    pub connect_us: Histogram<u64>,
    pub rtt_us: Histogram<u64>,
    pub heartbeat_rtt_us: Histogram<u64>,
    /// Subscribe: each delivery's latency, from the publisher's send time to its receipt.
    pub delivery_us: Histogram<u64>,
    /// The publisher: each API request's round trip.
    pub publish_us: Histogram<u64>,
    /// Subscribe: per event (index `seq * channels + channel`), the latency of its latest
    /// delivery in µs (0: none yet), so the time to its last subscriber can be found across
    /// shards: each sends the array, the parent keeps the larger of each pair.
    pub event_last_us: Vec<u32>,
    /// Subscribe: each broadcast delivery's latency (the shared channel's events).
    pub broadcast_us: Histogram<u64>,
    /// Subscribe: per broadcast (its sequence number on the shared channel), the latency of
    /// its latest delivery in µs (0: none yet) and how many deliveries it had. The parent
    /// keeps the largest latency and adds the counts: a broadcast's time to all subscribers.
    pub broadcast_last_us: Vec<u32>,
    pub broadcast_count: Vec<u64>,
    /// Subscribe: wall-clock ns of the first and the last delivery (0: none).
    pub first_delivery_ns: u64,
    pub last_delivery_ns: u64,
}

/// Events beyond this index are not tracked for their last delivery (a bogus sequence number
/// must not allocate gigabytes).
const MAX_TRACKED_EVENTS: usize = 50_000_000;
/// The same for broadcasts.
const MAX_TRACKED_BROADCASTS: usize = 1_000_000;
/// Up to this many events, the report lists each one's time to its last subscriber.
const MAX_LISTED_EVENTS: usize = 5_000;

impl Stats {
    pub fn new() -> Stats {
        Stats {
            count: Counters::default(),
            connect_us: histogram(),
            rtt_us: histogram(),
            heartbeat_rtt_us: histogram(),
            delivery_us: histogram(),
            publish_us: histogram(),
            event_last_us: Vec::new(),
            broadcast_us: histogram(),
            broadcast_last_us: Vec::new(),
            broadcast_count: Vec::new(),
            first_delivery_ns: 0,
            last_delivery_ns: 0,
        }
    }

    /// Records one delivery of event `index` with this latency, received at `now_ns`.
    pub fn delivered(&mut self, index: u64, latency_us: u64, now_ns: u64) {
        self.count.deliveries += 1;
        record(&mut self.delivery_us, latency_us);
        if self.first_delivery_ns == 0 {
            self.first_delivery_ns = now_ns;
        }
        self.last_delivery_ns = self.last_delivery_ns.max(now_ns);
        let i = index as usize;
        if i < MAX_TRACKED_EVENTS {
            if i >= self.event_last_us.len() {
                self.event_last_us.resize(i + 1, 0);
            }
            let us = latency_us.clamp(1, u64::from(u32::MAX)) as u32;
            self.event_last_us[i] = self.event_last_us[i].max(us);
        }
    }

    /// Records one delivery of broadcast `seq` with this latency, received at `now_ns`.
    pub fn broadcast_delivered(&mut self, seq: u64, latency_us: u64, now_ns: u64) {
        self.count.broadcast_deliveries += 1;
        record(&mut self.broadcast_us, latency_us);
        if self.first_delivery_ns == 0 {
            self.first_delivery_ns = now_ns;
        }
        self.last_delivery_ns = self.last_delivery_ns.max(now_ns);
        let i = seq as usize;
        if i < MAX_TRACKED_BROADCASTS {
            if i >= self.broadcast_last_us.len() {
                self.broadcast_last_us.resize(i + 1, 0);
                self.broadcast_count.resize(i + 1, 0);
            }
            let us = latency_us.clamp(1, u64::from(u32::MAX)) as u32;
            self.broadcast_last_us[i] = self.broadcast_last_us[i].max(us);
            self.broadcast_count[i] += 1;
        }
    }

    fn histograms(&self) -> [(&'static str, &Histogram<u64>); 6] {
        [
            ("connect_us", &self.connect_us),
            ("rtt_us", &self.rtt_us),
            ("heartbeat_rtt_us", &self.heartbeat_rtt_us),
            ("delivery_us", &self.delivery_us),
            ("publish_us", &self.publish_us),
            ("broadcast_us", &self.broadcast_us),
        ]
    }

    /// The wire form a shard sends its parent: counters plus histograms as [value, count] pairs,
    /// and for subscribers the per-event latencies and first and last delivery times.
    pub fn to_json(&self) -> Value {
        let mut v = self.count.to_json();
        for (name, h) in self.histograms() {
            let pairs: Vec<Value> = h
                .iter_recorded()
                .map(|x| json!([x.value_iterated_to(), x.count_at_value()]))
                .collect();
            v[name] = Value::Array(pairs);
        }
        if !self.event_last_us.is_empty() {
            v["event_last_us"] = self.event_last_us.clone().into();
        }
        if !self.broadcast_last_us.is_empty() {
            v["broadcast_last_us"] = self.broadcast_last_us.clone().into();
            v["broadcast_count"] = self.broadcast_count.clone().into();
        }
        v["first_delivery_ns"] = self.first_delivery_ns.into();
        v["last_delivery_ns"] = self.last_delivery_ns.into();
        v
    }

    /// Adds a shard's `to_json` into these totals.
    pub fn merge_json(&mut self, v: &Value) {
        self.count.add(&Counters::from_json(v));
        for (name, h) in [
            ("connect_us", &mut self.connect_us),
            ("rtt_us", &mut self.rtt_us),
            ("heartbeat_rtt_us", &mut self.heartbeat_rtt_us),
            ("delivery_us", &mut self.delivery_us),
            ("publish_us", &mut self.publish_us),
            ("broadcast_us", &mut self.broadcast_us),
        ] {
            for pair in v.get(name).and_then(Value::as_array).into_iter().flatten() {
                if let (Some(value), Some(n)) = (
                    pair.get(0).and_then(Value::as_u64),
                    pair.get(1).and_then(Value::as_u64),
                ) {
                    let _ = h.record_n(value.clamp(1, h.high()), n);
                }
            }
        }
        let theirs = v.get("event_last_us").and_then(Value::as_array);
        for (i, us) in theirs.into_iter().flatten().enumerate() {
            let us = us.as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
            if i >= MAX_TRACKED_EVENTS {
                break;
            }
            if i >= self.event_last_us.len() {
                self.event_last_us.resize(i + 1, 0);
            }
            self.event_last_us[i] = self.event_last_us[i].max(us);
        }
        let last_us = v.get("broadcast_last_us").and_then(Value::as_array);
        let counts = v.get("broadcast_count").and_then(Value::as_array);
        let pairs = last_us
            .into_iter()
            .flatten()
            .zip(counts.into_iter().flatten());
        for (i, (us, n)) in pairs.enumerate().take(MAX_TRACKED_BROADCASTS) {
            if i >= self.broadcast_last_us.len() {
                self.broadcast_last_us.resize(i + 1, 0);
                self.broadcast_count.resize(i + 1, 0);
            }
            let us = us.as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
            self.broadcast_last_us[i] = self.broadcast_last_us[i].max(us);
            self.broadcast_count[i] += n.as_u64().unwrap_or(0);
        }
        let first = v["first_delivery_ns"].as_u64().unwrap_or(0);
        if first != 0 && (self.first_delivery_ns == 0 || first < self.first_delivery_ns) {
            self.first_delivery_ns = first;
        }
        let last = v["last_delivery_ns"].as_u64().unwrap_or(0);
        self.last_delivery_ns = self.last_delivery_ns.max(last);
    }

    /// Subscribe: for each event delivered at least once, the time from its send to its last
    /// subscriber's receipt.
    pub fn last_subscriber_us(&self) -> Histogram<u64> {
        let mut h = histogram();
        for &us in self.event_last_us.iter().filter(|&&us| us > 0) {
            record(&mut h, u64::from(us));
        }
        h
    }

    /// Per broadcast: its time to the last subscriber that got it (µs), over the broadcasts
    /// every one of `subscribers` got; and how many did not reach them all.
    pub fn broadcast_to_all_us(&self, subscribers: u64) -> (Histogram<u64>, u64) {
        let mut h = histogram();
        let mut short = 0;
        for (&us, &n) in self.broadcast_last_us.iter().zip(&self.broadcast_count) {
            if n >= subscribers && us > 0 {
                record(&mut h, u64::from(us));
            } else {
                short += 1;
            }
        }
        (h, short)
    }
}

/// How a whole run went: the totals and the times that frame them.
pub struct Summary {
    pub mode: &'static str,
    pub connections: u64,
    pub stats: Stats,
    /// How long every connection was held (idle modes); the shortest shard's when sharded.
    pub held_seconds: f64,
    /// Echo: the measurement window (summed rates when sharded, so see messages_per_sec).
    pub measured_seconds: f64,
    pub messages_per_sec: f64,
    pub message_bytes: usize,
    pub tls: bool,
    pub shards: u32,
    /// The give-up deadline passed before every connection settled.
    pub gave_up: bool,
    /// Subscribe: the channels, the publishing and the fan-out.
    pub sub: Option<SubReport>,
    /// Subscribe with --server-pid: the server's readings (server.rs).
    pub server: Option<Value>,
}

/// What a subscribe run adds to the summary.
pub struct SubReport {
    pub channels: u32,
    pub sse: bool,
    /// wsload published (with --publish-rate): how many events it meant to.
    pub publishing: bool,
    pub events_planned: u64,
    /// From the first publish to the publisher's end.
    pub publish_seconds: f64,
    /// From the first publish (or without one, the first delivery) to the last delivery.
    pub delivery_seconds: f64,
    /// The channel every subscriber is on too, and the broadcasts to it wsload meant to
    /// publish, one every `broadcast_every` seconds.
    pub shared: Option<String>,
    pub broadcasts_planned: u64,
    pub broadcast_every: f64,
}

impl SubReport {
    /// A subscribe run is good when nothing was lost, duplicated, reordered or misrouted, and
    /// everything wsload meant to publish was accepted.
    fn good(&self, c: &Counters) -> bool {
        c.events_lost == 0
            && c.duplicated == 0
            && c.out_of_order == 0
            && c.misrouted == 0
            && c.publish_errors == 0
            && c.broadcasts_lost == 0
            && (!self.publishing
                || (c.published == self.events_planned && c.broadcasts == self.broadcasts_planned))
    }

    /// Both kinds together.
    fn deliveries_per_sec(&self, c: &Counters) -> f64 {
        if self.delivery_seconds > 0.0 {
            (c.deliveries + c.broadcast_deliveries) as f64 / self.delivery_seconds
        } else {
            0.0
        }
    }

    fn publish_per_sec(&self, c: &Counters) -> f64 {
        if self.publish_seconds > 0.0 {
            c.published as f64 / self.publish_seconds
        } else {
            0.0
        }
    }
}

impl Summary {
    /// Every connection connected and none was lost.
    pub fn success(&self) -> bool {
        let c = &self.stats.count;
        c.connected == self.connections
            && c.lost == 0
            && c.failed == 0
            && self.sub.as_ref().is_none_or(|s| s.good(c))
    }

    pub fn json(&self) -> String {
        let c = &self.stats.count;
        let mut v = json!({
            "mode": self.mode,
            "connections": self.connections,
            "connected": c.connected,
            "failed": c.failed,
            "lost": c.lost,
            "held_seconds": round3(self.held_seconds),
            "connect_us": percentiles(&self.stats.connect_us),
            "heartbeats_sent": c.heartbeats_sent,
            "heartbeats": c.heartbeats,
            "heartbeat_rtt_us": percentiles(&self.stats.heartbeat_rtt_us),
            "server_pings_received": c.server_pings,
            "server_pings_answered": c.server_pings_answered,
            "closed_clean": c.closed_clean,
            "shards": self.shards,
            "gave_up": self.gave_up,
        });
        if self.tls {
            v["tls"] = json!({ "full": c.tls_full, "resumed": c.tls_resumed });
        }
        if self.mode == "echo" {
            v["message_bytes"] = self.message_bytes.into();
            v["seconds"] = round3(self.measured_seconds).into();
            v["messages"] = c.messages.into();
            v["messages_per_sec"] = self.messages_per_sec.into();
            v["rtt_us"] = percentiles(&self.stats.rtt_us);
        }
        if let Some(sub) = &self.sub {
            v["channels"] = sub.channels.into();
            v["sse"] = sub.sse.into();
            v["publishing"] = sub.publishing.into();
            v["events_planned"] = sub.events_planned.into();
            v["events_published"] = c.published.into();
            v["publish_errors"] = c.publish_errors.into();
            v["publish_seconds"] = round3(sub.publish_seconds).into();
            v["publish_per_sec"] = round3(sub.publish_per_sec(c)).into();
            v["publish_us"] = percentiles(&self.stats.publish_us);
            v["expected_deliveries"] = c.expected.into();
            v["deliveries"] = c.deliveries.into();
            v["delivery_seconds"] = round3(sub.delivery_seconds).into();
            v["deliveries_per_sec"] = round3(sub.deliveries_per_sec(c)).into();
            v["events_lost"] = c.events_lost.into();
            v["duplicated"] = c.duplicated.into();
            v["out_of_order"] = c.out_of_order.into();
            v["misrouted"] = c.misrouted.into();
            v["delivery_us"] = percentiles(&self.stats.delivery_us);
            v["last_subscriber_us"] = percentiles(&self.stats.last_subscriber_us());
            // Each event's time to its last subscriber, in publish order, when there are few
            // enough to list: a tail is found by when it happens, not only by how big it is.
            if self.stats.event_last_us.len() <= MAX_LISTED_EVENTS {
                v["last_subscriber_each_us"] = self.stats.event_last_us.clone().into();
            }
            if let Some(shared) = &sub.shared {
                let (to_all, short) = self.stats.broadcast_to_all_us(c.connected);
                let each: Vec<Value> = (self.stats.broadcast_last_us.iter())
                    .zip(&self.stats.broadcast_count)
                    .enumerate()
                    .map(|(i, (us, n))| json!({"seq": i, "deliveries": n, "to_last_us": us}))
                    .collect();
                v["shared_channel"] = shared.as_str().into();
                v["broadcast_every_s"] = round3(sub.broadcast_every).into();
                v["broadcasts_planned"] = sub.broadcasts_planned.into();
                v["broadcasts_published"] = c.broadcasts.into();
                v["broadcast_expected_deliveries"] = c.broadcast_expected.into();
                v["broadcast_deliveries"] = c.broadcast_deliveries.into();
                v["broadcasts_lost"] = c.broadcasts_lost.into();
                v["broadcast_delivery_us"] = percentiles(&self.stats.broadcast_us);
                v["broadcast_to_all_us"] = percentiles(&to_all);
                v["broadcasts_short"] = short.into();
                v["broadcasts"] = each.into();
            }
        }
        if let Some(server) = &self.server {
            v["server"] = server.clone();
        }
        v.to_string()
    }

    pub fn text(&self) -> String {
        let c = &self.stats.count;
        let mut s = format!(
            "{}: connections {}/{} (failed {}, lost {}){}\nconnect µs:   {}",
            self.mode,
            c.connected,
            self.connections,
            c.failed,
            c.lost,
            if self.shards > 1 {
                format!(", {} shards", self.shards)
            } else {
                String::new()
            },
            line(&self.stats.connect_us),
        );
        if self.tls {
            s += &format!(
                "\ntls handshakes: {} full, {} resumed",
                c.tls_full, c.tls_resumed
            );
        }
        if self.mode == "echo" {
            s += &format!(
                "\nmessages {} of {} bytes in {:.1}s: {:.0} msgs/s\nround trip µs: {}",
                c.messages,
                self.message_bytes,
                self.measured_seconds,
                self.messages_per_sec,
                line(&self.stats.rtt_us),
            );
        } else if let Some(sub) = &self.sub {
            let transport = if sub.sse { " over SSE" } else { "" };
            let (publishing, expected) = if sub.publishing {
                (
                    format!(
                        "published {} of {} (errors {}) in {:.2}s, {:.0}/s; API round trip µs: {}",
                        c.published,
                        sub.events_planned,
                        c.publish_errors,
                        sub.publish_seconds,
                        sub.publish_per_sec(c),
                        line(&self.stats.publish_us),
                    ),
                    format!(" of {} expected", c.expected),
                )
            } else {
                ("published elsewhere".to_string(), String::new())
            };
            s += &format!(
                "\n{} channel(s){transport}: {publishing}\
                 \ndeliveries {}{expected}, {:.0}/s over {:.2}s: lost {}, duplicated {}, out of order {}, misrouted {}\
                 \ndelivery latency µs:   {}\nto last subscriber µs: {}\nheld {:.1}s; server pings {} (answered {}); closed cleanly {}",
                sub.channels,
                c.deliveries,
                sub.deliveries_per_sec(c),
                sub.delivery_seconds,
                c.events_lost,
                c.duplicated,
                c.out_of_order,
                c.misrouted,
                line(&self.stats.delivery_us),
                line(&self.stats.last_subscriber_us()),
                self.held_seconds,
                c.server_pings,
                c.server_pings_answered,
                c.closed_clean,
            );
            if let Some(shared) = &sub.shared {
                let (to_all, short) = self.stats.broadcast_to_all_us(c.connected);
                s += &format!(
                    "\nbroadcasts to {shared} every {:.0}s: published {} of {}; deliveries {} of {} expected, lost {}\
                     \nbroadcast delivery latency µs: {}\nbroadcast to all subscribers µs: {}{}",
                    sub.broadcast_every,
                    c.broadcasts,
                    sub.broadcasts_planned,
                    c.broadcast_deliveries,
                    c.broadcast_expected,
                    c.broadcasts_lost,
                    line(&self.stats.broadcast_us),
                    line(&to_all),
                    if short > 0 {
                        format!(" ({short} broadcast(s) did not reach every subscriber)")
                    } else {
                        String::new()
                    },
                );
            }
        } else {
            s += &format!(
                "\nheld {:.1}s; server pings {} (answered {}); heartbeats {} sent, {} answered\nheartbeat µs: {}\nclosed cleanly {}",
                self.held_seconds,
                c.server_pings,
                c.server_pings_answered,
                c.heartbeats_sent,
                c.heartbeats,
                line(&self.stats.heartbeat_rtt_us),
                c.closed_clean,
            );
        }
        if let Some(v) = &self.server {
            s += &format!("\nserver: {v}");
        }
        if self.gave_up {
            s += "\ngave up: not every connection settled before the deadline";
        }
        s
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
        "count": h.len(),
    })
}

pub fn line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "none".into();
    }
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} (n {})",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_wire_form_merges() {
        let mut a = Stats::new();
        a.count.connected = 3;
        a.count.lost = 1;
        for us in [10, 200, 3_000, 3_000] {
            record(&mut a.connect_us, us);
        }
        record(&mut a.heartbeat_rtt_us, 77);
        let wire: Value = serde_json::from_str(&a.to_json().to_string()).unwrap();
        let mut total = Stats::new();
        total.merge_json(&wire);
        total.merge_json(&wire);
        assert_eq!((total.count.connected, total.count.lost), (6, 2));
        assert_eq!(total.connect_us.len(), 8);
        assert_eq!(total.connect_us.max(), a.connect_us.max());
        assert_eq!(
            total.connect_us.value_at_quantile(0.5),
            a.connect_us.value_at_quantile(0.5)
        );
        assert_eq!(total.heartbeat_rtt_us.len(), 2);
        assert_eq!(total.rtt_us.len(), 0);
    }

    #[test]
    fn broadcasts_merge_to_the_last_subscriber() {
        // Two shards saw broadcasts 0 and 1; the first missed one delivery of broadcast 1.
        let mut a = Stats::new();
        a.broadcast_delivered(0, 900, 10);
        a.broadcast_delivered(0, 1_500, 11);
        a.broadcast_delivered(1, 700, 12);
        let mut b = Stats::new();
        b.broadcast_delivered(0, 2_000, 13);
        b.broadcast_delivered(1, 400, 14);
        b.broadcast_delivered(1, 300, 15);
        let mut total = Stats::new();
        for s in [&a, &b] {
            let wire: Value = serde_json::from_str(&s.to_json().to_string()).unwrap();
            total.merge_json(&wire);
        }
        assert_eq!(total.count.broadcast_deliveries, 6);
        assert_eq!(total.broadcast_last_us, vec![2_000, 700]);
        assert_eq!(total.broadcast_count, vec![3, 3]);
        assert_eq!(total.broadcast_us.len(), 6);
        assert_eq!(total.last_delivery_ns, 15);
        // Three subscribers: both reached all of them.
        let (h, short) = total.broadcast_to_all_us(3);
        assert_eq!((h.len(), short), (2, 0));
        assert_eq!(h.max(), h.highest_equivalent(2_000));
        // Four: neither did.
        assert_eq!(total.broadcast_to_all_us(4).1, 2);
        // Small events are tracked apart.
        assert!(total.event_last_us.is_empty() && total.count.deliveries == 0);
    }
}
