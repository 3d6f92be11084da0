//! Owns holdfast's Server-Sent Events (CHANNELS.md §4) at `/app/{key}/events`: which requests
//! may open a stream (channels, private `auth`, `Last-Event-ID`), how an event is written on a
//! stream, and the stream's ID, which names a position on every channel of the stream so that
//! one `Last-Event-ID` recovers them all.

use super::api::query_pairs;
use super::auth;
use super::hub::{AppIdx, Entry, Hub, Pos};
use super::names::{self, Access};
use super::pusher;
use super::stats::AuthFailure;
use crate::proto::http1::exchange::Request;
use crate::proto::sse::{chunk, chunk_header_len};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// What the client waits before reconnecting, in milliseconds (sent first on every stream).
pub const RETRY_MS: u64 = 3000;

/// The last event of a stream ended by a drain: reconnect now (to another server).
pub const RECONNECT: &[u8] = b"event: holdfast:reconnect\ndata: {}\n\n";

/// Sent first when the history no longer reaches back to the client's `Last-Event-ID`: what
/// it missed is lost, and it should reload whatever state it derives from the events.
pub const RECOVERY_FAILED: &[u8] = b"event: holdfast:recovery_failed\ndata: {}\n\n";

/// Whether a request path is the event-stream endpoint `/app/{key}/events`.
pub fn is_stream_path(path: &[u8]) -> bool {
    path.strip_prefix(b"/app/")
        .and_then(|rest| rest.strip_suffix(b"/events"))
        .is_some_and(|key| !key.is_empty() && !key.contains(&b'/'))
}

/// A request that may open a stream.
#[derive(Debug)]
pub struct StreamRequest {
    pub app: AppIdx,
    pub channels: Vec<Arc<str>>,
    /// Where the client's last event left each channel (`Last-Event-ID`), if it said.
    pub from: Option<Vec<Pos>>,
}

/// A refusal before the stream starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    /// A private channel's `auth` was missing, wrong or expired.
    pub auth_failed: bool,
}

fn refuse<T>(status: u16, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        status,
        message: message.into(),
        auth_failed: false,
    })
}

/// Checks a stream request: the app, its channels, the signature of private ones and the
/// position to recover from. `now_s` is the Unix time in seconds.
pub fn check(
    req: &Request<'_>,
    hub: &Hub,
    max_channels: usize,
    now_s: u64,
) -> Result<StreamRequest, Refusal> {
    let path = std::str::from_utf8(req.path).unwrap_or("");
    let key = path
        .strip_prefix("/app/")
        .and_then(|r| r.strip_suffix("/events"))
        .unwrap_or("");
    let Some(app) = hub.app_by_key(key) else {
        return refuse(404, format!("app key {key} is not in this cluster"));
    };
    let pairs = query_pairs(req.query.unwrap_or(b"")).or_else(|e| refuse(400, e.message))?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut channels: Vec<Arc<str>> = Vec::new();
    let mut private = false;
    for (k, name) in &pairs {
        if k != "channel" {
            continue;
        }
        if channels.len() == max_channels {
            return refuse(
                400,
                format!(
                    "more than {max_channels} channels on one stream (channels.max_channels_per_connection)"
                ),
            );
        }
        let kind = names::classify(name).or_else(|why| refuse(400, why))?;
        match kind.access {
            Access::Presence => return refuse(400, "presence channels need a WebSocket"),
            Access::Private => private = true,
            Access::Public => {}
        }
        if channels.iter().any(|c| **c == **name) {
            return refuse(400, format!("channel {name} is named twice"));
        }
        channels.push(name.as_str().into());
    }
    if channels.is_empty() {
        return refuse(400, "name at least one channel: ?channel=NAME");
    }
    if private {
        let config = &hub.apps[usize::from(app)];
        let expires = param("expires").and_then(|e| e.parse::<u64>().ok());
        let given = param("auth");
        let signed = |expires: u64, sig: &str| {
            let names: Vec<&str> = channels.iter().map(|c| &**c).collect();
            let message = format!("{}:{expires}", names.join(","));
            auth::verify(&config.secret, message.as_bytes(), sig)
        };
        let ok = match (expires, given) {
            (Some(e), Some(sig)) => e >= now_s && signed(e, sig),
            _ => false,
        };
        if !ok {
            hub.stats[usize::from(app)].auth_failed(AuthFailure::Sse);
            return Err(Refusal {
                status: 403,
                message: "private channels need auth=HMAC(secret, \"CHANNELS:EXPIRES\") and an \
                          expires in the future"
                    .into(),
                auth_failed: true,
            });
        }
    }
    let last = req
        .last_event_id
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .or_else(|| param("last_event_id").map(str::to_string))
        .filter(|s| !s.is_empty());
    let from = match last {
        None => None,
        Some(id) => Some(parse_id(&id, channels.len()).ok_or(Refusal {
            status: 400,
            message: "Last-Event-ID is not an ID this stream's channels sent".into(),
            auth_failed: false,
        })?),
    };
    Ok(StreamRequest {
        app,
        channels,
        from,
    })
}

/// A stream's ID: its position on each of its channels, in the request's order.
pub fn format_id(positions: &[Pos]) -> String {
    let mut s = String::with_capacity(positions.len() * 18);
    for (i, p) in positions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&p.to_string());
    }
    s
}

/// The positions of an ID for a stream over `channels` channels.
pub fn parse_id(id: &str, channels: usize) -> Option<Vec<Pos>> {
    if id.len() > channels * 41 {
        return None;
    }
    let positions: Vec<Pos> = id.split(',').map(Pos::parse).collect::<Option<_>>()?;
    (positions.len() == channels).then_some(positions)
}

/// The first bytes of a stream: the reconnection delay and the stream's ID as it starts, so
/// that even a client that got no event yet recovers from here.
pub fn preamble(out: &mut Vec<u8>, positions: &[Pos]) {
    let body = format!("retry: {RETRY_MS}\nid: {}\n\n", format_id(positions));
    chunk(out, body.as_bytes());
}

/// A message with an ID but no data: `EventSource` takes the ID and dispatches nothing.
pub fn id_only(out: &mut Vec<u8>, positions: &[Pos]) {
    chunk(out, format!("id: {}\n\n", format_id(positions)).as_bytes());
}

/// An event's lines under a stream's own ID (a stream over several channels).
pub fn with_id(id: &str, lines: &[u8]) -> Arc<[u8]> {
    let mut body = Vec::with_capacity(id.len() + 5 + lines.len());
    body.extend_from_slice(b"id: ");
    body.extend_from_slice(id.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(lines);
    let mut out = Vec::with_capacity(body.len() + 12);
    chunk(&mut out, &body);
    out.into()
}

#[derive(Deserialize)]
struct Delivered<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<std::borrow::Cow<'a, str>>,
}

/// An event (the WebSocket frame every subscriber shares) as one chunk of an event stream at
/// `pos` on its channel: `id:`, `event:` and `data:` lines with the channel inside the data.
/// None for a frame that is not a delivered event.
pub fn entry(frame: &[u8], pos: Pos, at_ms: u64) -> Option<Entry> {
    let d: Delivered<'_> = serde_json::from_slice(pusher::frame_payload(frame)).ok()?;
    let mut lines = Vec::with_capacity(frame.len() + 32);
    lines.extend_from_slice(b"event: ");
    // An event line cannot hold a line break: one in a name becomes a space.
    lines.extend(
        d.event
            .bytes()
            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    lines.push(b'\n');
    let mut data = format!(
        r#"{{"channel":{},"data":{}"#,
        pusher::quote(&d.channel),
        d.data.map_or("null", |r| r.get())
    );
    if let Some(u) = &d.user_id {
        data.push_str(r#","user_id":"#);
        data.push_str(&pusher::quote(u));
    }
    data.push('}');
    // JSON keeps line breaks only as whitespace between tokens (a client event's data as the
    // client wrote it): each line of it (ended by LF, CRLF or a lone CR, as SSE reads them)
    // becomes a `data:` line, which the client joins again with LF.
    let data = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        lines.extend_from_slice(b"data: ");
        lines.extend_from_slice(line.as_bytes());
        lines.push(b'\n');
    }
    lines.push(b'\n');
    let id = format!("id: {pos}\n");
    let body_len = id.len() + lines.len();
    let mut out = Vec::with_capacity(body_len + 12);
    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(&lines);
    chunk(&mut out, &body);
    let at = (chunk_header_len(body_len) + id.len()) as u32;
    Some(Entry {
        pos,
        chunk: out.into(),
        lines: (at, lines.len() as u32),
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunked: &[u8]) -> String {
        let s = String::from_utf8(chunked.to_vec()).unwrap();
        let (len, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(len, 16).unwrap();
        assert_eq!(&rest[n..], "\r\n");
        rest[..n].to_string()
    }

    #[test]
    fn an_event_becomes_id_event_and_data_lines() {
        let frame = pusher::frame(&pusher::event("greet", "news", r#""hi\nthere""#, None));
        let e = entry(&frame, Pos { ms: 5, n: 2 }, 0).unwrap();
        assert_eq!(
            body(&e.chunk),
            "id: 5-2\nevent: greet\ndata: {\"channel\":\"news\",\"data\":\"hi\\nthere\"}\n\n"
        );
        assert_eq!(
            std::str::from_utf8(e.lines()).unwrap(),
            "event: greet\ndata: {\"channel\":\"news\",\"data\":\"hi\\nthere\"}\n\n"
        );
        let multi = with_id("5-2,7-1", e.lines());
        assert!(body(&multi).starts_with("id: 5-2,7-1\nevent: greet\n"));
    }

    #[test]
    fn raw_line_breaks_in_client_data_become_data_lines_and_names_stay_one_line() {
        let frame = pusher::frame(&pusher::event(
            "client-x\r\nevent: forged",
            "private-a",
            "{\r\n\"a\":\r1\n}",
            Some("u1"),
        ));
        let e = entry(&frame, Pos { ms: 1, n: 1 }, 0).unwrap();
        let text = body(&e.chunk);
        assert_eq!(
            text,
            "id: 1-1\nevent: client-x  event: forged\ndata: {\"channel\":\"private-a\",\"data\":{\ndata: \"a\":\ndata: 1\ndata: },\"user_id\":\"u1\"}\n\n"
        );
        // What an EventSource rebuilds is the JSON again.
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        let v: serde_json::Value = serde_json::from_str(&data.join("\n")).unwrap();
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["user_id"], "u1");
    }

    #[test]
    fn ids_round_trip_and_foreign_ones_are_refused() {
        let p = [Pos { ms: 10, n: 1 }, Pos { ms: 0, n: 0 }];
        let id = format_id(&p);
        assert_eq!(id, "10-1,0-0");
        assert_eq!(parse_id(&id, 2), Some(p.to_vec()));
        assert_eq!(parse_id(&id, 1), None, "another stream's");
        assert_eq!(parse_id("10-1,", 2), None);
        assert_eq!(parse_id("x", 1), None);
        assert_eq!(parse_id(&"1-1,".repeat(10_000), 2), None);
    }

    #[test]
    fn only_app_key_events_is_a_stream() {
        assert!(is_stream_path(b"/app/k/events"));
        assert!(!is_stream_path(b"/app//events"));
        assert!(!is_stream_path(b"/app/k/x/events"));
        assert!(!is_stream_path(b"/app/k"));
    }
}
