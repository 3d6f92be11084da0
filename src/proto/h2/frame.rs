//! Owns HTTP/2's framing layer (RFC 9113 §4, §6) as pure bytes: the frame header, the frame
//! types, flags, error codes and settings a server reads and writes, and the writers of the
//! frames it sends. Nothing here knows about streams or the connection's state.

/// What a client sends first (RFC 9113 §3.4), before its SETTINGS.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The 9-byte header in front of every frame.
pub const HEADER_LEN: usize = 9;

/// The largest frame payload either side may send before SETTINGS_MAX_FRAME_SIZE says more
/// (and the size we advertise: larger frames buy nothing for the small messages we carry).
pub const DEFAULT_MAX_FRAME: usize = 16_384;

/// The flow-control window every stream and the connection start with (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;

/// The largest a flow-control window may grow (RFC 9113 §6.9.1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    NoError = 0x0,
    ProtocolError = 0x1,
    InternalError = 0x2,
    FlowControlError = 0x3,
    SettingsTimeout = 0x4,
    StreamClosed = 0x5,
    FrameSizeError = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    CompressionError = 0x9,
    ConnectError = 0xa,
    EnhanceYourCalm = 0xb,
    InadequateSecurity = 0xc,
    Http11Required = 0xd,
}

impl ErrorCode {
    /// As `/metrics` labels it.
    pub fn label(self) -> &'static str {
        crate::outcome::H2_ERROR_LABELS[self as usize]
    }
}

/// Setting identifiers (RFC 9113 §6.5.2; RFC 8441 §3).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// A frame's header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// The stream, the reserved bit cleared (RFC 9113 §4.1: ignored on receipt).
    pub stream: u32,
}

impl Head {
    /// The header at the start of `b`, if nine bytes are there.
    pub fn parse(b: &[u8]) -> Option<Head> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Head {
            len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Appends a frame header.
pub fn write_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Appends a SETTINGS frame with these values.
pub fn write_settings(out: &mut Vec<u8>, values: &[(u16, u32)]) {
    write_head(out, values.len() * 6, kind::SETTINGS, 0, 0);
    for (id, v) in values {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
}

pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_head(out, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn write_ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    write_head(out, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    out.extend_from_slice(&payload);
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode) {
    write_head(out, 8, kind::GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(&(code as u32).to_be_bytes());
}

pub fn write_rst(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_head(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&(code as u32).to_be_bytes());
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & 0x7fff_ffff).to_be_bytes());
}

/// Appends a header block as one HEADERS frame and as many CONTINUATION frames as
/// `max_frame` makes it need.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    write_head(out, first.len(), kind::HEADERS, flags, stream);
    out.extend_from_slice(first);
    while let Some(c) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        write_head(out, c.len(), kind::CONTINUATION, flags, stream);
        out.extend_from_slice(c);
    }
}

pub fn write_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    write_head(
        out,
        data.len(),
        kind::DATA,
        if end_stream { flag::END_STREAM } else { 0 },
        stream,
    );
    out.extend_from_slice(data);
}

/// The payload of a frame without its padding (RFC 9113 §6.1, §6.2), or None when the pad
/// length is longer than the payload (a PROTOCOL_ERROR).
pub fn unpad(head: &Head, payload: &[u8]) -> Option<(usize, usize)> {
    if !head.has(flag::PADDED) {
        return Some((0, payload.len()));
    }
    let pad = usize::from(*payload.first()?);
    let end = payload.len().checked_sub(pad)?;
    (end >= 1).then_some((1, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_the_reserved_bit_is_ignored() {
        let mut out = Vec::new();
        write_head(&mut out, 0x01_02_03, kind::HEADERS, flag::END_HEADERS, 7);
        let h = Head::parse(&out).unwrap();
        assert_eq!(
            h,
            Head {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS,
                stream: 7
            }
        );
        out[5] |= 0x80;
        assert_eq!(Head::parse(&out).unwrap().stream, 7);
        assert!(Head::parse(&out[..8]).is_none());
    }

    #[test]
    fn a_long_header_block_continues() {
        let mut out = Vec::new();
        write_headers(&mut out, 3, &[9; 25], true, 10);
        let a = Head::parse(&out).unwrap();
        assert_eq!(
            (a.kind, a.len, a.flags),
            (kind::HEADERS, 10, flag::END_STREAM)
        );
        let b = Head::parse(&out[19..]).unwrap();
        assert_eq!((b.kind, b.len, b.flags), (kind::CONTINUATION, 10, 0));
        let c = Head::parse(&out[38..]).unwrap();
        assert_eq!(
            (c.kind, c.len, c.flags),
            (kind::CONTINUATION, 5, flag::END_HEADERS)
        );
        assert_eq!(out.len(), 3 * 9 + 25);
    }

    #[test]
    fn padding_is_taken_off_and_too_much_refused() {
        let h = Head {
            len: 5,
            kind: kind::DATA,
            flags: flag::PADDED,
            stream: 1,
        };
        assert_eq!(unpad(&h, &[2, b'a', b'b', 0, 0]), Some((1, 3)));
        assert_eq!(unpad(&h, &[4, b'a', 0, 0, 0]), Some((1, 1)));
        assert_eq!(unpad(&h, &[5, 0, 0, 0, 0]), None);
        assert_eq!(unpad(&h, &[]), None);
    }
}
