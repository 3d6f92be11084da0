//! Owns a connection's life as a Pusher channel subscriber (subscribe mode), whatever carries
//! it: over WebSocket (ws.rs moves the frames) it waits for `pusher:connection_established`,
//! subscribes to its channel and counts as connected once `subscription_succeeded` arrives;
//! over SSE (sse.rs reads the stream) it is subscribed once the stream has started. Either way
//! each delivery is checked against the subscriber's sequence track (track.rs) and its
//! latency — receipt minus the publisher's wall-clock send time carried in the event — is
//! recorded.

use crate::conn::{Conn, Ctx, State};
use crate::frame::{self, OP_TEXT};
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
    /// SSE: per channel, the GET request that opens the stream (empty over WebSocket).
    pub sse_requests: Vec<Vec<u8>>,
    /// The masked `pusher:pong` frame.
    pub pong: Vec<u8>,
    /// Subscribers use SSE rather than WebSocket.
    pub sse: bool,
}

impl SubPlan {
    /// The plan, and the upgrade request to the connect path (WebSocket subscribers all send
    /// it; SSE ones send their channel's GET instead).
    pub fn new(channels: Vec<String>, sse: bool, key: &str, authority: &str) -> (SubPlan, Vec<u8>) {
        let frame = |text: &str| frame::client_frame(OP_TEXT, text.as_bytes(), MASK);
        let subscribe = if sse {
            Vec::new()
        } else {
            channels
                .iter()
                .map(|c| frame(&pusher::subscribe_message(c)))
                .collect()
        };
        let sse_requests = if sse {
            channels
                .iter()
                .map(|c| crate::sse::request(&pusher::sse_path(key, c), authority))
                .collect()
        } else {
            Vec::new()
        };
        let upgrade = crate::ws::upgrade_request(&pusher::connect_path(key), authority);
        let plan = SubPlan {
            channels,
            subscribe,
            sse_requests,
            pong: frame(pusher::PONG),
            sse,
        };
        (plan, upgrade)
    }

    /// The first request a subscriber sends: its SSE stream's, or the shared upgrade.
    pub fn request<'a>(&'a self, sub: &Sub, upgrade: &'a [u8]) -> &'a [u8] {
        match sub.sse {
            Some(_) => &self.sse_requests[sub.channel as usize],
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
