//! holdfast as a service behind a load balancer and under systemd, on the real binary:
//! `server.drain_delay` keeps serving with `/healthz` failing before the drain, the `sd_notify`
//! states reach a socket the test binds as `NOTIFY_SOCKET`, and a SIGTERM to the whole process
//! group (what Ctrl-C and systemd's default KillMode do) still drains under a supervisor.

mod common;

use common::{Server, closed_within, read_response};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A keep-alive GET on an existing connection.
fn get_on((r, w): &mut (std::io::BufReader<TcpStream>, TcpStream), path: &str) -> common::Response {
    write!(w, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    read_response(r).unwrap()
}

/// A GET on a new connection, or None when the server no longer accepts (refused or closed
/// without an answer).
fn fresh_get(srv: &Server, path: &str) -> Option<common::Response> {
    let mut s = TcpStream::connect(srv.addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    read_response(&mut std::io::BufReader::new(s)).ok()
}

#[test]
fn drain_delay_fails_health_checks_while_still_serving_then_drains() {
    let mut srv = Server::start(&["server.drain_delay=1500ms", "server.shutdown_timeout=10s"]);
    let mut kept = srv.pair();
    assert_eq!(get_on(&mut kept, "/healthz").status, 200);
    srv.signal("TERM");
    let stopped = Instant::now();
    assert!(srv.wait_log("/healthz answers 503"), "{}", srv.log_text());

    // During the delay: new connections are accepted, /healthz is 503 on new and kept
    // connections alike, and everything else is served as usual, keep-alive included.
    let health = fresh_get(&srv, "/healthz").expect("accepting during the delay");
    assert_eq!(health.status, 503);
    assert_eq!(fresh_get(&srv, "/plaintext").unwrap().status, 200);
    let r = get_on(&mut kept, "/plaintext");
    assert_eq!((r.status, r.closes()), (200, false));
    assert_eq!(get_on(&mut kept, "/healthz").status, 503);
    assert!(
        stopped.elapsed() < Duration::from_millis(1500),
        "the checks above must run inside the delay; the machine is too slow for this test"
    );

    // Then the drain: the idle kept connection is closed, new ones are refused, and the
    // process exits.
    assert!(closed_within(&mut kept.0, Duration::from_secs(5)));
    assert!(
        stopped.elapsed() >= Duration::from_millis(1400),
        "drained after {:?}, before the delay ended",
        stopped.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while fresh_get(&srv, "/plaintext").is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fresh_get(&srv, "/plaintext").is_none(), "still accepting");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn healthz_fails_during_the_drain_wherever_it_is_still_reachable() {
    let mut srv = Server::start(&["server.shutdown_timeout=10s"]);
    // A health check in flight (its head half sent) holds its connection through the drain.
    let (mut r, mut w) = srv.pair();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    srv.signal("TERM");
    assert!(srv.wait_log("holdfast: draining"));
    w.write_all(b"\r\n").unwrap();
    let health = read_response(&mut r).unwrap();
    assert_eq!(health.status, 503);
    assert!(health.closes());
    assert!(closed_within(&mut r, Duration::from_secs(5)));
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let path = std::env::temp_dir().join(format!("holdfast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { socket, path }
    }

    /// Every message that arrives within `wait`, in order.
    fn messages(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        out
    }

    /// Waits up to 10 s for a message containing `needle`; returns the messages seen until then.
    fn wait_for(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            seen.extend(self.messages(Duration::from_millis(200)));
            if seen.iter().any(|m| m.contains(needle)) {
                return seen;
            }
        }
        panic!("no {needle:?} among {seen:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lines_starting(messages: &[String], prefix: &str) -> usize {
    messages
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[test]
fn sd_notify_ready_reloading_and_stopping() {
    for processes in ["1", "2"] {
        let notify = NotifySocket::bind(&format!("notify-{processes}"));
        let path = notify.path.clone();
        let mut srv = Server::start_with(
            &[
                &format!("server.processes={processes}"),
                "server.workers=1",
                "server.tls_listen=127.0.0.1:0",
            ],
            |cmd| {
                cmd.env("NOTIFY_SOCKET", &path);
            },
        );
        // READY=1 once the listeners accept, exactly once: under a supervisor its processes
        // must not speak (systemd's NotifyAccess=main would reject them anyway).
        let seen = notify.wait_for("READY=1");
        assert_eq!(fresh_get(&srv, "/healthz").unwrap().status, 200);
        let seen = [seen, notify.messages(Duration::from_millis(500))].concat();
        assert_eq!(lines_starting(&seen, "READY=1"), 1, "{processes}: {seen:?}");

        srv.signal("HUP");
        let seen = notify.wait_for("READY=1");
        let reload = seen.iter().position(|m| m.contains("RELOADING=1"));
        let ready = seen.iter().rposition(|m| m.contains("READY=1"));
        assert!(
            matches!((reload, ready), (Some(a), Some(b)) if a < b),
            "{processes}: RELOADING=1 then READY=1 expected: {seen:?}"
        );
        assert!(
            seen.iter().any(|m| m.contains("MONOTONIC_USEC=")),
            "{seen:?}"
        );

        srv.signal("TERM");
        notify.wait_for("STOPPING=1");
        assert_eq!(srv.wait_exit(Duration::from_secs(15)), Some(0));
        let rest = notify.messages(Duration::from_millis(300));
        assert_eq!(lines_starting(&rest, "READY=1"), 0, "{rest:?}");
    }
}

#[test]
fn sigterm_to_the_whole_process_group_drains_under_a_supervisor() {
    let mut srv = Server::start_with(
        &[
            "server.processes=2",
            "server.workers=1",
            "server.shutdown_timeout=10s",
        ],
        |cmd| {
            // Its own process group, as a shell job or a systemd service has.
            cmd.process_group(0);
        },
    );
    let stream = srv.connect();
    let (mut ws, _) =
        tungstenite::client::client(format!("ws://{}/ws", srv.addr), stream).expect("handshake");
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));

    // Every process in the group gets SIGTERM from the kernel, and the server processes get
    // the supervisor's forwarded copy too: that must still be one graceful drain.
    let group = srv.pid();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{group}")])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM -{group}");
    match ws.read().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let _ = ws.flush();
    while ws.read().is_ok() {}
    assert_eq!(
        srv.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        srv.log_text()
    );
    let log = srv.log_text();
    assert!(!log.contains("second stop signal"), "{log}");
    assert!(log.contains("holdfast: drained, exiting"), "{log}");
}
