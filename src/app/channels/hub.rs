//! Owns what the workers of a node share about channels (DESIGN §2a): which channels are
//! occupied and by how many connections, presence members, the cached last event of cache
//! channels, the per-channel sequence that orders events, and each worker's mailbox.
//!
//! Ordering: an event gets its channel's next sequence number and is put in every worker's
//! mailbox while the channel's shard is locked, so every worker sees a channel's events in the
//! same order; a subscription records the sequence it joined at (under the same lock) and
//! receives only later events, so nothing is delivered twice or before its
//! `subscription_succeeded`. Lock order: shard, then mailbox; never the other way round.

use super::stats::AppStats;
use crate::config::AppConfig;
use crate::proto::handler::{ConnId, Waker};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// One event on its way to every subscriber of a channel on this node.
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

/// Counts the workers that have queued a publish's events; the last one tells the worker
/// holding the API request, which then answers it.
pub struct Ack {
    remaining: AtomicUsize,
    worker: usize,
    conn: ConnId,
    body: Mutex<Option<String>>,
}

impl Ack {
    /// An acknowledgement of `events` events to every worker, answered with `body`.
    pub fn new(
        events: usize,
        workers: usize,
        worker: usize,
        conn: ConnId,
        body: String,
    ) -> Arc<Ack> {
        Arc::new(Ack {
            remaining: AtomicUsize::new((events * workers).max(1)),
            worker,
            conn,
            body: Mutex::new(Some(body)),
        })
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
    connections: u32,
    /// `user_info` as JSON, as the first connection gave it.
    info: Box<str>,
}

#[derive(Default)]
struct Channel {
    subscribers: u64,
    members: IndexMap<String, Member>,
    seq: u64,
    cache: Option<(Arc<[u8]>, Instant)>,
}

impl Channel {
    fn vacant(&self) -> bool {
        self.subscribers == 0 && self.cache.is_none()
    }
}

type Key = (AppIdx, Arc<str>);

/// What a subscription found when it joined.
pub struct Joined {
    /// Events with a higher sequence are this subscription's.
    pub seq: u64,
    /// Presence: every member, the joiner included (user_id, user_info JSON).
    pub members: Vec<(String, String)>,
    /// A cache channel's last event, when there is one.
    pub cached: Option<Arc<[u8]>>,
}

pub enum JoinError {
    TooManyMembers,
}

/// Occupancy of one channel, for the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupancy {
    pub subscription_count: u64,
    pub user_count: u64,
}

pub struct Hub {
    pub apps: Vec<AppConfig>,
    pub stats: Vec<AppStats>,
    by_key: HashMap<String, AppIdx>,
    by_id: HashMap<String, AppIdx>,
    shards: Box<[Mutex<HashMap<Key, Channel>>]>,
    mailboxes: Box<[Mailbox]>,
    wakers: OnceLock<Vec<Waker>>,
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
        }
    }

    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// The engine's wake-ups, given once the workers exist.
    pub fn set_wakers(&self, wakers: &[Waker]) {
        let _ = self.wakers.set(wakers.to_vec());
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

    /// Joins `channel` (as `presence`'s user on a presence channel). A presence user's first
    /// connection on the node announces `member_added` to the others (`added` builds it).
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &self,
        app: AppIdx,
        channel: &Arc<str>,
        presence: Option<(&str, &str)>,
        max_members: usize,
        me: SocketId,
        added: impl FnOnce() -> Arc<[u8]>,
        from_worker: usize,
    ) -> Result<Joined, JoinError> {
        let mut shard = self.shard(app, channel);
        let key = (app, Arc::clone(channel));
        let ch = shard.entry(key).or_default();
        let mut announce = false;
        if let Some((user, info)) = presence {
            match ch.members.get_mut(user) {
                Some(m) => m.connections += 1,
                None => {
                    if ch.members.len() >= max_members {
                        if ch.vacant() {
                            shard.remove(&(app, Arc::clone(channel)));
                        }
                        return Err(JoinError::TooManyMembers);
                    }
                    ch.members.insert(
                        user.to_string(),
                        Member {
                            connections: 1,
                            info: info.into(),
                        },
                    );
                    announce = true;
                    self.stats[usize::from(app)]
                        .presence_members
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if ch.subscribers == 0 {
            self.stats[usize::from(app)]
                .occupied_channels
                .fetch_add(1, Ordering::Relaxed);
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
        if announce {
            let frame = added();
            self.post(&mut shard, app, channel, frame, Some(me), None, &mut woken);
        }
        drop(shard);
        self.wake(&woken, from_worker);
        Ok(Joined {
            seq,
            members,
            cached,
        })
    }

    /// Leaves `channel`; a presence user's last connection announces `member_removed`.
    pub fn leave(
        &self,
        app: AppIdx,
        channel: &Arc<str>,
        presence_user: Option<&str>,
        removed: impl FnOnce() -> Arc<[u8]>,
        from_worker: usize,
    ) {
        let mut shard = self.shard(app, channel);
        let key = (app, Arc::clone(channel));
        let Some(ch) = shard.get_mut(&key) else {
            return;
        };
        ch.subscribers = ch.subscribers.saturating_sub(1);
        if ch.subscribers == 0 {
            self.stats[usize::from(app)]
                .occupied_channels
                .fetch_sub(1, Ordering::Relaxed);
        }
        let mut gone = false;
        if let Some(user) = presence_user
            && let Some(m) = ch.members.get_mut(user)
        {
            m.connections -= 1;
            if m.connections == 0 {
                ch.members.shift_remove(user);
                self.stats[usize::from(app)]
                    .presence_members
                    .fetch_sub(1, Ordering::Relaxed);
                gone = true;
            }
        }
        let mut woken = Vec::new();
        if gone {
            let frame = removed();
            self.post(&mut shard, app, channel, frame, None, None, &mut woken);
        }
        if shard.get(&key).is_some_and(Channel::vacant) {
            shard.remove(&key);
        }
        drop(shard);
        self.wake(&woken, from_worker);
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
        let mut shard = self.shard(app, &channel);
        let mut woken = Vec::new();
        if cache {
            let ch = shard.entry((app, Arc::clone(&channel))).or_default();
            ch.cache = Some((Arc::clone(&frame), Instant::now()));
        }
        self.post(&mut shard, app, &channel, frame, exclude, ack, &mut woken);
        drop(shard);
        self.wake(&woken, from_worker);
    }

    /// Gives the event the channel's next sequence number and puts it in every mailbox; the
    /// caller holds the channel's shard. An unoccupied channel still gets it (an ack must be
    /// counted by every worker), but costs each worker only a lookup.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &self,
        shard: &mut HashMap<Key, Channel>,
        app: AppIdx,
        channel: &Arc<str>,
        frame: Arc<[u8]>,
        exclude: Option<SocketId>,
        ack: Option<Arc<Ack>>,
        woken: &mut Vec<usize>,
    ) {
        let seq = match shard.get_mut(&(app, Arc::clone(channel))) {
            Some(ch) => {
                ch.seq += 1;
                ch.seq
            }
            None => 0,
        };
        if seq == 0 && ack.is_none() {
            return; // nobody on the node listens, and nobody waits
        }
        let event = Arc::new(Event {
            app,
            channel: Arc::clone(channel),
            seq,
            frame,
            exclude,
            ack,
            posted: Instant::now(),
        });
        for (i, m) in self.mailboxes.iter().enumerate() {
            m.queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Mail::Event(Arc::clone(&event)));
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

    /// A worker has queued an event that carried an acknowledgement.
    pub fn acked(&self, ack: &Ack, from_worker: usize) {
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let body = ack.body.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(body) = body else { return };
        let m = &self.mailboxes[ack.worker];
        m.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Mail::Acked {
                conn: ack.conn,
                body,
            });
        if !m.has_mail.swap(true, Ordering::AcqRel) {
            self.wake(&[ack.worker], from_worker);
        }
    }

    /// Appends the channel series of CHANNELS.md §6 for every app.
    pub fn render_metrics(&self, out: &mut String) {
        let ids: Vec<&str> = self.apps.iter().map(|a| a.id.as_str()).collect();
        super::stats::render(out, &ids, &self.stats);
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
        let mut q = m.queue.lock().unwrap_or_else(|e| e.into_inner());
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
                subscription_count: ch.subscribers,
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
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for ((a, name), ch) in shard.iter() {
                if *a == app && ch.subscribers > 0 && name.starts_with(prefix) {
                    out.push((
                        name.to_string(),
                        Occupancy {
                            subscription_count: ch.subscribers,
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
