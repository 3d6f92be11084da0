//! Owns a connection's life as a channel subscriber (subscribe mode), whatever carries it and
//! whichever server it speaks to. Pusher over WebSocket (ws.rs moves the frames): it waits for
//! `pusher:connection_established`, subscribes to its channel (and to the shared channel, with
//! `--shared-channel`) and counts as connected once every `subscription_succeeded` has arrived;
//! Pusher over SSE (sse.rs reads the stream): subscribed once the stream has started; nchan
//! (nchan.rs, no shared channel): a WebSocket or an EventSource stream to its channel's own
//! path, subscribed once the upgrade or the stream's 200 head is answered, each message or
//! event's data the published body itself. Either way each delivery is checked against the sequence track
//! (track.rs) of the channel it names and its latency — receipt minus the publisher's
//! wall-clock send time carried in the event — is recorded; a delivery on the shared channel
//! (a broadcast) is recorded per broadcast, for its time to the last subscriber.

use crate::cli::Peer;
use crate::conn::{Conn, Ctx, State};
use crate::frame::{self, OP_TEXT};
use crate::nchan;
use crate::pusher::{self, Msg, On, OnChannels};
use crate::sse::SseState;
use crate::track::{Seen, Track};
use crate::ws::MASK;
use std::io;

/// What every subscriber shares.
pub struct SubPlan {
    pub channels: Vec<String>,
    /// The channel every subscriber is on too (the broadcasts'), if any.
    pub shared: Option<String>,
    /// WebSocket: per channel, the masked `pusher:subscribe` frame.
    pub subscribe: Vec<Vec<u8>>,
    /// WebSocket: the shared channel's `pusher:subscribe` frame (empty without one).
    pub subscribe_shared: Vec<u8>,
    /// Per channel, the request that opens a subscriber's connection when it is not the shared
    /// upgrade: the SSE GET (holdfast's events path, nchan's channel path), nchan's upgrade to
    /// the channel's path (empty for Pusher WebSocket).
    pub requests: Vec<Vec<u8>>,
    /// The masked `pusher:pong` frame.
    pub pong: Vec<u8>,
    /// Subscribers use SSE rather than WebSocket.
    pub sse: bool,
    pub peer: Peer,
}

impl SubPlan {
    /// The plan, and the upgrade request to the connect path (Pusher WebSocket subscribers all
    /// send it; SSE and nchan ones send their channel's own request instead). A shared channel
    /// is for Pusher only (`ChannelArgs::check_shared` refuses it with nchan).
    pub fn new(
        channels: Vec<String>,
        shared: Option<String>,
        sse: bool,
        peer: Peer,
        key: &str,
        authority: &str,
    ) -> (SubPlan, Vec<u8>) {
        let frame = |text: &str| frame::client_frame(OP_TEXT, text.as_bytes(), MASK);
        let (subscribe, subscribe_shared) = match (peer, sse) {
            (Peer::Pusher, false) => (
                channels
                    .iter()
                    .map(|c| frame(&pusher::subscribe_message(c)))
                    .collect(),
                shared
                    .as_deref()
                    .map(|s| frame(&pusher::subscribe_message(s)))
                    .unwrap_or_default(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let requests = match (peer, sse) {
            (Peer::Pusher, false) => Vec::new(),
            (Peer::Pusher, true) => channels
                .iter()
                .map(|c| {
                    crate::sse::request(&pusher::sse_path(key, c, shared.as_deref()), authority)
                })
                .collect(),
            (Peer::Nchan, false) => channels
                .iter()
                .map(|c| crate::ws::upgrade_request(&nchan::sub_path(c), authority))
                .collect(),
            (Peer::Nchan, true) => channels
                .iter()
                .map(|c| crate::sse::request(&nchan::sub_path(c), authority))
                .collect(),
        };
        let upgrade = crate::ws::upgrade_request(&pusher::connect_path(key), authority);
        let plan = SubPlan {
            channels,
            shared,
            subscribe,
            subscribe_shared,
            requests,
            pong: frame(pusher::PONG),
            sse,
            peer,
        };
        (plan, upgrade)
    }

    /// Over SSE, whether a subscriber counts as subscribed at the stream's 200 head rather
    /// than at its first line. nchan answers the head once the subscriber is in the channel
    /// (a publish right after it is seen answers 201 and reaches the subscriber) and may send
    /// nothing more before the first event (1.3.6 sends a `: hi` comment, not always in the same
    /// segment). A holdfast subscriber counts at the stream's first line, the `retry:` that
    /// CHANNELS.md §4 puts first, as it always has.
    pub fn sse_subscribed_at_head(&self) -> bool {
        self.peer == Peer::Nchan
    }

    /// The first request a subscriber sends: its channel's own, or the shared upgrade.
    pub fn request<'a>(&'a self, sub: &Sub, upgrade: &'a [u8]) -> &'a [u8] {
        match self.requests.get(sub.channel as usize) {
            Some(r) => r,
            None => upgrade,
        }
    }
}

/// One subscriber's own state (kept small: a million of them share one host with the server).
pub struct Sub {
    pub channel: u32,
    /// WebSocket: the 101 has come (the subscription is still to be made).
    pub upgraded: bool,
    /// WebSocket: `pusher:subscribe` has been sent.
    pub asked: bool,
    /// WebSocket: `subscription_succeeded` messages still to come.
    pub pending: u8,
    /// Every `subscription_succeeded` came (or the SSE stream started): deliveries are expected.
    pub subscribed: bool,
    /// Its own channel's sequence.
    pub track: Track,
    /// The shared channel's (the broadcasts').
    pub shared: Track,
    /// Over SSE: the stream's decoding state.
    pub sse: Option<Box<SseState>>,
}

impl Sub {
    pub fn new(channel: u32, sse: bool) -> Box<Sub> {
        Box::new(Sub {
            channel,
            upgraded: false,
            asked: false,
            pending: 0,
            subscribed: false,
            track: Track::default(),
            shared: Track::default(),
            sse: sse.then(Box::default),
        })
    }
}

impl Conn {
    /// The channels this subscriber is on.
    pub(crate) fn channel_names<'a>(&self, cx: &Ctx<'a>) -> OnChannels<'a> {
        let plan = cx.plan.sub.as_ref().expect("a subscribe plan");
        let channel = self.sub.as_ref().map_or(0, |s| s.channel);
        OnChannels {
            own: &plan.channels[channel as usize],
            shared: plan.shared.as_deref(),
        }
    }

    /// The WebSocket upgrade was answered: a Pusher subscriber now waits for
    /// `connection_established`, an nchan one is subscribed.
    pub(crate) fn sub_upgraded(&mut self, cx: &mut Ctx) {
        let plan = cx.plan.sub.as_ref().expect("a subscribe plan");
        let Some(sub) = self.sub.as_mut() else {
            return;
        };
        sub.upgraded = true;
        if plan.peer == Peer::Nchan {
            sub.subscribed = true;
            self.opened(cx);
        }
    }

    /// Acts on one text message from the server.
    pub(crate) fn sub_text(&mut self, cx: &mut Ctx, text: &[u8]) -> io::Result<()> {
        let plan = cx.plan.sub.as_ref().expect("a subscribe plan");
        let msg = match plan.peer {
            Peer::Pusher => {
                pusher::parse_ws(text, self.channel_names(cx)).map_err(io::Error::other)?
            }
            Peer::Nchan => nchan::parse(text),
        };
        self.pusher_message(cx, msg)
    }

    /// Acts on one SSE event's data: holdfast's `{"channel","data"}`, or nchan's published body
    /// itself (read as its WebSocket messages are).
    pub(crate) fn sub_sse_data(&mut self, cx: &mut Ctx, data: &[u8]) {
        let plan = cx.plan.sub.as_ref().expect("a subscribe plan");
        let msg = match plan.peer {
            Peer::Pusher => pusher::parse_sse(data, self.channel_names(cx)),
            Peer::Nchan => nchan::parse(data),
        };
        if let Msg::Event { on, seq, sent_ns } = msg {
            self.delivered(cx, on, seq, sent_ns);
        }
    }

    /// Acts on one message from the server.
    pub(crate) fn pusher_message(&mut self, cx: &mut Ctx, msg: Msg) -> io::Result<()> {
        let plan = cx.plan.sub.as_ref().expect("a subscribe plan");
        let Some(sub) = self.sub.as_mut() else {
            return Ok(());
        };
        match msg {
            Msg::Established if self.state == State::Handshaking && !sub.asked => {
                sub.asked = true;
                sub.pending = 1;
                self.link.send(&plan.subscribe[sub.channel as usize])?;
                if plan.shared.is_some() {
                    sub.pending += 1;
                    self.link.send(&plan.subscribe_shared)?;
                }
            }
            Msg::Subscribed if self.state == State::Handshaking && sub.pending > 0 => {
                sub.pending -= 1;
                if sub.pending == 0 {
                    sub.subscribed = true;
                    self.opened(cx);
                }
            }
            Msg::Event { on, seq, sent_ns } => self.delivered(cx, on, seq, sent_ns),
            Msg::Ping if matches!(self.state, State::Handshaking | State::Open) => {
                self.link.send(&plan.pong)?;
            }
            Msg::Error(what) => return Err(io::Error::other(what)),
            _ => {}
        }
        Ok(())
    }

    /// Counts one event delivered to this subscriber.
    pub(crate) fn delivered(&mut self, cx: &mut Ctx, on: On, seq: u64, sent_ns: u64) {
        let Some(sub) = self.sub.as_mut() else {
            return;
        };
        let track = match on {
            On::Own => &mut sub.track,
            On::Shared => &mut sub.shared,
            On::Other => {
                cx.stats.count.misrouted += 1;
                return;
            }
        };
        let now_ns = pusher::wall_ns();
        match track.record(seq) {
            Seen::Late => cx.stats.count.out_of_order += 1,
            Seen::Duplicate => cx.stats.count.duplicated += 1,
            Seen::InOrder | Seen::Gap(_) => {}
        }
        let latency_us = now_ns.saturating_sub(sent_ns) / 1000;
        if on == On::Shared {
            cx.stats.broadcast_delivered(seq, latency_us, now_ns);
            return;
        }
        let k = cx.plan.sub.as_ref().map_or(1, |p| p.channels.len()) as u64;
        let index = seq.saturating_mul(k).saturating_add(u64::from(sub.channel));
        cx.stats.delivered(index, latency_us, now_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_is_small() {
        // Two sequence tracks (own channel, shared channel) and a few flags: a million of them
        // in the shards beside a million server connections on one host.
        let size = std::mem::size_of::<Sub>();
        assert!(size <= 96, "{size} bytes");
    }

    #[test]
    fn each_peer_and_transport_opens_its_own_way() {
        let channels = || vec!["bench-0".to_string(), "bench-1".to_string()];
        let text = |r: &[u8]| String::from_utf8(r.to_vec()).unwrap();
        let plan = |peer, sse| SubPlan::new(channels(), None, sse, peer, "k", "127.0.0.1:9").0;

        // nchan over SSE: a GET of the channel's own path, subscribed at the head.
        let p = plan(Peer::Nchan, true);
        assert_eq!(
            text(&p.requests[1]),
            "GET /sub/bench-1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAccept: text/event-stream\r\n\r\n"
        );
        assert!(p.sse_subscribed_at_head() && p.subscribe.is_empty());
        // nchan over WebSocket: an upgrade to the same path.
        let p = plan(Peer::Nchan, false);
        assert!(text(&p.requests[0]).starts_with("GET /sub/bench-0 HTTP/1.1\r\n"));
        assert!(text(&p.requests[0]).contains("Upgrade: websocket"));
        // holdfast over SSE: its events path, subscribed at the stream's first line.
        let p = plan(Peer::Pusher, true);
        assert!(text(&p.requests[0]).starts_with("GET /app/k/events?channel=bench-0 HTTP/1.1"));
        assert!(!p.sse_subscribed_at_head());
        // holdfast over WebSocket: the shared upgrade, then a subscribe message per channel.
        let p = plan(Peer::Pusher, false);
        assert!(p.requests.is_empty() && p.subscribe.len() == 2);
    }
}
