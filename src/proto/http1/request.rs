//! Request head parsing: RFC 9112 §2–§3 and §5–§6, plus the RFC 9110 fields that decide body
//! framing, persistence, expectations and upgrades.
//!
//! This file owns: finding a complete request head at the start of the bytes read so far;
//! rejecting a malformed, oversized or unsupported head with the status the RFCs call for; and
//! distilling an accepted head into a [`RequestHead`] that borrows nothing (the target and the
//! few field values the server needs are offset ranges into the caller's buffer). It does not
//! own reading the body (`body.rs`), deciding persistence (RFC 9112 §9.3, the connection state
//! machine) or routing. [`path_and_query`] splits a target for the application.
//!
//! Strictness is deliberate: wherever the RFCs let a recipient either tolerate or reject a
//! malformation (bare LF, empty list members in framing fields, odd request-targets, ...), we
//! reject, because tolerance is what lets two parsers on one path disagree about where a message
//! ends or what it asks for (request smuggling, filter bypass).
//!
//! `httparse` (strict default configuration) tokenizes the request line and the field lines;
//! everything it leaves to the caller (versions other than 1.0/1.1, the request-target grammar,
//! field semantics, limits) is checked here. Nothing is allocated for a head unless it carries
//! `Sec-WebSocket-Extensions`.

use std::ops::Range;

use crate::proto::text::trim_ows;
use httparse::{EMPTY_HEADER, Header, Status};
use memchr::{memchr_iter, memmem};

/// Finds a byte. The strings searched per request (a Host value, a target, a list member) are
/// a few dozen bytes, where memchr's vector set-up costs more than a plain loop; longer inputs
/// still get memchr.
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    if hay.len() <= 64 {
        hay.iter().position(|&b| b == needle)
    } else {
        memchr::memchr(needle, hay)
    }
}

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

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`, it is some other method.
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            b"TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    /// A request that came over HTTP/2 (the HTTP/2 layer builds it; HTTP/1.1 never does).
    Http2,
}

impl Version {
    /// As an access log writes it (a request in HTTP/1.2–1.9, answered as 1.1, shows as 1.1).
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2.0",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bound on the whole head, leading empty lines and the final blank line included (431).
    pub max_header_bytes: usize,
    /// Bound on the request-target (414). RFC 9112 §3 recommends supporting request lines of at
    /// least 8000 octets, hence the default of 8192 for the target alone.
    pub max_target_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_target_bytes: 8192,
        }
    }
}

/// What the connection and the app need from a head; it borrows nothing: `target` is an offset
/// range into the buffer given to `parse_head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    pub target: Range<usize>,
    /// Bytes of the whole head incl. the blank line (and any leading empty lines skipped).
    pub head_len: usize,
    pub framing: BodyFraming,
    /// Tokens of Connection (comma list, case-insensitive, OWS trimmed, repeated headers
    /// combined).
    pub connection_close: bool,
    pub connection_keep_alive: bool,
    pub connection_upgrade: bool,
    /// An Upgrade header lists the token "websocket" (case-insensitive).
    pub upgrade_websocket: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1: a 100-continue
    /// expectation in an HTTP/1.0 request MUST be ignored).
    pub expect_continue: bool,
    /// Sec-WebSocket-Key value (trimmed); set only if exactly one such header.
    pub ws_key: Option<Range<usize>>,
    /// Sec-WebSocket-Version value (trimmed); set only if exactly one such header.
    pub ws_version: Option<Range<usize>>,
    /// Each Sec-WebSocket-Extensions header value (an empty Vec allocates nothing).
    pub ws_extensions: Vec<Range<usize>>,
    /// `Last-Event-ID` (trimmed), which a reconnecting `EventSource` sends (HTML §9.2); set
    /// only if exactly one such header.
    pub last_event_id: Option<Range<usize>>,
}

impl RequestHead {
    /// The method token as the client sent it (`BREW` stays `BREW`, where `method` says only
    /// `Other`), from the bytes given to `parse_head`: it ends at the SP before the target and
    /// starts after any empty lines that preceded the request line.
    pub fn method_token<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let end = self.target.start.saturating_sub(1);
        let start = buf[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        &buf[start..end]
    }
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

    /// A short human-readable explanation, for a response body or a log line. The status line's
    /// reason phrase is the response writer's business, not this.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::BadRequest(why) | HeadError::NotImplemented(why) => why,
            HeadError::UriTooLong => "request-target too long",
            HeadError::HeaderTooLarge => "request header section too large",
            HeadError::VersionNotSupported => "HTTP major version not supported",
            HeadError::ExpectationFailed => "unsupported expectation",
        }
    }
}

/// More header lines than this is 431. httparse needs the slots up front; 100 slots of 32 bytes
/// live on the stack for the duration of one call.
pub const MAX_HEADERS: usize = 100;

/// No registered method is longer than 17 bytes. RFC 9110 §9.1 sets no limit, but waiting for a
/// 16 KiB "method" to answer 431 helps nobody; a longer token is treated as a malformed request
/// line.
const MAX_METHOD_BYTES: usize = 64;

fn bad(why: &'static str) -> HeadError {
    HeadError::BadRequest(why)
}

/// Ok(None) = need more bytes. Ok(Some(head)) = a complete head of head.head_len bytes at the
/// start of buf.
///
/// Stateless: the caller passes everything received since the previous message ended, and calls
/// again with more bytes after Ok(None). Bytes past `head_len` (a body, a pipelined request)
/// are not looked at.
///
/// Consistent under streaming: a refusal of `buf` is the refusal of every longer input that
/// starts with `buf`, so the answer does not depend on how the bytes were split into reads. That
/// is why only the first `max_header_bytes` are parsed (a malformation past the limit is never
/// seen, and one within it is reported even if the input is already over the limit): the limit
/// is an error only for input that is still incomplete within it (found by fuzzing: a head
/// refused 431 when it arrived in two reads was refused 400 when it arrived in one).
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let max = limits.max_header_bytes;
    match parse_within(&buf[..buf.len().min(max)], limits)? {
        Some(head) => Ok(Some(head)),
        None if buf.len() > max => over_limit(buf, max),
        None => Ok(None),
    }
}

/// `buf` passes `max` bytes without a complete head and nothing within them was malformed:
/// 431, or 414 when the request line alone (leading empty lines excluded) passes the limit
/// (RFC 9110 §15.5.15: it is the target that is too long). Which of the two is decided by the
/// bytes up to the end of the request line or up to `max` bytes of it, whichever comes first,
/// so until then this is Ok(None): at most `max` bytes past the limit are ever held.
fn over_limit(buf: &[u8], max: usize) -> Result<Option<RequestHead>, HeadError> {
    let skip = buf
        .chunks_exact(2)
        .take_while(|pair| *pair == b"\r\n")
        .count()
        * 2;
    if skip >= max {
        // The limit passed among the leading empty lines.
        return Err(HeadError::HeaderTooLarge);
    }
    let line = &buf[skip..];
    match memchr::memchr(b'\n', &line[..line.len().min(max + 1)]) {
        Some(lf) if lf < max => Err(HeadError::HeaderTooLarge),
        Some(_) => Err(HeadError::UriTooLong),
        None if line.len() > max => Err(HeadError::UriTooLong),
        None => Ok(None),
    }
}

/// `parse_head` on input that is within the header limit: Ok(None) when the head is not
/// complete yet.
fn parse_within(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    let bare_lf = || bad("bare LF line terminator");
    match parse_raw(buf, limits) {
        Err(e) if e != bare_lf() => {
            // httparse reads a bare LF as a line end and may report a malformation after it;
            // but the bare LF came first, and a read that stopped there was refused for it. So
            // the answer is whatever the bytes before the first bare LF get, if an error.
            let first = memchr_iter(b'\n', buf).find(|&i| i == 0 || buf[i - 1] != b'\r');
            match first.map(|i| parse_raw(&buf[..i], limits)) {
                Some(Err(earlier)) => Err(earlier),
                Some(Ok(_)) => Err(bare_lf()),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// `parse_within`, except that a malformation after a bare LF may be reported instead of it
/// (httparse reads on past a bare LF).
fn parse_raw(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF) received before the
    // request-line. We skip any number of them; they count towards `max_header_bytes`. A bare
    // LF or CR here is as malformed as anywhere else in the head.
    let mut skip = 0;
    loop {
        match &buf[skip..] {
            [b'\r', b'\n', ..] => skip += 2,
            [] | [b'\r'] => return Ok(None),
            [b'\n', ..] => return Err(bad("bare LF line terminator")),
            [b'\r', ..] => return Err(bad("bare CR in request head")),
            _ => break,
        }
    }
    let rest = &buf[skip..];

    // Uninitialised slots: zeroing 100 headers per request cost more than parsing the request
    // (10.7 % of server CPU under 16-deep pipelining). Only the rare version fallback below
    // needs initialised ones.
    let mut slots = [const { std::mem::MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS];
    let mut fallback_slots;
    let mut req = httparse::Request::new(&mut []);
    let parsed = req.parse_with_uninit_headers(rest, &mut slots);
    let (method, path) = (req.method, req.path);

    // Length limits apply as soon as the piece in question passes them, whatever follows. Like
    // the header limit, they are positions in the stream: a malformation before that point is
    // what is reported, one after it is never looked at (so the answer does not depend on how
    // the bytes were split into reads). The common case, a whole head with a short method and
    // target, needs no second look.
    let within_bounds = matches!(parsed, Ok(Status::Complete(_)))
        && method.is_some_and(|m| m.len() <= MAX_METHOD_BYTES)
        && path.is_some_and(|p| p.len() <= limits.max_target_bytes);
    if !within_bounds && let Some((at, overrun)) = request_line_overrun(rest, limits) {
        // The bytes before the overrun hold no complete head; any error in them comes first.
        return match parse_within(&buf[..skip + at], limits) {
            Err(e) => Err(e),
            Ok(_) => Err(overrun),
        };
    }

    let (version, fields, rest_len): (Version, &[Header<'_>], usize) = match parsed {
        Ok(Status::Complete(n)) => {
            let version = if req.version == Some(0) {
                Version::Http10
            } else {
                Version::Http11
            };
            (version, &*std::mem::take(&mut req.headers), n)
        }
        Ok(Status::Partial) => return partial(rest),
        Err(httparse::Error::Version) => {
            // httparse only knows "HTTP/1.0" and "HTTP/1.1". RFC 9112 §2.3: HTTP-version =
            // "HTTP" "/" DIGIT "." DIGIT, case-sensitive. RFC 9110 §2.5: a recipient that
            // implements the major version but receives a higher minor version SHOULD process
            // the message as the highest minor version it conforms to, so HTTP/1.2..1.9 are
            // handled as HTTP/1.1; RFC 9110 §15.6.6: 505 is for a major version the server does
            // not support (HTTP/0.9 spelled out, HTTP/2.0, ...). Anything that does not match
            // the grammar (lowercase, multi-digit, missing minor) is a malformed request line.
            let (Some(m), Some(p)) = (method, path) else {
                return Err(bad("invalid HTTP version"));
            };
            let version_at = m.len() + 1 + p.len() + 1;
            let line = rest.get(version_at..).unwrap_or_default();
            match version_line(line) {
                VersionLine::Partial => return partial(rest),
                VersionLine::Invalid => return Err(bad("invalid HTTP version")),
                VersionLine::OtherMajor => return Err(HeadError::VersionNotSupported),
                VersionLine::Http1(version) => {
                    let fields_at = version_at + VERSION_LINE_LEN;
                    fallback_slots = [EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&rest[fields_at..], &mut fallback_slots) {
                        Ok(Status::Complete((n, fields))) => (version, fields, fields_at + n),
                        Ok(Status::Partial) => return partial(rest),
                        Err(e) => return Err(from_httparse(e)),
                    }
                }
            }
        }
        Err(e) => return Err(from_httparse(e)),
    };
    let (Some(method_token), Some(target_str)) = (method, path) else {
        return Err(bad("malformed request line"));
    };

    let head_len = skip + rest_len;
    // RFC 9112 §2.2 lets a recipient accept a bare LF as a line terminator; we do not: a
    // front-end that treats LF differently could otherwise see a different set of fields.
    if has_bare_lf(&buf[skip..head_len]) {
        return Err(bad("bare LF line terminator"));
    }
    // `parse_head` gave us at most `max_header_bytes`.
    debug_assert!(head_len <= limits.max_header_bytes);

    let method = Method::from_token(method_token.as_bytes());
    let target_at = skip + method_token.len() + 1;
    validate_target(method, target_str.as_bytes())?;

    let mut head = RequestHead {
        method,
        version,
        target: target_at..target_at + target_str.len(),
        framing: BodyFraming::None,
        head_len,
        connection_close: false,
        connection_keep_alive: false,
        connection_upgrade: false,
        upgrade_websocket: false,
        expect_continue: false,
        ws_key: None,
        ws_version: None,
        last_event_id: None,
        ws_extensions: Vec::new(),
    };
    apply_fields(buf, fields, &mut head)?;
    Ok(Some(head))
}

/// The head is incomplete: decide whether it can still become acceptable (the length limits are
/// `parse_head`'s and `request_line_overrun`'s business).
fn partial(rest: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    if has_bare_lf(rest) {
        return Err(bad("bare LF line terminator"));
    }
    Ok(None)
}

/// Where the request line at the start of `rest` passes a length limit, and the error: the
/// method past `MAX_METHOD_BYTES` (400) or the target past `max_target_bytes` (414, RFC 9112 §3,
/// RFC 9110 §15.5.15). The method and the target are taken to end at the next space, as
/// httparse reads them.
fn request_line_overrun(rest: &[u8], limits: &Limits) -> Option<(usize, HeadError)> {
    let Some(m) = memchr(b' ', &rest[..rest.len().min(MAX_METHOD_BYTES + 1)]) else {
        return (rest.len() > MAX_METHOD_BYTES)
            .then_some((MAX_METHOD_BYTES, bad("method too long")));
    };
    let target = &rest[m + 1..];
    let max = limits.max_target_bytes;
    match memchr(b' ', &target[..target.len().min(max + 1)]) {
        None if target.len() > max => Some((m + 1 + max, HeadError::UriTooLong)),
        _ => None,
    }
}

fn from_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::HeaderTooLarge,
        httparse::Error::HeaderName => bad("malformed header field name"),
        httparse::Error::HeaderValue => bad("invalid byte in header field value"),
        httparse::Error::NewLine => bad("malformed line terminator"),
        httparse::Error::Version => bad("invalid HTTP version"),
        httparse::Error::Token | httparse::Error::Status => bad("malformed request line"),
    }
}

fn has_bare_lf(bytes: &[u8]) -> bool {
    // A typical head is tens of bytes: a plain loop beats memchr's vector set-up there.
    if bytes.len() <= 256 {
        let mut prev = 0u8;
        let mut bare = false;
        for &b in bytes {
            bare |= b == b'\n' && prev != b'\r';
            prev = b;
        }
        return bare;
    }
    memchr_iter(b'\n', bytes).any(|i| i == 0 || bytes[i - 1] != b'\r')
}

/// "HTTP/d.d\r\n"
const VERSION_LINE_LEN: usize = 10;

enum VersionLine {
    Partial,
    Invalid,
    OtherMajor,
    Http1(Version),
}

fn version_line(line: &[u8]) -> VersionLine {
    for (i, &b) in line.iter().take(VERSION_LINE_LEN).enumerate() {
        let ok = match i {
            0..=4 => b == b"HTTP/"[i],
            5 | 7 => b.is_ascii_digit(),
            6 => b == b'.',
            8 => b == b'\r',
            _ => b == b'\n',
        };
        if !ok {
            return VersionLine::Invalid;
        }
    }
    if line.len() < VERSION_LINE_LEN {
        VersionLine::Partial
    } else if line[5] != b'1' {
        VersionLine::OtherMajor
    } else if line[7] == b'0' {
        VersionLine::Http1(Version::Http10)
    } else {
        VersionLine::Http1(Version::Http11)
    }
}

// ---------------------------------------------------------------------------------------------
// Character classes (RFC 9110 §5.6.2, RFC 3986 §2–§3)

const fn class(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// tchar (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = class(b"!#$%&'*+-.^_`|~");
/// Origin-form and the path/query of absolute-form, `%` excepted (checked with its two hex
/// digits): pchar / "/" / "?" (RFC 3986 §3.3, §3.4).
static TARGET: [bool; 256] = class(b"-._~!$&'()*+,;=:@/?");
/// reg-name, `%` excepted: unreserved / sub-delims (RFC 3986 §3.2.2), except `,`: a comma is
/// what combining two Host field lines produces (RFC 9110 §5.3), and no DNS name has one, so a
/// Host like `a,b` is refused as the smuggled second Host it most likely is.
static REG_NAME: [bool; 256] = class(b"-._~!$&'()*+;=");
/// What may follow "v" HEXDIG "." in an IPvFuture literal: unreserved / sub-delims / ":".
static IPVFUTURE: [bool; 256] = class(b"-._~!$&'()*+,;=:");

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// All bytes in `table`, or `%` followed by two hex digits.
fn valid_uri_chars(s: &[u8], table: &[bool; 256]) -> bool {
    // Fast path, one pass: every byte in the table, or a '%' that sends us to the slow path
    // below, which checks the escapes.
    let mut pct = false;
    let mut ok = true;
    for &b in s {
        pct |= b == b'%';
        ok &= table[b as usize] | (b == b'%');
    }
    if !pct {
        return ok;
    }
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            match s.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if table[s[i] as usize] {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Request-target (RFC 9112 §3.2)

/// RFC 9112 §3.2 and §3: a request-target that matches none of the four forms, or a form that
/// the method may not use, makes the request line invalid, and a recipient SHOULD answer 400
/// rather than autocorrect. We hold the target to the RFC 3986 grammar: characters outside it
/// (space and controls are already refused by httparse; `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`,
/// `|`, `}`, `#` and raw non-ASCII here) and malformed percent-escapes are 400.
fn validate_target(method: Method, t: &[u8]) -> Result<(), HeadError> {
    let ok = if method == Method::Connect {
        // §3.2.3: CONNECT uses, and only CONNECT uses, authority-form = uri-host ":" port, and
        // RFC 9110 §9.3.6: the port MUST be sent.
        valid_host_port(t, true)
    } else if t == b"*" {
        // §3.2.4: asterisk-form is only for a server-wide OPTIONS.
        method == Method::Options
    } else if t.first() == Some(&b'/') {
        // §3.2.1: origin-form = absolute-path [ "?" query ]
        valid_uri_chars(t, &TARGET)
    } else {
        valid_absolute_form(t)
    };
    if ok {
        Ok(())
    } else {
        Err(bad("invalid request-target"))
    }
}

/// §3.2.2: absolute-form. An origin server MUST accept it; we accept it for the schemes this
/// server serves, "http" and "https", which require a non-empty authority (RFC 9110 §4.2.1,
/// §4.2.2). A userinfo part is refused (RFC 9110 §4.2.4: a recipient SHOULD treat it as an
/// error).
fn valid_absolute_form(t: &[u8]) -> bool {
    let Some(colon) = memchr(b':', t) else {
        return false;
    };
    let scheme = &t[..colon];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return false;
    }
    let Some(rest) = t[colon + 1..].strip_prefix(b"//") else {
        return false;
    };
    let authority_len = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(authority_len);
    valid_host_port(authority, false) && valid_uri_chars(path_query, &TARGET)
}

/// uri-host [ ":" port ] with a non-empty host (RFC 3986 §3.2.2–§3.2.3). Used for the Host
/// field, the authority of absolute-form, and authority-form (where the port is required).
fn valid_host_port(s: &[u8], port_required: bool) -> bool {
    let (host_ok, port) = if s.first() == Some(&b'[') {
        let Some(close) = memchr(b']', s) else {
            return false;
        };
        let port = match &s[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        };
        (valid_ip_literal(&s[1..close]), port)
    } else {
        // One pass: find the colon and check every host byte; a '%' (rare in a host) takes the
        // full escape check.
        let mut colon = None;
        let mut pct = false;
        let mut host_ok = true;
        for (i, &b) in s.iter().enumerate() {
            if b == b':' {
                colon = Some(i);
                break;
            }
            pct |= b == b'%';
            host_ok &= REG_NAME[b as usize] | (b == b'%');
        }
        let (host, port) = match colon {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        if pct {
            host_ok = valid_uri_chars(host, &REG_NAME);
        }
        (!host.is_empty() && host_ok, port)
    };
    let port_ok = match port {
        None => !port_required,
        Some(p) => p.iter().all(u8::is_ascii_digit) && !(port_required && p.is_empty()),
    };
    host_ok && port_ok
}

/// IP-literal = "[" ( IPv6address / IPvFuture ) "]" (RFC 3986 §3.2.2), brackets stripped.
fn valid_ip_literal(s: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = s {
        let Some(dot) = memchr(b'.', rest) else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail.iter().all(|&b| IPVFUTURE[b as usize]);
    }
    std::str::from_utf8(s).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Splits a request target into path and optional query (without the `?`); absolute-form
/// (`http://host:port/p?q`) yields its path (`/` if none); `*` yields `*`. An authority-form
/// target (CONNECT) has no path and is returned whole.
pub fn path_and_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    let path_query: &[u8] = if target.first() == Some(&b'/') {
        target
    } else if let Some(i) = memmem::find(target, b"://") {
        let after = &target[i + 3..];
        let start = after
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after.len());
        &after[start..]
    } else {
        return (target, None);
    };
    let (path, query) = match memchr(b'?', path_query) {
        Some(q) => (&path_query[..q], Some(&path_query[q + 1..])),
        None => (path_query, None),
    };
    (if path.is_empty() { b"/" } else { path }, query)
}

// ---------------------------------------------------------------------------------------------
// Fields

/// Members of a comma-separated list (RFC 9110 §5.6.1), OWS-trimmed, empty members included
/// (callers decide whether to ignore or refuse them).
fn list_members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Transfer-Encoding across all its field lines, in order (RFC 9112 §6.1).
#[derive(Default)]
struct TransferCodings {
    present: bool,
    malformed: bool,
    chunked: u32,
    last_is_chunked: bool,
    unknown: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for member in list_members(value) {
            // Empty members ("chunked,", ", chunked") are refused rather than skipped: a
            // framing field is the wrong place for leniency.
            let (name, params) = match memchr(b';', member) {
                Some(i) => (trim_ows(&member[..i]), Some(&member[i + 1..])),
                None => (member, None),
            };
            if !is_token(name) {
                self.malformed = true;
                return;
            }
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            if chunked {
                // chunked defines no parameters (RFC 9112 §7); "chunked;x=y" is not chunked
                // as every parser understands it.
                if params.is_some() {
                    self.malformed = true;
                    return;
                }
                self.chunked += 1;
            } else {
                self.unknown = true;
            }
            self.last_is_chunked = chunked;
        }
    }

    /// Order matters. RFC 9112 §6.3 rule 4: chunked not final on a request MUST be 400 (its
    /// length cannot be determined), so that comes first; RFC 9112 §7: chunked applied more
    /// than once is a sender error, 400; RFC 9112 §6.1: a coding we do not understand SHOULD be
    /// 501. So `gzip` is 400, `gzip, chunked` is 501, `chunked, chunked` is 400.
    fn framing(&self) -> Result<BodyFraming, HeadError> {
        if self.malformed {
            Err(bad("malformed Transfer-Encoding"))
        } else if !self.last_is_chunked {
            Err(bad("chunked is not the final transfer coding"))
        } else if self.chunked > 1 {
            Err(bad("chunked applied more than once"))
        } else if self.unknown {
            Err(HeadError::NotImplemented("unsupported transfer coding"))
        } else {
            Ok(BodyFraming::Chunked)
        }
    }
}

/// Content-Length = 1*DIGIT (RFC 9110 §8.6). A list of identical values (from a comma list or
/// repeated field lines) MAY be accepted as that value; anything else invalid MUST be 400
/// (RFC 9112 §6.3 rule 5). No sign, no inner whitespace, no empty member, must fit a u64.
fn add_content_length(value: &[u8], acc: &mut Option<u64>) -> Result<(), HeadError> {
    for member in list_members(value) {
        if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
            return Err(bad("invalid Content-Length"));
        }
        let n = member
            .iter()
            .try_fold(0u64, |n, &d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or(bad("Content-Length too large"))?;
        match *acc {
            Some(prev) if prev != n => return Err(bad("conflicting Content-Length values")),
            _ => *acc = Some(n),
        }
    }
    Ok(())
}

fn apply_fields(
    buf: &[u8],
    fields: &[Header<'_>],
    head: &mut RequestHead,
) -> Result<(), HeadError> {
    let mut hosts = 0u32;
    let mut content_length: Option<u64> = None;
    let mut codings = TransferCodings::default();
    let mut unknown_expectation = false;
    let mut ws_keys = 0u32;
    let mut ws_versions = 0u32;
    let mut last_event_ids = 0u32;

    for field in fields {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(b"host") {
            // RFC 9112 §3.2: 400 for a Host field line with an invalid value. The grammar is
            // uri-host [ ":" port ] (RFC 9110 §7.2). An empty value is only for a target URI
            // without authority, which an http(s) target never is, so it is refused too.
            hosts += 1;
            if !valid_host_port(value, false) {
                return Err(bad("invalid Host"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            add_content_length(value, &mut content_length)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.add(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_members(value) {
                if option.eq_ignore_ascii_case(b"close") {
                    head.connection_close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    head.connection_keep_alive = true;
                } else if option.eq_ignore_ascii_case(b"upgrade") {
                    head.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            if list_members(value).any(|p| p.eq_ignore_ascii_case(b"websocket")) {
                head.upgrade_websocket = true;
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 §10.1.1: 100-continue is the only expectation defined; one the server
            // does not support MAY be answered 417. Empty members are ignored (§5.6.1).
            for expectation in list_members(value) {
                if expectation.eq_ignore_ascii_case(b"100-continue") {
                    head.expect_continue = true;
                } else if !expectation.is_empty() {
                    unknown_expectation = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            ws_keys += 1;
            head.ws_key = Some(range_in(buf, value));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            ws_versions += 1;
            head.ws_version = Some(range_in(buf, value));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
            head.ws_extensions.push(range_in(buf, value));
        } else if name.eq_ignore_ascii_case(b"last-event-id") {
            last_event_ids += 1;
            head.last_event_id = Some(range_in(buf, value));
        }
    }
    if last_event_ids != 1 {
        head.last_event_id = None;
    }

    // RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, and for any request with more
    // than one Host field line.
    if hosts > 1 {
        return Err(bad("more than one Host"));
    }
    if hosts == 0 && head.version == Version::Http11 {
        return Err(bad("missing Host"));
    }
    if ws_keys != 1 {
        head.ws_key = None;
    }
    if ws_versions != 1 {
        head.ws_version = None;
    }

    head.framing = if codings.present {
        if head.version == Version::Http10 {
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message MUST be treated as
            // faulty framing, even with a Content-Length.
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            // RFC 9112 §6.1 lets a server reject this outright; it is the classic smuggling
            // shape (§6.3 rule 3), so we do.
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        codings.framing()?
    } else {
        match content_length {
            // RFC 9112 §6.3 rule 7: no Content-Length and no Transfer-Encoding means no body.
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };

    if unknown_expectation {
        return Err(HeadError::ExpectationFailed);
    }
    if head.version == Version::Http10 {
        // RFC 9110 §10.1.1: a 100-continue expectation in HTTP/1.0 MUST be ignored.
        head.expect_continue = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
        parse_head(buf, &Limits::default())
    }

    fn head(buf: &[u8]) -> RequestHead {
        match parse(buf) {
            Ok(Some(h)) => h,
            other => panic!(
                "expected a head for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn err(buf: &[u8]) -> HeadError {
        match parse(buf) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn err400(buf: &[u8]) {
        let e = err(buf);
        assert_eq!(
            e.status(),
            400,
            "{e:?} for {:?}",
            String::from_utf8_lossy(buf)
        );
    }

    /// A GET with the given extra field lines (each without CRLF).
    fn get_with(fields: &[&str]) -> Vec<u8> {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: example.com\r\n");
        for f in fields {
            s.push_str(f);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn post_with(fields: &[&str]) -> Vec<u8> {
        let mut s = String::from("POST /upload HTTP/1.1\r\nHost: example.com\r\n");
        for f in fields {
            s.push_str(f);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    // -- ordinary requests ------------------------------------------------------------------

    #[test]
    fn simple_get() {
        let buf = b"GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        let h = head(buf);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(&buf[h.target.clone()], b"/index.html?x=1");
        assert_eq!(h.head_len, buf.len());
        assert_eq!(h.framing, BodyFraming::None);
        assert!(!h.connection_close && !h.connection_keep_alive && !h.connection_upgrade);
        assert!(!h.upgrade_websocket && !h.expect_continue);
        assert_eq!(h.ws_key, None);
        assert!(h.ws_extensions.is_empty());
    }

    #[test]
    fn the_method_token_as_sent_for_logs() {
        let buf = b"\r\n\r\nBREW /pot HTTP/1.0\r\nHost: a\r\n\r\n";
        let h = head(buf);
        assert_eq!(h.method, Method::Other);
        assert_eq!(h.method_token(buf), b"BREW");
        assert_eq!(h.version.as_str(), "HTTP/1.0");
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head(buf).method_token(buf), b"GET");
    }

    #[test]
    fn post_with_length() {
        let buf = b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
        let h = head(buf);
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.framing, BodyFraming::Length(11));
        assert_eq!(&buf[h.head_len..], b"hello world");
    }

    #[test]
    fn post_chunked() {
        let h = head(&post_with(&["Transfer-Encoding: chunked"]));
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = head(&post_with(&["Transfer-Encoding: Chunked"]));
        assert_eq!(h.framing, BodyFraming::Chunked);
    }

    #[test]
    fn head_and_other_methods() {
        for (token, method) in [
            ("HEAD", Method::Head),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Patch),
            ("TRACE", Method::Trace),
            ("PROPFIND", Method::Other),
            ("get", Method::Other),
        ] {
            let buf = format!("{token} /x HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(head(buf.as_bytes()).method, method, "{token}");
        }
    }

    #[test]
    fn http10_without_host() {
        let h = head(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.version, Version::Http10);
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn content_length_zero_is_no_body() {
        assert_eq!(
            head(&post_with(&["Content-Length: 0"])).framing,
            BodyFraming::None
        );
        assert_eq!(
            head(&post_with(&["Content-Length: 000"])).framing,
            BodyFraming::None
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = head(buf);
        assert_eq!(&buf[h.target.clone()], b"/a");
        assert_eq!(h.head_len, buf.len());
        assert_eq!(parse(b"\r\n"), Ok(None));
        assert_eq!(parse(b"\r\n\r"), Ok(None));
        err400(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // Bounded by the header limit.
        let limits = Limits {
            max_header_bytes: 64,
            max_target_bytes: 64,
        };
        assert_eq!(
            parse_head(&b"\r\n".repeat(40), &limits),
            Err(HeadError::HeaderTooLarge)
        );
        let mut long = b"\r\n".repeat(30);
        long.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(parse_head(&long, &limits), Err(HeadError::HeaderTooLarge));
    }

    #[test]
    fn pipelined_only_first_head() {
        let first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\x00\r\n");
        let h = head(&buf);
        assert_eq!(h.head_len, first.len());
        assert_eq!(&buf[h.target.clone()], b"/1");
        let h2 = head(&buf[h.head_len..]);
        assert_eq!(&buf[h.head_len..][h2.target.clone()], b"/2");
    }

    #[test]
    fn partial_input_needs_more() {
        let buf = b"GET /index HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n";
        for i in 0..buf.len() {
            assert_eq!(parse(&buf[..i]), Ok(None), "prefix {i}");
        }
        assert!(parse(buf).unwrap().is_some());
    }

    #[test]
    fn absolute_form() {
        let buf = b"GET http://example.com:8080/p/q?x=y HTTP/1.1\r\nHost: example.com:8080\r\n\r\n";
        let h = head(buf);
        let target = &buf[h.target.clone()];
        assert_eq!(target, b"http://example.com:8080/p/q?x=y");
        assert_eq!(path_and_query(target), (&b"/p/q"[..], Some(&b"x=y"[..])));
        head(b"GET HTTPS://[::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n");
        head(b"GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n");
        // Host is still required in HTTP/1.1 (RFC 9112 §3.2).
        err400(b"GET http://example.com/ HTTP/1.1\r\n\r\n");
        // Only http(s), with an authority, without userinfo.
        err400(b"GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"GET http:/example.com/ HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"GET http://user@example.com/ HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn asterisk_and_authority_forms() {
        let buf = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = head(buf);
        assert_eq!(&buf[h.target.clone()], b"*");
        err400(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n");
        let h = head(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(h.method, Method::Connect);
        err400(b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"CONNECT http://example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn target_grammar() {
        head(b"GET /a%20b/%7E;p=1,2@:!$&'()*+=~?q=/?&x HTTP/1.1\r\nHost: a\r\n\r\n");
        head(b"GET //double HTTP/1.1\r\nHost: a\r\n\r\n");
        for t in [
            "/a#frag",
            "/a\\b",
            "/a\"b",
            "/a<b>",
            "/a{b}",
            "/a|b",
            "/a^b",
            "/a`b",
            "/%zz",
            "/%2",
            "/%",
            "/caf\u{e9}",
        ] {
            let buf = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                err(buf.as_bytes()),
                HeadError::BadRequest("invalid request-target"),
                "{t}"
            );
        }
        err400(b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n");
        err400(b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn path_and_query_forms() {
        assert_eq!(path_and_query(b"/"), (&b"/"[..], None));
        assert_eq!(
            path_and_query(b"/a/b?c=d"),
            (&b"/a/b"[..], Some(&b"c=d"[..]))
        );
        assert_eq!(path_and_query(b"/a?"), (&b"/a"[..], Some(&b""[..])));
        assert_eq!(path_and_query(b"/a?b?c"), (&b"/a"[..], Some(&b"b?c"[..])));
        assert_eq!(path_and_query(b"*"), (&b"*"[..], None));
        assert_eq!(path_and_query(b"http://h"), (&b"/"[..], None));
        assert_eq!(
            path_and_query(b"http://h:1?q"),
            (&b"/"[..], Some(&b"q"[..]))
        );
        assert_eq!(path_and_query(b"https://h/x/y"), (&b"/x/y"[..], None));
        assert_eq!(
            path_and_query(b"http://[::1]:80/p?q"),
            (&b"/p"[..], Some(&b"q"[..]))
        );
        assert_eq!(path_and_query(b"h:443"), (&b"h:443"[..], None));
    }

    // -- limits ------------------------------------------------------------------------------

    #[test]
    fn target_too_long() {
        let limits = Limits {
            max_header_bytes: 64 * 1024,
            max_target_bytes: 100,
        };
        let ok = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(99));
        assert!(parse_head(ok.as_bytes(), &limits).unwrap().is_some());
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
        assert_eq!(
            parse_head(long.as_bytes(), &limits),
            Err(HeadError::UriTooLong)
        );
        // As soon as the request line is complete, whatever follows.
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            parse_head(line.as_bytes(), &limits),
            Err(HeadError::UriTooLong)
        );
        // While the target is still arriving.
        let partial = format!("GET /{}", "a".repeat(100));
        assert_eq!(
            parse_head(partial.as_bytes(), &limits),
            Err(HeadError::UriTooLong)
        );
        let partial = format!("GET /{}", "a".repeat(99));
        assert_eq!(parse_head(partial.as_bytes(), &limits), Ok(None));
        assert_eq!(HeadError::UriTooLong.status(), 414);
    }

    #[test]
    fn default_limits_accept_a_long_url() {
        let buf = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(7900));
        head(buf.as_bytes());
    }

    #[test]
    fn head_too_large() {
        let limits = Limits {
            max_header_bytes: 100,
            max_target_bytes: 8192,
        };
        let fill = "x".repeat(100 - 32);
        let exact = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {fill}\r\n\r\n");
        assert_eq!(exact.len(), 100);
        assert!(parse_head(exact.as_bytes(), &limits).unwrap().is_some());
        let over = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {fill}x\r\n\r\n");
        assert_eq!(
            parse_head(over.as_bytes(), &limits),
            Err(HeadError::HeaderTooLarge)
        );
        // Incomplete and already over the limit.
        let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "x".repeat(200));
        assert_eq!(
            parse_head(partial.as_bytes(), &limits),
            Err(HeadError::HeaderTooLarge)
        );
        assert_eq!(parse_head(&partial.as_bytes()[..100], &limits), Ok(None));
        assert_eq!(HeadError::HeaderTooLarge.status(), 431);
    }

    #[test]
    fn too_many_headers() {
        let fields: Vec<String> = (0..MAX_HEADERS - 1).map(|i| format!("X-{i}: v")).collect();
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        head(&get_with(&refs)); // Host + 99 = 100
        let mut more = refs.clone();
        more.push("X-last: v");
        assert_eq!(err(&get_with(&more)), HeadError::HeaderTooLarge);
    }

    #[test]
    fn method_too_long() {
        let m = "A".repeat(MAX_METHOD_BYTES);
        head(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let m = "A".repeat(MAX_METHOD_BYTES + 1);
        err400(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        err400(m.as_bytes());
    }

    // -- request line -----------------------------------------------------------------------

    #[test]
    fn malformed_request_lines() {
        for buf in [
            &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\r\nHost: a\r\n\r\n",
            b"GET\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            err400(buf);
        }
    }

    #[test]
    fn versions() {
        assert_eq!(
            err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            HeadError::VersionNotSupported
        );
        assert_eq!(
            err(b"GET / HTTP/0.9\r\n\r\n"),
            HeadError::VersionNotSupported
        );
        assert_eq!(err(b"GET / HTTP/3.0\r\n"), HeadError::VersionNotSupported);
        assert_eq!(
            err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HeadError::VersionNotSupported
        );
        assert_eq!(HeadError::VersionNotSupported.status(), 505);
        // A higher minor version of HTTP/1 is processed as HTTP/1.1 (RFC 9110 §2.5).
        let buf = b"GET /v HTTP/1.2\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let h = head(buf);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert_eq!(h.head_len, buf.len() - 3);
        assert_eq!(&buf[h.target.clone()], b"/v");
        err400(b"GET / HTTP/1.2\r\n\r\n"); // and so needs Host
        for i in 0..buf.len() - 3 {
            assert_eq!(parse(&buf[..i]), Ok(None), "prefix {i}");
        }
        for buf in [
            &b"GET / http/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
            b"GET / HTTP/10.0\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.\r\nHost: a\r\n\r\n",
            b"GET / HTTP/01.1\r\nHost: a\r\n\r\n",
            b"GET / HTTPS/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/2.0\nHost: a\r\n\r\n",
            b"GET / HTTP/1.2\nHost: a\r\n\r\n",
        ] {
            err400(buf);
        }
    }

    // -- field syntax ------------------------------------------------------------------------

    #[test]
    fn malformed_fields() {
        for buf in [
            get_with(&["X-Foo : bar"]),                     // whitespace before colon
            get_with(&["X-Foo: bar", " folded"]),           // obs-fold
            get_with(&["X-Foo: bar", "\tfolded"]),          // obs-fold
            get_with(&["X-Foo: b\x00r"]),                   // NUL
            get_with(&["X-Foo: b\x7fr"]),                   // DEL
            get_with(&["X-Foo: b\rr"]),                     // bare CR
            get_with(&["X-Fo\u{e9}: bar"]),                 // non-token name
            get_with(&[": bar"]),                           // empty name
            get_with(&["NoColon"]),                         // no colon
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n".to_vec(), // whitespace before first field
        ] {
            err400(&buf);
        }
        // obs-text in a value is allowed (RFC 9110 §5.5).
        head(&get_with(&["X-Foo: caf\u{e9}"]));
    }

    #[test]
    fn bare_lf_is_rejected() {
        err400(b"GET / HTTP/1.1\nHost: a\r\n\r\n");
        err400(b"GET / HTTP/1.1\r\nHost: a\n\r\n");
        err400(b"GET / HTTP/1.1\r\nHost: a\r\n\n");
        err400(b"GET / HTTP/1.1\nHost: a\n\n");
        // Even before the head is complete.
        err400(b"GET / HTTP/1.1\nHost: a");
    }

    // -- Host --------------------------------------------------------------------------------

    #[test]
    fn host_rules() {
        err400(b"GET / HTTP/1.1\r\n\r\n");
        err400(&get_with(&["Host: example.com"]));
        err400(&get_with(&["host: other.example"]));
        head(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n");
        err400(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n");
        for host in [
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "[::1]",
            "[::1]:80",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a%2Eb",
            "host:",
        ] {
            head(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        }
        for host in [
            "",
            "exa mple.com",
            "example.com/path",
            "user@example.com",
            "example.com:80:80",
            "example.com:8o",
            "[::1",
            "[::1]x",
            "[zz::1]",
            ":80",
            "a,b",
            "a\\b",
        ] {
            let buf = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(
                err(buf.as_bytes()),
                HeadError::BadRequest("invalid Host"),
                "{host:?}"
            );
        }
    }

    // -- Transfer-Encoding / Content-Length --------------------------------------------------

    #[test]
    fn transfer_encoding_rules() {
        let te = |v: &[&str]| {
            let fields: Vec<String> = v
                .iter()
                .map(|v| format!("Transfer-Encoding: {v}"))
                .collect();
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            parse(&post_with(&refs))
        };
        let not_impl = Err(HeadError::NotImplemented("unsupported transfer coding"));
        assert_eq!(te(&["gzip, chunked"]), not_impl);
        assert_eq!(te(&["gzip", "chunked"]), not_impl);
        assert_eq!(te(&["identity, chunked"]), not_impl);
        assert_eq!(HeadError::NotImplemented("").status(), 501);
        assert_eq!(
            te(&["gzip"]),
            Err(bad("chunked is not the final transfer coding"))
        );
        assert_eq!(
            te(&["chunked, gzip"]),
            Err(bad("chunked is not the final transfer coding"))
        );
        assert_eq!(
            te(&["identity"]),
            Err(bad("chunked is not the final transfer coding"))
        );
        assert_eq!(
            te(&["chunked, chunked"]),
            Err(bad("chunked applied more than once"))
        );
        assert_eq!(
            te(&["chunked", "chunked"]),
            Err(bad("chunked applied more than once"))
        );
        for v in [
            "",
            ",",
            ", chunked",
            "chunked,",
            "chunked, ",
            "chunked;x=y",
            "chu nked",
            "\"chunked\"",
        ] {
            assert_eq!(te(&[v]), Err(bad("malformed Transfer-Encoding")), "{v:?}");
        }
        assert_eq!(
            te(&["xchunked"]),
            Err(bad("chunked is not the final transfer coding"))
        );
        assert_eq!(
            te(&[" chunked "]).unwrap().unwrap().framing,
            BodyFraming::Chunked
        );
        assert_eq!(
            te(&["CHUNKED"]).unwrap().unwrap().framing,
            BodyFraming::Chunked
        );
        // HTTP/1.0: faulty framing whatever the value.
        err400(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        // Both framings: smuggling.
        assert_eq!(
            parse(&post_with(&[
                "Content-Length: 5",
                "Transfer-Encoding: chunked"
            ])),
            Err(bad("both Transfer-Encoding and Content-Length"))
        );
        assert_eq!(
            parse(&post_with(&[
                "Transfer-Encoding: identity",
                "Content-Length: 5"
            ])),
            Err(bad("both Transfer-Encoding and Content-Length"))
        );
    }

    #[test]
    fn content_length_rules() {
        let cl = |v: &[&str]| {
            let fields: Vec<String> = v.iter().map(|v| format!("Content-Length: {v}")).collect();
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            parse(&post_with(&refs)).map(|h| h.map(|h| h.framing))
        };
        assert_eq!(cl(&["5"]), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(cl(&["  5\t"]), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(cl(&["005"]), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(cl(&["5, 5"]), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(cl(&["5,5,5"]), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(cl(&["5", "5"]), Ok(Some(BodyFraming::Length(5))));
        assert_eq!(cl(&["5", "05"]), Ok(Some(BodyFraming::Length(5))));
        let max = u64::MAX.to_string();
        assert_eq!(cl(&[&max]), Ok(Some(BodyFraming::Length(u64::MAX))));
        for v in ["5, 6", "5,"] {
            assert_eq!(cl(&[v]).unwrap_err().status(), 400, "{v:?}");
        }
        assert_eq!(
            cl(&["5", "6"]),
            Err(bad("conflicting Content-Length values"))
        );
        assert_eq!(
            cl(&["18446744073709551616"]),
            Err(bad("Content-Length too large"))
        );
        for v in [
            "", "+5", "-5", "-0", "5 5", "0x5", "5.0", "five", "1_0", ",",
        ] {
            assert_eq!(cl(&[v]), Err(bad("invalid Content-Length")), "{v:?}");
        }
        // Content-Length on a GET is framing like any other.
        assert_eq!(
            head(&get_with(&["Content-Length: 3"])).framing,
            BodyFraming::Length(3)
        );
    }

    // -- Connection, Upgrade, Expect, WebSocket fields ----------------------------------------

    #[test]
    fn connection_tokens() {
        let h = head(&get_with(&["Connection: Keep-Alive"]));
        assert!(h.connection_keep_alive && !h.connection_close);
        let h = head(&get_with(&["Connection: foo, CLOSE ,"]));
        assert!(h.connection_close && !h.connection_keep_alive);
        let h = head(&get_with(&[
            "Connection: keep-alive",
            "connection:\tUpgrade",
        ]));
        assert!(h.connection_keep_alive && h.connection_upgrade && !h.connection_close);
        let h = head(&get_with(&["Connection: closed, upgrades"]));
        assert!(!h.connection_close && !h.connection_upgrade);
    }

    #[test]
    fn websocket_fields() {
        let buf = get_with(&[
            "Connection: Upgrade",
            "Upgrade: foo/2, WebSocket",
            "Sec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ==  ",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            "sec-websocket-extensions: x-other",
        ]);
        let h = head(&buf);
        assert!(h.connection_upgrade && h.upgrade_websocket);
        assert_eq!(&buf[h.ws_key.clone().unwrap()], b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(&buf[h.ws_version.clone().unwrap()], b"13");
        let exts: Vec<&[u8]> = h.ws_extensions.iter().map(|r| &buf[r.clone()]).collect();
        assert_eq!(
            exts,
            [
                &b"permessage-deflate; client_max_window_bits"[..],
                b"x-other"
            ]
        );

        let h = head(&get_with(&["Sec-WebSocket-Key: a", "Sec-WebSocket-Key: b"]));
        assert_eq!(h.ws_key, None);
        let h = head(&get_with(&[
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version: 8",
        ]));
        assert_eq!(h.ws_version, None);
        let h = head(&get_with(&["Upgrade: websocket/13"]));
        assert!(!h.upgrade_websocket);
    }

    #[test]
    fn expect_rules() {
        assert!(head(&post_with(&["Expect: 100-continue", "Content-Length: 1"])).expect_continue);
        assert!(head(&post_with(&["Expect: 100-Continue"])).expect_continue);
        assert!(!head(&post_with(&["Expect: "])).expect_continue);
        assert_eq!(
            err(&post_with(&["Expect: 200-ok"])),
            HeadError::ExpectationFailed
        );
        assert_eq!(
            err(&post_with(&["Expect: 100-continue, foo"])),
            HeadError::ExpectationFailed
        );
        assert_eq!(
            err(&post_with(&["Expect: 100-continue;x=1"])),
            HeadError::ExpectationFailed
        );
        assert_eq!(HeadError::ExpectationFailed.status(), 417);
        // Ignored in HTTP/1.0 (RFC 9110 §10.1.1).
        let h = head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
    }

    /// Parses `buf` and every prefix of it, as a connection does when the bytes arrive in
    /// pieces: each prefix must need more or be refused exactly as the whole is.
    fn parse_every_prefix(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
        let whole = parse_head(buf, limits);
        for cut in 0..buf.len() {
            match parse_head(&buf[..cut], limits) {
                Ok(None) => {}
                prefix => assert_eq!(
                    prefix,
                    whole,
                    "prefix of {cut} bytes of {:?}",
                    String::from_utf8_lossy(buf)
                ),
            }
        }
        whole
    }

    /// Found by fuzzing: the refusal a head got depended on how its bytes were split into
    /// reads (a limit passed in one read, a malformation after it seen in another; 414 or 431
    /// for the same over-long request line; a bare LF or a later malformation).
    #[test]
    fn refusals_do_not_depend_on_where_reads_end() {
        let small = |max_header_bytes, max_target_bytes| Limits {
            max_header_bytes,
            max_target_bytes,
        };
        // A malformation past the header limit is never seen: the limit came first.
        let buf = b"GET /a HTTP/1.1\r\nHost: aaaaaa\x01aa\r\n\r\n";
        assert_eq!(
            parse_every_prefix(buf, &small(20, 100)),
            Err(HeadError::HeaderTooLarge)
        );
        // One within the limit is reported even when the input is already over it.
        let buf = b"GET /a HTTP/1.1\r\nX Y: aaaaaaaaaaaaaa\r\n\r\n";
        assert_eq!(
            parse_every_prefix(buf, &small(20, 100)),
            Err(bad("malformed header field name"))
        );
        // A request line that alone passes the header limit is 414 while it is arriving too.
        let buf = b"GET /aaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse_every_prefix(buf, &small(20, 100)),
            Err(HeadError::UriTooLong)
        );
        // With leading empty lines the request line is measured alone: that needs up to the
        // limit again past it before 414 and 431 can be told apart.
        let buf = b"\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(parse_head(&buf[..19], &small(18, 100)), Ok(None));
        assert_eq!(
            parse_every_prefix(buf, &small(18, 100)),
            Err(HeadError::HeaderTooLarge)
        );
        let buf = b"\r\n\r\nGET /aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n";
        assert_eq!(
            parse_every_prefix(buf, &small(20, 100)),
            Err(HeadError::UriTooLong)
        );
        // A target past its limit, then a byte no target may hold.
        let buf = b"GET /abcdef\x7f HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse_every_prefix(buf, &small(1024, 4)),
            Err(HeadError::UriTooLong)
        );
        // A method past its limit, then a byte no method may hold.
        let mut buf = b"A".repeat(MAX_METHOD_BYTES + 1);
        buf.extend_from_slice(b"\x01 / HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse_every_prefix(&buf, &Limits::default()),
            Err(bad("method too long"))
        );
        // A bare LF, then a malformed field name (which httparse reports, reading on).
        let buf = b"GET / HTTP/1.1\nBad Name: x\r\n\r\n";
        assert_eq!(
            parse_every_prefix(buf, &Limits::default()),
            Err(bad("bare LF line terminator"))
        );
    }

    #[test]
    fn error_statuses_and_reasons() {
        let all = [
            (bad("x"), 400),
            (HeadError::UriTooLong, 414),
            (HeadError::HeaderTooLarge, 431),
            (HeadError::NotImplemented("y"), 501),
            (HeadError::VersionNotSupported, 505),
            (HeadError::ExpectationFailed, 417),
        ];
        for (e, status) in all {
            assert_eq!(e.status(), status);
            assert!(!e.reason().is_empty());
        }
        assert_eq!(bad("x").reason(), "x");
    }

    // -- properties --------------------------------------------------------------------------

    fn valid_request() -> impl Strategy<Value = (Vec<u8>, String, BodyFraming)> {
        let method = prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND",
        ]);
        let target = (
            "(/[A-Za-z0-9._~!$&'()*+,;=:@-]{0,12}){1,4}",
            prop::option::of("[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,16}"),
        )
            .prop_map(|(p, q)| match q {
                Some(q) => format!("{p}?{q}"),
                None => p,
            });
        let host = "[a-z0-9.-]{1,20}(:[0-9]{1,5})?";
        let fields = prop::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,30}"), 0..8);
        let framing = prop_oneof![
            Just(BodyFraming::None),
            (1u64..1_000_000).prop_map(BodyFraming::Length),
            Just(BodyFraming::Chunked),
        ];
        (
            method,
            target,
            any::<bool>(),
            host,
            fields,
            framing,
            0usize..3,
        )
            .prop_map(
                |(method, target, http10, host, fields, framing, empty_lines)| {
                    let framing = if http10 && framing == BodyFraming::Chunked {
                        BodyFraming::None
                    } else {
                        framing
                    };
                    let mut s = "\r\n".repeat(empty_lines);
                    let version = if http10 { "1.0" } else { "1.1" };
                    s.push_str(&format!(
                        "{method} {target} HTTP/{version}\r\nHost: {host}\r\n"
                    ));
                    for (name, value) in &fields {
                        s.push_str(&format!("{name}: {value}\r\n"));
                    }
                    match framing {
                        BodyFraming::Length(n) => s.push_str(&format!("Content-Length: {n}\r\n")),
                        BodyFraming::Chunked => s.push_str("Transfer-Encoding: chunked\r\n"),
                        BodyFraming::None => {}
                    }
                    s.push_str("\r\n");
                    (s.into_bytes(), target, framing)
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes, &Limits::default());
            let _ = parse_head(&bytes, &Limits { max_header_bytes: 40, max_target_bytes: 10 });
        }

        #[test]
        fn mutated_requests_never_panic(
            (buf, _, _) in valid_request(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut buf = buf;
            for (at, byte) in edits {
                let i = at.index(buf.len());
                buf[i] = byte;
            }
            if let Ok(Some(h)) = parse_head(&buf, &Limits::default()) {
                prop_assert!(h.head_len <= buf.len());
                prop_assert!(h.target.end <= h.head_len);
            }
        }

        #[test]
        fn valid_request_any_split(
            (buf, target, framing) in valid_request(),
            tail in prop::collection::vec(any::<u8>(), 0..32),
        ) {
            let limits = Limits::default();
            for i in 0..buf.len() {
                prop_assert_eq!(parse_head(&buf[..i], &limits), Ok(None), "prefix {}", i);
            }
            let whole = parse_head(&buf, &limits).unwrap().unwrap();
            prop_assert_eq!(whole.head_len, buf.len());
            prop_assert_eq!(&buf[whole.target.clone()], target.as_bytes());
            prop_assert_eq!(whole.framing, framing);
            // Whatever follows the head (a body, a pipelined request) changes nothing.
            let mut with_tail = buf.clone();
            with_tail.extend_from_slice(&tail);
            prop_assert_eq!(parse_head(&with_tail, &limits), Ok(Some(whole)));
        }
    }
}
