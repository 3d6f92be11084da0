//! Owns one worker's part of the channels: its connections' socket ids and subscriptions,
//! its index of channel → local subscribers, the WebSocket protocol's handling of each client
//! message, the HTTP API calls and event streams it receives, and the events its mailbox
//! brings, turned into frames (or event-stream chunks) queued on its subscribers. Single-threaded: interior mutability, no locks except
//! through the [`Hub`].

use super::auth;
use super::hub::{AppIdx, Hub, JoinError, Mail, Pos, SocketId, Via};
use super::names::{self, Access};
use super::pusher::{self, ClientMessage};
use super::stats::AuthFailure;
use crate::outcome::CloseReason;
use crate::proto::Context;
use crate::proto::handler::{ConnId, Drain, Work, WsVerdict};
use crate::proto::http1::exchange::Reply;
use crate::proto::ws::Sender;
use indexmap::IndexMap;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Client events a connection may send per second (CHANNELS.md §2).
pub const CLIENT_EVENTS_PER_SECOND: u32 = 10;
/// Unsent output past which a subscriber is closed with 4201: a few MiB at most, so that a
/// client that stopped reading costs bounded memory and never delays the channel.
pub const SLOW_SUBSCRIBER_BYTES: usize = 2 * 1024 * 1024;
/// How often worker 0 has the hub forget expired caches and unanswerable acknowledgements.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Pusher's close and error codes used here.
pub mod code {
    pub const APP_UNKNOWN: u16 = 4001;
    pub const OVER_QUOTA: u16 = 4004;
    pub const PROTOCOL: u16 = 4007;
    pub const RECONNECT: u16 = 4200;
    pub const SLOW: u16 = 4201;
    pub const RATE: u16 = 4301;
}

/// How a subscriber takes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// The WebSocket frame every socket shares.
    Socket,
    /// An event stream over this one channel: the chunk every such stream shares.
    Stream,
    /// An event stream over several channels, this one its `n`th: the event under the
    /// stream's own ID.
    MultiStream(u16),
}

/// A channel's subscribers on this worker, each with the channel sequence it joined at.
type Subscribers = IndexMap<ConnId, (u64, Sink)>;

/// A connection's place in this worker's tables: its slot and, on HTTP/2, its stream (each
/// event stream of one connection is a subscriber of its own). The generation is checked
/// against the entry, so a reused slot never finds its last occupant's state.
type Key = (u32, u32);

pub(super) fn slot_key(id: ConnId) -> Key {
    (id.slot, id.stream)
}

struct Sub {
    channel: Arc<str>,
    /// The presence user this subscription joined as.
    user: Option<Box<str>>,
}

struct ConnState {
    generation: u32,
    app: AppIdx,
    socket: u64,
    subs: Vec<Sub>,
    /// Client-event rate: the second counted, and how many were sent in it.
    window: u64,
    sent: u32,
    /// An event stream's position on each of its channels (in `subs` order): its ID.
    stream: Option<Box<[Pos]>>,
}

impl ConnState {
    fn new(
        conn: ConnId,
        app: AppIdx,
        socket: u64,
        subs: Vec<Sub>,
        stream: Option<Box<[Pos]>>,
    ) -> ConnState {
        ConnState {
            generation: conn.generation,
            app,
            socket,
            subs,
            window: 0,
            sent: 0,
            stream,
        }
    }
}

mod api_calls;
mod streams;

/// An event stream checked and answered, not open yet: its connection's generation, its
/// request, and what the cluster's history held when it had to be asked.
struct PendingStream {
    generation: u32,
    request: super::sse::StreamRequest,
    fetched: Option<Vec<Option<super::hub::Fetched>>>,
}

pub struct ChannelsWorker {
    hub: Arc<Hub>,
    index: usize,
    /// The first half of this worker's socket ids.
    origin: u32,
    next_socket: Cell<u64>,
    conns: RefCell<HashMap<Key, ConnState>>,
    /// (app, channel) → this worker's subscribers, each with the channel sequence it joined at.
    subs: RefCell<HashMap<(AppIdx, Arc<str>), Subscribers>>,
    work: RefCell<Vec<Work>>,
    mail: RefCell<Vec<Mail>>,
    /// Jitter for the drain's spread.
    rng: Cell<u64>,
    /// When worker 0 last had the hub forget expired state.
    last_sweep: Cell<Instant>,
    /// Stream requests checked and answered `Answer::Stream`, by slot, until their stream
    /// opens (right after, on the same call) or the connection closes.
    pending_streams: RefCell<HashMap<Key, PendingStream>>,
}

impl ChannelsWorker {
    pub fn new(hub: Arc<Hub>, index: usize, process: usize) -> ChannelsWorker {
        let origin = hub.socket_origin(process, index);
        ChannelsWorker {
            hub,
            index,
            origin,
            next_socket: Cell::new(1),
            conns: RefCell::default(),
            subs: RefCell::default(),
            work: RefCell::default(),
            mail: RefCell::default(),
            last_sweep: Cell::new(Instant::now()),
            rng: Cell::new(0x9E37_79B9_7F4A_7C15 ^ (origin as u64) << 32),
            pending_streams: RefCell::default(),
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn socket_id(&self, n: u64) -> SocketId {
        SocketId {
            origin: self.origin,
            n,
        }
    }

    // ---- WebSocket ---------------------------------------------------------------------

    /// `/app/{key}?protocol=7…` is open: check the key, protocol and quota, then say hello.
    pub fn open(&self, target: &[u8], cx: &Context<'_>, tx: &mut Sender<'_>) -> WsVerdict {
        let (path, query) = split_target(target);
        let key = path.strip_prefix("/app/").unwrap_or("");
        let Some(app) = self.hub.app_by_key(key) else {
            return refuse(
                tx,
                code::APP_UNKNOWN,
                &format!("App key {key} not in this cluster"),
            );
        };
        let protocol = query_param(query, "protocol").and_then(|p| p.parse::<u32>().ok());
        if !matches!(protocol, Some(5..=7)) {
            return refuse(tx, code::PROTOCOL, "Unsupported protocol version");
        }
        let stats = &self.hub.stats[usize::from(app)];
        let max = self.hub.apps[usize::from(app)].max_connections;
        let now_open = stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        if max > 0 && now_open as usize > max {
            stats.connections.fetch_sub(1, Ordering::Relaxed);
            return refuse(tx, code::OVER_QUOTA, "App is over its connection quota");
        }
        let n = self.next_socket.get();
        self.next_socket.set(n + 1);
        self.conns.borrow_mut().insert(
            slot_key(cx.conn),
            ConnState::new(cx.conn, app, n, Vec::new(), None),
        );
        let activity = cx.config.channels.activity_timeout.as_secs();
        tx.text(
            pusher::connection_established(&self.socket_id(n).to_string(), activity).as_bytes(),
        );
        WsVerdict::Continue
    }

    pub fn message(
        &self,
        text: bool,
        payload: &[u8],
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) -> WsVerdict {
        if !text {
            tx.text(pusher::error(None, "messages are JSON text").as_bytes());
            return WsVerdict::Continue;
        }
        let text = std::str::from_utf8(payload).unwrap_or("");
        match pusher::parse(text) {
            Err(why) => tx.text(pusher::error(None, &why).as_bytes()),
            Ok(ClientMessage::Ping) => tx.text(pusher::pong().as_bytes()),
            Ok(ClientMessage::Subscribe {
                channel,
                auth,
                channel_data,
            }) => self.subscribe(&channel, auth.as_deref(), channel_data.as_deref(), cx, tx),
            Ok(ClientMessage::Unsubscribe { channel }) => self.unsubscribe(&channel, cx),
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => return self.client_event(&event, &channel, data.get(), cx, tx),
        }
        WsVerdict::Continue
    }

    fn subscribe(
        &self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) {
        let sub_error = |tx: &mut Sender<'_>, kind: &str, why: &str, status: u16| {
            tx.text(pusher::subscription_error(channel, kind, why, status).as_bytes());
        };
        let kind = match names::classify(channel) {
            Ok(k) => k,
            Err(why) => return sub_error(tx, "InvalidChannel", why, 400),
        };
        let (app, socket, count) = {
            let conns = self.conns.borrow();
            let Some(c) = self.state(&conns, cx.conn) else {
                return;
            };
            if c.subs.iter().any(|s| &*s.channel == channel) {
                return; // already subscribed: Pusher ignores a repeat
            }
            (c.app, c.socket, c.subs.len())
        };
        if count >= cx.config.channels.max_channels_per_connection {
            return sub_error(
                tx,
                "LimitReached",
                "too many channels on this connection (channels.max_channels_per_connection)",
                403,
            );
        }
        let config = &self.hub.apps[usize::from(app)];
        let stats = &self.hub.stats[usize::from(app)];
        let socket_id = self.socket_id(socket).to_string();
        let mut user: Option<(String, String)> = None;
        match kind.access {
            Access::Public => {}
            Access::Private | Access::Presence => {
                let presence = kind.access == Access::Presence;
                let data = if presence { channel_data } else { None };
                let ok = auth.is_some_and(|a| {
                    (!presence || data.is_some())
                        && auth::channel_auth_ok(
                            &config.key,
                            &config.secret,
                            &socket_id,
                            channel,
                            data,
                            a,
                        )
                });
                if !ok {
                    stats.auth_failed(if presence {
                        AuthFailure::Presence
                    } else {
                        AuthFailure::Private
                    });
                    return sub_error(
                        tx,
                        "AuthError",
                        "invalid or missing signature for this socket and channel",
                        401,
                    );
                }
                if presence {
                    let parsed: Result<pusher::ChannelData, _> =
                        serde_json::from_str(data.unwrap_or(""));
                    let Ok(d) = parsed else {
                        return sub_error(
                            tx,
                            "InvalidChannelData",
                            "channel_data must be {\"user_id\":…,\"user_info\":…}",
                            400,
                        );
                    };
                    let info = d
                        .user_info
                        .map_or_else(|| "{}".to_string(), |i| i.get().to_string());
                    user = Some((d.user_id.into_string(), info));
                }
            }
        }
        let channel_arc: Arc<str> = channel.into();
        let me = self.socket_id(socket);
        let joined = self.hub.join(
            app,
            &channel_arc,
            user.as_ref().map(|(u, i)| (u.as_str(), i.as_str())),
            config.max_presence_members,
            me,
            self.index,
            Via::Socket,
        );
        let joined = match joined {
            Ok(j) => j,
            Err(JoinError::TooManyMembers) => {
                return sub_error(
                    tx,
                    "LimitReached",
                    "the presence channel is full (max_presence_members)",
                    403,
                );
            }
        };
        self.subs
            .borrow_mut()
            .entry((app, Arc::clone(&channel_arc)))
            .or_default()
            .insert(cx.conn, (joined.seq, Sink::Socket));
        if let Some(c) = self.conns.borrow_mut().get_mut(&slot_key(cx.conn)) {
            c.subs.push(Sub {
                channel: channel_arc,
                user: user.as_ref().map(|(u, _)| u.as_str().into()),
            });
        }
        stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        let data = if kind.access == Access::Presence {
            pusher::presence_data(joined.members.iter().map(|(u, i)| (u.as_str(), i.as_str())))
        } else {
            "{}".to_string()
        };
        tx.text(pusher::subscription_succeeded(channel, &data).as_bytes());
        if kind.cache {
            match joined.cached {
                Some(frame) => tx.frame(&frame),
                None => tx.text(pusher::cache_miss(channel).as_bytes()),
            }
        }
    }

    fn unsubscribe(&self, channel: &str, cx: &Context<'_>) {
        let sub = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns
                .get_mut(&slot_key(cx.conn))
                .filter(|c| c.generation == cx.conn.generation)
            else {
                return;
            };
            let Some(i) = c.subs.iter().position(|s| &*s.channel == channel) else {
                return;
            };
            (c.app, c.subs.swap_remove(i))
        };
        self.leave(cx.conn, sub.0, sub.1, false);
    }

    fn leave(&self, conn: ConnId, app: AppIdx, sub: Sub, stream: bool) {
        let key = (app, Arc::clone(&sub.channel));
        {
            let mut subs = self.subs.borrow_mut();
            if let Some(set) = subs.get_mut(&key) {
                set.swap_remove(&conn);
                if set.is_empty() {
                    subs.remove(&key);
                }
            }
        }
        self.hub.stats[usize::from(app)]
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
        self.hub
            .leave(app, &sub.channel, sub.user.as_deref(), self.index, stream);
    }

    fn client_event(
        &self,
        event: &str,
        channel: &str,
        data: &str,
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) -> WsVerdict {
        let refuse_event = |tx: &mut Sender<'_>, code: Option<u16>, why: &str| {
            tx.text(pusher::error(code, why).as_bytes());
            WsVerdict::Continue
        };
        let (app, socket, user) = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns
                .get_mut(&slot_key(cx.conn))
                .filter(|c| c.generation == cx.conn.generation)
            else {
                return WsVerdict::Continue;
            };
            let second = cx.now / 1000;
            if c.window != second {
                c.window = second;
                c.sent = 0;
            }
            c.sent += 1;
            if c.sent > CLIENT_EVENTS_PER_SECOND {
                return refuse_event(
                    tx,
                    Some(code::RATE),
                    "Client event rate limit exceeded: at most 10 per second",
                );
            }
            let Some(sub) = c.subs.iter().find(|s| &*s.channel == channel) else {
                return refuse_event(tx, None, "client events need a subscription to the channel");
            };
            (c.app, c.socket, sub.user.clone())
        };
        let config = &self.hub.apps[usize::from(app)];
        if !config.client_events {
            return refuse_event(tx, None, "client events are disabled for this app");
        }
        let kind = match names::classify(channel) {
            Ok(k) if matches!(k.access, Access::Private | Access::Presence) => k,
            _ => {
                return refuse_event(
                    tx,
                    None,
                    "client events are only for private and presence channels",
                );
            }
        };
        if data.len() > config.max_event_bytes {
            return refuse_event(tx, None, "the event's data is over max_event_bytes");
        }
        let frame = pusher::frame(&pusher::event(event, channel, data, user.as_deref()));
        self.hub.stats[usize::from(app)]
            .events_client
            .fetch_add(1, Ordering::Relaxed);
        self.hub.publish(
            app,
            channel,
            frame,
            kind.cache,
            Some(self.socket_id(socket)),
            None,
            self.index,
        );
        WsVerdict::Continue
    }

    /// Channel connections are asked to reconnect (4200), each at a moment spread with
    /// jitter over half the shutdown timeout, so that their clients do not all come back in
    /// the same second.
    pub fn drain(&self, cx: &Context<'_>) -> Drain {
        Drain {
            code: code::RECONNECT,
            reason: "server restarting: reconnect",
            after_ms: self.drain_after(cx),
        }
    }

    /// A moment for one connection's drain, spread with jitter over half the shutdown timeout.
    fn drain_after(&self, cx: &Context<'_>) -> u64 {
        let span = (cx.config.server.shutdown_timeout.as_millis() as u64 / 2).max(1);
        let mut x = self.rng.get() ^ u64::from(cx.conn.slot).wrapping_mul(0x2545_F491_4F6C_DD1D);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        // At least 1 ms: 0 means "now" to the protocols, which is fine too, but the spread
        // should include the start.
        x % span + 1
    }

    /// A connection is gone: leave its channels, forget it.
    pub fn closed(&self, cx: &Context<'_>, reason: CloseReason) {
        self.pending_streams.borrow_mut().remove(&slot_key(cx.conn));
        let state = {
            let mut conns = self.conns.borrow_mut();
            match conns.get(&slot_key(cx.conn)) {
                Some(c) if c.generation == cx.conn.generation => conns.remove(&slot_key(cx.conn)),
                _ => None,
            }
        };
        let Some(state) = state else { return };
        let stats = &self.hub.stats[usize::from(state.app)];
        let stream = state.stream.is_some();
        if stream {
            stats.sse_streams.fetch_sub(1, Ordering::Relaxed);
        } else {
            stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
        if reason == CloseReason::SlowReader {
            stats.slow_closes.fetch_add(1, Ordering::Relaxed);
        }
        for sub in state.subs {
            self.leave(cx.conn, state.app, sub, stream);
        }
    }

    fn state<'m>(&self, conns: &'m HashMap<Key, ConnState>, id: ConnId) -> Option<&'m ConnState> {
        conns
            .get(&slot_key(id))
            .filter(|c| c.generation == id.generation)
    }

    // ---- the mailbox ------------------------------------------------------------------

    /// Turns mail into work: each event into one delivery of its shared frame to this
    /// worker's subscribers that joined before it (and are not excluded), each finished
    /// acknowledgement into the reply its API request waits for.
    pub fn poll(&self) {
        if self.index == 0 && self.last_sweep.get().elapsed() >= SWEEP_EVERY {
            self.last_sweep.set(Instant::now());
            self.hub.sweep(Instant::now());
        }
        // An event's acknowledgement finished here lands in this same mailbox, without a
        // wake-up (see `Hub::acked`): look again until it is empty.
        while self.hub.has_mail(self.index) {
            self.read_mail();
        }
    }

    fn read_mail(&self) {
        let mut mail = std::mem::take(&mut *self.mail.borrow_mut());
        self.hub.take_mail(self.index, &mut mail);
        let mut work = self.work.borrow_mut();
        let subs = self.subs.borrow();
        let mut conns = self.conns.borrow_mut();
        for m in mail.drain(..) {
            match m {
                Mail::Event(ev) => {
                    let stats = &self.hub.stats[usize::from(ev.app)];
                    if let Some(set) = subs.get(&(ev.app, Arc::clone(&ev.channel))) {
                        let excluded = ev.exclude.filter(|s| s.origin == self.origin).map(|s| s.n);
                        let mut sockets = Vec::new();
                        let mut streams = Vec::new();
                        let mut delivered = 0;
                        for (&id, &(joined, sink)) in set {
                            if ev.seq <= joined {
                                continue;
                            }
                            match sink {
                                Sink::Socket => {
                                    if excluded.is_none_or(|n| {
                                        self.state(&conns, id).is_none_or(|c| c.socket != n)
                                    }) {
                                        sockets.push(id);
                                    }
                                }
                                Sink::Stream => streams.push(id),
                                Sink::MultiStream(n) => {
                                    let (Some(entry), Some(c)) =
                                        (&ev.sse, conns.get_mut(&slot_key(id)))
                                    else {
                                        continue;
                                    };
                                    let Some(positions) = c.stream.as_deref_mut() else {
                                        continue;
                                    };
                                    if let Some(p) = positions.get_mut(usize::from(n)) {
                                        *p = entry.pos;
                                    }
                                    let id_text = super::sse::format_id(positions);
                                    delivered += 1;
                                    work.push(Work::Deliver {
                                        frame: super::sse::with_id(&id_text, entry.lines()),
                                        to: vec![id],
                                        slow_cap: SLOW_SUBSCRIBER_BYTES,
                                        slow_code: code::SLOW,
                                    });
                                }
                            }
                        }
                        for (to, frame) in [
                            (sockets, Some(&ev.frame)),
                            (streams, ev.sse.as_ref().map(|e| &e.chunk)),
                        ] {
                            if let Some(frame) = frame
                                && !to.is_empty()
                            {
                                delivered += to.len();
                                work.push(Work::Deliver {
                                    frame: Arc::clone(frame),
                                    to,
                                    slow_cap: SLOW_SUBSCRIBER_BYTES,
                                    slow_code: code::SLOW,
                                });
                            }
                        }
                        if delivered > 0 {
                            stats
                                .deliveries
                                .fetch_add(delivered as u64, Ordering::Relaxed);
                        }
                    }
                    stats.fanout_time(ev.posted.elapsed().as_micros() as u64);
                    if let Some(ack) = &ev.ack {
                        self.hub.acked(ack, self.index);
                    }
                }
                Mail::Acked { conn, body } => work.push(Work::Reply {
                    to: conn,
                    reply: Reply::json(200, body.into_bytes()),
                }),
                Mail::Fetched { conn, fetched } => {
                    let mut pending = self.pending_streams.borrow_mut();
                    if let Some(p) = pending.get_mut(&slot_key(conn))
                        && p.generation == conn.generation
                    {
                        p.fetched = Some(fetched);
                        work.push(Work::Stream {
                            to: conn,
                            route: super::ROUTE_EVENTS,
                        });
                    }
                }
            }
        }
        *self.mail.borrow_mut() = mail;
    }

    pub fn take_work(&self, into: &mut Vec<Work>) {
        into.append(&mut self.work.borrow_mut());
    }
}

/// Sends `pusher:error` with `code` and closes with the same code, as Pusher does for a
/// connection it will not serve.
fn refuse(tx: &mut Sender<'_>, code: u16, message: &str) -> WsVerdict {
    tx.text(pusher::error(Some(code), message).as_bytes());
    WsVerdict::Close {
        code,
        reason: message.to_string().into(),
    }
}

fn split_target(target: &[u8]) -> (&str, &str) {
    let t = std::str::from_utf8(target).unwrap_or("");
    t.split_once('?').unwrap_or((t, ""))
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
