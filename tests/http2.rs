//! HTTP/2 (RFC 9113) against the real server: curl and nghttp (Debian's `nghttp2-client`) as
//! real clients, on the plain listener with prior knowledge (h2c) and on the TLS listener by
//! ALPN; and a raw-frame client for what they would never send: protocol errors, floods,
//! tiny windows, too many streams.

mod common;

use common::h2::{self, Client};
use common::pusher::signed_query;
use common::ws::{pusher, subscribe};
use common::{Server, tools};
use std::process::Command;

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_speaks_h2c_with_prior_knowledge_and_h2_by_alpn() {
    let srv = Server::start(&[
        "server.tls_listen=127.0.0.1:0",
        "tls.alpn=[\"h2\", \"http/1.1\"]",
        "log.access=stderr",
    ]);
    let plain = format!("http://{}", srv.addr);
    let tls = format!("https://{}", srv.tls_addr.unwrap());
    let fmt = "%{http_version} %{http_code}\n";

    let (out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        fmt,
        &format!("{plain}/plaintext"),
    ]);
    assert_eq!(out, "Hello, World!2 200\n", "{err}");
    let (out, _) = curl(&[
        "--http2-prior-knowledge",
        "-I",
        &format!("{plain}/plaintext"),
    ]);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("content-length: 13"), "{out}");
    let (out, _) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        fmt,
        "-d",
        "ping",
        &format!("{plain}/echo"),
    ]);
    assert_eq!(out, "ping2 200\n");
    let (out, _) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        fmt,
        &format!("{plain}/stream?chunks=3"),
    ]);
    assert!(out.ends_with("2 200\n"), "{out}");

    // Over TLS, ALPN chooses h2; several requests share the connection.
    let urls: Vec<String> = ["/plaintext", "/healthz", "/nope"]
        .iter()
        .map(|p| format!("{tls}{p}"))
        .collect();
    let mut args = vec!["-k", "--http2", "-w", fmt];
    args.extend(urls.iter().map(String::as_str));
    let (out, err) = curl(&args);
    assert_eq!(
        out, "Hello, World!2 200\nok2 200\nnot found\n2 404\n",
        "{err}"
    );
    assert!(err.is_empty(), "{err}");
    // A WebSocket path over HTTP/2: the stream is refused with HTTP_1_1_REQUIRED and curl
    // retries over HTTP/1.1 by itself.
    let (out, _) = curl(&[
        "-k",
        "--http2",
        "-w",
        fmt,
        "-o",
        "/dev/null",
        &format!("{tls}/ws"),
    ]);
    assert_eq!(out, "1.1 400\n");
    assert!(
        srv.wait_log("\"GET /plaintext HTTP/2.0\" 200"),
        "{}",
        srv.log_text()
    );
}

#[test]
fn nghttp_multiplexes_streams_on_one_connection() {
    let nghttp = tools::apt_tool("nghttp2-client", "nghttp");
    let srv = Server::start(&[]);
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://{}/echo?{i}", srv.addr))
        .collect();
    let out = Command::new(&nghttp)
        .args(["-n", "-v", "-d", "/dev/null"])
        .args(&urls[..1])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&nghttp)
        .args(["-n", "-s"])
        .args(urls.iter().map(|u| u.replace("/echo", "/plaintext")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // One statistics line per request, each a 200, all on one connection.
    assert_eq!(text.matches(" 200 ").count(), 20, "{text}");
}

#[test]
fn a_publish_over_http2_waits_for_its_fan_out_and_is_delivered() {
    let srv = Server::start(&[]);
    let (mut ws, _) = pusher(&srv);
    subscribe(&mut ws, "news", None, None);
    let body = r#"{"name":"e","channel":"news","data":"over h2"}"#;
    let path = "/apps/app-id/events";
    let qs = signed_query("POST", path, &[], body, ("app-key", "app-secret"), 0);
    let url = format!("http://{}{path}?{qs}", srv.addr);
    let (out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        " %{http_version} %{http_code}",
        "-H",
        "content-type: application/json",
        "-d",
        body,
        &url,
    ]);
    assert_eq!(out, "{} 2 200", "{err}");
    let m = common::ws::next(&mut ws);
    assert_eq!(m["data"], "over h2");
}

#[test]
fn frames_are_answered_as_rfc_9113_says() {
    let srv = Server::start(&["http2.max_concurrent_streams=2"]);

    // PING is answered with the same payload.
    let mut c = Client::connect(srv.addr, &[]);
    c.send(h2::PING, 0, 0, b"12345678");
    let f = c.until(h2::PING).unwrap();
    assert_eq!((f.flags, &f.payload[..]), (h2::ACK, &b"12345678"[..]));

    // A third open stream is refused; the first two are served.
    c.request(1, "POST", "/echo", false);
    c.request(3, "POST", "/echo", false);
    c.request(5, "POST", "/echo", false);
    let f = c.next().unwrap();
    assert_eq!(
        (f.kind, f.stream, f.code()),
        (h2::RST_STREAM, 5, h2::REFUSED_STREAM)
    );
    c.send(h2::DATA, h2::END_STREAM, 1, b"one");
    assert_eq!(c.response(1), (200, b"one".to_vec()));
    c.send(h2::DATA, h2::END_STREAM, 3, b"three");
    assert_eq!(c.response(3), (200, b"three".to_vec()));

    // A response larger than the stream's window waits for WINDOW_UPDATE.
    let mut c = Client::connect(srv.addr, &[(0x4, 5)]);
    c.request(1, "GET", "/plaintext", true);
    let head = c.next().unwrap();
    assert_eq!(head.kind, h2::HEADERS);
    let first = c.next().unwrap();
    assert_eq!(
        (first.kind, &first.payload[..], first.flags),
        (h2::DATA, &b"Hello"[..], 0)
    );
    c.send(h2::WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes());
    let rest = c.next().unwrap();
    assert_eq!(
        (&rest.payload[..], rest.flags),
        (&b", World!"[..], h2::END_STREAM)
    );

    // Connection errors end with GOAWAY and the code.
    type Provoke = Box<dyn Fn(&mut Client)>;
    let cases: Vec<(&str, Provoke, u32)> = vec![
        (
            "a zero window increment",
            Box::new(|c| c.send(h2::WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes())),
            h2::PROTOCOL_ERROR,
        ),
        (
            "an even stream",
            Box::new(|c| c.request(2, "GET", "/plaintext", true)),
            h2::PROTOCOL_ERROR,
        ),
        (
            "a PING of 7 bytes",
            Box::new(|c| c.send(h2::PING, 0, 0, b"1234567")),
            h2::FRAME_SIZE_ERROR,
        ),
        (
            "DATA on an idle stream",
            Box::new(|c| c.send(h2::DATA, 0, 7, b"x")),
            h2::PROTOCOL_ERROR,
        ),
        (
            "a frame over 16 KiB",
            Box::new(|c| c.send(h2::DATA, 0, 1, &[0; 20_000])),
            h2::FRAME_SIZE_ERROR,
        ),
        (
            "garbage HPACK",
            Box::new(|c| c.send(h2::HEADERS, h2::END_HEADERS, 1, &[0xff; 8])),
            h2::COMPRESSION_ERROR,
        ),
        (
            "a window past 2^31-1",
            Box::new(|c| {
                c.send(h2::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes());
            }),
            h2::FLOW_CONTROL_ERROR,
        ),
        (
            "a CONTINUATION flood",
            Box::new(|c| {
                let b = h2::block(&[(":method", "GET")]);
                c.send(h2::HEADERS, 0, 1, &b);
                for _ in 0..100 {
                    c.send(
                        h2::CONTINUATION,
                        0,
                        1,
                        &[0x10, 1, b'x', 1, b'y'].repeat(1000),
                    );
                }
            }),
            h2::ENHANCE_YOUR_CALM,
        ),
        (
            "a stream numbered below one already opened",
            Box::new(|c| {
                c.request(5, "GET", "/plaintext", true);
                c.request(3, "GET", "/plaintext", true);
            }),
            h2::PROTOCOL_ERROR,
        ),
        (
            "a frame between HEADERS and its CONTINUATION",
            Box::new(|c| {
                let b = h2::block(&[(":method", "GET")]);
                c.send(h2::HEADERS, 0, 1, &b);
                c.send(h2::PING, 0, 0, b"12345678");
            }),
            h2::PROTOCOL_ERROR,
        ),
    ];
    for (what, send, code) in cases {
        let mut c = Client::connect(srv.addr, &[]);
        send(&mut c);
        let f = c
            .until(h2::GOAWAY)
            .unwrap_or_else(|| panic!("{what}: no GOAWAY"));
        assert_eq!(f.code(), code, "{what}");
        assert!(c.closed(), "{what}: still open");
    }

    // A malformed request is a stream error: that stream is reset, the connection serves on.
    let mut c = Client::connect(srv.addr, &[]);
    let b = h2::block(&[(":method", "GET"), (":path", "/plaintext")]);
    c.send(h2::HEADERS, h2::END_HEADERS | h2::END_STREAM, 1, &b);
    let f = c.next().unwrap();
    assert_eq!(
        (f.kind, f.stream, f.code()),
        (h2::RST_STREAM, 1, h2::PROTOCOL_ERROR)
    );
    c.request(3, "GET", "/plaintext", true);
    assert_eq!(c.response(3), (200, b"Hello, World!".to_vec()));

    // A preface that goes wrong after its first line is not HTTP/2 at all: closed.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    std::io::Write::write_all(&mut s, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").unwrap();
    assert!(Client::from_stream(s).closed());
}

#[test]
fn the_request_limits_hold_per_stream() {
    let srv = Server::start(&["http.max_body_bytes=10", "http.max_header_bytes=1KiB"]);
    let mut c = Client::connect(srv.addr, &[]);
    c.request(1, "POST", "/echo", false);
    c.send(h2::DATA, h2::END_STREAM, 1, b"more than ten bytes");
    assert_eq!(c.response(1).0, 413);
    let long = "v".repeat(600);
    let b = h2::block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/plaintext"),
        ("x-a", &long),
        ("x-b", &long),
    ]);
    c.send(h2::HEADERS, h2::END_HEADERS | h2::END_STREAM, 3, &b);
    assert_eq!(c.response(3).0, 431);
    c.request(5, "GET", "/plaintext", true);
    assert_eq!(c.response(5).0, 200);
}

#[test]
fn a_drain_says_goaway_and_finishes_the_stream_in_flight() {
    let srv = Server::start(&["server.shutdown_timeout=5s"]);
    let mut c = Client::connect(srv.addr, &[]);
    c.request(1, "POST", "/echo", false);
    // Wait until the stream is open on the server.
    c.send(h2::PING, 0, 0, b"synchron");
    c.until(h2::PING).unwrap();
    srv.signal("TERM");
    let f = c.next().unwrap();
    assert_eq!((f.kind, f.code()), (h2::GOAWAY, 0));
    assert_eq!(
        u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
        1,
        "last stream"
    );
    c.send(h2::DATA, h2::END_STREAM, 1, b"last");
    assert_eq!(c.response(1), (200, b"last".to_vec()));
    assert!(c.closed());
}

#[test]
fn floods_and_rapid_reset_are_told_to_calm_down_and_counted() {
    let srv = Server::start(&[]);
    // Rapid Reset: streams opened and cancelled at once, far past what the cap allows.
    let mut c = Client::connect(srv.addr, &[]);
    for i in 0..300u32 {
        let id = 1 + 2 * i;
        c.request(id, "POST", "/echo", false);
        c.send(h2::RST_STREAM, 0, id, &8u32.to_be_bytes());
    }
    let f = c.until(h2::GOAWAY).expect("GOAWAY");
    assert_eq!(f.code(), h2::ENHANCE_YOUR_CALM);
    assert!(c.closed());
    // A PING flood.
    let mut c = Client::connect(srv.addr, &[]);
    for _ in 0..1100 {
        c.send(h2::PING, 0, 0, b"flooding");
    }
    let f = c.until(h2::GOAWAY).expect("GOAWAY");
    assert_eq!(f.code(), h2::ENHANCE_YOUR_CALM);
    let name = "holdfast_http2_errors_total{scope=\"connection\",code=\"enhance_your_calm\"}";
    assert_eq!(srv.metric(name), 2);
    assert!(srv.metric("holdfast_http2_connections_total") >= 2);
}

#[test]
fn heartbeats_find_a_dead_peer_and_spare_a_live_one() {
    let srv = Server::start(&["http2.ping_interval=1s", "http2.ping_timeout=1s"]);
    let mut live = Client::connect(srv.addr, &[]);
    let mut dead = Client::connect(srv.addr, &[]);
    let started = std::time::Instant::now();
    // The live one answers every PING; the dead one reads them and answers nothing.
    let p = live.until(h2::PING).expect("a heartbeat");
    assert_eq!(p.flags, 0);
    live.send(h2::PING, h2::ACK, 0, &p.payload);
    assert!(dead.until(h2::PING).is_some());
    assert!(dead.closed(), "the dead peer was not closed");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    let p = live.until(h2::PING).expect("another heartbeat");
    live.send(h2::PING, h2::ACK, 0, &p.payload);
    live.request(1, "GET", "/plaintext", true);
    assert_eq!(live.response(1).0, 200);
}

/// The text of the DATA frames on `stream` until one contains `want` (other frames skipped).
fn data_until(c: &mut Client, stream: u32, want: &str) -> String {
    let mut text = String::new();
    while !text.contains(want) {
        let f = c
            .next()
            .unwrap_or_else(|| panic!("no {want:?} in {text:?}"));
        if f.kind == h2::DATA && f.stream == stream {
            text.push_str(&String::from_utf8_lossy(&f.payload));
        }
    }
    text
}

#[test]
fn event_streams_share_one_connection_and_end_on_their_own() {
    let srv = Server::start(&["server.workers=1"]);
    let mut c = Client::connect(srv.addr, &[]);
    c.request(1, "GET", "/app/app-key/events?channel=news", true);
    c.request(3, "GET", "/app/app-key/events?channel=sports", true);
    for id in [1, 3] {
        let head = c.until(h2::HEADERS).unwrap();
        let fields = c.fields(&head);
        assert!(
            fields.contains(&(":status".into(), "200".into())),
            "{fields:?}"
        );
        assert!(fields.contains(&("content-type".into(), "text/event-stream".into())));
        assert_eq!(head.flags & h2::END_STREAM, 0);
        let _ = id;
    }
    srv.wait_metric(
        "holdfast_sse_streams{app=\"app-id\"}",
        std::time::Duration::from_secs(5),
        |v| v == 2,
    )
    .unwrap_or_else(|v| panic!("{v} streams"));
    common::pusher::publish(&srv, "news", "flash", "\"one\"", None);
    common::pusher::publish(&srv, "sports", "goal", "\"two\"", None);
    let news = data_until(&mut c, 1, "flash");
    assert!(
        news.contains("event: flash") && news.contains("one"),
        "{news}"
    );
    let sports = data_until(&mut c, 3, "goal");
    assert!(sports.contains("two"), "{sports}");

    // The client cancels one stream: the other goes on, and the server forgets the first.
    c.send(h2::RST_STREAM, 0, 1, &8u32.to_be_bytes());
    srv.wait_metric(
        "holdfast_sse_streams{app=\"app-id\"}",
        std::time::Duration::from_secs(5),
        |v| v == 1,
    )
    .unwrap_or_else(|v| panic!("{v} streams"));
    common::pusher::publish(&srv, "sports", "goal", "\"three\"", None);
    assert!(data_until(&mut c, 3, "three").contains("goal"));

    // A stream reconnecting with Last-Event-ID on the same connection recovers what it missed.
    common::pusher::publish(&srv, "news", "flash", "\"missed\"", None);
    let id = news
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id")
        .to_string();
    let b = h2::block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/app/app-key/events?channel=news"),
        ("last-event-id", &id),
    ]);
    c.send(h2::HEADERS, h2::END_HEADERS | h2::END_STREAM, 5, &b);
    assert!(data_until(&mut c, 5, "missed").contains("flash"));

    // The drain ends every stream with the reconnect event, then the connection.
    srv.signal("TERM");
    let goaway = c.until(h2::GOAWAY).unwrap();
    assert_eq!(goaway.code(), 0);
    let mut ended = Vec::new();
    let mut text = String::new();
    while ended.len() < 2 {
        let f = c.next().expect("the streams' ends");
        if f.kind == h2::DATA {
            text.push_str(&String::from_utf8_lossy(&f.payload));
            if f.flags & h2::END_STREAM != 0 {
                ended.push(f.stream);
            }
        }
    }
    ended.sort();
    assert_eq!(ended, [3, 5]);
    assert!(text.contains("holdfast:reconnect"), "{text}");
    assert!(c.closed());
}

#[test]
fn curl_reads_an_event_stream_over_http2() {
    let srv = Server::start(&[
        "server.tls_listen=127.0.0.1:0",
        "tls.alpn=[\"h2\", \"http/1.1\"]",
    ]);
    let url = format!(
        "https://{}/app/app-key/events?channel=news",
        srv.tls_addr.unwrap()
    );
    let curl = Command::new("curl")
        .args([
            "-sSkN",
            "--http2",
            "--max-time",
            "10",
            "-w",
            "%{http_version}",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    srv.wait_metric(
        "holdfast_sse_streams{app=\"app-id\"}",
        std::time::Duration::from_secs(5),
        |v| v == 1,
    )
    .unwrap_or_else(|v| panic!("{v} streams"));
    common::pusher::publish(&srv, "news", "flash", "\"over h2\"", None);
    std::thread::sleep(std::time::Duration::from_millis(300));
    srv.signal("TERM");
    let out = curl.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("event: flash"), "{text}");
    assert!(text.contains("holdfast:reconnect"), "{text}");
    assert!(text.ends_with('2'), "HTTP/2: {text}");
}

/// A masked client WebSocket frame (RFC 6455 §5.2), small payloads only.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The next server WebSocket frame on `stream` (unmasked, small): (opcode, payload).
fn ws_read(c: &mut Client, stream: u32, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    let (first, payload) = ws_read_frame(c, stream, buf);
    (first & 0x0f, payload)
}

/// The same, with the frame's whole first byte (FIN, RSV1–3, opcode).
fn ws_read_frame(c: &mut Client, stream: u32, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if buf.len() >= 2 {
            let len = usize::from(buf[1] & 0x7f);
            let (start, len) = match len {
                126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
                126 => (usize::MAX, 0),
                n => (2, n),
            };
            if start != usize::MAX && buf.len() >= start + len {
                let frame = (buf[0], buf[start..start + len].to_vec());
                buf.drain(..start + len);
                return frame;
            }
        }
        let f = c.next().expect("a WebSocket frame");
        if f.kind == h2::DATA && f.stream == stream {
            buf.extend_from_slice(&f.payload);
        }
    }
}

fn connect_ws(c: &mut Client, stream: u32, path: &str) {
    let b = h2::block(&[
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
    ]);
    c.send(h2::HEADERS, h2::END_HEADERS, stream, &b);
}

#[test]
fn websockets_ride_http2_streams_by_extended_connect() {
    let srv = Server::start(&["server.workers=1"]);
    let mut c = Client::connect(srv.addr, &[]);
    // The server says it takes extended CONNECT (RFC 8441 §3).
    let settings = c.until(h2::SETTINGS).unwrap();
    let enabled = settings
        .payload
        .chunks(6)
        .any(|kv| kv[..2] == [0, 8] && kv[2..] == [0, 0, 0, 1]);
    assert!(enabled, "SETTINGS_ENABLE_CONNECT_PROTOCOL");

    // The echo, and a Pusher connection, on two streams of one connection.
    connect_ws(&mut c, 1, "/ws");
    connect_ws(&mut c, 3, "/app/app-key?protocol=7");
    for _ in 0..2 {
        let head = c.until(h2::HEADERS).unwrap();
        assert!(c.fields(&head).contains(&(":status".into(), "200".into())));
        assert_eq!(head.flags & h2::END_STREAM, 0);
    }
    let mut pusher_buf = Vec::new();
    let (op, hello) = ws_read(&mut c, 3, &mut pusher_buf);
    assert_eq!(op, 1);
    let hello: serde_json::Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(hello["event"], "pusher:connection_established");

    let mut echo_buf = Vec::new();
    c.send(h2::DATA, 0, 1, &ws_frame(1, b"hello over h2"));
    assert_eq!(
        ws_read(&mut c, 1, &mut echo_buf),
        (1, b"hello over h2".to_vec())
    );

    // Subscribe on the Pusher stream; a publish arrives there.
    let sub = r#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#;
    c.send(h2::DATA, 0, 3, &ws_frame(1, sub.as_bytes()));
    let (_, ok) = ws_read(&mut c, 3, &mut pusher_buf);
    assert!(String::from_utf8_lossy(&ok).contains("subscription_succeeded"));
    common::pusher::publish(&srv, "news", "flash", "\"ws over h2\"", None);
    let (_, ev) = ws_read(&mut c, 3, &mut pusher_buf);
    assert!(String::from_utf8_lossy(&ev).contains("ws over h2"));

    // The echo's close handshake ends its stream; the other goes on.
    c.send(h2::DATA, 0, 1, &ws_frame(8, &1000u16.to_be_bytes()));
    let (op, code) = ws_read(&mut c, 1, &mut echo_buf);
    assert_eq!((op, &code[..2]), (8, &1000u16.to_be_bytes()[..]));
    common::pusher::publish(&srv, "news", "flash", "\"still here\"", None);
    let (_, ev) = ws_read(&mut c, 3, &mut pusher_buf);
    assert!(String::from_utf8_lossy(&ev).contains("still here"));

    // permessage-deflate is negotiated as over HTTP/1.1, and a compressed message echoes.
    let b = h2::block(&[
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", "/ws"),
        ("sec-websocket-version", "13"),
        (
            "sec-websocket-extensions",
            "permessage-deflate; client_no_context_takeover",
        ),
    ]);
    c.send(h2::HEADERS, h2::END_HEADERS, 7, &b);
    let head = c.until(h2::HEADERS).unwrap();
    let ext = c
        .fields(&head)
        .into_iter()
        .find(|(n, _)| n == "sec-websocket-extensions");
    assert!(ext.is_some_and(|(_, v)| v.starts_with("permessage-deflate")));
    let mut deflate = flate2::Compress::new(flate2::Compression::default(), false);
    let mut packed = Vec::with_capacity(64);
    deflate
        .compress_vec(b"squeezed", &mut packed, flate2::FlushCompress::Sync)
        .unwrap();
    packed.truncate(packed.len() - 4); // RFC 7692 §7.2.1: the empty block's tail goes
    let mut frame = ws_frame(1, &packed);
    frame[0] |= 0x40; // RSV1: compressed
    c.send(h2::DATA, 0, 7, &frame);
    let mut buf = Vec::new();
    let (first, payload) = ws_read_frame(&mut c, 7, &mut buf);
    assert_eq!(first & 0x0f, 1);
    let rsv1 = first & 0x40 != 0;
    // The server compresses what it sends when it pays (not an 8-byte echo, it may decide).
    let text = if rsv1 {
        let mut inflate = flate2::Decompress::new(false);
        let mut text = Vec::with_capacity(64);
        let tail = [&payload[..], &[0, 0, 0xff, 0xff]].concat();
        inflate
            .decompress_vec(&tail, &mut text, flate2::FlushDecompress::Sync)
            .unwrap();
        text
    } else {
        payload
    };
    assert_eq!(text, b"squeezed");

    // A plain GET with Upgrade headers cannot upgrade over HTTP/2.
    c.request(9, "GET", "/ws", true);
    let f = c.until(h2::RST_STREAM).unwrap();
    assert_eq!((f.stream, f.code()), (9, h2::HTTP_1_1_REQUIRED));
}

#[test]
fn a_reader_that_keeps_its_window_shut_is_cut_off() {
    let srv = Server::start(&["http2.ping_interval=0", "http2.ping_timeout=1s"]);
    // A window of zero: the response's head comes, its body cannot.
    let mut c = Client::connect(srv.addr, &[(0x4, 0)]);
    c.request(1, "GET", "/plaintext", true);
    assert_eq!(c.next().unwrap().kind, h2::HEADERS);
    let started = std::time::Instant::now();
    let f = c.until(h2::GOAWAY).expect("GOAWAY");
    assert_eq!(f.code(), h2::ENHANCE_YOUR_CALM);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(c.closed());
    // One that opens its window in time is served.
    let mut c = Client::connect(srv.addr, &[(0x4, 0)]);
    c.request(1, "GET", "/plaintext", true);
    assert_eq!(c.next().unwrap().kind, h2::HEADERS);
    c.send(h2::WINDOW_UPDATE, 0, 1, &100u32.to_be_bytes());
    let data = c.next().unwrap();
    assert_eq!(&data.payload[..], b"Hello, World!");
}

#[test]
fn connection_limits_end_with_goaway_and_refuse_nothing_in_flight() {
    // http.keepalive_requests counts streams: the third answer comes with a GOAWAY naming
    // the last stream taken; a stream opened after it is refused, not served.
    let srv = Server::start(&[
        "http.keepalive_requests=3",
        "http.keepalive_timeout=1s",
        "http.header_timeout=1s",
    ]);
    let mut c = Client::connect(srv.addr, &[]);
    for id in [1, 3, 5] {
        c.request(id, "GET", "/plaintext", true);
    }
    let mut statuses = Vec::new();
    let mut goaway = None;
    while statuses.len() < 3 || goaway.is_none() {
        let f = c.next().expect("answers and a GOAWAY");
        match f.kind {
            h2::HEADERS => statuses.push(f.stream),
            h2::GOAWAY => goaway = Some(f),
            _ => {}
        }
    }
    assert_eq!(statuses, [1, 3, 5]);
    let g = goaway.unwrap();
    assert_eq!(
        (
            u32::from_be_bytes(g.payload[..4].try_into().unwrap()),
            g.code()
        ),
        (5, 0)
    );
    assert!(c.closed(), "closed once nothing is in flight");

    // A connection with a stream in flight, kept for the drain at the end.
    let mut c = Client::connect(srv.addr, &[]);
    c.request(1, "POST", "/echo", false);
    c.send(h2::PING, 0, 0, b"synchron");
    c.until(h2::PING).unwrap();
    let mut d = Client::connect(srv.addr, &[]);
    d.request(1, "GET", "/plaintext", true);
    assert_eq!(d.response(1).0, 200);

    // http.keepalive_timeout: an idle connection is closed with GOAWAY(NO_ERROR).
    let started = std::time::Instant::now();
    let g = d.until(h2::GOAWAY).expect("idle GOAWAY");
    assert_eq!(g.code(), 0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(800));
    assert!(d.closed());

    // http.header_timeout: a header block whose CONTINUATION never comes.
    let mut e = Client::connect(srv.addr, &[]);
    let b = h2::block(&[(":method", "GET")]);
    e.send(h2::HEADERS, 0, 1, &b);
    let g = e.until(h2::GOAWAY).expect("stalled header block");
    assert_eq!(g.code(), h2::PROTOCOL_ERROR);

    // The stream in flight is still served, and answered after the drain's GOAWAY; a new
    // one is refused.
    srv.signal("TERM");
    let g = c.until(h2::GOAWAY).unwrap();
    assert_eq!(u32::from_be_bytes(g.payload[..4].try_into().unwrap()), 1);
    c.request(3, "GET", "/plaintext", true);
    let f = c.next().unwrap();
    assert_eq!(
        (f.kind, f.stream, f.code()),
        (h2::RST_STREAM, 3, h2::REFUSED_STREAM)
    );
    c.send(h2::DATA, h2::END_STREAM, 1, b"in flight");
    assert_eq!(c.response(1), (200, b"in flight".to_vec()));
}

#[test]
fn an_hpack_bomb_is_refused_and_frames_on_closed_streams_are_answered() {
    let srv = Server::start(&[]);
    let mut c = Client::connect(srv.addr, &[]);
    // A 4,000-byte field added to the table, then referred to 100 times: 400 KB decoded from
    // a block of a few KB. Past SETTINGS_MAX_HEADER_LIST_SIZE: 431, and the connection goes
    // on (the table stays in step).
    let mut b = h2::block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/plaintext"),
    ]);
    b.push(0x40); // literal with incremental indexing, new name
    b.push(5);
    b.extend_from_slice(b"x-big");
    b.extend_from_slice(&[0x7f, 0xa1, 0x1e]); // length 127 + 3873 = 4000
    b.extend(std::iter::repeat_n(b'v', 4000));
    b.extend(std::iter::repeat_n(0x80 | 62, 100));
    c.send(h2::HEADERS, h2::END_HEADERS | h2::END_STREAM, 1, &b);
    assert_eq!(c.response(1).0, 431);
    c.request(3, "GET", "/plaintext", true);
    assert_eq!(c.response(3).0, 200);
    // DATA on a stream that is closed: STREAM_CLOSED.
    c.send(h2::DATA, 0, 3, b"late");
    let f = c.next().unwrap();
    assert_eq!((f.kind, f.stream, f.code()), (h2::RST_STREAM, 3, 0x5));
    let name = "holdfast_http2_errors_total{scope=\"stream\",code=\"stream_closed\"}";
    assert_eq!(srv.metric(name), 1);
}

#[test]
fn a_preface_cut_into_small_reads_is_still_http2() {
    let srv = Server::start(&[]);
    let s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut c = Client::from_stream(s);
    for piece in h2::PREFACE.chunks(3) {
        c.raw(piece);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    c.send(h2::SETTINGS, 0, 0, &[]);
    c.request(1, "GET", "/plaintext", true);
    assert_eq!(c.response(1), (200, b"Hello, World!".to_vec()));
    // And a request that only begins like the preface is HTTP/1.1.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_nodelay(true).unwrap();
    std::io::Write::write_all(&mut s, b"P").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::io::Write::write_all(
        &mut s,
        b"OST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let resp = common::read_response(&mut r).unwrap();
    assert_eq!((resp.status, &resp.body[..]), (200, &b"hi"[..]));
}
