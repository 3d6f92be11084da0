//! Owns a plain reference decoder for the chunked transfer coding (RFC 9112 §7.1), written
//! differently from `proto::http1::body` on purpose: it sees the whole input at once, finds
//! each line by its LF, and checks a complete line against the grammar by recursive descent.
//! The `chunked` target checks that holdfast's byte-at-a-time state machine makes the same
//! decision, decodes the same bytes and consumes the same count.
//!
//! Same policy as holdfast (these are choices, not RFC requirements): every line ends in CRLF;
//! no whitespace before the CRLF of a chunk-size line; a chunk-size line (CRLF included) is at
//! most 4096 bytes and the trailer section (final CRLF included) at most 16 KiB; at most 16
//! significant hex digits; chunk sizes are checked against the body limit when their line
//! ends. An incomplete line is "need more" when some completion of it is valid: it is tried
//! with one short completion per place the line could have stopped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended after `consumed` bytes.
    Done { consumed: usize },
    /// Everything so far is a valid start of a body.
    Partial,
    /// Malformed framing, or a line or the trailer section over its bound.
    BadChunk,
    /// A chunk would take the decoded size past the limit.
    TooLarge,
}

const MAX_LINE: usize = 4096;
const MAX_TRAILER: usize = 16 * 1024;
const MAX_SIGNIFICANT_DIGITS: usize = 16;

/// Decodes a chunked body at the start of `input` with a limit of `max` decoded bytes; returns
/// the outcome and the data decoded before it (chunk data is delivered as it arrives).
pub fn decode(input: &[u8], max: u64) -> (Outcome, Vec<u8>) {
    let mut body = Vec::new();
    let mut pos = 0;
    let mut decoded = 0u64;
    loop {
        let rest = &input[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            let viable = ["\r\n", "\n", ";a\r\n", "a\r\n", "\"\r\n", "a\"\r\n"]
                .iter()
                .any(|c| size_line(&[rest, c.as_bytes()].concat()).is_some());
            let outcome = if rest.len() <= MAX_LINE && viable {
                Outcome::Partial
            } else {
                Outcome::BadChunk
            };
            return (outcome, body);
        };
        let line = &rest[..=lf];
        if line.len() > MAX_LINE {
            return (Outcome::BadChunk, body);
        }
        let Some(size) = size_line(line) else {
            return (Outcome::BadChunk, body);
        };
        pos += line.len();
        if size == 0 {
            return (trailers(input, pos), body);
        }
        if size > max - decoded {
            return (Outcome::TooLarge, body);
        }
        decoded += size;
        let available = (input.len() - pos) as u64;
        let take = size.min(available) as usize;
        body.extend_from_slice(&input[pos..pos + take]);
        pos += take;
        if (take as u64) < size {
            return (Outcome::Partial, body);
        }
        for expected in *b"\r\n" {
            match input.get(pos) {
                None => return (Outcome::Partial, body),
                Some(&b) if b == expected => pos += 1,
                Some(_) => return (Outcome::BadChunk, body),
            }
        }
    }
}

/// The trailer section starting at `start`, through the final CRLF.
fn trailers(input: &[u8], start: usize) -> Outcome {
    let mut pos = start;
    loop {
        let rest = &input[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            let viable = ["\r\n", "\n", ":\r\n"].iter().any(|c| {
                let line = [rest, c.as_bytes()].concat();
                line == b"\r\n" || field_line(&line)
            });
            return if input.len() - start <= MAX_TRAILER && viable {
                Outcome::Partial
            } else {
                Outcome::BadChunk
            };
        };
        let line = &rest[..=lf];
        let end = pos + line.len();
        if end - start > MAX_TRAILER {
            return Outcome::BadChunk;
        }
        if line == b"\r\n" {
            return Outcome::Done { consumed: end };
        }
        if !field_line(line) {
            return Outcome::BadChunk;
        }
        pos = end;
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `field-name ":" field-value CRLF`, with any mix of whitespace and visible characters as the
/// value (holdfast checks trailer syntax and drops the fields).
fn field_line(line: &[u8]) -> bool {
    let Some(content) = line.strip_suffix(b"\r\n") else {
        return false;
    };
    let Some(colon) = content.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&content[..colon], &content[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value.iter().all(|&b| is_ws(b) || is_vchar_or_obs(b))
}

/// A complete chunk-size line (ending in LF): its size, or None if it is malformed.
/// `chunk-size *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ) CRLF`.
fn size_line(line: &[u8]) -> Option<u64> {
    let s = line.strip_suffix(b"\r\n")?;
    let digits = s.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let hex = &s[..digits];
    let significant = hex.iter().skip_while(|&&b| b == b'0').count();
    if significant > MAX_SIGNIFICANT_DIGITS {
        return None;
    }
    let size = hex.iter().fold(0u64, |n, &b| {
        (n << 4) | u64::from((b as char).to_digit(16).expect("hex digit"))
    });
    let mut p = Parser { s, i: digits };
    while !p.at_end() {
        p.skip_ws();
        p.eat(b';')?;
        p.skip_ws();
        p.token()?;
        let before_ws = p.i;
        p.skip_ws();
        if p.peek() == Some(b'=') {
            p.i += 1;
            p.skip_ws();
            if p.peek() == Some(b'"') {
                p.quoted()?;
            } else {
                p.token()?;
            }
        } else {
            // Whitespace after a name is only allowed before another ";" or "=".
            p.i = before_ws;
            if p.at_end() {
                break;
            }
            p.skip_ws();
            if p.peek() != Some(b';') {
                return None;
            }
        }
    }
    Some(size)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i == self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }
    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.i += 1)
    }
    fn token(&mut self) -> Option<()> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }
    /// `DQUOTE *( qdtext / "\" ( HTAB / SP / VCHAR / obs-text ) ) DQUOTE`.
    fn quoted(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    let b = *self.s.get(self.i + 1)?;
                    if !(is_ws(b) || is_vchar_or_obs(b)) {
                        return None;
                    }
                    self.i += 2;
                }
                b if is_ws(b) || is_vchar_or_obs(b) => self.i += 1,
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_decodes_the_basics() {
        let (o, body) = decode(b"5\r\nhello\r\n0\r\n\r\nNEXT", 100);
        assert_eq!(o, Outcome::Done { consumed: 15 });
        assert_eq!(body, b"hello");
        assert_eq!(decode(b"5;a=b;c=\"x\\\"\"\r\nhe", 100).0, Outcome::Partial);
        assert_eq!(decode(b"5 \r\n", 100).0, Outcome::BadChunk);
        assert_eq!(decode(b"5 ;a \r\n", 100).0, Outcome::BadChunk);
        assert_eq!(decode(b"5 ;a ;b\r\n", 100).0, Outcome::Partial);
        assert_eq!(decode(b"5\n", 100).0, Outcome::BadChunk);
        assert_eq!(decode(b"65\r\n", 100).0, Outcome::TooLarge);
        assert_eq!(decode(b"0\r\nX-A: b\r\n\r", 100).0, Outcome::Partial);
        assert_eq!(decode(b"0\r\nX-A : b\r\n", 100).0, Outcome::BadChunk);
    }
}
