//! Owns watching the servers under test (`subscribe --server-pid PID…`): their CPU time (utime
//! and stime, /proc/PID/stat, summed over its threads) and resident memory (VmRSS,
//! /proc/PID/status) read at the run's milestones — before the subscribers connect, once every
//! one has subscribed (publishing starts then), and once the deliveries have settled — so that
//! a benchmark gets the server's memory per idle subscriber and its CPU time over exactly the
//! publishing window, with no guessing from outside when those moments were.
//!
//! Several `--server-pid`s (the nodes of a cluster) are summed into the `server` figures and
//! also listed one by one under `processes`. `--other-pid`s (a Redis, a proxy in front) are
//! read at the same moments but only listed, under `others`, never added to the server's.
//! `--metrics-url`s (Prometheus text, holdfast's `/metrics`) are fetched at the same moments
//! too; the `metrics` object gives, per URL and summed over them, how much each series whose
//! name starts with one of the `--metrics-series` grew over the publishing window (and per URL
//! its value when publishing started: a gauge such as the connections open), and that
//! window's length, so a per-event figure can be taken from exactly the time the CPU was.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User and system CPU time, in seconds.
    pub user_s: f64,
    pub sys_s: f64,
    pub rss_kib: u64,
}

/// Where to fetch a metrics page.
#[derive(Clone, Debug)]
pub struct MetricsUrl {
    /// As given, for the report.
    pub url: String,
    pub addr: SocketAddr,
    pub authority: String,
    pub path: String,
}

/// Everything read at one milestone: each process (servers first, then others), each
/// metrics page (the matching series), and when.
#[derive(Clone, Debug)]
pub struct Reading {
    procs: Vec<Option<Sample>>,
    metrics: Vec<Option<BTreeMap<String, f64>>>,
    at: Instant,
}

/// The readings of one run, taken as it passes each milestone.
pub struct Watch {
    servers: Vec<u32>,
    others: Vec<u32>,
    urls: Vec<MetricsUrl>,
    series: Vec<String>,
    tick: f64,
    pub before: Option<Reading>,
    pub subscribed: Option<Reading>,
    pub settled: Option<Reading>,
}

/// How long one metrics fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

impl Watch {
    pub fn new(
        servers: Vec<u32>,
        others: Vec<u32>,
        urls: Vec<MetricsUrl>,
        series: Vec<String>,
    ) -> Watch {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Watch {
            servers,
            others,
            urls,
            series,
            tick: 1.0 / if hz > 0 { hz as f64 } else { 100.0 },
            before: None,
            subscribed: None,
            settled: None,
        }
    }

    /// Reads one process now (None once it is gone).
    fn sample_pid(&self, pid: u32) -> Option<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let (user, sys) = parse_stat(&stat)?;
        Some(Sample {
            user_s: user as f64 * self.tick,
            sys_s: sys as f64 * self.tick,
            rss_kib: parse_rss(&status)?,
        })
    }

    /// Reads every process and metrics page now.
    pub fn sample(&self) -> Reading {
        let procs = (self.servers.iter().chain(&self.others))
            .map(|&p| self.sample_pid(p))
            .collect();
        let metrics = self
            .urls
            .iter()
            .map(|u| {
                fetch(u)
                    .map_err(|e| eprintln!("wsload: metrics {}: {e}", u.url))
                    .ok()
                    .map(|text| parse_metrics(&text, &self.series))
            })
            .collect();
        Reading {
            procs,
            metrics,
            at: Instant::now(),
        }
    }

    /// Process `i`'s figures (servers first, then others).
    fn process_json(&self, i: usize, pid: u32) -> Value {
        let get = |r: &Option<Reading>| r.as_ref().and_then(|r| r.procs.get(i).copied().flatten());
        let (a, b) = (get(&self.subscribed), get(&self.settled));
        let (user, sys) = match (a, b) {
            (Some(a), Some(b)) => (b.user_s - a.user_s, b.sys_s - a.sys_s),
            _ => (0.0, 0.0),
        };
        json!({
            "pid": pid,
            "rss_before_kib": get(&self.before).map(|s| s.rss_kib),
            "rss_subscribed_kib": a.map(|s| s.rss_kib),
            "rss_settled_kib": b.map(|s| s.rss_kib),
            "publish_cpu_user_s": round3(user),
            "publish_cpu_sys_s": round3(sys),
        })
    }

    /// The metrics object: per URL and summed, each series' growth over the window.
    fn metrics_json(&self) -> Value {
        let (Some(a), Some(b)) = (&self.subscribed, &self.settled) else {
            return json!({"window_s": 0.0, "complete": false, "sum": {}, "urls": []});
        };
        let mut sum: BTreeMap<String, f64> = BTreeMap::new();
        let mut complete = true;
        let mut urls = Vec::new();
        for (i, u) in self.urls.iter().enumerate() {
            let (Some(Some(from)), Some(Some(to))) = (a.metrics.get(i), b.metrics.get(i)) else {
                complete = false;
                urls.push(json!({"url": u.url, "subscribed": Value::Null, "delta": Value::Null}));
                continue;
            };
            let delta = deltas(from, to);
            for (k, v) in &delta {
                *sum.entry(k.clone()).or_default() += v;
            }
            urls.push(json!({"url": u.url, "subscribed": from, "delta": delta}));
        }
        json!({
            "window_s": round3(b.at.saturating_duration_since(a.at).as_secs_f64()),
            "complete": complete,
            "sum": sum,
            "urls": urls,
        })
    }

    /// The `server` object of the report: the servers summed (with each one under
    /// `processes`), the others one by one, and the metrics.
    pub fn json(&self) -> Value {
        let procs: Vec<Value> = (self.servers.iter().enumerate())
            .map(|(i, &p)| self.process_json(i, p))
            .collect();
        let others: Vec<Value> = (self.others.iter().enumerate())
            .map(|(i, &p)| self.process_json(self.servers.len() + i, p))
            .collect();
        // A sum over the servers, None if any of them was not read.
        let rss = |key: &str| -> Option<u64> {
            procs.iter().map(|p| p[key].as_u64()).sum::<Option<u64>>()
        };
        let cpu = |key: &str| round3(procs.iter().filter_map(|p| p[key].as_f64()).sum());
        let mut v = Map::new();
        v.insert("pid".into(), json!(self.servers.first()));
        v.insert("pids".into(), json!(self.servers));
        for key in ["rss_before_kib", "rss_subscribed_kib", "rss_settled_kib"] {
            v.insert(key.into(), json!(rss(key)));
        }
        for key in ["publish_cpu_user_s", "publish_cpu_sys_s"] {
            v.insert(key.into(), json!(cpu(key)));
        }
        v.insert("processes".into(), Value::Array(procs));
        v.insert("others".into(), Value::Array(others));
        if !self.urls.is_empty() {
            v.insert("metrics".into(), self.metrics_json());
        }
        Value::Object(v)
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How much each series grew from `a` to `b` (a series missing at `a` counts from 0).
fn deltas(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// GET the page, `Connection: close`, and return its body.
fn fetch(u: &MetricsUrl) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&u.addr, FETCH_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(FETCH_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(FETCH_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        u.path, u.authority
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    response_body(&raw)
}

/// The body of a whole response read to its end: by Content-Length, chunked, or all of it.
fn response_body(raw: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("no end of the response head")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("status {status}"));
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").ok_or("bad chunk")?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| "bad chunk size")?;
            if size == 0 {
                return Ok(out);
            }
            out.push_str(after.get(..size).ok_or("short chunk")?);
            rest = after.get(size + 2..).ok_or("short chunk")?;
        }
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => Ok(body.get(..n).ok_or("short body")?.to_string()),
        None => Ok(body.to_string()),
    }
}

/// The samples of a Prometheus text page whose series (name and labels as written) start
/// with one of `prefixes`.
fn parse_metrics(text: &str, prefixes: &[String]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || !prefixes.iter().any(|p| line.starts_with(p.as_str())) {
            continue;
        }
        // The series ends at the labels' closing brace, or at the first blank without any.
        let end = match (line.find('{'), line.find(char::is_whitespace)) {
            (Some(b), Some(w)) if b < w => line.rfind('}').map(|i| i + 1),
            (_, w) => w,
        };
        let Some(end) = end else { continue };
        let (series, rest) = line.split_at(end);
        if let Some(Ok(v)) = rest.split_whitespace().next().map(str::parse::<f64>) {
            out.insert(series.to_string(), v);
        }
    }
    out
}

/// utime and stime (clock ticks) from /proc/PID/stat: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// VmRSS in KiB from /proc/PID/status.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        let stat = "4242 (nginx: a (b) c) S 1 4242 4242 0 -1 4194624 3000 0 0 0 \
                    1234 567 0 0 20 0 1 0 100 200000000 5000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((1234, 567)));
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tholdfast\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t2\n";
        assert_eq!(parse_rss(status), Some(12345));
        // This process can be read.
        let me = std::process::id();
        let w = Watch::new(vec![me], vec![], vec![], vec![]);
        assert!(w.sample_pid(me).unwrap().rss_kib > 0);
    }

    #[test]
    fn sums_the_servers_and_lists_the_others() {
        let me = std::process::id();
        let mut w = Watch::new(vec![me, me], vec![me], vec![], vec![]);
        let s = |user_s, rss_kib| {
            Some(Sample {
                user_s,
                sys_s: 0.5 * user_s,
                rss_kib,
            })
        };
        let reading = |procs| {
            Some(Reading {
                procs,
                metrics: vec![],
                at: Instant::now(),
            })
        };
        w.before = reading(vec![s(0.0, 10), s(0.0, 20), s(0.0, 5)]);
        w.subscribed = reading(vec![s(1.0, 30), s(2.0, 40), s(1.0, 6)]);
        w.settled = reading(vec![s(2.0, 31), s(4.0, 41), None]);
        let v = w.json();
        assert_eq!(v["rss_before_kib"], 30);
        assert_eq!(v["rss_subscribed_kib"], 70);
        assert_eq!(v["publish_cpu_user_s"], 3.0);
        assert_eq!(v["publish_cpu_sys_s"], 1.5);
        assert_eq!(v["processes"].as_array().unwrap().len(), 2);
        assert_eq!(v["processes"][1]["publish_cpu_user_s"], 2.0);
        // The other's last reading is missing: no CPU for it, and none added to the servers.
        assert_eq!(v["others"][0]["rss_settled_kib"], Value::Null);
        assert_eq!(v["others"][0]["publish_cpu_user_s"], 0.0);
        assert!(v.get("metrics").is_none());
    }

    #[test]
    fn reads_metrics_pages() {
        let page = "# HELP holdfast_channel_bus_messages_total Channel messages.\n\
                    # TYPE holdfast_channel_bus_messages_total counter\n\
                    holdfast_channel_bus_messages_total{direction=\"in\"} 36\n\
                    holdfast_channel_bus_messages_total{direction=\"out\"} 5\n\
                    holdfast_channel_bus_errors_total 2 1700000000000\n\
                    holdfast_connections_open 1\n\
                    holdfast_odd{x=\"a b\"} 7\n";
        let bus = ["holdfast_channel_bus_".to_string()];
        let m = parse_metrics(page, &bus);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m["holdfast_channel_bus_messages_total{direction=\"in\"}"],
            36.0
        );
        assert_eq!(m["holdfast_channel_bus_errors_total"], 2.0);
        let two = [
            "holdfast_odd".to_string(),
            "holdfast_connections".to_string(),
        ];
        let m2 = parse_metrics(page, &two);
        assert_eq!(m2["holdfast_odd{x=\"a b\"}"], 7.0);
        assert_eq!(m2["holdfast_connections_open"], 1.0);
        let later = parse_metrics(&page.replace("} 5", "} 25"), &bus);
        let d = deltas(&m, &later);
        assert_eq!(
            d["holdfast_channel_bus_messages_total{direction=\"out\"}"],
            20.0
        );
        assert_eq!(d["holdfast_channel_bus_errors_total"], 0.0);

        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(response_body(plain).unwrap(), "hello");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(response_body(chunked).unwrap(), "hello");
        let closed = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(response_body(closed).unwrap(), "hello");
        assert!(response_body(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }
}
