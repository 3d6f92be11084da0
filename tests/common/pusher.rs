//! Signatures of the Pusher protocol and HTTP API (CHANNELS.md §2–3), computed here with `ring`
//! and `md-5` from the contract's formulas, not with holdfast's own code, for the tests that
//! subscribe to private channels and publish through the API.

use super::{Server, read_response};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn hmac(secret: &str, msg: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex(ring::hmac::sign(&key, msg.as_bytes()).as_ref())
}

pub fn md5(body: &str) -> String {
    hex(&Md5::digest(body.as_bytes()))
}

/// The query string of an API request signed as the SDKs sign it (sorted `k=v` pairs under
/// `METHOD\nPATH\n`), with a timestamp `skew` seconds off our clock.
pub fn signed_query(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
    (key, secret): (&str, &str),
    skew: i64,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + skew;
    let mut q: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    q.push(("auth_key".into(), key.into()));
    q.push(("auth_timestamp".into(), now.to_string()));
    q.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        q.push(("body_md5".into(), md5(body)));
    }
    q.sort();
    let qs = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let sig = hmac(secret, &format!("{method}\n{path}\n{qs}"));
    format!("{qs}&auth_signature={sig}")
}

/// A signed API request, as the SDKs sign it; returns (status, body as JSON).
pub fn api(
    srv: &Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    api_signed(srv, method, path, params, body, "app-key", "app-secret", 0)
}

#[allow(clippy::too_many_arguments)]
pub fn api_signed(
    srv: &Server,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
    key: &str,
    secret: &str,
    skew: i64,
) -> (u16, Value) {
    let qs = signed_query(method, path, params, body, (key, secret), skew);
    raw_api(srv, method, &format!("{path}?{qs}"), body)
}

pub fn raw_api(srv: &Server, method: &str, target: &str, body: &str) -> (u16, Value) {
    let (mut r, mut w) = srv.pair();
    write!(
        w,
        "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let resp = read_response(&mut r).unwrap();
    assert_eq!(resp.header("content-type"), Some("application/json"));
    (
        resp.status,
        serde_json::from_slice(&resp.body).expect("a JSON body"),
    )
}

pub fn publish(
    srv: &Server,
    channel: &str,
    name: &str,
    data: &str,
    socket: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({"name": name, "channel": channel, "data": data});
    if let Some(s) = socket {
        body["socket_id"] = json!(s);
    }
    api(srv, "POST", "/apps/app-id/events", &[], &body.to_string())
}
