//! A Pusher client over tungstenite for the tests (CHANNELS.md §2): connect, read the next
//! JSON message, subscribe (with the contract's auth signature), close codes and silence.

use super::Server;
use super::pusher::hmac;
use serde_json::{Value, json};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<TcpStream>;

pub fn connect(srv: &Server, target: &str) -> Ws {
    let stream = srv.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let url = format!("ws://{}{}", srv.addr, target);
    let (ws, _) = tungstenite::client(url, stream).expect("upgrade");
    ws
}

/// The next text message as JSON (pings and pongs skipped).
pub fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Opens a Pusher connection; returns it with its socket_id.
pub fn pusher(srv: &Server) -> (Ws, String) {
    let mut ws = connect(srv, "/app/app-key?protocol=7&client=js&version=8.4.0");
    let hello = next(&mut ws);
    assert_eq!(hello["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(hello["data"].as_str().expect("data is a string")).unwrap();
    assert_eq!(data["activity_timeout"], 30);
    (ws, data["socket_id"].as_str().unwrap().to_string())
}

pub fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

pub fn subscribe(
    ws: &mut Ws,
    channel: &str,
    auth: Option<&str>,
    channel_data: Option<&str>,
) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(a) = auth {
        data["auth"] = json!(a);
    }
    if let Some(d) = channel_data {
        data["channel_data"] = json!(d);
    }
    send(ws, json!({"event": "pusher:subscribe", "data": data}));
    next(ws)
}

pub fn auth_for(socket: &str, channel: &str, data: Option<&str>) -> String {
    let msg = match data {
        Some(d) => format!("{socket}:{channel}:{d}"),
        None => format!("{socket}:{channel}"),
    };
    format!("app-key:{}", hmac("app-secret", &msg))
}

/// `/metrics` has this sample line.
pub fn has_metric(srv: &Server, line: &str) {
    let m = srv.metrics_text();
    assert!(m.lines().any(|l| l == line), "{line} missing in:\n{m}");
}

pub fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return Some(f.code.into()),
            Ok(Message::Close(None)) => return None,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Nothing more arrives within `wait` (beyond pings).
pub fn quiet(ws: &mut Ws, wait: Duration) -> bool {
    ws.get_mut().set_read_timeout(Some(wait)).unwrap();
    let r = loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(m) => break Some(m),
            Err(_) => break None,
        }
    };
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match r {
        None => true,
        Some(m) => panic!("unexpected {m:?}"),
    }
}
