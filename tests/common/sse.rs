//! A Server-Sent Events reader for the tests (CHANNELS.md §4): the response head, then the
//! chunked body decoded into SSE messages as a client assembles them.

use super::Server;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One SSE message as a client assembles it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Msg {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Vec<String>,
    pub retry: Option<String>,
    pub comment: bool,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data.join("\n")).expect("data is JSON")
    }
}

/// A stream's reader: the response head, then chunks decoded into SSE messages.
pub struct Stream {
    pub r: BufReader<TcpStream>,
    pub status: u16,
    pub head: String,
    pub text: String,
    pub ended: bool,
}

impl Stream {
    pub fn open(srv: &Server, target: &str, headers: &str) -> Stream {
        let s = srv.connect();
        let mut w = s.try_clone().unwrap();
        write!(w, "GET {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status = head[9..12].parse().unwrap();
        Stream {
            r,
            status,
            head,
            text: String::new(),
            ended: false,
        }
    }

    /// The refusal's JSON body (a non-200 answer has a Content-Length).
    pub fn refusal(&mut self) -> Value {
        let len: usize = self
            .head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("a length")
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Reads one chunk into `text`; false at the end of the body or of the connection.
    pub fn chunk(&mut self) -> bool {
        let mut line = String::new();
        if self.r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let n = usize::from_str_radix(line.trim_end(), 16).expect("a chunk size");
        let mut body = vec![0; n + 2];
        self.r.read_exact(&mut body).unwrap();
        assert_eq!(&body[n..], b"\r\n", "chunk trailer");
        if n == 0 {
            self.ended = true;
            return false;
        }
        self.text.push_str(std::str::from_utf8(&body[..n]).unwrap());
        true
    }

    /// The next message (or comment line), None once the body ended.
    pub fn next(&mut self) -> Option<Msg> {
        loop {
            if self.text.starts_with(':') {
                let end = self.text.find('\n')? + 1;
                self.text.drain(..end);
                return Some(Msg {
                    comment: true,
                    ..Msg::default()
                });
            }
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut m = Msg::default();
                for line in block.lines() {
                    let (k, v) = line.split_once(": ").unwrap_or((line, ""));
                    match k {
                        "id" => m.id = Some(v.into()),
                        "event" => m.event = Some(v.into()),
                        "data" => m.data.push(v.into()),
                        "retry" => m.retry = Some(v.into()),
                        _ => {}
                    }
                }
                return Some(m);
            }
            if !self.chunk() {
                return None;
            }
        }
    }

    /// The next message that is an event (comments skipped).
    pub fn event(&mut self) -> Msg {
        loop {
            let m = self.next().expect("an event before the end");
            if !m.comment && m.event.is_some() {
                return m;
            }
        }
    }
}
