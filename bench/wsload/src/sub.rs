//! Owns a connection's life as a channel subscriber (subscribe mode), whatever carries it and
//! whichever server it speaks to. Pusher over WebSocket (ws.rs moves the frames): it waits for
//! `pusher:connection_established`, subscribes to its channel and counts as connected once
//! `subscription_succeeded` arrives; Pusher over SSE (sse.rs reads the stream): subscribed once
//! the stream has started; nchan (nchan.rs): a WebSocket to its channel's own path, subscribed
//! once the upgrade is answered. Either way each delivery is checked against the subscriber's
//! sequence track (track.rs) and its latency — receipt minus the publisher's wall-clock send
//! time carried in the event — is recorded.

use crate::cli::Peer;
use crate::conn::{Conn, Ctx, State};
use crate::frame::{self, OP_TEXT};
use crate::nchan;
use crate::pusher::{self, Msg};
use crate::sse::SseState;
use crate::track::{Seen, Track};
use crate::ws::MASK;
use std::io;

/// What every subscriber shares.
pub struct SubPlan {
    pub channels: Vec<String>,
    /// WebSocket: per channel, the masked `pusher:subscribe` frame.
    pub subscribe: Vec<Vec<u8>>,
    /// Per channel, the request that opens a subscriber's connection when it is not the shared
    /// upgrade: SSE's GET, nchan's upgrade to the channel's path (empty for Pusher WebSocket).
    pub requests: Vec<Vec<u8>>,
    /// The masked `pusher:pong` frame.
    pub pong: Vec<u8>,
    /// Subscribers use SSE rather than WebSocket.
    pub sse: bool,
    pub peer: Peer,
}

impl SubPlan {
    /// The plan, and the upgrade request to the connect path (Pusher WebSocket subscribers all
    /// send it; SSE and nchan ones send their channel's own request instead).
    pub fn new(
        channels: Vec<String>,
        sse: bool,
        peer: Peer,
        key: &str,
        authority: &str,
    ) -> (SubPlan, Vec<u8>) {
        let frame = |text: &str| frame::client_frame(OP_TEXT, text.as_bytes(), MASK);
        let subscribe = match (peer, sse) {
            (Peer::Pusher, false) => channels
                .iter()
                .map(|c| frame(&pusher::subscribe_message(c)))
                .collect(),
            _ => Vec::new(),
        };
        let requests = match (peer, sse) {
            (Peer::Pusher, false) => Vec::new(),
            (Peer::Pusher, true) => channels
                .iter()
                .map(|c| crate::sse::request(&pusher::sse_path(key, c), authority))
                .collect(),
            (Peer::Nchan, _) => channels
                .iter()
                .map(|c| crate::ws::upgrade_request(&nchan::sub_path(c), authority))
                .collect(),
        };
        let upgrade = crate::ws::upgrade_request(&pusher::connect_path(key), authority);
        let plan = SubPlan {
            channels,
            subscribe,
            requests,
            pong: frame(pusher::PONG),
            sse,
            peer,
        };
        (plan, upgrade)
    }

    /// The first request a subscriber sends: its channel's own, or the shared upgrade.
    pub fn request<'a>(&'a self, sub: &Sub, upgrade: &'a [u8]) -> &'a [u8] {
        match self.requests.get(sub.channel as usize) {
            Some(r) => r,
            None => upgrade,
        }
    }
}

/// One subscriber's own state.
pub struct Sub {
    pub channel: u32,
    /// WebSocket: the 101 has come (the subscription is still to be made).
    pub upgraded: bool,
    /// WebSocket: `pusher:subscribe` has been sent.
    pub asked: bool,
    /// `subscription_succeeded` came (or the SSE stream started): deliveries are expected.
    pub subscribed: bool,
    pub track: Track,
    /// Over SSE: the stream's decoding state.
    pub sse: Option<Box<SseState>>,
}

impl Sub {
    pub fn new(channel: u32, sse: bool) -> Box<Sub> {
        Box::new(Sub {
            channel,
            upgraded: false,
            asked: false,
            subscribed: false,
            track: Track::default(),
            sse: sse.then(Box::default),
        })
    }
}

impl Conn {
    pub(crate) fn channel_name<'a>(&self, cx: &Ctx<'a>) -> &'a str {
        let plan = cx.plan.sub.as_ref().expect("a subscribe plan");
        let channel = self.sub.as_ref().map_or(0, |s| s.channel);
        &plan.channels[channel as usize]
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
                pusher::parse_ws(text, self.channel_name(cx)).map_err(io::Error::other)?
            }
            Peer::Nchan => nchan::parse(text),
        };
        self.pusher_message(cx, msg)
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
                self.link.send(&plan.subscribe[sub.channel as usize])?;
            }
            Msg::Subscribed if self.state == State::Handshaking && sub.asked => {
                sub.subscribed = true;
                self.opened(cx);
            }
            Msg::Event { ours, seq, sent_ns } => self.delivered(cx, ours, seq, sent_ns),
            Msg::Ping if matches!(self.state, State::Handshaking | State::Open) => {
                self.link.send(&plan.pong)?;
            }
            Msg::Error(what) => return Err(io::Error::other(what)),
            _ => {}
        }
        Ok(())
    }

    /// Counts one event delivered to this subscriber.
    pub(crate) fn delivered(&mut self, cx: &mut Ctx, ours: bool, seq: u64, sent_ns: u64) {
        let Some(sub) = self.sub.as_mut() else {
            return;
        };
        if !ours {
            cx.stats.count.misrouted += 1;
            return;
        }
        let now_ns = pusher::wall_ns();
        match sub.track.record(seq) {
            Seen::Late => cx.stats.count.out_of_order += 1,
            Seen::Duplicate => cx.stats.count.duplicated += 1,
            Seen::InOrder | Seen::Gap(_) => {}
        }
        let k = cx.plan.sub.as_ref().map_or(1, |p| p.channels.len()) as u64;
        let index = seq.saturating_mul(k).saturating_add(u64::from(sub.channel));
        cx.stats
            .delivered(index, now_ns.saturating_sub(sent_ns) / 1000, now_ns);
    }
}
