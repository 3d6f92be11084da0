//! `/metrics` as a whole, from the real binary after traffic of every kind: `promtool check
//! metrics` (Prometheus's own linter) accepts it without a remark, with one process and under a
//! supervisor, and the series Prometheus users expect are there with sane values.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs `promtool check metrics` on one exposition; panics with its remarks unless it exits 0
/// and says nothing.
fn promtool_accepts(exposition: &str) {
    let promtool = tools::deb_tool("prometheus", "promtool");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let remarks = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && remarks.trim().is_empty(),
        "promtool check metrics: {}\n{remarks}\nin:\n{exposition}",
        out.status
    );
}

/// Every sample of an exposition: series (name and labels, as written) → value.
fn samples(exposition: &str) -> HashMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let value = value.parse().unwrap_or_else(|_| panic!("value of {l:?}"));
            (series.to_string(), value)
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:?}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `process_*` series of one process (`labels` is `""` or `{process="i"}`) are there and
/// sane for a server that started at `started` (Unix seconds).
fn process_series_are_sane(samples: &HashMap<String, f64>, labels: &str, started: f64) {
    let get = |name: &str| value(samples, &format!("{name}{labels}"));
    assert!(get("process_resident_memory_bytes") > 0.0, "{labels}");
    assert!(
        get("process_virtual_memory_bytes") >= get("process_resident_memory_bytes"),
        "{labels}"
    );
    assert!(get("process_open_fds") > 0.0, "{labels}");
    assert!(
        get("process_max_fds") >= get("process_open_fds"),
        "{labels}"
    );
    assert!(get("process_cpu_seconds_total") >= 0.0, "{labels}");
    // The boot time behind it is whole seconds: allow one either side.
    let start = get("process_start_time_seconds");
    assert!(
        start >= started - 1.0 && start <= unix_now() + 1.0,
        "{labels}: started at {start}, the test started it at {started}"
    );
}

/// A WebSocket upgrade (101), answered and then dropped.
fn upgrade(srv: &Server) {
    let (_ws, resp) =
        tungstenite::client(format!("ws://{}/ws", srv.addr), srv.connect()).expect("handshake");
    assert_eq!(resp.status(), 101);
}

/// A POST that waits for `100 Continue` before sending its body: one final response.
fn post_after_continue(srv: &Server) {
    let (mut r, mut w) = srv.pair();
    w.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    assert_eq!(read_response_ext(&mut r, false, true).unwrap().status, 100);
    w.write_all(b"ping").unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
}

#[test]
fn one_process_passes_promtool_with_every_series() {
    let started = unix_now();
    let srv = Server::start(&[]);
    for _ in 0..3 {
        assert_eq!(srv.get("/plaintext").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(srv.get("/nope").status, 404);
    }
    upgrade(&srv);
    post_after_continue(&srv);

    let text = srv.get("/metrics").text();
    promtool_accepts(&text);
    let s = samples(&text);
    // The scrape's own 200 is counted after it renders; 100 Continue is not a final response.
    for (class, n) in [
        ("1xx", 1.0),
        ("2xx", 4.0),
        ("3xx", 0.0),
        ("4xx", 2.0),
        ("5xx", 0.0),
    ] {
        assert_eq!(
            value(&s, &format!("holdfast_responses_total{{code=\"{class}\"}}")),
            n,
            "{class}"
        );
    }
    assert!(value(&s, "holdfast_received_bytes_total") > 0.0);
    assert!(value(&s, "holdfast_sent_bytes_total") > 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&s, &format!("holdfast_build_info{{version=\"{version}\"}}")),
        1.0
    );
    process_series_are_sane(&s, "", started);
}

#[test]
fn under_a_supervisor_every_scrape_passes_promtool_and_reports_every_process() {
    let started = unix_now();
    let srv = Server::start(&["server.processes=2", "server.workers=1"]);
    // Enough connections that SO_REUSEPORT gives each process some.
    for _ in 0..10 {
        assert_eq!(srv.get("/plaintext").status, 200);
        assert_eq!(srv.get("/nope").status, 404);
    }
    for _ in 0..4 {
        upgrade(&srv);
    }
    // Each scrape is answered by one process, which must report both (reading the other's
    // /proc), whichever it is.
    for _ in 0..6 {
        let text = srv.get("/metrics").text();
        promtool_accepts(&text);
        let s = samples(&text);
        let both = |series: &str| -> f64 {
            (0..2)
                .map(|p| value(&s, &series.replace("{", &format!("{{process=\"{p}\","))))
                .sum()
        };
        assert!(both("holdfast_responses_total{code=\"2xx\"}") >= 10.0);
        assert_eq!(both("holdfast_responses_total{code=\"4xx\"}"), 10.0);
        assert_eq!(both("holdfast_responses_total{code=\"1xx\"}"), 4.0);
        for p in 0..2 {
            let labels = format!("{{process=\"{p}\"}}");
            process_series_are_sane(&s, &labels, started);
            assert!(value(&s, &format!("holdfast_process_pid{labels}")) > 0.0);
        }
        assert!(
            !s.keys().any(|k| k.contains("process=\"2\"")),
            "two processes only"
        );
    }
}

#[test]
#[should_panic(expected = "bar no help text")]
fn a_remark_from_promtool_fails_the_check() {
    promtool_accepts("bar 2\n");
}
