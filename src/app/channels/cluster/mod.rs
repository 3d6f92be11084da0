//! Owns this server process's membership of a cluster (`[cluster] redis`, CHANNELS.md §5): its
//! member number, claimed in Redis and kept by refreshing it; a thread that reads the bus (a
//! pub/sub subscription) and applies what arrives to the [`Hub`]; and a thread that sends what
//! the workers queue, gathered into one pipelined round trip per batch so that the bus is
//! never a round trip per event, and a slow or absent Redis never blocks an event loop.
//!
//! Every event on a channel that has positions goes through Redis (see
//! [`wire::SEQUENCE_SCRIPT`]) and comes back on the bus to every member, this one included,
//! which delivers it then: so every member delivers a channel's events in one order under one
//! set of positions, and a `Last-Event-ID` from one node is valid on any other. While Redis
//! is away, events are positioned and delivered here alone and counted as not crossed; both
//! threads reconnect by themselves with backoff, and on rejoining this member tells the others
//! its state again.

pub mod wire;

use super::bus::{self, Msg};
use super::hub::{AppIdx, Fetched, Hub, Pos, Transport, lock, unix_ms};
use crate::config::{ChannelsConfig, ClusterConfig};
use crate::log;
use crate::proto::handler::ConnId;
use redis::{Client, Connection};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};
use wire::Names;

/// A member not heard from for this long is gone: its subscribers and presence members leave
/// everywhere. Every member says something at least every `TICK`, so this is several missed
/// ticks, not one slow one; with `TICK` it bounds how late a killed node's members leave.
pub const MEMBER_SILENCE: Duration = Duration::from_secs(10);
/// How often a member says it is alive, sends its changed subscriber counts, and refreshes
/// its member number.
const TICK: Duration = Duration::from_secs(1);
/// The member key's lifetime: a member that stops refreshing frees its number after it.
const MEMBER_KEY_LIFETIME: Duration = Duration::from_secs(30);
/// Member numbers: at most this many server processes in one cluster (they are part of
/// every socket_id, `Hub::socket_origin`).
const MEMBERS_MAX: u16 = 4095;
/// Connecting, reading and writing to Redis give up after this long.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The subscription hears this member's own `Alive` every `TICK`: this much silence means
/// the connection is dead even if the socket does not say so.
const BUS_SILENCE: Duration = Duration::from_secs(5);
/// Reconnection backoff: from the first to the last, doubling.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// Events one script call positions; messages one payload carries (about).
const EVENTS_PER_CALL: usize = 512;
const PAYLOAD_TARGET: usize = 256 * 1024;
/// Batches delivered alone that are remembered: far more than can be waiting in Redis while
/// the sender reconnects (one batch per pipeline, and the pipelines of a few seconds).
const ALONE_KEPT: usize = 1024;

enum Outgoing {
    All(Msg),
    To(u16, Msg),
    /// An event for Redis to position and send to every member.
    Sequence(Msg),
    /// A reconnecting event stream's request for the history after its positions.
    Fetch(Fetch),
}

struct Fetch {
    worker: usize,
    conn: ConnId,
    app: AppIdx,
    channels: Vec<Arc<str>>,
    from: Vec<Pos>,
}

/// The sending end the hub holds.
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
}

impl Outbox {
    pub fn send_all(&self, m: Msg) {
        let _ = self.tx.send(Outgoing::All(m));
    }
    pub fn send_to(&self, member: u16, m: Msg) {
        let _ = self.tx.send(Outgoing::To(member, m));
    }
    pub fn sequence(&self, m: Msg) {
        let _ = self.tx.send(Outgoing::Sequence(m));
    }
    pub fn fetch(
        &self,
        worker: usize,
        conn: ConnId,
        app: AppIdx,
        channels: Vec<Arc<str>>,
        from: Vec<Pos>,
    ) {
        let _ = self.tx.send(Outgoing::Fetch(Fetch {
            worker,
            conn,
            app,
            channels,
            from,
        }));
    }
}

/// What both threads know.
struct Member {
    client: Client,
    names: Names,
    me: u16,
    /// Proves this process owns its member key.
    token: String,
    /// Each app's id, by index: history streams are named by it.
    app_ids: Vec<String>,
    history_size: usize,
    history_ttl_ms: u64,
    /// Whether the subscription is up: if not, this member's events will not come back on
    /// the bus, and the sender delivers them here itself.
    listening: AtomicBool,
    /// The subscription just (re)connected: Redis is back, and the sender should not wait
    /// out its backoff to reconnect too (the hello and state it is about to send must cross).
    rejoined: AtomicBool,
    /// Where Redis is, for the log (the URL may carry a password).
    place: String,
    /// This member's batches of events it delivered alone while not knowing whether Redis ran
    /// them (an error while waiting for the answer, or no subscription): if one comes back on
    /// the bus after all, it is not delivered twice. The newest `ALONE_KEPT`.
    alone: Mutex<VecDeque<u64>>,
}

impl Member {
    fn delivered_alone(&self, batch: u64) {
        let mut alone = lock(&self.alone);
        if alone.len() == ALONE_KEPT {
            alone.pop_front();
        }
        alone.push_back(batch);
    }

    /// Whether `batch` was delivered alone already (and forgets it: it comes back once).
    fn was_delivered_alone(&self, batch: u64) -> bool {
        let mut alone = lock(&self.alone);
        match alone.iter().position(|&b| b == batch) {
            Some(i) => {
                alone.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Claims a member number in Redis and starts the two threads. A Redis that cannot be
/// reached now is not fatal: the process serves alone under a number of its own choosing and
/// joins when Redis is back.
pub fn start(hub: &Arc<Hub>, cfg: &ClusterConfig, channels: &ChannelsConfig) -> Result<(), String> {
    let client = Client::open(cfg.redis.as_str()).map_err(|e| format!("cluster.redis: {e}"))?;
    let place = client.get_connection_info().addr().to_string();
    let names = Names::new(&cfg.prefix);
    let seed = random_seed();
    let token = format!("{}-{seed:x}", std::process::id());
    let me = match claim(&client, &names, &token) {
        Ok(n) => {
            log::info!("cluster: joined through Redis at {place} as member {n}");
            n
        }
        Err(e) => {
            let n = (seed % u64::from(MEMBERS_MAX)) as u16 + 1;
            log::warn!(
                "cluster: Redis at {place} cannot be reached ({e}); serving alone as member {n} \
                 until it can"
            );
            n
        }
    };
    let member = Arc::new(Member {
        client,
        names,
        me,
        token,
        app_ids: hub.apps.iter().map(|a| a.id.clone()).collect(),
        history_size: channels.history_size,
        history_ttl_ms: channels
            .history_ttl
            .as_millis()
            .min(u128::from(u64::MAX / 4)) as u64,
        listening: AtomicBool::new(false),
        rejoined: AtomicBool::new(false),
        place,
        alone: Mutex::new(VecDeque::with_capacity(ALONE_KEPT)),
    });
    let (tx, rx) = mpsc::channel();
    let inbox = tx.clone();
    hub.set_link(Transport::Cluster(Outbox { tx }), me, 1);
    let weak = Arc::downgrade(hub);
    let m = Arc::clone(&member);
    std::thread::Builder::new()
        .name("holdfast-cluster-in".into())
        .spawn(move || listen(&m, &weak, &inbox))
        .map_err(|e| e.to_string())?;
    let weak = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("holdfast-cluster-out".into())
        .spawn(move || send(&member, rx, &weak))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return u64::from(std::process::id()) ^ super::hub::unix_ms();
    }
    u64::from_le_bytes(b)
}

fn connect(client: &Client) -> redis::RedisResult<Connection> {
    let con = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
    con.set_write_timeout(Some(REDIS_TIMEOUT))?;
    con.set_read_timeout(Some(REDIS_TIMEOUT))?;
    Ok(con)
}

/// The lowest free member number, taken.
fn claim(client: &Client, names: &Names, token: &str) -> Result<u16, String> {
    let mut con = connect(client).map_err(|e| e.to_string())?;
    for n in 1..=MEMBERS_MAX {
        let taken: Option<String> = redis::cmd("SET")
            .arg(names.member(n))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(MEMBER_KEY_LIFETIME.as_millis() as u64)
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        if taken.is_some() {
            // Notes since when Redis keeps histories, if this is its first member.
            let _: i64 = redis::cmd("EVAL")
                .arg(wire::REFRESH_SCRIPT)
                .arg(2)
                .arg(names.member(n))
                .arg(names.since())
                .arg(token)
                .arg(MEMBER_KEY_LIFETIME.as_millis() as u64)
                .query(&mut con)
                .map_err(|e| e.to_string())?;
            return Ok(n);
        }
    }
    Err(format!("all {MEMBERS_MAX} member numbers are taken"))
}

/// The subscription: applies every payload to the hub; on losing it, says so once and
/// reconnects with backoff, and on (re)joining says hello and tells the others this member's
/// state (they forget what they had of it, and answer with theirs).
fn listen(member: &Member, hub: &Weak<Hub>, outbox: &mpsc::Sender<Outgoing>) {
    let mut backoff = BACKOFF_FIRST;
    let mut lost_since: Option<Instant> = None;
    loop {
        let why = match subscribe_and_read(member, hub, outbox, &mut backoff, &mut lost_since) {
            Ok(()) => return, // the hub is gone: the process is ending
            Err(e) => e,
        };
        member.listening.store(false, Ordering::Release);
        let Some(h) = hub.upgrade() else { return };
        h.cluster_up.store(false, Ordering::Relaxed);
        drop(h);
        if lost_since.is_none() {
            lost_since = Some(Instant::now());
            log::warn!(
                "cluster: lost Redis at {} ({why}); serving local subscribers alone, counting \
                 what cannot cross, reconnecting",
                member.place
            );
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_LAST);
    }
}

/// Ok when the hub is gone; Err with why the subscription ended otherwise.
fn subscribe_and_read(
    member: &Member,
    hub: &Weak<Hub>,
    outbox: &mpsc::Sender<Outgoing>,
    backoff: &mut Duration,
    lost_since: &mut Option<Instant>,
) -> Result<(), String> {
    let mut con = connect(&member.client).map_err(|e| e.to_string())?;
    let mut sub = con.as_pubsub();
    sub.subscribe(&[member.names.bus(), member.names.to(member.me)])
        .map_err(|e| e.to_string())?;
    sub.set_read_timeout(Some(BUS_SILENCE))
        .map_err(|e| e.to_string())?;
    {
        let Some(h) = hub.upgrade() else {
            return Ok(());
        };
        member.listening.store(true, Ordering::Release);
        member.rejoined.store(true, Ordering::Release);
        h.cluster_up.store(true, Ordering::Relaxed);
        let _ = outbox.send(Outgoing::All(Msg::Hello));
        for m in h.own_state() {
            let _ = outbox.send(Outgoing::All(m));
        }
    }
    *backoff = BACKOFF_FIRST;
    if let Some(since) = lost_since.take() {
        log::info!(
            "cluster: back in touch with Redis at {} after {:.1}s",
            member.place,
            since.elapsed().as_secs_f64()
        );
    }
    loop {
        let msg = match sub.get_message() {
            Ok(m) => m,
            // Nothing was lost, and the client's decoder keeps what it had read: read again.
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let Some(h) = hub.upgrade() else {
            return Ok(());
        };
        match wire::unpack(msg.get_payload_bytes()) {
            Some(u)
                if u.from == member.me && u.batch != 0 && member.was_delivered_alone(u.batch) =>
            {
                log::debug!(
                    "cluster: batch {} came back after it was delivered alone; not again",
                    u.batch
                );
            }
            Some(u) => h.on_cluster(u.from, u.msgs),
            None => {
                h.bus_errors.fetch_add(1, Ordering::Relaxed);
                log::limited!(Warn, "cluster: a malformed bus message dropped");
            }
        }
    }
}

/// A socket read with a timeout fails with EINTR when the process was stopped and continued
/// (SIGSTOP/SIGCONT, a debugger; signal(7)), even with no signal handler. The client's error
/// kind for it is not public: the OS error number in its text tells it.
fn interrupted(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("(os error 4)")
}

/// One command of a pipeline, and what to do with its reply.
enum Sent {
    /// A plain publish: its messages, counted out (or lost).
    Publish { messages: u64, matters: bool },
    /// A script call positioning these events (the datagram carries them), with its batch
    /// number.
    Sequence {
        events: Vec<Msg>,
        datagram: Vec<u8>,
        batch: u64,
    },
    /// The member key's refresh.
    Refresh,
    /// A history read for a waiting event stream.
    Fetch(Fetch),
}

/// Gathers what the workers queue and sends it to Redis, one pipeline per batch; every
/// `TICK`, says this member is alive, sends the changed subscriber counts, refreshes the
/// member key and forgets members gone silent.
fn send(member: &Member, rx: mpsc::Receiver<Outgoing>, hub: &Weak<Hub>) {
    let mut con: Option<Connection> = None;
    let mut retry_at = Instant::now();
    let mut backoff = BACKOFF_FIRST;
    let mut tick_due = Instant::now();
    let mut batches = 0u64;
    loop {
        let first = match rx.recv_timeout(TICK) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(hub) = hub.upgrade() else { return };
        let mut queue: Vec<Outgoing> = first.into_iter().collect();
        queue.extend(rx.try_iter().take(20_000));
        let mut refresh = false;
        if tick_due.elapsed() >= TICK {
            tick_due = Instant::now();
            queue.push(Outgoing::All(Msg::Alive));
            queue.extend(hub.take_changed_counts().into_iter().map(Outgoing::All));
            hub.forget_silent(MEMBER_SILENCE);
            refresh = true;
        }
        // A subscription that had to reconnect means this connection went through the
        // same outage (a restarted Redis, a reset): it would fail the next batch, the
        // rejoining hello among it. Start afresh now instead.
        let rejoined = member.rejoined.swap(false, Ordering::AcqRel);
        if rejoined {
            con = None;
        }
        if con.is_none() && (rejoined || Instant::now() >= retry_at) {
            match connect(&member.client) {
                Ok(c) => {
                    con = Some(c);
                    backoff = BACKOFF_FIRST;
                }
                Err(_) => {
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_LAST);
                }
            }
        }
        let (pipe, sent) = build(member, queue, refresh, &mut batches);
        match con.as_mut() {
            Some(c) => match pipe.query::<Vec<redis::Value>>(c) {
                Ok(replies) => answered(member, &hub, sent, replies),
                Err(e) => {
                    // Whatever the error, the connection's state is unknown: start afresh.
                    con = None;
                    retry_at = Instant::now() + backoff;
                    if interrupted(&e) && member.listening.load(Ordering::Acquire) {
                        // Stopped and continued while waiting for the replies (see
                        // `interrupted`): the batch went out and Redis ran it; its events
                        // come back on the bus. Delivering them here too would repeat them.
                        // Only a history read's answer is lost: its stream recovers from this
                        // process's own history, or says recovery_failed.
                        for s in sent {
                            if let Sent::Fetch(f) = s {
                                hub.fetched(f.worker, f.conn, vec![None; f.channels.len()]);
                            }
                        }
                        continue;
                    }
                    log::limited!(Warn, "cluster: Redis did not take a batch: {e}");
                    not_sent(member, &hub, sent);
                }
            },
            None => not_sent(member, &hub, sent),
        }
    }
}

/// The pipeline for one batch, in the order the messages were queued (a run of plain
/// messages is one publish, a run of events one script call), and what each command carries.
fn build(
    member: &Member,
    queue: Vec<Outgoing>,
    refresh: bool,
    batches: &mut u64,
) -> (redis::Pipeline, Vec<Sent>) {
    let mut pipe = redis::pipe();
    let mut sent = Vec::new();
    let mut run = Run::default();
    for out in queue {
        let (target, m) = match out {
            Outgoing::All(m) => (Target::All, m),
            Outgoing::To(to, m) => (Target::To(to), m),
            Outgoing::Sequence(m) => (Target::Sequence, m),
            Outgoing::Fetch(f) => {
                let cmd = pipe
                    .cmd("EVAL")
                    .arg(wire::FETCH_SCRIPT)
                    .arg(f.channels.len() + 1)
                    .arg(member.names.since());
                let app_id = member
                    .app_ids
                    .get(usize::from(f.app))
                    .map_or("", String::as_str);
                for c in &f.channels {
                    cmd.arg(member.names.history(app_id, c));
                }
                for p in &f.from {
                    cmd.arg(p.to_string());
                }
                sent.push(Sent::Fetch(f));
                continue;
            }
        };
        if run.target != Some(target) || run.full() {
            run.flush(member, &mut pipe, &mut sent, batches);
            run.target = Some(target);
        }
        run.add(member.me, m);
    }
    run.flush(member, &mut pipe, &mut sent, batches);
    if refresh {
        pipe.cmd("EVAL")
            .arg(wire::REFRESH_SCRIPT)
            .arg(2)
            .arg(member.names.member(member.me))
            .arg(member.names.since())
            .arg(&member.token)
            .arg(MEMBER_KEY_LIFETIME.as_millis() as u64);
        sent.push(Sent::Refresh);
    }
    (pipe, sent)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    All,
    To(u16),
    Sequence,
}

/// Messages gathered for one command.
#[derive(Default)]
struct Run {
    target: Option<Target>,
    datagram: Vec<u8>,
    messages: Vec<Msg>,
    matters: bool,
}

impl Run {
    fn full(&self) -> bool {
        self.datagram.len() >= PAYLOAD_TARGET || self.messages.len() >= EVENTS_PER_CALL
    }

    fn add(&mut self, me: u16, m: Msg) {
        if self.datagram.is_empty() {
            bus::start(&mut self.datagram, me);
        }
        bus::encode(&mut self.datagram, &m);
        self.matters |= matches!(
            m,
            Msg::Event { .. } | Msg::Present { .. } | Msg::Absent { .. }
        );
        self.messages.push(m);
    }

    /// Adds the run's command to `pipe`; a script call takes the next of `batches`.
    fn flush(
        &mut self,
        member: &Member,
        pipe: &mut redis::Pipeline,
        sent: &mut Vec<Sent>,
        batches: &mut u64,
    ) {
        let Some(target) = self.target.take() else {
            return;
        };
        let datagram = std::mem::take(&mut self.datagram);
        let messages = std::mem::take(&mut self.messages);
        let matters = std::mem::take(&mut self.matters);
        if messages.is_empty() {
            return;
        }
        match target {
            Target::All | Target::To(_) => {
                let channel = match target {
                    Target::To(to) => member.names.to(to),
                    _ => member.names.bus(),
                };
                pipe.cmd("PUBLISH")
                    .arg(channel)
                    .arg(wire::pack(0, b"", &datagram));
                sent.push(Sent::Publish {
                    messages: messages.len() as u64,
                    matters,
                });
            }
            Target::Sequence => {
                *batches += 1;
                let batch = *batches;
                let cmd = pipe
                    .cmd("EVAL")
                    .arg(wire::SEQUENCE_SCRIPT)
                    .arg(messages.len() + 1)
                    .arg(member.names.since());
                for m in &messages {
                    if let Msg::Event { app, channel, .. } = m {
                        let id = member
                            .app_ids
                            .get(usize::from(*app))
                            .map_or("", String::as_str);
                        cmd.arg(member.names.history(id, channel));
                    }
                }
                cmd.arg(member.names.bus())
                    .arg(batch)
                    .arg(&datagram)
                    .arg(member.history_size.max(1))
                    .arg(member.history_ttl_ms.max(1));
                for m in &messages {
                    if let Msg::Event { frame, .. } = m {
                        cmd.arg(&frame[..]);
                    }
                }
                sent.push(Sent::Sequence {
                    events: messages,
                    datagram,
                    batch,
                });
            }
        }
    }
}

/// Redis answered every command of a batch.
fn answered(member: &Member, hub: &Hub, sent: Vec<Sent>, replies: Vec<redis::Value>) {
    for (s, reply) in sent.into_iter().zip(replies) {
        match s {
            Sent::Publish { messages, .. } => {
                hub.bus_out.fetch_add(messages, Ordering::Relaxed);
            }
            Sent::Sequence {
                events,
                datagram,
                batch,
            } => {
                hub.bus_out
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                if member.listening.load(Ordering::Acquire) {
                    continue; // they come back on the bus, in order with everyone else's
                }
                // Not subscribed: nothing comes back, so this member delivers its own
                // events, at the positions Redis gave (and, should the subscription have
                // been back in time to hear them after all, not twice).
                member.delivered_alone(batch);
                let ids = match &reply {
                    redis::Value::BulkString(b) => b.clone(),
                    redis::Value::SimpleString(s) => s.clone().into_bytes(),
                    _ => Vec::new(),
                };
                match wire::unpack(&wire::pack(batch, &ids, &datagram)) {
                    Some(u) => u.msgs.into_iter().for_each(|m| hub.sequence_here(m)),
                    None => events.into_iter().for_each(|m| hub.sequence_here(m)),
                }
            }
            Sent::Fetch(f) => {
                let fetched = read_history(member, &f, &reply);
                hub.fetched(f.worker, f.conn, fetched);
            }
            Sent::Refresh => {
                if matches!(reply, redis::Value::Int(0)) {
                    log::limited!(
                        Warn,
                        "cluster: member number {} is held by another process (this one was \
                         cut off longer than {}s); socket_ids may repeat until it restarts",
                        member.me,
                        MEMBER_KEY_LIFETIME.as_secs()
                    );
                }
            }
        }
    }
}

/// A batch Redis did not take, or whose answer did not come: events are positioned and
/// delivered here alone (the local subscribers still get them), and everything that mattered
/// is counted as not crossed. Redis may have run a batch whose answer was lost (a timeout
/// while it was busy): if it comes back on the bus, it is not delivered again.
fn not_sent(member: &Member, hub: &Hub, sent: Vec<Sent>) {
    for s in sent {
        match s {
            Sent::Publish { messages, matters } => {
                if matters {
                    hub.bus_errors.fetch_add(messages, Ordering::Relaxed);
                }
            }
            Sent::Sequence { events, batch, .. } => {
                member.delivered_alone(batch);
                hub.bus_errors
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                events.into_iter().for_each(|m| hub.sequence_here(m));
            }
            Sent::Fetch(f) => hub.fetched(f.worker, f.conn, vec![None; f.channels.len()]),
            Sent::Refresh => {}
        }
    }
}

/// What Redis held for each channel of a fetch, as the hub merges it: None for a channel
/// whose history cannot vouch for everything after the position (trimmed past it, or an
/// event in it older than the TTL), or when the answer is not what the script returns.
fn read_history(member: &Member, f: &Fetch, reply: &redis::Value) -> Vec<Option<Fetched>> {
    let none = || vec![None; f.channels.len()];
    let Some(wire::FetchAnswer {
        now_ms,
        since_ms,
        streams,
    }) = wire::parse_fetch(reply)
    else {
        log::limited!(Warn, "cluster: a history read came back misshapen");
        return none();
    };
    if streams.len() != f.channels.len() {
        return none();
    }
    // Redis restarted empty after the position (or so recently that nobody said when): it
    // cannot vouch for what happened before.
    let Some(since_ms) = since_ms else {
        return none();
    };
    let local_now = unix_ms();
    streams
        .into_iter()
        .zip(&f.from)
        .map(|(read, from)| {
            if read.deleted.is_some_and(|d| d > *from) || from.ms < since_ms {
                return None; // trimmed after the position, or Redis began after it
            }
            let mut entries = Vec::with_capacity(read.entries.len());
            for (pos, frame) in read.entries {
                if pos.ms.saturating_add(member.history_ttl_ms) <= local_now {
                    return None; // past the TTL, as this member's own history would say
                }
                entries.extend(super::sse::entry(&frame, pos, pos.ms));
            }
            Some(Fetched {
                entries,
                upto: Pos {
                    ms: now_ms,
                    n: u64::MAX,
                },
            })
        })
        .collect()
}
