//! Owns response encoding: the status line, the headers every response carries (Server, Date,
//! framing, Connection) and the body framing, Content-Length or chunked (RFC 9112 §6, §7.1).

/// How a response tells the client where its body ends.
pub enum Body<'a> {
    /// Content-Length framing. For HEAD the length is sent and the bytes are not.
    Full(&'a [u8]),
    /// Transfer-Encoding: chunked, one chunk per slice (empty slices are skipped: an empty
    /// chunk would end the body).
    Chunked(&'a [&'a [u8]]),
}

/// What the Connection header says about the connection after this response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 default: no Connection header needed.
    KeepAlive11,
    /// HTTP/1.0 keep-alive extension: echo `Connection: keep-alive`.
    KeepAlive10,
    Close,
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Everything about a response but its body.
pub struct Head<'a> {
    pub status: u16,
    /// Empty: no Content-Type header.
    pub content_type: &'a str,
    /// Whole header lines, each ending in CRLF.
    pub extra_headers: &'a str,
    pub persist: Persist,
    /// Answering HEAD: the same headers as GET, no body (RFC 9110 §9.3.2).
    pub head_only: bool,
}

/// Appends a complete response to `out`.
pub fn write_response(out: &mut Vec<u8>, head: &Head<'_>, body: &Body<'_>, date: &[u8]) {
    if let Body::Full(b) = body {
        out.reserve(160 + b.len());
    }
    write_status_and_common(out, head.status, date);
    out.extend_from_slice(head.extra_headers.as_bytes());
    if !head.content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(head.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body {
        Body::Full(b) => {
            out.extend_from_slice(b"Content-Length: ");
            write_decimal(out, b.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        Body::Chunked(_) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    match head.persist {
        Persist::KeepAlive11 => {}
        Persist::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if head.head_only {
        return;
    }
    match body {
        Body::Full(b) => out.extend_from_slice(b),
        Body::Chunked(chunks) => {
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                write_hex(out, c.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

/// The head of a Server-Sent Events response (its chunks follow as events happen): never
/// cached, and not buffered by an nginx in front (`X-Accel-Buffering`).
pub fn write_event_stream_head(out: &mut Vec<u8>, date: &[u8]) {
    write_status_and_common(out, 200, date);
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(crate::proto::sse::CONTENT_TYPE.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(crate::proto::sse::HEAD_FIELDS.as_bytes());
    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
}

/// `100 Continue` (RFC 9110 §15.2.1): an interim response with no headers of its own.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

fn write_status_and_common(out: &mut Vec<u8>, status: u16, date: &[u8]) {
    // One copy for the common case instead of six small ones: this runs for every response.
    const OK_PREFIX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: holdfast\r\nDate: ";
    if status == 200 {
        out.extend_from_slice(OK_PREFIX);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(&[
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\nServer: holdfast\r\nDate: ");
    }
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
}

fn write_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_hex(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn full_body_keep_alive() {
        let mut out = Vec::new();
        let head = Head {
            status: 200,
            content_type: "text/plain",
            extra_headers: "",
            persist: Persist::KeepAlive11,
            head_only: false,
        };
        write_response(&mut out, &head, &Body::Full(b"Hello, World!"), DATE);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: holdfast\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
        );
    }

    #[test]
    fn head_only_keeps_length_drops_body_and_close_is_announced() {
        let mut out = Vec::new();
        let head = Head {
            status: 200,
            content_type: "",
            extra_headers: "",
            persist: Persist::Close,
            head_only: true,
        };
        write_response(&mut out, &head, &Body::Full(b"abc"), DATE);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Length: 3\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn chunked_skips_empty_chunks_and_terminates() {
        let mut out = Vec::new();
        let chunks: [&[u8]; 3] = [b"hello", b"", &[b'x'; 26]];
        let head = Head {
            status: 200,
            content_type: "text/plain",
            extra_headers: "",
            persist: Persist::KeepAlive10,
            head_only: false,
        };
        write_response(&mut out, &head, &Body::Chunked(&chunks), DATE);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"));
        assert!(s.ends_with("\r\n\r\n5\r\nhello\r\n1a\r\nxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n"));
    }
}
