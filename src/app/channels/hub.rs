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
//! Presence is node-wide: a member is a user with a connection in this process (`local`) or
//! in another (`remote`, from the bus). Each process announces `member_added` to its own
//! subscribers when a user appears on the node as it sees it, and `member_removed` when the
//! user is gone from every process, so every subscriber hears of each change once.

use super::bus::Msg;
use super::peers::Peers;
use super::pusher;
use super::stats::AppStats;
use crate::config::AppConfig;
use crate::proto::handler::{ConnId, Waker};
use indexmap::IndexMap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// An app's index in [`Hub::apps`].
pub type AppIdx = u16;

/// How long a cache channel keeps its last event (CHANNELS.md §2).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

const SHARDS: usize = 64;

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
        let (a, b) = s.split_once('.')?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 19 && t.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(SocketId {
            origin: a.parse().ok()?,
            n: b.parse().ok()?,
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

#[derive(Default)]
struct Channel {
    /// Subscribers in this process.
    subscribers: u64,
    /// Subscribers in each sibling process, as they last said.
    remote: HashMap<u16, u64>,
    members: IndexMap<String, Member>,
    seq: u64,
    cache: Option<(Arc<[u8]>, Instant)>,
}

impl Channel {
    fn total(&self) -> u64 {
        self.subscribers + self.remote.values().sum::<u64>()
    }
    fn vacant(&self) -> bool {
        self.total() == 0 && self.members.is_empty() && self.cache.is_none()
    }
}

type Key = (AppIdx, Arc<str>);

/// What a subscription found when it joined.
pub struct Joined {
    /// Events with a higher sequence are this subscription's.
    pub seq: u64,
    /// Presence: every member on the node, the joiner included (user_id, user_info JSON).
    pub members: Vec<(String, String)>,
    /// A cache channel's last event, when there is one.
    pub cached: Option<Arc<[u8]>>,
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

/// This process among its siblings, once the bus is up.
struct Link {
    peers: Peers,
    processes: usize,
}

pub struct Hub {
    pub apps: Vec<AppConfig>,
    pub stats: Vec<AppStats>,
    by_key: HashMap<String, AppIdx>,
    by_id: HashMap<String, AppIdx>,
    shards: Box<[Mutex<HashMap<Key, Channel>>]>,
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
    /// Bus messages in and out, and what could not be sent or read.
    pub bus_in: AtomicU64,
    pub bus_out: AtomicU64,
    pub bus_errors: AtomicU64,
}

impl Hub {
    pub fn new(apps: Vec<AppConfig>, workers: usize) -> Hub {
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
            mailboxes: (0..workers.max(1)).map(|_| Mailbox::default()).collect(),
            wakers: OnceLock::new(),
            link: OnceLock::new(),
            dirty: Mutex::default(),
            owed: Mutex::default(),
            next_ack: AtomicU64::new(1),
            sibling_stats: Mutex::default(),
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

    /// Joins this process to its siblings: from now on events, subscriber counts and presence
    /// cross the bus.
    pub fn set_peers(&self, peers: Peers, processes: usize) {
        let _ = self.link.set(Link { peers, processes });
    }

    /// Tells every sibling this process started with nothing (they answer with their state).
    pub fn peers_hello(&self) {
        if let Some(l) = self.link() {
            l.peers.send_all(Msg::Hello);
        }
    }

    fn link(&self) -> Option<&Link> {
        self.link.get().filter(|l| l.processes > 1)
    }

    pub fn app_by_key(&self, key: &str) -> Option<AppIdx> {
        self.by_key.get(key).copied()
    }

    pub fn app_by_id(&self, id: &str) -> Option<AppIdx> {
        self.by_id.get(id).copied()
    }

    fn shard(&self, app: AppIdx, channel: &str) -> MutexGuard<'_, HashMap<Key, Channel>> {
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
    ) -> Result<Joined, JoinError> {
        let mut shard = self.shard(app, channel);
        let key = (app, Arc::clone(channel));
        let ch = shard.entry(key.clone()).or_default();
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
                l.peers.send_all(Msg::Present {
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
        })
    }

    /// Leaves `channel`; a presence user's last connection on the node announces
    /// `member_removed`.
    pub fn leave(
        &self,
        app: AppIdx,
        channel: &Arc<str>,
        presence_user: Option<&str>,
        from_worker: usize,
    ) {
        let mut shard = self.shard(app, channel);
        let key = (app, Arc::clone(channel));
        let Some(ch) = shard.get_mut(&key) else {
            return;
        };
        ch.subscribers = ch.subscribers.saturating_sub(1);
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
                    l.peers.send_all(Msg::Absent {
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
    fn remove_member(
        &self,
        shard: &mut HashMap<Key, Channel>,
        key: &Key,
        user: &str,
        woken: &mut Vec<usize>,
    ) {
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
        let siblings = self.link().map_or(0, |l| l.processes - 1);
        let ack = Arc::new(Ack {
            remaining: AtomicUsize::new((events * (self.workers() + siblings)).max(1)),
            id: if siblings > 0 {
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
        if siblings > 0 {
            lock(&self.owed).insert(ack.id, Arc::clone(&ack));
        }
        ack
    }

    /// Publishes one event (its frame built once) to every subscriber on the node.
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
        if let Some(l) = self.link() {
            l.peers.send_all(Msg::Event {
                app,
                channel: Arc::clone(&channel),
                cache,
                exclude,
                ack: ack.as_ref().map(|a| a.id),
                frame: Arc::clone(&frame),
            });
        }
        self.publish_here(app, channel, frame, cache, exclude, ack, from_worker);
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
    ) {
        let key = (app, channel);
        let mut shard = self.shard(app, &key.1);
        let mut woken = Vec::new();
        if cache {
            let ch = shard.entry(key.clone()).or_default();
            ch.cache = Some((Arc::clone(&frame), Instant::now()));
        }
        self.post(&mut shard, &key, frame, exclude, ack, &mut woken);
        drop(shard);
        self.wake(&woken, from_worker);
    }

    /// Gives the event the channel's next sequence number and puts it in every mailbox; the
    /// caller holds the channel's shard. A channel without subscribers here still gets it when
    /// someone waits for an acknowledgement (every worker counts it), at the cost of a lookup.
    fn post(
        &self,
        shard: &mut HashMap<Key, Channel>,
        key: &Key,
        frame: Arc<[u8]>,
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
                    l.peers.send_to(*process, Msg::Acked { id: *id });
                }
            }
        }
    }

    /// A sibling acknowledged (or can no longer acknowledge) the event numbered `id`.
    pub fn acked_by_id(&self, id: u64) {
        let ack = lock(&self.owed).get(&id).cloned();
        if let Some(ack) = ack {
            self.acked(&ack, usize::MAX);
        }
    }

    /// Applies what sibling process `from` said.
    pub fn on_bus(&self, from: u16, msgs: Vec<Msg>) {
        self.bus_in.fetch_add(msgs.len() as u64, Ordering::Relaxed);
        for m in msgs {
            match m {
                Msg::Hello => self.sibling_restarted(from),
                Msg::Subs {
                    app,
                    channel,
                    count,
                } => self.remote_subs(from, app, channel, count),
                Msg::Present {
                    app,
                    channel,
                    user,
                    info,
                } => self.remote_presence(from, app, channel, &user, Some(&info)),
                Msg::Absent { app, channel, user } => {
                    self.remote_presence(from, app, channel, &user, None)
                }
                Msg::Event {
                    app,
                    channel,
                    cache,
                    exclude,
                    ack,
                    frame,
                } => {
                    if usize::from(app) >= self.apps.len() {
                        continue;
                    }
                    let ack = ack.map(|id| {
                        Arc::new(Ack {
                            remaining: AtomicUsize::new(self.workers()),
                            id,
                            target: AckTarget::Remote { process: from, id },
                        })
                    });
                    self.publish_here(app, channel, frame, cache, exclude, ack, usize::MAX);
                }
                Msg::Acked { id } => self.acked_by_id(id),
                Msg::Stats { app, values } => {
                    lock(&self.sibling_stats)
                        .entry(from)
                        .or_default()
                        .insert(app, values);
                }
            }
        }
    }

    fn remote_subs(&self, from: u16, app: AppIdx, channel: Arc<str>, count: u64) {
        if usize::from(app) >= self.apps.len() {
            return;
        }
        let key = (app, channel);
        let mut shard = self.shard(app, &key.1);
        let ch = shard.entry(key.clone()).or_default();
        let before = ch.total();
        if count == 0 {
            ch.remote.remove(&from);
        } else {
            ch.remote.insert(from, count);
        }
        let after = ch.total();
        let occupied = &self.stats[usize::from(app)].occupied_channels;
        match (before, after) {
            (0, 1..) => occupied.fetch_add(1, Ordering::Relaxed),
            (1.., 0) => occupied.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        if ch.vacant() {
            shard.remove(&key);
        }
    }

    /// `info` Some: the user is present on `from`; None: absent.
    fn remote_presence(
        &self,
        from: u16,
        app: AppIdx,
        channel: Arc<str>,
        user: &str,
        info: Option<&str>,
    ) {
        if usize::from(app) >= self.apps.len() {
            return;
        }
        let key = (app, channel);
        let mut shard = self.shard(app, &key.1);
        let mut woken = Vec::new();
        let ch = shard.entry(key.clone()).or_default();
        match (info, ch.members.get_mut(user)) {
            (Some(_), Some(m)) => {
                if !m.remote.contains(&from) {
                    m.remote.push(from);
                }
            }
            (Some(info), None) => {
                ch.members.insert(
                    user.to_string(),
                    Member {
                        local: 0,
                        remote: vec![from],
                        info: info.into(),
                    },
                );
                self.stats[usize::from(app)]
                    .presence_members
                    .fetch_add(1, Ordering::Relaxed);
                let frame = pusher::frame(&pusher::member_added(&key.1, user, info));
                self.post(&mut shard, &key, frame, None, None, &mut woken);
            }
            (None, Some(m)) => {
                m.remote.retain(|&p| p != from);
                if !m.present() {
                    self.remove_member(&mut shard, &key, user, &mut woken);
                }
            }
            (None, None) => {}
        }
        if shard.get(&key).is_some_and(Channel::vacant) {
            shard.remove(&key);
        }
        drop(shard);
        self.wake(&woken, usize::MAX);
    }

    /// Sibling `from` started afresh: what it had is gone (its members leave where it was
    /// their last process), and it is told what this process has.
    fn sibling_restarted(&self, from: u16) {
        lock(&self.sibling_stats).remove(&from);
        let mut state = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let keys: Vec<Key> = shard.keys().cloned().collect();
            for key in keys {
                let mut woken = Vec::new();
                let mut gone = Vec::new();
                if let Some(ch) = shard.get_mut(&key) {
                    if ch.remote.remove(&from).is_some() && ch.total() == 0 {
                        self.stats[usize::from(key.0)]
                            .occupied_channels
                            .fetch_sub(1, Ordering::Relaxed);
                    }
                    for (user, m) in ch.members.iter_mut() {
                        let had = m.remote.len();
                        m.remote.retain(|&p| p != from);
                        if had != m.remote.len() && !m.present() {
                            gone.push(user.clone());
                        }
                        if m.local > 0 {
                            state.push(Msg::Present {
                                app: key.0,
                                channel: Arc::clone(&key.1),
                                user: user.clone(),
                                info: m.info.to_string(),
                            });
                        }
                    }
                    if ch.subscribers > 0 {
                        state.push(Msg::Subs {
                            app: key.0,
                            channel: Arc::clone(&key.1),
                            count: ch.subscribers,
                        });
                    }
                }
                for user in gone {
                    self.remove_member(&mut shard, &key, &user, &mut woken);
                }
                if shard.get(&key).is_some_and(Channel::vacant) {
                    shard.remove(&key);
                }
                self.wake(&woken, usize::MAX);
            }
        }
        if let Some(l) = self.link() {
            for m in state {
                l.peers.send_to(from, m);
            }
        }
    }

    /// This process's figures for every app, for the siblings' `/metrics`.
    pub fn stats_messages(&self) -> Vec<Msg> {
        self.stats
            .iter()
            .enumerate()
            .map(|(i, s)| Msg::Stats {
                app: i as AppIdx,
                values: s.snapshot().to_summed(),
            })
            .collect()
    }

    /// The current local subscriber counts of channels that changed since the last call, for
    /// the siblings (sent in batches rather than on every subscribe).
    pub fn take_changed_counts(&self) -> Vec<Msg> {
        let keys: Vec<Key> = lock(&self.dirty).drain().collect();
        keys.into_iter()
            .map(|(app, channel)| {
                let count = self
                    .shard(app, &channel)
                    .get(&(app, Arc::clone(&channel)))
                    .map_or(0, |c| c.subscribers);
                Msg::Subs {
                    app,
                    channel,
                    count,
                }
            })
            .collect()
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
        super::stats::render_bus(
            out,
            [&self.bus_in, &self.bus_out, &self.bus_errors].map(|a| a.load(Ordering::Relaxed)),
        );
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
            Some(ch) => Occupancy {
                subscription_count: ch.total(),
                user_count: ch.members.len() as u64,
            },
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
                    out.push((
                        name.to_string(),
                        Occupancy {
                            subscription_count: ch.total(),
                            user_count: ch.members.len() as u64,
                        },
                    ));
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
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    /// A member event's frame, as `mail` shows it.
    fn member_frame(message: &str) -> String {
        String::from_utf8_lossy(&pusher::frame(message)).into_owned()
    }

    /// Mail of worker 0, as the frames' text.
    fn mail(hub: &Hub) -> Vec<String> {
        let mut m = Vec::new();
        hub.take_mail(0, &mut m);
        m.into_iter()
            .filter_map(|m| match m {
                Mail::Event(e) => Some(String::from_utf8_lossy(&e.frame).into_owned()),
                Mail::Acked { .. } => None,
            })
            .collect()
    }

    proptest! {
        /// Against a model of who is connected: members are users with at least one
        /// connection, `member_added` comes exactly when a user's first connection joins and
        /// `member_removed` when the last leaves (to whoever is still subscribed), and the
        /// counts return to zero.
        #[test]
        fn presence_follows_the_first_and_last_connection_of_each_user(
            ops in proptest::collection::vec((0u8..4, any::<bool>()), 1..200)
        ) {
            let hub = Hub::new(vec![AppConfig::builtin()], 1);
            let ch: Arc<str> = "presence-p".into();
            let mut conns: Vec<Vec<u8>> = vec![Vec::new(); 4];
            let me = SocketId { origin: 1, n: 1 };
            for (user, join) in ops {
                let u = format!("u{user}");
                let before = conns[user as usize].len();
                if join {
                    let r = hub.join(0, &ch, Some((&u, "{}")), 100, me, 0);
                    prop_assert!(r.is_ok());
                    conns[user as usize].push(0);
                    let m = mail(&hub);
                    if before == 0 {
                        prop_assert_eq!(m, vec![member_frame(&pusher::member_added("presence-p", &u, "{}"))]);
                    } else {
                        prop_assert!(m.is_empty());
                    }
                } else if before > 0 {
                    hub.leave(0, &ch, Some(&u), 0);
                    conns[user as usize].pop();
                    let m = mail(&hub);
                    let others = conns.iter().map(Vec::len).sum::<usize>() > 0;
                    if before == 1 && others {
                        prop_assert_eq!(m, vec![member_frame(&pusher::member_removed("presence-p", &u))]);
                    } else {
                        prop_assert!(m.is_empty());
                    }
                }
                let mut expected: Vec<String> = (0..4).filter(|&i| !conns[i].is_empty()).map(|i| format!("u{i}")).collect();
                let mut users = hub.users(0, "presence-p");
                users.sort();
                expected.sort();
                prop_assert_eq!(&users, &expected);
                let total: usize = conns.iter().map(Vec::len).sum();
                prop_assert_eq!(hub.occupancy(0, "presence-p").subscription_count, total as u64);
                prop_assert_eq!(hub.stats[0].presence_members.load(Ordering::Relaxed), expected.len() as i64);
            }
            for (i, c) in conns.iter().enumerate() {
                for _ in 0..c.len() {
                    hub.leave(0, &ch, Some(&format!("u{i}")), 0);
                }
            }
            prop_assert!(hub.channels(0, "").is_empty());
            prop_assert_eq!(hub.stats[0].occupied_channels.load(Ordering::Relaxed), 0);
        }

        /// Events posted in any interleaving of channels keep each channel's sequence
        /// increasing in every mailbox, and a subscription sees only events after it joined.
        #[test]
        fn each_channel_is_sequenced_in_every_mailbox(
            posts in proptest::collection::vec(0u8..3, 1..100)
        ) {
            let hub = Hub::new(vec![AppConfig::builtin()], 2);
            let me = SocketId { origin: 1, n: 1 };
            let names: Vec<Arc<str>> = (0..3).map(|i| Arc::from(format!("c{i}"))).collect();
            let mut joined = Vec::new();
            for n in &names {
                joined.push(hub.join(0, n, None, 100, me, 0).ok().unwrap().seq);
            }
            for &c in &posts {
                hub.publish(0, &names[c as usize], frame("e"), false, None, None, 0);
            }
            for w in 0..2 {
                let mut m = Vec::new();
                hub.take_mail(w, &mut m);
                prop_assert_eq!(m.len(), posts.len());
                let mut last = joined.clone();
                for (mail, &c) in m.iter().zip(&posts) {
                    let Mail::Event(e) = mail else { panic!() };
                    prop_assert_eq!(&*e.channel, &*names[c as usize]);
                    prop_assert_eq!(e.seq, last[c as usize] + 1);
                    last[c as usize] = e.seq;
                }
            }
        }
    }
}
