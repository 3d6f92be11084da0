//! Logs on the real binary: the access log to a file and to stderr (plain, keep-alive, TLS,
//! WebSocket-upgrade and bad requests, each line's fields checked against what the client saw),
//! `log.format = "json"` (every stderr line parses, under a supervisor too), sampling,
//! reopening on SIGHUP after logrotate moved the file, every line written before a clean exit,
//! a bad path as a configuration error, and an EMFILE storm rate-limited to one line.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A fresh directory for one test's log files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file's lines once it has at least `n` (waiting up to 10 s).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One text access line, split into its fields.
#[derive(Debug)]
struct Access {
    client: String,
    ts: String,
    request: String,
    status: u16,
    bytes: u64,
    seconds: f64,
}

fn parse(line: &str) -> Access {
    let (client, rest) = line.split_once(" [").expect(line);
    let (ts, rest) = rest.split_once("] \"").expect(line);
    let (request, rest) = rest.rsplit_once("\" ").expect(line);
    let fields: Vec<&str> = rest.split(' ').collect();
    let [status, bytes, seconds] = fields[..] else {
        panic!("{line}")
    };
    Access {
        client: client.into(),
        ts: ts.into(),
        request: request.into(),
        status: status.parse().expect(line),
        bytes: bytes.parse().expect(line),
        seconds: seconds.parse().expect(line),
    }
}

/// `2026-12-05T14:00:00.123Z`, within a minute of now.
fn check_ts(ts: &str) {
    assert_eq!(ts.len(), 24, "{ts}");
    assert!(
        ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".",
        "{ts}"
    );
    let logged = || -> Option<u64> {
        let (y, mo, d): (i64, u32, u32) = (
            ts[0..4].parse().ok()?,
            ts[5..7].parse().ok()?,
            ts[8..10].parse().ok()?,
        );
        let (h, mi, s): (u64, u64, u64) = (
            ts[11..13].parse().ok()?,
            ts[14..16].parse().ok()?,
            ts[17..19].parse().ok()?,
        );
        // Find the day: it is today or yesterday (just after midnight).
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now / 86_400 - 1..=now / 86_400)
            .find(|&day| holdfast::time::civil::civil_from_days(day as i64) == (y, mo, d))
            .map(|day| day * 86_400 + h * 3600 + mi * 60 + s)
    };
    let at = logged().unwrap_or_else(|| panic!("{ts} is not a recent time"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(at <= now + 1 && now - at < 60, "{ts} is not now");
}

/// Sends `request` on a fresh connection and reads until the server closes: the client's
/// address and every byte of the answer.
fn exchange(srv: &Server, request: &[u8]) -> (String, Vec<u8>) {
    let mut s = srv.connect();
    let client = s.local_addr().unwrap().to_string();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (client, out)
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Upgrades a fresh connection; returns the client's address and the 101's length.
fn upgrade(srv: &Server) -> (String, usize, TcpStream) {
    let mut s = srv.connect();
    let client = s.local_addr().unwrap().to_string();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    (client, head.len(), s)
}

#[test]
fn the_access_log_has_one_line_per_request_with_what_the_client_saw() {
    let dir = temp_dir("file");
    let path = dir.join("access.log");
    let srv = Server::start(&[
        &format!("log.access={}", path.display()),
        "server.tls_listen=127.0.0.1:0",
        "websocket.permessage_deflate=false",
    ]);
    let mut expected: Vec<(String, String, u16, u64)> = Vec::new();

    // A plain request, answered and closed: the line's bytes are every byte the client read.
    let (client, bytes) = exchange(
        &srv,
        b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    expected.push((
        client,
        "GET /plaintext HTTP/1.1".into(),
        200,
        bytes.len() as u64,
    ));

    // Two requests on one keep-alive connection: two lines from the same client port.
    let (mut r, mut w) = srv.pair();
    let client = w.local_addr().unwrap().to_string();
    for target in ["/healthz", "/stream?chunks=3"] {
        write!(w, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        let chunked = resp.header("transfer-encoding").is_some();
        let body = if chunked {
            // "8\r\nchunk 0\n\r\n" per chunk and the last "0\r\n\r\n".
            resp.body.len() + 3 * 5 + 5
        } else {
            resp.body.len()
        };
        let len = (resp.head.len() + body) as u64;
        expected.push((client.clone(), format!("GET {target} HTTP/1.1"), 200, len));
    }
    drop((r, w));

    // HTTP/1.0, a POST with a body, an unknown method.
    let (client, bytes) = exchange(
        &srv,
        b"POST /echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
    );
    expected.push((
        client,
        "POST /echo HTTP/1.0".into(),
        200,
        bytes.len() as u64,
    ));
    let (client, bytes) = exchange(&srv, b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n");
    expected.push((client, "BREW /pot HTTP/1.1".into(), 501, bytes.len() as u64));

    // Bad requests: a malformed head (no request to name), a body over the limit, a refused
    // upgrade.
    let (client, bytes) = exchange(&srv, b"GARBAGE\r\n\r\n");
    expected.push((client, "-".into(), 400, bytes.len() as u64));
    let (client, bytes) = exchange(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n",
    );
    expected.push((
        client,
        "POST /echo HTTP/1.1".into(),
        413,
        bytes.len() as u64,
    ));
    let (client, bytes) = exchange(
        &srv,
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    expected.push((client, "GET /ws HTTP/1.1".into(), 400, bytes.len() as u64));

    // A WebSocket upgrade: its line is the 101.
    let (client, len, ws) = upgrade(&srv);
    expected.push((client, "GET /ws HTTP/1.1".into(), 101, len as u64));

    // Over TLS (curl says which local port it used).
    let tls = srv.tls_addr.unwrap();
    let out = Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{local_port} %{size_header} %{size_download}",
        ])
        .arg(format!("https://{tls}/plaintext"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text.split(' ').map(|x| x.trim().parse().unwrap()).collect();
    expected.push((
        format!("127.0.0.1:{}", v[0]),
        "GET /plaintext HTTP/1.1".into(),
        200,
        v[1] + v[2],
    ));
    // Plain HTTP on the TLS port: a 400 with no request.
    let mut s = TcpStream::connect(tls).unwrap();
    let client = s.local_addr().unwrap().to_string();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    expected.push((client, "-".into(), 400, bytes.len() as u64));

    let lines = wait_lines(&path, expected.len());
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    let mut got: Vec<Access> = lines.iter().map(|l| parse(l)).collect();
    for want in &expected {
        let i = got
            .iter()
            .position(|a| a.client == want.0 && a.request == want.1)
            .unwrap_or_else(|| panic!("no line for {want:?} in {lines:#?}"));
        let a = got.remove(i);
        assert_eq!((a.status, a.bytes), (want.2, want.3), "{want:?}: {a:?}");
        assert!((0.0..5.0).contains(&a.seconds), "{a:?}");
        check_ts(&a.ts);
    }
    drop(ws);
}

#[test]
fn json_logs_parse_line_by_line_with_the_access_log_on_stderr() {
    let mut srv = Server::start(&[
        "log.format=json",
        "log.access=stderr",
        "log.level=debug",
        "server.tls_listen=127.0.0.1:0",
    ]);
    assert_eq!(srv.get("/plaintext?q=\"quoted\"").status, 400);
    assert_eq!(srv.get("/nope").status, 404);
    let (_, _, ws) = upgrade(&srv);
    // Not TLS on the TLS port: a debug line names the failure.
    let mut s = TcpStream::connect(srv.tls_addr.unwrap()).unwrap();
    s.write_all(b"\x99\x03\x01\x00\x05hello").unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    assert!(
        srv.wait_log("tls: connection failed (bad_record)"),
        "{}",
        srv.log_text()
    );
    assert!(srv.wait_log("\"target\":\"/nope\""));
    drop(ws);
    srv.signal("TERM");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(srv.wait_log("drained, exiting"));

    let log = srv.log_text();
    let mut access = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        check_ts(v["ts"].as_str().unwrap());
        if v["type"] == "access" {
            access += 1;
            assert!(
                v["client"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{v}"
            );
            assert!(
                v["status"].as_u64().is_some() && v["bytes"].as_u64().is_some(),
                "{v}"
            );
            assert!(v["duration_ms"].as_u64().is_some(), "{v}");
        } else {
            assert!(["error", "warn", "info", "debug"].contains(&v["level"].as_str().unwrap()));
            assert!(v["msg"].is_string(), "{v}");
            assert!(v.get("process").is_none(), "no supervisor: {v}");
        }
    }
    assert!(access >= 3, "{log}");
    assert!(log.contains("\"status\":101"), "{log}");
    assert!(log.contains("\"level\":\"debug\""), "{log}");
}

#[test]
fn under_a_supervisor_json_lines_stay_json_and_name_their_process() {
    let mut srv = Server::start(&[
        "server.processes=2",
        "server.workers=1",
        "log.format=json",
        "log.access=stderr",
    ]);
    for _ in 0..20 {
        assert_eq!(srv.get("/healthz").status, 200);
    }
    srv.signal("TERM");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    let log = srv.log_text();
    let mut processes = std::collections::BTreeSet::new();
    let mut access = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if v["type"] == "access" {
            access += 1;
            processes.insert(
                v["process"]
                    .as_u64()
                    .expect("access lines name their process"),
            );
        } else if let Some(p) = v["process"].as_u64() {
            processes.insert(p);
        }
    }
    assert_eq!(access, 20, "{log}");
    assert_eq!(processes.into_iter().collect::<Vec<_>>(), [0, 1], "{log}");
    assert!(log.contains("\"msg\":\"drained, exiting\""), "{log}");
}

#[test]
fn under_a_supervisor_text_access_lines_reach_stderr_unprefixed() {
    let srv = Server::start(&[
        "server.processes=2",
        "server.workers=1",
        "log.access=stderr",
    ]);
    let (client, _) = exchange(
        &srv,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(srv.wait_log(&format!("{client} [")), "{}", srv.log_text());
    let log = srv.log_text();
    let line = log.lines().find(|l| l.contains(&client)).unwrap();
    assert_eq!(parse(line).request, "GET /healthz HTTP/1.1");
}

#[test]
fn sampling_at_zero_logs_only_errors() {
    let dir = temp_dir("sample");
    let path = dir.join("access.log");
    let srv = Server::start(&[
        &format!("log.access={}", path.display()),
        "log.access_sample=0",
    ]);
    for _ in 0..20 {
        assert_eq!(srv.get("/plaintext").status, 200);
    }
    let (_, _, ws) = upgrade(&srv);
    drop(ws);
    // Lines reach the writer within 50 ms; give it ten times that.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "",
        "nothing written"
    );
    // An error is always logged.
    assert_eq!(srv.get("/missing").status, 404);
    let lines = wait_lines(&path, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(parse(&lines[0]).request, "GET /missing HTTP/1.1");
}

#[test]
fn sighup_reopens_the_access_log_after_logrotate_moved_it() {
    let dir = temp_dir("rotate");
    let path = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let srv = Server::start(&[&format!("log.access={}", path.display())]);
    assert_eq!(srv.get("/healthz").status, 200);
    assert_eq!(wait_lines(&path, 1).len(), 1);
    std::fs::rename(&path, &rotated).unwrap();
    // Until the reopen, lines still go to the moved file (nothing is lost).
    assert_eq!(srv.get("/plaintext").status, 200);
    assert_eq!(wait_lines(&rotated, 2).len(), 2);
    srv.signal("HUP");
    assert!(
        srv.wait_log("SIGHUP: reopened log.access"),
        "{}",
        srv.log_text()
    );
    assert!(path.exists(), "reopening creates the file");
    assert_eq!(srv.get("/stream?chunks=1").status, 200);
    let lines = wait_lines(&path, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(parse(&lines[0]).request, "GET /stream?chunks=1 HTTP/1.1");
    assert_eq!(
        wait_lines(&rotated, 3).len(),
        2,
        "the old file is left alone"
    );
    assert!(!srv.log_text().contains("nothing to reload"));
}

#[test]
fn every_line_is_written_before_a_clean_exit() {
    let dir = temp_dir("drain");
    let path = dir.join("access.log");
    let mut srv = Server::start(&[&format!("log.access={}", path.display())]);
    let s = srv.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut pipelined = Vec::new();
    for _ in 0..500 {
        pipelined.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    w.write_all(&pipelined).unwrap();
    for _ in 0..500 {
        assert_eq!(read_response(&mut r).unwrap().status, 200);
    }
    // At once, before the 50 ms batch delay has passed.
    srv.signal("TERM");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(srv.log_text().contains("drained, exiting"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 500, "{}", srv.log_text());
}

#[test]
fn an_access_log_that_cannot_be_opened_is_a_one_line_error_and_exit_2() {
    for processes in ["1", "2"] {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args([
                "serve",
                "--set",
                "server.listen=127.0.0.1:0",
                "--set",
                "server.tls_listen=",
            ])
            .args(["--set", &format!("server.processes={processes}")])
            .args(["--set", "log.access=/nonexistent/dir/access.log"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("log.access: cannot open /nonexistent/dir/access.log: No such file"),
            "{err}"
        );
    }
}

/// A server that may open only 64 files, and 80 clients: accept fails with EMFILE every time
/// it is retried (each 100 ms). That used to print ten lines a second per worker.
#[test]
fn an_emfile_storm_is_one_line_per_interval_with_a_count() {
    let srv = Server::start_wrapped(
        &["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""],
        &["server.workers=1"],
    );
    let clients: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(srv.addr).ok())
        .collect();
    assert!(
        srv.wait_log("accept: Too many open files"),
        "{}",
        srv.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    let count = |log: &str| log.matches("accept: Too many open files").count();
    assert_eq!(count(&srv.log_text()), 1, "{}", srv.log_text());
    // After the interval, one line says how many were held back.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !srv.log_text().contains("more like this in the last 10s") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = srv.log_text();
    assert!(log.contains("more like this in the last 10s"), "{log}");
    assert_eq!(count(&log), 2, "{log}");
    drop(clients);
}
