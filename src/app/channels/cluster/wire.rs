//! Owns what a cluster member puts in Redis and reads back (CHANNELS.md §5), as pure bytes and
//! names, unit-tested without Redis: the key and pub/sub channel names, the script that gives
//! a batch of events their positions, and the payload of a pub/sub message.
//!
//! A payload is the positions the script gave (`ms-n` Redis stream IDs, comma-separated, empty
//! when none were asked for), a line feed, then a bus datagram (`bus::decode`). The positions
//! go, in order, to the datagram's events that needed one.

use crate::app::channels::bus::{self, Msg};
use crate::app::channels::hub::Pos;

/// Gives each event of a batch its position on its channel by adding it to the channel's
/// history stream, then publishes the batch with the positions, in one step: Redis runs a
/// script alone, so every member receives a channel's events in the order of their
/// positions, whichever member published them.
///
/// KEYS: the history stream of each event, in order. ARGV: the bus channel, the batch's
/// datagram, the entries a stream keeps, their lifetime in ms, then each event's frame.
pub const SEQUENCE_SCRIPT: &str = "\
local ids = {}
for i, key in ipairs(KEYS) do
  ids[i] = redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', 'f', ARGV[4 + i])
  redis.call('PEXPIRE', key, ARGV[4])
end
local joined = table.concat(ids, ',')
redis.call('PUBLISH', ARGV[1], joined .. '\\n' .. ARGV[2])
return joined
";

/// Keeps a member's number while it is the value's owner: the member refreshes it every
/// second; a member that stops (killed, cut off) loses it after the key's lifetime.
/// KEYS[1]: the member key; ARGV: the owner's token, the lifetime in ms.
pub const REFRESH_SCRIPT: &str = "\
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
";

/// The names holdfast uses in Redis, all under `cluster.prefix`.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
        }
    }
    /// The pub/sub channel every member publishes to and subscribes to.
    pub fn bus(&self) -> String {
        format!("{}:bus", self.prefix)
    }
    /// The pub/sub channel of messages for one member only.
    pub fn to(&self, member: u16) -> String {
        format!("{}:to:{member}", self.prefix)
    }
    /// The key whose owner holds member number `n`.
    pub fn member(&self, n: u16) -> String {
        format!("{}:member:{n}", self.prefix)
    }
    /// One channel's history stream. The app id and channel name are length-prefixed so that
    /// no pair of them names another's stream.
    pub fn history(&self, app_id: &str, channel: &str) -> String {
        format!(
            "{}:history:{}:{app_id}:{channel}",
            self.prefix,
            app_id.len()
        )
    }
}

/// A payload carrying `datagram` and the positions `ids` (as the script joined them).
pub fn pack(ids: &[u8], datagram: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(ids.len() + 1 + datagram.len());
    p.extend_from_slice(ids);
    p.push(b'\n');
    p.extend_from_slice(datagram);
    p
}

/// The comma-separated positions the script returns and puts in front of a payload.
pub fn parse_ids(ids: &[u8]) -> Option<Vec<Pos>> {
    if ids.is_empty() {
        return Some(Vec::new());
    }
    std::str::from_utf8(ids)
        .ok()?
        .split(',')
        .map(Pos::parse)
        .collect()
}

/// The sender and messages of a payload, each event that needed a position given its own;
/// `None` when anything is malformed or the positions do not match the events.
pub fn unpack(payload: &[u8]) -> Option<(u16, Vec<Msg>)> {
    let nl = memchr::memchr(b'\n', payload)?;
    let ids = parse_ids(&payload[..nl])?;
    let (from, mut msgs) = bus::decode(&payload[nl + 1..])?;
    let mut ids = ids.into_iter();
    for m in msgs.iter_mut() {
        if m.needs_sequencing()
            && let Msg::Event { pos: p @ None, .. } = m
        {
            *p = Some(ids.next()?);
        }
    }
    ids.next().is_none().then_some((from, msgs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn event(channel: &str) -> Msg {
        Msg::Event {
            app: 0,
            channel: channel.into(),
            cache: false,
            exclude: None,
            ack: Some(3),
            origin: 7,
            pos: None,
            frame: Arc::from(&b"frame"[..]),
        }
    }

    fn datagram(msgs: &[Msg]) -> Vec<u8> {
        let mut d = Vec::new();
        bus::start(&mut d, 7);
        for m in msgs {
            bus::encode(&mut d, m);
        }
        d
    }

    #[test]
    fn positions_go_to_the_events_that_needed_them_in_order() {
        let msgs = [event("a"), event("presence-p"), Msg::Hello, event("b")];
        let (from, got) = unpack(&pack(b"10-0,10-1", &datagram(&msgs))).unwrap();
        assert_eq!(from, 7);
        let positions: Vec<Option<Pos>> = got
            .iter()
            .map(|m| match m {
                Msg::Event { pos, .. } => *pos,
                _ => None,
            })
            .collect();
        let at = |ms, n| Some(Pos { ms, n });
        assert_eq!(positions, [at(10, 0), None, None, at(10, 1)]);
    }

    #[test]
    fn positions_that_do_not_match_the_events_are_refused() {
        let d = datagram(&[event("a")]);
        assert!(unpack(&pack(b"", &d)).is_none(), "one missing");
        assert!(unpack(&pack(b"1-0,1-1", &d)).is_none(), "one too many");
        assert!(unpack(&pack(b"1-x", &d)).is_none());
        assert!(unpack(b"no line feed").is_none());
        let plain = datagram(&[Msg::Hello]);
        assert_eq!(unpack(&pack(b"", &plain)), Some((7, vec![Msg::Hello])));
    }

    #[test]
    fn history_names_cannot_collide_across_apps() {
        let n = Names::new("hf");
        assert_ne!(n.history("a:b", "c"), n.history("a", "b:c"));
        assert_eq!(n.bus(), "hf:bus");
        assert_eq!(n.to(3), "hf:to:3");
    }
}
