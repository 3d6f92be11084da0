//! WebSocket against the real binary over loopback, with two independent clients (tungstenite
//! and Python's `websockets`) and raw sockets for what a well-behaved client never sends.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocket};
use tungstenite::{Message, client};

fn ws_connect(srv: &Server) -> WebSocket<TcpStream> {
    let stream = srv.connect();
    let (ws, resp) = client(format!("ws://{}/ws", srv.addr), stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A masked client frame, for raw-socket tests.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads everything the server sends until it closes, with a deadline.
fn read_all(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

/// Raw handshake on a fresh socket; returns the socket positioned after the 101.
fn raw_upgrade(srv: &Server) -> TcpStream {
    let mut s = srv.connect();
    s.write_all(UPGRADE.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// The close code in the first close frame of `bytes` (server frames are unmasked).
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut pos = 0;
    while pos + 2 <= bytes.len() {
        let op = bytes[pos] & 0x0f;
        let len = (bytes[pos + 1] & 0x7f) as usize;
        assert!(len < 126, "test frames are small");
        if op == 0x8 {
            return Some(if len >= 2 {
                u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]])
            } else {
                1005
            });
        }
        pos += 2 + len;
    }
    None
}

#[test]
fn tungstenite_echo_of_text_binary_and_large_messages() {
    let srv = Server::start(&[]);
    let mut ws = ws_connect(&srv);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let msgs = vec![
        Message::text("hello"),
        Message::text("κόσμε 😀"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
        Message::text(""),
    ];
    for m in msgs {
        ws.send(m.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), m);
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(srv.metric("holdfast_ws_messages_in_total") >= 5);
}

fn python_client(srv: &Server, mode: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/ws_client.py");
    let out = common::tools::python_with_websockets()
        .args([script, &format!("ws://{}/ws", srv.addr), mode])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python websockets client ({mode}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn python_websockets_client_echo_ping_and_close() {
    let srv = Server::start(&[]);
    python_client(&srv, "plain");
    assert!(srv.metric("holdfast_ws_closes_total{code=\"1000\"}") >= 1);
}

#[test]
fn python_websockets_client_with_permessage_deflate() {
    // Default: the server imposes no context takeover both ways.
    let srv = Server::start(&[]);
    python_client(&srv, "deflate");
    python_client(&srv, "deflate-no-takeover");
    // With takeover allowed, contexts persist across messages.
    let takeover = Server::start(&["websocket.deflate_context_takeover=true"]);
    python_client(&takeover, "deflate");
    python_client(&takeover, "deflate-no-takeover");
    // Turned off, the extension is not negotiated and messages still echo.
    let off = Server::start(&["websocket.permessage_deflate=false"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/ws_client.py");
    let out = common::tools::python_with_websockets()
        .args([script, &format!("ws://{}/ws", off.addr), "deflate"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "deflate must not be accepted when disabled"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("AssertionError"));
}

#[test]
fn upgrade_after_earlier_requests_on_the_same_connection() {
    let srv = Server::start(&[]);
    let (mut r, mut w) = srv.pair();
    for _ in 0..2 {
        w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut r).unwrap().status, 200);
    }
    // The handshake and a first frame in one write: the frame must not be lost.
    let mut req = UPGRADE.as_bytes().to_vec();
    req.extend(frame(0x81, b"early"));
    w.write_all(&req).unwrap();
    let resp = read_response_ext(&mut r, true, true).unwrap();
    assert_eq!(resp.status, 101);
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // Bytes the reader buffered past the 101 belong to the WebSocket stream.
    let buffered = r.buffer().to_vec();
    let mut ws = WebSocket::from_partially_read(r.into_inner(), buffered, Role::Client, None);
    assert_eq!(ws.read().unwrap(), Message::text("early"));
    ws.send(Message::text("later")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("later"));
}

#[test]
fn bad_upgrades_are_refused() {
    let srv = Server::start(&[]);
    let cases = [
        (
            UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
        ),
        (
            UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "not-base64"),
            400,
        ),
        (UPGRADE.replace("GET", "POST"), 400),
        (UPGRADE.replace("Upgrade: websocket\r\n", ""), 400),
        (
            UPGRADE.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
        ),
        (UPGRADE.replace("Version: 13", "Version: 8"), 426),
    ];
    for (req, status) in cases {
        let (mut r, mut w) = srv.pair();
        w.write_all(req.as_bytes()).unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, status, "{req}");
        if status == 426 {
            assert_eq!(resp.header("sec-websocket-version"), Some("13"));
        }
    }
}

#[test]
fn server_pings_are_answered_by_the_client_and_counted() {
    let srv = Server::start(&["websocket.ping_interval=300ms", "websocket.pong_timeout=2s"]);
    let mut ws = ws_connect(&srv);
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        let _ = ws.flush();
    }
    assert!(pings >= 2, "{pings} pings in 1.5 s");
    ws.send(Message::text("still here")).unwrap();
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) => continue,
            m => {
                assert_eq!(m, Message::text("still here"));
                break;
            }
        }
    }
    let pongs = srv.metric("holdfast_ws_pongs_received_total");
    assert!(pongs >= 2);
    // tungstenite echoes our pings' payload (their send time): each answer is a timed round trip.
    assert_eq!(srv.metric("holdfast_ws_ping_rtt_seconds_count"), pongs);
    assert_eq!(
        srv.metric("holdfast_ws_ping_rtt_seconds_bucket{le=\"0.1\"}"),
        pongs,
        "loopback round trips are well under 100 ms"
    );
    assert_eq!(srv.metric("holdfast_ws_heartbeat_timeouts_total"), 0);
}

#[test]
fn a_client_that_never_answers_pings_is_closed_and_counted() {
    let srv = Server::start(&[
        "websocket.ping_interval=200ms",
        "websocket.pong_timeout=200ms",
    ]);
    let mut s = raw_upgrade(&srv);
    let t = Instant::now();
    let got = read_all(&mut s, Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        t.elapsed()
    );
    assert_eq!(
        got.first().map(|b| b & 0x0f),
        Some(0x9),
        "a ping came first"
    );
    assert_eq!(srv.metric("holdfast_ws_heartbeat_timeouts_total"), 1);
    assert_eq!(
        srv.metric("holdfast_connections_closed_total{reason=\"heartbeat_timeout\"}"),
        1
    );
}

#[test]
fn client_pings_get_their_payload_back() {
    let srv = Server::start(&[]);
    let mut ws = ws_connect(&srv);
    ws.send(Message::Ping(b"payload"[..].into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"payload"[..].into()));
}

#[test]
fn close_handshake_and_protocol_errors() {
    let srv = Server::start(&[]);
    // A clean close: the code comes back and the server closes TCP.
    let mut s = raw_upgrade(&srv);
    s.write_all(&frame(0x88, &[0x0f, 0xa0, b'o', b'k']))
        .unwrap(); // 4000 "ok"
    let got = read_all(&mut s, Duration::from_secs(5));
    assert_eq!(close_code(&got), Some(4000));
    // An unmasked frame: 1002.
    let mut s = raw_upgrade(&srv);
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(
        close_code(&read_all(&mut s, Duration::from_secs(5))),
        Some(1002)
    );
    // Invalid UTF-8: 1007.
    let mut s = raw_upgrade(&srv);
    s.write_all(&frame(0x81, &[0xff, 0xfe])).unwrap();
    assert_eq!(
        close_code(&read_all(&mut s, Duration::from_secs(5))),
        Some(1007)
    );
    // An invalid close code: 1002.
    let mut s = raw_upgrade(&srv);
    s.write_all(&frame(0x88, &[0x03, 0xed])).unwrap(); // 1005 may not be sent
    assert_eq!(
        close_code(&read_all(&mut s, Duration::from_secs(5))),
        Some(1002)
    );
    // Too big: 1009.
    let srv = Server::start(&["websocket.max_message_bytes=16"]);
    let mut s = raw_upgrade(&srv);
    s.write_all(&frame(0x82, &[0; 17])).unwrap();
    assert_eq!(
        close_code(&read_all(&mut s, Duration::from_secs(5))),
        Some(1009)
    );
}

#[test]
fn sigterm_sends_1001_to_websocket_clients_then_exits() {
    let mut srv = Server::start(&["server.shutdown_timeout=10s"]);
    let mut ws = ws_connect(&srv);
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    srv.signal("TERM");
    match ws.read().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    // tungstenite answers the close; the server then closes and exits.
    let _ = ws.flush();
    while ws.read().is_ok() {}
    assert_eq!(
        srv.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        srv.log_text()
    );
}

#[test]
fn a_client_that_stops_reading_is_paused_then_closed_with_1008() {
    let srv = Server::start(&["websocket.ping_interval=0", "websocket.pong_timeout=500ms"]);
    let s = raw_upgrade(&srv);
    let sock = socket2::SockRef::from(&s);
    sock.set_recv_buffer_size(4096).unwrap();
    // Flood echo requests and never read: the echoes back up, first in the kernel, then in the
    // server's output queue, until it stops reading from us.
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = {
        let payload = vec![7u8; 60_000];
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x82, 0x80 | 126];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    let start = Instant::now();
    let mut blocked_since = None;
    while start.elapsed() < Duration::from_secs(10) {
        match w.write(&msg) {
            Ok(_) => blocked_since = None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                blocked_since.get_or_insert_with(Instant::now);
            }
            Err(_) => break, // the server closed us
        }
        if srv.metric("holdfast_ws_slow_reader_closes_total") == 1 {
            break;
        }
    }
    assert!(blocked_since.is_some() || srv.metric("holdfast_ws_slow_reader_closes_total") == 1);
    // The 1008 frame cannot reach a peer that does not read: the TCP close follows when the
    // close wait runs out, and that is when the connection is counted as closed.
    let closed = "holdfast_connections_closed_total{reason=\"slow_reader\"}";
    srv.wait_metric(closed, Duration::from_secs(10), |n| n >= 1)
        .expect("never closed the slow reader");
    assert_eq!(srv.metric("holdfast_ws_slow_reader_closes_total"), 1);
    assert!(srv.metric("holdfast_ws_closes_total{code=\"1008\"}") >= 1);
    // The server's memory stayed bounded: the server serves others normally.
    assert_eq!(srv.get("/healthz").text(), "ok");
}
