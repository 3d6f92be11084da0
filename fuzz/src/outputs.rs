//! Owns how the connection targets compare and read what a session sent: the one legitimate
//! difference between a stream fed whole and fed in pieces (an interim `100 Continue`), and the
//! permessage-deflate parameters a 101 response announced.

use holdfast::proto::ws::deflate::Params;

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// `bytes` without any `100 Continue`. The server sends one when a request that expects it has
/// its head but not yet all of its body, which depends on where the reads were cut: fed in
/// pieces, a connection may send one where the whole stream got none. A `100 Continue` only ever
/// stands between responses (each of which starts with "HTTP/1.1 "), so removing every
/// occurrence cannot change how the rest lines up.
pub fn without_continues(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut n = 0;
    let mut rest = bytes;
    while let Some(i) = memfind(rest, CONTINUE) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + CONTINUE.len()..];
        n += 1;
    }
    out.extend_from_slice(rest);
    (out, n)
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The permessage-deflate parameters of the last 101 in `http` (the HTTP part of a stream),
/// if it accepted the extension.
pub fn negotiated_deflate(http: &[u8]) -> Option<Params> {
    let start = http
        .windows(12)
        .rposition(|w| w == b"HTTP/1.1 101")
        .expect("an upgrade answered 101");
    let head = &http[start..];
    let line_start = memfind(head, b"\r\nSec-WebSocket-Extensions: ")? + 2;
    let line = &head[line_start..];
    let line = &line[..memfind(line, b"\r\n").expect("a whole line")];
    let text = String::from_utf8_lossy(line);
    let bits = text
        .split("server_max_window_bits=")
        .nth(1)
        .map_or(15, |v| {
            v[..2.min(v.len())]
                .trim_end_matches(';')
                .parse()
                .unwrap_or(15)
        });
    Some(Params {
        server_no_context_takeover: text.contains("server_no_context_takeover"),
        client_no_context_takeover: text.contains("client_no_context_takeover"),
        server_max_window_bits: bits,
    })
}
