//! Owns one connection's byte transport: the non-blocking connect from a chosen source address,
//! and moving plaintext in and out of the socket, directly or through a rustls
//! `ClientConnection` (driven by hand over the mio stream: read_tls, process_new_packets, the
//! plaintext reader; the plaintext writer, then write_tls while it wants to write). Buffers are
//! only held while bytes are actually waiting, so an idle plain link is a few words.

use crate::tls::TlsPlan;
use mio::net::TcpStream;
use nix::sys::socket::{setsockopt, sockopt};
use rustls::{ClientConnection, HandshakeKind};
use socket2::{Domain, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

pub struct Link {
    pub stream: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Plain links only: bytes the socket did not take yet (rustls keeps its own).
    out: Vec<u8>,
    out_pos: usize,
}

impl Link {
    /// Starts a non-blocking connect. With a source address, binds it first with
    /// IP_BIND_ADDRESS_NO_PORT, so the port is chosen at connect time per (source, destination)
    /// and a million connections do not exhaust one address's ephemeral ports.
    pub fn open(
        target: SocketAddr,
        source: Option<IpAddr>,
        tls: Option<&TlsPlan>,
    ) -> io::Result<Link> {
        let sock = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if let Some(ip) = source {
            setsockopt(&sock, sockopt::IpBindAddressNoPort, &true).map_err(io::Error::from)?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match sock.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
            Err(e) => return Err(e),
        }
        let tls = match tls {
            Some(p) => {
                let mut c = ClientConnection::new(p.config.clone(), p.name.clone())
                    .map_err(io::Error::other)?;
                // Messages are one at a time; never let rustls refuse a large one.
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            None => None,
        };
        Ok(Link {
            stream: TcpStream::from_std(sock.into()),
            tls,
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Whether the non-blocking connect has finished (an error if it failed).
    pub fn connected(&self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends plaintext: written now as far as the socket takes it, the rest kept for `flush`.
    /// On TLS, before the handshake is done, rustls holds it until it is.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            Some(tls) => {
                tls.writer().write_all(bytes)?;
            }
            None if self.out.is_empty() => {
                let mut pos = 0;
                while pos < bytes.len() {
                    match self.stream.write(&bytes[pos..]) {
                        Ok(n) => pos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                self.out.extend_from_slice(&bytes[pos..]);
                return Ok(());
            }
            None => self.out.extend_from_slice(bytes),
        }
        self.flush()
    }

    /// Writes what is waiting until it is all out or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.out = Vec::new();
        self.out_pos = 0;
        Ok(())
    }

    /// Reads everything the socket has (it is edge-triggered), appending the plaintext to
    /// `into`; `scratch` is the loop's shared read buffer. Returns true when the peer has
    /// finished sending (TCP FIN, or TLS close_notify). Flushes afterwards, since a TLS
    /// handshake step or a key update may have something to answer.
    pub fn recv(&mut self, scratch: &mut [u8], into: &mut Vec<u8>) -> io::Result<bool> {
        let mut eof = false;
        match &mut self.tls {
            None => loop {
                match self.stream.read(scratch) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => into.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            },
            Some(tls) => loop {
                let mut tcp_eof = false;
                match tls.read_tls(&mut self.stream) {
                    Ok(0) => tcp_eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                if let Err(e) = tls.process_new_packets() {
                    // Let the alert rustls queued go out before giving up.
                    let _ = tls.write_tls(&mut self.stream);
                    return Err(io::Error::other(e));
                }
                loop {
                    match tls.reader().read(scratch) {
                        // close_notify, after the last of the data.
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => into.extend_from_slice(&scratch[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // TCP closed without close_notify.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            eof = true;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                if eof || tcp_eof {
                    eof = true;
                    break;
                }
            },
        }
        self.flush()?;
        Ok(eof)
    }

    /// Whether the TLS handshake is over and how it went (None on a plain link or while it is
    /// still going).
    pub fn handshake_done(&self) -> Option<HandshakeKind> {
        let tls = self.tls.as_ref()?;
        if tls.is_handshaking() {
            return None;
        }
        tls.handshake_kind()
    }

    /// The TLS version agreed on (None on a plain link or before the server has said).
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.as_ref()?.protocol_version()
    }

    /// On TLS, says close_notify (best effort) before the socket is dropped.
    pub fn close_notify(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = self.flush();
        }
    }
}
