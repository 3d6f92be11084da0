//! Owns what a cluster member puts in Redis and reads back (CHANNELS.md §5), as pure bytes and
//! names, unit-tested without Redis: the key and pub/sub channel names, the script that gives
//! a batch of events their positions, and the payload of a pub/sub message.
//!
//! A payload is a line, then a bus datagram (`bus::decode`). The line is the sender's batch
//! number (decimal; 0 for a plain publish), a `;`, and the positions the script gave (`ms-n`
//! Redis stream IDs, comma-separated, empty when none were asked for). The positions go, in
//! order, to the datagram's events that needed one; the batch number lets the sender know its
//! own batch when it comes back (one it already delivered alone, after an error that left
//! unknown whether Redis ran it, is not delivered again).

use crate::app::channels::bus::{self, Msg};
use crate::app::channels::hub::Pos;

/// Gives each event of a batch its position on its channel by adding it to the channel's
/// history stream, then publishes the batch with the positions, in one step: Redis runs a
/// script alone, so every member receives a channel's events in the order of their
/// positions, whichever member published them.
///
/// It also notes since when Redis has kept histories, if nobody has yet (Redis started empty).
///
/// KEYS: the `since` key, then the history stream of each event, in order. ARGV: the bus
/// channel, the batch number, the batch's datagram, the entries a stream keeps, their lifetime
/// in ms, then each event's frame.
pub const SEQUENCE_SCRIPT: &str = "\
local t = redis.call('TIME')
redis.call('SET', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), 'NX')
local ids = {}
for i = 2, #KEYS do
  ids[i - 1] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[4], '*', 'f', ARGV[4 + i])
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
local joined = table.concat(ids, ',')
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ';' .. joined .. '\\n' .. ARGV[3])
return joined
";

/// Keeps a member's number while it is the value's owner: the member refreshes it every
/// second; a member that stops (killed, cut off) loses it after the key's lifetime.
/// KEYS[1]: the member key; ARGV: the owner's token, the lifetime in ms.
/// KEYS[2]: the key that says since when Redis has kept the histories (set once, by the
/// first member to refresh after Redis started empty: histories from before are gone).
pub const REFRESH_SCRIPT: &str = "\
local t = redis.call('TIME')
redis.call('SET', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), 'NX')
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
";

/// Reads what the history streams hold after a reconnecting event stream's positions, for a
/// member whose own history does not reach back so far: Redis's clock, then for each stream
/// the newest ID trimmed from it (empty when the stream does not exist: no event within the
/// TTL) and its entries after the position; before them, since when Redis has kept histories
/// (empty: not known yet). Redis 7 or later (`max-deleted-entry-id`).
/// KEYS: the `since` key, then the history streams. ARGV: the position after which each
/// stream is read.
pub const FETCH_SCRIPT: &str = "\
local t = redis.call('TIME')
local out = {t[1], t[2], redis.call('GET', KEYS[1]) or ''}
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call('EXISTS', key) == 0 then
    out[#out + 1] = ''
    out[#out + 1] = {}
  else
    local deleted = '0-0'
    local info = redis.call('XINFO', 'STREAM', key)
    for j = 1, #info, 2 do
      if info[j] == 'max-deleted-entry-id' then deleted = info[j + 1] end
    end
    out[#out + 1] = deleted
    out[#out + 1] = redis.call('XRANGE', key, '(' .. ARGV[i - 1], '+')
  end
end
return out
";

/// One stream's part of [`FETCH_SCRIPT`]'s answer.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRead {
    /// The newest ID trimmed from the stream (None: the stream does not exist).
    pub deleted: Option<Pos>,
    /// Its entries after the position asked: ID and the event's frame.
    pub entries: Vec<(Pos, Vec<u8>)>,
}

/// [`FETCH_SCRIPT`]'s answer.
#[derive(Debug, PartialEq, Eq)]
pub struct FetchAnswer {
    /// Redis's clock, ms.
    pub now_ms: u64,
    /// Since when (ms) Redis has kept histories; None: not known (it restarted a moment ago).
    pub since_ms: Option<u64>,
    /// Each stream's part, in order.
    pub streams: Vec<StreamRead>,
}

/// [`FETCH_SCRIPT`]'s answer; None when it is not shaped as the script makes it.
pub fn parse_fetch(v: &redis::Value) -> Option<FetchAnswer> {
    use redis::Value;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    };
    let Value::Array(items) = v else {
        return None;
    };
    let secs: u64 = text(items.first()?)?.parse().ok()?;
    let micros: u64 = text(items.get(1)?)?.parse().ok()?;
    let since = text(items.get(2)?)?;
    let since_ms = if since.is_empty() {
        None
    } else {
        Some(since.parse().ok()?)
    };
    let mut streams = Vec::new();
    for pair in items[3..].chunks(2) {
        let [deleted, entries] = pair else {
            return None;
        };
        let deleted = text(deleted)?;
        let deleted = if deleted.is_empty() {
            None
        } else {
            Some(Pos::parse(&deleted)?)
        };
        let Value::Array(entries) = entries else {
            return None;
        };
        let mut read = Vec::with_capacity(entries.len());
        for e in entries {
            let Value::Array(e) = e else { return None };
            let pos = Pos::parse(&text(e.first()?)?)?;
            let Value::Array(fields) = e.get(1)? else {
                return None;
            };
            let frame = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("f"))
                .and_then(|kv| match kv.get(1) {
                    Some(Value::BulkString(b)) => Some(b.clone()),
                    _ => None,
                })?;
            read.push((pos, frame));
        }
        streams.push(StreamRead {
            deleted,
            entries: read,
        });
    }
    Some(FetchAnswer {
        now_ms: secs * 1000 + micros / 1000,
        since_ms,
        streams,
    })
}

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
    /// Since when (Redis's clock, ms) Redis has kept the histories.
    pub fn since(&self) -> String {
        format!("{}:since", self.prefix)
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
pub fn pack(batch: u64, ids: &[u8], datagram: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(ids.len() + 22 + datagram.len());
    p.extend_from_slice(batch.to_string().as_bytes());
    p.push(b';');
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

/// A payload as its sender and batch number tell it, and its messages.
#[derive(Debug, PartialEq)]
pub struct Unpacked {
    pub from: u16,
    pub batch: u64,
    pub msgs: Vec<Msg>,
}

/// The sender, batch number and messages of a payload, each event that needed a position
/// given its own; `None` when anything is malformed or the positions do not match the events.
pub fn unpack(payload: &[u8]) -> Option<Unpacked> {
    let nl = memchr::memchr(b'\n', payload)?;
    let line = &payload[..nl];
    let semi = memchr::memchr(b';', line)?;
    let batch = std::str::from_utf8(&line[..semi]).ok()?.parse().ok()?;
    let ids = parse_ids(&line[semi + 1..])?;
    let (from, mut msgs) = bus::decode(&payload[nl + 1..])?;
    let mut ids = ids.into_iter();
    for m in msgs.iter_mut() {
        if m.needs_sequencing()
            && let Msg::Event { pos: p @ None, .. } = m
        {
            *p = Some(ids.next()?);
        }
    }
    ids.next()
        .is_none()
        .then_some(Unpacked { from, batch, msgs })
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
        let got = unpack(&pack(42, b"10-0,10-1", &datagram(&msgs))).unwrap();
        assert_eq!((got.from, got.batch), (7, 42));
        let positions: Vec<Option<Pos>> = (got.msgs.iter())
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
        assert!(unpack(&pack(1, b"", &d)).is_none(), "one missing");
        assert!(unpack(&pack(1, b"1-0,1-1", &d)).is_none(), "one too many");
        assert!(unpack(&pack(1, b"1-x", &d)).is_none());
        assert!(unpack(b"no line feed").is_none());
        let plain = datagram(&[Msg::Hello]);
        assert!(
            unpack(&[b"1-0\n", &plain[..]].concat()).is_none(),
            "no batch"
        );
        assert!(
            unpack(&[b"x;\n", &plain[..]].concat()).is_none(),
            "a batch not a number"
        );
        let want = Unpacked {
            from: 7,
            batch: 0,
            msgs: vec![Msg::Hello],
        };
        assert_eq!(unpack(&pack(0, b"", &plain)), Some(want));
    }

    #[test]
    fn a_fetch_answer_parses_and_a_misshapen_one_does_not() {
        use redis::Value;
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, frame: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("f"), bulk(frame)])])
        };
        let answer = Value::Array(vec![
            bulk("1700000000"),
            bulk("250000"),
            bulk("1699999999000"),
            bulk("5-0"),
            Value::Array(vec![entry("6-0", "a"), entry("6-1", "b")]),
            bulk(""),
            Value::Array(vec![]),
        ]);
        let FetchAnswer {
            now_ms: ms,
            since_ms,
            streams,
        } = parse_fetch(&answer).unwrap();
        assert_eq!(ms, 1_700_000_000_250);
        assert_eq!(since_ms, Some(1_699_999_999_000));
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].deleted, Some(Pos { ms: 5, n: 0 }));
        assert_eq!(
            streams[0].entries,
            vec![
                (Pos { ms: 6, n: 0 }, b"a".to_vec()),
                (Pos { ms: 6, n: 1 }, b"b".to_vec())
            ]
        );
        assert_eq!(streams[1].deleted, None);
        assert!(parse_fetch(&Value::Array(vec![bulk("x"), bulk("0"), bulk("")])).is_none());
        assert!(parse_fetch(&Value::Nil).is_none());
    }

    #[test]
    fn history_names_cannot_collide_across_apps() {
        let n = Names::new("hf");
        assert_ne!(n.history("a:b", "c"), n.history("a", "b:c"));
        assert_eq!(n.bus(), "hf:bus");
        assert_eq!(n.to(3), "hf:to:3");
    }
}
