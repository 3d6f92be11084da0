//! Test harness: starts the real `holdfast` binary on an ephemeral loopback port, reads the
//! bound address from its log, and kills it by PID when dropped. Also a small HTTP/1.1 response
//! reader for raw-socket tests.
#![allow(dead_code)]

pub mod h2;
pub mod pusher;
pub mod sse;
pub mod tools;
pub mod ws;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The TLS listener's address, when the test enabled one (`server.tls_listen=127.0.0.1:0`).
    pub tls_addr: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `holdfast serve` with two workers on 127.0.0.1:0, TLS off, plus `sets`.
    pub fn start(sets: &[&str]) -> Server {
        Server::start_full(&[], sets, |_| {})
    }

    /// `start`, with the command adjusted first (its environment, its process group).
    pub fn start_with(sets: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        Server::start_full(&[], sets, adjust)
    }

    /// `start`, with the binary run by `wrapper` (a program and its first arguments, e.g. a
    /// shell that lowers a limit and then execs `"$@"`).
    pub fn start_wrapped(wrapper: &[&str], sets: &[&str]) -> Server {
        Server::start_full(wrapper, sets, |_| {})
    }

    fn start_full(wrapper: &[&str], sets: &[&str], adjust: impl FnOnce(&mut Command)) -> Server {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--set".into(),
            "server.listen=127.0.0.1:0".into(),
            "--set".into(),
            "server.tls_listen=".into(),
            "--set".into(),
            "server.workers=2".into(),
        ];
        for s in sets {
            args.push("--set".into());
            args.push((*s).into());
        }
        let mut cmd = match wrapper {
            [] => Command::new(env!("CARGO_BIN_EXE_holdfast")),
            [program, first @ ..] => {
                let mut c = Command::new(program);
                c.args(first).arg(env!("CARGO_BIN_EXE_holdfast"));
                c
            }
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("start holdfast");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                log2.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut addr = None;
        let mut tls_addr = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => as_text(&l),
                Err(_) => {
                    let _ = child.kill();
                    panic!("holdfast did not start; log: {:?}", log.lock().unwrap());
                }
            };
            if let Some(rest) = line.strip_prefix("holdfast: listening on http://") {
                let a = rest.split_whitespace().next().unwrap();
                addr = Some(a.parse().unwrap());
            }
            if let Some(rest) = line.strip_prefix("holdfast: listening on https://") {
                let a = rest.split_whitespace().next().unwrap();
                tls_addr = Some(a.parse().unwrap());
            }
            if line == "holdfast: ready" {
                break;
            }
        }
        Server {
            child,
            addr: addr.expect("listening line"),
            tls_addr,
            log,
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A connection as a buffered reader and a writer on the same socket.
    pub fn pair(&self) -> (BufReader<TcpStream>, TcpStream) {
        let s = self.connect();
        (BufReader::new(s.try_clone().unwrap()), s)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal by PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// One GET on a fresh connection, for metrics and health checks.
    pub fn get(&self, path: &str) -> Response {
        let mut s = self.connect();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        read_response(&mut r).expect("response")
    }

    /// The value of one sample line of `/metrics`, e.g. `holdfast_requests_total`.
    pub fn metric(&self, name: &str) -> u64 {
        let body = String::from_utf8(self.get("/metrics").body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Polls `/metrics` until `done` holds for `name`'s value or `timeout` passes: Ok with the
    /// value that satisfied it, or Err with the last value seen.
    pub fn wait_metric(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(u64) -> bool,
    ) -> Result<u64, u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(name);
            if done(value) {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                return Err(value);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The whole `/metrics` exposition.
    pub fn metrics_text(&self) -> String {
        String::from_utf8(self.get("/metrics").body).unwrap()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to 10 s for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// A log line as text: under `log.format = "json"`, the line's `msg` after `holdfast: ` (or
/// `holdfast[i]: ` for a supervised process's), as the text format would say it, so that
/// start-up lines are recognised in both formats.
pub fn as_text(line: &str) -> String {
    if line.starts_with('{')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
        && let Some(msg) = v["msg"].as_str()
    {
        return match v["process"].as_u64() {
            Some(i) => format!("holdfast[{i}]: {msg}"),
            None => format!("holdfast: {msg}"),
        };
    }
    line.to_string()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head, for assertions on exact bytes.
    pub head: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one final response (skipping 1xx interim ones unless `keep_interim`), framed by
/// Content-Length or chunked. `head_request`: the response to a HEAD has no body.
pub fn read_response_ext(
    r: &mut impl BufRead,
    head_request: bool,
    keep_interim: bool,
) -> std::io::Result<Response> {
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("EOF in response head after {head:?}"),
                ));
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header colon");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
            head,
        };
        if (100..200).contains(&status) {
            if keep_interim {
                return Ok(resp);
            }
            continue;
        }
        if head_request || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size_line = String::new();
                r.read_line(&mut size_line)?;
                let size = usize::from_str_radix(size_line.trim(), 16).expect("chunk size");
                if size == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end)?;
                    assert_eq!(end, "\r\n", "no trailers expected");
                    break;
                }
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk)?;
                assert_eq!(&chunk[size..], b"\r\n");
                resp.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            resp.body = vec![0; len];
            r.read_exact(&mut resp.body)?;
        } else {
            r.read_to_end(&mut resp.body)?;
        }
        return Ok(resp);
    }
}

pub fn read_response(r: &mut impl BufRead) -> std::io::Result<Response> {
    read_response_ext(r, false, false)
}

/// True when the peer closed: a read returns EOF (or a reset) within `timeout`.
pub fn closed_within(s: &mut impl Read, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => return true,
        }
    }
    false
}

/// Sends raw bytes on a new connection and returns everything until the server closes.
pub fn exchange_until_close(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// What [`run_bounded`] saw.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// Exited by itself, with status 0.
    pub success: bool,
    /// Its exit status, None when it was killed at the timeout.
    pub status: Option<std::process::ExitStatus>,
}

/// Runs `cmd` to its end or kills it (by PID) after `timeout`, collecting its output: a
/// command that should exit but does not fails its test instead of hanging the suite.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    let err_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_thread.join().unwrap();
    let mut stderr = err_thread.join().unwrap();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {timeout:?})"));
    }
    Run {
        stdout,
        stderr,
        success: status.is_some_and(|s| s.success()),
        status,
    }
}
