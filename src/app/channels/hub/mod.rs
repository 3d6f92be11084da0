//! Owns what the workers of a node share about channels (DESIGN §2a): which channels are
//! occupied and by how many connections, presence members, the cached last event of cache
//! channels, the per-channel sequence that orders events, each worker's mailbox, and (under
//! `server.processes > 1`) what the sibling processes said about theirs over the bus.
//!
//! Ordering: an event gets its channel's next sequence number and is put in every worker's
//! mailbox while the channel's shard is locked, so every worker of the process sees a
//! channel's events in the same order; a subscription records the sequence it joined at
//! (under the same lock) and receives only later events, so nothing is delivered twice or
//! before its `subscription_succeeded`. Lock order: shard, then mailbox; never the other way.
//!
//! Recovery (CHANNELS.md §4): every event on a channel that is not a presence channel gets the
//! channel's next [`Pos`] under the same lock, and is kept in the channel's history (see
//! [`history`]); a stream that joins with a position to recover from gets exactly the kept
//! events after it, and live ones after its join, so there is neither a gap nor a repeat.
//!
//! Presence is node-wide: a member is a user with a connection in this process (`local`) or
//! in another (`remote`, from the bus). Each process announces `member_added` to its own
//! subscribers when a user appears on the node as it sees it, and `member_removed` when the
//! user is gone from every process, so every subscriber hears of each change once.

use super::bus::Msg;
use super::cluster::Outbox;
use super::peers::Peers;
use super::pusher;
use super::stats::AppStats;
use crate::config::{AppConfig, ChannelsConfig};
use crate::proto::handler::{ConnId, Waker};
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use history::{Delta, Fifo, Histories, History, Limits, Replay};
pub use history::{Entry, Pos};

/// An app's index in [`Hub::apps`].
pub type AppIdx = u16;

/// How long a cache channel keeps its last event (CHANNELS.md §2).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

const SHARDS: usize = 64;

/// A publish whose sibling processes have not all answered within this long (one died or
/// restarted with the event in flight) is answered anyway: a process that is gone has no
/// subscribers left to wait for.
const ACK_GIVE_UP: Duration = Duration::from_secs(10);

/// A connection's socket_id, `origin.n`: `origin` names the worker (and process) that holds
/// it, `n` counts that worker's connections, so ids are unique on the node without
/// coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    pub origin: u32,
    pub n: u64,
}

impl SocketId {
    pub fn parse(s: &str) -> Option<SocketId> {
        let (origin, n) = history::number_pair(s, '.')?;
        Some(SocketId {
            origin: u32::try_from(origin).ok()?,
            n,
        })
    }
}

impl std::fmt::Display for SocketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.origin, self.n)
    }
}

/// One event on its way to every subscriber of a channel in this process.
pub struct Event {
    pub app: AppIdx,
    pub channel: Arc<str>,
    pub seq: u64,
    /// The WebSocket text frame every subscriber's send shares.
    pub frame: Arc<[u8]>,
    /// The same event as an event stream's chunk, at its position on the channel (None on
    /// presence channels, and where neither a history nor a stream wants it).
    pub sse: Option<Entry>,
    /// The connection that must not receive it (the API's `socket_id`, a client event's
    /// sender, a presence member's own join).
    pub exclude: Option<SocketId>,
    pub ack: Option<Arc<Ack>>,
    /// When it was posted: the fan-out histogram measures from here to each worker's queueing.
    pub posted: Instant,
}

/// Who waits for an acknowledgement.
enum AckTarget {
    /// An API request on this process: its worker answers `body` on `conn`.
    Local {
        worker: usize,
        conn: ConnId,
        body: Mutex<Option<String>>,
    },
    /// A sibling process published the event: tell it, by its `id`, once ours have it queued.
    Remote { process: u16, id: u64 },
}

/// Counts the workers (and sibling processes) that have queued a publish's events; the last
/// one tells whoever waits.
pub struct Ack {
    remaining: AtomicUsize,
    /// When it was made: one a sibling never answers is given up after `ACK_GIVE_UP`.
    made: Instant,
    /// The id sibling processes acknowledge by (0: not sent to any).
    id: u64,
    target: AckTarget,
}

impl Ack {
    fn done(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

pub enum Mail {
    Event(Arc<Event>),
    /// Every worker has queued the events of the API request on `conn`: answer it.
    Acked {
        conn: ConnId,
        body: String,
    },
    /// What the cluster's history held for the event stream waiting on `conn`, per channel
    /// in its request's order (None: nothing Redis could vouch for).
    Fetched {
        conn: ConnId,
        fetched: Vec<Option<Fetched>>,
    },
}

#[derive(Default)]
struct Mailbox {
    queue: Mutex<Vec<Mail>>,
    has_mail: AtomicBool,
}

struct Member {
    /// This process's connections of the user on the channel.
    local: u32,
    /// The sibling processes where the user has a connection.
    remote: Vec<u16>,
    /// `user_info` as JSON, as the first connection seen gave it.
    info: Box<str>,
}

impl Member {
    fn present(&self) -> bool {
        self.local > 0 || !self.remote.is_empty()
    }
}

struct Channel {
    /// Subscribers in this process (event streams included).
    subscribers: u64,
    /// Of them, event streams.
    streams: u64,
    /// Subscribers in each sibling process, as they last said.
    remote: HashMap<u16, u64>,
    members: IndexMap<String, Member>,
    seq: u64,
    cache: Option<(Arc<[u8]>, Instant)>,
    /// The position of the channel's last event (or of its record's birth).
    last: Pos,
    /// When this record was made (Unix ms): it vouches for every event since.
    created_ms: u64,
    history: History,
    /// The record stays until then (its last event's time plus the TTL), so that a channel
    /// without a record had no event within the TTL.
    keep_until_ms: u64,
}

impl Channel {
    fn new() -> Channel {
        let now = unix_ms();
        Channel {
            subscribers: 0,
            streams: 0,
            remote: HashMap::new(),
            members: IndexMap::new(),
            seq: 0,
            cache: None,
            last: Pos { ms: now, n: 0 },
            created_ms: now,
            history: History::default(),
            keep_until_ms: 0,
        }
    }

    fn total(&self) -> u64 {
        self.subscribers + self.remote.values().sum::<u64>()
    }
    fn vacant(&self) -> bool {
        self.total() == 0
            && self.members.is_empty()
            && self.cache.is_none()
            && self.history.is_empty()
            && unix_ms() >= self.keep_until_ms
    }
    fn occupancy(&self) -> Occupancy {
        Occupancy {
            subscription_count: self.total(),
            user_count: self.members.len() as u64,
        }
    }
}

type Key = (AppIdx, Arc<str>);

/// One lock's worth of channels, with the order their history was kept in.
#[derive(Default)]
struct Shard {
    channels: HashMap<Key, Channel>,
    fifo: Fifo,
}

impl std::ops::Deref for Shard {
    type Target = HashMap<Key, Channel>;
    fn deref(&self) -> &Self::Target {
        &self.channels
    }
}

impl std::ops::DerefMut for Shard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.channels
    }
}

impl Histories for HashMap<Key, Channel> {
    fn history(&mut self, key: &Key) -> Option<&mut History> {
        self.get_mut(key).map(|c| &mut c.history)
    }
}

/// Milliseconds since the Unix epoch: positions are wall-clock times, so that they keep
/// growing across restarts.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub mod history;
mod siblings;
#[cfg(test)]
mod tests;

/// What a subscription found when it joined.
pub struct Joined {
    /// Events with a higher sequence are this subscription's.
    pub seq: u64,
    /// Presence: every member on the node, the joiner included (user_id, user_info JSON).
    pub members: Vec<(String, String)>,
    /// A cache channel's last event, when there is one.
    pub cached: Option<Arc<[u8]>>,
    /// The channel's position at the join: later events are this subscription's.
    pub at: Pos,
    /// For an event stream that asked to recover: what it missed.
    pub recovered: Recovered,
}

/// What an event stream's join found to replay.
pub enum Recovered {
    /// Nothing asked (or a WebSocket).
    Live,
    /// Exactly the missed events, in order (maybe none).
    Events(Vec<Entry>),
    /// The history does not reach back to where the stream was.
    Failed,
}

/// How a subscription joins: a WebSocket, or an event stream that may recover from a
/// position (with, in a cluster, what Redis's history held after it, fetched before the join
/// because this process's own history does not reach back so far).
#[derive(Clone, Copy)]
pub enum Via<'a> {
    Socket,
    Stream {
        from: Option<Pos>,
        fetched: Option<&'a Fetched>,
    },
}

/// A channel's events after a stream's position as the cluster's history in Redis held them
/// (every one of them: nothing after the position was trimmed, none is past the TTL), when it
/// was read.
#[derive(Clone)]
pub struct Fetched {
    pub entries: Vec<Entry>,
    /// Redis's clock when it was read: the events up to here are all in `entries`.
    pub upto: Pos,
}

pub enum JoinError {
    TooManyMembers,
}

/// Occupancy of one channel on the node, for the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    pub subscription_count: u64,
    pub user_count: u64,
}

/// How this process reaches the others that share its channels.
pub enum Transport {
    /// The sibling processes of this node (`server.processes > 1`), over Unix datagrams.
    Siblings(Peers),
    /// The members of a cluster (`[cluster] redis`), through Redis: every process of every
    /// node is a member, and Redis gives every event its position.
    Cluster(Outbox),
}

/// This process among the others, once the bus is up.
struct Link {
    transport: Transport,
    /// This process's index among its siblings, or its member number in the cluster.
    me: u16,
    processes: usize,
}

impl Link {
    fn send_all(&self, m: Msg) {
        match &self.transport {
            Transport::Siblings(p) => p.send_all(m),
            Transport::Cluster(c) => c.send_all(m),
        }
    }
    fn send_to(&self, to: u16, m: Msg) {
        match &self.transport {
            Transport::Siblings(p) => p.send_to(to, m),
            Transport::Cluster(c) => c.send_to(to, m),
        }
    }
    fn cluster(&self) -> Option<&Outbox> {
        match &self.transport {
            Transport::Cluster(c) => Some(c),
            Transport::Siblings(_) => None,
        }
    }
    /// The sibling processes an acknowledgement waits for (cluster members never answer
    /// one: Redis taking the event is the cluster's part, CHANNELS.md §3).
    fn siblings(&self) -> usize {
        match self.transport {
            Transport::Siblings(_) => self.processes - 1,
            Transport::Cluster(_) => 0,
        }
    }
}

/// How an event gets its position on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// One process alone (or a presence channel): positioned here if anything wants one.
    Local,
    /// This process owns the channel: positioned here and sent, positioned, to every sibling.
    Assign { origin: u16, ack: Option<u64> },
    /// The owner positioned it.
    Given(Pos),
}

/// Whether a channel's events get positions, one order for the node (see [`Hub::publish`]):
/// all but presence channels, whose events are membership for WebSocket subscribers.
pub fn sequenced(channel: &str) -> bool {
    !channel.starts_with("presence-")
}

/// The process that sequences a channel's events: the same answer in every process (FNV-1a,
/// not the std hasher, whose output may change between builds).
fn owner(app: AppIdx, channel: &str, processes: usize) -> u16 {
    let h = app
        .to_be_bytes()
        .iter()
        .chain(channel.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (h % processes.max(1) as u64) as u16
}

pub struct Hub {
    pub apps: Vec<AppConfig>,
    pub stats: Vec<AppStats>,
    by_key: HashMap<String, AppIdx>,
    by_id: HashMap<String, AppIdx>,
    shards: Box<[Mutex<Shard>]>,
    limits: Limits,
    /// When this process started (Unix ms): nothing before it is known.
    start_ms: u64,
    mailboxes: Box<[Mailbox]>,
    wakers: OnceLock<Vec<Waker>>,
    link: OnceLock<Link>,
    /// Channels whose local subscriber count changed since the siblings were last told.
    dirty: Mutex<HashSet<Key>>,
    /// Acknowledgements sibling processes still owe, by id.
    owed: Mutex<HashMap<u64, Arc<Ack>>>,
    next_ack: AtomicU64,
    /// Each sibling's latest figures per app (`Msg::Stats`).
    sibling_stats: Mutex<HashMap<u16, HashMap<AppIdx, Vec<u64>>>>,
    /// Each sibling's latest bus figures (`Msg::Bus`): in, out, errors.
    sibling_bus: Mutex<HashMap<u16, [u64; 3]>>,
    /// When each other cluster member was last heard from: one silent for
    /// `cluster::MEMBER_SILENCE` is gone, with its subscribers and presence members.
    heard: Mutex<HashMap<u16, Instant>>,
    /// Whether this cluster member is in touch with Redis (subscribed to the bus).
    pub cluster_up: AtomicBool,
    /// Bus messages in and out, and what could not be sent or read.
    pub bus_in: AtomicU64,
    pub bus_out: AtomicU64,
    pub bus_errors: AtomicU64,
}

impl Hub {
    pub fn new(apps: Vec<AppConfig>, channels: &ChannelsConfig, workers: usize) -> Hub {
        let by_key = apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.key.clone(), i as AppIdx))
            .collect();
        let by_id = apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i as AppIdx))
            .collect();
        Hub {
            stats: apps.iter().map(|_| AppStats::default()).collect(),
            apps,
            by_key,
            by_id,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            limits: Limits {
                size: channels.history_size,
                ttl_ms: channels
                    .history_ttl
                    .as_millis()
                    .min(u128::from(u64::MAX / 4)) as u64,
                shard_bytes: (channels.history_memory / SHARDS as u64) as usize,
            },
            start_ms: unix_ms(),
            mailboxes: (0..workers.max(1)).map(|_| Mailbox::default()).collect(),
            wakers: OnceLock::new(),
            link: OnceLock::new(),
            dirty: Mutex::default(),
            owed: Mutex::default(),
            next_ack: AtomicU64::new(1),
            sibling_stats: Mutex::default(),
            sibling_bus: Mutex::default(),
            heard: Mutex::default(),
            cluster_up: AtomicBool::new(false),
            bus_in: AtomicU64::new(0),
            bus_out: AtomicU64::new(0),
            bus_errors: AtomicU64::new(0),
        }
    }

    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// The engine's wake-ups, given once the workers exist.
    pub fn set_wakers(&self, wakers: &[Waker]) {
        let _ = self.wakers.set(wakers.to_vec());
    }

    /// Joins this process to its siblings or its cluster: from now on events, subscriber
    /// counts and presence cross the bus.
    pub fn set_link(&self, transport: Transport, me: u16, processes: usize) {
        let _ = self.link.set(Link {
            transport,
            me,
            processes,
        });
    }

    /// Tells every sibling this process started with nothing (they answer with their state).
    pub fn peers_hello(&self) {
        if let Some(l) = self.link() {
            l.send_all(Msg::Hello);
        }
    }

    fn link(&self) -> Option<&Link> {
        self.link
            .get()
            .filter(|l| l.processes > 1 || l.cluster().is_some())
    }

    /// The first half of socket ids made by worker `index` of server process `process`:
    /// unique on the node, and in a cluster unique across it (the member number is in it).
    pub fn socket_origin(&self, process: usize, index: usize) -> u32 {
        match self.link.get() {
            Some(l) if l.cluster().is_some() => u32::from(l.me) << 11 | (index as u32 + 1),
            _ => (process * 1024 + index + 1) as u32,
        }
    }

    pub fn app_by_key(&self, key: &str) -> Option<AppIdx> {
        self.by_key.get(key).copied()
    }

    pub fn app_by_id(&self, id: &str) -> Option<AppIdx> {
        self.by_id.get(id).copied()
    }

    fn shard(&self, app: AppIdx, channel: &str) -> MutexGuard<'_, Shard> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        app.hash(&mut h);
        channel.hash(&mut h);
        let i = (h.finish() as usize) % SHARDS;
        // A panic while holding a shard cannot leave it half-updated in a way that matters
        // more than stopping every channel on it: keep serving.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counted(&self, app: AppIdx, channel: &Arc<str>) {
        if self.link().is_some() {
            lock(&self.dirty).insert((app, Arc::clone(channel)));
        }
    }

    /// Joins `channel` (as `presence`'s user and info on a presence channel). A user's first
    /// connection on the node announces `member_added` to the others.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        app: AppIdx,
        channel: &Arc<str>,
        presence: Option<(&str, &str)>,
        max_members: usize,
        me: SocketId,
        from_worker: usize,
        via: Via<'_>,
    ) -> Result<Joined, JoinError> {
        let mut shard = self.shard(app, channel);
        let key = (app, Arc::clone(channel));
        let ch = shard.entry(key.clone()).or_insert_with(Channel::new);
        let stats = &self.stats[usize::from(app)];
        let mut announce = false;
        let mut first_here = false;
        if let Some((user, info)) = presence {
            match ch.members.get_mut(user) {
                Some(m) => {
                    first_here = m.local == 0;
                    m.local += 1;
                }
                None => {
                    if ch.members.len() >= max_members {
                        if ch.vacant() {
                            shard.remove(&key);
                        }
                        return Err(JoinError::TooManyMembers);
                    }
                    ch.members.insert(
                        user.to_string(),
                        Member {
                            local: 1,
                            remote: Vec::new(),
                            info: info.into(),
                        },
                    );
                    announce = true;
                    first_here = true;
                    stats.presence_members.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if ch.total() == 0 {
            stats.occupied_channels.fetch_add(1, Ordering::Relaxed);
        }
        ch.subscribers += 1;
        let mut recovered = Recovered::Live;
        if let Via::Stream { from, fetched } = via {
            ch.streams += 1;
            if let Some(from) = from {
                recovered = self.recover(ch, from, fetched);
            }
        }
        let at = ch.last;
        let members = if presence.is_some() {
            ch.members
                .iter()
                .map(|(id, m)| (id.clone(), m.info.to_string()))
                .collect()
        } else {
            Vec::new()
        };
        let cached = match &ch.cache {
            Some((frame, at)) if at.elapsed() < CACHE_TTL => Some(Arc::clone(frame)),
            _ => None,
        };
        // The member_added posted below (if any) comes after this and excludes the joiner.
        let seq = ch.seq;
        let mut woken = Vec::new();
        if let Some((user, info)) = presence {
            if announce {
                let frame = pusher::frame(&pusher::member_added(channel, user, info));
                self.post(&mut shard, &key, frame, Some(me), None, &mut woken);
            }
            if first_here && let Some(l) = self.link() {
                l.send_all(Msg::Present {
                    app,
                    channel: Arc::clone(channel),
                    user: user.to_string(),
                    info: info.to_string(),
                });
            }
        }
        drop(shard);
        self.counted(app, channel);
        self.wake(&woken, from_worker);
        Ok(Joined {
            seq,
            members,
            cached,
            at,
            recovered,
        })
    }

    /// Where this process's history of `ch` vouches from: before it, it may not know every
    /// event (it started later, or the record is younger than the TTL).
    fn floor(&self, ch: &Channel) -> Pos {
        Pos {
            ms: self
                .start_ms
                .max(ch.created_ms.saturating_sub(self.limits.ttl_ms)),
            n: 0,
        }
    }

    /// The events a stream missed on `ch` since `from`, or why they cannot be had. When this
    /// process's history does not reach back to `from`, what Redis held (`fetched`) covers
    /// the part before it, and this history the rest: together, every event after `from`
    /// up to the join, each once.
    fn recover(&self, ch: &Channel, from: Pos, fetched: Option<&Fetched>) -> Recovered {
        if self.limits.size == 0 {
            return Recovered::Failed;
        }
        let floor = self.floor(ch);
        let (now, ttl) = (unix_ms(), self.limits.ttl_ms);
        let local = |since: Pos| match ch.history.since(since, ch.last, floor, now, ttl) {
            Replay::Failed => None,
            Replay::Events(positions) => Some(
                positions
                    .iter()
                    .filter_map(|p| ch.history.get(*p).cloned())
                    .collect::<Vec<Entry>>(),
            ),
        };
        if let Some(events) = local(from) {
            return Recovered::Events(events);
        }
        let Some(f) = fetched else {
            return Recovered::Failed;
        };
        // This history is whole after `cut`; Redis's must reach at least that far.
        let cut = floor.max(ch.history.forgotten()).max(from);
        if f.upto < cut || from > ch.last {
            return Recovered::Failed;
        }
        let mut events: Vec<Entry> = f
            .entries
            .iter()
            .filter(|e| e.pos > from && e.pos <= cut)
            .cloned()
            .collect();
        if cut < ch.last {
            match local(cut) {
                Some(rest) => events.extend(rest),
                None => return Recovered::Failed,
            }
        }
        Recovered::Events(events)
    }

    /// Whether a stream recovering from `from` on `channel` needs the cluster's history: this
    /// process's does not reach back so far, Redis's may (`from` is within the TTL), and this
    /// process is a cluster member in touch with Redis.
    pub fn needs_cluster_history(&self, app: AppIdx, channel: &Arc<str>, from: Pos) -> bool {
        let in_touch = self.link().is_some_and(|l| l.cluster().is_some())
            && self.cluster_up.load(Ordering::Relaxed);
        if !in_touch || self.limits.size == 0 {
            return false;
        }
        let now = unix_ms();
        if from.ms.saturating_add(self.limits.ttl_ms) <= now {
            return false; // expired everywhere
        }
        let shard = self.shard(app, channel);
        match shard.get(&(app, Arc::clone(channel))) {
            Some(ch) => {
                let floor = self.floor(ch);
                from < floor.max(ch.history.forgotten()) && from <= ch.last
            }
            None => from.ms < self.start_ms.max(now.saturating_sub(self.limits.ttl_ms)),
        }
    }

    /// Leaves `channel`; a presence user's last connection on the node announces
    /// `member_removed`.
    pub fn leave(
        &self,
        app: AppIdx,
        channel: &Arc<str>,
        presence_user: Option<&str>,
        from_worker: usize,
        stream: bool,
    ) {
        let mut shard = self.shard(app, channel);
        let key = (app, Arc::clone(channel));
        let Some(ch) = shard.get_mut(&key) else {
            return;
        };
        ch.subscribers = ch.subscribers.saturating_sub(1);
        if stream {
            ch.streams = ch.streams.saturating_sub(1);
        }
        if ch.total() == 0 {
            self.stats[usize::from(app)]
                .occupied_channels
                .fetch_sub(1, Ordering::Relaxed);
        }
        let mut woken = Vec::new();
        if let Some(user) = presence_user
            && let Some(m) = ch.members.get_mut(user)
        {
            m.local = m.local.saturating_sub(1);
            if m.local == 0 {
                if let Some(l) = self.link() {
                    l.send_all(Msg::Absent {
                        app,
                        channel: Arc::clone(channel),
                        user: user.to_string(),
                    });
                }
                if !m.present() {
                    self.remove_member(&mut shard, &key, user, &mut woken);
                }
            }
        }
        if shard.get(&key).is_some_and(Channel::vacant) {
            shard.remove(&key);
        }
        drop(shard);
        self.counted(app, channel);
        self.wake(&woken, from_worker);
    }

    /// A member is gone from the whole node: forget it and tell the channel.
    fn remove_member(&self, shard: &mut Shard, key: &Key, user: &str, woken: &mut Vec<usize>) {
        if let Some(ch) = shard.get_mut(key) {
            ch.members.shift_remove(user);
        }
        self.stats[usize::from(key.0)]
            .presence_members
            .fetch_sub(1, Ordering::Relaxed);
        let frame = pusher::frame(&pusher::member_removed(&key.1, user));
        self.post(shard, key, frame, None, None, woken);
    }

    /// An acknowledgement for an API request on `conn` of `worker`, to be answered with
    /// `body` once `events` events have reached every worker and every sibling process.
    pub fn ack(&self, events: usize, worker: usize, conn: ConnId, body: String) -> Arc<Ack> {
        // Linked, the event comes back to be delivered here (from the owner process, or
        // positioned by Redis) and finds its acknowledgement by id.
        let linked = self.link();
        let siblings = linked.map_or(0, Link::siblings);
        let ack = Arc::new(Ack {
            remaining: AtomicUsize::new((events * (self.workers() + siblings)).max(1)),
            made: Instant::now(),
            id: if linked.is_some() {
                self.next_ack.fetch_add(1, Ordering::Relaxed)
            } else {
                0
            },
            target: AckTarget::Local {
                worker,
                conn,
                body: Mutex::new(Some(body)),
            },
        });
        if linked.is_some() {
            lock(&self.owed).insert(ack.id, Arc::clone(&ack));
        }
        ack
    }

    /// Publishes one event (its frame built once) to every subscriber on the node. Under
    /// `server.processes > 1` an event on a channel that is not a presence channel goes to the
    /// channel's owner process first, which gives it its position and sends it to every
    /// process (this one included), so that all of them deliver and keep a channel's events
    /// in one order with one set of positions: what makes a `Last-Event-ID` valid in every
    /// process a reconnecting client may land on.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        app: AppIdx,
        channel: &str,
        frame: Arc<[u8]>,
        cache: bool,
        exclude: Option<SocketId>,
        ack: Option<Arc<Ack>>,
        from_worker: usize,
    ) {
        let channel: Arc<str> = channel.into();
        let ack_id = ack.as_ref().map(|a| a.id);
        let order = match self.link() {
            None => Order::Local,
            Some(l) => {
                let unsequenced = || Msg::Event {
                    app,
                    channel: Arc::clone(&channel),
                    cache,
                    exclude,
                    ack: ack_id,
                    origin: l.me,
                    pos: None,
                    frame: Arc::clone(&frame),
                };
                let owner = owner(app, &channel, l.processes);
                if !sequenced(&channel) {
                    l.send_all(unsequenced());
                    Order::Local
                } else if let Some(cluster) = l.cluster() {
                    // Redis positions it and sends it to every member, this one included.
                    cluster.sequence(unsequenced());
                    return;
                } else if owner == l.me {
                    Order::Assign {
                        origin: l.me,
                        ack: ack_id,
                    }
                } else {
                    // Our own subscribers get it when the owner sends it back, sequenced; the
                    // ack (kept in `owed`, since there are siblings) counts our workers then.
                    l.send_to(owner, unsequenced());
                    return;
                }
            }
        };
        self.publish_here(app, channel, frame, cache, exclude, ack, from_worker, order);
    }

    /// An event a sibling sent (see [`Msg::Event`]), or one whose owner could not be reached:
    /// sequenced here, as if this process owned its channel.
    pub fn sequence_here(&self, m: Msg) {
        let Msg::Event {
            app,
            channel,
            cache,
            exclude,
            ack,
            origin,
            pos,
            frame,
        } = m
        else {
            return;
        };
        if usize::from(app) >= self.apps.len() {
            return;
        }
        let Some(link) = self.link() else {
            return;
        };
        let me = link.me;
        // Who waits for this process's workers: our own API request, or the origin's (a
        // sibling's; cluster members wait for nobody else's workers).
        let waiting = ack.and_then(|id| {
            if origin == me {
                lock(&self.owed).get(&id).cloned()
            } else if link.cluster().is_some() {
                None
            } else {
                Some(Arc::new(Ack {
                    remaining: AtomicUsize::new(self.workers()),
                    made: Instant::now(),
                    id,
                    target: AckTarget::Remote {
                        process: origin,
                        id,
                    },
                }))
            }
        });
        let order = match pos {
            Some(p) => Order::Given(p),
            None if sequenced(&channel) => Order::Assign { origin, ack },
            None => Order::Local,
        };
        self.publish_here(
            app,
            channel,
            frame,
            cache,
            exclude,
            waiting,
            usize::MAX,
            order,
        );
    }

    /// Delivers an event to this process's subscribers only.
    #[allow(clippy::too_many_arguments)]
    fn publish_here(
        &self,
        app: AppIdx,
        channel: Arc<str>,
        frame: Arc<[u8]>,
        cache: bool,
        exclude: Option<SocketId>,
        ack: Option<Arc<Ack>>,
        from_worker: usize,
        order: Order,
    ) {
        let key = (app, channel);
        let mut shard = self.shard(app, &key.1);
        let mut woken = Vec::new();
        if cache {
            let ch = shard.entry(key.clone()).or_insert_with(Channel::new);
            ch.cache = Some((Arc::clone(&frame), Instant::now()));
        }
        let sse = self.keep(&mut shard, &key, &frame, order, cache, exclude);
        self.post_at(&mut shard, &key, frame, sse, exclude, ack, &mut woken);
        drop(shard);
        self.wake(&woken, from_worker);
    }

    /// Puts an event without a position (membership on a presence channel) in every mailbox.
    fn post(
        &self,
        shard: &mut Shard,
        key: &Key,
        frame: Arc<[u8]>,
        exclude: Option<SocketId>,
        ack: Option<Arc<Ack>>,
        woken: &mut Vec<usize>,
    ) {
        self.post_at(shard, key, frame, None, exclude, ack, woken);
    }

    /// Gives the event the channel's next sequence number and puts it in every mailbox; the
    /// caller holds the channel's shard. A channel without subscribers here still gets it when
    /// someone waits for an acknowledgement (every worker counts it), at the cost of a lookup.
    #[allow(clippy::too_many_arguments)]
    fn post_at(
        &self,
        shard: &mut Shard,
        key: &Key,
        frame: Arc<[u8]>,
        sse: Option<Entry>,
        exclude: Option<SocketId>,
        ack: Option<Arc<Ack>>,
        woken: &mut Vec<usize>,
    ) {
        let seq = match shard.get_mut(key) {
            Some(ch) if ch.subscribers > 0 || ch.cache.is_some() => {
                ch.seq += 1;
                ch.seq
            }
            _ => 0,
        };
        if seq == 0 && ack.is_none() {
            return; // nobody here listens, and nobody waits
        }
        let event = Arc::new(Event {
            app: key.0,
            channel: Arc::clone(&key.1),
            seq,
            frame,
            sse,
            exclude,
            ack,
            posted: Instant::now(),
        });
        for (i, m) in self.mailboxes.iter().enumerate() {
            lock(&m.queue).push(Mail::Event(Arc::clone(&event)));
            if !m.has_mail.swap(true, Ordering::AcqRel) {
                woken.push(i);
            }
        }
    }

    /// Gives an event its position on its channel (assigned here, or the owner's) and keeps it
    /// in the history, and returns it as event streams send it. The owner tells its siblings
    /// here, under the channel's lock, so that they receive a channel's events in position
    /// order. Presence channels have no positions; without siblings and without a history,
    /// only channels with a stream in this process need them.
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &self,
        shard: &mut Shard,
        key: &Key,
        frame: &Arc<[u8]>,
        order: Order,
        cache: bool,
        exclude: Option<SocketId>,
    ) -> Option<Entry> {
        if !sequenced(&key.1) {
            return None; // not for event streams (CHANNELS.md §4)
        }
        let now = unix_ms();
        let limits = self.limits;
        let ch = if limits.size > 0 || order != Order::Local {
            shard.entry(key.clone()).or_insert_with(Channel::new)
        } else {
            shard.get_mut(key).filter(|c| c.streams > 0)?
        };
        // The owner's positions grow; one of its events may still arrive here after a stream
        // joined at a position this process made up from the clock (a channel it had no
        // record of), and keeps its own.
        let pos = match order {
            Order::Given(p) => p,
            _ => ch.last.after(now),
        };
        ch.last = ch.last.max(pos);
        ch.keep_until_ms = now.saturating_add(limits.ttl_ms);
        let wanted = limits.size > 0 || ch.streams > 0;
        // (In a cluster, a position made here is one Redis could not give: nobody else
        // could be told either.)
        if let (Order::Assign { origin, ack }, Some(l)) = (order, self.link())
            && l.cluster().is_none()
        {
            l.send_all(Msg::Event {
                app: key.0,
                channel: Arc::clone(&key.1),
                cache,
                exclude,
                ack,
                origin,
                pos: Some(pos),
                frame: Arc::clone(frame),
            });
        }
        if !wanted {
            return None;
        }
        let entry = super::sse::entry(frame, pos, now)?;
        if limits.size > 0 {
            let mut deltas: Vec<(u16, Delta)> = Vec::new();
            let Shard { channels, fifo } = shard;
            fifo.keep(channels, key, entry.clone(), limits, &mut deltas);
            self.count_history(&deltas);
        }
        Some(entry)
    }

    fn count_history(&self, deltas: &[(u16, Delta)]) {
        for (app, d) in deltas {
            if let Some(s) = self.stats.get(usize::from(*app)) {
                s.history_events.fetch_add(d.events, Ordering::Relaxed);
                s.history_bytes.fetch_add(d.bytes, Ordering::Relaxed);
            }
        }
    }

    fn wake(&self, workers: &[usize], except: usize) {
        let Some(wakers) = self.wakers.get() else {
            return;
        };
        for &w in workers {
            if w != except
                && let Some(f) = wakers.get(w)
            {
                f();
            }
        }
    }

    /// Asks the cluster for its history of `channels` after `from` (one position each), for
    /// the event stream waiting on `conn` of `worker`; the answer comes as `Mail::Fetched`
    /// (always, if only with nothing in it).
    pub fn fetch_history(
        &self,
        worker: usize,
        conn: ConnId,
        app: AppIdx,
        channels: &[Arc<str>],
        from: &[Pos],
    ) {
        match self.link().and_then(Link::cluster) {
            Some(c) => c.fetch(worker, conn, app, channels.to_vec(), from.to_vec()),
            None => self.fetched(worker, conn, vec![None; channels.len()]),
        }
    }

    /// The cluster's answer to `fetch_history`, for the worker.
    pub fn fetched(&self, worker: usize, conn: ConnId, fetched: Vec<Option<Fetched>>) {
        let Some(m) = self.mailboxes.get(worker) else {
            return;
        };
        lock(&m.queue).push(Mail::Fetched { conn, fetched });
        if !m.has_mail.swap(true, Ordering::AcqRel) {
            self.wake(&[worker], usize::MAX);
        }
    }

    /// A worker (or a sibling process, or a failed send to one) has done its part of `ack`.
    pub fn acked(&self, ack: &Ack, from_worker: usize) {
        if !ack.done() {
            return;
        }
        match &ack.target {
            AckTarget::Local { worker, conn, body } => {
                if ack.id != 0 {
                    lock(&self.owed).remove(&ack.id);
                }
                let Some(body) = lock(body).take() else {
                    return;
                };
                let m = &self.mailboxes[*worker];
                lock(&m.queue).push(Mail::Acked { conn: *conn, body });
                if !m.has_mail.swap(true, Ordering::AcqRel) {
                    self.wake(&[*worker], from_worker);
                }
            }
            AckTarget::Remote { process, id } => {
                if let Some(l) = self.link() {
                    l.send_to(*process, Msg::Acked { id: *id });
                }
            }
        }
    }

    /// Forgets what would otherwise stay forever: cache channels whose last event expired and
    /// that nobody is subscribed to, and acknowledgements a sibling will never send. Called
    /// now and then (worker 0, about once a minute); touches each shard once.
    pub fn sweep(&self, now: Instant) {
        let now_ms = unix_ms();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let mut deltas = Vec::new();
            let Shard { channels, fifo } = &mut *shard;
            fifo.expire(channels, now_ms, self.limits.ttl_ms, &mut deltas);
            self.count_history(&deltas);
            for ch in shard.values_mut() {
                if ch
                    .cache
                    .as_ref()
                    .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= CACHE_TTL)
                {
                    ch.cache = None;
                }
            }
            shard.retain(|_, ch| !ch.vacant());
        }
        let stale: Vec<Arc<Ack>> = lock(&self.owed)
            .values()
            .filter(|a| now.saturating_duration_since(a.made) >= ACK_GIVE_UP)
            .cloned()
            .collect();
        for ack in stale {
            ack.remaining.store(1, Ordering::Release);
            self.acked(&ack, usize::MAX);
        }
    }

    /// A sibling acknowledged (or can no longer acknowledge) the event numbered `id`.
    pub fn acked_by_id(&self, id: u64) {
        let ack = lock(&self.owed).get(&id).cloned();
        if let Some(ack) = ack {
            self.acked(&ack, usize::MAX);
        }
    }

    /// Appends the channel series of CHANNELS.md §6 for every app.
    pub fn render_metrics(&self, out: &mut String) {
        let ids: Vec<&str> = self.apps.iter().map(|a| a.id.as_str()).collect();
        let siblings = lock(&self.sibling_stats);
        let figures: Vec<_> = self
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut f = s.snapshot();
                for per_app in siblings.values() {
                    if let Some(v) = per_app.get(&(i as AppIdx)) {
                        f.add_summed(v);
                    }
                }
                f
            })
            .collect();
        drop(siblings);
        super::stats::render(out, &ids, &figures);
        // The node's bus traffic: this process's counters and each sibling's last report.
        let mut bus =
            [&self.bus_in, &self.bus_out, &self.bus_errors].map(|a| a.load(Ordering::Relaxed));
        for other in lock(&self.sibling_bus).values() {
            for (total, v) in bus.iter_mut().zip(other) {
                *total += v;
            }
        }
        super::stats::render_bus(out, bus);
        if self.link().is_some_and(|l| l.cluster().is_some()) {
            super::stats::render_cluster(
                out,
                self.cluster_up.load(Ordering::Relaxed),
                lock(&self.heard).len() + 1,
            );
        }
    }

    pub fn has_mail(&self, worker: usize) -> bool {
        self.mailboxes[worker].has_mail.load(Ordering::Acquire)
    }

    /// Moves `worker`'s mail into `into`, in the order it was posted.
    pub fn take_mail(&self, worker: usize, into: &mut Vec<Mail>) {
        let m = &self.mailboxes[worker];
        if !m.has_mail.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut q = lock(&m.queue);
        if into.is_empty() {
            std::mem::swap(&mut *q, into);
        } else {
            into.append(&mut q);
        }
    }

    /// The occupancy of one channel (zero counts when nobody is subscribed).
    pub fn occupancy(&self, app: AppIdx, channel: &str) -> Occupancy {
        let channel: Arc<str> = channel.into();
        let shard = self.shard(app, &channel);
        match shard.get(&(app, channel)) {
            Some(ch) => ch.occupancy(),
            None => Occupancy {
                subscription_count: 0,
                user_count: 0,
            },
        }
    }

    /// Every occupied channel of `app` whose name starts with `prefix`, sorted by name.
    pub fn channels(&self, app: AppIdx, prefix: &str) -> Vec<(String, Occupancy)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for ((a, name), ch) in shard.iter() {
                if *a == app && ch.total() > 0 && name.starts_with(prefix) {
                    out.push((name.to_string(), ch.occupancy()));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The user ids of a presence channel's members.
    pub fn users(&self, app: AppIdx, channel: &str) -> Vec<String> {
        let channel: Arc<str> = channel.into();
        let shard = self.shard(app, &channel);
        shard
            .get(&(app, channel))
            .map(|ch| ch.members.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Locks a mutex whose holder may have panicked: the state is plain data, still usable.
pub(in crate::app::channels) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
