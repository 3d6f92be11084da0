//! Owns the handshakes mode: TLS connections that close as soon as their handshake is done,
//! each replaced at once by a new one, `-c` in flight on one mio loop, for `--duration`.
//!
//! Why it exists: `openssl s_time` runs one connection at a time per process, and a few of
//! them use up the client core long before a one-core server is busy, so every event reaches
//! the server alone and the server's CPU per handshake includes a sleep and a wake-up each time.
//! Here one process keeps many handshakes in flight with rustls's client, which costs the
//! client less per handshake, so a server sees handshakes arrive together as it would from
//! many clients.
//!
//! A connection ends the way s_time's do, with an RST (SO_LINGER 0) right after the client's
//! last handshake flight, so neither end keeps a TIME_WAIT socket per handshake. With
//! resumption on, one connection handshakes first and the rest start once it has a session,
//! so all but that one resume; on TLS 1.3 a connection also waits for its session ticket
//! (which the server sends after the handshake) before it closes.

use crate::cli::{self, HandshakeArgs};
use crate::conn::say_once;
use crate::link::Link;
use crate::run::source_address;
use crate::{signals, tls};
use mio::{Events, Interest, Poll, Token};
use rustls::{HandshakeKind, ProtocolVersion};
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

static FIRST_FAILURE: AtomicBool = AtomicBool::new(false);

#[derive(Default, Debug, PartialEq, Eq)]
pub struct Tally {
    pub full: u64,
    pub resumed: u64,
    pub failed: u64,
}

struct Slot {
    link: Link,
    connected: bool,
    /// The handshake is over; on TLS 1.3 with resumption, the ticket may still be coming.
    done: Option<HandshakeKind>,
}

/// Checks the arguments, runs, prints the summary; exit 0 when every handshake succeeded.
pub fn start(args: &HandshakeArgs) -> Result<ExitCode, String> {
    let common = &args.common;
    let target = cli::parse_url(
        common.url.as_deref().unwrap_or("https://127.0.0.1:8443/"),
        true,
    )?;
    if !target.tls {
        return Err("handshakes needs an https:// or wss:// --url".into());
    }
    if common.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if common.shards.is_some_and(|k| k > 1) || common.ramp > 0 {
        return Err("handshakes runs in one process at full speed (no --shards, no --ramp)".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    let sources = cli::sources_for(common, &target, 0)?;
    let mut plan = tls::plan(common, &target.host)?;
    if common.no_resume {
        tls::forget_sessions(&mut plan);
    } else {
        tls::count_tickets(&mut plan);
    }
    signals::install();
    let started = Instant::now();
    let tally = run(
        &plan,
        target.addr,
        common.connections,
        sources,
        !common.no_resume,
        args.duration,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let total = tally.full + tally.resumed;
    let rate = total as f64 / seconds;
    if common.json {
        println!(
            "{{\"mode\":\"handshakes\",\"in_flight\":{},\"handshakes\":{total},\"full\":{},\
             \"resumed\":{},\"failed\":{},\"seconds\":{seconds:.3},\"per_second\":{rate:.1}}}",
            common.connections, tally.full, tally.resumed, tally.failed
        );
    } else {
        println!(
            "handshakes: {total} in {seconds:.2} s ({rate:.0}/s), {} in flight: full {}, \
             resumed {}, failed {}",
            common.connections, tally.full, tally.resumed, tally.failed
        );
    }
    Ok(if tally.failed == 0 && total > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run(
    plan: &tls::TlsPlan,
    target: SocketAddr,
    in_flight: usize,
    sources: u32,
    resume: bool,
    duration: Duration,
) -> Result<Tally, String> {
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Option<Slot>> = (0..in_flight).map(|_| None).collect();
    let mut tally = Tally::default();
    let mut scratch = vec![0u8; 32 * 1024];
    let mut sink = Vec::new();
    let mut opened = 0u64;
    let end = Instant::now() + duration;
    // With resumption, one connection first: the others start once there is a session.
    let mut width = if resume { 1 } else { in_flight };

    loop {
        let now = Instant::now();
        if now >= end || signals::stop_requested() {
            break;
        }
        for (j, slot) in slots.iter_mut().enumerate().take(width) {
            if slot.is_none() {
                let source = source_address(sources, opened);
                opened += 1;
                match Link::open(target, source, Some(plan)) {
                    Ok(mut link) => {
                        poll.registry()
                            .register(
                                &mut link.stream,
                                Token(j),
                                Interest::READABLE | Interest::WRITABLE,
                            )
                            .map_err(|e| format!("register: {e}"))?;
                        *slot = Some(Slot {
                            link,
                            connected: false,
                            done: None,
                        });
                    }
                    Err(e) => fail(&mut tally, &e),
                }
            }
        }
        let timeout = end
            .saturating_duration_since(now)
            .min(Duration::from_millis(20));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        for ev in events.iter() {
            let Some(slot) = slots.get_mut(ev.token().0) else {
                continue;
            };
            let Some(s) = slot else { continue };
            match step(s, resume, &mut scratch, &mut sink) {
                Ok(None) => continue,
                Ok(Some(HandshakeKind::Resumed)) => tally.resumed += 1,
                Ok(Some(_)) => tally.full += 1,
                Err(e) => fail(&mut tally, &e),
            }
            // Done either way: reset the connection and free the slot for a new one.
            if let Some(mut s) = slot.take() {
                let _ = socket2::SockRef::from(&s.link.stream).set_linger(Some(Duration::ZERO));
                let _ = poll.registry().deregister(&mut s.link.stream);
            }
            if tally.full + tally.resumed > 0 {
                width = in_flight;
            }
        }
    }
    Ok(tally)
}

/// Moves one connection on after a readiness event: the handshake's kind once the connection
/// may close (the handshake is done and, if it needs one for the next, a ticket is in).
fn step(
    s: &mut Slot,
    resume: bool,
    scratch: &mut [u8],
    sink: &mut Vec<u8>,
) -> io::Result<Option<HandshakeKind>> {
    if !s.connected {
        if !s.link.connected()? {
            return Ok(None);
        }
        s.connected = true;
    }
    s.link.flush()?;
    let tickets = tls::tickets_stored();
    let eof = s.link.recv(scratch, sink)?;
    sink.clear();
    let got_ticket = tls::tickets_stored() > tickets;
    if s.done.is_none() {
        s.done = s.link.handshake_done();
    }
    if let Some(kind) = s.done {
        let needs_ticket = resume && s.link.tls_version() == Some(ProtocolVersion::TLSv1_3);
        if !needs_ticket || got_ticket {
            return Ok(Some(kind));
        }
    }
    if eof {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed during the handshake",
        ));
    }
    Ok(None)
}

fn fail(tally: &mut Tally, why: &io::Error) {
    tally.failed += 1;
    say_once(&FIRST_FAILURE, "first failed handshake", why);
}
