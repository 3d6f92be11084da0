//! Owns the channel bus between the server processes of one node (`server.processes > 1`):
//! one Unix datagram socket per process, bound to an abstract name derived from the
//! supervisor's pid and the process's index, a thread that reads it and applies what arrives
//! to the [`Hub`], and a thread that sends what the workers queue (so a slow sibling never
//! blocks an event loop). Unix datagrams between processes of one host arrive whole and in
//! order per sender, or not at all with an error the sender sees.

use super::bus::{self, Msg};
use super::hub::{Hub, Transport};
use crate::log;
use std::collections::VecDeque;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Messages are gathered into datagrams of about this size.
const DATAGRAM_TARGET: usize = 60 * 1024;
/// Socket buffers asked for (the kernel caps them at net.core.{r,w}mem_max).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How soon a sibling whose queue was full is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(2);
/// Datagrams kept for one sibling whose queue stays full (about 60 KiB at most each).
const OUTBOX_MAX: usize = 4096;
/// How often changed subscriber counts (and this process's figures) are sent to the siblings:
/// what the HTTP API reports of other processes may be this old. With 56 processes, every
/// 50 ms was 61,000 datagrams a second on a two-core host during a connection ramp.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// The largest datagram read.
const RECEIVE_BUFFER: usize = 1024 * 1024;

enum Outgoing {
    All(Msg),
    To(u16, Msg),
}

/// The sending end the hub holds.
pub struct Peers {
    tx: mpsc::Sender<Outgoing>,
}

impl Peers {
    pub fn send_all(&self, m: Msg) {
        let _ = self.tx.send(Outgoing::All(m));
    }

    pub fn send_to(&self, process: u16, m: Msg) {
        let _ = self.tx.send(Outgoing::To(process, m));
    }
}

fn address(group: u32, process: u16) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("holdfast-bus/{group}/{process}"))
}

/// Binds this process's socket, starts the two threads, and says hello to the siblings.
/// `group` tells this node's processes from another holdfast's on the same host.
pub fn start(hub: &Arc<Hub>, group: u32, process: u16, processes: usize) -> Result<(), String> {
    let sock = UnixDatagram::bind_addr(&address(group, process).map_err(|e| e.to_string())?)
        .map_err(|e| format!("channel bus socket: {e}"))?;
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(&sock, sockopt::SndBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&sock, sockopt::RcvBuf, &SOCKET_BUFFER);
    // Sends go out on a socket of their own, non-blocking (the receiving one stays blocking:
    // the flag would be shared by a clone); siblings know the sender from the datagram.
    let sender = UnixDatagram::unbound().map_err(|e| format!("channel bus socket: {e}"))?;
    sender
        .set_nonblocking(true)
        .map_err(|e| format!("channel bus socket: {e}"))?;
    let _ = setsockopt(&sender, sockopt::SndBuf, &SOCKET_BUFFER);
    let reader = sock;
    let (tx, rx) = mpsc::channel();
    hub.set_link(Transport::Siblings(Peers { tx }), process, processes);
    let weak = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("holdfast-bus-in".into())
        .spawn(move || receive(reader, weak))
        .map_err(|e| e.to_string())?;
    let weak = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("holdfast-bus-out".into())
        .spawn(move || send(sender, rx, weak, group, process, processes))
        .map_err(|e| e.to_string())?;
    hub.peers_hello();
    Ok(())
}

fn receive(sock: UnixDatagram, hub: Weak<Hub>) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::limited!(Error, "channel bus: receive failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(hub) = hub.upgrade() else { return };
        match bus::decode(&buf[..n]) {
            Some((from, msgs)) => hub.on_bus(from, msgs),
            None => {
                hub.bus_errors.fetch_add(1, Ordering::Relaxed);
                log::limited!(
                    Warn,
                    "channel bus: a malformed datagram ({n} bytes) dropped"
                );
            }
        }
    }
}

/// Gathers queued messages per destination into datagrams and sends them; every
/// `COUNTS_EVERY`, the changed subscriber counts and the figures too. Sends never block: a sibling whose queue
/// is full (the kernel holds only `net.unix.max_dgram_qlen` datagrams per receiver, 10 by
/// default) keeps its datagrams here, in order, and is tried again shortly, while the others
/// get theirs; a blocking send would hold every sibling's events behind the slowest one.
fn send(
    sock: UnixDatagram,
    rx: mpsc::Receiver<Outgoing>,
    hub: Weak<Hub>,
    group: u32,
    me: u16,
    processes: usize,
) {
    let addrs: Vec<Option<SocketAddr>> = (0..processes as u16)
        .map(|p| (p != me).then(|| address(group, p).ok()).flatten())
        .collect();
    let mut building: Vec<Datagram> = (0..processes).map(|_| Datagram::default()).collect();
    let mut outbox: Vec<VecDeque<Datagram>> = (0..processes).map(|_| VecDeque::new()).collect();
    let mut counts_due = std::time::Instant::now();
    loop {
        let backlog = outbox.iter().any(|o| !o.is_empty());
        let wait = if backlog { RETRY_EVERY } else { COUNTS_EVERY };
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(hub) = hub.upgrade() else { return };
        let mut queue: Vec<Outgoing> = first.into_iter().collect();
        queue.extend(rx.try_iter().take(10_000));
        // Counts and figures once a COUNTS_EVERY, however busy the bus is with events.
        if counts_due.elapsed() >= COUNTS_EVERY {
            counts_due = std::time::Instant::now();
            queue.extend(hub.take_changed_counts().into_iter().map(Outgoing::All));
            queue.extend(hub.stats_messages().into_iter().map(Outgoing::All));
        }
        for out in queue {
            let (targets, m): (Vec<u16>, Msg) = match out {
                Outgoing::All(m) => ((0..processes as u16).filter(|&p| p != me).collect(), m),
                Outgoing::To(p, m) => (vec![p], m),
            };
            for p in targets {
                let p = usize::from(p);
                if addrs.get(p).is_none_or(Option::is_none) {
                    continue;
                }
                let d = &mut building[p];
                if d.bytes.len() > DATAGRAM_TARGET {
                    outbox[p].push_back(std::mem::take(d));
                }
                d.add(me, &m);
            }
        }
        for p in 0..processes {
            let Some(Some(addr)) = addrs.get(p) else {
                continue;
            };
            if !building[p].bytes.is_empty() {
                outbox[p].push_back(std::mem::take(&mut building[p]));
            }
            drain(&sock, addr, &mut outbox[p], &hub, me);
        }
    }
}

/// Messages gathered for one sibling, and the acknowledgements they carry (answered here if the
/// datagram cannot be delivered).
#[derive(Default)]
struct Datagram {
    bytes: Vec<u8>,
    messages: u64,
    acks: Vec<u64>,
    /// It carries an event or a presence change: losing it is worth a line and a count.
    matters: bool,
    /// Events sent to their channel's owner to be sequenced: if the owner cannot be reached,
    /// this process sequences them itself rather than lose them.
    to_sequence: Vec<Msg>,
}

impl Datagram {
    fn add(&mut self, me: u16, m: &Msg) {
        if self.bytes.is_empty() {
            bus::start(&mut self.bytes, me);
        }
        bus::encode(&mut self.bytes, m);
        self.messages += 1;
        match m {
            Msg::Event { ack, pos, .. } => {
                self.matters = true;
                if pos.is_none() && m.needs_sequencing() {
                    self.to_sequence.push(m.clone());
                } else {
                    self.acks.extend(*ack);
                }
            }
            Msg::Present { .. } | Msg::Absent { .. } => self.matters = true,
            _ => {}
        }
    }
}

/// Sends a sibling's waiting datagrams in order until its queue is full. One that cannot be
/// delivered at all (the sibling is not there: starting, restarting, gone) is dropped; its
/// waiting publishes count as acknowledged, since a process that is not there has no
/// subscribers to wait for. A sibling that stays full past `OUTBOX_MAX` datagrams loses the
/// oldest, counted.
fn drain(
    sock: &UnixDatagram,
    addr: &SocketAddr,
    outbox: &mut VecDeque<Datagram>,
    hub: &Hub,
    me: u16,
) {
    while let Some(d) = outbox.front() {
        match sock.send_to_addr(&d.bytes, addr) {
            Ok(_) => {
                hub.bus_out.fetch_add(d.messages, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if outbox.len() <= OUTBOX_MAX {
                    return;
                }
                lost(d, hub, me, "its queue stayed full");
            }
            Err(e) => lost(d, hub, me, &e.to_string()),
        }
        outbox.pop_front();
    }
}

fn lost(d: &Datagram, hub: &Hub, me: u16, why: &str) {
    // A sibling that is not up yet (they start one after another) or is restarting will say
    // Hello and be sent the state then: only a lost event or presence change is worth a line.
    if d.matters {
        hub.bus_errors.fetch_add(d.messages, Ordering::Relaxed);
        log::limited!(
            Warn,
            "channel bus: process {me} could not reach a sibling: {why}"
        );
    }
    for id in &d.acks {
        hub.acked_by_id(*id);
    }
    for m in &d.to_sequence {
        hub.sequence_here(m.clone());
    }
}
