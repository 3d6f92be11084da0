//! The parsers of `app::channels` on arbitrary input: a client's Pusher message
//! (`pusher::parse`, `names::classify`), a bus datagram between server processes
//! (`bus::decode`), a whole HTTP API request (`api::parse`, signed or not), and the same bytes
//! as an event-stream request (`sse::check`, with a `Last-Event-ID`).
//!
//! Checks, beyond "no panic":
//! - a parsed subscribe names a channel that `classify` judges without panicking;
//! - a decoded datagram encodes back to bytes that decode to the same messages (the codec is
//!   its own inverse on everything it accepts);
//! - an API refusal has a status of 400, 401, 404, 405 or 413 and a JSON body with an
//!   `error` string; an unsigned request is never accepted;
//! - a client message made into an event-stream message is one message: whatever its name and
//!   data hold, the blank line that ends a message comes only at its end;
//! - an event-stream request is refused with 400, 403 or 404, or accepted with at least one
//!   channel and, when it recovers, one position per channel.
#![no_main]

use holdfast::app::channels::hub::{Hub, Pos};
use holdfast::app::channels::{api, bus, names, pusher, sse};
use holdfast::config::{AppConfig, Config};
use holdfast::proto::http1::exchange::Request;
use holdfast::proto::http1::request::{Method, Version};
use holdfast_fuzz::inputs::ChannelsInput;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|input: ChannelsInput<'_>| {
    match input {
        ChannelsInput::Message(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            let _ = names::classify(&text);
            if let Ok(pusher::ClientMessage::Subscribe { channel, .. }) = pusher::parse(&text) {
                let _ = names::classify(&channel);
            }
            if let Ok(pusher::ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) = pusher::parse(&text)
            {
                let frame = pusher::frame(&pusher::event(&event, &channel, data.get(), Some("u")));
                if let Some(e) = sse::entry(&frame, Pos { ms: 1, n: 1 }, 0) {
                    let lines = e.lines();
                    assert!(lines.ends_with(b"\n\n"));
                    let body = &lines[..lines.len() - 2];
                    assert!(!body.windows(2).any(|w| w == b"\n\n"), "{lines:?}");
                    assert!(!body.contains(&b'\r'));
                }
            }
        }
        ChannelsInput::Datagram(bytes) => {
            if let Some((from, msgs)) = bus::decode(bytes) {
                let mut again = Vec::new();
                bus::start(&mut again, from);
                for m in &msgs {
                    bus::encode(&mut again, m);
                }
                assert_eq!(bus::decode(&again), Some((from, msgs)));
            }
        }
        ChannelsInput::Api(bytes) => {
            let [method, sign, rest @ ..] = bytes else {
                return;
            };
            let sign = sign & 1 == 1;
            let mut parts = rest.splitn(3, |&b| b == b'\n');
            let path = String::from_utf8_lossy(parts.next().unwrap_or(b""));
            let query = String::from_utf8_lossy(parts.next().unwrap_or(b""));
            let body = parts.next().unwrap_or(b"");
            let app = AppConfig::builtin();
            let method = match method % 4 {
                0 => Method::Get,
                1 => Method::Post,
                2 => Method::Head,
                _ => Method::Other,
            };
            let query = if sign {
                signed(method, &path, &query, body)
            } else {
                query.to_string()
            };
            let req = Request {
                method,
                version: Version::Http11,
                target: b"",
                path: path.as_bytes(),
                query: Some(query.as_bytes()),
                body,
                last_event_id: (!body.is_empty()).then_some(body),
            };
            let hub = hub();
            match sse::check(&req, hub, 100, NOW) {
                Ok(r) => {
                    assert!(!r.channels.is_empty() && r.channels.len() <= 100);
                    if let Some(from) = &r.from {
                        assert_eq!(from.len(), r.channels.len());
                    }
                }
                Err(e) => assert!(matches!(e.status, 400 | 403 | 404), "{e:?}"),
            }
            match api::parse(&req, |id| (id == "app-id").then_some((0, &app)), NOW) {
                Ok(_) => assert!(sign, "an unsigned request was accepted"),
                Err(e) => {
                    assert!(matches!(e.status, 400 | 401 | 404 | 405 | 413), "{e:?}");
                    let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
                    assert!(v["error"].is_string());
                }
            }
        }
    }
});

/// One hub for every input: the built-in app, default limits.
fn hub() -> &'static Hub {
    static HUB: std::sync::OnceLock<Hub> = std::sync::OnceLock::new();
    HUB.get_or_init(|| {
        let config = Config::default();
        Hub::new(config.effective_apps(), &config.channels, 1)
    })
}

/// `query` with the auth parameters and a valid signature added, as an SDK would sign it
/// (percent-escapes left out, so that the signed values are the ones the server decodes).
fn signed(method: Method, path: &str, query: &str, body: &[u8]) -> String {
    let verb = if method == Method::Post {
        "POST"
    } else {
        "GET"
    };
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.contains('%') && !p.contains('+'))
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_ascii_lowercase(), v.to_string())
        })
        .filter(|(k, _)| !k.starts_with("auth_") && k != "body_md5")
        .collect();
    api::sign_query(verb, path, &pairs, body, ("app-key", "app-secret"), NOW)
}
