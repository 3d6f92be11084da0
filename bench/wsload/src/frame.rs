//! Owns the few WebSocket wire pieces a load client needs: building a masked client frame
//! (built once and reused, since the server unmasks whatever mask it gets) and finding server
//! frames in received bytes.

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A complete masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A server frame found at the start of a buffer: its opcode, payload range and total length.
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: std::ops::Range<usize>,
    pub len: usize,
}

/// Parses one unmasked server frame; `None` until it is complete.
pub fn parse_server_frame(buf: &[u8]) -> Option<ServerFrame> {
    if buf.len() < 2 {
        return None;
    }
    let (len, hdr) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= hdr + len).then(|| ServerFrame {
        opcode: buf[0] & 0x0f,
        payload: hdr..hdr + len,
        len: hdr + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        for n in [0usize, 5, 125, 126, 70_000] {
            let f = client_frame(OP_BINARY, &vec![7; n], [1, 2, 3, 4]);
            // A server frame is the same without mask bit and key.
            let mut s = vec![f[0], f[1] & 0x7f];
            let hdr = if n < 126 {
                2
            } else if n <= 65535 {
                4
            } else {
                10
            };
            s.extend_from_slice(&f[2..hdr]);
            s.extend(std::iter::repeat_n(7u8, n));
            let p = parse_server_frame(&s).unwrap();
            assert_eq!((p.opcode, p.payload.len(), p.len), (OP_BINARY, n, s.len()));
            assert!(parse_server_frame(&s[..s.len() - 1]).is_none() || n == 0);
        }
    }
}
