//! Owns the channel bus between the server processes of one node (`server.processes > 1`):
//! one Unix datagram socket per process, bound to an abstract name derived from the
//! supervisor's pid and the process's index, a thread that reads it and applies what arrives
//! to the [`Hub`], and a thread that sends what the workers queue (so a slow sibling never
//! blocks an event loop). Unix datagrams between processes of one host arrive whole and in
//! order per sender, or not at all with an error the sender sees.

use super::bus::{self, Msg};
use super::hub::Hub;
use crate::log;
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
/// How often changed subscriber counts are sent to the siblings.
const COUNTS_EVERY: Duration = Duration::from_millis(50);
/// How often this process's figures are sent to the siblings, for their `/metrics`.
const STATS_EVERY: Duration = Duration::from_secs(1);
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
    let reader = sock.try_clone().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    hub.set_peers(Peers { tx }, processes);
    let weak = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("holdfast-bus-in".into())
        .spawn(move || receive(reader, weak))
        .map_err(|e| e.to_string())?;
    let weak = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("holdfast-bus-out".into())
        .spawn(move || send(sock, rx, weak, group, process, processes))
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
/// `COUNTS_EVERY`, the changed subscriber counts too.
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
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); processes];
    let mut acks: Vec<Vec<u64>> = vec![Vec::new(); processes];
    let mut stats_due = std::time::Instant::now();
    loop {
        let first = match rx.recv_timeout(COUNTS_EVERY) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(hub) = hub.upgrade() else { return };
        let mut queue: Vec<Outgoing> = first.into_iter().collect();
        queue.extend(rx.try_iter().take(10_000));
        queue.extend(hub.take_changed_counts().into_iter().map(Outgoing::All));
        if stats_due.elapsed() >= STATS_EVERY {
            stats_due = std::time::Instant::now();
            queue.extend(hub.stats_messages().into_iter().map(Outgoing::All));
        }
        for out in queue {
            let (targets, m): (Vec<u16>, Msg) = match out {
                Outgoing::All(m) => ((0..processes as u16).filter(|&p| p != me).collect(), m),
                Outgoing::To(p, m) => (vec![p], m),
            };
            let ack = match &m {
                Msg::Event { ack: Some(id), .. } => Some(*id),
                _ => None,
            };
            for p in targets {
                let Some(Some(addr)) = addrs.get(usize::from(p)) else {
                    continue;
                };
                let buf = &mut pending[usize::from(p)];
                if buf.len() > DATAGRAM_TARGET {
                    flush(&sock, addr, buf, &mut acks[usize::from(p)], &hub, me);
                }
                if buf.is_empty() {
                    bus::start(buf, me);
                }
                bus::encode(buf, &m);
                if let Some(id) = ack {
                    acks[usize::from(p)].push(id);
                }
            }
        }
        for p in 0..processes {
            if let Some(Some(addr)) = addrs.get(p) {
                flush(&sock, addr, &mut pending[p], &mut acks[p], &hub, me);
            }
        }
    }
}

/// Sends one gathered datagram. A sibling that is not there (starting, restarting, gone)
/// cannot acknowledge: its share of each waiting publish counts as done, so no API request
/// waits for it, and the loss is counted.
fn flush(
    sock: &UnixDatagram,
    addr: &SocketAddr,
    buf: &mut Vec<u8>,
    acks: &mut Vec<u64>,
    hub: &Hub,
    me: u16,
) {
    if buf.len() <= 2 {
        buf.clear();
        return;
    }
    let messages = bus::decode(buf).map_or(0, |(_, m)| m.len() as u64);
    match sock.send_to_addr(buf, addr) {
        Ok(_) => {
            hub.bus_out.fetch_add(messages, Ordering::Relaxed);
        }
        Err(e) => {
            hub.bus_errors.fetch_add(messages, Ordering::Relaxed);
            log::limited!(
                Warn,
                "channel bus: process {me} could not reach a sibling: {e}"
            );
            for id in acks.iter() {
                hub.acked_by_id(*id);
            }
        }
    }
    buf.clear();
    acks.clear();
}
