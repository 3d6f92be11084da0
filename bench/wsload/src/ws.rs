//! Owns the WebSocket side of a connection: the upgrade request and its 101, answering server
//! pings (the payload echoed in a masked pong), heartbeat pings carrying their send time and
//! the pongs that measure them, the echo loop (one message in flight, the next sent the moment
//! its echo arrives), and the closing handshake from either side.

use crate::conn::{Conn, Ctx, Kind, State, find};
use crate::frame::{self, OP_CLOSE, OP_PING, OP_PONG};
use crate::pusher;
use crate::report::record;
use std::io;

/// Client frames must be masked; the mask need not be secret for a load test.
pub const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// The upgrade request every connection sends.
pub fn upgrade_request(path: &str, authority: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The echo message, built once: the server unmasks whatever mask it gets.
pub fn echo_message(size: usize, text: bool) -> Vec<u8> {
    let opcode = if text {
        frame::OP_TEXT
    } else {
        frame::OP_BINARY
    };
    frame::client_frame(opcode, &vec![b'x'; size], MASK)
}

impl Conn {
    /// Handles what arrived: the 101 while upgrading, then frames. Returns false once the
    /// closing handshake wsload started is complete; an error when the server closed first.
    pub(crate) fn ws_input(&mut self, cx: &mut Ctx) -> io::Result<bool> {
        // A subscriber stays in the handshake after its 101, until it is subscribed.
        if self.state == State::Handshaking && self.sub.as_ref().is_none_or(|s| !s.upgraded) {
            let Some(end) = find(&self.inbuf, b"\r\n\r\n") else {
                return Ok(true);
            };
            if !self.inbuf.starts_with(b"HTTP/1.1 101") {
                return Err(io::Error::other("upgrade refused"));
            }
            self.inbuf.drain(..end + 4);
            match &mut self.sub {
                Some(sub) => sub.upgraded = true,
                None => self.opened(cx),
            }
            if cx.plan.kind == Kind::Echo {
                self.send_message(cx)?;
            }
        }
        let mut pos = 0;
        while let Some(f) = frame::parse_server_frame(&self.inbuf[pos..]) {
            let payload = pos + f.payload.start..pos + f.payload.end;
            pos += f.len;
            match f.opcode {
                OP_PING => {
                    cx.stats.count.server_pings += 1;
                    // After our close frame nothing else may be sent.
                    if self.state == State::Open {
                        let pong = frame::client_frame(OP_PONG, &self.inbuf[payload], MASK);
                        self.link.send(&pong)?;
                        cx.stats.count.server_pings_answered += 1;
                    }
                }
                OP_PONG => {
                    if let Ok(sent) = <[u8; 8]>::try_from(&self.inbuf[payload]) {
                        let sent = u64::from_be_bytes(sent);
                        cx.stats.count.heartbeats += 1;
                        record(
                            &mut cx.stats.heartbeat_rtt_us,
                            cx.now_us.saturating_sub(sent),
                        );
                    }
                }
                OP_CLOSE => {
                    if self.state == State::Closing {
                        cx.stats.count.closed_clean += 1;
                        self.link.close_notify();
                        return Ok(false);
                    }
                    // The server closed first: answer with its status code, then it is lost.
                    let code = &self.inbuf[payload.start..payload.end.min(payload.start + 2)];
                    let reply = frame::client_frame(OP_CLOSE, code, MASK);
                    let _ = self.link.send(&reply);
                    return Err(io::Error::other("closed by the server"));
                }
                frame::OP_TEXT if self.sub.is_some() => {
                    let text = &self.inbuf[payload];
                    let msg =
                        pusher::parse_ws(text, self.channel_names(cx)).map_err(io::Error::other)?;
                    self.pusher_message(cx, msg)?;
                }
                0 if self.sub.is_some() => {
                    return Err(io::Error::other("fragmented messages are not supported"));
                }
                _ if cx.plan.kind == Kind::Echo && self.state == State::Open => {
                    if payload.len() != cx.plan.message_len {
                        return Err(io::Error::other("echo of the wrong size"));
                    }
                    if self.sent_us != 0 && cx.measuring {
                        cx.stats.count.messages += 1;
                        record(&mut cx.stats.rtt_us, cx.now_us.saturating_sub(self.sent_us));
                    }
                    self.send_message(cx)?;
                }
                // Data in idle mode, or echoes arriving after our close: nothing to do.
                _ => {}
            }
        }
        self.inbuf.drain(..pos);
        Ok(true)
    }

    fn send_message(&mut self, cx: &Ctx) -> io::Result<()> {
        self.sent_us = cx.now_us.max(1);
        self.link.send(&cx.plan.message)
    }

    /// A ping whose payload is its send time, for the pong to be measured against.
    pub(crate) fn ws_heartbeat(&mut self, cx: &mut Ctx) -> io::Result<()> {
        let ping = frame::client_frame(OP_PING, &cx.now_us.to_be_bytes(), MASK);
        self.link.send(&ping)?;
        cx.stats.count.heartbeats_sent += 1;
        Ok(())
    }

    /// Sends close 1000; the connection then waits for the server's close.
    pub(crate) fn ws_close(&mut self) -> io::Result<()> {
        let close = frame::client_frame(OP_CLOSE, &1000u16.to_be_bytes(), MASK);
        self.link.send(&close)
    }
}
