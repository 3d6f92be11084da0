//! Owns one load connection: a non-blocking connect from a chosen source address, the HTTP
//! upgrade, then the echo loop (one message in flight, the next sent the moment its echo
//! arrives), answering server pings on the way.

use crate::frame::{self, OP_CLOSE, OP_PING, OP_PONG};
use crate::report::Stats;
use mio::net::TcpStream;
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Upgrading,
    Open,
    Closed,
}

/// What every connection shares: the request bytes and the prebuilt message frame.
pub struct Plan {
    pub handshake: Vec<u8>,
    pub message: Vec<u8>,
    pub message_len: usize,
}

pub struct Conn {
    pub stream: TcpStream,
    pub phase: Phase,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    started: Instant,
    sent_at: Option<Instant>,
}

impl Conn {
    /// Starts a non-blocking connect. With a source address, binds it first with
    /// IP_BIND_ADDRESS_NO_PORT, so the port is chosen at connect time per (source, destination)
    /// and a million connections do not exhaust one address's ephemeral ports.
    pub fn open(target: SocketAddr, source: Option<IpAddr>) -> io::Result<Conn> {
        let sock = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if let Some(ip) = source {
            setsockopt(&sock, sockopt::IpBindAddressNoPort, &true).map_err(io::Error::from)?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match sock.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
            Err(e) => return Err(e),
        }
        Ok(Conn {
            stream: TcpStream::from_std(sock.into()),
            phase: Phase::Connecting,
            out: Vec::new(),
            out_pos: 0,
            inbuf: Vec::new(),
            started: Instant::now(),
            sent_at: None,
        })
    }

    /// Advances the connection after a readiness event. Returns false once it is finished.
    pub fn drive(&mut self, plan: &Plan, stats: &mut Stats, measuring: bool) -> bool {
        match self.step(plan, stats, measuring) {
            Ok(alive) => alive,
            Err(_) => {
                match self.phase {
                    Phase::Open => stats.lost += 1,
                    Phase::Connecting | Phase::Upgrading => stats.failed += 1,
                    Phase::Closed => {}
                }
                self.phase = Phase::Closed;
                false
            }
        }
    }

    fn step(&mut self, plan: &Plan, stats: &mut Stats, measuring: bool) -> io::Result<bool> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(true),
                Err(e) => return Err(e),
            }
            self.phase = Phase::Upgrading;
            self.queue(&plan.handshake);
        }
        self.flush()?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.phase == Phase::Upgrading {
            let Some(end) = find(&self.inbuf, b"\r\n\r\n") else {
                return Ok(true);
            };
            if !self.inbuf.starts_with(b"HTTP/1.1 101") {
                return Err(io::Error::other("upgrade refused"));
            }
            self.inbuf.drain(..end + 4);
            self.phase = Phase::Open;
            stats.connected += 1;
            let _ = stats
                .connect_us
                .record(self.started.elapsed().as_micros().max(1) as u64);
            self.send_message(plan);
        }
        let mut pos = 0;
        while let Some(f) = frame::parse_server_frame(&self.inbuf[pos..]) {
            let payload = pos + f.payload.start..pos + f.payload.end;
            match f.opcode {
                OP_PING => {
                    let pong = frame::client_frame(OP_PONG, &self.inbuf[payload], [9, 8, 7, 6]);
                    self.queue(&pong);
                }
                OP_CLOSE => {
                    self.queue(&frame::client_frame(OP_CLOSE, &[], [1, 1, 1, 1]));
                    let _ = self.flush();
                    return Err(io::Error::other("server closed"));
                }
                OP_PONG => {}
                _ => {
                    if payload.len() != plan.message_len {
                        return Err(io::Error::other("echo of the wrong size"));
                    }
                    if let Some(t) = self.sent_at.take()
                        && measuring
                    {
                        stats.messages += 1;
                        let _ = stats.rtt_us.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    self.send_message(plan);
                }
            }
            pos += f.len;
        }
        self.inbuf.drain(..pos);
        self.flush()?;
        Ok(true)
    }

    fn send_message(&mut self, plan: &Plan) {
        self.queue(&plan.message);
        self.sent_at = Some(Instant::now());
    }

    fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn libc_einprogress() -> i32 {
    nix::errno::Errno::EINPROGRESS as i32
}
