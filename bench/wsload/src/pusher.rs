//! Owns the Pusher Channels wire pieces wsload speaks (CHANNELS.md §2–§4): the connect path,
//! the subscribe and pong messages, the event data the publisher sends (a per-channel sequence
//! number and the send time, padded to a size), the publish body, and reading what the server
//! sends a subscriber: over WebSocket a JSON message whose `data` is a JSON-encoded string on
//! `connection_established` and deliveries, an object on errors; over SSE a `data:` line
//! holding `{"channel","data"}`.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in ns since the Unix epoch: what send and receive times are compared in.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The WebSocket path a subscriber connects to.
pub fn connect_path(key: &str) -> String {
    format!("/app/{key}?protocol=7&client=wsload&version=1")
}

/// The SSE path for one channel, and the shared one when there is one.
pub fn sse_path(key: &str, channel: &str, shared: Option<&str>) -> String {
    match shared {
        Some(s) => format!("/app/{key}/events?channel={channel}&channel={s}"),
        None => format!("/app/{key}/events?channel={channel}"),
    }
}

/// The channel names `{prefix}-0 … {prefix}-{k-1}`.
pub fn channel_names(prefix: &str, k: u32) -> Vec<String> {
    (0..k).map(|i| format!("{prefix}-{i}")).collect()
}

pub fn subscribe_message(channel: &str) -> String {
    serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string()
}

pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// What the publisher puts in an event's data: `{"seq":N,"sent_ns":T,"pad":"xx…"}`, padded so
/// the string is `size` bytes long (or as short as it can be, when `size` is smaller). The
/// send time is wall-clock (ns since the Unix epoch) because the subscribers may be other
/// processes; on one host their clocks are the same clock.
pub fn event_data(seq: u64, sent_ns: u64, size: usize) -> String {
    let head = format!(r#"{{"seq":{seq},"sent_ns":{sent_ns},"pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = String::with_capacity(head.len() + pad + 2);
    s.push_str(&head);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The body of `POST /apps/{id}/events`: the data goes in as a JSON string.
pub fn publish_body(channel: &str, data: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"name": "bench", "channel": channel, "data": data}))
        .expect("plain JSON")
}

/// The channels a subscriber is on: its own, and the one every subscriber shares (if any).
#[derive(Clone, Copy, Debug)]
pub struct OnChannels<'a> {
    pub own: &'a str,
    pub shared: Option<&'a str>,
}

impl OnChannels<'_> {
    fn which(&self, channel: &str) -> On {
        if channel == self.own {
            On::Own
        } else if self.shared == Some(channel) {
            On::Shared
        } else {
            On::Other
        }
    }
}

/// Which of a subscriber's channels a delivery names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    Own,
    Shared,
    /// A channel it is not subscribed to.
    Other,
}

/// What a subscriber was sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Established,
    Subscribed,
    /// An event carrying wsload's data, and which of the subscriber's channels it names.
    Event {
        on: On,
        seq: u64,
        sent_ns: u64,
    },
    /// `pusher:ping`, to be answered with `pusher:pong`.
    Ping,
    /// `pusher:error` or `pusher:subscription_error`, with what it said.
    Error(String),
    /// Anything else (other events, events whose data is not wsload's).
    Other,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Data {
    seq: u64,
    sent_ns: u64,
}

/// Reads one WebSocket text message sent to a subscriber of `channels`. An error when it is
/// not a Pusher message at all.
pub fn parse_ws(text: &[u8], channels: OnChannels) -> Result<Msg, String> {
    let wire: Wire =
        serde_json::from_slice(text).map_err(|e| format!("not a Pusher message: {e}"))?;
    Ok(match wire.event.as_ref() {
        "pusher:connection_established" => Msg::Established,
        "pusher_internal:subscription_succeeded" => Msg::Subscribed,
        "pusher:ping" => Msg::Ping,
        "pusher:error" | "pusher:subscription_error" => Msg::Error(format!(
            "{} {}",
            wire.event,
            wire.data.map_or("", |d| d.get())
        )),
        _ => match (wire.channel, wire.data) {
            (Some(ch), Some(data)) => event(channels.which(&ch), data),
            _ => Msg::Other,
        },
    })
}

/// Reads the `data:` of one SSE event sent to a subscriber of `channels`:
/// `{"channel":"CH","data":"…"}`.
pub fn parse_sse(data: &[u8], channels: OnChannels) -> Msg {
    #[derive(Deserialize)]
    struct Sse<'a> {
        #[serde(borrow)]
        channel: Cow<'a, str>,
        #[serde(borrow)]
        data: &'a RawValue,
    }
    match serde_json::from_slice::<Sse>(data) {
        Ok(e) => event(channels.which(&e.channel), e.data),
        Err(_) => Msg::Other,
    }
}

/// An event whose data is a JSON string holding wsload's `{"seq","sent_ns"}`.
fn event(on: On, data: &RawValue) -> Msg {
    let Ok(inner) = serde_json::from_str::<Cow<str>>(data.get()) else {
        return Msg::Other;
    };
    event_data_msg(on, inner.as_bytes())
}

/// wsload's event data itself, `{"seq","sent_ns",…}` (as `event_data` builds it), read as a
/// delivery; anything else is `Other`.
pub fn event_data_msg(on: On, data: &[u8]) -> Msg {
    match serde_json::from_slice::<Data>(data) {
        Ok(d) => Msg::Event {
            on,
            seq: d.seq,
            sent_ns: d.sent_ns,
        },
        Err(_) => Msg::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_is_padded_json() {
        let d = event_data(7, 1_700_000_000_123_456_789, 64);
        assert_eq!(d.len(), 64);
        assert!(d.starts_with(r#"{"seq":7,"sent_ns":1700000000123456789,"pad":"xx"#));
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["seq"], 7);
        // Smaller than the fields themselves: no padding, still valid.
        let d = event_data(7, 1, 4);
        assert_eq!(d, r#"{"seq":7,"sent_ns":1,"pad":""}"#);
    }

    fn on<'a>(own: &'a str, shared: Option<&'a str>) -> OnChannels<'a> {
        OnChannels { own, shared }
    }
    const ON0: OnChannels = OnChannels {
        own: "bench-0",
        shared: None,
    };
    const ON3: OnChannels = OnChannels {
        own: "bench-3",
        shared: None,
    };

    #[test]
    fn reads_what_a_subscriber_is_sent() {
        let established = br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":30}"}"#;
        assert_eq!(parse_ws(established, ON0), Ok(Msg::Established));
        let ok = br#"{"event":"pusher_internal:subscription_succeeded","channel":"bench-0","data":"{}"}"#;
        assert_eq!(parse_ws(ok, ON0), Ok(Msg::Subscribed));
        assert_eq!(
            parse_ws(br#"{"event":"pusher:ping","data":{}}"#, ON0),
            Ok(Msg::Ping)
        );
        let err = br#"{"event":"pusher:error","data":{"code":4001,"message":"no such app"}}"#;
        assert_eq!(
            parse_ws(err, ON0),
            Ok(Msg::Error(
                r#"pusher:error {"code":4001,"message":"no such app"}"#.into()
            ))
        );

        // A delivery built the way the publisher builds it, then wrapped as the server does.
        let data = event_data(41, 1_700_000_000_000_000_001, 100);
        let body: serde_json::Value =
            serde_json::from_slice(&publish_body("bench-3", &data)).unwrap();
        assert_eq!(body["data"].as_str(), Some(data.as_str()));
        let delivery = serde_json::json!({"event": "bench", "channel": "bench-3", "data": data});
        let delivery = delivery.to_string();
        let want = Msg::Event {
            on: On::Own,
            seq: 41,
            sent_ns: 1_700_000_000_000_000_001,
        };
        assert_eq!(parse_ws(delivery.as_bytes(), ON3), Ok(want));
        assert!(matches!(
            parse_ws(delivery.as_bytes(), on("bench-4", None)),
            Ok(Msg::Event { on: On::Other, .. })
        ));
        // The same event over SSE.
        let sse = serde_json::json!({"channel": "bench-3", "data": data}).to_string();
        assert!(matches!(
            parse_sse(sse.as_bytes(), ON3),
            Msg::Event {
                on: On::Own,
                seq: 41,
                ..
            }
        ));
        // Someone else's event on the channel, and not JSON at all.
        let other = br#"{"event":"x","channel":"bench-3","data":"hello"}"#;
        assert_eq!(parse_ws(other, ON3), Ok(Msg::Other));
        assert!(parse_ws(b"hello", ON3).is_err());
    }

    #[test]
    fn tells_the_shared_channel_from_its_own() {
        let names = on("bench-3", Some("all"));
        let data = event_data(2, 5, 64);
        let wrap = |ch: &str| {
            serde_json::json!({"event": "bench", "channel": ch, "data": data}).to_string()
        };
        for (ch, want) in [
            ("bench-3", On::Own),
            ("all", On::Shared),
            ("bench-4", On::Other),
        ] {
            assert_eq!(
                parse_ws(wrap(ch).as_bytes(), names),
                Ok(Msg::Event {
                    on: want,
                    seq: 2,
                    sent_ns: 5
                })
            );
            let sse = serde_json::json!({"channel": ch, "data": data}).to_string();
            assert!(
                matches!(parse_sse(sse.as_bytes(), names), Msg::Event { on, .. } if on == want)
            );
        }
        assert_eq!(
            sse_path("k", "bench-3", Some("all")),
            "/app/k/events?channel=bench-3&channel=all"
        );
    }
}
