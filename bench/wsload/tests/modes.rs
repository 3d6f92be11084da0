//! End-to-end tests of wsload's modes against the real holdfast server: the `holdfast` binary
//! from the same target directory (`cargo test --workspace` builds it), started on ephemeral
//! loopback ports and killed by PID when a test ends, and the real `wsload` binary, whose
//! `--json` summary, exit code and stderr are checked.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running holdfast, killed when dropped.
struct Server {
    child: Child,
    plain: SocketAddr,
    tls: SocketAddr,
}

/// target/<profile>/holdfast, beside the directory (deps/) this test binary lives in.
fn holdfast_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join("holdfast");
    assert!(
        path.exists(),
        "{} is missing: build the server first (cargo test --workspace does)",
        path.display()
    );
    path
}

impl Server {
    /// `holdfast serve` with one worker, plain and TLS listeners on 127.0.0.1:0, plus `sets`.
    fn start(sets: &[&str]) -> Server {
        let mut cmd = Command::new(holdfast_binary());
        cmd.arg("serve");
        for s in [
            "server.listen=127.0.0.1:0",
            "server.tls_listen=127.0.0.1:0",
            "server.workers=1",
        ]
        .iter()
        .chain(sets)
        {
            cmd.arg("--set").arg(s);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdfast");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keeps reading for the server's whole life, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            plain: "0.0.0.0:0".parse().unwrap(),
            tls: "0.0.0.0:0".parse().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("holdfast did not become ready; log: {log:?}");
            };
            let addr = |rest: &str| rest.split_whitespace().next().unwrap().parse().unwrap();
            if let Some(rest) = line.strip_prefix("holdfast: listening on http://") {
                server.plain = addr(rest);
            } else if let Some(rest) = line.strip_prefix("holdfast: listening on https://") {
                server.tls = addr(rest);
            } else if line == "holdfast: ready" {
                return server;
            }
            log.push(line);
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        let addr = if scheme == "wss" || scheme == "https" {
            self.tls
        } else {
            self.plain
        };
        format!("{scheme}://{addr}{path}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "no JSON summary ({e}): stdout {:?} stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs wsload to the end (killed, and the test failed, if it takes over a minute).
fn wsload<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsload"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wsload");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsload {args:?} did not finish in a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// (connected, failed, lost) of a report.
fn outcome(j: &Value) -> (u64, u64, u64) {
    (count(j, "connected"), count(j, "failed"), count(j, "lost"))
}

#[test]
fn idle_holds_and_answers_server_pings() {
    let server = Server::start(&["websocket.ping_interval=1s"]);
    let url = server.url("ws", "/ws");
    let run = wsload(&["idle", "--url", &url, "-c", "300", "--hold", "3s", "--json"]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(j["mode"], "idle");
    assert_eq!(outcome(&j), (300, 0, 0));
    assert!(count(&j, "server_pings_received") > 0, "{j}");
    assert!(count(&j, "server_pings_answered") > 0, "{j}");
    assert_eq!(j["connect_us"]["count"], 300);
    assert_eq!(count(&j, "closed_clean"), 300);
    assert!(j["held_seconds"].as_f64().unwrap() >= 2.9, "{j}");
    assert!(j.get("tls").is_none());
    // Not a terminal: plain progress lines, no carriage returns.
    assert!(run.stderr.contains("wsload: "), "{}", run.stderr);
    assert!(!run.stderr.contains('\r'));
}

#[test]
fn idle_heartbeats_measure_round_trips() {
    let server = Server::start(&["websocket.ping_interval=0"]);
    let url = server.url("ws", "/ws");
    let run = wsload(&[
        "idle",
        "--url",
        &url,
        "-c",
        "100",
        "--hold",
        "2s",
        "--heartbeat",
        "500ms",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert!(j["heartbeat_rtt_us"]["count"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["heartbeat_rtt_us"]["count"], j["heartbeats"]);
    assert!(count(&j, "heartbeats_sent") >= count(&j, "heartbeats"));
    assert_eq!(count(&j, "server_pings_received"), 0);
}

#[test]
fn http_idle_holds_keepalive_connections() {
    let server = Server::start(&["http.keepalive_timeout=60s"]);
    let url = server.url("http", "/plaintext");
    let run = wsload(&[
        "http-idle",
        "--url",
        &url,
        "-c",
        "200",
        "--hold",
        "2s",
        "--heartbeat",
        "500ms",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(j["mode"], "http-idle");
    assert_eq!(outcome(&j), (200, 0, 0));
    assert_eq!(j["connect_us"]["count"], 200);
    assert!(count(&j, "heartbeats") > 0, "{j}");
}

#[test]
fn idle_over_tls_resumes_sessions() {
    let server = Server::start(&[]);
    let url = server.url("wss", "/ws");
    let args = |c: &'static str| {
        vec![
            "idle".to_string(),
            "--url".into(),
            url.clone(),
            "--insecure".into(),
            "-c".into(),
            c.into(),
            "--ramp".into(),
            "100".into(),
            "--hold".into(),
            "1s".into(),
            "--json".into(),
        ]
    };
    let run = wsload(&args("50"));
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    let tls = |j: &Value| (count(&j["tls"], "full"), count(&j["tls"], "resumed"));
    let (full, resumed) = tls(&j);
    assert_eq!(full + resumed, 50, "{j}");
    assert!(full >= 1 && resumed > 0, "{j}");

    let mut no_resume = args("10");
    no_resume.push("--no-resume".into());
    let j = wsload(&no_resume).json();
    assert_eq!(tls(&j), (10, 0), "{j}");
}

#[test]
fn http_idle_over_tls12_resumes_sessions() {
    let server = Server::start(&[]);
    let url = server.url("https", "/plaintext");
    let run = wsload(&[
        "http-idle",
        "--url",
        &url,
        "--insecure",
        "--tls-version",
        "1.2",
        "-c",
        "30",
        "--ramp",
        "100",
        "--hold",
        "1s",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(count(&j, "connected"), 30);
    assert!(j["tls"]["resumed"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn shards_merge_into_one_report() {
    let server = Server::start(&["websocket.ping_interval=1s"]);
    let url = server.url("ws", "/ws");
    let run = wsload(&[
        "idle",
        "--url",
        &url,
        "-c",
        "201",
        "--shards",
        "2",
        "--hold",
        "1500ms",
        "--heartbeat",
        "300ms",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(count(&j, "shards"), 2);
    assert_eq!(outcome(&j), (201, 0, 0));
    assert_eq!(j["connect_us"]["count"], 201);
    assert_eq!(count(&j, "closed_clean"), 201);
    assert_eq!(j["heartbeat_rtt_us"]["count"], j["heartbeats"]);
    assert!(count(&j, "heartbeats") > 201, "{j}");
    // The parent shows the merged progress; the shards' JSON lines stay between them.
    assert!(!run.stderr.contains('{'), "{}", run.stderr);
}

#[test]
fn connections_the_server_closes_count_as_lost() {
    let server = Server::start(&["websocket.ping_interval=0", "websocket.idle_timeout=1s"]);
    let url = server.url("ws", "/ws");
    let run = wsload(&["idle", "--url", &url, "-c", "40", "--hold", "3s", "--json"]);
    let j = run.json();
    assert_eq!(run.code, 1, "{j} {}", run.stderr);
    assert_eq!((count(&j, "connected"), count(&j, "lost")), (40, 40), "{j}");
}

#[test]
fn echo_reports_messages_per_second() {
    let server = Server::start(&[]);
    let url = server.url("ws", "/ws");
    let run = wsload(&[
        "echo",
        "--url",
        &url,
        "-c",
        "10",
        "--size",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(j["mode"], "echo");
    assert_eq!(count(&j, "message_bytes"), 200);
    assert!(j["messages_per_sec"].as_f64().unwrap() > 0.0, "{j}");
    assert_eq!(j["rtt_us"]["count"], j["messages"]);
    assert!(j["seconds"].as_f64().unwrap() >= 0.9);
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["idle", "--bogus"][..],
        &["idle", "--url", "http://127.0.0.1:1/"],
        &["http-idle", "--url", "ftp://127.0.0.1:1/"],
        &["idle", "--hold", "3 parsecs"],
        &["idle", "-c", "0"],
        &["idle", "--url", "wss://127.0.0.1:1/ws"],
        &["idle", "--tls-version", "1.1"],
        &["echo", "--shards", "0"],
        &["subscribe", "--channels", "0"],
        &["subscribe", "--publish-rate", "10", "--events", "0"],
        &["subscribe", "--sse", "--url", "ftp://127.0.0.1:1/"],
        // nchan over SSE is fine; with a shared channel it is not, over either transport.
        &[
            "subscribe",
            "--sse",
            "--peer",
            "nchan",
            "--shared-channel",
            "all",
        ],
        &["subscribe", "--peer", "mqtt"],
        &["subscribe", "--server-pid", "1"],
        &["subscribe", "--server-pid", "me", "--publish-rate", "1"],
        &["subscribe", "--other-pid", "1", "--publish-rate", "1"],
        &[
            "subscribe",
            "--publish-url",
            "ftp://127.0.0.1:1/",
            "--publish-rate",
            "1",
        ],
        &[
            "subscribe",
            "--server-pid",
            "1",
            "--metrics-url",
            "https://127.0.0.1:1/metrics",
            "--publish-rate",
            "1",
        ],
        &[
            "subscribe",
            "--peer",
            "nchan",
            "--shared-channel",
            "all",
            "--publish-rate",
            "10",
        ],
        &[
            "publish",
            "--peer",
            "nchan",
            "--shared-channel",
            "all",
            "--broadcast-every",
            "1s",
            "--publish-duration",
            "5s",
        ],
        &["publish"],
        &[
            "subscribe",
            "--broadcast-every",
            "1s",
            "--publish-rate",
            "10",
        ],
        &[
            "subscribe",
            "--shared-channel",
            "bench-0",
            "--publish-rate",
            "10",
        ],
        &[
            "publish",
            "--shared-channel",
            "all",
            "--broadcast-every",
            "20s",
        ],
        &[],
    ] {
        let run = wsload(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {:?}", run.stderr);
        assert!(run.stderr.starts_with("wsload: "), "{:?}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn handshakes_counts_full_and_resumed_for_both_versions() {
    let server = Server::start(&[]);
    let url = server.url("https", "/");
    let run = |version: &str, resume: bool| {
        let mut args = vec![
            "handshakes",
            "--url",
            &url,
            "--insecure",
            "--tls-version",
            version,
            "-c",
            "8",
            "--duration",
            "1s",
            "--json",
        ];
        if !resume {
            args.push("--no-resume");
        }
        let run = wsload(&args);
        let j = run.json();
        assert_eq!(run.code, 0, "{j} {}", run.stderr);
        assert_eq!(count(&j, "failed"), 0, "{j}");
        (count(&j, "full"), count(&j, "resumed"))
    };
    for version in ["1.2", "1.3"] {
        let (full, resumed) = run(version, false);
        assert!(
            full > 20 && resumed == 0,
            "{version} --no-resume: {full} full, {resumed}"
        );
        let (full, resumed) = run(version, true);
        // The first connection (1.2) or the first of each slot (1.3) has no session yet.
        assert!(
            full <= 8 && resumed > 20,
            "{version}: {full} full, {resumed} resumed"
        );
    }
}

/// A publishing subscribe run against holdfast's channels (CHANNELS.md): every event reaches
/// every subscriber of its channel once, in order.
fn subscribe_run(sse: bool) {
    let server = Server::start(&["websocket.ping_interval=1s"]);
    let url = if sse {
        server.url("http", "/")
    } else {
        server.url("ws", "/")
    };
    let mut args = vec![
        "subscribe",
        "--url",
        &url,
        "-c",
        "200",
        "--shards",
        "2",
        "--channels",
        "4",
        "--publish-rate",
        "400",
        "--events",
        "200",
        "--json",
    ];
    if sse {
        args.push("--sse");
    }
    let run = wsload(&args);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(outcome(&j), (200, 0, 0));
    assert_eq!(count(&j, "events_published"), 200);
    // 50 events on each channel, 50 subscribers on each.
    assert_eq!(count(&j, "expected_deliveries"), 4 * 50 * 50, "{j}");
    assert_eq!(count(&j, "deliveries"), 4 * 50 * 50, "{j}");
    for key in ["events_lost", "duplicated", "out_of_order", "misrouted"] {
        assert_eq!(count(&j, key), 0, "{key}: {j}");
    }
    assert_eq!(j["last_subscriber_us"]["count"], 200);
}

#[test]
fn subscribe_counts_every_delivery() {
    subscribe_run(false);
}

/// Publishing to another address than the subscribers' (--publish-url), several server pids
/// summed, another process apart, and the metrics pages' growth over the publishing window.
#[test]
fn subscribe_watches_several_processes_and_metrics_pages() {
    let server = Server::start(&[]);
    let url = server.url("ws", "/");
    let publish = server.url("http", "/");
    let metrics = server.url("http", "/metrics");
    let pid = server.child.id().to_string();
    let run = wsload(&[
        "subscribe",
        "--url",
        &url,
        "--publish-url",
        &publish,
        "--publish-delay",
        "300ms",
        "-c",
        "50",
        "--channels",
        "2",
        "--publish-rate",
        "200",
        "--events",
        "20",
        "--server-pid",
        &pid,
        "--server-pid",
        &pid,
        "--other-pid",
        &pid,
        "--metrics-url",
        &metrics,
        "--metrics-series",
        "holdfast_channel_deliveries_total",
        "--metrics-series",
        "holdfast_channel_connections",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    // 10 events on each channel, 25 subscribers on each.
    assert_eq!(count(&j, "deliveries"), 500, "{j}");
    let s = &j["server"];
    assert_eq!(s["processes"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["others"].as_array().unwrap().len(), 1, "{s}");
    let one = &s["processes"][0];
    assert_eq!(
        s["rss_settled_kib"],
        2 * one["rss_settled_kib"].as_u64().unwrap()
    );
    let m = &s["metrics"];
    assert_eq!(m["complete"], true, "{m}");
    assert_eq!(
        m["sum"]["holdfast_channel_deliveries_total{app=\"app-id\"}"], 500.0,
        "{m}"
    );
    let page = &m["urls"][0];
    assert_eq!(page["url"], metrics.as_str());
    assert_eq!(
        page["subscribed"]["holdfast_channel_connections{app=\"app-id\"}"],
        50.0
    );
    assert!(m["window_s"].as_f64().unwrap() > 0.0, "{m}");
    assert!(
        run.stderr.contains("all subscribed; publishing in 0.3s"),
        "{}",
        run.stderr
    );
}

/// Every subscriber on its own channel and on a shared one, against two server processes
/// (joined by their bus): small events on the four channels, broadcasts to all, each counted
/// apart, and each broadcast's time to the last subscriber reported.
#[test]
fn subscribe_with_a_shared_channel_counts_broadcasts_apart() {
    let server = Server::start(&["server.processes=2"]);
    let url = server.url("ws", "/");
    let run = wsload(&[
        "subscribe",
        "--url",
        &url,
        "-c",
        "200",
        "--shards",
        "2",
        "--channels",
        "4",
        "--publish-rate",
        "400",
        "--events",
        "400",
        "--shared-channel",
        "all",
        "--broadcast-every",
        "300ms",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(outcome(&j), (200, 0, 0));
    // 400 events over 1 s: 100 on each channel, 50 subscribers on each; 3 broadcasts to 200.
    assert_eq!(count(&j, "events_published"), 400);
    assert_eq!(count(&j, "deliveries"), 4 * 100 * 50, "{j}");
    assert_eq!(count(&j, "broadcasts_published"), 3, "{j}");
    assert_eq!(count(&j, "broadcast_expected_deliveries"), 600, "{j}");
    assert_eq!(count(&j, "broadcast_deliveries"), 600, "{j}");
    for key in [
        "events_lost",
        "broadcasts_lost",
        "duplicated",
        "out_of_order",
        "misrouted",
    ] {
        assert_eq!(count(&j, key), 0, "{key}: {j}");
    }
    assert_eq!(j["shared_channel"], "all");
    assert_eq!(j["broadcast_to_all_us"]["count"], 3, "{j}");
    assert_eq!(count(&j, "broadcasts_short"), 0);
    let each = j["broadcasts"].as_array().unwrap();
    assert_eq!(each.len(), 3);
    for b in each {
        assert_eq!(b["deliveries"], 200, "{b}");
        assert!(b["to_last_us"].as_u64().unwrap() > 0);
    }
    assert!(run.stderr.contains("publishing started"), "{}", run.stderr);
}

/// Broadcasts alone: no small events, --publish-duration sets how many.
#[test]
fn broadcasts_without_small_events() {
    let server = Server::start(&[]);
    let url = server.url("ws", "/");
    let run = wsload(&[
        "subscribe",
        "--url",
        &url,
        "-c",
        "50",
        "--shared-channel",
        "all",
        "--broadcast-every",
        "200ms",
        "--publish-duration",
        "1s",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(count(&j, "events_planned"), 0);
    assert_eq!(count(&j, "deliveries"), 0);
    assert_eq!(count(&j, "broadcasts_published"), 5, "{j}");
    assert_eq!(count(&j, "broadcast_deliveries"), 250, "{j}");
    assert_eq!(count(&j, "broadcasts_lost"), 0);
}

#[test]
#[ignore = "needs holdfast's Server-Sent Events (CHANNELS.md §4, issue 16)"]
fn subscribe_counts_every_delivery_over_sse() {
    subscribe_run(true);
}

/// A server that closes keep-alive connections after 10 requests (`Connection: close`): the
/// publisher reopens before its next request and loses nothing.
#[test]
fn publisher_reopens_when_the_server_closes() {
    let server = Server::start(&["http.keepalive_requests=10"]);
    let url = server.url("http", "/");
    let run = wsload(&[
        "publish",
        "--url",
        &url,
        "--publish-rate",
        "200",
        "--events",
        "100",
        "--publishers",
        "1",
        "--shared-channel",
        "all",
        "--broadcast-every",
        "100ms",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 0, "{j} {}", run.stderr);
    assert_eq!(count(&j, "events_published"), 100);
    assert_eq!(count(&j, "broadcasts_published"), 5);
    assert_eq!(count(&j, "publish_errors"), 0);
}

/// A publisher with the wrong secret gets 401s, counted as publish errors.
#[test]
fn publish_with_a_wrong_secret_fails() {
    let server = Server::start(&[]);
    let url = server.url("http", "/");
    let run = wsload(&[
        "publish",
        "--url",
        &url,
        "--publish-rate",
        "100",
        "--events",
        "10",
        "--secret",
        "wrong",
        "--json",
    ]);
    let j = run.json();
    assert_eq!(run.code, 1, "{j} {}", run.stderr);
    assert_eq!(
        (count(&j, "events_published"), count(&j, "publish_errors")),
        (0, 10)
    );
}
