//! HTTP/1.1 message handling against the real binary: bodies both ways, 100-continue, HEAD, the
//! built-in endpoints, and the right status and a close for every kind of bad input.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn one(srv: &Server, req: &[u8]) -> Response {
    let (mut r, mut w) = srv.pair();
    w.write_all(req).unwrap();
    read_response(&mut r).unwrap()
}

/// Sends bad input; expects `status`, `Connection: close`, and the close itself.
fn rejected(srv: &Server, req: &[u8], status: u16) {
    let (mut r, mut w) = srv.pair();
    w.write_all(req).unwrap();
    let resp = read_response(&mut r)
        .unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(req)));
    assert_eq!(
        resp.status,
        status,
        "for {:?}",
        String::from_utf8_lossy(req)
    );
    assert!(resp.closes(), "{}", resp.head);
    assert!(closed_within(&mut r, Duration::from_secs(8)));
}

#[test]
fn endpoints() {
    let srv = Server::start(&[]);
    assert_eq!(srv.get("/plaintext").text(), "Hello, World!");
    assert_eq!(srv.get("/healthz").text(), "ok");
    assert_eq!(srv.get("/nope").status, 404);
    let m = srv.get("/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for name in [
        "holdfast_connections_open",
        "holdfast_connections_accepted_total",
        "holdfast_connections_closed_total{reason=\"idle_timeout\"}",
        "holdfast_requests_total",
        "holdfast_timeouts_total{kind=\"request\"}",
        "holdfast_received_bytes_total",
        "holdfast_sent_bytes_total",
        "holdfast_responses_total{code=\"2xx\"}",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    let post = one(
        &srv,
        b"POST /plaintext HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // A method we do not know at all is 501 (RFC 9110 §9.1), on any path; methods are
    // case-sensitive, so `get` is one of those.
    for req in [
        &b"BREW /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"BREW /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        b"get /plaintext HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        assert_eq!(one(&srv, req).status, 501);
    }
    // `OPTIONS *` is about the server itself.
    let options = one(&srv, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(options.status, 200);
    assert_eq!(options.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    assert_eq!(options.header("content-length"), Some("0"));
}

#[test]
fn stream_sends_n_chunks() {
    let srv = Server::start(&[]);
    let s = srv.connect();
    let mut w = s.try_clone().unwrap();
    w.write_all(b"GET /stream?chunks=4 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut raw = vec![0u8; 4096];
    let mut r = s;
    std::thread::sleep(Duration::from_millis(200));
    let n = r.read(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw[..n]);
    assert!(text.contains("Transfer-Encoding: chunked\r\n"));
    assert!(text.ends_with("\r\n\r\n8\r\nchunk 0\n\r\n8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n8\r\nchunk 3\n\r\n0\r\n\r\n"), "{text}");
    assert_eq!(srv.get("/stream?chunks=x").status, 400);
}

#[test]
fn echo_with_length_and_chunked_bodies() {
    let srv = Server::start(&[]);
    let resp = one(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(resp.body, b"hello");
    let resp = one(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"q\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    );
    assert_eq!(resp.body, b"hello world");
    // A large body arriving in many reads.
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = srv.pair();
    let body = big.clone();
    let t = std::thread::spawn(move || {
        w.write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        for c in body.chunks(7000) {
            w.write_all(c).unwrap();
        }
    });
    let resp = read_response(&mut r).unwrap();
    t.join().unwrap();
    assert_eq!(resp.body, big);
}

#[test]
fn expect_100_continue() {
    let srv = Server::start(&[]);
    let (mut r, mut w) = srv.pair();
    w.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_response_ext(&mut r, false, true).unwrap();
    assert_eq!(interim.status, 100);
    w.write_all(b"ping").unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ping");
    // Too large: refused up front with 413 instead of 100.
    let srv2 = Server::start(&["http.max_body_bytes=10"]);
    rejected(
        &srv2,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        413,
    );
}

#[test]
fn head_has_headers_but_no_body() {
    let srv = Server::start(&[]);
    let (mut r, mut w) = srv.pair();
    w.write_all(
        b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let head = read_response_ext(&mut r, true, false).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("13"));
    // The next response starts right after the head: no body bytes in between.
    let next = read_response(&mut r).unwrap();
    assert_eq!(next.text(), "ok");
}

#[test]
fn bad_input_gets_the_right_status_and_a_close() {
    let srv = Server::start(&["http.max_body_bytes=1KiB", "http.max_header_bytes=4KiB"]);
    rejected(&srv, b"GARBAGE\r\n\r\n", 400);
    rejected(&srv, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400);
    rejected(&srv, b"GET /plaintext HTTP/1.1\r\n\r\n", 400); // no Host
    rejected(&srv, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    rejected(&srv, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    rejected(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
    rejected(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    );
    rejected(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    rejected(&srv, long.as_bytes(), 414);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    rejected(&srv, big.as_bytes(), 431);
    rejected(
        &srv,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
        413,
    );
    rejected(
        &srv,
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n", "c".repeat(2048)).as_bytes(),
        413,
    );
    // The worker still serves everyone else.
    assert_eq!(srv.get("/healthz").text(), "ok");
}

#[test]
fn lingering_close_lets_the_client_read_the_final_response() {
    // The server refuses a large upload at once and closes while the client is still sending.
    // Without a lingering close the client's unread data would make the kernel send an RST and
    // the 413 would be lost.
    let srv = Server::start(&["http.max_body_bytes=1KiB", "http.lingering_timeout=2s"]);
    for _ in 0..5 {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n")
            .unwrap();
        let mut w = s.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < 4_000_000 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let mut r = BufReader::new(s);
        let resp = read_response(&mut r).expect("the 413 arrives, not a reset");
        assert_eq!(resp.status, 413);
        sender.join().unwrap();
    }
}

#[test]
fn thousands_of_malformed_and_truncated_requests_leave_the_server_serving() {
    let srv = Server::start(&["http.header_timeout=1s"]);
    let samples: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"\x00\x01\x02\xff\xfe\r\n\r\n".to_vec(),
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: t\r\n Folded: x\r\n\r\n".to_vec(),
        b"GET /plaintext HTTP/1.1\r\nHo".to_vec(),
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        b"G".to_vec(),
        b"\r\n\r\n\r\n".to_vec(),
    ];
    let addr = srv.addr;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let samples = samples.clone();
            std::thread::spawn(move || {
                for i in 0..400 {
                    let mut s = TcpStream::connect(addr).unwrap();
                    let sample = &samples[(i + t) % samples.len()];
                    let cut = if i % 2 == 0 {
                        sample.len()
                    } else {
                        (i * 7) % sample.len() + 1
                    };
                    let _ = s.write_all(&sample[..cut]);
                    // Close right away half the time: the server must cope with vanished peers.
                    if i % 3 == 0 {
                        s.set_read_timeout(Some(Duration::from_millis(200)))
                            .unwrap();
                        let mut buf = [0u8; 256];
                        let _ = s.read(&mut buf);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(srv.get("/healthz").text(), "ok");
    let (mut r, mut w) = srv.pair();
    w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 200);
    // Every connection ends up closed: the open gauge falls back to the ones in use.
    if let Err(open) = srv.wait_metric("holdfast_connections_open", Duration::from_secs(10), |n| {
        n <= 2
    }) {
        panic!("connections leaked: {open} open");
    }
}
