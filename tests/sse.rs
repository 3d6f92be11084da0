//! Server-Sent Events (CHANNELS.md §4) over real sockets: raw HTTP/1.1 with the chunked body
//! decoded here, and `curl -N` as a real client; events published through the signed HTTP API.
//! The npm `eventsource` client is in tests/channels_clients.rs.

mod common;

use common::Server;
use common::pusher::{hmac, publish};
use common::sse::Stream;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn events_url(channels: &[&str], extra: &str) -> String {
    let q: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    format!("/app/app-key/events?{}{extra}", q.join("&"))
}

fn publish_ok(srv: &Server, channel: &str, data: &str) {
    let (status, body) = publish(srv, channel, "ev", data, None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_stream_opens_with_retry_and_an_id_then_carries_events_in_order() {
    let srv = Server::start(&[]);
    let mut s = Stream::open(&srv, &events_url(&["news"], ""), "");
    assert_eq!(s.status, 200);
    for h in [
        "Content-Type: text/event-stream",
        "Cache-Control: no-cache",
        "Transfer-Encoding: chunked",
    ] {
        assert!(s.head.contains(h), "{h} missing in {}", s.head);
    }
    let first = s.next().unwrap();
    assert_eq!(first.retry.as_deref(), Some("3000"));
    let start = first.id.expect("the stream's starting id");
    for i in 0..20 {
        publish_ok(&srv, "news", &format!("n{i}"));
    }
    let mut last = start;
    for i in 0..20 {
        let m = s.event();
        assert_eq!(m.event.as_deref(), Some("ev"));
        let v = m.json();
        assert_eq!(v["channel"], "news");
        assert_eq!(v["data"], format!("n{i}"));
        let id = m.id.unwrap();
        assert_ne!(id, last, "each event has its own id");
        last = id;
    }
}

#[test]
fn curl_streams_events() {
    let srv = Server::start(&[]);
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "5"])
        .arg(srv.url(&events_url(&["curl-feed"], "")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = BufReader::new(curl.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "retry: 3000\n");
    publish_ok(&srv, "curl-feed", "hello\nworld");
    let mut seen = Vec::new();
    while seen.len() < 6 {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push(line.clone());
    }
    let _ = curl.kill();
    let _ = curl.wait();
    let text = seen.concat();
    assert!(text.contains("event: ev\n"), "{text}");
    assert!(
        text.contains(r#"data: {"channel":"curl-feed","data":"hello\nworld"}"#),
        "{text}"
    );
}

/// Disconnect, 500 published meanwhile, reconnect with Last-Event-ID: exactly those 500 in
/// order, then live ones. Also on a stream over two channels, with one ID for both.
#[test]
fn last_event_id_replays_exactly_the_missed_events_then_live_ones() {
    let srv = Server::start(&["channels.history_size=1000"]);
    let mut s = Stream::open(&srv, &events_url(&["storm", "calm"], ""), "");
    let _ = s.next().unwrap();
    publish_ok(&srv, "storm", "0");
    publish_ok(&srv, "calm", "c0");
    let _ = s.event();
    let last = s.event().id.unwrap();
    assert_eq!(
        last.split(',').count(),
        2,
        "one position per channel: {last}"
    );
    drop(s);
    for i in 1..=500 {
        publish_ok(
            &srv,
            if i % 5 == 0 { "calm" } else { "storm" },
            &i.to_string(),
        );
    }
    let mut s = Stream::open(
        &srv,
        &events_url(&["storm", "calm"], ""),
        &format!("Last-Event-ID: {last}\r\n"),
    );
    let _ = s.next().unwrap();
    // In order on each channel (the contract orders events per channel).
    let (mut storm, mut calm) = (Vec::new(), Vec::new());
    for _ in 0..500 {
        let v = s.event().json();
        let n: u32 = v["data"].as_str().unwrap().parse().unwrap();
        if v["channel"] == "calm" {
            &mut calm
        } else {
            &mut storm
        }
        .push(n);
    }
    assert_eq!(calm, (1..=500).filter(|i| i % 5 == 0).collect::<Vec<_>>());
    assert_eq!(storm, (1..=500).filter(|i| i % 5 != 0).collect::<Vec<_>>());
    publish_ok(&srv, "calm", "live");
    assert_eq!(s.event().json()["data"], "live");
    assert_eq!(
        srv.metric("holdfast_sse_recoveries_total{app=\"app-id\",outcome=\"ok\"}"),
        1
    );
}

#[test]
fn a_history_that_no_longer_reaches_back_says_recovery_failed_then_goes_live() {
    let srv = Server::start(&["channels.history_size=10"]);
    let mut s = Stream::open(&srv, &events_url(&["short"], ""), "");
    let start = s.next().unwrap().id.unwrap();
    drop(s);
    for i in 0..20 {
        publish_ok(&srv, "short", &i.to_string());
    }
    // Also a position from the future, and one from before the server started.
    for id in [start.as_str(), "99999999999999-1", "1-1"] {
        let mut s = Stream::open(
            &srv,
            &events_url(&["short"], &format!("&last_event_id={id}")),
            "",
        );
        assert_eq!(s.status, 200);
        let _ = s.next().unwrap();
        let m = s.event();
        assert_eq!(m.event.as_deref(), Some("holdfast:recovery_failed"), "{id}");
        assert_eq!(m.data, ["{}"]);
        publish_ok(&srv, "short", "after");
        assert_eq!(s.event().json()["data"], "after");
    }
    assert_eq!(
        srv.metric("holdfast_sse_recoveries_total{app=\"app-id\",outcome=\"failed\"}"),
        3
    );
}

#[test]
fn bad_requests_are_refused_before_the_stream_starts() {
    let srv = Server::start(&[]);
    let refused = |target: &str, headers: &str| {
        let mut s = Stream::open(&srv, target, headers);
        let status = s.status;
        (status, s.refusal()["error"].as_str().unwrap().to_string())
    };
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    for (target, headers, status) in [
        ("/app/nope/events?channel=a".to_string(), "", 404),
        ("/app/app-key/events".to_string(), "", 400),
        (events_url(&["presence-room"], ""), "", 400),
        (events_url(&["bad%21"], ""), "", 400),
        (events_url(&["a", "a"], ""), "", 400),
        (events_url(&names, ""), "", 400),
        (events_url(&["a"], ""), "Last-Event-ID: forged\r\n", 400),
        (events_url(&["a"], ""), "Last-Event-ID: 1-1,2-2\r\n", 400),
        (events_url(&["private-a"], ""), "", 403),
    ] {
        let (got, why) = refused(&target, headers);
        assert_eq!(got, status, "{target} {headers}: {why}");
        assert!(!why.is_empty());
    }
    // A thousand channels do not fit the request line's limit: 414, and the connection ends.
    let thousand: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = thousand.iter().map(String::as_str).collect();
    let (mut r, mut w) = srv.pair();
    write!(
        w,
        "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
        events_url(&names, "")
    )
    .unwrap();
    let resp = common::read_response(&mut r).unwrap();
    assert_eq!(resp.status, 414);
    assert!(resp.closes());
    // The private channel's auth: wrong, expired, and right.
    let exp = now_s() + 60;
    let good = hmac("app-secret", &format!("private-a,b:{exp}"));
    let wrong = hmac("other-secret", &format!("private-a,b:{exp}"));
    let old = now_s() - 1;
    let expired = hmac("app-secret", &format!("private-a,b:{old}"));
    for (e, sig, status) in [(exp, &wrong, 403), (old, &expired, 403), (exp, &good, 200)] {
        let t = events_url(&["private-a", "b"], &format!("&expires={e}&auth={sig}"));
        assert_eq!(Stream::open(&srv, &t, "").status, status, "{t}");
    }
    assert_eq!(
        srv.metric("holdfast_channel_auth_failures_total{app=\"app-id\",kind=\"sse\"}"),
        3
    );
    // HTTP/1.0 has no chunked coding; a stream is a GET.
    let (mut r, mut w) = srv.pair();
    write!(w, "GET /app/app-key/events?channel=a HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(common::read_response(&mut r).unwrap().status, 505);
    let (mut r, mut w) = srv.pair();
    write!(
        w,
        "POST /app/app-key/events?channel=a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    assert_eq!(common::read_response(&mut r).unwrap().status, 405);
}

#[test]
fn idle_streams_get_heartbeat_comments() {
    let srv = Server::start(&["channels.sse_heartbeat=300ms"]);
    let mut s = Stream::open(&srv, &events_url(&["quiet"], ""), "");
    let _ = s.next().unwrap();
    let t0 = Instant::now();
    let m = s.next().unwrap();
    assert!(m.comment, "{m:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(s.next().unwrap().comment);
}

#[test]
fn drain_sends_reconnect_and_ends_the_body() {
    let mut srv = Server::start(&["server.shutdown_timeout=2s"]);
    let mut s = Stream::open(&srv, &events_url(&["d"], ""), "");
    let _ = s.next().unwrap();
    srv.signal("TERM");
    let m = s.event();
    assert_eq!(m.event.as_deref(), Some("holdfast:reconnect"));
    assert!(s.next().is_none());
    assert!(s.ended, "the chunked body ends with its last chunk");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A stream that stops reading is cut once its unsent output passes the cap, and the other
/// streams on the channel get every event meanwhile.
#[test]
fn a_stream_that_does_not_read_is_cut_without_delaying_the_channel() {
    let srv = Server::start(&["server.workers=1"]);
    let stalled = srv.connect();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // A small receive buffer, so that the server's output backs up soon.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stalled);
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on a socket we own, with a pointer to an int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut w = stalled.try_clone().unwrap();
    write!(
        w,
        "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
        events_url(&["busy"], "")
    )
    .unwrap();
    let mut reader = Stream::open(&srv, &events_url(&["busy"], ""), "");
    let _ = reader.next().unwrap();
    let big = "x".repeat(9 * 1024);
    for i in 0..800 {
        publish_ok(&srv, "busy", &format!("{i}{big}"));
        let v = reader.event().json();
        assert!(v["data"].as_str().unwrap().starts_with(&i.to_string()));
    }
    assert_eq!(
        srv.metric("holdfast_channel_slow_subscribers_total{app=\"app-id\"}"),
        1
    );
    assert_eq!(srv.metric("holdfast_sse_streams{app=\"app-id\"}"), 1);
    drop(stalled);
}

#[test]
fn the_history_is_bounded_in_memory_and_reported() {
    let srv = Server::start(&["channels.history_memory=256KiB"]);
    let data = "y".repeat(1000);
    for i in 0..600 {
        publish_ok(&srv, &format!("h{}", i % 50), &data);
    }
    let bytes = srv.metric("holdfast_channel_history_bytes{app=\"app-id\"}");
    let events = srv.metric("holdfast_channel_history_events{app=\"app-id\"}");
    assert!(bytes > 0 && bytes <= 256 * 1024, "{bytes}");
    assert!(events > 0 && events < 600, "{events}");
}

/// Two server processes: events published through either reach the streams of both in one
/// order with the same IDs, and a stream that reconnects (to whichever process the kernel
/// picks) recovers exactly what it missed from that process's copy of the history.
#[test]
fn with_two_processes_every_stream_sees_one_order_and_recovers_anywhere() {
    let srv = Server::start(&["server.processes=2", "server.workers=1"]);
    let mut streams: Vec<Stream> = (0..8)
        .map(|_| Stream::open(&srv, &events_url(&["shared"], ""), ""))
        .collect();
    for s in &mut streams {
        let _ = s.next().unwrap();
    }
    for i in 0..40 {
        publish_ok(&srv, "shared", &i.to_string());
    }
    let mut seen: Vec<Vec<(String, String)>> = Vec::new();
    for s in &mut streams {
        seen.push(
            (0..40)
                .map(|_| {
                    let m = s.event();
                    let data = m.json()["data"].as_str().unwrap().to_string();
                    (m.id.unwrap(), data)
                })
                .collect(),
        );
    }
    let want: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    for got in &seen {
        assert_eq!(got.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), want);
        assert_eq!(got, &seen[0], "the same ids in every process");
    }
    let last = seen[0][19].0.clone();
    drop(streams);
    for attempt in 0..6 {
        let mut s = Stream::open(
            &srv,
            &events_url(&["shared"], ""),
            &format!("Last-Event-ID: {last}\r\n"),
        );
        let _ = s.next().unwrap();
        let got: Vec<String> = (0..20)
            .map(|_| s.event().json()["data"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want[20..], "attempt {attempt}");
    }
}
