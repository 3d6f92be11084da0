//! Owns request body framing: Content-Length counting and the chunked transfer coding
//! (RFC 9112 §7.1), decoded incrementally with a small state machine so that a body arriving in
//! any number of reads needs no re-parsing and the connection never buffers it twice. It stops
//! exactly at the end of the body: the next pipelined request stays in the input.

use super::request::BodyFraming;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    BadChunk(&'static str),
    TooLarge,
}

impl BodyError {
    pub fn status(&self) -> u16 {
        match self {
            BodyError::BadChunk(_) => 400,
            BodyError::TooLarge => 413,
        }
    }
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::BadChunk(r) => r,
            BodyError::TooLarge => "request body too large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub consumed: usize,
    pub done: bool,
}

/// A chunk-size line (size, extensions) may be no longer than this.
const MAX_CHUNK_LINE: usize = 4096;
/// The trailer section may be no longer than this.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length {
        remaining: u64,
    },
    /// Hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the digits: optional whitespace, then extensions or CR.
    SizeWs,
    /// Inside chunk extensions, up to CR.
    Ext,
    /// Saw CR ending the size line; LF must follow.
    SizeLf {
        last: bool,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer {
        seen_colon: bool,
        name_len: u16,
    },
    TrailerLf,
    FinalLf,
    Done,
}

pub struct BodyDecoder {
    state: State,
    /// Chunk size of the chunk being read (for the Size → Data transition).
    size: u64,
    line_len: u32,
    trailer_bytes: u32,
    decoded: u64,
    max: u64,
}

impl BodyDecoder {
    pub fn new(framing: BodyFraming, max_body_bytes: u64) -> BodyDecoder {
        let state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Size {
                value: 0,
                digits: 0,
            },
        };
        BodyDecoder {
            state,
            size: 0,
            line_len: 0,
            trailer_bytes: 0,
            decoded: 0,
            max: max_body_bytes,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what belongs to this body from `input`, appending decoded bytes to `body`.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Decoded, BodyError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Length { remaining } | State::Data { remaining } => {
                    let take = remaining.min((input.len() - i) as u64) as usize;
                    self.decoded += take as u64;
                    if self.decoded > self.max {
                        return Err(BodyError::TooLarge);
                    }
                    body.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = remaining - take as u64;
                    self.state = match self.state {
                        State::Length { .. } if left == 0 => State::Done,
                        State::Length { .. } => State::Length { remaining: left },
                        _ if left == 0 => State::DataCr,
                        _ => State::Data { remaining: left },
                    };
                }
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(Decoded {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// One byte of chunked framing. Line endings must be CRLF: accepting a bare LF here while
    /// a proxy in front of us does not (or the other way round) is how chunked bodies get
    /// smuggled.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        let bad = BodyError::BadChunk;
        if matches!(self.state, State::Size { .. } | State::SizeWs | State::Ext) {
            self.line_len += 1;
            if self.line_len as usize > MAX_CHUNK_LINE {
                return Err(bad("chunk size line too long"));
            }
        }
        if matches!(
            self.state,
            State::TrailerStart | State::Trailer { .. } | State::TrailerLf | State::FinalLf
        ) {
            self.trailer_bytes += 1;
            if self.trailer_bytes as usize > MAX_TRAILERS {
                return Err(bad("trailer section too large"));
            }
        }
        self.state = match self.state {
            State::Size { value, digits } => match hex(b) {
                Some(d) => {
                    // 16 significant hex digits fill a u64; leading zeros do not count.
                    let digits = if value == 0 && d == 0 {
                        digits.max(1)
                    } else {
                        digits + 1
                    };
                    if value >> 60 != 0 {
                        return Err(bad("chunk size too large"));
                    }
                    State::Size {
                        value: value << 4 | u64::from(d),
                        digits,
                    }
                }
                None if digits == 0 => {
                    return Err(bad("invalid chunk size"));
                }
                None => {
                    self.size = value;
                    match b {
                        b' ' | b'\t' => State::SizeWs,
                        b';' => State::Ext,
                        b'\r' => State::SizeLf { last: value == 0 },
                        _ => return Err(bad("invalid chunk size")),
                    }
                }
            },
            State::SizeWs => match b {
                b' ' | b'\t' => State::SizeWs,
                b';' => State::Ext,
                b'\r' => State::SizeLf {
                    last: self.size == 0,
                },
                _ => return Err(bad("invalid chunk size line")),
            },
            State::Ext => match b {
                b'\r' => State::SizeLf {
                    last: self.size == 0,
                },
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::Ext,
                _ => return Err(bad("invalid chunk extension")),
            },
            State::SizeLf { last } => {
                if b != b'\n' {
                    return Err(bad("chunk size line must end in CRLF"));
                }
                self.line_len = 0;
                if last {
                    State::TrailerStart
                } else {
                    State::Data {
                        remaining: self.size,
                    }
                }
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(bad("chunk data must be followed by CRLF")),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return Err(bad("chunk data must be followed by CRLF")),
            },
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                b':' => return Err(bad("trailer field without a name")),
                _ if is_tchar(b) => State::Trailer {
                    seen_colon: false,
                    name_len: 1,
                },
                _ => return Err(bad("invalid trailer field")),
            },
            State::Trailer {
                seen_colon,
                name_len,
            } => match b {
                b'\r' if seen_colon => State::TrailerLf,
                b':' if !seen_colon => State::Trailer {
                    seen_colon: true,
                    name_len,
                },
                _ if !seen_colon && is_tchar(b) => State::Trailer {
                    seen_colon,
                    name_len: name_len.saturating_add(1),
                },
                b'\t' | b' '..=b'~' | 0x80..=0xff if seen_colon => State::Trailer {
                    seen_colon,
                    name_len,
                },
                _ => return Err(bad("invalid trailer field")),
            },
            State::TrailerLf => match b {
                b'\n' => State::TrailerStart,
                _ => return Err(bad("trailer line must end in CRLF")),
            },
            State::FinalLf => match b {
                b'\n' => State::Done,
                _ => return Err(bad("chunked body must end in CRLF")),
            },
            State::Length { .. } | State::Data { .. } | State::Done => {
                unreachable!("handled in decode")
            }
        };
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(framing: BodyFraming, input: &[u8]) -> Result<(Vec<u8>, Decoded), BodyError> {
        let mut d = BodyDecoder::new(framing, 1 << 20);
        let mut body = Vec::new();
        let r = d.decode(input, &mut body)?;
        Ok((body, r))
    }

    #[test]
    fn content_length_stops_at_the_end() {
        let (body, d) = decode_all(BodyFraming::Length(5), b"helloGET / HTTP/1.1").unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(
            d,
            Decoded {
                consumed: 5,
                done: true
            }
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"5;a=b;c=\"q \\\" x\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nTrailer-One: 1\r\nT2: \r\n\r\nNEXT";
        let (body, d) = decode_all(BodyFraming::Chunked, input).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(d.consumed, input.len() - 4);
        assert!(d.done);
    }

    #[test]
    fn leading_zeros_and_uppercase_hex() {
        let (body, _) =
            decode_all(BodyFraming::Chunked, b"000A\r\n0123456789\r\n00\r\n\r\n").unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn errors() {
        for (input, why) in [
            (&b"zz\r\n"[..], "not hex"),
            (b"\r\n", "empty size"),
            (b"5\nhello\r\n", "bare LF after size"),
            (b"5\r\nhelloXX", "no CRLF after data"),
            (b"5\r\nhello\n", "bare LF after data"),
            (b"11111111111111111\r\n", "17 significant digits"),
            (b"0\r\nbad trailer\r\n", "trailer without colon"),
            (b"0\r\n: v\r\n", "trailer without name"),
            (b"0\r\n\rX", "bad final CRLF"),
            (b"5;\x01\r\n", "control byte in extension"),
        ] {
            assert!(
                matches!(
                    decode_all(BodyFraming::Chunked, input),
                    Err(BodyError::BadChunk(_))
                ),
                "{why}"
            );
        }
        let long_ext = format!("1;{}\r\n", "x".repeat(5000));
        assert!(decode_all(BodyFraming::Chunked, long_ext.as_bytes()).is_err());
    }

    #[test]
    fn too_large() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 4);
        assert_eq!(
            d.decode(b"5\r\nhello\r\n", &mut Vec::new()),
            Err(BodyError::TooLarge)
        );
        let mut d = BodyDecoder::new(BodyFraming::Length(10), 4);
        assert_eq!(
            d.decode(b"hello", &mut Vec::new()),
            Err(BodyError::TooLarge)
        );
    }

    fn encode(body: &[u8], sizes: &[usize], ext: bool, trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes.get(k).copied().unwrap_or(7).clamp(1, rest.len());
            k += 1;
            out.extend_from_slice(format!("{n:X}").as_bytes());
            if ext {
                out.extend_from_slice(b" ;name=\"va;l\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        for t in trailers {
            out.extend_from_slice(format!("{t}: v\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn chunked_round_trips_across_any_split(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 0..20),
            ext in any::<bool>(),
            trailers in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,10}", 0..3),
            splits in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let mut wire = encode(&body, &sizes, ext, &trailers);
            let len = wire.len();
            wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut d = BodyDecoder::new(BodyFraming::Chunked, 1 << 20);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut k = 0;
            while !d.is_done() {
                let end = (pos + splits[k % splits.len()]).min(wire.len());
                k += 1;
                let r = d.decode(&wire[pos..end], &mut out).unwrap();
                pos += r.consumed;
                prop_assert!(r.consumed == end - (pos - r.consumed) || r.done);
            }
            prop_assert_eq!(pos, len);
            prop_assert_eq!(out, body);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut d = BodyDecoder::new(BodyFraming::Chunked, 1 << 16);
            let _ = d.decode(&bytes, &mut Vec::new());
        }
    }
}
