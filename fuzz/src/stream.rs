//! Owns the input grammars of the connection targets: the fuzzer's bytes decode (through
//! `arbitrary`) into a list of events, whose data are HTTP requests, WebSocket handshakes,
//! client frames and raw bytes, which this module encodes into the byte stream a client would
//! send. Raw parts keep every byte stream reachable; the structured parts get the fuzzer past
//! the parsers into the state machines (bodies, keep-alive, upgrades, fragmented and compressed
//! messages, close handshakes) within a few mutations.

use crate::drive::Event;
use arbitrary::Arbitrary;
use flate2::{Compress, Compression, FlushCompress};

/// The most bytes one stream may hold (repeats stop there), so that one input stays fast. A
/// compressed message counts for what it inflates to: that is the work it makes. Room for a
/// message past the targets' default `max_message_bytes` (64 KiB) and for output past
/// `OUTPUT_CAP` (16 KiB under the fuzzer). The 320 KiB this was, beside the full 256 KiB cap,
/// made `ws_conn`'s inputs about three times slower.
const STREAM_BUDGET: usize = 128 << 10;

/// A valid `Sec-WebSocket-Key` (RFC 6455 §1.3's example).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[derive(Arbitrary, Debug)]
pub enum HttpEvent {
    Data(Vec<HttpPart>),
    Advance(u16),
    Stop,
    Drain,
}

#[derive(Arbitrary, Debug)]
pub enum WsEvent {
    Data(Vec<WsPart>),
    Advance(u16),
    Stop,
    Drain,
}

#[derive(Arbitrary, Debug)]
pub enum HttpPart {
    Raw(Vec<u8>),
    Request(Request),
    Upgrade(Upgrade),
    Ws(WsPart),
    Repeat(u8, Box<HttpPart>),
}

#[derive(Arbitrary, Debug)]
pub enum WsPart {
    Raw(Vec<u8>),
    Message(Message),
    Frame(Frame),
    Repeat(u8, Box<WsPart>),
}

#[derive(Arbitrary, Debug)]
pub struct Request {
    method: MethodSpec,
    path: PathSpec,
    version: VersionSpec,
    host: HostSpec,
    headers: Vec<HeaderSpec>,
    body: BodySpec,
}

#[derive(Arbitrary, Debug)]
enum MethodSpec {
    Get,
    Head,
    Post,
    Put,
    Options,
    Delete,
    Connect,
    Brew,
    LowerGet,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum PathSpec {
    Plaintext,
    Echo,
    Healthz,
    Metrics,
    Stream(u16),
    Ws,
    Star,
    NotFound,
    Absolute,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum VersionSpec {
    V11,
    V10,
    V19,
    V20,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum HostSpec {
    Plain,
    Missing,
    Twice,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderSpec {
    ConnectionClose,
    ConnectionKeepAlive,
    ConnectionUpgrade,
    UpgradeWebsocket,
    ContentLength(u32),
    Chunked,
    GzipChunked,
    Expect100,
    ExpectOther,
    WsKey,
    WsVersion(u8),
    WsExtensions(Vec<ExtOffer>),
    Raw(String, String),
}

#[derive(Arbitrary, Debug)]
enum BodySpec {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>, bool),
    Raw(Vec<u8>),
}

/// `GET /ws` with a valid handshake, the given extension offers and extra fields.
#[derive(Arbitrary, Debug)]
pub struct Upgrade {
    offers: Vec<ExtOffer>,
    extra: Vec<HeaderSpec>,
}

#[derive(Arbitrary, Debug)]
enum ExtOffer {
    Plain,
    NoContextTakeover,
    ClientNoContextTakeover,
    ServerNoContextTakeover,
    WindowBits(u8, Option<u8>),
    Raw(String),
}

/// A whole message, as a conforming client sends it: masked, fragmented as `fragments` says,
/// compressed (RSV1 on the first frame) if asked.
#[derive(Arbitrary, Debug)]
pub struct Message {
    binary: bool,
    compressed: bool,
    payload: Payload,
    fragments: Vec<u8>,
    mask: [u8; 4],
    /// A ping sent between the first and second fragment.
    ping_inside: Option<Vec<u8>>,
}

/// One frame with any header: `quirks` turns on, rarely, what a conforming client never does
/// (reserved bits, no mask, a 64-bit length for a short payload).
#[derive(Arbitrary, Debug)]
pub struct Frame {
    fin: bool,
    op: Op,
    rsv: u8,
    quirks: u8,
    mask: [u8; 4],
    payload: Payload,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    Reserved(u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Text(String),
    /// Copies of a byte: large messages (the default `max_message_bytes` the targets use is
    /// 64 KiB, so this reaches past it), and compression bombs. The stream budget bounds what
    /// repeats of it add up to.
    Fill(u8, u16),
    /// A close body: code and reason.
    Close(u16, String),
    /// A close body without a reason.
    CloseCode(u16),
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Text(s) => s.as_bytes().to_vec(),
            Payload::Fill(b, n) => vec![*b; usize::from(*n) + 1],
            Payload::Close(code, reason) => [&code.to_be_bytes()[..], reason.as_bytes()].concat(),
            Payload::CloseCode(code) => code.to_be_bytes().to_vec(),
        }
    }
}

/// Turns parts into bytes; holds the client's compressor, like a client would.
pub struct Encoder {
    /// Made on first use: a deflate context is a few hundred KiB, and most streams need none.
    deflater: Option<Compress>,
    /// The client resets its compressor after each message (it offered, or was told,
    /// client_no_context_takeover).
    reset_each_message: bool,
    budget: usize,
}

impl Encoder {
    pub fn new(reset_each_message: bool) -> Encoder {
        Encoder {
            deflater: None,
            reset_each_message,
            budget: STREAM_BUDGET,
        }
    }

    pub fn http_events(&mut self, events: &[HttpEvent]) -> Vec<Event> {
        events
            .iter()
            .map(|e| match e {
                HttpEvent::Data(parts) => {
                    let mut out = Vec::new();
                    for p in parts {
                        self.http_part(p, &mut out);
                    }
                    Event::Data(out)
                }
                HttpEvent::Advance(ms) => Event::Advance(u64::from(*ms) * 4),
                HttpEvent::Stop => Event::Stop,
                HttpEvent::Drain => Event::Drain,
            })
            .collect()
    }

    pub fn ws_events(&mut self, events: &[WsEvent]) -> Vec<Event> {
        events
            .iter()
            .map(|e| match e {
                WsEvent::Data(parts) => {
                    let mut out = Vec::new();
                    for p in parts {
                        self.ws_part(p, &mut out);
                    }
                    Event::Data(out)
                }
                WsEvent::Advance(ms) => Event::Advance(u64::from(*ms) * 4),
                WsEvent::Stop => Event::Stop,
                WsEvent::Drain => Event::Drain,
            })
            .collect()
    }

    fn push(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let n = bytes.len().min(self.budget);
        out.extend_from_slice(&bytes[..n]);
        self.budget -= n;
    }

    fn http_part(&mut self, part: &HttpPart, out: &mut Vec<u8>) {
        match part {
            HttpPart::Raw(b) => self.push(out, b),
            HttpPart::Request(r) => {
                let bytes = request(r);
                self.push(out, &bytes);
            }
            HttpPart::Upgrade(u) => {
                let bytes = upgrade(u);
                self.push(out, &bytes);
            }
            HttpPart::Ws(w) => self.ws_part(w, out),
            HttpPart::Repeat(n, p) => {
                let mut once = Vec::new();
                let before = self.budget;
                self.http_part(p, &mut once);
                self.repeat(out, &once, before - self.budget, *n);
            }
        }
    }

    fn ws_part(&mut self, part: &WsPart, out: &mut Vec<u8>) {
        match part {
            WsPart::Raw(b) => self.push(out, b),
            WsPart::Message(m) => {
                let bytes = self.message(m);
                self.push(out, &bytes);
            }
            WsPart::Frame(f) => {
                let bytes = frame(f);
                self.push(out, &bytes);
            }
            WsPart::Repeat(n, p) => {
                let mut once = Vec::new();
                let before = self.budget;
                self.ws_part(p, &mut once);
                self.repeat(out, &once, before - self.budget, *n);
            }
        }
    }

    /// `once` (already encoded and counted) `n` more times, each costing `cost` of the budget.
    fn repeat(&mut self, out: &mut Vec<u8>, once: &[u8], cost: usize, n: u8) {
        out.extend_from_slice(once);
        for _ in 0..n {
            if once.is_empty() || self.budget < cost.max(once.len()) {
                break;
            }
            out.extend_from_slice(once);
            self.budget -= cost.max(once.len());
        }
    }

    fn message(&mut self, m: &Message) -> Vec<u8> {
        let plain = m.payload.bytes();
        let body = if m.compressed {
            let body = self.compress(&plain);
            self.budget = self
                .budget
                .saturating_sub(plain.len().saturating_sub(body.len()));
            body
        } else {
            plain
        };
        let opcode = if m.binary { 0x2 } else { 0x1 };
        // Fragment lengths cycle through `fragments`; an empty list is one frame.
        let mut frames: Vec<&[u8]> = Vec::new();
        let mut rest = &body[..];
        let mut i = 0;
        while !m.fragments.is_empty() && !rest.is_empty() && frames.len() < 64 {
            let len = usize::from(m.fragments[i % m.fragments.len()]) * 16;
            i += 1;
            let (a, b) = rest.split_at(len.min(rest.len()));
            frames.push(a);
            rest = b;
        }
        frames.push(rest);
        let mut out = Vec::new();
        let last = frames.len() - 1;
        for (k, f) in frames.iter().enumerate() {
            let op = if k == 0 { opcode } else { 0x0 };
            let rsv = if k == 0 && m.compressed { 0b100 } else { 0 };
            write_frame(&mut out, k == last, rsv, op, Some(m.mask), f, false);
            if k == 0
                && k != last
                && let Some(ping) = &m.ping_inside
            {
                let ping = &ping[..ping.len().min(125)];
                write_frame(&mut out, true, 0, 0x9, Some(m.mask), ping, false);
            }
        }
        out
    }

    /// Raw deflate with a sync flush, less the 4-byte tail (RFC 7692 §7.2.1).
    fn compress(&mut self, plain: &[u8]) -> Vec<u8> {
        let deflater = self
            .deflater
            .get_or_insert_with(|| Compress::new(Compression::fast(), false));
        if self.reset_each_message {
            deflater.reset();
        }
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        let start_in = deflater.total_in();
        loop {
            let consumed = (deflater.total_in() - start_in) as usize;
            out.reserve(plain.len() / 4 + 64);
            deflater
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate");
            let consumed = (deflater.total_in() - start_in) as usize;
            if consumed == plain.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&[0, 0, 0xff, 0xff]) {
            out.truncate(out.len() - 4);
        }
        out
    }
}

fn frame(f: &Frame) -> Vec<u8> {
    let opcode = match f.op {
        Op::Continuation => 0x0,
        Op::Text => 0x1,
        Op::Binary => 0x2,
        Op::Close => 0x8,
        Op::Ping => 0x9,
        Op::Pong => 0xA,
        Op::Reserved(n) => [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF][usize::from(n) % 10],
    };
    let rsv = if f.quirks & 0x03 == 0x03 {
        f.rsv & 7
    } else {
        0
    };
    let mask = (f.quirks & 0x0C != 0x0C).then_some(f.mask);
    let long = f.quirks & 0x30 == 0x30;
    let mut out = Vec::new();
    write_frame(&mut out, f.fin, rsv, opcode, mask, &f.payload.bytes(), long);
    out
}

/// A client frame: header (64-bit length if `long`, else the shortest), mask, masked payload.
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    long: bool,
) {
    out.push((u8::from(fin) << 7) | (rsv << 4) | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if long || len > 0xFFFF {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    } else if len >= 126 {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | len as u8);
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

fn request(r: &Request) -> Vec<u8> {
    let method = match &r.method {
        MethodSpec::Get => "GET",
        MethodSpec::Head => "HEAD",
        MethodSpec::Post => "POST",
        MethodSpec::Put => "PUT",
        MethodSpec::Options => "OPTIONS",
        MethodSpec::Delete => "DELETE",
        MethodSpec::Connect => "CONNECT",
        MethodSpec::Brew => "BREW",
        MethodSpec::LowerGet => "get",
        MethodSpec::Raw(s) => s,
    };
    let stream;
    let path = match &r.path {
        PathSpec::Plaintext => "/plaintext",
        PathSpec::Echo => "/echo",
        PathSpec::Healthz => "/healthz",
        PathSpec::Metrics => "/metrics",
        PathSpec::Stream(n) => {
            stream = format!("/stream?chunks={}", n % 1000);
            &stream
        }
        PathSpec::Ws => "/ws",
        PathSpec::Star => "*",
        PathSpec::NotFound => "/nope",
        PathSpec::Absolute => "http://a:80/plaintext?x=1",
        PathSpec::Raw(s) => s,
    };
    let version = match &r.version {
        VersionSpec::V11 => "HTTP/1.1",
        VersionSpec::V10 => "HTTP/1.0",
        VersionSpec::V19 => "HTTP/1.9",
        VersionSpec::V20 => "HTTP/2.0",
        VersionSpec::Raw(s) => s,
    };
    let mut s = format!("{method} {path} {version}\r\n").into_bytes();
    match &r.host {
        HostSpec::Plain => s.extend_from_slice(b"Host: a\r\n"),
        HostSpec::Missing => {}
        HostSpec::Twice => s.extend_from_slice(b"Host: a\r\nHost: b\r\n"),
        HostSpec::Raw(h) => s.extend_from_slice(format!("Host: {h}\r\n").as_bytes()),
    }
    for h in &r.headers {
        header(h, &mut s);
    }
    match &r.body {
        BodySpec::None => s.extend_from_slice(b"\r\n"),
        BodySpec::Length(b) => {
            s.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            s.extend_from_slice(b);
        }
        BodySpec::Chunked(chunks, trailer) => {
            s.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                s.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                s.extend_from_slice(c);
                s.extend_from_slice(b"\r\n");
            }
            s.extend_from_slice(b"0\r\n");
            if *trailer {
                s.extend_from_slice(b"X-Trailer: yes\r\n");
            }
            s.extend_from_slice(b"\r\n");
        }
        BodySpec::Raw(b) => {
            s.extend_from_slice(b"\r\n");
            s.extend_from_slice(b);
        }
    }
    s
}

fn header(h: &HeaderSpec, s: &mut Vec<u8>) {
    let line = match h {
        HeaderSpec::ConnectionClose => "Connection: close".to_string(),
        HeaderSpec::ConnectionKeepAlive => "Connection: keep-alive".to_string(),
        HeaderSpec::ConnectionUpgrade => "Connection: Upgrade".to_string(),
        HeaderSpec::UpgradeWebsocket => "Upgrade: websocket".to_string(),
        HeaderSpec::ContentLength(n) => format!("Content-Length: {n}"),
        HeaderSpec::Chunked => "Transfer-Encoding: chunked".to_string(),
        HeaderSpec::GzipChunked => "Transfer-Encoding: gzip, chunked".to_string(),
        HeaderSpec::Expect100 => "Expect: 100-continue".to_string(),
        HeaderSpec::ExpectOther => "Expect: x-other".to_string(),
        HeaderSpec::WsKey => format!("Sec-WebSocket-Key: {WS_KEY}"),
        HeaderSpec::WsVersion(v) => format!("Sec-WebSocket-Version: {v}"),
        HeaderSpec::WsExtensions(offers) => {
            format!("Sec-WebSocket-Extensions: {}", offers_value(offers))
        }
        HeaderSpec::Raw(n, v) => format!("{n}: {v}"),
    };
    s.extend_from_slice(line.as_bytes());
    s.extend_from_slice(b"\r\n");
}

fn offers_value(offers: &[ExtOffer]) -> String {
    let values: Vec<String> = offers
        .iter()
        .map(|o| match o {
            ExtOffer::Plain => "permessage-deflate".to_string(),
            ExtOffer::NoContextTakeover => {
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                    .to_string()
            }
            ExtOffer::ClientNoContextTakeover => {
                "permessage-deflate; client_no_context_takeover".to_string()
            }
            ExtOffer::ServerNoContextTakeover => {
                "permessage-deflate; server_no_context_takeover".to_string()
            }
            ExtOffer::WindowBits(s, c) => {
                let mut v = format!("permessage-deflate; server_max_window_bits={}", 8 + s % 8);
                match c {
                    Some(c) => v.push_str(&format!("; client_max_window_bits={}", 8 + c % 8)),
                    None => v.push_str("; client_max_window_bits"),
                }
                v
            }
            ExtOffer::Raw(s) => s.clone(),
        })
        .collect();
    values.join(", ")
}

fn upgrade(u: &Upgrade) -> Vec<u8> {
    let mut s = format!(
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    )
    .into_bytes();
    if !u.offers.is_empty() {
        s.extend_from_slice(
            format!("Sec-WebSocket-Extensions: {}\r\n", offers_value(&u.offers)).as_bytes(),
        );
    }
    for h in &u.extra {
        header(h, &mut s);
    }
    s.extend_from_slice(b"\r\n");
    s
}
