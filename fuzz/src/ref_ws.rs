//! Owns the WebSocket references of the connection targets, written apart from
//! `proto::ws::frame` and `proto::ws::conn`:
//! - [`check_server_output`] reads what the server sent as a client would and asserts it is a
//!   well-formed server stream (RFC 6455 §5, RFC 7692): unmasked frames with the shortest length
//!   encoding, no fragments (the server sends whole messages), only opcodes it may send, RSV1
//!   only on data frames and only with deflate negotiated, compressed messages that inflate,
//!   text that is UTF-8, control payloads of at most 125 bytes, close codes a server may send,
//!   and nothing after the close frame.
//! - [`client_messages`] reads the client's stream the lenient way: the messages and pings it
//!   carries up to the first frame a server must refuse. The server's echoes and pongs must be a
//!   prefix of these, byte for byte.

use flate2::{Decompress, FlushDecompress, Status};
use holdfast::proto::ws::deflate::Params;

/// Close codes a server may put on the wire (RFC 6455 §7.4): never 1004–1006 or 1015, nothing
/// unassigned (1016–2999) and nothing below 1000 or from 5000.
pub fn server_may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What the server's stream held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerStream {
    /// Data messages (opcode, payload after inflating).
    pub messages: Vec<(u8, Vec<u8>)>,
    pub pongs: Vec<Vec<u8>>,
    pub pings: usize,
    /// The close frame's code (None inside: an empty close).
    pub close: Option<Option<u16>>,
}

/// Why the reference inflater stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateStop {
    /// More than the cap came out.
    TooBig,
    /// Not a deflate stream.
    Corrupt,
}

/// One inflater across messages unless `reset` (no context takeover), fed as RFC 7692 §7.2.2
/// says: the payload, then the 4 bytes of an empty stored block; a final block ends a message's
/// stream (the next starts afresh). Output grows in small steps up to one byte past the cap.
pub struct Inflater {
    d: Decompress,
    reset: bool,
}

impl Inflater {
    pub fn new(reset: bool) -> Inflater {
        Inflater {
            d: Decompress::new(false),
            reset,
        }
    }

    /// The message, or None if it is corrupt or inflates past `cap`.
    pub fn inflate(&mut self, payload: &[u8], cap: usize) -> Option<Vec<u8>> {
        let (out, stop) = self.inflate_detailed(payload, cap);
        stop.is_none().then_some(out)
    }

    /// What came out (at most `cap` + 1 bytes), and why it stopped short, if it did.
    pub fn inflate_detailed(
        &mut self,
        payload: &[u8],
        cap: usize,
    ) -> (Vec<u8>, Option<InflateStop>) {
        if self.reset {
            self.d.reset(false);
        }
        let mut out = Vec::new();
        if payload.is_empty() {
            return (out, None);
        }
        let input = [payload, &[0, 0, 0xff, 0xff]].concat();
        let start_in = self.d.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve_exact(4096.min(cap + 1 - out.len()).max(1));
            }
            let used = (self.d.total_in() - start_in) as usize;
            let before = (self.d.total_in(), self.d.total_out());
            let status = self
                .d
                .decompress_vec(&input[used..], &mut out, FlushDecompress::Sync);
            // Past the cap before the data went bad (zlib may do both in one call): too big.
            if out.len() > cap {
                return (out, Some(InflateStop::TooBig));
            }
            let Ok(status) = status else {
                return (out, Some(InflateStop::Corrupt));
            };
            if status == Status::StreamEnd {
                self.d.reset(false);
                return (out, None);
            }
            let used = (self.d.total_in() - start_in) as usize;
            if before == (self.d.total_in(), self.d.total_out()) && out.len() < out.capacity() {
                // No progress with room to write: all input is in, or it is not deflate.
                let stop = (used < input.len()).then_some(InflateStop::Corrupt);
                return (out, stop);
            }
        }
    }
}

/// Reads the server's frames; panics at the first thing a server must not send.
pub fn check_server_output(bytes: &[u8], deflate: Option<Params>) -> ServerStream {
    let mut s = ServerStream::default();
    let mut inflater = deflate.map(|p| Inflater::new(p.server_no_context_takeover));
    let mut pos = 0;
    while pos < bytes.len() {
        assert!(s.close.is_none(), "bytes after the server's close frame");
        let rest = &bytes[pos..];
        assert!(rest.len() >= 2, "a truncated frame header");
        let (b0, b1) = (rest[0], rest[1]);
        assert_eq!(b1 & 0x80, 0, "a masked server frame");
        let (len, header) = match b1 & 0x7f {
            126 => {
                let n = u16::from_be_bytes([rest[2], rest[3]]) as usize;
                assert!(n >= 126, "a 16-bit length for {n} bytes");
                (n, 4)
            }
            127 => {
                let n = u64::from_be_bytes(rest[2..10].try_into().unwrap()) as usize;
                assert!(n > 0xFFFF, "a 64-bit length for {n} bytes");
                (n, 10)
            }
            n => (usize::from(n), 2),
        };
        assert!(rest.len() >= header + len, "a truncated frame");
        let payload = &rest[header..header + len];
        pos += header + len;
        let (fin, rsv, opcode) = (b0 & 0x80 != 0, (b0 >> 4) & 7, b0 & 0x0f);
        assert!(fin, "a fragmented server frame");
        assert_eq!(rsv & 0b011, 0, "RSV2/RSV3 set");
        let compressed = rsv & 0b100 != 0;
        if compressed {
            assert!(deflate.is_some(), "RSV1 without permessage-deflate");
            assert!(matches!(opcode, 1 | 2), "RSV1 on a control frame");
        }
        match opcode {
            1 | 2 => {
                let plain = if compressed {
                    let i = inflater.as_mut().unwrap();
                    i.inflate(payload, usize::MAX - 1)
                        .expect("the server's compressed message inflates")
                } else {
                    payload.to_vec()
                };
                if opcode == 1 {
                    assert!(
                        std::str::from_utf8(&plain).is_ok(),
                        "text that is not UTF-8"
                    );
                }
                s.messages.push((opcode, plain));
            }
            8..=10 => {
                assert!(len <= 125, "a control frame of {len} bytes");
                match opcode {
                    8 => {
                        let code = match payload {
                            [] => None,
                            [_] => panic!("a close frame with a 1-byte payload"),
                            [a, b, reason @ ..] => {
                                let code = u16::from_be_bytes([*a, *b]);
                                assert!(server_may_send(code), "close code {code}");
                                assert!(std::str::from_utf8(reason).is_ok());
                                Some(code)
                            }
                        };
                        s.close = Some(code);
                    }
                    9 => {
                        assert_eq!(len, 8, "the server's pings carry its clock");
                        s.pings += 1;
                    }
                    _ => s.pongs.push(payload.to_vec()),
                }
            }
            _ => panic!("the server sent opcode {opcode}"),
        }
    }
    s
}

/// What a client stream carries, read leniently.
#[derive(Debug, Default)]
pub struct ClientStream {
    pub messages: Vec<(u8, Vec<u8>)>,
    pub pings: Vec<Vec<u8>>,
}

/// Reads client frames until the first that a server must refuse (unmasked, reserved bits or
/// opcodes, a bad control frame, bad fragmentation, a close) or that is incomplete, collecting
/// whole messages (inflated, capped at `cap`) and ping payloads.
pub fn client_messages(bytes: &[u8], deflate: Option<Params>, cap: usize) -> ClientStream {
    let mut s = ClientStream::default();
    let mut inflater = deflate.map(|p| Inflater::new(p.client_no_context_takeover));
    let mut message: Option<(u8, bool, Vec<u8>)> = None;
    let mut pos = 0;
    loop {
        let rest = &bytes[pos..];
        if rest.len() < 2 {
            return s;
        }
        let (b0, b1) = (rest[0], rest[1]);
        if b1 & 0x80 == 0 {
            return s;
        }
        let (len, mut header) = match b1 & 0x7f {
            126 if rest.len() >= 4 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()), 10),
            126 | 127 => return s,
            n => (u64::from(n), 2),
        };
        if rest.len() < header + 4 || ((rest.len() - header - 4) as u64) < len {
            return s;
        }
        let mask: [u8; 4] = rest[header..header + 4].try_into().unwrap();
        header += 4;
        let len = len as usize;
        let payload: Vec<u8> = rest[header..header + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        pos += header + len;
        let (fin, rsv, opcode) = (b0 & 0x80 != 0, (b0 >> 4) & 7, b0 & 0x0f);
        let rsv1 = rsv == 0b100;
        if rsv & 0b011 != 0 || (rsv1 && (deflate.is_none() || !matches!(opcode, 1 | 2))) {
            return s;
        }
        match opcode {
            8..=10 if !fin || len > 125 => return s,
            9 => s.pings.push(payload),
            10 => {}
            8 => return s,
            1 | 2 if message.is_none() => message = Some((opcode, rsv1, payload)),
            0 if message.is_some() => message.as_mut().unwrap().2.extend_from_slice(&payload),
            _ => return s,
        }
        if fin && matches!(opcode, 0..=2) {
            let (op, compressed, data) = message.take().unwrap();
            let plain = if compressed {
                match inflater.as_mut().unwrap().inflate(&data, cap) {
                    Some(p) => p,
                    None => return s,
                }
            } else {
                data
            };
            s.messages.push((op, plain));
        }
    }
}
