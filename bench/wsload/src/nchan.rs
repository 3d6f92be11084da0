//! Owns the nchan wire pieces (nginx's nchan module, the peer bench/fanout.sh measures holdfast
//! against): a subscriber is a WebSocket to `/sub/{channel}`, subscribed as soon as the upgrade
//! is answered, or with --sse an EventSource stream from the same path, subscribed at its 200
//! head (sse.rs reads the stream); every message it is sent is a text frame, or an event's
//! `data:`, holding the raw published body, which is wsload's event data (pusher.rs
//! `event_data`) itself. The publisher sends
//! `POST /pub/{channel}` with that data as the body; nchan answers 201 (the channel had
//! subscribers) or 202 (it had none), both success. nchan's messages carry no channel name,
//! so a delivery is always taken as the subscriber's own channel (no misrouting is seen).

use crate::pusher::{self, Msg, On};

/// The WebSocket path a subscriber of `channel` connects to.
pub fn sub_path(channel: &str) -> String {
    format!("/sub/{channel}")
}

/// The whole publish request for one event.
pub fn publish_request(channel: &str, data: &str, authority: &str) -> Vec<u8> {
    let mut request = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    request.extend_from_slice(data.as_bytes());
    request
}

/// Whether a publish answer is success: 201 Created, 202 Accepted (and a plain 200).
pub fn accepted(status: u16) -> bool {
    matches!(status, 200..=202)
}

/// Reads one text message sent to a subscriber: wsload's event data, or something else.
pub fn parse(text: &[u8]) -> Msg {
    pusher::event_data_msg(On::Own, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn publishes_the_data_as_the_body() {
        let data = pusher::event_data(3, 1_700_000_000_000_000_000, 64);
        let r = publish_request("bench-7", &data, "127.0.0.1:9");
        let r = String::from_utf8(r).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /pub/bench-7 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(head.ends_with("Content-Length: 64"));
        assert_eq!(body, data);
        assert_eq!(sub_path("bench-7"), "/sub/bench-7");
    }

    #[test]
    fn reads_nchan_answers_and_deliveries() {
        let answer =
            b"HTTP/1.1 201 Created\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\n\
            Content-Length: 101\r\nConnection: keep-alive\r\n\r\n";
        let (status, len) = http::response_head(answer).unwrap().unwrap();
        assert_eq!((status, len), (201, answer.len() + 101));
        assert!(accepted(201) && accepted(202) && !accepted(403) && !accepted(500));

        let data = pusher::event_data(41, 1_700_000_000_000_000_001, 64);
        assert_eq!(
            parse(data.as_bytes()),
            Msg::Event {
                on: On::Own,
                seq: 41,
                sent_ns: 1_700_000_000_000_000_001
            }
        );
        assert_eq!(parse(b"hello"), Msg::Other);
        assert_eq!(parse(br#"{"seq":1}"#), Msg::Other);
    }
}
