//! Owns request-head parsing (RFC 9112 §2–§3, §6): the request line and header fields via
//! httparse, then the checks that decide how the message is framed and whether it is acceptable
//! at all. Strictness here is a security property: a head that two parsers could read two ways
//! (request smuggling) is refused, not guessed at.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Connect,
    Trace,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_target_bytes: usize,
}

/// What the connection and the app need from a head. It borrows nothing: `target` and the
/// WebSocket fields are offset ranges into the buffer given to [`parse_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    pub target: Range<usize>,
    /// Bytes of the head including the final blank line (and any leading empty lines).
    pub head_len: usize,
    pub framing: BodyFraming,
    pub connection_close: bool,
    pub connection_keep_alive: bool,
    pub connection_upgrade: bool,
    pub upgrade_websocket: bool,
    pub expect_continue: bool,
    pub ws_key: Option<Range<usize>>,
    pub ws_version: Option<Range<usize>>,
    pub ws_extensions: Vec<Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    BadRequest(&'static str),
    UriTooLong,
    HeaderTooLarge,
    NotImplemented(&'static str),
    VersionNotSupported,
    ExpectationFailed,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::BadRequest(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeaderTooLarge => 431,
            HeadError::NotImplemented(_) => 501,
            HeadError::VersionNotSupported => 505,
            HeadError::ExpectationFailed => 417,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::BadRequest(r) | HeadError::NotImplemented(r) => r,
            HeadError::UriTooLong => "request target too long",
            HeadError::HeaderTooLarge => "request header section too large",
            HeadError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
            HeadError::ExpectationFailed => "only the 100-continue expectation is supported",
        }
    }
}

/// Headers beyond this count are refused with 431 rather than parsed.
const MAX_HEADERS: usize = 100;
/// Room for the method and version around the target when judging an incomplete request line.
const REQUEST_LINE_SLACK: usize = 64;

/// Parses the head at the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let skipped = leading_empty_lines(buf);
    let rest = &buf[skipped..];
    // Uninitialised header slots: zeroing 100 of them per request cost more than parsing.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(rest, &mut headers) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeaderTooLarge),
        Err(httparse::Error::Version) => return Err(classify_version(rest)),
        Err(httparse::Error::Token) if request_line_token_is_version(rest) => {
            return Err(classify_version(rest));
        }
        Err(e) => return Err(HeadError::BadRequest(bad_request_reason(e))),
    };
    let head_len = match status {
        httparse::Status::Partial => {
            check_partial(rest, limits)?;
            if buf.len() > limits.max_header_bytes {
                // Over the limit with the request line still unfinished: it is the target
                // that is too long, not the header fields.
                return Err(if memchr::memchr(b'\n', rest).is_none() {
                    HeadError::UriTooLong
                } else {
                    HeadError::HeaderTooLarge
                });
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => skipped + n,
    };
    let path = req.path.expect("complete request has a target");
    let method_len = req.method.map_or(0, str::len);
    // The request line is the method, the target, the version and three separators.
    let line_len = method_len + path.len() + b" HTTP/1.1\r\n".len() + 1;
    if path.len() > limits.max_target_bytes || line_len > limits.max_header_bytes {
        return Err(HeadError::UriTooLong);
    }
    if head_len > limits.max_header_bytes {
        return Err(HeadError::HeaderTooLarge);
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HeadError::VersionNotSupported),
    };
    let method = method_of(req.method.expect("complete request has a method"));
    let target = offset_in(buf, path.as_bytes());
    let mut head = RequestHead {
        method,
        version,
        target,
        head_len,
        framing: BodyFraming::None,
        connection_close: false,
        connection_keep_alive: false,
        connection_upgrade: false,
        upgrade_websocket: false,
        expect_continue: false,
        ws_key: None,
        ws_version: None,
        ws_extensions: Vec::new(),
    };
    validate_target(method, path.as_bytes())?;
    read_fields(buf, req.headers, &mut head)?;
    Ok(Some(head))
}

/// Splits a request target into path and query. The absolute form (`http://host/p?q`, which a
/// server MUST accept, RFC 9112 §3.2.2) yields its path, `/` when it has none.
pub fn path_and_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut t = target;
    if !t.starts_with(b"/")
        && t != b"*"
        && let Some(i) = find(t, b"://")
    {
        let after = &t[i + 3..];
        t = match after.iter().position(|&b| b == b'/' || b == b'?') {
            Some(p) if after[p] == b'/' => &after[p..],
            Some(p) => {
                // `http://host?q`: empty path, which means `/`.
                return (b"/", Some(&after[p + 1..]));
            }
            None => b"/",
        };
    }
    match memchr::memchr2(b'?', b'#', t) {
        Some(i) if t[i] == b'?' => {
            let q = &t[i + 1..];
            let q = memchr::memchr(b'#', q).map_or(q, |h| &q[..h]);
            (&t[..i], Some(q))
        }
        Some(i) => (&t[..i], None),
        None => (t, None),
    }
}

fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        if buf[i..].starts_with(b"\r\n") {
            i += 2;
        } else if buf[i..].starts_with(b"\n") {
            i += 1;
        } else {
            return i;
        }
    }
}

/// For an incomplete head: is the request line already too long to be acceptable?
fn check_partial(rest: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let line_end = memchr::memchr(b'\n', rest);
    let line_len = line_end.unwrap_or(rest.len());
    if line_len > limits.max_target_bytes + REQUEST_LINE_SLACK {
        return Err(HeadError::UriTooLong);
    }
    Ok(())
}

/// RFC 9110 §2.5 / RFC 9112 §2.3: a well-formed `HTTP/x.y` other than 1.0 and 1.1 is a version
/// we do not support (505); anything else in that position is just malformed (400). A higher
/// minor version of HTTP/1 (`HTTP/1.2`) is, by the same sections, a 1.x message we could
/// answer as 1.1, but httparse cannot parse it, so it gets 505 too, which is still a correct
/// answer for a version the server chooses not to process.
fn classify_version(rest: &[u8]) -> HeadError {
    let line = match memchr::memchr(b'\n', rest) {
        Some(i) => &rest[..i],
        None => rest,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    let well_formed = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if well_formed && line.split(|&b| b == b' ').count() == 3 {
        HeadError::VersionNotSupported
    } else {
        HeadError::BadRequest("malformed request line")
    }
}

/// httparse reports `HTTP/2.0` and the like as a token error on some inputs; see whether the
/// line looks like a request with an odd version.
fn request_line_token_is_version(rest: &[u8]) -> bool {
    matches!(classify_version(rest), HeadError::VersionNotSupported)
}

fn bad_request_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName | httparse::Error::HeaderValue => "malformed header field",
        httparse::Error::NewLine => "malformed line ending",
        _ => "malformed request line",
    }
}

fn method_of(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        "CONNECT" => Method::Connect,
        "TRACE" => Method::Trace,
        _ => Method::Other,
    }
}

/// RFC 9112 §3.2: origin-form for most methods, authority-form for CONNECT, `*` only for
/// OPTIONS, absolute-form for any.
fn validate_target(method: Method, t: &[u8]) -> Result<(), HeadError> {
    let ok = if t.starts_with(b"/") {
        method != Method::Connect
    } else if t == b"*" {
        method == Method::Options
    } else if method == Method::Connect {
        t.contains(&b':')
    } else {
        find(t, b"://").is_some_and(|i| {
            i > 0
                && t[..i]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        })
    };
    if ok {
        Ok(())
    } else {
        Err(HeadError::BadRequest("invalid request target"))
    }
}

fn read_fields(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    head: &mut RequestHead,
) -> Result<(), HeadError> {
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut ws_keys = 0;
    for f in fields {
        let value = trim(f.value);
        match field_kind(f.name.as_bytes()) {
            Field::Host => {
                hosts += 1;
                if !valid_host(value) {
                    return Err(HeadError::BadRequest("invalid Host header"));
                }
            }
            Field::ContentLength => {
                // RFC 9110 §8.6: a list of identical values is one value; differing ones are
                // an unrecoverable framing error.
                for part in value.split(|&b| b == b',') {
                    let n = parse_length(trim(part))?;
                    if content_length.is_some_and(|c| c != n) {
                        return Err(HeadError::BadRequest("conflicting Content-Length values"));
                    }
                    content_length = Some(n);
                }
            }
            Field::TransferEncoding => {
                transfer_encoding = true;
                for coding in value.split(|&b| b == b',').map(trim) {
                    if coding.is_empty() {
                        continue;
                    }
                    if chunked {
                        // Anything after chunked (including chunked again) means chunked is
                        // not the final coding: the length cannot be determined (RFC 9112 §6.3).
                        return Err(HeadError::BadRequest(
                            "chunked must be the final transfer coding",
                        ));
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else {
                        // RFC 9112 §6.1: a transfer coding we do not understand → 501.
                        return Err(HeadError::NotImplemented("unsupported transfer coding"));
                    }
                }
            }
            Field::Connection => {
                for token in value.split(|&b| b == b',').map(trim) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.connection_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        head.connection_keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        head.connection_upgrade = true;
                    }
                }
            }
            Field::Upgrade => {
                if value
                    .split(|&b| b == b',')
                    .map(trim)
                    .any(|p| p.eq_ignore_ascii_case(b"websocket"))
                {
                    head.upgrade_websocket = true;
                }
            }
            Field::Expect => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    head.expect_continue = true;
                } else {
                    return Err(HeadError::ExpectationFailed);
                }
            }
            Field::WsKey => {
                ws_keys += 1;
                head.ws_key = Some(offset_in(buf, value));
            }
            Field::WsVersion => head.ws_version = Some(offset_in(buf, value)),
            Field::WsExtensions => head.ws_extensions.push(offset_in(buf, value)),
            Field::Other => {}
        }
    }
    if ws_keys > 1 {
        head.ws_key = None;
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one in HTTP/1.0.
    if hosts > 1 {
        return Err(HeadError::BadRequest("more than one Host header"));
    }
    if hosts == 0 && head.version == Version::Http11 {
        return Err(HeadError::BadRequest("missing Host header"));
    }
    if transfer_encoding {
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        if head.version == Version::Http10 {
            return Err(HeadError::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        // RFC 9112 §6.1 and §11.2: both headers is how requests are smuggled.
        if content_length.is_some() {
            return Err(HeadError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if !chunked {
            return Err(HeadError::BadRequest("empty Transfer-Encoding"));
        }
        head.framing = BodyFraming::Chunked;
    } else if let Some(n) = content_length {
        head.framing = if n == 0 {
            BodyFraming::None
        } else {
            BodyFraming::Length(n)
        };
    }
    Ok(())
}

/// The header fields that matter to framing, persistence and upgrades.
enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    WsKey,
    WsVersion,
    WsExtensions,
    Other,
}

/// Classifies a field name, by length first so that most names are dismissed with one compare.
fn field_kind(name: &[u8]) -> Field {
    let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
    match name.len() {
        4 if is(b"host") => Field::Host,
        6 if is(b"expect") => Field::Expect,
        7 if is(b"upgrade") => Field::Upgrade,
        10 if is(b"connection") => Field::Connection,
        14 if is(b"content-length") => Field::ContentLength,
        17 if is(b"transfer-encoding") => Field::TransferEncoding,
        17 if is(b"sec-websocket-key") => Field::WsKey,
        21 if is(b"sec-websocket-version") => Field::WsVersion,
        24 if is(b"sec-websocket-extensions") => Field::WsExtensions,
        _ => Field::Other,
    }
}

fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadRequest("invalid Content-Length"));
    }
    v.iter()
        .try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(HeadError::BadRequest("Content-Length out of range"))
}

/// RFC 9110 §7.2 / RFC 3986 §3.2.2: `host[:port]`, reg-name, IPv4 or `[IPv6]`. Permissive on
/// reg-name characters but never whitespace, `/`, `?`, `#`, `@` or control bytes.
fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        // An empty Host is allowed when the target has no authority (RFC 9110 §7.2).
        return true;
    }
    let (host, port) = if v.starts_with(b"[") {
        match v.iter().position(|&b| b == b']') {
            Some(i) => {
                let inner = &v[1..i];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
                {
                    return false;
                }
                (&v[..=i], &v[i + 1..])
            }
            None => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = port.is_empty()
        || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit) && port.len() <= 6);
    let host_ok =
        host.starts_with(b"[") || (!host.is_empty() && host.iter().all(|&b| REG_NAME[b as usize]));
    port_ok && host_ok
}

/// Bytes allowed in a reg-name (RFC 3986 §3.2.2: unreserved, sub-delims, pct-encoded), as a
/// table: this runs for every request.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric();
        i += 1;
    }
    let extra = b"-._~!$&'()*+,;=%";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The position of `part` inside `buf`. httparse hands out sub-slices of the buffer it parsed,
/// so this is pointer arithmetic, checked.
fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    assert!(
        start <= buf.len() && start + part.len() <= buf.len(),
        "slice is not inside buf"
    );
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: Limits = Limits {
        max_header_bytes: 16 * 1024,
        max_target_bytes: 8192,
    };

    fn ok(req: &[u8]) -> RequestHead {
        parse_head(req, &L).unwrap().unwrap()
    }
    fn err(req: &[u8]) -> HeadError {
        parse_head(req, &L).unwrap_err()
    }

    #[test]
    fn simple_get() {
        let req = b"GET /plaintext?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let h = ok(req);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(&req[h.target.clone()], b"/plaintext?x=1");
        assert_eq!(h.head_len, req.len() - b"GET /next".len());
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn partial_heads_need_more() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n", &L), Ok(None));
        assert_eq!(parse_head(b"", &L), Ok(None));
        assert_eq!(parse_head(b"\r\n", &L), Ok(None));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let req = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(ok(req).head_len, req.len());
    }

    #[test]
    fn lengths_and_chunked() {
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").framing,
            BodyFraming::Length(12)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing,
            BodyFraming::None
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
                .framing,
            BodyFraming::Length(5)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            BodyFraming::Chunked
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .status(),
            400
        );
        assert_eq!(err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").status(), 400);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .status(),
            400
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n")
                .status(),
            400
        );
        assert_eq!(err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n").status(), 400);
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status(),
            501
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n").status(),
            501
        );
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 1\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n").status(),
            400
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").status(),
            400
        );
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n").status(), 400);
        ok(b"GET / HTTP/1.0\r\n\r\n");
        ok(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        ok(b"GET / HTTP/1.1\r\nHost: example.com:80\r\n\r\n");
    }

    #[test]
    fn versions() {
        assert_eq!(err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").status(), 505);
        assert_eq!(err(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n").status(), 505);
        assert_eq!(err(b"GET / HTTX/1.1\r\nHost: a\r\n\r\n").status(), 400);
        assert_eq!(
            err(b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n").status(),
            400
        );
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(err(long.as_bytes()).status(), 414);
        let partial_long = format!("GET /{}", "a".repeat(9000));
        assert_eq!(err(partial_long.as_bytes()).status(), 414);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "b".repeat(17000)
        );
        assert_eq!(err(big.as_bytes()).status(), 431);
        let partial_big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "b".repeat(17000));
        assert_eq!(err(partial_big.as_bytes()).status(), 431);
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..120 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(err(many.as_bytes()).status(), 431);
    }

    #[test]
    fn connection_expect_and_upgrade_tokens() {
        let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nConnection: CLOSE\r\nUpgrade: h2c, WebSocket\r\n\r\n");
        assert!(
            h.connection_close
                && h.connection_keep_alive
                && h.connection_upgrade
                && h.upgrade_websocket
        );
        assert!(
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: bananas\r\n\r\n").status(),
            417
        );
    }

    #[test]
    fn websocket_fields_are_located() {
        let req = b"GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ== \r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        let h = ok(req);
        assert_eq!(&req[h.ws_key.clone().unwrap()], b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(&req[h.ws_version.clone().unwrap()], b"13");
        assert_eq!(&req[h.ws_extensions[0].clone()], b"permessage-deflate");
    }

    #[test]
    fn targets() {
        assert_eq!(
            path_and_query(b"/a/b?c=d#f"),
            (&b"/a/b"[..], Some(&b"c=d"[..]))
        );
        assert_eq!(
            path_and_query(b"http://h:1/p?q"),
            (&b"/p"[..], Some(&b"q"[..]))
        );
        assert_eq!(path_and_query(b"http://h"), (&b"/"[..], None));
        assert_eq!(path_and_query(b"*"), (&b"*"[..], None));
        ok(b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n");
        ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET abc HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes, &L);
        }

        #[test]
        fn every_prefix_of_a_valid_head_is_partial(
            path in "/[a-z0-9/]{0,40}",
            names in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,12}", 0..6),
        ) {
            let mut req = format!("GET {path} HTTP/1.1\r\nHost: example\r\n");
            for n in &names {
                if ["host", "content-length", "transfer-encoding", "expect"].contains(&n.to_ascii_lowercase().as_str()) {
                    continue;
                }
                req.push_str(&format!("{n}: v\r\n"));
            }
            req.push_str("\r\n");
            let whole = parse_head(req.as_bytes(), &L).unwrap().unwrap();
            prop_assert_eq!(whole.head_len, req.len());
            for cut in 0..req.len() {
                prop_assert_eq!(parse_head(&req.as_bytes()[..cut], &L), Ok(None), "cut {}", cut);
            }
        }
    }
}
