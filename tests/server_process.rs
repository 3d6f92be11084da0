//! The server as a process: command line and config errors, the connection limit, socket
//! options on accepted sockets (read back from the server's own socket), and graceful shutdown.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::process::Command;
use std::time::Duration;

/// Runs the binary to its exit, within 20 s: a command expected to exit that starts serving
/// instead (a setting that became valid) fails the test, killed, rather than hanging it.
fn holdfast(args: &[&str]) -> Exited {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    cmd.args(args);
    let run = run_bounded(cmd, Duration::from_secs(20));
    let status = run
        .status
        .unwrap_or_else(|| panic!("holdfast {args:?} did not exit within 20 s"));
    Exited {
        status,
        stdout: run.stdout.into_bytes(),
        stderr: run.stderr.into_bytes(),
    }
}

struct Exited {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

#[test]
fn version_and_config_check() {
    let out = holdfast(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("holdfast "));

    let dir = std::env::temp_dir().join(format!("holdfast-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[http]\nkeepalive_timeout = \"5s\"\n[server]\nworkers = 1\n",
    )
    .unwrap();
    let out = holdfast(&["config", "check", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[http]\nkeepalive_timeout = \"5 parsecs\"\n").unwrap();
    let out = holdfast(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("http.keepalive_timeout"), "{err}");
}

#[test]
fn bad_flags_and_settings_exit_2_with_one_line_naming_the_key() {
    for (args, key) in [
        (
            vec!["serve", "--set", "http.keepalive_timeout=soon"],
            "http.keepalive_timeout",
        ),
        (
            vec!["serve", "--set", "server.listen=not-an-address"],
            "server.listen",
        ),
        (vec!["serve", "--set", "nosuch.key=1"], "nosuch.key"),
        (vec!["serve", "--set", "novalue"], "--set"),
        // Announcing a protocol we do not speak would promise clients what they will not get.
        (
            vec!["serve", "--set", "tls.alpn=[\"h3\", \"http/1.1\"]"],
            "tls.alpn",
        ),
        (
            vec![
                "serve",
                "--set",
                "server.processes=2",
                "--set",
                "tls.alpn=spdy/3.1",
            ],
            "tls.alpn",
        ),
    ] {
        let out = holdfast(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(key), "{args:?}: {err}");
    }
    let out = holdfast(&["serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn max_connections_refuses_with_a_close_and_counts_it() {
    let srv = Server::start(&["server.max_connections=3", "server.workers=1"]);
    let held: Vec<_> = (0..3).map(|_| srv.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = srv.connect();
    assert!(closed_within(&mut extra, Duration::from_secs(5)));
    drop(held);
    // Freed slots are usable again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.get("/healthz").text(), "ok");
    assert!(srv.metric("holdfast_connections_closed_total{reason=\"refused\"}") >= 1);
}

#[test]
fn accepted_sockets_carry_the_tcp_settings() {
    let srv = Server::start(&[
        "tcp.keepalive_idle=42s",
        "tcp.keepalive_interval=7s",
        "tcp.keepalive_count=4",
        "tcp.user_timeout=20s",
    ]);
    let s = srv.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s.try_clone().unwrap();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    read_response(&mut r).unwrap();
    let port = s.local_addr().unwrap().port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/sockopts.py");
    let out = Command::new("python3")
        .args([script, &srv.pid().to_string(), &port.to_string()])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "\"SO_KEEPALIVE\": 1",
        "\"TCP_KEEPIDLE\": 42",
        "\"TCP_KEEPINTVL\": 7",
        "\"TCP_KEEPCNT\": 4",
        "\"TCP_USER_TIMEOUT\": 20000",
        "\"TCP_NODELAY\": 1",
    ] {
        assert!(json.contains(want), "{want} not in {json}");
    }
    // And `ss` shows the kernel keep-alive timer armed on the server side.
    let ss = Command::new("ss")
        .args([
            "-tnoH",
            "state",
            "established",
            &format!("( sport = :{} )", srv.addr.port()),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ss.stdout);
    assert!(text.contains("timer:(keepalive"), "{text}");
    // They came from the listener (Linux copies them at accept), not from per-socket calls.
    assert!(
        !srv.log_text().contains("do not inherit"),
        "{}",
        srv.log_text()
    );
}

#[test]
fn defer_accept_hands_over_a_connection_only_when_it_speaks() {
    let srv = Server::start(&["server.defer_accept=true"]);
    let accepted = || srv.metric("holdfast_connections_accepted_total");
    let before = accepted();
    // A client that connects and says nothing stays in the kernel: no slot, no wake-up.
    let silent = srv.connect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        accepted(),
        before + 1,
        "only the metrics scrape was accepted"
    );
    // One that speaks is accepted with its first bytes and answered as usual.
    let s = srv.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s.try_clone().unwrap();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // And the silent one is served too once it speaks.
    let mut r = BufReader::new(silent.try_clone().unwrap());
    let mut w = silent;
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
}

#[test]
fn sigterm_drains_gracefully() {
    let mut srv = Server::start(&["server.shutdown_timeout=10s"]);
    // An idle keep-alive connection.
    let (mut idle_r, mut idle_w) = srv.pair();
    idle_w
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    read_response(&mut idle_r).unwrap();
    // A request in flight: head and half the body sent.
    let (mut busy_r, mut busy_w) = srv.pair();
    busy_w
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    srv.signal("TERM");
    // The idle one is closed promptly.
    assert!(closed_within(&mut idle_r, Duration::from_secs(5)));
    // New connections are no longer accepted.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(srv.addr).is_err() || {
            let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
            closed_within(&mut s, Duration::from_secs(2))
        }
    );
    // The in-flight request completes, with Connection: close.
    busy_w.write_all(b"world").unwrap();
    let resp = read_response(&mut busy_r).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"helloworld");
    assert!(resp.closes());
    assert_eq!(
        srv.wait_exit(Duration::from_secs(8)),
        Some(0),
        "log: {}",
        srv.log_text()
    );
}

#[test]
fn shutdown_timeout_bounds_the_drain() {
    let mut srv = Server::start(&["server.shutdown_timeout=500ms"]);
    let mut stuck = srv.connect();
    stuck
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    srv.signal("INT");
    assert_eq!(srv.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn without_io_uring_the_server_exits_with_one_line_naming_cause_and_fix() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/no_io_uring.py");
    let out = Command::new("python3")
        .args([
            script,
            env!("CARGO_BIN_EXE_holdfast"),
            "serve",
            "--set",
            "server.listen=127.0.0.1:0",
            "--set",
            "server.tls_listen=",
            "--set",
            "server.max_connections=100",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("io_uring") && err.contains("seccomp") && err.contains("fix"),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

/// `holdfast tune check` against a fake /proc tree: exit 1 with the fixes when the host falls
/// short, exit 0 when it fits, exit 2 naming the file when the tree is unreadable.
#[test]
fn tune_check_reports_shortfalls_with_fixes_and_exit_codes() {
    let root = std::env::temp_dir().join(format!("holdfast-tune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("sys/fs/file-max", "2097152\n");
    write("sys/fs/nr_open", "2097152\n");
    write("sys/net/core/somaxconn", "4096\n");
    write("sys/net/ipv4/tcp_max_syn_backlog", "65535\n");
    write("sys/net/ipv4/tcp_mem", "500000\t1000000\t1250000\n");
    write(
        "self/limits",
        "Max open files            1048576              2000000              files\n",
    );
    write("meminfo", "MemTotal:       24576000 kB\n");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["tune", "check", "--proc-root", root.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--connections", "1000000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("net.core.somaxconn"), "{text}");
    assert!(
        text.contains("sysctl -w net.core.somaxconn=65535"),
        "{text}"
    );
    write("sys/net/core/somaxconn", "65535\n");
    let out = run(&["--connections", "1000000", "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert!(
        json.starts_with("{\"connections\":1000000,\"ok\":true"),
        "{json}"
    );
    std::fs::remove_file(root.join("sys/fs/nr_open")).unwrap();
    let out = run(&["--connections", "10"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("sys/fs/nr_open"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
