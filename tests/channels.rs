//! The Pusher protocol and HTTP API of CHANNELS.md §2–3 held over real sockets: tungstenite
//! as the WebSocket client, raw HTTP/1.1 for the API, signatures computed here with `ring` and
//! `md-5` from the contract's formulas (not with holdfast's own code), and the server started
//! as a process with two workers so that fan-out crosses worker mailboxes.

mod common;

use common::pusher::{api, api_signed, hmac, md5, publish, raw_api};
use common::{Server, read_response};
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::Message;

use common::ws::{
    Ws, auth_for, close_code, connect, has_metric, next, pusher, quiet, send, subscribe,
};

#[test]
fn connection_established_ping_and_refusals() {
    let srv = Server::start(&[]);
    let (mut ws, socket) = pusher(&srv);
    let parts: Vec<&str> = socket.split('.').collect();
    assert!(
        parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "{socket}"
    );
    send(&mut ws, json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(next(&mut ws), json!({"event": "pusher:pong", "data": {}}));
    // Anything else gets pusher:error and the connection stays up.
    ws.send(Message::text("not json")).unwrap();
    assert_eq!(next(&mut ws)["event"], "pusher:error");
    send(&mut ws, json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(next(&mut ws)["event"], "pusher:pong");

    let (_, other) = pusher(&srv);
    assert_ne!(socket, other, "socket ids are unique");

    for (target, code) in [
        ("/app/nope?protocol=7", 4001),
        ("/app/app-key", 4007),
        ("/app/app-key?protocol=4", 4007),
        ("/app/app-key?protocol=8", 4007),
    ] {
        let mut ws = connect(&srv, target);
        let e = next(&mut ws);
        assert_eq!(e["event"], "pusher:error", "{target}");
        assert_eq!(e["data"]["code"], code, "{target}");
        assert_eq!(close_code(&mut ws), Some(code), "{target}");
    }
    let mut ws = connect(&srv, "/app/app-key?protocol=5");
    assert_eq!(next(&mut ws)["event"], "pusher:connection_established");
}

#[test]
fn public_channels_get_api_events_in_order_and_socket_id_excludes() {
    let srv = Server::start(&[]);
    let (mut a, sa) = pusher(&srv);
    let (mut b, _) = pusher(&srv);
    for ws in [&mut a, &mut b] {
        let ok = subscribe(ws, "news", None, None);
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(ok["channel"], "news");
    }
    for i in 0..20 {
        let (status, body) = publish(&srv, "news", "headline", &format!("n{i}"), None);
        assert_eq!((status, body), (200, json!({})));
    }
    for ws in [&mut a, &mut b] {
        for i in 0..20 {
            assert_eq!(
                next(ws),
                json!({"event": "headline", "channel": "news", "data": format!("n{i}")})
            );
        }
    }
    // The publisher's own socket is left out.
    assert_eq!(publish(&srv, "news", "x", "only b", Some(&sa)).0, 200);
    assert_eq!(next(&mut b)["data"], "only b");
    assert!(quiet(&mut a, Duration::from_millis(300)));
    // Several channels in one call.
    subscribe(&mut a, "sport", None, None);
    let body = json!({"name": "e", "channels": ["news", "sport"], "data": "both"}).to_string();
    assert_eq!(api(&srv, "POST", "/apps/app-id/events", &[], &body).0, 200);
    let got: Vec<String> = (0..2)
        .map(|_| next(&mut a)["channel"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["news", "sport"]);
    // Unsubscribed: nothing more.
    send(
        &mut a,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}),
    );
    send(&mut a, json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(next(&mut a)["event"], "pusher:pong");
    assert_eq!(publish(&srv, "news", "x", "after", None).0, 200);
    assert_eq!(next(&mut b)["data"], "both");
    assert_eq!(next(&mut b)["data"], "after");
    assert!(quiet(&mut a, Duration::from_millis(300)));
}

#[test]
fn private_channels_need_this_sockets_signature() {
    let srv = Server::start(&[]);
    let (mut ws, socket) = pusher(&srv);
    let (_, other) = pusher(&srv);
    for auth in [
        None,
        Some("app-key:00".to_string()),
        Some(auth_for(&other, "private-a", None)),
        Some(auth_for(&socket, "private-b", None)),
    ] {
        let e = subscribe(&mut ws, "private-a", auth.as_deref(), None);
        assert_eq!(e["event"], "pusher:subscription_error", "{auth:?}");
        assert_eq!(e["channel"], "private-a");
        assert_eq!(e["data"]["status"], 401);
    }
    let ok = subscribe(
        &mut ws,
        "private-a",
        Some(&auth_for(&socket, "private-a", None)),
        None,
    );
    assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(publish(&srv, "private-a", "secret", "s", None).0, 200);
    assert_eq!(next(&mut ws)["data"], "s");
    has_metric(
        &srv,
        "holdfast_channel_auth_failures_total{app=\"app-id\",kind=\"private\"} 4",
    );
}

#[test]
fn presence_members_join_and_leave_once_per_user() {
    let srv = Server::start(&[]);
    let ch = "presence-room";
    let join = |user: &str| {
        let (mut ws, socket) = pusher(&srv);
        let data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
        let ok = subscribe(
            &mut ws,
            ch,
            Some(&auth_for(&socket, ch, Some(&data))),
            Some(&data),
        );
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
        let presence: Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
        (ws, presence["presence"].clone())
    };
    let (mut a, p) = join("alice");
    assert_eq!(p["count"], 1);
    assert_eq!(p["ids"], json!(["alice"]));
    let (mut b, p) = join("bob");
    assert_eq!(p["count"], 2);
    assert_eq!(p["hash"]["alice"]["name"], "alice");
    let added = next(&mut a);
    assert_eq!(added["event"], "pusher_internal:member_added");
    let d: Value = serde_json::from_str(added["data"].as_str().unwrap()).unwrap();
    assert_eq!(d, json!({"user_id": "bob", "user_info": {"name": "bob"}}));
    // Bob's second connection is the same member: no member_added.
    let (b2, p) = join("bob");
    assert_eq!(p["count"], 2);
    assert!(quiet(&mut a, Duration::from_millis(300)));
    let (status, users) = api(
        &srv,
        "GET",
        "/apps/app-id/channels/presence-room/users",
        &[],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(users, json!({"users": [{"id": "alice"}, {"id": "bob"}]}));
    let (_, info) = api(
        &srv,
        "GET",
        "/apps/app-id/channels/presence-room",
        &[("info", "user_count,subscription_count")],
        "",
    );
    assert_eq!(
        info,
        json!({"occupied": true, "subscription_count": 3, "user_count": 2})
    );
    let (_, list) = api(
        &srv,
        "GET",
        "/apps/app-id/channels",
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        "",
    );
    assert_eq!(
        list,
        json!({"channels": {"presence-room": {"user_count": 2}}})
    );
    drop(b2);
    assert!(
        quiet(&mut a, Duration::from_millis(300)),
        "bob still has a connection"
    );
    b.close(None).unwrap();
    let removed = next(&mut a);
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    let d: Value = serde_json::from_str(removed["data"].as_str().unwrap()).unwrap();
    assert_eq!(d, json!({"user_id": "bob"}));
}

#[test]
fn client_events_reach_the_others_not_the_sender_and_are_rate_limited() {
    let srv = Server::start(&[]);
    let ch = "private-chat";
    let (mut a, sa) = pusher(&srv);
    let (mut b, sb) = pusher(&srv);
    subscribe(&mut a, ch, Some(&auth_for(&sa, ch, None)), None);
    subscribe(&mut b, ch, Some(&auth_for(&sb, ch, None)), None);
    send(
        &mut a,
        json!({"event": "client-typing", "channel": ch, "data": {"who": "a"}}),
    );
    assert_eq!(
        next(&mut b),
        json!({"event": "client-typing", "channel": ch, "data": {"who": "a"}})
    );
    assert!(
        quiet(&mut a, Duration::from_millis(300)),
        "not echoed to the sender"
    );
    // On a public channel: refused, connection stays.
    subscribe(&mut a, "lobby", None, None);
    send(
        &mut a,
        json!({"event": "client-x", "channel": "lobby", "data": {}}),
    );
    assert_eq!(next(&mut a)["event"], "pusher:error");
    // More than 10 in a second: 4301 and dropped.
    for i in 0..15 {
        send(
            &mut a,
            json!({"event": "client-n", "channel": ch, "data": {"i": i}}),
        );
    }
    let mut errors = 0;
    ws_drain(&mut a, |m| {
        if m["event"] == "pusher:error" {
            assert_eq!(m["data"]["code"], 4301);
            errors += 1;
        }
    });
    assert!(errors >= 4, "{errors}");
    let mut got = 0;
    ws_drain(&mut b, |m| {
        if m["event"] == "client-n" {
            got += 1;
        }
    });
    assert!((1..=11).contains(&got), "{got}");
}

/// Reads everything that arrives within half a second.
fn ws_drain(ws: &mut Ws, mut f: impl FnMut(Value)) {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(m) = ws.read() {
        if let Message::Text(t) = m {
            f(serde_json::from_str(&t).unwrap());
        }
    }
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
}

#[test]
fn cache_channels_send_the_last_event_or_a_miss() {
    let srv = Server::start(&[]);
    let (mut a, _) = pusher(&srv);
    subscribe(&mut a, "cache-price", None, None);
    assert_eq!(
        next(&mut a),
        json!({"event": "pusher:cache_miss", "channel": "cache-price"})
    );
    publish(&srv, "cache-price", "tick", "1", None);
    publish(&srv, "cache-price", "tick", "2", None);
    let (mut b, _) = pusher(&srv);
    assert_eq!(
        subscribe(&mut b, "cache-price", None, None)["event"],
        "pusher_internal:subscription_succeeded"
    );
    assert_eq!(
        next(&mut b),
        json!({"event": "tick", "channel": "cache-price", "data": "2"})
    );
}

#[test]
fn api_refusals_have_their_status_and_a_json_error() {
    let srv = Server::start(&[]);
    let body = json!({"name": "e", "channel": "a", "data": "x"}).to_string();
    let status = |r: (u16, Value)| {
        assert!(r.1["error"].is_string(), "{:?}", r.1);
        r.0
    };
    // A wrong secret, another app's key, a timestamp 700 s old: each 401.
    for (key, secret, skew) in [
        ("app-key", "wrong", 0),
        ("other-key", "app-secret", 0),
        ("app-key", "app-secret", 700),
    ] {
        let r = api_signed(
            &srv,
            "POST",
            "/apps/app-id/events",
            &[],
            &body,
            key,
            secret,
            skew,
        );
        assert_eq!(status(r), 401, "{key} {secret} {skew}");
    }
    assert_eq!(
        status(raw_api(&srv, "POST", "/apps/app-id/events", &body)),
        401
    );
    assert_eq!(
        status(api(&srv, "POST", "/apps/other/events", &[], &body)),
        404
    );
    let big = json!({"name": "e", "channel": "a", "data": "x".repeat(10 * 1024 + 1)}).to_string();
    assert_eq!(
        status(api(&srv, "POST", "/apps/app-id/events", &[], &big)),
        413
    );
    for bad in [
        "{",
        r#"{"name":"e","channel":"bad name","data":"x"}"#,
        r#"{"name":"e","data":"x"}"#,
    ] {
        assert_eq!(
            status(api(&srv, "POST", "/apps/app-id/events", &[], bad)),
            400,
            "{bad}"
        );
    }
    let batch = json!({"batch": (0..11).map(|_| json!({"name": "e", "channel": "a", "data": "x"})).collect::<Vec<_>>()}).to_string();
    assert_eq!(
        status(api(&srv, "POST", "/apps/app-id/batch_events", &[], &batch)),
        400
    );
    assert_eq!(
        status(api(
            &srv,
            "GET",
            "/apps/app-id/channels/news/users",
            &[],
            ""
        )),
        400
    );
    assert_eq!(
        status(api(
            &srv,
            "GET",
            "/apps/app-id/channels",
            &[("info", "user_count")],
            ""
        )),
        400
    );
    // A body that does not match its body_md5: the signature covers the MD5, not the bytes.
    let (mut r, mut w) = srv.pair();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let md5 = md5(&body);
    let qs = format!("auth_key=app-key&auth_timestamp={now}&auth_version=1.0&body_md5={md5}");
    let sig = hmac("app-secret", &format!("POST\n/apps/app-id/events\n{qs}"));
    let tampered = body.replace("\"x\"", "\"y\"");
    write!(w, "POST /apps/app-id/events?{qs}&auth_signature={sig} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{tampered}", tampered.len()).unwrap();
    assert_eq!(read_response(&mut r).unwrap().status, 401);
    // A body over http.max_body_bytes is refused by the HTTP layer, in JSON too.
    let (mut r, mut w) = srv.pair();
    write!(
        w,
        "POST /apps/app-id/events HTTP/1.1\r\nHost: t\r\nContent-Length: 2097152\r\n\r\n"
    )
    .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(v["error"].is_string(), "{v}");
    // A good batch.
    let batch = json!({"batch": [{"name": "e", "channel": "a", "data": "1"}, {"name": "e", "channel": "b", "data": "2"}]}).to_string();
    assert_eq!(
        api(&srv, "POST", "/apps/app-id/batch_events", &[], &batch),
        (200, json!({}))
    );
    has_metric(
        &srv,
        "holdfast_channel_api_requests_total{app=\"app-id\",status=\"401\"} 5",
    );
}

/// 1,000 subscribers on one channel over two workers: every one gets every event, in order.
#[test]
fn a_thousand_subscribers_each_get_every_event_in_order() {
    let srv = Server::start(&[]);
    let n = 1000;
    let mut subs: Vec<Ws> = (0..n)
        .map(|_| {
            let (mut ws, _) = pusher(&srv);
            send(
                &mut ws,
                json!({"event": "pusher:subscribe", "data": {"channel": "all"}}),
            );
            ws
        })
        .collect();
    for ws in &mut subs {
        assert_eq!(next(ws)["event"], "pusher_internal:subscription_succeeded");
    }
    let events = 30;
    for i in 0..events {
        assert_eq!(publish(&srv, "all", "tick", &i.to_string(), None).0, 200);
    }
    for ws in &mut subs {
        for i in 0..events {
            assert_eq!(next(ws)["data"], i.to_string());
        }
    }
    let (_, info) = api(
        &srv,
        "GET",
        "/apps/app-id/channels/all",
        &[("info", "subscription_count")],
        "",
    );
    assert_eq!(info, json!({"occupied": true, "subscription_count": n}));
}

#[test]
fn drain_asks_channel_clients_to_reconnect_with_4200_spread_out() {
    let mut srv = Server::start(&["server.shutdown_timeout=4s"]);
    let conns: Vec<Ws> = (0..20).map(|_| pusher(&srv).0).collect();
    let started = Instant::now();
    srv.signal("TERM");
    // Each connection read on its own thread, so each close is timed as it arrives.
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            std::thread::spawn(move || {
                let code = close_code(&mut ws);
                (code, started.elapsed())
            })
        })
        .collect();
    let mut at = Vec::new();
    for r in readers {
        let (code, when) = r.join().unwrap();
        assert_eq!(code, Some(4200));
        at.push(when);
    }
    let last = at.iter().max().unwrap();
    let first = at.iter().min().unwrap();
    assert!(
        *last < Duration::from_millis(2500),
        "all within half the shutdown timeout: {at:?}"
    );
    // Spread with jitter, not all at once (20 uniform draws over 2 s).
    assert!(*last - *first > Duration::from_millis(300), "{at:?}");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn apps_come_from_the_config_and_the_default_app_is_for_loopback_only() {
    let dir = std::env::temp_dir().join(format!("holdfast-apps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    let cfg = dir.join("apps.toml");
    std::fs::write(
        &cfg,
        "[[apps]]\nid = \"42\"\nkey = \"k42\"\nsecret_file = \"secret\"\nmax_connections = 2\n",
    )
    .unwrap();
    let srv = Server::start_with(&[], |c| {
        c.arg("--config").arg(&cfg);
    });
    let mut a = connect(&srv, "/app/k42?protocol=7");
    assert_eq!(next(&mut a)["event"], "pusher:connection_established");
    let mut b = connect(&srv, "/app/k42?protocol=7");
    assert_eq!(next(&mut b)["event"], "pusher:connection_established");
    let mut c = connect(&srv, "/app/k42?protocol=7");
    assert_eq!(next(&mut c)["data"]["code"], 4004);
    assert_eq!(close_code(&mut c), Some(4004));
    // The default app is gone once apps are configured.
    let mut d = connect(&srv, "/app/app-key?protocol=7");
    assert_eq!(next(&mut d)["data"]["code"], 4001);
    let body = json!({"name": "e", "channel": "a", "data": "x"}).to_string();
    assert_eq!(
        api_signed(
            &srv,
            "POST",
            "/apps/42/events",
            &[],
            &body,
            "k42",
            "s3cret",
            0
        )
        .0,
        200
    );
    assert!(
        !srv.log_text().contains("s3cret"),
        "the secret is never logged"
    );

    let empty = dir.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["config", "check"])
        .arg(&empty)
        .args(["--set", "server.listen=0.0.0.0:8080"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("apps"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A masked client text frame (RFC 6455 §5.3), for the raw-socket subscriber.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A subscriber that stops reading is closed with 4201 once it is a few MiB behind; the
/// other subscribers of the channel get every event without waiting for it.
#[test]
fn a_subscriber_that_stops_reading_gets_4201_and_delays_nobody() {
    // The close of a peer that reads nothing ends after the close wait (the pong timeout): the
    // stalled client starts reading within it, and then finds the close behind what the
    // kernel already held for it.
    let srv = Server::start(&["websocket.pong_timeout=5s"]);
    let (mut good, _) = pusher(&srv);
    subscribe(&mut good, "firehose", None, None);
    // The stalled one: a small receive buffer, subscribed, then never read.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&srv.addr.into()).unwrap();
    let mut stalled: TcpStream = sock.into();
    write!(
        stalled,
        "GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    stalled
        .write_all(&masked_text(
            br#"{"event":"pusher:subscribe","data":{"channel":"firehose"}}"#,
        ))
        .unwrap();
    // Wait until the server counts both subscriptions.
    let deadline = Instant::now() + Duration::from_secs(5);
    while api(
        &srv,
        "GET",
        "/apps/app-id/channels/firehose",
        &[("info", "subscription_count")],
        "",
    )
    .1["subscription_count"]
        != 2
    {
        assert!(
            Instant::now() < deadline,
            "the stalled subscriber never subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // 10 KiB events, ten per call, until well past the cap and the kernel's buffers.
    let data = "x".repeat(10 * 1024 - 16);
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < 1500 {
            if next(&mut good)["event"] == "big" {
                got += 1;
            }
        }
        got
    });
    for i in 0..150 {
        let batch: Vec<Value> = (0..10)
            .map(
                |j| json!({"name": "big", "channel": "firehose", "data": format!("{i}-{j}{data}")}),
            )
            .collect();
        let (status, _) = api(
            &srv,
            "POST",
            "/apps/app-id/batch_events",
            &[],
            &json!({ "batch": batch }).to_string(),
        );
        assert_eq!(status, 200);
    }
    // What the stalled client finally reads ends with close 4201.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stalled, &mut all);
    let close = all
        .windows(4)
        .rposition(|w| w[0] == 0x88 && w[2..4] == 4201u16.to_be_bytes());
    assert_eq!(
        reader.join().unwrap(),
        1500,
        "the reading subscriber got every event"
    );
    assert_eq!(
        srv.wait_metric(
            "holdfast_channel_slow_subscribers_total{app=\"app-id\"}",
            Duration::from_secs(10),
            |v| v == 1
        ),
        Ok(1)
    );
    assert!(close.is_some(), "no close 4201 in the last bytes");
}

/// Under `server.processes = 2` an event published at either process reaches the subscribers
/// of both, channel counts are the node's, and presence is one list across processes.
#[test]
fn events_counts_and_presence_cross_server_processes() {
    let srv = Server::start(&["server.processes=2", "server.workers=1"]);
    let origin = |s: &str| s.split('.').next().unwrap().to_string();
    let mut conns: Vec<(Ws, String)> = Vec::new();
    while conns.len() < 60 {
        conns.push(pusher(&srv));
        let origins: std::collections::HashSet<String> =
            conns.iter().map(|(_, s)| origin(s)).collect();
        if origins.len() == 2 && conns.len() >= 10 {
            break;
        }
    }
    let origins: std::collections::HashSet<String> = conns.iter().map(|(_, s)| origin(s)).collect();
    assert_eq!(
        origins.len(),
        2,
        "SO_REUSEPORT put connections on both processes"
    );
    for (ws, _) in &mut conns {
        assert_eq!(
            subscribe(ws, "everywhere", None, None)["event"],
            "pusher_internal:subscription_succeeded"
        );
    }
    let n = conns.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Each API call lands on either process; both must count every subscriber.
        let (_, info) = api(
            &srv,
            "GET",
            "/apps/app-id/channels/everywhere",
            &[("info", "subscription_count")],
            "",
        );
        if info["subscription_count"] == n {
            let (_, again) = api(
                &srv,
                "GET",
                "/apps/app-id/channels/everywhere",
                &[("info", "subscription_count")],
                "",
            );
            if again["subscription_count"] == n {
                break;
            }
        }
        assert!(Instant::now() < deadline, "counts never agreed: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..10 {
        assert_eq!(
            publish(&srv, "everywhere", "e", &i.to_string(), None).0,
            200
        );
    }
    for (ws, _) in &mut conns {
        for i in 0..10 {
            assert_eq!(next(ws)["data"], i.to_string());
        }
    }
    // Presence across the two processes.
    let first = conns.iter().position(|(_, s)| origin(s) == "1").unwrap();
    let other = conns.iter().position(|(_, s)| origin(s) != "1").unwrap();
    let ch = "presence-wide";
    let join = |ws: &mut Ws, socket: &str, user: &str| {
        let data = json!({"user_id": user}).to_string();
        let ok = subscribe(
            ws,
            ch,
            Some(&auth_for(socket, ch, Some(&data))),
            Some(&data),
        );
        let p: Value = serde_json::from_str(ok["data"].as_str().unwrap()).unwrap();
        p["presence"]["count"].as_u64().unwrap()
    };
    let (a, rest) = conns.split_at_mut(first.max(other));
    let (low, high) = (&mut a[first.min(other)], &mut rest[0]);
    let (alice, bob) = if first < other {
        (low, high)
    } else {
        (high, low)
    };
    assert_eq!(join(&mut alice.0, &alice.1.clone(), "alice"), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        join(&mut bob.0, &bob.1.clone(), "bob"),
        2,
        "bob's process knows alice"
    );
    let added = next(&mut alice.0);
    assert_eq!(added["event"], "pusher_internal:member_added");
    bob.0.close(None).unwrap();
    let removed = next(&mut alice.0);
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    // /metrics, answered by either process, counts the node's publishes (siblings report
    // every second).
    let events = "holdfast_channel_events_total{app=\"app-id\",source=\"api\"} 10";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(0..4).all(|_| srv.metrics_text().lines().any(|l| l == events)) {
        assert!(Instant::now() < deadline, "{}", srv.metrics_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}
