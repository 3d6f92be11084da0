//! Owns one worker's event loop: its ring, its buffer ring, its listeners, its slab of
//! connections and its timing wheel. Each loop turn reaps every completion, runs the protocol on
//! the bytes, fires expired timers, flushes each connection's output in one send, re-arms what
//! ended, and makes one `submit_and_wait` whose timeout is the wheel's next deadline.

use super::bufring::BufRing;
use super::clock::DateCache;
use super::conn::{Conn, Phase, ProxyWait};
use super::outq::{Seg, Spare};
use super::ring;
use super::sockopt;
use super::token::{GEN_MASK, Op, Token};
use crate::config::Config;
use crate::log;
use crate::log::access::{Peer, WorkerLog};
use crate::log::writer::AccessLog;
use crate::metrics::{Metrics, TimeoutKind};
use crate::proto::handler::{ConnId, Handler, Work};
use crate::proto::http1::Http1Conn;
use crate::proto::proxy;
use crate::proto::tls::TlsSession;
use crate::proto::{Action, CloseReason, Context, Session};
use crate::time::wheel::Wheel;
use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use nix::sys::eventfd::EventFd;
use slab::Slab;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Buffers in each worker's provided buffer ring, and their size. Buffers are lent only between
/// a completion and its processing in the same loop turn, so the ring needs to cover one turn's
/// worth of receives, not one buffer per connection.
const RECV_BUFFERS: u16 = 1024;
const RECV_BUFFER_SIZE: u32 = 4096;
const BUFFER_GROUP: u16 = 0;
/// Write buffers kept for reuse; larger ones are freed rather than hoarded.
const POOL_MAX: usize = 1024;
const POOL_BUF_MAX_CAPACITY: usize = 64 * 1024;
/// Drained output queues kept for reuse.
const QUEUES_KEPT: usize = 4096;
/// After EMFILE/ENFILE on accept, wait this long before accepting again instead of spinning.
const ACCEPT_BACKOFF_MS: u64 = 100;

/// What every worker shares: the configuration, the metrics and the stop flag.
pub struct Shared {
    pub config: Config,
    pub metrics: Metrics,
    pub shutdown: AtomicBool,
    /// A stop was requested: `/healthz` fails from now on, through `server.drain_delay` (while
    /// the listeners still accept) and the drain that follows (`shutdown`).
    pub stopping: AtomicBool,
    /// Present when a TLS listener is configured.
    pub tls: Option<crate::proto::tls::TlsShared>,
    /// Present when `log.access` is on.
    pub access: Option<AccessLog>,
    /// Present when a per-address limit is on.
    pub per_ip: Option<super::per_ip::PerIp>,
}

/// A connection's standing under the per-address limits (kept beside the slab, and only
/// while a limit is on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum IpStanding {
    /// Not counted (no limit on, or the address is not known yet).
    #[default]
    Uncounted,
    /// Admitted and counted against this address until it closes.
    Counted(std::net::IpAddr),
    /// Over a limit: its first request is refused (429, or a WebSocket closed with 1013).
    Over,
}

struct Listener {
    fd: Option<OwnedFd>,
    armed: bool,
    /// Connections from this listener speak TLS first.
    tls: bool,
}

/// The kernel-facing half. Field order matters: the ring is dropped (and with it every
/// registration and in-flight operation) before the buffer ring's memory is unmapped.
struct Io {
    ring: IoUring,
    bufs: BufRing,
}

/// The connection-facing half, kept apart from `Io` so that a buffer borrowed from the ring can
/// be handed to a protocol while connection state is mutated.
struct State {
    conns: Slab<Conn>,
    wheel: Wheel,
    pool: Vec<Vec<u8>>,
    /// Drained output queues (see `QUEUES_KEPT`).
    queues: Spare,
    dirty: Vec<usize>,
    shared: Arc<Shared>,
    index: usize,
    date: DateCache,
    now: u64,
    draining: Option<u64>,
    /// `Shared::stopping` as this worker last saw it (on its wake-up), for the protocols.
    stopping: bool,
    ws_scratch: std::cell::RefCell<crate::proto::ws::deflate::Scratch>,
    tls_scratch: std::cell::RefCell<crate::proto::tls::Scratch>,
    /// This worker's access log, when it is on.
    access: Option<WorkerLog>,
    /// Each slot's client address, kept beside the slab (not in `Conn`) and only while the
    /// access log is on: an idle connection pays nothing for it otherwise, 18 bytes with it.
    peers: Vec<Peer>,
    /// Each slot's standing under the per-address limits, only while one is on.
    standing: Vec<IpStanding>,
    /// This worker's application.
    app: Box<dyn Handler>,
}

/// The protocol context for a call about connection `$conn` (a `ConnId`), built from the
/// worker state's fields one by one so that the slab can stay mutably borrowed beside it.
macro_rules! context {
    ($st:expr, $conn:expr, $peer:expr) => {
        Context {
            now: $st.now,
            date: $st.date.get(),
            config: &$st.shared.config,
            metrics: &$st.shared.metrics.workers[$st.index],
            all_metrics: &$st.shared.metrics,
            draining: $st.draining.is_some(),
            stopping: $st.stopping,
            ws_scratch: &$st.ws_scratch,
            tls_scratch: &$st.tls_scratch,
            access: $st.access.as_ref(),
            peer: $peer,
            over_limit: false,
            app: &*$st.app,
            conn: $conn,
        }
    };
}

pub struct Worker {
    io: Io,
    st: State,
    listeners: Vec<Listener>,
    wake: Arc<EventFd>,
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
    start: Instant,
    next_generation: u32,
    accept_paused_until: u64,
    fired: Vec<usize>,
    cqes: Vec<(u64, i32, u32)>,
    forced_close: bool,
    sockopts: SockoptMode,
    /// Cross-connection work taken from the application, kept to reuse its allocation.
    work: Vec<Work>,
}

/// Whether accepted sockets inherit `[tcp]` from the listener (decided on the first one).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SockoptMode {
    Unchecked,
    Inherited,
    PerSocket,
}

impl Worker {
    pub fn new(
        index: usize,
        listeners: Vec<(OwnedFd, bool)>,
        wake: Arc<EventFd>,
        shared: Arc<Shared>,
        app: Box<dyn Handler>,
    ) -> Result<Worker, String> {
        let (uring, flags) = ring::build()?;
        if index == 0 {
            log::info!(
                "io_uring ready (DEFER_TASKRUN {}, COOP_TASKRUN {})",
                on_off(flags.defer_taskrun),
                on_off(flags.coop_taskrun)
            );
        }
        let bufs =
            BufRing::new(&uring, BUFFER_GROUP, RECV_BUFFERS, RECV_BUFFER_SIZE).map_err(|e| {
                ring::unsupported_kernel(&format!("provided buffer ring registration: {e}"))
            })?;
        let start = Instant::now();
        let access = shared.access.as_ref().map(|a| a.worker(index));
        Ok(Worker {
            io: Io { ring: uring, bufs },
            st: State {
                conns: Slab::with_capacity(1024),
                wheel: Wheel::new(0),
                pool: Vec::new(),
                queues: Vec::new(),
                dirty: Vec::new(),
                shared,
                index,
                date: DateCache::new(),
                now: 0,
                draining: None,
                stopping: false,
                ws_scratch: Default::default(),
                tls_scratch: Default::default(),
                access,
                peers: Vec::new(),
                standing: Vec::new(),
                app,
            },
            listeners: listeners
                .into_iter()
                .map(|(fd, tls)| Listener {
                    fd: Some(fd),
                    armed: false,
                    tls,
                })
                .collect(),
            wake,
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
            start,
            next_generation: 0,
            accept_paused_until: 0,
            fired: Vec::new(),
            cqes: Vec::with_capacity(4096),
            forced_close: false,
            sockopts: SockoptMode::Unchecked,
            work: Vec::new(),
        })
    }

    /// Runs until the server has drained. Errors from the ring itself end the worker with a
    /// message; everything else is handled per connection.
    pub fn run(mut self) -> Result<(), String> {
        self.tick();
        loop {
            self.reap_before_timers();
            self.run_timers();
            self.check_drain_deadline();
            self.arm_listeners();
            self.arm_wake();
            self.run_app();
            self.flush();
            self.st.flush_access(self.finished());
            self.io.bufs.publish();
            if self.finished() {
                // The last connections' Close operations may still be queued.
                let _ = self.io.ring.submit();
                return Ok(());
            }
            self.submit_and_wait()?;
            // The clock must be read after the wait: everything reaped happened after it.
            self.tick();
            self.reap();
        }
    }

    fn tick(&mut self) {
        self.st.now = self.start.elapsed().as_millis() as u64;
        self.st.date.refresh(self.st.now);
        if let Some(a) = &self.st.access {
            a.set_time(self.st.now, self.st.date.unix_ms(self.st.now));
        }
    }

    /// When timers are due, first takes in whatever the ring already holds for us: after a
    /// long turn (a fan-out to many subscribers on a busy host) a pong may have arrived while
    /// its connection's pong deadline passed, and it must be read before that deadline is
    /// judged. With DEFER_TASKRUN completions are only produced by an enter that asks for
    /// events, so this is one non-waiting enter, only in turns where a timer is due.
    fn reap_before_timers(&mut self) {
        let due = self
            .st
            .wheel
            .next_deadline()
            .is_some_and(|d| d <= self.st.now);
        if !due {
            return;
        }
        if let Err(e) = enter(&self.io.ring, 0) {
            log::limited!(Error, "{e}");
            return;
        }
        self.tick();
        self.reap();
        // Input just reaped may have queued output and re-armed receives: they go out with
        // this turn's flush as usual.
    }

    fn submit_and_wait(&mut self) -> Result<(), String> {
        let mut wait_ms: u64 = 60_000;
        if let Some(d) = self.st.wheel.next_deadline() {
            wait_ms = wait_ms.min(d.saturating_sub(self.st.now));
        }
        if self.accept_paused_until > self.st.now {
            wait_ms = wait_ms.min(self.accept_paused_until - self.st.now);
        }
        if let Some(d) = self.st.draining {
            wait_ms = wait_ms.min(d.saturating_sub(self.st.now));
        }
        if let Some(d) = self.st.access.as_ref().and_then(|a| a.due_at()) {
            wait_ms = wait_ms.min(d.saturating_sub(self.st.now));
        }
        enter(&self.io.ring, wait_ms)
    }

    fn reap(&mut self) {
        self.cqes.clear();
        for cqe in self.io.ring.completion() {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        for i in 0..self.cqes.len() {
            let (user_data, res, flags) = self.cqes[i];
            let Some(token) = Token::decode(user_data) else {
                continue;
            };
            match token.op {
                Op::Accept => self.on_accept(token.slot as usize, res, flags),
                Op::Recv => self.on_recv(token, res, flags),
                Op::Send => self.on_send(token, res),
                Op::Shutdown => self.on_shutdown(token),
                Op::Wake => self.on_wake(),
                // Submitted with SKIP_SUCCESS: only a failure gets here, and it needs nothing.
                Op::Cancel | Op::Close => {}
            }
        }
    }

    fn finished(&self) -> bool {
        self.st.draining.is_some()
            && self.st.conns.is_empty()
            && self.listeners.iter().all(|l| l.fd.is_none())
    }

    // ---- accept -------------------------------------------------------------------------

    fn arm_listeners(&mut self) {
        if self.st.draining.is_some() || self.accept_paused_until > self.st.now {
            return;
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if let (Some(fd), false) = (&l.fd, l.armed) {
                let sqe = opcode::AcceptMulti::new(Fd(fd.as_raw_fd()))
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
                    .user_data(Token::new(Op::Accept, i, 0).encode());
                push(&mut self.io.ring, sqe);
                l.armed = true;
            }
        }
    }

    fn on_accept(&mut self, listener: usize, res: i32, flags: u32) {
        let Some(l) = self.listeners.get_mut(listener) else {
            return;
        };
        let is_tls = l.tls;
        if !cqueue::more(flags) {
            l.armed = false;
            if self.st.draining.is_some() {
                l.fd = None;
            }
        }
        if res < 0 {
            match -res {
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    // A storm repeats this every pause: one line per 10 s, with a count.
                    log::limited!(
                        Error,
                        "worker {}: accept: {} (pausing accepts for {ACCEPT_BACKOFF_MS} ms; \
                         raise `ulimit -n` or lower server.max_connections)",
                        self.st.index,
                        std::io::Error::from_raw_os_error(-res)
                    );
                    self.accept_paused_until = self.st.now + ACCEPT_BACKOFF_MS;
                }
                _ => {}
            }
            return;
        }
        let fd: RawFd = res;
        let shared = Arc::clone(&self.st.shared);
        let metrics = &shared.metrics;
        let wm = &metrics.workers[self.st.index];
        if self.st.draining.is_some() || !metrics.try_open(shared.config.server.max_connections) {
            if self.st.draining.is_none() {
                wm.closed(CloseReason::Refused);
            }
            close_fd(&mut self.io.ring, fd);
            return;
        }
        wm.accepted.inc();
        // SAFETY: `fd` was just returned by accept and is owned by us until the Close op we
        // submit in `finalize`; the borrow does not outlive this call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let tcp = &shared.config.tcp;
        if self.sockopts == SockoptMode::Unchecked {
            self.sockopts = if sockopt::carries(borrowed, tcp) {
                SockoptMode::Inherited
            } else {
                log::info!(
                    "worker {}: accepted sockets do not inherit [tcp] options from the \
                     listener; setting them on each connection",
                    self.st.index
                );
                SockoptMode::PerSocket
            };
        }
        if self.sockopts == SockoptMode::PerSocket
            && let Err(e) = sockopt::apply(borrowed, tcp)
        {
            log::limited!(Warn, "setting [tcp] socket options failed: {e}");
        }
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GEN_MASK;
        let now = self.st.now;
        let session = match (&shared.tls, is_tls) {
            (Some(tls), true) => Session::Tls(Box::new(TlsSession::new(
                Arc::clone(&tls.config),
                now,
                crate::proto::ms(shared.config.http.header_timeout),
                ws_seed(self.st.conns.vacant_key(), generation),
            ))),
            _ => Session::Http1(Http1Conn::new(now)),
        };
        let slot = self.st.conns.insert(Conn::new(fd, generation, session));
        if shared.config.server.proxy_protocol {
            self.st.conns[slot].proxy_header = Some(Box::new(ProxyWait {
                deadline: now + crate::proto::ms(shared.config.http.header_timeout),
                gathered: Vec::new(),
            }));
        }
        let need_addr = self.st.access.is_some()
            || (shared.per_ip.is_some() && !shared.config.server.proxy_protocol);
        if need_addr {
            let addr = sockopt::peer_addr(borrowed);
            if self.st.access.is_some() {
                self.st.set_peer(slot, addr);
            }
            if !shared.config.server.proxy_protocol && self.st.judge(slot, addr) {
                // Over a limit on the TLS listener: closed before the handshake costs anything.
                let conn = self.st.conns.remove(slot);
                close_fd(&mut self.io.ring, conn.fd);
                self.st.unjudge(slot);
                wm.closed(CloseReason::PerIpLimit);
                metrics.release();
                return;
            }
        }
        arm_recv(&mut self.io, &mut self.st.conns[slot], slot);
        self.st.sync_timer(slot);
    }

    // ---- recv ---------------------------------------------------------------------------

    fn on_recv(&mut self, token: Token, res: i32, flags: u32) {
        let slot = token.slot as usize;
        let bid = cqueue::buffer_select(flags);
        let live = self
            .st
            .conns
            .get(slot)
            .is_some_and(|c| c.generation == token.generation);
        if !live {
            // A late completion for a closed connection: give its buffer back and ignore it.
            if let Some(bid) = bid {
                self.io.bufs.recycle(bid);
            }
            return;
        }
        let conn = &mut self.st.conns[slot];
        if !cqueue::more(flags) {
            conn.recv_armed = false;
            conn.recv_cancelled = false;
        }
        if res > 0 {
            let bid = bid.expect("a successful buffer-select recv always carries a buffer id");
            self.st.shared.metrics.workers[self.st.index]
                .bytes_in
                .add(res as u64);
            let accepting_input = conn.phase == Phase::Open && conn.close_after_flush.is_none();
            if accepting_input {
                let data = self.io.bufs.get(bid, res as usize);
                let action = match self.st.strip_proxy_header(slot, data) {
                    Stripped::Passed(at) if at == data.len() => Action::Continue,
                    Stripped::Passed(at) => {
                        let rest = &data[at..];
                        self.st.call(slot, |p, cx, out| p.on_input(rest, cx, out))
                    }
                    Stripped::Gathered(rest) if rest.is_empty() => Action::Continue,
                    Stripped::Gathered(rest) => {
                        self.st.call(slot, |p, cx, out| p.on_input(&rest, cx, out))
                    }
                    Stripped::Waiting => Action::Continue,
                    Stripped::Refused => Action::Close {
                        reason: CloseReason::ProxyHeader,
                        linger: false,
                    },
                    Stripped::OverLimit => Action::Close {
                        reason: CloseReason::PerIpLimit,
                        linger: false,
                    },
                };
                self.io.bufs.recycle(bid);
                self.apply(slot, action);
            } else {
                // Lingering or closing: the peer's bytes are read only to avoid an RST.
                self.io.bufs.recycle(bid);
            }
        } else if res == 0 {
            conn.read_done = true;
            match conn.phase {
                Phase::Open => {
                    let action = if conn.close_after_flush.is_some() {
                        Action::Continue
                    } else {
                        self.st.call(slot, |p, cx, out| p.on_eof(cx, out))
                    };
                    self.apply(slot, action);
                }
                Phase::Linger => {
                    let reason = conn.close_reason();
                    self.begin_close(slot, reason);
                }
                Phase::Closing => {}
            }
        } else if res == -libc::ENOBUFS {
            // The buffer ring ran dry this turn; buffers come back before the re-arm below is
            // submitted.
            self.st.shared.metrics.workers[self.st.index]
                .recv_rearms
                .inc();
        } else if res != -libc::ECANCELED {
            conn.read_done = true;
            if conn.phase != Phase::Closing {
                self.begin_close(slot, CloseReason::IoError);
            }
        }
        self.after_event(slot);
    }

    /// Re-arms recv if it ended and is still wanted, and frees the slot if it is done.
    fn after_event(&mut self, slot: usize) {
        let Some(conn) = self.st.conns.get_mut(slot) else {
            return;
        };
        match conn.phase {
            Phase::Closing => self.try_finalize(slot),
            Phase::Open | Phase::Linger => {
                if !conn.recv_armed && !conn.read_done && !conn.read_paused {
                    arm_recv(&mut self.io, conn, slot);
                }
            }
        }
    }

    // ---- send ---------------------------------------------------------------------------

    /// Sends what each connection queued this turn: one send per connection per turn, however
    /// many pipelined responses it holds.
    fn flush(&mut self) {
        while let Some(slot) = self.st.dirty.pop() {
            let Some(conn) = self.st.conns.get_mut(slot) else {
                continue;
            };
            conn.dirty = false;
            if conn.phase == Phase::Open && !conn.send_inflight {
                start_send(&mut self.io.ring, conn, slot, &mut self.st.queues);
            }
        }
    }

    fn on_send(&mut self, token: Token, res: i32) {
        let slot = token.slot as usize;
        let Some(conn) = self
            .st
            .conns
            .get_mut(slot)
            .filter(|c| c.generation == token.generation)
        else {
            return;
        };
        conn.send_inflight = false;
        // A send from the connection's own buffer, or (none) a sendmsg over its queue.
        let buf = conn.sending.take();
        // A send that moved nothing would be resubmitted forever: treat it as a dead socket.
        if res <= 0 || conn.phase == Phase::Closing {
            if let Some(buf) = buf {
                give_back(&mut self.st.pool, buf);
            }
            if conn.phase != Phase::Closing {
                self.begin_close(slot, CloseReason::IoError);
            } else {
                self.try_finalize(slot);
            }
            return;
        }
        self.st.shared.metrics.workers[self.st.index]
            .bytes_out
            .add(res as u64);
        match buf {
            Some(buf) => {
                conn.sent += res as usize;
                if conn.sent < buf.len() {
                    // A partial send: continue from the offset with the same buffer.
                    conn.sending = Some(buf);
                    resubmit_send(&mut self.io.ring, conn, slot);
                    return;
                }
                conn.sent = 0;
                give_back(&mut self.st.pool, buf);
            }
            None => {
                if let Some(q) = conn.queue.as_mut() {
                    let pool = &mut self.st.pool;
                    q.advance(res as usize, |v| give_back(pool, v));
                }
            }
        }
        if start_send(&mut self.io.ring, conn, slot, &mut self.st.queues) {
            return;
        }
        // All output is out.
        let now = self.st.now;
        conn.proto.on_output_drained(now);
        if conn.read_paused {
            conn.read_paused = false;
            let action = self.st.call(slot, |p, cx, out| p.on_input(&[], cx, out));
            self.apply(slot, action);
        } else {
            self.st.sync_timer(slot);
        }
        if let Some(conn) = self.st.conns.get(slot)
            && conn.close_after_flush.is_some()
            && !conn.has_output()
            && conn.phase == Phase::Open
        {
            self.finish_output(slot);
            return;
        }
        self.after_event(slot);
    }

    // ---- actions and closing ------------------------------------------------------------

    fn apply(&mut self, slot: usize, action: Action) {
        let Some(conn) = self.st.conns.get_mut(slot) else {
            return;
        };
        match action {
            Action::Continue => {
                if conn.proto.read_paused() && !conn.read_paused {
                    conn.read_paused = true;
                    cancel_recv(&mut self.io.ring, conn, slot);
                }
            }
            Action::Close { reason, linger } => {
                if conn.close_after_flush.is_none() {
                    conn.close_after_flush = Some((reason, linger));
                }
                if !conn.has_output() {
                    self.finish_output(slot);
                }
            }
            Action::Upgrade => {
                // The 101, the application's first messages, and the answers to frames the
                // client sent behind its handshake are queued in that order.
                let seed = ws_seed(slot, conn.generation) ^ self.st.now as u32;
                let action = self.st.call(slot, |p, cx, out| p.upgrade(seed, cx, out));
                self.apply(slot, action);
            }
        }
    }

    /// All output is sent and the protocol asked to close: linger or close now.
    fn finish_output(&mut self, slot: usize) {
        let conn = &mut self.st.conns[slot];
        let (reason, linger) = conn
            .close_after_flush
            .unwrap_or((CloseReason::IoError, false));
        if linger && !conn.read_done && conn.phase == Phase::Open {
            let sqe = opcode::Shutdown::new(Fd(conn.fd), libc::SHUT_WR)
                .build()
                .user_data(Token::new(Op::Shutdown, slot, conn.generation).encode());
            push(&mut self.io.ring, sqe);
            conn.shutdown_inflight = true;
            conn.phase = Phase::Linger;
            conn.read_paused = false;
            let deadline =
                self.st.now + self.st.shared.config.http.lingering_timeout.as_millis() as u64;
            conn.armed_deadline = deadline;
            self.st.wheel.arm(slot, deadline);
            self.after_event(slot);
        } else {
            self.begin_close(slot, reason);
        }
    }

    fn on_shutdown(&mut self, token: Token) {
        let slot = token.slot as usize;
        if let Some(conn) = self
            .st
            .conns
            .get_mut(slot)
            .filter(|c| c.generation == token.generation)
        {
            conn.shutdown_inflight = false;
            self.after_event(slot);
        }
    }

    /// Starts closing: cancels what is in flight; the socket is closed and the slot freed once
    /// every operation has completed (`try_finalize`).
    fn begin_close(&mut self, slot: usize, reason: CloseReason) {
        let conn = &mut self.st.conns[slot];
        if conn.phase == Phase::Closing {
            return;
        }
        conn.phase = Phase::Closing;
        let id = ConnId {
            slot: slot as u32,
            generation: conn.generation,
            stream: 0,
        };
        let st = &self.st;
        st.app.closed(&context!(st, id, Peer::UNKNOWN), reason);
        // The streams an HTTP/2 connection carried (event streams) end with it.
        for stream in st.conns[slot].proto.substreams() {
            let sub = ConnId { stream, ..id };
            st.app.closed(&context!(st, sub, Peer::UNKNOWN), reason);
        }
        let conn = &mut self.st.conns[slot];
        let wm = &self.st.shared.metrics.workers[self.st.index];
        wm.closed(reason);
        if conn.proto.is_ws() {
            wm.ws_closed.inc();
        }
        self.st.wheel.cancel(slot);
        conn.armed_deadline = u64::MAX;
        cancel_recv(&mut self.io.ring, conn, slot);
        if conn.send_inflight {
            let sqe =
                opcode::AsyncCancel::new(Token::new(Op::Send, slot, conn.generation).encode())
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(Token::new(Op::Cancel, slot, 0).encode());
            push(&mut self.io.ring, sqe);
        }
        if let Some(p) = conn.pending.take() {
            give_back(&mut self.st.pool, p);
        }
        self.try_finalize(slot);
    }

    fn try_finalize(&mut self, slot: usize) {
        let conn = &self.st.conns[slot];
        if conn.phase != Phase::Closing || !conn.quiescent() {
            return;
        }
        let conn = self.st.conns.remove(slot);
        close_fd(&mut self.io.ring, conn.fd);
        self.st.unjudge(slot);
        self.st.shared.metrics.release();
    }

    // ---- timers -------------------------------------------------------------------------

    fn run_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.st.wheel.expire(self.st.now, &mut fired);
        for &slot in &fired {
            let Some(conn) = self.st.conns.get_mut(slot) else {
                continue;
            };
            conn.armed_deadline = u64::MAX;
            match conn.phase {
                Phase::Open if conn.proxy_header.is_some() => {
                    // No PROXY header within the session's first deadline (http.header_timeout
                    // for HTTP and for a TLS handshake): nothing to answer, the balancer is
                    // not speaking the protocol.
                    self.begin_close(slot, CloseReason::ProxyHeader);
                }
                Phase::Open => {
                    let stuck = conn.close_after_flush;
                    let action = self.st.call(slot, |p, cx, out| p.on_timeout(cx, out));
                    if let Action::Close { reason, .. } = action {
                        let wm = &self.st.shared.metrics.workers[self.st.index];
                        match reason {
                            CloseReason::IdleTimeout => wm.timeout(TimeoutKind::Idle),
                            CloseReason::RequestTimeout => wm.timeout(TimeoutKind::Request),
                            CloseReason::MaxAge => wm.timeout(TimeoutKind::MaxAge),
                            _ => {}
                        }
                        if let Some((r, _)) = stuck {
                            // Already closing but the peer is not taking our output.
                            self.begin_close(slot, r);
                            continue;
                        }
                    }
                    self.apply(slot, action);
                }
                Phase::Linger => {
                    self.st.shared.metrics.workers[self.st.index].timeout(TimeoutKind::Lingering);
                    let reason = conn.close_reason();
                    self.begin_close(slot, reason);
                }
                Phase::Closing => {}
            }
        }
        self.fired = fired;
    }

    // ---- the application's cross-connection work --------------------------------------

    /// Lets the application read its mailbox and applies the work it queued: frames fanned out
    /// to subscribers, replies that waited for a fan-out. Work can cause more work (a
    /// subscriber closed as too slow leaves its presence channels), so this goes round until
    /// none is left, a bounded number of times per loop turn.
    fn run_app(&mut self) {
        for _ in 0..8 {
            {
                let st = &self.st;
                st.app.poll(&context!(st, ConnId::default(), Peer::UNKNOWN));
            }
            let mut work = std::mem::take(&mut self.work);
            self.st.app.take_work(&mut work);
            if work.is_empty() {
                self.work = work;
                return;
            }
            for w in work.drain(..) {
                match w {
                    Work::Deliver {
                        frame,
                        to,
                        slow_cap,
                        slow_code,
                    } => {
                        for id in to {
                            let Some(slot) = self.st.live(id) else {
                                continue;
                            };
                            let conn = &mut self.st.conns[slot];
                            let unsent = conn.unsent();
                            if conn.proto.takes_shared(unsent, slow_cap) {
                                // The same bytes for every subscriber: no copy, and several
                                // events for one connection go out in one sendmsg.
                                conn.queue_shared(Arc::clone(&frame), &mut self.st.queues);
                                if !conn.dirty {
                                    conn.dirty = true;
                                    self.st.dirty.push(slot);
                                }
                                self.st.shared.metrics.workers[self.st.index]
                                    .ws_messages_out
                                    .inc();
                                continue;
                            }
                            if conn.proto.is_plain_framed() && unsent > slow_cap {
                                // Closed as too slow: its close frame goes next, not behind
                                // megabytes it will never read (whole frames only are
                                // dropped; a TLS stream cannot drop bytes and keeps its own).
                                conn.discard_unsent();
                            }
                            // Encrypted per connection (TLS), or closed as too slow.
                            let action = self.st.call_on(slot, id.stream, |p, cx, out| {
                                p.deliver(&frame, unsent, slow_cap, slow_code, cx, out)
                            });
                            self.apply(slot, action);
                        }
                    }
                    Work::Reply { to, reply } => {
                        if let Some(slot) = self.st.live(to) {
                            let action = self.st.call_on(slot, to.stream, move |p, cx, out| {
                                p.on_reply(reply, cx, out)
                            });
                            self.apply(slot, action);
                        }
                    }
                    Work::Stream { to, route } => {
                        if let Some(slot) = self.st.live(to) {
                            let action = self.st.call_on(slot, to.stream, move |p, cx, out| {
                                p.on_stream_later(route, cx, out)
                            });
                            self.apply(slot, action);
                        }
                    }
                }
            }
            self.work = work;
        }
    }

    // ---- shutdown -----------------------------------------------------------------------

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let sqe = opcode::Read::new(
            Fd(self.wake.as_raw_fd()),
            self.wake_buf.as_mut_ptr(),
            self.wake_buf.len() as u32,
        )
        .build()
        .user_data(Token::new(Op::Wake, 0, 0).encode());
        push(&mut self.io.ring, sqe);
        self.wake_armed = true;
    }

    fn on_wake(&mut self) {
        self.wake_armed = false;
        self.st.stopping = self.st.shared.stopping.load(Ordering::Acquire);
        if self.st.shared.shutdown.load(Ordering::Acquire) && self.st.draining.is_none() {
            self.start_drain();
        }
    }

    /// Stops accepting and asks every connection to finish: idle ones close now, busy ones
    /// answer their request with `Connection: close`.
    fn start_drain(&mut self) {
        let timeout = self.st.shared.config.server.shutdown_timeout.as_millis() as u64;
        self.st.draining = Some(self.st.now + timeout);
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.armed {
                let sqe = opcode::AsyncCancel::new(Token::new(Op::Accept, i, 0).encode())
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(Token::new(Op::Cancel, i, 0).encode());
                push(&mut self.io.ring, sqe);
            } else {
                l.fd = None;
            }
        }
        let slots: Vec<usize> = self.st.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            if self.st.conns[slot].phase == Phase::Open {
                let action = self.st.call(slot, |p, cx, out| p.on_drain(cx, out));
                self.apply(slot, action);
            }
        }
    }

    fn check_drain_deadline(&mut self) {
        let Some(deadline) = self.st.draining else {
            return;
        };
        if self.forced_close || self.st.now < deadline {
            return;
        }
        self.forced_close = true;
        let slots: Vec<usize> = self.st.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            if self.st.conns[slot].phase != Phase::Closing {
                self.st.shared.metrics.workers[self.st.index].timeout(TimeoutKind::Shutdown);
                self.begin_close(slot, CloseReason::Shutdown);
            }
        }
    }
}

impl State {
    /// Runs one protocol call with a write buffer lent from the pool, queues the output for
    /// this turn's flush, and moves the connection's wheel entry to its new deadline.
    fn call(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut Session, &Context<'_>, &mut Vec<u8>) -> Action,
    ) -> Action {
        self.call_on(slot, 0, f)
    }

    /// [`State::call`] about one stream of the connection (HTTP/2): `cx.conn.stream` names it.
    fn call_on(
        &mut self,
        slot: usize,
        stream: u32,
        f: impl FnOnce(&mut Session, &Context<'_>, &mut Vec<u8>) -> Action,
    ) -> Action {
        let conn = &mut self.conns[slot];
        let mut out = conn
            .pending
            .take()
            .unwrap_or_else(|| self.pool.pop().unwrap_or_default());
        let metrics = &self.shared.metrics;
        let id = ConnId {
            slot: slot as u32,
            generation: conn.generation,
            stream,
        };
        let mut cx = context!(self, id, self.peers.get(slot).copied().unwrap_or_default());
        cx.over_limit = self.standing.get(slot) == Some(&IpStanding::Over);
        let proto = &mut conn.proto;
        let action = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(proto, &cx, &mut out)
        })) {
            Ok(action) => action,
            Err(_) => {
                // A bug in protocol code (ours or a library's) ends this connection, not the
                // worker and every other connection on it. The panic hook has printed it.
                metrics.workers[self.index].protocol_panics.inc();
                out.clear();
                Action::Close {
                    reason: CloseReason::IoError,
                    linger: false,
                }
            }
        };
        if out.is_empty() {
            self.pool.push(out);
        } else {
            conn.pending = Some(out);
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
        self.sync_timer(slot);
        action
    }

    /// The slot of connection `id` if it is still open and taking output.
    fn live(&self, id: ConnId) -> Option<usize> {
        let slot = id.slot as usize;
        self.conns
            .get(slot)
            .filter(|c| {
                c.generation == id.generation
                    && c.phase == Phase::Open
                    && c.close_after_flush.is_none()
            })
            .map(|_| slot)
    }

    /// `server.proxy_protocol`: takes the PROXY header off the start of a connection's input.
    /// The client address it names becomes the connection's; a connection whose first bytes
    /// are not a valid header is refused (counted as `proxy_header` when it closes).
    fn strip_proxy_header(&mut self, slot: usize, data: &[u8]) -> Stripped {
        let conn = &mut self.conns[slot];
        let Some(wait) = conn.proxy_header.as_deref_mut() else {
            return Stripped::Passed(0);
        };
        let gathered = &mut wait.gathered;
        let parsed = if gathered.is_empty() {
            proxy::parse(data)
        } else {
            gathered.extend_from_slice(data);
            proxy::parse(gathered)
        };
        match parsed {
            Ok(proxy::Parsed::Incomplete) => {
                if gathered.is_empty() {
                    gathered.extend_from_slice(data);
                }
                Stripped::Waiting
            }
            Ok(proxy::Parsed::Done { consumed, source }) => {
                let gathered = conn
                    .proxy_header
                    .take()
                    .map(|w| w.gathered)
                    .unwrap_or_default();
                if source.is_some() && self.access.is_some() {
                    self.set_peer(slot, source);
                }
                if self.judge(slot, source) {
                    return Stripped::OverLimit;
                }
                if gathered.is_empty() {
                    Stripped::Passed(consumed)
                } else {
                    Stripped::Gathered(gathered[consumed..].to_vec())
                }
            }
            Err(_) => {
                conn.proxy_header = None;
                Stripped::Refused
            }
        }
    }

    /// Counts a new connection from `addr` against the per-address limits; one over them is
    /// marked so that its protocol refuses its first request. True when it is over them on
    /// the TLS listener, where it is to be closed now. An unknown address (a PROXY `LOCAL`
    /// health check, a socket without a peer) is not counted.
    fn judge(&mut self, slot: usize, addr: Option<std::net::SocketAddr>) -> bool {
        let Some(table) = self.shared.per_ip.as_ref() else {
            return false;
        };
        if self.standing.len() <= slot {
            self.standing.resize(slot + 1, IpStanding::Uncounted);
        }
        // Every call sets the slot's standing: a reused slot must not keep its last
        // occupant's.
        let Some(ip) = addr.map(|a| a.ip()) else {
            self.standing[slot] = IpStanding::Uncounted;
            return false;
        };
        match table.admit(ip, self.now) {
            super::per_ip::Verdict::Admitted => {
                self.standing[slot] = IpStanding::Counted(ip);
                false
            }
            verdict @ (super::per_ip::Verdict::TooMany | super::per_ip::Verdict::TooFast) => {
                let which = usize::from(verdict == super::per_ip::Verdict::TooFast);
                self.shared.metrics.workers[self.index].per_ip_refusals[which].inc();
                self.standing[slot] = IpStanding::Over;
                matches!(self.conns[slot].proto, Session::Tls(_))
            }
        }
    }

    /// A slot is freed: its address has one connection less.
    fn unjudge(&mut self, slot: usize) {
        if let Some(s) = self.standing.get_mut(slot) {
            if let (IpStanding::Counted(ip), Some(table)) = (*s, self.shared.per_ip.as_ref()) {
                table.release(ip, self.now);
            }
            *s = IpStanding::Uncounted;
        }
    }

    fn set_peer(&mut self, slot: usize, addr: Option<std::net::SocketAddr>) {
        if self.peers.len() <= slot {
            self.peers.resize(slot + 1, Peer::UNKNOWN);
        }
        self.peers[slot] = addr.map_or(Peer::UNKNOWN, Peer::from);
    }

    /// Hands this worker's access log lines to the writer when they are due (all of them when
    /// the worker is done), and counts any the writer had no room for.
    fn flush_access(&mut self, done: bool) {
        let Some(a) = &self.access else { return };
        if done {
            a.flush();
        } else {
            a.flush_if_due(self.now);
        }
        let dropped = a.take_dropped();
        if dropped > 0 {
            self.shared.metrics.workers[self.index]
                .access_log_dropped
                .add(dropped);
        }
    }

    fn sync_timer(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if conn.phase != Phase::Open {
            return;
        }
        let mut deadline = conn.proto.deadline(&self.shared.config);
        if let Some(wait) = conn.proxy_header.as_deref() {
            deadline = deadline.min(wait.deadline);
        }
        if deadline != conn.armed_deadline {
            conn.armed_deadline = deadline;
            if deadline == u64::MAX {
                self.wheel.cancel(slot);
            } else {
                self.wheel.arm(slot, deadline);
            }
        }
    }
}

/// Seeds a WebSocket session's heartbeat jitter from its slot and generation, so connections
/// upgraded together are spread out (the caller mixes in the time of the upgrade).
fn ws_seed(slot: usize, generation: u32) -> u32 {
    (slot as u32) ^ generation.rotate_left(16)
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Returns a drained write buffer to the pool, unless it grew large or the pool is full: a
/// burst of big responses should not leave memory pinned behind it.
fn give_back(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if buf.capacity() <= POOL_BUF_MAX_CAPACITY && pool.len() < POOL_MAX {
        buf.clear();
        pool.push(buf);
    }
}

/// Submits what is queued and waits up to `wait_ms` for a completion (0: only takes in what is
/// ready, running the deferred task work that produces it). A timeout, a signal or a full
/// completion queue are ordinary wake-ups, not errors.
fn enter(ring: &IoUring, wait_ms: u64) -> Result<(), String> {
    let ts = Timespec::new()
        .sec(wait_ms / 1000)
        .nsec((wait_ms % 1000) as u32 * 1_000_000);
    let args = SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!("io_uring_enter failed: {e}")),
    }
}

/// Queues a submission, flushing the queue to the kernel first if it is full.
fn push(ring: &mut IoUring, sqe: squeue::Entry) {
    loop {
        // SAFETY: every entry built in this module points only at memory that outlives the
        // operation: send buffers stay in `Conn::sending` until their completion, a sendmsg's
        // msghdr, iovecs and segments stay in the connection's boxed `OutQueue` (see outq.rs)
        // until theirs, the wake
        // buffer lives in the Worker (boxed, so it does not move), recv buffers belong to the
        // buffer ring, and the fds stay open until their Close op, which is submitted only
        // once the connection is quiescent.
        if unsafe { ring.submission().push(&sqe) }.is_ok() {
            return;
        }
        if let Err(e) = ring.submit()
            && e.raw_os_error() != Some(libc::EBUSY)
        {
            log::limited!(Error, "io_uring submit failed: {e}");
        }
    }
}

fn arm_recv(io: &mut Io, conn: &mut Conn, slot: usize) {
    let sqe = opcode::RecvMulti::new(Fd(conn.fd), io.bufs.group())
        .build()
        .user_data(Token::new(Op::Recv, slot, conn.generation).encode());
    push(&mut io.ring, sqe);
    conn.recv_armed = true;
    conn.recv_cancelled = false;
}

fn cancel_recv(ring: &mut IoUring, conn: &mut Conn, slot: usize) {
    if conn.recv_armed && !conn.recv_cancelled {
        let sqe = opcode::AsyncCancel::new(Token::new(Op::Recv, slot, conn.generation).encode())
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(Token::new(Op::Cancel, slot, 0).encode());
        push(ring, sqe);
        conn.recv_cancelled = true;
    }
}

/// Moves pending output into flight: a `sendmsg` over the queue when the connection has one
/// (shared frames are waiting), else a `send` of its own buffer. Returns false when there was
/// nothing to send.
fn start_send(ring: &mut IoUring, conn: &mut Conn, slot: usize, spare: &mut Spare) -> bool {
    if let Some(q) = conn.queue.as_mut() {
        if let Some(p) = conn.pending.take_if(|p| !p.is_empty()) {
            q.push(Seg::Owned(p));
        }
        if !q.is_empty() {
            let sqe = match q.single() {
                Some(bytes) => opcode::Send::new(Fd(conn.fd), bytes.as_ptr(), bytes.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build(),
                None => opcode::SendMsg::new(Fd(conn.fd), q.prepare())
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build(),
            }
            .user_data(Token::new(Op::Send, slot, conn.generation).encode());
            push(ring, sqe);
            conn.send_inflight = true;
            return true;
        }
        // Drained: an idle subscriber keeps no queue (the worker keeps a few for reuse: a
        // fan-out to ten thousand subscribers would otherwise allocate ten thousand).
        if let Some(q) = conn.queue.take()
            && spare.len() < QUEUES_KEPT
        {
            spare.push(q);
        }
    }
    match conn.pending.take() {
        Some(p) if !p.is_empty() => {
            conn.sending = Some(p);
            conn.sent = 0;
            resubmit_send(ring, conn, slot);
            true
        }
        other => {
            conn.pending = other;
            false
        }
    }
}

fn resubmit_send(ring: &mut IoUring, conn: &mut Conn, slot: usize) {
    let buf = conn.sending.as_ref().expect("resubmit_send needs a buffer");
    let rest = &buf[conn.sent..];
    let sqe = opcode::Send::new(Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(Token::new(Op::Send, slot, conn.generation).encode());
    push(ring, sqe);
    conn.send_inflight = true;
}

/// Closes `fd` with no completion on success: nothing waits for it, and a churning server
/// would otherwise wake once more per connection just to reap it.
fn close_fd(ring: &mut IoUring, fd: RawFd) {
    let sqe = opcode::Close::new(Fd(fd))
        .build()
        .flags(squeue::Flags::SKIP_SUCCESS)
        .user_data(Token::new(Op::Close, 0, 0).encode());
    push(ring, sqe);
}

/// What taking a PROXY header off a connection's input left for its protocol.
enum Stripped {
    /// No header expected, or it ended at this offset of the bytes just received.
    Passed(usize),
    /// The header came in pieces: what followed it.
    Gathered(Vec<u8>),
    /// Only part of the header so far.
    Waiting,
    /// Not a valid header: close.
    Refused,
    /// The address it names is over a per-address limit, on the TLS listener: close.
    OverLimit,
}
