//! Per-client-address limits (`server.max_connections_per_ip`, `server.connection_rate_per_ip`)
//! over real sockets from several loopback source addresses: a connection over a limit gets
//! 429 (HTTP), a WebSocket close 1013, or on the TLS listener a TCP close before the handshake;
//! other addresses are not affected; a closed connection gives its room back; behind a PROXY
//! header, the address it names is the one counted. Every refusal is counted in `/metrics`.

mod common;

use common::{Server, read_response};
use socket2::{Domain, Socket, Type};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection to `to` from the loopback address `from` (127.0.0.0/8 is all ours).
fn connect_from(to: SocketAddr, from: [u8; 4]) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

const KEEP: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";

/// One keep-alive request on `s`; its status.
fn status_on(s: &TcpStream, request: &[u8]) -> u16 {
    let mut w = s.try_clone().unwrap();
    w.write_all(request).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    read_response(&mut r).expect("a response").status
}

fn upgrade(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads everything until the peer closes (bounded by the read timeout).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

fn metric_line(srv: &Server, line: &str) -> u64 {
    srv.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn an_address_over_its_connection_limit_gets_429_or_1013_and_others_do_not() {
    let srv = Server::start(&["server.max_connections_per_ip=2"]);
    let held: Vec<TcpStream> = (0..2)
        .map(|_| connect_from(srv.addr, [127, 0, 0, 2]))
        .collect();
    for s in &held {
        assert_eq!(status_on(s, KEEP), 200);
    }
    // A third from the same address: 429 with Retry-After, then the close.
    let mut third = connect_from(srv.addr, [127, 0, 0, 2]);
    third.write_all(KEEP).unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut third)).to_string();
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    // A WebSocket from it: the handshake, then a close frame with 1013.
    let mut ws = connect_from(srv.addr, [127, 0, 0, 2]);
    ws.write_all(&upgrade("/app/app-key?protocol=7")).unwrap();
    let bytes = read_to_close(&mut ws);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    let body = &bytes[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body[0], 0x88, "a close frame first: {body:?}");
    assert_eq!(u16::from_be_bytes([body[2], body[3]]), 1013);
    // Another address is served.
    let other = connect_from(srv.addr, [127, 0, 0, 3]);
    assert_eq!(status_on(&other, KEEP), 200);
    // One of the two closes: its room is back.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let again = connect_from(srv.addr, [127, 0, 0, 2]);
        if status_on(&again, KEEP) == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address never got its room back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        metric_line(
            &srv,
            "holdfast_per_ip_refusals_total{limit=\"connections\"} "
        ) >= 2,
        "{}",
        srv.metrics_text()
    );
}

#[test]
fn an_address_over_its_rate_is_refused_until_its_bucket_refills() {
    let srv = Server::start(&["server.connection_rate_per_ip=5"]);
    for _ in 0..5 {
        let s = connect_from(srv.addr, [127, 0, 0, 4]);
        assert_eq!(status_on(&s, KEEP), 200);
    }
    let s = connect_from(srv.addr, [127, 0, 0, 4]);
    assert_eq!(status_on(&s, KEEP), 429);
    std::thread::sleep(Duration::from_millis(1100));
    let s = connect_from(srv.addr, [127, 0, 0, 4]);
    assert_eq!(status_on(&s, KEEP), 200, "a second later it may again");
    assert!(metric_line(&srv, "holdfast_per_ip_refusals_total{limit=\"rate\"} ") >= 1);
}

#[test]
fn over_the_limit_on_the_tls_listener_is_closed_before_the_handshake() {
    let srv = Server::start(&[
        "server.tls_listen=127.0.0.1:0",
        "server.max_connections_per_ip=1",
    ]);
    let tls = srv.tls_addr.expect("a TLS listener");
    let _first = connect_from(tls, [127, 0, 0, 5]);
    // Let the first be accepted before the second.
    std::thread::sleep(Duration::from_millis(200));
    let mut second = connect_from(tls, [127, 0, 0, 5]);
    // A ClientHello's first bytes: the server answers nothing and closes.
    let _ = second.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05]);
    assert!(read_to_close(&mut second).is_empty(), "no TLS byte back");
    assert!(
        metric_line(
            &srv,
            "holdfast_connections_closed_total{reason=\"per_ip_limit\"} "
        ) >= 1
    );
}

#[test]
fn behind_a_proxy_header_the_client_it_names_is_counted() {
    let srv = Server::start(&[
        "server.proxy_protocol=true",
        "server.max_connections_per_ip=1",
    ]);
    let from = |client: &str| {
        let s = connect_from(srv.addr, [127, 0, 0, 6]);
        let mut req = format!("PROXY TCP4 {client} 127.0.0.1 4242 80\r\n").into_bytes();
        req.extend_from_slice(KEEP);
        (s, req)
    };
    let (a, req) = from("198.51.100.1");
    assert_eq!(status_on(&a, &req), 200);
    let (b, req) = from("198.51.100.2");
    assert_eq!(
        status_on(&b, &req),
        200,
        "the balancer's own address is not what counts"
    );
    let (c, req) = from("198.51.100.1");
    assert_eq!(status_on(&c, &req), 429);
}
