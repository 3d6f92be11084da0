//! Owns one load connection's life: connecting, the handshake (WebSocket upgrade or first HTTP
//! response, after TLS when there is TLS), open, and closing; what each of those counts as
//! (connected, failed, lost, closed cleanly, full or resumed TLS handshake). The protocol
//! steps themselves are in ws.rs and http.rs.

use crate::link::Link;
use crate::report::{Stats, record};
use crate::sub::{Sub, SubPlan};
use crate::tls::TlsPlan;
use rustls::HandshakeKind;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Echo,
    Idle,
    HttpIdle,
    /// A Pusher channel subscriber (sub.rs), over WebSocket or SSE.
    Subscribe,
}

/// What every connection shares.
pub struct Plan {
    pub kind: Kind,
    /// The WebSocket upgrade request, or the HTTP request that is also the heartbeat.
    pub request: Vec<u8>,
    /// Echo: the prebuilt message frame, and its payload length.
    pub message: Vec<u8>,
    pub message_len: usize,
    pub tls: Option<TlsPlan>,
    /// Subscribe: the channels and what subscribes to each.
    pub sub: Option<SubPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    /// TLS (if any) and the upgrade, or the first request and its response.
    Handshaking,
    Open,
    /// wsload started the close and waits for the server's.
    Closing,
}

pub struct Conn {
    pub link: Link,
    pub state: State,
    pub(crate) inbuf: Vec<u8>,
    /// When the connect started, in µs since the run's epoch.
    pub(crate) started_us: u64,
    /// When the message or request now in flight was sent (0: none).
    pub(crate) sent_us: u64,
    tls_counted: bool,
    /// Subscribe: its channel and what it was delivered.
    pub(crate) sub: Option<Box<Sub>>,
}

/// What a connection needs from the loop while it is driven.
pub struct Ctx<'a> {
    pub plan: &'a Plan,
    pub stats: &'a mut Stats,
    /// Echo: round trips count now (after the warm-up).
    pub measuring: bool,
    pub now_us: u64,
    pub scratch: &'a mut [u8],
}

impl Conn {
    pub fn open(
        target: SocketAddr,
        source: Option<IpAddr>,
        plan: &Plan,
        now_us: u64,
    ) -> io::Result<Conn> {
        Ok(Conn {
            link: Link::open(target, source, plan.tls.as_ref())?,
            state: State::Connecting,
            inbuf: Vec::new(),
            started_us: now_us,
            sent_us: 0,
            tls_counted: false,
            sub: None,
        })
    }

    /// Advances the connection after a readiness event. Returns false once it is finished
    /// (counted as whatever it turned out to be).
    pub fn drive(&mut self, cx: &mut Ctx) -> bool {
        match self.step(cx) {
            Ok(alive) => alive,
            Err(e) => {
                self.fail(cx.stats, &e);
                false
            }
        }
    }

    /// Counts a connection that broke: lost once open, failed before.
    pub fn fail(&mut self, stats: &mut Stats, why: &io::Error) {
        match self.state {
            State::Open => {
                stats.count.lost += 1;
                say_once(&FIRST_LOSS, "first lost connection", why);
            }
            State::Connecting | State::Handshaking => {
                stats.count.failed += 1;
                say_once(&FIRST_FAILURE, "first failed connection", why);
            }
            State::Closing => {}
        }
    }

    fn step(&mut self, cx: &mut Ctx) -> io::Result<bool> {
        if self.state == State::Connecting {
            if !self.link.connected()? {
                return Ok(true);
            }
            self.state = State::Handshaking;
            if cx.plan.kind == Kind::HttpIdle {
                self.sent_us = cx.now_us.max(1);
            }
            let request = match (&cx.plan.sub, &self.sub) {
                (Some(plan), Some(sub)) => plan.request(sub, &cx.plan.request),
                _ => &cx.plan.request,
            };
            self.link.send(request)?;
        }
        self.link.flush()?;
        let eof = self.link.recv(cx.scratch, &mut self.inbuf)?;
        if !self.tls_counted
            && let Some(kind) = self.link.handshake_done()
        {
            self.tls_counted = true;
            match kind {
                HandshakeKind::Resumed => cx.stats.count.tls_resumed += 1,
                _ => cx.stats.count.tls_full += 1,
            }
        }
        let alive = match cx.plan.kind {
            Kind::HttpIdle => self.http_input(cx)?,
            Kind::Subscribe if self.sub.as_ref().is_some_and(|s| s.sse.is_some()) => {
                self.sse_input(cx)?
            }
            Kind::Echo | Kind::Idle | Kind::Subscribe => self.ws_input(cx)?,
        };
        if !alive {
            return Ok(false);
        }
        if eof {
            if self.state == State::Closing {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // Idle connections keep no buffer; echo ones reuse theirs for the next message.
        if self.inbuf.is_empty() && cx.plan.kind != Kind::Echo && self.inbuf.capacity() > 0 {
            self.inbuf = Vec::new();
        }
        Ok(true)
    }

    /// The handshake is done: count the connection and its connect time.
    pub(crate) fn opened(&mut self, cx: &mut Ctx) {
        self.state = State::Open;
        cx.stats.count.connected += 1;
        record(
            &mut cx.stats.connect_us,
            cx.now_us.saturating_sub(self.started_us),
        );
    }

    /// The connection's own heartbeat is due. An error means it broke (the caller counts it).
    pub fn heartbeat(&mut self, cx: &mut Ctx) -> io::Result<()> {
        if self.state != State::Open {
            return Ok(());
        }
        match cx.plan.kind {
            Kind::HttpIdle => self.http_heartbeat(cx),
            Kind::Subscribe if self.sub.as_ref().is_some_and(|s| s.sse.is_some()) => Ok(()),
            Kind::Echo | Kind::Idle | Kind::Subscribe => self.ws_heartbeat(cx),
        }
    }

    /// wsload is done with the connection. Returns true if it should be kept until the server
    /// answers (a WebSocket close), false to drop it now. Unfinished connects count as failed.
    pub fn begin_close(&mut self, cx: &mut Ctx) -> bool {
        match self.state {
            State::Connecting | State::Handshaking => {
                cx.stats.count.failed += 1;
                false
            }
            State::Closing => true,
            State::Open => match cx.plan.kind {
                Kind::HttpIdle => {
                    self.link.close_notify();
                    cx.stats.count.closed_clean += 1;
                    false
                }
                // An SSE stream just ends.
                Kind::Subscribe if self.sub.as_ref().is_some_and(|s| s.sse.is_some()) => {
                    self.link.close_notify();
                    cx.stats.count.closed_clean += 1;
                    false
                }
                Kind::Echo | Kind::Idle | Kind::Subscribe => {
                    self.state = State::Closing;
                    self.ws_close().is_ok()
                }
            },
        }
    }
}

static FIRST_FAILURE: AtomicBool = AtomicBool::new(false);
static FIRST_LOSS: AtomicBool = AtomicBool::new(false);

/// Says why the first connection failed (to connect) and why the first one was lost: enough
/// to see what is wrong without a line per connection.
pub fn say_once(flag: &AtomicBool, what: &str, why: &io::Error) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("wsload: {what}: {why}");
    }
}

/// Counts a connection that could not even be opened (a socket error, or no ports left).
pub fn open_failed(stats: &mut Stats, why: &io::Error) {
    stats.count.failed += 1;
    say_once(&FIRST_FAILURE, "first failed connection", why);
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // Plain connections hold no buffers while idle; the struct itself is all there is.
        let size = std::mem::size_of::<Option<Conn>>();
        assert!(size <= 128, "{size} bytes");
    }
}
