//! Owns the Server-Sent Events side of a subscriber: the GET that opens the stream, its 200
//! `text/event-stream` head, undoing the chunked transfer coding when there is one, and cutting
//! the stream into events as the SSE format has it (lines end with LF, CRLF or CR; `data:`
//! lines join with a newline; a blank line ends the event; `id:`, `event:`, `retry:` and `:`
//! comment lines, the heartbeats, carry nothing wsload counts). Two servers speak it: holdfast
//! (CHANNELS.md §4: chunked, `{"channel","data"}` in each event's data, and the stream's first
//! line is its `retry:`) and nginx's nchan (`/sub/{channel}` with `Accept:
//! text/event-stream`: a body without chunking that runs to the connection's end, a `: hi`
//! comment first, then `id: TIME:TAG` and `data:` lines holding the published body). An
//! event's data goes to sub.rs, which reads it the way its server writes it. The subscriber
//! counts as subscribed at the stream's first line (holdfast) or at the 200 head (nchan, see
//! `SubPlan::sse_subscribed_at_head`). A stream the server ends while it is held is lost.

use crate::conn::{Conn, Ctx, State, find};
use std::io;

/// The request that opens one subscriber's stream.
pub fn request(path: &str, authority: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\r\n")
        .into_bytes()
}

/// Where a stream's decoding is.
#[derive(Default)]
pub struct SseState {
    chunked: bool,
    /// Chunked: bytes of the current chunk still to come, then its CRLF (None: a size line).
    chunk_left: Option<usize>,
    /// The decoded body not yet cut into lines.
    body: Vec<u8>,
    /// The current event's data (several `data:` lines join with a newline).
    data: Vec<u8>,
    /// The current event has a `data:` line (an empty one still makes an event).
    has_data: bool,
    /// The last line ended with a CR: a LF next belongs to that line's end.
    after_cr: bool,
    /// The body's first line has come.
    started: bool,
}

impl SseState {
    /// Takes the chunked (or plain) body bytes from the start of `raw`, decoded, into `body`.
    /// An error at the end of the chunked body: the server ended the stream.
    fn decode(&mut self, raw: &mut Vec<u8>) -> io::Result<()> {
        if !self.chunked {
            self.body.append(raw);
            return Ok(());
        }
        let mut pos = 0;
        loop {
            match self.chunk_left {
                None => {
                    let Some(end) = find(&raw[pos..], b"\r\n") else {
                        break;
                    };
                    let line = std::str::from_utf8(&raw[pos..pos + end]).unwrap_or("");
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size, 16)
                        .map_err(|_| io::Error::other("bad chunk size"))?;
                    if size == 0 {
                        return Err(io::Error::other("the server ended the stream"));
                    }
                    pos += end + 2;
                    self.chunk_left = Some(size);
                }
                Some(0) => {
                    if raw.len() - pos < 2 {
                        break;
                    }
                    if &raw[pos..pos + 2] != b"\r\n" {
                        return Err(io::Error::other("bad chunk end"));
                    }
                    pos += 2;
                    self.chunk_left = None;
                }
                Some(left) => {
                    let n = left.min(raw.len() - pos);
                    if n == 0 {
                        break;
                    }
                    self.body.extend_from_slice(&raw[pos..pos + n]);
                    pos += n;
                    self.chunk_left = Some(left - n);
                }
            }
        }
        raw.drain(..pos);
        Ok(())
    }

    /// The data of the next complete event in the body, if there is one. Sets `started` at
    /// the first line of any kind.
    fn next_event(&mut self) -> Option<Vec<u8>> {
        let mut pos = 0;
        let mut event = None;
        while event.is_none() {
            if self.after_cr {
                let Some(&b) = self.body.get(pos) else {
                    break;
                };
                self.after_cr = false;
                if b == b'\n' {
                    pos += 1;
                }
            }
            let rest = &self.body[pos..];
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                break;
            };
            self.after_cr = rest[end] == b'\r';
            let line = &rest[..end];
            pos += end + 1;
            self.started = true;
            if line.is_empty() {
                if std::mem::take(&mut self.has_data) {
                    event = Some(std::mem::take(&mut self.data));
                }
            } else if let Some(value) = data_value(line) {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.has_data = true;
                self.data.extend_from_slice(value);
            }
        }
        self.body.drain(..pos);
        event
    }
}

/// The value of a `data` field line (after the first colon, less one leading space; empty for
/// a bare `data`), None for any other line (other fields, `:` comments).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let (name, value) = match line.iter().position(|&b| b == b':') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    (name == b"data").then(|| value.strip_prefix(b" ").unwrap_or(value))
}

/// The head of an SSE response: its length, and whether the body is chunked. An error when it
/// is not a 200.
fn head(buf: &[u8]) -> io::Result<Option<(usize, bool)>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| io::Error::other("bad response"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("response {status:?}")));
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
        })
    });
    Ok(Some((end + 4, chunked)))
}

impl Conn {
    /// Handles what arrived on an SSE subscriber: the head, then events.
    pub(crate) fn sse_input(&mut self, cx: &mut Ctx) -> io::Result<bool> {
        let at_head = cx
            .plan
            .sub
            .as_ref()
            .is_some_and(|p| p.sse_subscribed_at_head());
        let Some(sub) = self.sub.as_mut() else {
            return Ok(true);
        };
        let Some(sse) = sub.sse.as_mut() else {
            return Ok(true);
        };
        if !sub.upgraded {
            let Some((len, chunked)) = head(&self.inbuf)? else {
                return Ok(true);
            };
            self.inbuf.drain(..len);
            sub.upgraded = true;
            sse.chunked = chunked;
        }
        sse.decode(&mut self.inbuf)?;
        let mut events = Vec::new();
        while let Some(data) = sse.next_event() {
            events.push(data);
        }
        if (at_head || sse.started) && !sub.subscribed {
            sub.subscribed = true;
            self.opened(cx);
        }
        if self.state == State::Closing {
            return Ok(true);
        }
        for data in events {
            self.sub_sse_data(cx, &data);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_chunked_stream() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
            Transfer-Encoding: chunked\r\n\r\n";
        let (len, chunked) = head(response).unwrap().unwrap();
        assert_eq!((len, chunked), (response.len(), true));
        assert!(head(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());

        let body = "retry: 1000\n\nid: 7\nevent: bench\ndata: {\"channel\":\"c\",\"data\":\"x\"}\n\n\
                    : heartbeat\n\nid: 8\r\ndata: two\r\n\r\n";
        // Chunked in two pieces, and fed to the decoder a few bytes at a time.
        let (a, b) = body.split_at(30);
        let wire = format!("{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n", a.len(), b.len());
        let mut sse = SseState {
            chunked: true,
            ..SseState::default()
        };
        let mut raw = Vec::new();
        let mut events = Vec::new();
        for piece in wire.as_bytes().chunks(7) {
            raw.extend_from_slice(piece);
            sse.decode(&mut raw).unwrap();
            while let Some(e) = sse.next_event() {
                events.push(String::from_utf8(e).unwrap());
            }
        }
        assert!(sse.started);
        assert_eq!(events, [r#"{"channel":"c","data":"x"}"#, "two"]);
        raw.extend_from_slice(b"0\r\n\r\n");
        assert!(sse.decode(&mut raw).is_err());
    }

    /// Feeds `wire` to a stream's decoder `step` bytes at a time; the events' data.
    fn events_of(sse: &mut SseState, wire: &[u8], step: usize) -> Vec<String> {
        let mut raw = Vec::new();
        let mut events = Vec::new();
        for piece in wire.chunks(step) {
            raw.extend_from_slice(piece);
            sse.decode(&mut raw).unwrap();
            while let Some(e) = sse.next_event() {
                events.push(String::from_utf8(e).unwrap());
            }
        }
        events
    }

    #[test]
    fn reads_an_nchan_stream() {
        use crate::nchan;
        use crate::pusher::{Msg, On, event_data};

        // What nchan 1.3.6 answers `GET /sub/CH` with `Accept: text/event-stream`: no
        // chunking and no length, the body runs until the connection ends.
        let response = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
            Date: Sun, 06 Dec 2026 06:02:07 GMT\r\n\
            Content-Type: text/event-stream; charset=utf-8\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(head(response).unwrap(), Some((response.len(), false)));

        let data = event_data(41, 1_700_000_000_000_000_001, 64);
        // Its greeting comment, a published event, a body with line breaks (nchan writes one
        // `data:` line per line, the CRLF kept), an empty body, and what other servers may
        // send: CR line ends, a bare `data`, a heartbeat comment, a `:` inside a value.
        let body = format!(
            ": hi\n\nid: 1796536928:0\ndata: {data}\n\n\
             id: 1796536929:0\ndata: line one\ndata: line two\r\ndata: line three\n\n\
             id: 1796536929:1\ndata: \n\n\
             data: a\rdata:b\r\r\
             :\n\ndata\n\n\
             event: ping\nid: 1796536930:0\ndata: :not a comment\r\n\r\n\
             data: unfinished\n"
        );
        let want = [
            data.as_str(),
            "line one\nline two\nline three",
            "",
            "a\nb",
            "",
            ":not a comment",
        ];
        for step in [1, 2, 7, body.len()] {
            let mut sse = SseState::default();
            assert_eq!(events_of(&mut sse, body.as_bytes(), step), want, "{step}");
            assert!(sse.started);
            assert!(sse.has_data && sse.data == b"unfinished");
        }
        // The greeting alone starts the stream and makes no event.
        let mut sse = SseState::default();
        assert!(events_of(&mut sse, b": hi\n\n", 3).is_empty());
        assert!(sse.started);

        // Each event's data is the published body, read as nchan's WebSocket messages are.
        assert_eq!(
            nchan::parse(want[0].as_bytes()),
            Msg::Event {
                on: On::Own,
                seq: 41,
                sent_ns: 1_700_000_000_000_000_001
            }
        );
        for other in &want[1..] {
            assert_eq!(nchan::parse(other.as_bytes()), Msg::Other);
        }
    }
}
