//! Owns what HTTP/2 header blocks mean to a server: a request's block decoded with HPACK
//! (`hpack`) into the pseudo-headers and the few fields holdfast reads, with what RFC 9113
//! §8.2–8.3 calls malformed refused; and a response's head encoded.
//!
//! Responses are encoded without the dynamic table (static-table names, literal values never
//! indexed): the encoder then has no state, so a connection holds no encoder table at all
//! and the peer's SETTINGS_HEADER_TABLE_SIZE never matters.

use super::hpack::Decoder;

/// A request's head as the connection needs it. Owned: the decoder lends names and values
/// only for the length of a callback.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Vec<u8>,
    pub scheme: Option<Vec<u8>>,
    pub path: Vec<u8>,
    pub authority: Option<Vec<u8>>,
    /// RFC 8441's `:protocol` of an extended CONNECT.
    pub protocol: Option<Vec<u8>>,
    pub content_length: Option<u64>,
    pub last_event_id: Option<Vec<u8>>,
    /// `sec-websocket-version` of an extended CONNECT (RFC 8441 §5), and every
    /// `sec-websocket-extensions` value, in order.
    pub ws_version: Option<Vec<u8>>,
    pub ws_extensions: Vec<Vec<u8>>,
    /// The decoded list passed `http.max_header_bytes` (counted as RFC 9113 §6.5.2 does: name
    /// and value lengths plus 32 per field): answered 431.
    pub too_large: bool,
}

/// What a header block turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Request(RequestHead),
    /// A trailer block (after the body): no pseudo-headers; its fields are not used.
    Trailers,
    /// Malformed (RFC 9113 §8.1.1): the stream is reset with PROTOCOL_ERROR; why, for the log.
    Malformed(&'static str),
    /// HPACK could not decode it: the connection's decoding state is lost
    /// (COMPRESSION_ERROR, a connection error).
    Compression,
}

/// The decoding side of a connection's HPACK state, made when its first header block comes.
pub struct Hpack {
    decoder: Decoder,
}

impl Hpack {
    /// `table_size` is what we advertise as SETTINGS_HEADER_TABLE_SIZE (the default 4096):
    /// the peer may not make our table larger.
    pub fn new(table_size: usize) -> Hpack {
        Hpack {
            decoder: Decoder::new(table_size),
        }
    }

    /// Decodes one complete header block. `trailers`: it follows a body. The whole block is
    /// always decoded, even past `max_list` or a malformed field, because the dynamic table
    /// must see every insertion the peer made.
    pub fn decode(&mut self, block: &[u8], trailers: bool, max_list: usize) -> Decoded {
        let mut head = RequestHead::default();
        let mut list = 0usize;
        let mut bad: Option<&'static str> = None;
        let mut regular_seen = false;
        let mut seen = [false; 5];
        let result = self.decoder.decode(block, |name, value| {
            list = list.saturating_add(name.len() + value.len() + 32);
            if list > max_list {
                head.too_large = true;
            }
            if bad.is_some() || head.too_large {
                return;
            }
            bad = check_field(name, value).err();
            if bad.is_some() {
                return;
            }
            if let Some(pseudo) = name.strip_prefix(b":") {
                if regular_seen {
                    bad = Some("a pseudo-header after a regular field");
                    return;
                }
                if trailers {
                    bad = Some("a pseudo-header in trailers");
                    return;
                }
                let (i, slot) = match pseudo {
                    b"method" => (0, &mut head.method),
                    b"path" => (1, &mut head.path),
                    b"scheme" => (2, head.scheme.get_or_insert_default()),
                    b"authority" => (3, head.authority.get_or_insert_default()),
                    b"protocol" => (4, head.protocol.get_or_insert_default()),
                    _ => {
                        bad = Some("an unknown pseudo-header");
                        return;
                    }
                };
                if seen[i] {
                    bad = Some("a repeated pseudo-header");
                    return;
                }
                seen[i] = true;
                *slot = value.to_vec();
                return;
            }
            regular_seen = true;
            match name {
                b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
                | b"upgrade" => bad = Some("a connection-specific field"),
                b"te" if value != b"trailers" => bad = Some("te other than trailers"),
                b"content-length" if !trailers => {
                    let n = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                    match (n, head.content_length) {
                        (Some(n), None) => head.content_length = Some(n),
                        (Some(n), Some(m)) if n == m => {}
                        _ => bad = Some("an invalid content-length"),
                    }
                }
                b"last-event-id" if !trailers => head.last_event_id = Some(value.to_vec()),
                b"sec-websocket-version" if !trailers => head.ws_version = Some(value.to_vec()),
                b"sec-websocket-extensions" if !trailers => head.ws_extensions.push(value.to_vec()),
                _ => {}
            }
        });
        if result.is_err() {
            return Decoded::Compression;
        }
        if let Some(why) = bad {
            return Decoded::Malformed(why);
        }
        if trailers {
            return Decoded::Trailers;
        }
        if head.too_large {
            return Decoded::Request(head);
        }
        if !seen[0] {
            return Decoded::Malformed("no :method");
        }
        let connect = head.method == b"CONNECT";
        if connect && head.protocol.is_none() {
            // A plain CONNECT (a tunnel) has only :method and :authority.
            if seen[1] || seen[2] || !seen[3] {
                return Decoded::Malformed("a CONNECT with :path or :scheme, or no :authority");
            }
        } else {
            if head.protocol.is_some() && !connect {
                return Decoded::Malformed(":protocol on a method other than CONNECT");
            }
            if !seen[1] || !seen[2] || head.path.is_empty() {
                return Decoded::Malformed("no :scheme or :path");
            }
        }
        Decoded::Request(head)
    }
}

/// RFC 9113 §8.2.1: lowercase names of visible characters (a leading `:` only for
/// pseudo-headers), values without NUL, CR or LF and without whitespace at either end.
fn check_field(name: &[u8], value: &[u8]) -> Result<(), &'static str> {
    let body = name.strip_prefix(b":").unwrap_or(name);
    if body.is_empty() {
        return Err("an empty field name");
    }
    if body
        .iter()
        .any(|&c| !(0x21..=0x7e).contains(&c) || c.is_ascii_uppercase() || c == b':')
    {
        return Err("a field name with an uppercase or invalid character");
    }
    if value.iter().any(|&c| matches!(c, 0 | b'\r' | b'\n')) {
        return Err("a field value with NUL, CR or LF");
    }
    if let (Some(a), Some(z)) = (value.first(), value.last())
        && (matches!(a, b' ' | b'\t') || matches!(z, b' ' | b'\t'))
    {
        return Err("a field value with whitespace at an end");
    }
    Ok(())
}

/// Static-table indices (RFC 7541 Appendix A) of the names a response uses.
mod name {
    pub const STATUS: usize = 8;
    pub const ALLOW: usize = 22;
    pub const CACHE_CONTROL: usize = 24;
    pub const CONTENT_LENGTH: usize = 28;
    pub const CONTENT_TYPE: usize = 31;
    pub const DATE: usize = 33;
    pub const RETRY_AFTER: usize = 53;
    pub const SERVER: usize = 54;
}

/// A response head, encoded as an HPACK block.
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub content_length: Option<usize>,
    /// HTTP/1.1 header lines (`Name: value\r\n`, as `Reply::extra_headers` holds them).
    pub extra_lines: &'a str,
    pub date: &'a [u8],
}

impl ResponseHead<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        // :status: indexed for the common ones (static entries 8–14), else the name indexed.
        match self.status {
            200 => indexed(out, 8),
            204 => indexed(out, 9),
            206 => indexed(out, 10),
            304 => indexed(out, 11),
            400 => indexed(out, 12),
            404 => indexed(out, 13),
            500 => indexed(out, 14),
            s => literal(out, Some(name::STATUS), b"", s.to_string().as_bytes()),
        }
        literal(out, Some(name::SERVER), b"", b"holdfast");
        literal(out, Some(name::DATE), b"", self.date);
        if !self.content_type.is_empty() {
            literal(
                out,
                Some(name::CONTENT_TYPE),
                b"",
                self.content_type.as_bytes(),
            );
        }
        if let Some(n) = self.content_length {
            literal(
                out,
                Some(name::CONTENT_LENGTH),
                b"",
                n.to_string().as_bytes(),
            );
        }
        for line in self.extra_lines.split("\r\n").filter(|l| !l.is_empty()) {
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            let n = n.trim().to_ascii_lowercase();
            let v = v.trim().as_bytes();
            match n.as_str() {
                // Connection management is HTTP/2's own business (RFC 9113 §8.2.2).
                "connection" | "keep-alive" | "transfer-encoding" | "upgrade" => {}
                "allow" => literal(out, Some(name::ALLOW), b"", v),
                "cache-control" => literal(out, Some(name::CACHE_CONTROL), b"", v),
                "retry-after" => literal(out, Some(name::RETRY_AFTER), b"", v),
                _ => literal(out, None, n.as_bytes(), v),
            }
        }
    }
}

fn indexed(out: &mut Vec<u8>, index: usize) {
    integer(out, 0x80, 7, index);
}

/// A literal field never indexed by us (RFC 7541 §6.2.2: "without indexing", prefix 0000).
fn literal(out: &mut Vec<u8>, index: Option<usize>, name: &[u8], value: &[u8]) {
    match index {
        Some(i) => integer(out, 0x00, 4, i),
        None => {
            out.push(0x00);
            string(out, name);
        }
    }
    string(out, value);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: an integer in an N-bit prefix, continued in 7-bit groups.
fn integer(out: &mut Vec<u8>, first: u8, prefix: u8, mut n: usize) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            literal(&mut out, None, n.as_bytes(), v.as_bytes());
        }
        out
    }

    fn decode(fields: &[(&str, &str)]) -> Decoded {
        Hpack::new(4096).decode(&block(fields), false, 16 * 1024)
    }

    const GET: [(&str, &str); 3] = [(":method", "GET"), (":scheme", "http"), (":path", "/a?b")];

    #[test]
    fn a_request_decodes() {
        let Decoded::Request(h) = decode(&[&GET[..], &[("last-event-id", "5-0")]].concat()) else {
            panic!()
        };
        assert_eq!(h.method, b"GET");
        assert_eq!(h.path, b"/a?b");
        assert_eq!(h.last_event_id.as_deref(), Some(&b"5-0"[..]));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[(":method", "GET"), (":path", "/")],
            &[(":method", "GET"), (":scheme", "http"), (":path", "")],
            &[
                (":method", "GET"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                ("accept", "x"),
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":status", "200"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("Accept", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "x"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("te", "gzip"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("x", " y"),
            ],
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("x", "a\nb"),
            ],
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/"),
                ("content-length", "x"),
            ],
            &[(":method", "CONNECT"), (":scheme", "http"), (":path", "/")],
        ];
        for c in cases {
            assert!(matches!(decode(c), Decoded::Malformed(_)), "{c:?}");
        }
        let te = [&GET[..], &[("te", "trailers")]].concat();
        assert!(matches!(decode(&te), Decoded::Request(_)));
    }

    #[test]
    fn a_list_past_the_limit_is_too_large_and_the_table_stays_in_step() {
        let mut h = Hpack::new(4096);
        let mut b = Vec::new();
        for (n, v) in GET {
            literal(&mut b, None, n.as_bytes(), v.as_bytes());
        }
        // Incremental indexing: the entry must reach the table even when the list is refused.
        b.push(0x40);
        string(&mut b, b"x-big");
        string(&mut b, &[b'v'; 100]);
        let Decoded::Request(r) = h.decode(&b, false, 120) else {
            panic!()
        };
        assert!(r.too_large);
        // The next block refers to the new entry (index 62).
        let mut next = block(&GET);
        indexed(&mut next, 62);
        let Decoded::Request(r) = h.decode(&next, false, 16 * 1024) else {
            panic!()
        };
        assert!(!r.too_large);
    }

    #[test]
    fn garbage_is_a_compression_error() {
        assert_eq!(
            Hpack::new(4096).decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], false, 1 << 14),
            Decoded::Compression
        );
        // An index past both tables.
        assert_eq!(
            Hpack::new(4096).decode(&[0x80 | 70], false, 1 << 14),
            Decoded::Compression
        );
    }

    #[test]
    fn a_response_head_decodes_as_sent() {
        let mut out = Vec::new();
        ResponseHead {
            status: 405,
            content_type: "text/plain",
            content_length: Some(300),
            extra_lines: "Allow: GET, HEAD\r\nX-Thing: Yes\r\nConnection: close\r\n",
            date: b"Sun, 06 Dec 2026 20:00:00 GMT",
        }
        .encode(&mut out);
        let mut got: Vec<(String, String)> = Vec::new();
        Decoder::new(4096)
            .decode(&out, |n, v| {
                let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                got.push((s(n), s(v)));
            })
            .unwrap();
        let want = [
            (":status", "405"),
            ("server", "holdfast"),
            ("date", "Sun, 06 Dec 2026 20:00:00 GMT"),
            ("content-type", "text/plain"),
            ("content-length", "300"),
            ("allow", "GET, HEAD"),
            ("x-thing", "Yes"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_names_we_index_are_the_static_tables() {
        let at = |i: usize| super::super::hpack::tables::STATIC[i - 1].0;
        assert_eq!(at(name::STATUS), b":status");
        assert_eq!(at(name::ALLOW), b"allow");
        assert_eq!(at(name::CACHE_CONTROL), b"cache-control");
        assert_eq!(at(name::CONTENT_LENGTH), b"content-length");
        assert_eq!(at(name::CONTENT_TYPE), b"content-type");
        assert_eq!(at(name::DATE), b"date");
        assert_eq!(at(name::RETRY_AFTER), b"retry-after");
        assert_eq!(at(name::SERVER), b"server");
    }

    #[test]
    fn integers_use_their_prefix_then_continue() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 0x80, 7, 126);
        assert_eq!(out, [0x80 | 126]);
    }
}
