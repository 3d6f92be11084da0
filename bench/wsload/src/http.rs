//! Owns the keep-alive HTTP/1.1 side of a connection (http-idle): the GET that opens it and is
//! repeated as its heartbeat, and reading each response whole by its Content-Length. A
//! connection the server closes while it is held counts as lost.

use crate::conn::{Conn, Ctx, State, find};
use crate::report::record;
use std::io;

/// The request every connection sends first and again at each heartbeat.
pub fn request(path: &str, authority: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes()
}

impl Conn {
    /// Consumes complete responses: the first opens the connection, later ones are heartbeats.
    pub(crate) fn http_input(&mut self, cx: &mut Ctx) -> io::Result<bool> {
        while !self.inbuf.is_empty() {
            if self.sent_us == 0 {
                return Err(io::Error::other("response to no request"));
            }
            let Some(len) = response_len(&self.inbuf)? else {
                return Ok(true);
            };
            self.inbuf.drain(..len);
            let sent = std::mem::take(&mut self.sent_us);
            match self.state {
                State::Handshaking => self.opened(cx),
                _ => {
                    cx.stats.count.heartbeats += 1;
                    record(
                        &mut cx.stats.heartbeat_rtt_us,
                        cx.now_us.saturating_sub(sent),
                    );
                }
            }
        }
        Ok(true)
    }

    /// Sends the request again, unless the last one is still unanswered.
    pub(crate) fn http_heartbeat(&mut self, cx: &mut Ctx) -> io::Result<()> {
        if self.sent_us != 0 {
            return Ok(());
        }
        self.sent_us = cx.now_us.max(1);
        self.link.send(&cx.plan.request)?;
        cx.stats.count.heartbeats_sent += 1;
        Ok(())
    }
}

/// The length of the complete response at the start of `buf`, None while it is incomplete.
/// A status other than 2xx, or a body without Content-Length, is an error.
fn response_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some((status, len)) = response_head(buf)? else {
        return Ok(None);
    };
    if !(200..300).contains(&status) {
        let end = find(buf, b"\r\n").unwrap_or(0);
        let line = String::from_utf8_lossy(&buf[..end]);
        return Err(io::Error::other(format!("response {line:?}")));
    }
    Ok((buf.len() >= len).then_some(len))
}

/// The status and whole length (head and Content-Length body) of the response at the start of
/// `buf`, None until its head is complete. Not HTTP/1.x, or a chunked body, is an error.
pub fn response_head(buf: &[u8]) -> io::Result<Option<(u16, usize)>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| io::Error::other("bad response"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status.split(' ').nth(1).and_then(|c| c.parse().ok());
    let (true, Some(code)) = (status.starts_with("HTTP/1."), code) else {
        return Err(io::Error::other(format!("response {status:?}")));
    };
    let mut body = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            body = value
                .trim()
                .parse()
                .map_err(|_| io::Error::other("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::other("chunked responses are not supported"));
        }
    }
    Ok(Some((code, end + 4 + body)))
}

/// Whether a complete response head (as `response_head` found it) says `Connection: close`:
/// the server closes the connection after it (holdfast does after `http.keepalive_requests`).
pub fn says_close(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    head.split("\r\n").skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("connection")
                && value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case("close"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_close() {
        assert!(says_close(
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\n{}"
        ));
        assert!(!says_close(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(!says_close(
            b"HTTP/1.1 200 OK\r\nX-Connection: close\r\n\r\n"
        ));
    }

    #[test]
    fn response_lengths() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 13\r\n\r\nHello, World!";
        assert_eq!(response_len(r).unwrap(), Some(r.len()));
        assert_eq!(response_len(&r[..r.len() - 1]).unwrap(), None);
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(response_len(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(response_len(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        let two = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(response_len(two).unwrap(), Some(27));
        let denied = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(response_head(denied).unwrap(), Some((401, denied.len())));
        assert!(response_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(!says_close(denied));
        assert!(says_close(
            b"HTTP/1.1 200 OK\r\nconnection: Close\r\nContent-Length: 2\r\n\r\n{}"
        ));
        // Only a complete head counts.
        assert!(!says_close(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"));
    }
}
