//! HTTP/1.1 persistence against the real binary over loopback (RFC 9112 §9): keep-alive by
//! default, `Connection: close`, the HTTP/1.0 keep-alive extension, idle / request / age
//! timeouts, the request limit and pipelining.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

#[test]
fn http11_persists_by_default() {
    let srv = Server::start(&[]);
    let (mut r, mut w) = srv.pair();
    for _ in 0..5 {
        w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"Hello, World!");
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert!(resp.header("connection").is_none(), "{}", resp.head);
        assert!(resp.header("date").is_some());
    }
    assert_eq!(
        srv.metric("holdfast_connections_accepted_total"),
        2,
        "one test connection + the metrics one"
    );
}

#[test]
fn connection_close_is_honoured_and_echoed() {
    let srv = Server::start(&[]);
    let (mut r, mut w) = srv.pair();
    w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.closes());
    assert!(closed_within(&mut r, Duration::from_secs(5)));
}

#[test]
fn http10_closes_unless_keep_alive_requested() {
    let srv = Server::start(&[]);
    // Plain 1.0: answered, then closed; no keep-alive announced.
    let out = exchange_until_close(srv.addr, b"GET /plaintext HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("keep-alive"), "{text}");
    assert!(text.ends_with("Hello, World!"));

    // 1.0 with keep-alive: the answer says keep-alive and the connection stays.
    let (mut r, mut w) = srv.pair();
    for _ in 0..3 {
        w.write_all(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    // A chunked endpoint for a 1.0 client is sent with a length instead.
    w.write_all(b"GET /stream?chunks=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert!(resp.header("transfer-encoding").is_none());
    assert_eq!(resp.text(), "chunk 0\nchunk 1\nchunk 2\n");
}

#[test]
fn idle_connection_closes_after_keepalive_timeout() {
    let srv = Server::start(&["http.keepalive_timeout=300ms"]);
    let (mut r, mut w) = srv.pair();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r).unwrap().text(), "ok");
    let t = Instant::now();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    let waited = t.elapsed();
    assert!(rest.is_empty(), "an idle close sends nothing: {rest:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(srv.metric("holdfast_timeouts_total{kind=\"idle\"}"), 1);
}

#[test]
fn stalled_request_head_gets_408_then_close() {
    let srv = Server::start(&["http.header_timeout=300ms"]);
    let mut s = srv.connect();
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 408);
    assert!(resp.closes());
    assert!(closed_within(&mut r, Duration::from_secs(8)));
    assert_eq!(srv.metric("holdfast_timeouts_total{kind=\"request\"}"), 1);
}

#[test]
fn stalled_request_body_gets_408() {
    let srv = Server::start(&["http.header_timeout=300ms"]);
    let mut s = srv.connect();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 408);
}

#[test]
fn last_allowed_request_carries_connection_close() {
    let srv = Server::start(&["http.keepalive_requests=3"]);
    let (mut r, mut w) = srv.pair();
    for i in 1..=3 {
        w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.closes(), i == 3, "request {i}: {}", resp.head);
    }
    assert!(closed_within(&mut r, Duration::from_secs(8)));
}

#[test]
fn max_connection_age_closes_busy_and_idle_connections() {
    let srv = Server::start(&["http.max_connection_age=400ms"]);
    let (mut r, mut w) = srv.pair();
    w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(!read_response(&mut r).unwrap().closes());
    std::thread::sleep(Duration::from_millis(100));
    // Still young: persists. Then an idle connection is closed when it reaches the age.
    let t = Instant::now();
    assert!(closed_within(&mut r, Duration::from_secs(5)));
    assert!(t.elapsed() < Duration::from_secs(2));

    // A busy connection: a request in progress when the age passes is answered, with
    // `Connection: close`.
    let (mut r, mut w) = srv.pair();
    w.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    w.write_all(b"\r\n").unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.closes(), "{}", resp.head);
    assert!(closed_within(&mut r, Duration::from_secs(5)));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = Server::start(&[]);
    let (mut r, mut w) = srv.pair();
    let mut batch = Vec::new();
    for i in 0..50 {
        match i % 3 {
            0 => batch.extend_from_slice(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"),
            1 => {
                let body = format!("body-{i}");
                batch.extend_from_slice(
                    format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                        .as_bytes(),
                );
            }
            _ => batch.extend_from_slice(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n",
            ),
        }
    }
    w.write_all(&batch).unwrap();
    for i in 0..50 {
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200);
        let want = match i % 3 {
            0 => "Hello, World!".to_string(),
            1 => format!("body-{i}"),
            _ => "abc".to_string(),
        };
        assert_eq!(resp.text(), want, "response {i}");
    }
}

#[test]
fn deep_pipeline_past_the_output_cap_loses_nothing() {
    // More pipelined output than the per-connection cap: reading pauses and resumes.
    let srv = Server::start(&["http.keepalive_requests=100000"]);
    let (mut r, mut w) = srv.pair();
    let n = 3000;
    let writer = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for _ in 0..n {
            batch.extend_from_slice(b"GET /stream?chunks=20 HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        w.write_all(&batch).unwrap();
        w
    });
    for i in 0..n {
        let resp = read_response(&mut r).unwrap();
        assert_eq!(resp.status, 200, "response {i}");
        assert!(resp.text().ends_with("chunk 19\n"));
    }
    writer.join().unwrap();
}

#[test]
fn rust_client_and_curl_reuse_one_connection() {
    let srv = Server::start(&[]);
    let agent = ureq::Agent::new_with_defaults();
    for _ in 0..5 {
        let body = agent
            .get(&srv.url("/plaintext"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        assert_eq!(body, "Hello, World!");
    }
    let before = srv.metric("holdfast_connections_accepted_total");
    // metrics itself used one connection per call: 1 (ureq) + 1 (this metric call)
    assert_eq!(before, 2);

    let out = std::process::Command::new("curl")
        .args(["-sv", &srv.url("/plaintext"), &srv.url("/healthz")])
        .output()
        .expect("curl is installed");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
}
