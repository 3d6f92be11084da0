//! Owns how one log line looks: the `holdfast: ` text shape that people and the supervisor read,
//! the one-object-per-line JSON shape that log shippers read, timestamps, and the escaping that
//! keeps any message (quotes, newlines, control characters, bytes from the network) on one line
//! and, in JSON, valid. Pure: the caller supplies the time.

use super::{Format, Level};
use crate::time::civil::civil_from_days;

/// What every text line starts with; the supervisor strips it when it relays a line.
pub const PREFIX: &str = "holdfast: ";

/// A leveled line, newline included. Text: `holdfast: message` for info (the shape scripts and
/// the supervisor read), `holdfast: warn: message` otherwise. JSON: `{"ts","level",["process"],
/// "msg"}`.
pub fn render(
    format: Format,
    level: Level,
    process: Option<usize>,
    unix_ms: u64,
    msg: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    match format {
        Format::Text => {
            out.extend_from_slice(PREFIX.as_bytes());
            if level != Level::Info {
                out.extend_from_slice(level.name().as_bytes());
                out.extend_from_slice(b": ");
            }
            escape_text(&mut out, msg.as_bytes(), false);
        }
        Format::Json => {
            out.extend_from_slice(b"{\"ts\":\"");
            timestamp(&mut out, unix_ms);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(level.name().as_bytes());
            out.push(b'"');
            if let Some(p) = process {
                out.extend_from_slice(b",\"process\":");
                push_u64(&mut out, p as u64);
            }
            out.extend_from_slice(b",\"msg\":");
            json_string(&mut out, msg.as_bytes());
            out.push(b'}');
        }
    }
    out.push(b'\n');
    out
}

/// ISO 8601 in UTC with milliseconds: `2026-12-05T14:00:00.123Z`.
pub fn timestamp(out: &mut Vec<u8>, unix_ms: u64) {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let year = year.clamp(0, 9999) as u64;
    put(&mut b[0..4], year);
    put(&mut b[5..7], u64::from(month));
    put(&mut b[8..10], u64::from(day));
    put(&mut b[11..13], s / 3600);
    put(&mut b[14..16], s / 60 % 60);
    put(&mut b[17..19], s % 60);
    put(&mut b[20..23], unix_ms % 1000);
    out.extend_from_slice(&b);
}

/// Writes `v` as decimal digits filling `dst` (zero-padded on the left).
fn put(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Copies `s` for a text line. Control characters (a newline in an error from a library, an
/// escape sequence from a peer) become `\n`, `\r`, `\t` or `\xHH`, so a line stays one line and
/// cannot drive a terminal. `quoted`: the text sits between double quotes in the line (the
/// access log's request), so `"` and `\` are escaped too, and every byte that is not printable
/// ASCII becomes `\xHH`, as nginx does; otherwise UTF-8 is kept as it is for people to read.
pub fn escape_text(out: &mut Vec<u8>, s: &[u8], quoted: bool) {
    for &b in s {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'"' | b'\\' if quoted => {
                out.push(b'\\');
                out.push(b);
            }
            0x80..=0xff if !quoted => out.push(b),
            0x20..=0x7e => out.push(b),
            _ => {
                out.extend_from_slice(b"\\x");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
    }
}

/// Writes `s` as a JSON string, quotes included (RFC 8259 §7): `"` and `\` escaped, control
/// characters as `\n`-style or `\u00XX` escapes, UTF-8 kept; bytes that are not UTF-8 (never in
/// a message, only conceivable in bytes from a peer) become U+FFFD so the line stays valid.
pub fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x00..=0x1f | 0x7f => {
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 15)]);
                }
                _ => out.push(b),
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(level: Level, msg: &str) -> String {
        String::from_utf8(render(Format::Text, level, None, 0, msg)).unwrap()
    }

    fn json(process: Option<usize>, msg: &str) -> serde_json::Value {
        let line = render(Format::Json, Level::Warn, process, 1_796_479_200_123, msg);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&line).expect("valid JSON")
    }

    #[test]
    fn text_lines_keep_the_shapes_scripts_read() {
        assert_eq!(text(Level::Info, "ready"), "holdfast: ready\n");
        assert_eq!(
            text(
                Level::Info,
                "listening on http://127.0.0.1:8080 (workers: 2)"
            ),
            "holdfast: listening on http://127.0.0.1:8080 (workers: 2)\n"
        );
        assert_eq!(text(Level::Warn, "odd"), "holdfast: warn: odd\n");
        assert_eq!(text(Level::Error, "bad"), "holdfast: error: bad\n");
        assert_eq!(text(Level::Debug, "chatter"), "holdfast: debug: chatter\n");
    }

    #[test]
    fn text_lines_stay_one_line_and_cannot_drive_a_terminal() {
        assert_eq!(
            text(Level::Info, "a\nb\r\tc\x1b[31m \"q\" é"),
            "holdfast: a\\nb\\r\\tc\\x1b[31m \"q\" é\n"
        );
        let mut out = Vec::new();
        escape_text(&mut out, b"GET /\"x\\ \xff\x7f", true);
        assert_eq!(out, b"GET /\\\"x\\\\ \\xff\\x7f");
    }

    #[test]
    fn json_lines_parse_back_for_any_message() {
        for msg in [
            "plain",
            "quotes \" and \\ backslashes",
            "new\nline\r\n and tab\t",
            "controls \u{0} \u{1} \u{1f} \u{7f}",
            "non-ASCII: é ü 日本語 🦀",
            "",
            "{\"msg\":\"ready\"}",
        ] {
            let v = json(Some(3), msg);
            assert_eq!(v["msg"], msg, "{msg:?}");
            assert_eq!(v["level"], "warn");
            assert_eq!(v["process"], 3);
            assert_eq!(v["ts"], "2026-12-05T14:00:00.123Z");
        }
        assert!(json(None, "x").get("process").is_none());
    }

    #[test]
    fn json_strings_survive_bytes_that_are_not_utf8() {
        let mut out = Vec::new();
        json_string(&mut out, b"a\xffb\xc3");
        let v: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn timestamps() {
        let ts = |ms| {
            let mut out = Vec::new();
            timestamp(&mut out, ms);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(ts(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
