//! Owns the Server-Sent Events side of a subscriber (CHANNELS.md §4): the GET that opens the
//! stream, its 200 `text/event-stream` head, undoing the chunked transfer coding, and cutting
//! the stream into events (`id:`, `event:`, `data:` lines up to a blank line; `retry:` and
//! `:` comment lines, the heartbeats, are skipped). An event's `data:` goes to sub.rs like a
//! WebSocket delivery. The subscriber counts as subscribed at the stream's first line, which
//! the contract says is its `retry:`. A stream the server ends while it is held is lost.

use crate::conn::{Conn, Ctx, State, find};
use crate::pusher;
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
        while let Some(end) = find(&self.body[pos..], b"\n") {
            let mut line = &self.body[pos..pos + end];
            pos += end + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            self.started = true;
            if line.is_empty() {
                if !self.data.is_empty() {
                    event = Some(std::mem::take(&mut self.data));
                    break;
                }
            } else if let Some(d) = line.strip_prefix(b"data:") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data
                    .extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
            }
            // id:, event:, retry: and comments carry nothing wsload counts.
        }
        self.body.drain(..pos);
        event
    }
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
        if sse.started && !sub.subscribed {
            sub.subscribed = true;
            self.opened(cx);
        }
        if self.state == State::Closing {
            return Ok(true);
        }
        for data in events {
            if let pusher::Msg::Event { on, seq, sent_ns } =
                pusher::parse_sse(&data, self.channel_names(cx))
            {
                self.delivered(cx, on, seq, sent_ns);
            }
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
}
