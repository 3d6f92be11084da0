//! Pusher Channels (shared/CHANNELS.md) against the real binary, with the real clients people
//! use: pusher-js subscribing over WebSocket and the official `pusher` server SDK publishing
//! through the HTTP API, both in Node (tests/js/channels.js), plus the PyPI `pusher` SDK.
//! Each scenario script prints a PASS or FAIL line per check; a test passes when its script
//! exits 0 with no FAIL line. Node and the npm packages come from `common::tools`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Longest a scenario may run; the scripts have their own, shorter, deadline (30 s).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `node tests/js/channels.js SCENARIO` against `srv` with `env` added; asserts that it
/// passed and that every check named in `expect` is among its PASS lines.
fn scenario(srv: &Server, name: &str, env: &[(&str, &str)], expect: &[&str]) -> String {
    scenario_of("channels.js", srv, name, env, expect)
}

/// `scenario` for another script of tests/js.
fn scenario_of(
    script: &str,
    srv: &Server,
    name: &str,
    env: &[(&str, &str)],
    expect: &[&str],
) -> String {
    let script = format!("{}/tests/js/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = common::tools::node_with_pusher();
    cmd.arg(script)
        .arg(name)
        .env("HOST", srv.addr.ip().to_string())
        .env("PORT", srv.addr.port().to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = run_bounded(cmd, SCENARIO_TIMEOUT);
    let failures: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert!(
        run.success && failures.is_empty(),
        "scenario {name} failed:\n{}\n--- stdout:\n{}\n--- stderr:\n{}\n--- holdfast log (last lines):\n{}",
        failures.join("\n"),
        run.stdout,
        run.stderr,
        tail(&srv.log_text(), 40)
    );
    let last = run.stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("OK {name}: ")),
        "no OK line at the end:\n{}",
        run.stdout
    );
    for check in expect {
        assert!(
            run.stdout.lines().any(|l| l == format!("PASS {check}")),
            "scenario {name} did not run the check {check:?}:\n{}",
            run.stdout
        );
    }
    run.stdout
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A scratch directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-channels-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Apps from a config file: the second's secret read from a file with a trailing newline, and a
/// numeric id, as the PyPI SDK wants; a third capped at one connection.
fn two_app_config(dir: &Path) -> PathBuf {
    let secret = dir.join("second.secret");
    std::fs::write(&secret, "second-secret\n").unwrap();
    let config = dir.join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "[[apps]]\nid = \"first-app\"\nkey = \"first-key\"\nsecret = \"first-secret\"\n\n\
             [[apps]]\nid = \"12345\"\nkey = \"second-key\"\nsecret_file = \"{}\"\n\n\
             [[apps]]\nid = \"capped\"\nkey = \"capped-key\"\nsecret = \"capped-secret\"\n\
             max_connections = 1\n",
            secret.display()
        ),
    )
    .unwrap();
    config
}

fn start_with_config(config: &Path) -> Server {
    Server::start_with(&[], |cmd| {
        cmd.arg("--config").arg(config);
    })
}

const FIRST_APP: [(&str, &str); 3] = [
    ("APP_ID", "first-app"),
    ("APP_KEY", "first-key"),
    ("APP_SECRET", "first-secret"),
];
const SECOND_APP: [(&str, &str); 3] = [
    ("APP2_ID", "12345"),
    ("APP2_KEY", "second-key"),
    ("APP2_SECRET", "second-secret"),
];

#[test]
fn pusher_js_public_channels_with_sdk_trigger_several_channels_and_batch() {
    let srv = Server::start(&[]);
    scenario(
        &srv,
        "public",
        &[],
        &[
            "first subscriber gets the event data",
            "multi-channel trigger reaches b:multi-2 exactly once",
            "triggerBatch: batch-1 gets its two events in order",
            "socket_id excludes that connection",
            "events arrive in publish order (second)",
            "a new cache subscriber gets the last event",
        ],
    );
}

#[test]
fn pusher_sdk_http_api_queries_info_and_errors() {
    let srv = Server::start(&[]);
    scenario(
        &srv,
        "api",
        &[],
        &[
            "GET /channels lists the occupied channels",
            "GET /channels/api-one?info=subscription_count",
            "GET /channels/presence-api/users",
            "trigger signed with the wrong secret: 401",
            "unknown app id: 404",
            "data over max_event_bytes: 413",
        ],
    );
}

#[test]
fn pusher_js_private_channels_client_events_and_bad_auth() {
    let srv = Server::start(&[]);
    scenario(
        &srv,
        "private",
        &[],
        &[
            "client event reaches the other subscriber",
            "client events are not echoed to their senders",
            "wrong-secret: subscription_error status 401",
            "other-socket: subscription_error status 401",
            "wrong-secret: the connection stays up",
            "the excess gets pusher:error 4301",
        ],
    );
}

#[test]
fn pusher_js_presence_members_join_leave_and_client_events() {
    let srv = Server::start(&[]);
    scenario(
        &srv,
        "presence",
        &[],
        &[
            "member list with user_info",
            "member_added to the first member",
            "presence client event has the sender's user_id",
            "no member_added for a user's second connection",
            "member_removed when the last connection leaves",
        ],
    );
}

#[test]
fn two_apps_from_a_config_file_are_isolated() {
    let dir = scratch("apps");
    let srv = start_with_config(&two_app_config(&dir));
    let env: Vec<(&str, &str)> = FIRST_APP
        .iter()
        .chain(&SECOND_APP)
        .chain(&[("CAPPED_KEY", "capped-key")])
        .copied()
        .collect();
    scenario(
        &srv,
        "apps",
        &env,
        &[
            "app 1 subscriber sees only app 1 events",
            "app 2 subscriber sees only app 2 events",
            "unknown key: pusher:error 4001",
            "over max_connections: pusher:error 4004",
        ],
    );
    // The second app (secret from a file) carries the whole public scenario too.
    let second = [
        ("APP_ID", "12345"),
        ("APP_KEY", "second-key"),
        ("APP_SECRET", "second-secret"),
    ];
    scenario(
        &srv,
        "public",
        &second,
        &["first subscriber gets the event data"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The PyPI `pusher` SDK publishes while pusher-js listens: `node channels.js listen` prints
/// READY once subscribed, then PASS lines for what the Python script sends.
#[test]
fn python_pusher_sdk_publishes_to_pusher_js() {
    // The tools first: installing them on a fresh machine takes a while.
    let mut py = common::tools::python_with_pusher();
    let dir = scratch("python");
    let srv = start_with_config(&two_app_config(&dir));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/channels.js");
    let mut listener = common::tools::node_with_pusher()
        .arg(script)
        .arg("listen")
        .env("HOST", srv.addr.ip().to_string())
        .env("PORT", srv.addr.port().to_string())
        .envs(SECOND_APP.map(|(k, v)| (k.replace("APP2_", "APP_"), v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The script's own deadline (30 s) bounds this read.
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line == "READY" || line.starts_with("FAIL") {
            break;
        }
    }
    if seen.last().map(String::as_str) != Some("READY") {
        let _ = listener.kill();
        let _ = listener.wait();
        panic!(
            "the pusher-js listener did not get ready:\n{}",
            seen.join("\n")
        );
    }
    py.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/pusher_sdk.py"
    ))
    .env("PORT", srv.addr.port().to_string())
    .env("HOST", srv.addr.ip().to_string());
    let run = run_bounded(py, SCENARIO_TIMEOUT);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = listener.kill();
    let status = listener.wait().unwrap();
    let listened = seen
        .iter()
        .chain(&rest)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        run.success && !run.stdout.contains("FAIL"),
        "the Python SDK script failed:\n{}\n{}\n--- listener:\n{listened}",
        run.stdout,
        run.stderr
    );
    assert!(
        status.success() && !listened.contains("FAIL") && listened.contains("OK listen: "),
        "the pusher-js listener failed:\n{listened}\n--- holdfast log:\n{}",
        tail(&srv.log_text(), 40)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Server-Sent Events with the npm `eventsource` client (WHATWG EventSource): cut off in the
/// middle of a stream while 500 events are published, it reconnects by itself with
/// Last-Event-ID and gets exactly those 500 in order, then live ones; a private channel with
/// and without its signed `auth`; a Last-Event-ID the history cannot reach.
#[test]
fn eventsource_recovers_every_missed_event_and_private_streams_need_auth() {
    let srv = Server::start(&["channels.history_size=1000"]);
    scenario_of(
        "sse.js",
        &srv,
        "recovery",
        &[],
        &[
            "every event once, in order, across the reconnect",
            "no recovery_failed",
        ],
    );
    scenario_of(
        "sse.js",
        &srv,
        "private",
        &[],
        &["refused with 403", "and not retried"],
    );
    scenario_of("sse.js", &srv, "recovery_failed", &[], &["its data"]);
}

/// The same `eventsource` client over HTTP/2: its fetch is undici's with HTTP/2 allowed, on
/// the TLS listener (ALPN h2). Two streams (undici pools them over its own HTTP/2 connections;
/// the server counts them and its access log says HTTP/2.0), and a reconnect recovers what it
/// missed.
#[test]
fn eventsource_streams_over_http2() {
    let srv = Server::start(&[
        "server.tls_listen=127.0.0.1:0",
        "channels.history_size=100",
        "log.access=stderr",
    ]);
    let tls = srv.tls_addr.unwrap().port().to_string();
    scenario_of(
        "sse.js",
        &srv,
        "http2",
        &[("TLS_PORT", &tls)],
        &["stream a", "stream b", "recovered in order"],
    );
    assert!(srv.metric("holdfast_http2_connections_total") >= 1);
    assert!(srv.wait_log("-h2-a HTTP/2.0\" 200"), "{}", srv.log_text());
}
