//! Owns the access log's lines and each worker's half of writing them: what `log.access` may
//! name, how a client address is kept (18 bytes, only while the access log is on), what one line
//! says (text like nginx's and HAProxy's, or a JSON object), sampling, and the per-worker buffer
//! that lines are formatted into and handed, whole, to the writer thread (`writer.rs`) without
//! ever waiting for it: a full queue drops the batch and counts its lines.

use super::Format;
use super::line::{escape_text, json_string, push_u64, timestamp};
use super::sample::Sampler;
use super::writer::Queue;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Where `log.access` sends lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `""` or `"off"` (the default).
    Off,
    /// `"stderr"` (or `/dev/stderr`): beside the server's own log lines.
    Stderr,
    /// `"stdout"` (or `/dev/stdout`).
    Stdout,
    /// Appended to; reopened on SIGHUP for logrotate.
    File(PathBuf),
}

impl Target {
    /// The names nginx users write (`off`, `/dev/stderr`) mean what they expect; a device path
    /// is not opened as a file, which would fail when stderr is a socket (journald).
    pub fn parse(s: &str) -> Target {
        match s {
            "" | "off" => Target::Off,
            "stderr" | "/dev/stderr" => Target::Stderr,
            "stdout" | "/dev/stdout" => Target::Stdout,
            path => Target::File(PathBuf::from(path)),
        }
    }
}

/// A client address in 18 bytes (an IPv4 address as IPv4-mapped IPv6, then the port), so that
/// the engine's table of them costs little per connection; all zeros when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peer([u8; 18]);

impl Peer {
    pub const UNKNOWN: Peer = Peer([0; 18]);

    pub fn addr(&self) -> Option<SocketAddr> {
        if *self == Peer::UNKNOWN {
            return None;
        }
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&self.0[..16]);
        let port = u16::from_be_bytes([self.0[16], self.0[17]]);
        Some(SocketAddr::new(Ipv6Addr::from(ip).to_canonical(), port))
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut b = [0u8; 18];
        b[..16].copy_from_slice(&ip.octets());
        b[16..].copy_from_slice(&a.port().to_be_bytes());
        Peer(b)
    }
}

/// The request a response answers, when one was parsed (a malformed head has none).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// As sent: an unknown method (answered 501) shows as the client wrote it.
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: &'static str,
}

/// One line's facts.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub unix_ms: u64,
    pub peer: Peer,
    pub request: Option<Request<'a>>,
    pub status: u16,
    /// The response's bytes (status line, fields and body) as queued, before TLS.
    pub bytes: u64,
    /// From the first byte of the request head to the response being queued.
    pub duration_ms: u64,
}

/// Appends one line, newline included.
///
/// Text: `127.0.0.1:50144 [2026-12-05T14:00:00.123Z] "GET /plaintext HTTP/1.1" 200 134 0.000`,
/// the client with its port and the time in brackets as HAProxy writes them, then the request,
/// status, bytes and seconds as nginx's combined format and `$request_time` do; `-` for what is
/// unknown. JSON: `{"ts","type":"access",["process"],"client","method","target","version",
/// "status","bytes","duration_ms"}` with `null` for what is unknown.
pub fn render(out: &mut Vec<u8>, format: Format, process: Option<usize>, e: &Entry<'_>) {
    let client = e.peer.addr().map(|a| a.to_string());
    match format {
        Format::Text => {
            out.extend_from_slice(client.as_deref().unwrap_or("-").as_bytes());
            out.extend_from_slice(b" [");
            timestamp(out, e.unix_ms);
            out.extend_from_slice(b"] \"");
            match &e.request {
                Some(r) => {
                    escape_text(out, r.method, true);
                    out.push(b' ');
                    escape_text(out, r.target, true);
                    out.push(b' ');
                    out.extend_from_slice(r.version.as_bytes());
                }
                None => out.push(b'-'),
            }
            out.extend_from_slice(b"\" ");
            push_u64(out, u64::from(e.status));
            out.push(b' ');
            push_u64(out, e.bytes);
            out.push(b' ');
            push_u64(out, e.duration_ms / 1000);
            let ms = e.duration_ms % 1000;
            out.extend_from_slice(&[
                b'.',
                b'0' + (ms / 100) as u8,
                b'0' + (ms / 10 % 10) as u8,
                b'0' + (ms % 10) as u8,
            ]);
        }
        Format::Json => {
            out.extend_from_slice(b"{\"ts\":\"");
            timestamp(out, e.unix_ms);
            out.extend_from_slice(b"\",\"type\":\"access\"");
            if let Some(p) = process {
                out.extend_from_slice(b",\"process\":");
                push_u64(out, p as u64);
            }
            out.extend_from_slice(b",\"client\":");
            json_or_null(out, client.as_deref().map(str::as_bytes));
            out.extend_from_slice(b",\"method\":");
            json_or_null(out, e.request.map(|r| r.method));
            out.extend_from_slice(b",\"target\":");
            json_or_null(out, e.request.map(|r| r.target));
            out.extend_from_slice(b",\"version\":");
            json_or_null(out, e.request.map(|r| r.version.as_bytes()));
            out.extend_from_slice(b",\"status\":");
            push_u64(out, u64::from(e.status));
            out.extend_from_slice(b",\"bytes\":");
            push_u64(out, e.bytes);
            out.extend_from_slice(b",\"duration_ms\":");
            push_u64(out, e.duration_ms);
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

fn json_or_null(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(s) => json_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A batch is handed to the writer once it holds this much ...
const BATCH_BYTES: usize = 32 * 1024;
/// ... or once its first line has waited this long (engine milliseconds), so a quiet server's
/// lines still appear promptly while a busy one hands over few, large batches.
pub const BATCH_DELAY_MS: u64 = 50;

/// One worker's access log: its sampler and its buffer of formatted lines. Single-threaded (the
/// worker's), reached by protocol code through `Context`, hence the cells.
pub struct WorkerLog {
    queue: Arc<Queue>,
    format: Format,
    process: Option<usize>,
    sampler: Sampler,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    /// Engine time of the oldest buffered line.
    first_at: Cell<Option<u64>>,
    dropped: Cell<u64>,
    /// This loop turn's clocks, set by the engine: protocols never read a clock.
    now_ms: Cell<u64>,
    unix_ms: Cell<u64>,
}

impl WorkerLog {
    pub(super) fn new(
        queue: Arc<Queue>,
        format: Format,
        process: Option<usize>,
        sampler: Sampler,
    ) -> WorkerLog {
        WorkerLog {
            queue,
            format,
            process,
            sampler,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
            first_at: Cell::new(None),
            dropped: Cell::new(0),
            now_ms: Cell::new(0),
            unix_ms: Cell::new(0),
        }
    }

    /// The engine, once per loop turn: its monotonic milliseconds and the wall clock's.
    pub fn set_time(&self, now_ms: u64, unix_ms: u64) {
        self.now_ms.set(now_ms);
        self.unix_ms.set(unix_ms);
    }

    /// Whether a response with `status` gets a line: every error (4xx and 5xx, the lines an
    /// operator looks for, and rare on a healthy server), and `log.access_sample` of the rest.
    /// Asked before anything is formatted.
    #[inline]
    pub fn wants(&self, status: u16) -> bool {
        status >= 400 || self.sampler.take()
    }

    /// Formats one line into the buffer (handing the buffer over if it is full).
    pub fn write(
        &self,
        peer: Peer,
        request: Option<Request<'_>>,
        status: u16,
        bytes: u64,
        duration_ms: u64,
    ) {
        let entry = Entry {
            unix_ms: self.unix_ms.get(),
            peer,
            request,
            status,
            bytes,
            duration_ms,
        };
        let full = {
            let mut buf = self.buf.borrow_mut();
            if buf.capacity() == 0 {
                *buf = self.queue.spare(BATCH_BYTES + 1024);
            }
            render(&mut buf, self.format, self.process, &entry);
            buf.len() >= BATCH_BYTES
        };
        self.lines.set(self.lines.get() + 1);
        if self.first_at.get().is_none() {
            self.first_at.set(Some(self.now_ms.get()));
        }
        if full {
            self.flush();
        }
    }

    /// When buffered lines are due to be handed over: the engine waits no longer than this.
    pub fn due_at(&self) -> Option<u64> {
        self.first_at.get().map(|t| t + BATCH_DELAY_MS)
    }

    /// Hands the buffer over if its lines are due (the engine, every loop turn).
    pub fn flush_if_due(&self, now_ms: u64) {
        if self.due_at().is_some_and(|t| now_ms >= t) {
            self.flush();
        }
    }

    /// Hands the buffered lines to the writer without waiting: if its queue is full the lines
    /// are dropped and counted.
    pub fn flush(&self) {
        let lines = self.lines.replace(0);
        self.first_at.set(None);
        if lines == 0 {
            return;
        }
        let batch = std::mem::take(&mut *self.buf.borrow_mut());
        if let Err(mut batch) = self.queue.try_send(batch) {
            self.dropped.set(self.dropped.get() + lines);
            batch.clear();
            *self.buf.borrow_mut() = batch;
        }
    }

    /// Lines dropped since the last call, for `holdfast_access_log_dropped_total`.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.replace(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Peer {
        Peer::from(s.parse::<SocketAddr>().unwrap())
    }

    fn line(format: Format, e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        render(&mut out, format, Some(1), e);
        String::from_utf8(out).unwrap()
    }

    const GET: Request<'static> = Request {
        method: b"GET",
        target: b"/plaintext?x=1",
        version: "HTTP/1.1",
    };

    #[test]
    fn peers_keep_v4_and_v6_addresses_in_18_bytes() {
        assert_eq!(size_of::<Peer>(), 18);
        for a in [
            "127.0.0.1:50144",
            "[::1]:8080",
            "[2001:db8::7]:1",
            "10.0.0.1:65535",
        ] {
            assert_eq!(peer(a).addr().unwrap().to_string(), a);
        }
        assert_eq!(Peer::UNKNOWN.addr(), None);
    }

    #[test]
    fn text_lines() {
        let e = Entry {
            unix_ms: 1_796_479_200_123,
            peer: peer("127.0.0.1:50144"),
            request: Some(GET),
            status: 200,
            bytes: 134,
            duration_ms: 1_234,
        };
        assert_eq!(
            line(Format::Text, &e),
            "127.0.0.1:50144 [2026-12-05T14:00:00.123Z] \"GET /plaintext?x=1 HTTP/1.1\" 200 134 1.234\n"
        );
        let bad = Entry {
            request: None,
            peer: Peer::UNKNOWN,
            status: 400,
            duration_ms: 7,
            ..e
        };
        assert_eq!(
            line(Format::Text, &bad),
            "- [2026-12-05T14:00:00.123Z] \"-\" 400 134 0.007\n"
        );
        let odd = Entry {
            request: Some(Request {
                method: b"BR\"EW",
                target: b"/\n\x1b",
                version: "HTTP/1.0",
            }),
            ..e
        };
        assert!(
            line(Format::Text, &odd).contains("\"BR\\\"EW /\\n\\x1b HTTP/1.0\" 200"),
            "{}",
            line(Format::Text, &odd)
        );
    }

    #[test]
    fn json_lines_parse_back() {
        let e = Entry {
            unix_ms: 1_796_479_200_123,
            peer: peer("[::1]:9"),
            request: Some(Request {
                method: b"GET",
                target: b"/\"q\"\\\n\x00",
                version: "HTTP/1.1",
            }),
            status: 101,
            bytes: 129,
            duration_ms: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &e)).unwrap();
        assert_eq!(v["ts"], "2026-12-05T14:00:00.123Z");
        assert_eq!(v["type"], "access");
        assert_eq!(v["process"], 1);
        assert_eq!(v["client"], "[::1]:9");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/\"q\"\\\n\u{0}");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["status"], 101);
        assert_eq!(v["bytes"], 129);
        assert_eq!(v["duration_ms"], 0);
        let none = Entry {
            request: None,
            peer: Peer::UNKNOWN,
            ..e
        };
        let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &none)).unwrap();
        assert!(v["method"].is_null() && v["target"].is_null() && v["client"].is_null());
    }

    #[test]
    fn targets_name_what_nginx_users_write() {
        assert_eq!(Target::parse(""), Target::Off);
        assert_eq!(Target::parse("off"), Target::Off);
        assert_eq!(Target::parse("/dev/stderr"), Target::Stderr);
        assert_eq!(Target::parse("stdout"), Target::Stdout);
        assert_eq!(
            Target::parse("/var/log/holdfast/access.log"),
            Target::File("/var/log/holdfast/access.log".into())
        );
    }
}
