//! A raw HTTP/2 client for tests that need to send what no well-behaved client would (bad
//! frames, floods, tiny windows) and to see every frame the server answers with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const HTTP_1_1_REQUIRED: u32 = 0xd;

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

pub struct Client {
    pub s: TcpStream,
    decoder: holdfast::proto::h2::hpack::Decoder,
}

impl Client {
    /// A client on a connection the test already started.
    pub fn from_stream(s: TcpStream) -> Client {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Client {
            s,
            decoder: holdfast::proto::h2::hpack::Decoder::new(4096),
        }
    }

    /// Connects and sends the preface and an empty SETTINGS frame (plus `settings`).
    pub fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Client {
        let mut c = Client::from_stream(TcpStream::connect(addr).unwrap());
        c.raw(PREFACE);
        let mut p = Vec::new();
        for (id, v) in settings {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        c.send(SETTINGS, 0, 0, &p);
        c
    }

    pub fn raw(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut f = Vec::with_capacity(9 + payload.len());
        let len = payload.len();
        f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        // The server may close first (that is what some tests provoke): a failed write is
        // seen by the read that follows.
        let _ = self.s.write_all(&f);
    }

    /// A GET (or `method`) for `path` on `stream`, its header block in one HEADERS frame.
    pub fn request(&mut self, stream: u32, method: &str, path: &str, end_stream: bool) {
        let block = block(&[
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
        ]);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, &block);
    }

    /// The next frame, or None when the connection closed (or nothing came in 5 s).
    pub fn frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.s.read_exact(&mut head).ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        self.s.read_exact(&mut payload).ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload,
        })
    }

    /// The next frame that is not SETTINGS, a SETTINGS ACK or a WINDOW_UPDATE.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            let f = self.frame()?;
            if f.kind != SETTINGS && f.kind != WINDOW_UPDATE {
                return Some(f);
            }
        }
    }

    /// The next frame of kind `kind`, skipping others.
    pub fn until(&mut self, kind: u8) -> Option<Frame> {
        loop {
            let f = self.frame()?;
            if f.kind == kind {
                return Some(f);
            }
        }
    }

    /// Decodes a HEADERS frame's block (no padding or priority: the server sends neither).
    pub fn fields(&mut self, f: &Frame) -> Vec<(String, String)> {
        let mut got = Vec::new();
        self.decoder
            .decode(&f.payload, |n, v| {
                let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                got.push((s(n), s(v)));
            })
            .unwrap();
        got
    }

    /// Reads one whole response on `stream`: its status and body.
    pub fn response(&mut self, stream: u32) -> (u16, Vec<u8>) {
        let mut status = 0;
        let mut body = Vec::new();
        loop {
            let f = self.next().expect("a response");
            assert_eq!(f.stream, stream, "{f:?}");
            match f.kind {
                HEADERS => {
                    let fields = self.fields(&f);
                    status = fields
                        .iter()
                        .find(|(n, _)| n == ":status")
                        .unwrap()
                        .1
                        .parse()
                        .unwrap();
                }
                DATA => body.extend_from_slice(&f.payload),
                _ => panic!("unexpected {f:?}"),
            }
            if f.flags & END_STREAM != 0 {
                return (status, body);
            }
        }
    }

    /// Whether the server closed the connection (after whatever it sent last).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A header block of literal fields, never indexed, no Huffman (RFC 7541 §6.2.3).
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0x10);
        string(&mut out, n.as_bytes());
        string(&mut out, v.as_bytes());
    }
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    // The length in a 7-bit prefix, continued in 7-bit groups (RFC 7541 §5.1).
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}
