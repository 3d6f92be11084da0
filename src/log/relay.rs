//! Owns how the supervisor passes on its server processes' log lines. Text lines become
//! `holdfast[i]: message` (the process's own `holdfast: ` replaced by its index); JSON lines,
//! which the processes already mark with `"process":i`, pass through untouched; anything else a
//! process writes (a panic message under the text format, say) is wrapped so that the
//! supervisor's stderr stays all text or all JSON. Also says whether a line was the process's
//! `ready`.

use super::line::{PREFIX, escape_text, render};
use super::{Format, Level, READY};

pub struct Relayed {
    /// The line to write, newline included.
    pub line: Vec<u8>,
    /// The process said it is serving.
    pub ready: bool,
}

/// Relays `line` (without its newline) from process `index`; `unix_ms` stamps a wrapped line.
pub fn relay(format: Format, index: usize, line: &str, unix_ms: u64) -> Relayed {
    match format {
        Format::Text => {
            let text = line.strip_prefix(PREFIX).unwrap_or(line);
            let mut out = format!("holdfast[{index}]: ").into_bytes();
            escape_text(&mut out, text.as_bytes(), false);
            out.push(b'\n');
            Relayed {
                line: out,
                ready: text == READY,
            }
        }
        Format::Json => {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) {
                Ok(obj) => {
                    let mut out = line.as_bytes().to_vec();
                    out.push(b'\n');
                    Relayed {
                        line: out,
                        ready: obj.get("msg").and_then(|m| m.as_str()) == Some(READY),
                    }
                }
                Err(_) => Relayed {
                    line: render(Format::Json, Level::Error, Some(index), unix_ms, line),
                    ready: false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &str) -> (String, bool) {
        let r = relay(Format::Text, 1, line, 0);
        (String::from_utf8(r.line).unwrap(), r.ready)
    }

    #[test]
    fn text_lines_carry_the_process_index() {
        assert_eq!(
            text("holdfast: ready"),
            ("holdfast[1]: ready\n".into(), true)
        );
        assert_eq!(
            text("holdfast: warn: odd"),
            ("holdfast[1]: warn: odd\n".into(), false)
        );
        assert_eq!(
            text("thread 'x' panicked\x1b"),
            ("holdfast[1]: thread 'x' panicked\\x1b\n".into(), false)
        );
        assert!(!text("holdfast: ready, or not").1);
    }

    #[test]
    fn json_lines_pass_through_and_anything_else_becomes_json() {
        let child = render(Format::Json, Level::Info, Some(1), 5, READY);
        let child = std::str::from_utf8(&child).unwrap().trim_end();
        let r = relay(Format::Json, 1, child, 0);
        assert!(r.ready);
        assert_eq!(r.line, format!("{child}\n").into_bytes());

        let quoted = render(Format::Json, Level::Info, Some(1), 5, "\"msg\":\"ready\"");
        let quoted = std::str::from_utf8(&quoted).unwrap().trim_end();
        assert!(!relay(Format::Json, 1, quoted, 0).ready);

        let r = relay(Format::Json, 2, "thread 'main' panicked at \"x\"", 7);
        assert!(!r.ready);
        let v: serde_json::Value = serde_json::from_slice(&r.line).unwrap();
        assert_eq!(v["msg"], "thread 'main' panicked at \"x\"");
        assert_eq!(v["process"], 2);
        assert_eq!(v["level"], "error");
    }
}
