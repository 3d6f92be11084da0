//! Owns the messages the server processes of one node exchange about channels (under
//! `server.processes > 1`), and their encoding: pure bytes in and out, unit-tested without
//! sockets. A datagram is the sender's process index, then messages until its end.

use super::hub::{AppIdx, Pos, SocketId};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The sender (re)started with no subscribers: forget what it had, tell it what we have.
    Hello,
    /// The sender's subscriber count on a channel, now (absolute, so repeats are harmless).
    Subs {
        app: AppIdx,
        channel: Arc<str>,
        count: u64,
    },
    /// A presence user has a connection on the sender now.
    Present {
        app: AppIdx,
        channel: Arc<str>,
        user: String,
        info: String,
    },
    /// A presence user has no connection left on the sender.
    Absent {
        app: AppIdx,
        channel: Arc<str>,
        user: String,
    },
    /// An event. With `pos`, it is sequenced (by the channel's owner process, see
    /// `Hub::publish`): deliver it at that position. Without, on a presence channel: deliver
    /// it; on any other: the receiver is the channel's owner and sequences it for everyone.
    /// `ack`: tell `origin` (the process whose API request waits) when ours have it queued.
    Event {
        app: AppIdx,
        channel: Arc<str>,
        cache: bool,
        exclude: Option<SocketId>,
        ack: Option<u64>,
        origin: u16,
        pos: Option<Pos>,
        frame: Arc<[u8]>,
    },
    /// Every subscriber here has the event the sender numbered `id` queued.
    Acked { id: u64 },
    /// The sender's figures for `app` (`stats::Snapshot::to_summed`), for `/metrics`.
    Stats { app: AppIdx, values: Vec<u64> },
    /// The sender is up: a cluster member says so every second, and one silent for
    /// `cluster::MEMBER_SILENCE` is gone.
    Alive,
    /// The sender's bus messages received, sent, and lost, for `/metrics`.
    Bus {
        inbound: u64,
        outbound: u64,
        errors: u64,
    },
}

impl Msg {
    /// An event on a channel whose events are put in one order for the whole node by its owner
    /// process: every channel but presence ones (whose events are membership, for WebSocket
    /// subscribers only, and need no position).
    pub fn needs_sequencing(&self) -> bool {
        matches!(self, Msg::Event { channel, .. } if super::hub::sequenced(channel))
    }
}

pub fn start(out: &mut Vec<u8>, from: u16) {
    out.clear();
    out.extend_from_slice(&from.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

pub fn encode(out: &mut Vec<u8>, m: &Msg) {
    match m {
        Msg::Hello => out.push(0),
        Msg::Subs {
            app,
            channel,
            count,
        } => {
            out.push(1);
            out.extend_from_slice(&app.to_be_bytes());
            put_str(out, channel.as_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        Msg::Present {
            app,
            channel,
            user,
            info,
        } => {
            out.push(2);
            out.extend_from_slice(&app.to_be_bytes());
            put_str(out, channel.as_bytes());
            put_str(out, user.as_bytes());
            put_str(out, info.as_bytes());
        }
        Msg::Absent { app, channel, user } => {
            out.push(3);
            out.extend_from_slice(&app.to_be_bytes());
            put_str(out, channel.as_bytes());
            put_str(out, user.as_bytes());
        }
        Msg::Event {
            app,
            channel,
            cache,
            exclude,
            ack,
            origin,
            pos,
            frame,
        } => {
            out.push(4);
            out.extend_from_slice(&app.to_be_bytes());
            put_str(out, channel.as_bytes());
            let flags = u8::from(*cache)
                | u8::from(exclude.is_some()) << 1
                | u8::from(ack.is_some()) << 2
                | u8::from(pos.is_some()) << 3;
            out.push(flags);
            out.extend_from_slice(&origin.to_be_bytes());
            if let Some(p) = pos {
                out.extend_from_slice(&p.ms.to_be_bytes());
                out.extend_from_slice(&p.n.to_be_bytes());
            }
            if let Some(s) = exclude {
                out.extend_from_slice(&s.origin.to_be_bytes());
                out.extend_from_slice(&s.n.to_be_bytes());
            }
            if let Some(id) = ack {
                out.extend_from_slice(&id.to_be_bytes());
            }
            put_str(out, frame);
        }
        Msg::Acked { id } => {
            out.push(5);
            out.extend_from_slice(&id.to_be_bytes());
        }
        Msg::Bus {
            inbound,
            outbound,
            errors,
        } => {
            out.push(7);
            for v in [inbound, outbound, errors] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Msg::Alive => out.push(8),
        Msg::Stats { app, values } => {
            out.push(6);
            out.extend_from_slice(&app.to_be_bytes());
            out.extend_from_slice(&(values.len() as u32).to_be_bytes());
            for v in values {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn name(&mut self) -> Option<Arc<str>> {
        Some(std::str::from_utf8(self.bytes()?).ok()?.into())
    }
}

/// Decodes a datagram into its sender and messages; `None` if any part is malformed (a
/// datagram comes whole from a sibling process, so a bad one is a bug, dropped and counted).
pub fn decode(datagram: &[u8]) -> Option<(u16, Vec<Msg>)> {
    let mut r = Reader { b: datagram };
    let from = r.u16()?;
    let mut msgs = Vec::new();
    while !r.b.is_empty() {
        let m = match r.u8()? {
            0 => Msg::Hello,
            1 => Msg::Subs {
                app: r.u16()?,
                channel: r.name()?,
                count: r.u64()?,
            },
            2 => Msg::Present {
                app: r.u16()?,
                channel: r.name()?,
                user: r.string()?,
                info: r.string()?,
            },
            3 => Msg::Absent {
                app: r.u16()?,
                channel: r.name()?,
                user: r.string()?,
            },
            4 => {
                let app = r.u16()?;
                let channel = r.name()?;
                let flags = r.u8()?;
                let origin = r.u16()?;
                let pos = if flags & 8 != 0 {
                    Some(Pos {
                        ms: r.u64()?,
                        n: r.u64()?,
                    })
                } else {
                    None
                };
                let exclude = if flags & 2 != 0 {
                    Some(SocketId {
                        origin: r.u32()?,
                        n: r.u64()?,
                    })
                } else {
                    None
                };
                let ack = if flags & 4 != 0 { Some(r.u64()?) } else { None };
                Msg::Event {
                    app,
                    channel,
                    cache: flags & 1 != 0,
                    exclude,
                    ack,
                    origin,
                    pos,
                    frame: r.bytes()?.into(),
                }
            }
            5 => Msg::Acked { id: r.u64()? },
            6 => {
                let app = r.u16()?;
                let n = r.u32()? as usize;
                if n > r.b.len() / 8 {
                    return None;
                }
                let values = (0..n).map(|_| r.u64()).collect::<Option<Vec<u64>>>()?;
                Msg::Stats { app, values }
            }
            7 => Msg::Bus {
                inbound: r.u64()?,
                outbound: r.u64()?,
                errors: r.u64()?,
            },
            8 => Msg::Alive,
            _ => return None,
        };
        msgs.push(m);
    }
    Some((from, msgs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all() -> Vec<Msg> {
        vec![
            Msg::Hello,
            Msg::Subs {
                app: 1,
                channel: "a".into(),
                count: 7,
            },
            Msg::Present {
                app: 0,
                channel: "presence-x".into(),
                user: "u1".into(),
                info: "{\"n\":1}".into(),
            },
            Msg::Absent {
                app: 0,
                channel: "presence-x".into(),
                user: "u1".into(),
            },
            Msg::Event {
                app: 2,
                channel: "c".into(),
                cache: true,
                exclude: Some(SocketId { origin: 3, n: 9 }),
                ack: Some(44),
                origin: 2,
                pos: Some(Pos {
                    ms: 1_700_000_000_000,
                    n: 3,
                }),
                frame: Arc::from(&b"\x81\x02hi"[..]),
            },
            Msg::Event {
                app: 2,
                channel: "c".into(),
                cache: false,
                exclude: None,
                ack: None,
                origin: 0,
                pos: None,
                frame: Arc::from(&b""[..]),
            },
            Msg::Acked { id: 44 },
            Msg::Stats {
                app: 1,
                values: vec![1, 2, 3],
            },
            Msg::Bus {
                inbound: 4,
                outbound: 5,
                errors: 6,
            },
            Msg::Alive,
        ]
    }

    #[test]
    fn every_message_round_trips_in_one_datagram() {
        let mut d = Vec::new();
        start(&mut d, 5);
        for m in all() {
            encode(&mut d, &m);
        }
        assert_eq!(decode(&d), Some((5, all())));
    }

    proptest! {
        #[test]
        fn truncated_or_garbled_datagrams_decode_to_none_or_something_not_a_panic(
            cut in 0usize..200, noise in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut d = Vec::new();
            start(&mut d, 1);
            for m in all() {
                encode(&mut d, &m);
            }
            let _ = decode(&d[..cut.min(d.len())]);
            let _ = decode(&noise);
        }
    }
}
