//! Owns the WebSocket frame format (RFC 6455 §5.2): parsing a header in place from received
//! bytes, writing server headers, and unmasking. Unmasking appends to the destination buffer as
//! it goes, so an echoed message is copied once, from the receive buffer straight into the
//! output, with no intermediate payload buffer.

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the top three bits of a nibble (0 unless an extension defines them).
    pub rsv: u8,
    pub opcode: u8,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes of header before the payload.
    pub header_len: usize,
}

impl FrameHeader {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// The one header error detectable without context: a 64-bit length with its top bit set
/// (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength;

/// Parses a frame header at the start of `buf`. `Ok(None)`: more bytes needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, BadLength> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut header_len) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let n = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if n >> 63 != 0 {
                return Err(BadLength);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        if buf.len() < header_len + 4 {
            return Ok(None);
        }
        let m: [u8; 4] = buf[header_len..header_len + 4].try_into().expect("4 bytes");
        header_len += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0F,
        mask,
        payload_len,
        header_len,
    }))
}

/// Appends an unmasked server frame header (servers never mask, RFC 6455 §5.1).
pub fn write_header(out: &mut Vec<u8>, fin: bool, rsv: u8, opcode: u8, len: usize) {
    let b0 = (u8::from(fin) << 7) | (rsv & 0x7) << 4 | (opcode & 0x0F);
    if len < 126 {
        out.extend_from_slice(&[b0, len as u8]);
    } else if len <= u16::MAX as usize {
        out.extend_from_slice(&[b0, 126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(b0);
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends `payload` XOR the mask to `out`. `offset` is the payload position of `payload[0]`
/// within its frame, so a payload may be unmasked in pieces.
pub fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4], offset: usize) {
    let start = out.len();
    out.extend_from_slice(payload);
    unmask_in_place(&mut out[start..], mask, offset);
}

/// XORs `data` with the mask in place, eight bytes at a time.
pub fn unmask_in_place(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// A masked client frame, as a test peer would send it (for this crate's unit tests).
#[cfg(test)]
pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, fin, 0, opcode, payload.len());
    out[1] |= 0x80;
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask_in_place(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_rfc_examples() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let f = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = parse_header(&f).unwrap().unwrap();
        assert!(h.fin && h.opcode == OP_TEXT && h.payload_len == 5 && h.header_len == 6);
        let mut out = Vec::new();
        unmask_into(&mut out, &f[6..], h.mask.unwrap(), 0);
        assert_eq!(out, b"Hello");
        // 256 bytes binary, unmasked: 16-bit length.
        let mut f = vec![0x82, 0x7E, 0x01, 0x00];
        f.extend(std::iter::repeat_n(0, 256));
        let h = parse_header(&f).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len, h.mask), (256, 4, None));
    }

    #[test]
    fn needs_more_until_the_header_is_whole() {
        let f = client_frame(true, OP_BINARY, &[7; 70_000], [1, 2, 3, 4]);
        for cut in 0..14 {
            assert_eq!(parse_header(&f[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_header(&f[..14]).unwrap().unwrap().payload_len, 70_000);
    }

    #[test]
    fn top_bit_of_a_64_bit_length_is_an_error() {
        let f = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse_header(&f), Err(BadLength));
    }

    #[test]
    fn writes_minimal_lengths() {
        for (len, hdr) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let mut out = Vec::new();
            write_header(&mut out, true, 0, OP_BINARY, len);
            assert_eq!(out.len(), hdr, "{len}");
            out.resize(hdr + len, 0);
            let h = parse_header(&out).unwrap().unwrap();
            assert_eq!(h.payload_len as usize, len);
            assert_eq!(h.mask, None);
        }
    }

    proptest! {
        #[test]
        fn masking_round_trips_in_any_pieces(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            mask in any::<[u8; 4]>(),
            cut in 0usize..300,
        ) {
            let frame = client_frame(true, OP_BINARY, &payload, mask);
            let h = parse_header(&frame).unwrap().unwrap();
            let body = &frame[h.header_len..];
            let cut = cut.min(body.len());
            let mut out = Vec::new();
            unmask_into(&mut out, &body[..cut], h.mask.unwrap(), 0);
            unmask_into(&mut out, &body[cut..], h.mask.unwrap(), cut);
            prop_assert_eq!(out, payload);
        }

        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = parse_header(&bytes);
        }
    }
}
