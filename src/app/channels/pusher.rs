//! Owns the JSON of the Pusher Channels protocol 7 (CHANNELS.md §2): what a client may send,
//! parsed into [`ClientMessage`], and every message the server sends, written here and nowhere
//! else. `data` is a JSON-encoded string on connection_established, subscription_succeeded,
//! member events and delivered events, and an object on `pusher:error` and `pusher:pong`, as
//! Pusher does; pusher-js reads both.

use crate::proto::ws::frame::{self, OP_TEXT};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// A message from a client, as far as the server cares.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Ping,
    Subscribe {
        channel: String,
        auth: Option<String>,
        channel_data: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    /// A `client-*` event: `data` is passed on as the client wrote it.
    ClientEvent {
        event: String,
        channel: String,
        data: &'a RawValue,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    event: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize)]
struct SubscribeData {
    channel: String,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
}

/// Parses one text message; the error is what `pusher:error` says.
pub fn parse(text: &str) -> Result<ClientMessage<'_>, String> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON message: {e}"))?;
    // pusher-js sends `data` as an object; some clients send it JSON-encoded as a string.
    let data_object = |raw: Option<&RawValue>| -> Result<SubscribeData, String> {
        let raw = raw.ok_or("data is missing")?;
        let parsed = match serde_json::from_str::<String>(raw.get()) {
            Ok(inner) => serde_json::from_str(&inner),
            Err(_) => serde_json::from_str(raw.get()),
        };
        parsed.map_err(|e| format!("invalid data: {e}"))
    };
    match env.event.as_str() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:subscribe" => {
            let d = data_object(env.data)?;
            Ok(ClientMessage::Subscribe {
                channel: d.channel,
                auth: d.auth,
                channel_data: d.channel_data,
            })
        }
        "pusher:unsubscribe" => {
            let d = data_object(env.data)?;
            Ok(ClientMessage::Unsubscribe { channel: d.channel })
        }
        e if e.starts_with("client-") => {
            let channel = env.channel.ok_or("a client event needs a channel")?;
            let data = env.data.ok_or("a client event needs data")?;
            Ok(ClientMessage::ClientEvent {
                event: env.event,
                channel,
                data,
            })
        }
        other => Err(format!("unsupported event {other:?}")),
    }
}

/// `message` as one WebSocket text frame, framed once for every recipient.
pub fn frame(message: &str) -> Arc<[u8]> {
    let mut f = Vec::with_capacity(message.len() + 10);
    frame::write_header(&mut f, true, 0, OP_TEXT, message.len());
    f.extend_from_slice(message.as_bytes());
    f.into()
}

/// The message inside a frame made by [`frame`] (unmasked, one frame): its inverse, for
/// transports that carry the same event differently (Server-Sent Events).
pub fn frame_payload(f: &[u8]) -> &[u8] {
    let header = match f.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    f.get(header..).unwrap_or(&[])
}

/// A JSON string literal of `s`.
pub fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

pub fn connection_established(socket_id: &str, activity_timeout_s: u64) -> String {
    let inner = format!(r#"{{"socket_id":"{socket_id}","activity_timeout":{activity_timeout_s}}}"#);
    format!(
        r#"{{"event":"pusher:connection_established","data":{}}}"#,
        quote(&inner)
    )
}

pub fn pong() -> &'static str {
    r#"{"event":"pusher:pong","data":{}}"#
}

pub fn error(code: Option<u16>, message: &str) -> String {
    let code = code.map_or("null".to_string(), |c| c.to_string());
    format!(
        r#"{{"event":"pusher:error","data":{{"code":{code},"message":{}}}}}"#,
        quote(message)
    )
}

pub fn subscription_succeeded(channel: &str, data_json: &str) -> String {
    format!(
        r#"{{"event":"pusher_internal:subscription_succeeded","channel":{},"data":{}}}"#,
        quote(channel),
        quote(data_json)
    )
}

/// A subscription refused; `status` as an HTTP status (401: bad signature), as pusher-js
/// reports its own authorizer's failures.
pub fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> String {
    format!(
        r#"{{"event":"pusher:subscription_error","channel":{},"data":{{"type":{},"error":{},"status":{status}}}}}"#,
        quote(channel),
        quote(kind),
        quote(message)
    )
}

pub fn cache_miss(channel: &str) -> String {
    format!(
        r#"{{"event":"pusher:cache_miss","channel":{}}}"#,
        quote(channel)
    )
}

/// The presence part of `subscription_succeeded`: `members` as (user_id, user_info JSON).
pub fn presence_data<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut ids = Vec::new();
    let mut hash = Vec::new();
    for (id, info) in members {
        ids.push(quote(id));
        hash.push(format!("{}:{info}", quote(id)));
    }
    format!(
        r#"{{"presence":{{"ids":[{}],"hash":{{{}}},"count":{}}}}}"#,
        ids.join(","),
        hash.join(","),
        ids.len()
    )
}

pub fn member_added(channel: &str, user_id: &str, user_info: &str) -> String {
    let inner = format!(
        r#"{{"user_id":{},"user_info":{user_info}}}"#,
        quote(user_id)
    );
    format!(
        r#"{{"event":"pusher_internal:member_added","channel":{},"data":{}}}"#,
        quote(channel),
        quote(&inner)
    )
}

pub fn member_removed(channel: &str, user_id: &str) -> String {
    let inner = format!(r#"{{"user_id":{}}}"#, quote(user_id));
    format!(
        r#"{{"event":"pusher_internal:member_removed","channel":{},"data":{}}}"#,
        quote(channel),
        quote(&inner)
    )
}

/// An event as subscribers receive it. `data_json` is already JSON (a string literal for API
/// events; a client event's data as the client wrote it).
pub fn event(name: &str, channel: &str, data_json: &str, user_id: Option<&str>) -> String {
    let mut s = format!(
        r#"{{"event":{},"channel":{},"data":{data_json}"#,
        quote(name),
        quote(channel)
    );
    if let Some(u) = user_id {
        s.push_str(r#","user_id":"#);
        s.push_str(&quote(u));
    }
    s.push('}');
    s
}

/// What a presence subscription's `channel_data` must hold.
#[derive(Deserialize)]
pub struct ChannelData {
    pub user_id: UserId,
    #[serde(default)]
    pub user_info: Option<Box<RawValue>>,
}

/// A user id: a string, or a number as some servers' SDKs send it.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum UserId {
    Text(String),
    Number(serde_json::Number),
}

impl UserId {
    pub fn into_string(self) -> String {
        match self {
            UserId::Text(s) => s,
            UserId::Number(n) => n.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pusher_js_subscribe_messages_parse() {
        let m =
            parse(r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel":"private-a"}}"#)
                .unwrap();
        assert!(
            matches!(m, ClientMessage::Subscribe { ref channel, auth: Some(ref a), channel_data: None } if channel == "private-a" && a == "k:s")
        );
        let m = parse(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"a\"}"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Subscribe { ref channel, .. } if channel == "a"));
        assert!(matches!(
            parse(r#"{"event":"pusher:ping","data":{}}"#).unwrap(),
            ClientMessage::Ping
        ));
        let m = parse(r#"{"event":"client-x","channel":"private-a","data":{"n":1}}"#).unwrap();
        assert!(matches!(m, ClientMessage::ClientEvent { data, .. } if data.get() == r#"{"n":1}"#));
    }

    #[test]
    fn nonsense_is_an_error_not_a_panic() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"event":1}"#,
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":{}}"#,
            r#"{"event":"other"}"#,
            r#"{"event":"client-a","data":1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_are_what_pusher_sends() {
        assert_eq!(
            connection_established("1.2", 30),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":30}"}"#
        );
        assert_eq!(
            error(Some(4301), "slow down"),
            r#"{"event":"pusher:error","data":{"code":4301,"message":"slow down"}}"#
        );
        assert_eq!(
            event("e", "c", &quote("x\"y"), Some("u")),
            r#"{"event":"e","channel":"c","data":"x\"y","user_id":"u"}"#
        );
        let p = presence_data([("1", r#"{"n":"a"}"#)].into_iter());
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["presence"]["count"], 1);
        assert_eq!(v["presence"]["hash"]["1"]["n"], "a");
        let v: serde_json::Value =
            serde_json::from_str(&member_added("presence-a", "1", "{}")).unwrap();
        let inner: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        assert_eq!(inner["user_id"], "1");
    }
}
