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
    fn occupancy(&self) -> Occupancy {
        Occupancy {
            subscription_count: self.total(),
            user_count: self.members.len() as u64,
        }
    }
}

type Key = (AppIdx, Arc<str>);

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
    /// Each sibling's latest bus figures (`Msg::Bus`): in, out, errors.
    sibling_bus: Mutex<HashMap<u16, [u64; 3]>>,
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
            sibling_bus: Mutex::default(),
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
            made: Instant::now(),
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

    /// Forgets what would otherwise stay forever: cache channels whose last event expired and
    /// that nobody is subscribed to, and acknowledgements a sibling will never send. Called
    /// now and then (worker 0, about once a minute); touches each shard once.
    pub fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
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
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
