//! Request body decoding: Content-Length bodies and the chunked transfer coding (RFC 9112 §6.3,
//! §7.1).
//!
//! This file owns: consuming exactly the bytes that belong to one request body, appending the
//! decoded content to a caller-supplied buffer, enforcing the body size limit, and validating
//! the chunked framing (chunk-size lines, extensions, data terminators, trailer section) byte for
//! byte. It does not own deciding the framing (`request.rs` does, from the head), answering
//! `Expect: 100-continue`, or what the trailer fields mean: they are checked for syntax and
//! dropped (RFC 9112 §7.1.2: a recipient MUST NOT merge them into the header section unless the
//! field's definition allows it, and nothing here needs them).
//!
//! The decoder is a byte-level state machine with a few words of state, so input can arrive in
//! any split and is never re-fed: every byte is looked at once.

use super::request::{BodyFraming, is_tchar};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Malformed chunked framing: 400.
    BadChunk(&'static str),
    /// More decoded content than `max_body_bytes`: 413.
    TooLarge,
}

impl BodyError {
    pub fn status(&self) -> u16 {
        match self {
            BodyError::BadChunk(_) => 400,
            BodyError::TooLarge => 413,
        }
    }

    /// A short human-readable explanation, for a response body or a log line.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::BadChunk(why) => why,
            BodyError::TooLarge => "request body too large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input that belonged to the body (framing included); the caller drops them.
    pub consumed: usize,
    /// The body is complete; the rest of the input, if any, is the next request.
    pub done: bool,
}

/// A chunk-size line (size, extensions, CRLF) longer than this is refused: extensions are
/// ignorable, but unbounded ones are a cheap way to tie up a connection (RFC 9112 §7.1.1 lets a
/// server limit them).
pub const MAX_CHUNK_LINE: u32 = 4096;
/// The trailer section, its final CRLF included, is bounded like a header section.
pub const MAX_TRAILER_BYTES: u32 = 16 * 1024;
/// chunk-size is 1*HEXDIG; more significant digits than fit in a u64 is refused (RFC 9112
/// §7.1: a recipient MUST anticipate potentially large hex numerals and prevent overflow).
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length body: `remaining` bytes to go.
    Length,
    /// Start of a chunk-size line: expecting the first HEXDIG.
    SizeStart,
    /// In the chunk-size HEXDIGs.
    Size,
    /// BWS after the size or after an extension value: only more whitespace or `;` may follow.
    ExtWs,
    /// After `;`: BWS, then the extension name.
    ExtNameStart,
    ExtName,
    /// BWS after an extension name: `=` or `;` must follow.
    ExtNameWs,
    /// After `=`: BWS, then a token or a quoted-string.
    ExtValueStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEscape,
    /// After the closing quote: CR, `;` or BWS.
    ExtQuotedEnd,
    /// CR seen at the end of the chunk-size line.
    SizeLf,
    /// In chunk-data: `remaining` bytes to go.
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer field line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(BodyError),
}

/// Decodes one request body. Small (a few words): it lives in every connection that is reading
/// a body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Length and Data: bytes still to come. On a chunk-size line: the size parsed so far.
    remaining: u64,
    /// Content bytes accepted so far (chunked), for the `max_body_bytes` check.
    decoded: u64,
    max: u64,
    /// Bytes on the current chunk-size line, or in the trailer section so far.
    count: u32,
    /// Significant hex digits of the chunk size so far.
    digits: u8,
}

impl BodyDecoder {
    /// `framing` is Length(n) or Chunked (None, or Length(0), is an empty body that is already
    /// done). A Length over `max_body_bytes` is the caller's 413 to send before reading; the
    /// decoder refuses it too, on the first `decode`, and bounds chunked content as it goes.
    pub fn new(framing: BodyFraming, max_body_bytes: u64) -> Self {
        let (state, remaining) = match framing {
            BodyFraming::None | BodyFraming::Length(0) => (State::Done, 0),
            BodyFraming::Length(n) if n > max_body_bytes => (State::Failed(BodyError::TooLarge), 0),
            BodyFraming::Length(n) => (State::Length, n),
            BodyFraming::Chunked => (State::SizeStart, 0),
        };
        BodyDecoder {
            state,
            remaining,
            decoded: 0,
            max: max_body_bytes,
            count: 0,
            digits: 0,
        }
    }

    /// Consumes as much of `input` as belongs to this body, appending decoded data to `body`
    /// (which may be a scratch buffer the caller discards); never consumes a byte past the end
    /// of the body (the next pipelined request stays in input). Fully incremental: feeding input
    /// in any split, down to one byte at a time, gives the same result as feeding it whole; the
    /// decoder keeps its own small state, so the caller never re-feeds consumed bytes.
    ///
    /// After an error the decoder stays failed and returns the same error: the connection can
    /// only answer and close, since where the next request starts is unknowable.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Decoded, BodyError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Done => break,
                _ if i == input.len() => break,
                State::Length | State::Data => {
                    let available = (input.len() - i) as u64;
                    let n = self.remaining.min(available) as usize;
                    body.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = if self.state == State::Length {
                            State::Done
                        } else {
                            State::DataCr
                        };
                    }
                }
                state => {
                    let b = input[i];
                    i += 1;
                    self.state = match self.step(state, b) {
                        Ok(next) => next,
                        Err(e) => State::Failed(e),
                    };
                }
            }
        }
        Ok(Decoded {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// One byte of chunked framing (never chunk-data).
    ///
    /// Every line must end in CRLF. RFC 9112 §7.1 has no bare-LF allowance for the chunked
    /// coding, and a parser that accepted one while a front-end did not (or the reverse) would
    /// disagree about where the body ends: the raw material of request smuggling. So a lone LF,
    /// or a CR not followed by LF, is 400 wherever it appears.
    fn step(&mut self, state: State, b: u8) -> Result<State, BodyError> {
        use State::*;
        match state {
            SizeStart | Size | ExtWs | ExtNameStart | ExtName | ExtNameWs | ExtValueStart
            | ExtToken | ExtQuoted | ExtQuotedEscape | ExtQuotedEnd | SizeLf => {
                self.count += 1;
                if self.count > MAX_CHUNK_LINE {
                    return Err(BodyError::BadChunk("chunk-size line too long"));
                }
            }
            TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf => {
                self.count += 1;
                if self.count > MAX_TRAILER_BYTES {
                    return Err(BodyError::BadChunk("trailer section too large"));
                }
            }
            _ => {}
        }
        let ws = b == b' ' || b == b'\t';
        let next = match (state, b) {
            // chunk-size = 1*HEXDIG; no sign, no prefix, no leading whitespace.
            (SizeStart | Size, _) if b.is_ascii_hexdigit() => {
                self.push_hex_digit(b)?;
                Size
            }
            (SizeStart, _) => return Err(bad_chunk(b, "invalid chunk size")),
            // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
            // (RFC 9112 §7.1.1). Whitespace is only allowed where BWS is, so "5 \r\n" (trailing
            // whitespace without an extension) is refused.
            (Size, b'\r') => SizeLf,
            (Size, b';') => ExtNameStart,
            (Size, _) if ws => ExtWs,
            (Size, _) => return Err(bad_chunk(b, "invalid chunk size")),
            (ExtWs, b';') | (ExtName | ExtNameWs | ExtToken | ExtQuotedEnd, b';') => ExtNameStart,
            (ExtWs | ExtToken | ExtQuotedEnd, _) if ws => ExtWs,
            (ExtNameStart, _) if ws => ExtNameStart,
            (ExtNameStart | ExtName, _) if is_tchar(b) => ExtName,
            (ExtName, b'=') | (ExtNameWs, b'=') => ExtValueStart,
            (ExtName | ExtNameWs, _) if ws => ExtNameWs,
            (ExtValueStart, _) if ws => ExtValueStart,
            (ExtValueStart, b'"') => ExtQuoted,
            (ExtValueStart | ExtToken, _) if is_tchar(b) => ExtToken,
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4)
            (ExtQuoted, b'"') => ExtQuotedEnd,
            (ExtQuoted, b'\\') => ExtQuotedEscape,
            (ExtQuoted, _) if is_qdtext(b) => ExtQuoted,
            (ExtQuotedEscape, _) if ws || is_vchar_or_obs(b) => ExtQuoted,
            (ExtName | ExtToken | ExtQuotedEnd, b'\r') => SizeLf,
            (
                ExtWs | ExtNameStart | ExtName | ExtNameWs | ExtValueStart | ExtToken | ExtQuoted
                | ExtQuotedEscape | ExtQuotedEnd,
                _,
            ) => return Err(bad_chunk(b, "malformed chunk extension")),
            (SizeLf, b'\n') => self.end_size_line()?,
            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return Err(BodyError::BadChunk("chunk data not followed by CRLF")),
            (DataLf, b'\n') => {
                self.count = 0;
                self.digits = 0;
                self.remaining = 0;
                SizeStart
            }
            // trailer-section = *( field-line CRLF ) then CRLF (RFC 9112 §7.1.2); field-line =
            // field-name ":" OWS field-value OWS. No whitespace before the colon, no obs-fold.
            (TrailerStart, b'\r') => FinalLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if ws || is_vchar_or_obs(b) => TrailerValue,
            (TrailerStart | TrailerName | TrailerValue, _) => {
                return Err(bad_chunk(b, "malformed trailer field"));
            }
            (TrailerLf, b'\n') => TrailerStart,
            (FinalLf, b'\n') => Done,
            (SizeLf | DataLf | TrailerLf | FinalLf, _) => {
                return Err(BodyError::BadChunk("CR not followed by LF"));
            }
            (Length | Data | Done | Failed(_), _) => unreachable!("not a framing state"),
        };
        Ok(next)
    }

    fn push_hex_digit(&mut self, b: u8) -> Result<(), BodyError> {
        let d = u64::from(match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        });
        // Leading zeros are fine ("last-chunk = 1*("0")"); significant digits are bounded, so
        // the shift below cannot overflow.
        if self.remaining != 0 || d != 0 {
            self.digits += 1;
            if self.digits > MAX_SIZE_DIGITS {
                return Err(BodyError::BadChunk("chunk size too large"));
            }
        }
        self.remaining = (self.remaining << 4) | d;
        Ok(())
    }

    /// The chunk-size line is complete: a last-chunk leads to the trailer section, any other
    /// chunk to its data, if the body limit allows it (refused before the data arrives).
    fn end_size_line(&mut self) -> Result<State, BodyError> {
        self.count = 0;
        if self.remaining == 0 {
            return Ok(State::TrailerStart);
        }
        if self.remaining > self.max - self.decoded {
            return Err(BodyError::TooLarge);
        }
        self.decoded += self.remaining;
        Ok(State::Data)
    }
}

/// A lone LF gets its own reason: it is the most common way to get chunked framing wrong.
fn bad_chunk(b: u8, why: &'static str) -> BodyError {
    BodyError::BadChunk(if b == b'\n' {
        "bare LF in chunked framing"
    } else {
        why
    })
}

/// VCHAR / obs-text (RFC 9110 §5.5, §5.6.4).
fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4).
fn is_qdtext(b: u8) -> bool {
    b == b'\t' || b == b' ' || (is_vchar_or_obs(b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = 1 << 20;

    /// Feeds `input` whole; returns the decoded body and the outcome.
    fn run(framing: BodyFraming, input: &[u8]) -> (Vec<u8>, Result<Decoded, BodyError>) {
        let mut d = BodyDecoder::new(framing, MAX);
        let mut body = Vec::new();
        let r = d.decode(input, &mut body);
        (body, r)
    }

    fn chunked(input: &[u8]) -> (Vec<u8>, Result<Decoded, BodyError>) {
        run(BodyFraming::Chunked, input)
    }

    /// Feeds one byte at a time, the way the caller would (dropping consumed bytes).
    fn chunked_bytewise(input: &[u8]) -> (Vec<u8>, Result<Decoded, BodyError>) {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, MAX);
        let mut body = Vec::new();
        let mut consumed = 0;
        for i in 0..input.len() {
            match d.decode(&input[i..=i], &mut body) {
                Ok(r) => {
                    consumed += r.consumed;
                    if r.done {
                        return (
                            body,
                            Ok(Decoded {
                                consumed,
                                done: true,
                            }),
                        );
                    }
                }
                Err(e) => return (body, Err(e)),
            }
        }
        (
            body,
            Ok(Decoded {
                consumed,
                done: false,
            }),
        )
    }

    fn ok(input: &[u8]) -> Vec<u8> {
        let (body, r) = chunked(input);
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: input.len(),
                done: true
            }),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        let (body2, r2) = chunked_bytewise(input);
        assert_eq!(r2, r);
        assert_eq!(body2, body);
        body
    }

    fn fails(input: &[u8]) -> BodyError {
        let (_, r) = chunked(input);
        let e = r.expect_err(&format!("{:?} should fail", String::from_utf8_lossy(input)));
        let (_, r2) = chunked_bytewise(input);
        assert_eq!(r2, Err(e), "bytewise {:?}", String::from_utf8_lossy(input));
        e
    }

    fn fails_with(input: &[u8], why: &'static str) {
        assert_eq!(
            fails(input),
            BodyError::BadChunk(why),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn length_body_and_pipelining() {
        let input = b"hello worldGET / HTTP/1.1\r\n";
        let (body, r) = run(BodyFraming::Length(11), input);
        assert_eq!(body, b"hello world");
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: 11,
                done: true
            })
        );

        let mut d = BodyDecoder::new(BodyFraming::Length(5), MAX);
        let mut body = Vec::new();
        assert_eq!(
            d.decode(b"he", &mut body),
            Ok(Decoded {
                consumed: 2,
                done: false
            })
        );
        assert!(!d.is_done());
        assert_eq!(
            d.decode(b"", &mut body),
            Ok(Decoded {
                consumed: 0,
                done: false
            })
        );
        assert_eq!(
            d.decode(b"llo!", &mut body),
            Ok(Decoded {
                consumed: 3,
                done: true
            })
        );
        assert!(d.is_done());
        assert_eq!(
            d.decode(b"more", &mut body),
            Ok(Decoded {
                consumed: 0,
                done: true
            })
        );
        assert_eq!(body, b"hello");
    }

    #[test]
    fn empty_bodies_are_done() {
        for framing in [BodyFraming::None, BodyFraming::Length(0)] {
            let mut d = BodyDecoder::new(framing, MAX);
            assert!(d.is_done());
            let mut body = Vec::new();
            assert_eq!(
                d.decode(b"GET", &mut body),
                Ok(Decoded {
                    consumed: 0,
                    done: true
                })
            );
        }
    }

    #[test]
    fn length_over_limit() {
        let mut d = BodyDecoder::new(BodyFraming::Length(11), 10);
        assert_eq!(d.decode(b"", &mut Vec::new()), Err(BodyError::TooLarge));
        assert_eq!(d.decode(b"x", &mut Vec::new()), Err(BodyError::TooLarge));
        assert!(!d.is_done());
        let (body, r) = {
            let mut d = BodyDecoder::new(BodyFraming::Length(10), 10);
            let mut body = Vec::new();
            let r = d.decode(&[b'x'; 12], &mut body);
            (body, r)
        };
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: 10,
                done: true
            })
        );
        assert_eq!(body.len(), 10);
        assert_eq!(BodyError::TooLarge.status(), 413);
    }

    #[test]
    fn simple_chunked() {
        assert_eq!(
            ok(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(ok(b"0\r\n\r\n"), b"");
        assert_eq!(ok(b"000\r\n\r\n"), b"");
        assert_eq!(ok(b"A\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
        assert_eq!(ok(b"a\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
        assert_eq!(ok(b"00000001\r\nx\r\n0\r\n\r\n"), b"x");
        // 16 significant digits parse (the size itself is then over the limit).
        assert_eq!(fails(b"0000FFFFFFFFFFFFFFFF\r\n"), BodyError::TooLarge);
    }

    #[test]
    fn exact_consumption_with_pipelined_request() {
        let body = b"4\r\nWiki\r\n0\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        let (decoded, r) = chunked(&input);
        assert_eq!(decoded, b"Wiki");
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: body.len(),
                done: true
            })
        );
        let (decoded, r) = chunked_bytewise(&input);
        assert_eq!(decoded, b"Wiki");
        assert_eq!(
            r,
            Ok(Decoded {
                consumed: body.len(),
                done: true
            })
        );
    }

    #[test]
    fn extensions_are_accepted_and_ignored() {
        for input in [
            &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\r\nhello\r\n0\r\n\r\n",
            b"5;a=b;c;d=e\r\nhello\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"5\t; a = b ; c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"quoted \\\" string; with=stuff\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\" ;b\r\nhello\r\n0\r\n\r\n",
            b"5;!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~09AZaz\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"caf\xc3\xa9\"\r\nhello\r\n0;last=1\r\n\r\n",
        ] {
            assert_eq!(ok(input), b"hello", "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn malformed_extensions() {
        for input in [
            &b"5;\r\nhello\r\n0\r\n\r\n"[..],
            b"5;;a\r\n",
            b"5;=b\r\n",
            b"5;a=\r\n",
            b"5;a=b c\r\n",
            b"5;a b\r\n",
            b"5;a \r\n",
            b"5;a=b \r\n",
            b"5;a=\"b\r\n",
            b"5;a=\"b\"c\r\n",
            b"5;a=\"b\x01\"\r\n",
            b"5;a=\"\\\x01\"\r\n",
            b"5;a\x00\r\n",
            b"5;a=(b)\r\n",
            b"5;a@b\r\n",
        ] {
            let e = fails(input);
            assert_eq!(e.status(), 400, "{:?}", String::from_utf8_lossy(input));
        }
        fails_with(b"5;a\x01\r\n", "malformed chunk extension");
    }

    #[test]
    fn chunk_size_line_is_bounded() {
        let mut line = b"5;a=".to_vec();
        line.extend(std::iter::repeat_n(
            b'b',
            MAX_CHUNK_LINE as usize - line.len() - 2,
        ));
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_CHUNK_LINE as usize);
        let mut input = line.clone();
        input.extend_from_slice(b"hello\r\n0\r\n\r\n");
        assert_eq!(ok(&input), b"hello");
        let mut long = b"5;a=b".to_vec();
        long.extend(std::iter::repeat_n(b'b', MAX_CHUNK_LINE as usize));
        fails_with(&long, "chunk-size line too long");
        // Leading zeros count too.
        let zeros = vec![b'0'; MAX_CHUNK_LINE as usize + 1];
        fails_with(&zeros, "chunk-size line too long");
    }

    #[test]
    fn chunk_size_errors() {
        fails_with(b"\r\n", "invalid chunk size");
        fails_with(b";a\r\n", "invalid chunk size");
        fails_with(b" 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size");
        fails_with(b"+5\r\n", "invalid chunk size");
        fails_with(b"-5\r\n", "invalid chunk size");
        fails_with(b"0x5\r\n", "invalid chunk size");
        fails_with(b"5g\r\n", "invalid chunk size");
        fails_with(b"5_0\r\n", "invalid chunk size");
        fails_with(b"5 \r\nhello\r\n0\r\n\r\n", "malformed chunk extension");
        fails_with(b"10000000000000000\r\n", "chunk size too large");
        fails_with(b"FFFFFFFFFFFFFFFFF\r\n", "chunk size too large");
        fails_with(b"5\nhello\r\n0\r\n\r\n", "bare LF in chunked framing");
        fails_with(b"\n", "bare LF in chunked framing");
        fails_with(b"5\rhello\r\n", "CR not followed by LF");
    }

    #[test]
    fn chunk_data_terminator() {
        fails_with(
            b"5\r\nhelloX\r\n0\r\n\r\n",
            "chunk data not followed by CRLF",
        );
        fails_with(b"5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF");
        fails_with(b"5\r\nhello\rX0\r\n\r\n", "CR not followed by LF");
        fails_with(
            b"3\r\nhello\r\n0\r\n\r\n",
            "chunk data not followed by CRLF",
        );
        // Too short a chunk: the next line is taken as data, so the terminator is missing.
        fails_with(
            b"6\r\nhello\r\n0\r\n\r\n",
            "chunk data not followed by CRLF",
        );
    }

    #[test]
    fn trailers_are_validated_and_dropped() {
        assert_eq!(ok(b"5\r\nhello\r\n0\r\nX-Sum: abc\r\n\r\n"), b"hello");
        assert_eq!(ok(b"0\r\nA: 1\r\nB:\r\nC:  spaced  out \t\r\n\r\n"), b"");
        assert_eq!(ok(b"0\r\nContent-Length: 50\r\n\r\n"), b"");
        for input in [
            &b"0\r\nX-Sum abc\r\n\r\n"[..],
            b"0\r\nX-Sum : abc\r\n\r\n",
            b"0\r\n: abc\r\n\r\n",
            b"0\r\nX-Sum: a\r\n folded\r\n\r\n",
            b"0\r\nX-Sum: a\x00b\r\n\r\n",
            b"0\r\nX(Sum): a\r\n\r\n",
            b"0\r\n \r\n\r\n",
        ] {
            fails_with(input, "malformed trailer field");
        }
        fails_with(b"0\r\nX: a\n\r\n", "bare LF in chunked framing");
        fails_with(b"0\r\nX: a\r\n\n", "bare LF in chunked framing");
        fails_with(b"0\r\n\n", "bare LF in chunked framing");
        fails_with(b"0\r\nX: a\rb\r\n\r\n", "CR not followed by LF");
        fails_with(b"0\r\n\rx", "CR not followed by LF");
    }

    #[test]
    fn trailer_section_is_bounded() {
        let mut input = b"0\r\n".to_vec();
        let line = format!("X: {}\r\n", "v".repeat(95)); // 100 bytes
        for _ in 0..(MAX_TRAILER_BYTES as usize / 100) - 1 {
            input.extend_from_slice(line.as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(ok(&input), b"");
        let mut over = b"0\r\n".to_vec();
        for _ in 0..=(MAX_TRAILER_BYTES as usize / 100) {
            over.extend_from_slice(line.as_bytes());
        }
        over.extend_from_slice(b"\r\n");
        fails_with(&over, "trailer section too large");
    }

    #[test]
    fn chunked_over_limit() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, 10);
        let mut body = Vec::new();
        assert_eq!(
            d.decode(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", &mut body),
            Ok(Decoded {
                consumed: 25,
                done: true
            })
        );
        assert_eq!(body, b"helloworld");

        let mut d = BodyDecoder::new(BodyFraming::Chunked, 10);
        let mut body = Vec::new();
        // Refused at the size line of the chunk that would cross the limit, before its data.
        assert_eq!(
            d.decode(b"5\r\nhello\r\n6\r\n", &mut body),
            Err(BodyError::TooLarge)
        );
        assert_eq!(body, b"hello");
        assert_eq!(d.decode(b"world!\r\n", &mut body), Err(BodyError::TooLarge));
    }

    #[test]
    fn incomplete_chunked_is_not_done() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..input.len() {
            let (_, r) = chunked(&input[..cut]);
            assert_eq!(
                r,
                Ok(Decoded {
                    consumed: cut,
                    done: false
                }),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, MAX);
        let mut body = Vec::new();
        let e = d.decode(b"zz", &mut body).unwrap_err();
        assert_eq!(e, BodyError::BadChunk("invalid chunk size"));
        assert_eq!(d.decode(b"0\r\n\r\n", &mut body), Err(e));
        assert_eq!(d.decode(b"", &mut body), Err(e));
        assert!(!d.is_done());
        assert_eq!(e.status(), 400);
        assert_eq!(e.reason(), "invalid chunk size");
        assert!(!BodyError::TooLarge.reason().is_empty());
    }

    #[test]
    fn decoder_is_small() {
        assert!(std::mem::size_of::<BodyDecoder>() <= 64);
    }

    // -- properties --------------------------------------------------------------------------

    /// A chunk extension that must be accepted: BWS ";" BWS name [ BWS "=" BWS value ].
    fn extension() -> impl Strategy<Value = String> {
        let bws = "[ \t]{0,2}";
        let token = "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}";
        let quoted = prop::collection::vec(
            prop_oneof![
                "[ \t!#-\\[\\]-~]".prop_map(|s: String| s),
                "[ -~]".prop_map(|s: String| format!("\\{s}")),
            ],
            0..6,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        let value =
            prop::option::of((bws, bws, prop_oneof![token.prop_map(|s: String| s), quoted]));
        (bws, bws, token, value).prop_map(|(w1, w2, name, value)| match value {
            Some((w3, w4, v)) => format!("{w1};{w2}{name}{w3}={w4}{v}"),
            None => format!("{w1};{w2}{name}"),
        })
    }

    /// A random body, its chunked encoding, with random sizes, hex case, leading zeros,
    /// extensions and trailers.
    fn encoded_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let chunk = (
            1usize..80,
            any::<bool>(),
            0usize..3,
            prop::collection::vec(extension(), 0..3),
        );
        let trailer = ("[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}", "[ \t!-~]{0,20}");
        (
            prop::collection::vec(any::<u8>(), 0..700),
            prop::collection::vec(chunk, 1..24),
            1usize..4,
            prop::collection::vec(extension(), 0..2),
            prop::collection::vec(trailer, 0..4),
        )
            .prop_map(|(body, chunks, last_zeros, last_ext, trailers)| {
                let mut out = Vec::new();
                let mut rest = &body[..];
                let mut specs = chunks.iter().cycle();
                while !rest.is_empty() {
                    let (len, upper, zeros, exts) = specs.next().unwrap();
                    let n = (*len).min(rest.len());
                    let hex = if *upper {
                        format!("{n:X}")
                    } else {
                        format!("{n:x}")
                    };
                    out.extend_from_slice("0".repeat(*zeros).as_bytes());
                    out.extend_from_slice(hex.as_bytes());
                    out.extend_from_slice(exts.concat().as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice("0".repeat(last_zeros).as_bytes());
                out.extend_from_slice(last_ext.concat().as_bytes());
                out.extend_from_slice(b"\r\n");
                for (name, value) in trailers {
                    out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                (body, out)
            })
    }

    /// Feeds `input` in pieces cut at `cuts`, the way a connection would: the unconsumed tail
    /// of what it has received stays in its buffer and is offered again with the next read.
    fn feed_split(
        framing: BodyFraming,
        input: &[u8],
        cuts: &[prop::sample::Index],
    ) -> (Vec<u8>, Result<usize, BodyError>, bool) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut d = BodyDecoder::new(framing, MAX);
        let mut body = Vec::new();
        let mut consumed = 0;
        for end in points {
            if end < consumed {
                continue;
            }
            match d.decode(&input[consumed..end], &mut body) {
                Ok(r) => {
                    consumed += r.consumed;
                    assert_eq!(r.done, d.is_done());
                    if r.done {
                        break;
                    }
                }
                Err(e) => return (body, Err(e), false),
            }
        }
        (body, Ok(consumed), d.is_done())
    }

    proptest! {
        #[test]
        fn chunked_roundtrip_any_split(
            (body, encoded) in encoded_body(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            next in "(GET / HTTP/1.1\r\nHost: a\r\n\r\n)?",
        ) {
            let mut input = encoded.clone();
            input.extend_from_slice(next.as_bytes());
            let (decoded, consumed, done) = feed_split(BodyFraming::Chunked, &input, &cuts);
            prop_assert_eq!(consumed, Ok(encoded.len()));
            prop_assert!(done);
            prop_assert_eq!(decoded, body);
        }

        #[test]
        fn chunked_bytewise_equals_whole((body, encoded) in encoded_body()) {
            let (decoded, r) = chunked_bytewise(&encoded);
            prop_assert_eq!(r, Ok(Decoded { consumed: encoded.len(), done: true }));
            prop_assert_eq!(decoded, body);
        }

        #[test]
        fn length_roundtrip_any_split(
            body in prop::collection::vec(any::<u8>(), 0..500),
            tail in prop::collection::vec(any::<u8>(), 0..20),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut input = body.clone();
            input.extend_from_slice(&tail);
            let framing = BodyFraming::Length(body.len() as u64);
            let (decoded, consumed, done) = feed_split(framing, &input, &cuts);
            prop_assert_eq!(consumed, Ok(body.len()));
            prop_assert!(done);
            prop_assert_eq!(decoded, body);
        }

        #[test]
        fn random_bytes_never_panic(
            input in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            max in 0u64..64,
        ) {
            let whole = {
                let mut d = BodyDecoder::new(BodyFraming::Chunked, max);
                let mut body = Vec::new();
                d.decode(&input, &mut body).map(|r| (r, body))
            };
            // Splitting changes nothing, errors included.
            let mut d = BodyDecoder::new(BodyFraming::Chunked, max);
            let mut body = Vec::new();
            let mut consumed = 0;
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.push(input.len());
            points.sort_unstable();
            let mut split = None;
            for end in points {
                match d.decode(&input[consumed..end], &mut body) {
                    Ok(r) => consumed += r.consumed,
                    Err(e) => { split = Some(Err(e)); break; }
                }
            }
            let split = split.unwrap_or(Ok((Decoded { consumed, done: d.is_done() }, body)));
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn mutated_encodings_never_panic(
            (_, encoded) in encoded_body(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut input = encoded;
            for (at, byte) in edits {
                let i = at.index(input.len());
                input[i] = byte;
            }
            let (_, whole) = chunked(&input);
            let (_, bytewise) = chunked_bytewise(&input);
            prop_assert_eq!(whole, bytewise);
        }
    }
}
