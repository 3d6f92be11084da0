//! `server.proxy_protocol` over raw sockets: PROXY v1 and v2 headers (whole, or byte by byte)
//! name the client that the access log shows; a connection without a valid header within
//! `http.header_timeout` is closed without an answer and counted. Behind a real HAProxy with
//! `send-proxy-v2`: tests/load_balancer.rs.

mod common;

use common::{Server, closed_within, read_response};
use std::io::{BufReader, Write};
use std::time::Duration;

const V2_SIG: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";

/// A v2 PROXY header for a TCP/IPv4 client `ip:port` (or LOCAL, with no address).
fn v2(client: Option<([u8; 4], u16)>) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    match client {
        Some((ip, port)) => {
            h.extend_from_slice(&[0x21, 0x11, 0, 12]);
            h.extend_from_slice(&ip);
            h.extend_from_slice(&[127, 0, 0, 1]);
            h.extend_from_slice(&port.to_be_bytes());
            h.extend_from_slice(&80u16.to_be_bytes());
        }
        None => h.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    h
}

const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// Sends `bytes` in `pieces` writes on a new connection; the response status, if any.
fn send(srv: &Server, bytes: &[u8], pieces: usize) -> Option<u16> {
    let (mut r, mut w) = srv.pair();
    let step = bytes.len().div_ceil(pieces.max(1));
    for part in bytes.chunks(step) {
        w.write_all(part).unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    read_response(&mut r).ok().map(|resp| resp.status)
}

/// A `/metrics` figure, asked as a balancer's own health check would (v2 LOCAL).
fn metric(srv: &Server, line_start: &str) -> u64 {
    let (mut r, mut w) = srv.pair();
    let mut req = v2(None);
    req.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    w.write_all(&req).unwrap();
    let body = read_response(&mut r).unwrap().text();
    body.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_proxy_header_names_the_client_in_the_access_log() {
    let srv = Server::start(&["server.proxy_protocol=true", "log.access=stderr"]);
    let v1 = [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 80\r\n".as_slice(),
        GET,
    ]
    .concat();
    assert_eq!(send(&srv, &v1, 1), Some(200));
    let v2_req = [v2(Some(([198, 51, 100, 9], 5151))).as_slice(), GET].concat();
    assert_eq!(send(&srv, &v2_req, 1), Some(200));
    // The header arriving in pieces, and the request with it.
    let split = [v2(Some(([192, 0, 2, 44], 6161))).as_slice(), GET].concat();
    assert_eq!(send(&srv, &split, split.len()), Some(200));
    let v6 = [
        b"PROXY TCP6 2001:db8::5 ::1 7171 80\r\n".as_slice(),
        b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    assert_eq!(send(&srv, &v6, 3), Some(200));
    for client in [
        "203.0.113.7:4242",
        "198.51.100.9:5151",
        "192.0.2.44:6161",
        "[2001:db8::5]:7171",
    ] {
        assert!(
            srv.wait_log(client),
            "{client} not in the access log:\n{}",
            srv.log_text()
        );
    }
}

#[test]
fn connections_without_a_valid_header_are_closed_unanswered_and_counted() {
    let srv = Server::start(&["server.proxy_protocol=true", "http.header_timeout=300ms"]);
    let label = "holdfast_connections_closed_total{reason=\"proxy_header\"} ";
    // Plain HTTP with no header; a malformed v1 line; a v2 header of an unknown command.
    let mut bad_v2 = v2(Some(([192, 0, 2, 1], 1)));
    bad_v2[12] = 0x2f;
    for bytes in [
        GET.to_vec(),
        [b"PROXY TCP4 1.2.3.4 nonsense\r\n".as_slice(), GET].concat(),
        [bad_v2.as_slice(), GET].concat(),
    ] {
        assert_eq!(send(&srv, &bytes, 1), None, "{bytes:?}");
    }
    // A client that says nothing (or only half a header) is closed at the header timeout.
    let silent = srv.connect();
    let (_, mut half) = srv.pair();
    half.write_all(b"PROXY TCP4 1.2.3.4 ").unwrap();
    let mut silent_r = BufReader::new(silent);
    assert!(closed_within(&mut silent_r, Duration::from_secs(3)));
    let mut half_r = BufReader::new(half);
    assert!(closed_within(&mut half_r, Duration::from_secs(3)));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metric(&srv, label) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            metric(&srv, label)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
