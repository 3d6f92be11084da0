//! Owns a worker's event streams (CHANNELS.md §4): the request checked before the stream
//! starts, the join of its channels with the replay of what it missed, and its drain.

use super::super::hub::{Entry, Recovered, Via, unix_ms};
use super::super::sse::{self, StreamRequest};
use super::{ChannelsWorker, ConnState, PendingStream, Sink, Sub, slot_key};
use crate::proto::Context;
use crate::proto::handler::StreamDrain;
use crate::proto::http1::exchange::{Reply, Request};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl ChannelsWorker {
    /// Checks a request for `/app/{key}/events`: Ok(true) when the stream may start (it opens
    /// in [`ChannelsWorker::stream_open`], right after its head is written), Ok(false) when it
    /// first waits for the cluster's history (a recovery reaching back before this process's
    /// own: it starts once `Mail::Fetched` arrives), otherwise the refusal to answer.
    pub fn stream_request(
        &self,
        req: &Request<'_>,
        cx: &Context<'_>,
    ) -> Result<bool, Reply<'static>> {
        let max = cx.config.channels.max_channels_per_connection;
        match sse::check(req, &self.hub, max, unix_ms() / 1000) {
            Ok(r) => {
                let ask = r.from.as_ref().is_some_and(|from| {
                    r.channels
                        .iter()
                        .zip(from.iter())
                        .any(|(c, f)| self.hub.needs_cluster_history(r.app, c, *f))
                });
                if let (true, Some(from)) = (ask, &r.from) {
                    self.hub
                        .fetch_history(self.index, cx.conn, r.app, &r.channels, from);
                }
                self.pending_streams.borrow_mut().insert(
                    slot_key(cx.conn),
                    PendingStream {
                        generation: cx.conn.generation,
                        request: r,
                        fetched: None,
                    },
                );
                Ok(!ask)
            }
            Err(refusal) => {
                let body = format!(r#"{{"error":{}}}"#, super::pusher::quote(&refusal.message));
                Err(Reply::json(refusal.status, body.into_bytes()))
            }
        }
    }

    /// The stream's head is out: join its channels, then write the preamble (with the ID the
    /// stream starts at), and either what it missed or `holdfast:recovery_failed`.
    pub fn stream_open(&self, cx: &Context<'_>, out: &mut Vec<u8>) -> bool {
        let pending = self.pending_streams.borrow_mut().remove(&slot_key(cx.conn));
        let Some(PendingStream {
            generation,
            request,
            fetched,
        }) = pending
        else {
            return false;
        };
        if generation != cx.conn.generation {
            return false;
        }
        let StreamRequest {
            app,
            channels,
            from,
        } = request;
        let stats = &self.hub.stats[usize::from(app)];
        stats.sse_streams.fetch_add(1, Ordering::Relaxed);
        let n = self.next_socket.get();
        self.next_socket.set(n + 1);
        let me = self.socket_id(n);
        let multi = channels.len() > 1;
        let mut at = Vec::with_capacity(channels.len());
        let mut missed: Vec<(usize, Entry)> = Vec::new();
        let mut failed = false;
        let mut subs = Vec::with_capacity(channels.len());
        for (i, channel) in channels.iter().enumerate() {
            let via = Via::Stream {
                from: from.as_ref().map(|f| f[i]),
                fetched: fetched
                    .as_ref()
                    .and_then(|f| f.get(i))
                    .and_then(Option::as_ref),
            };
            let Ok(joined) = self
                .hub
                .join(app, channel, None, usize::MAX, me, self.index, via)
            else {
                continue; // only presence channels refuse a join, and they are refused above
            };
            match joined.recovered {
                Recovered::Live => {}
                Recovered::Events(events) => missed.extend(events.into_iter().map(|e| (i, e))),
                Recovered::Failed => failed = true,
            }
            at.push(joined.at);
            let sink = if multi {
                Sink::MultiStream(i as u16)
            } else {
                Sink::Stream
            };
            self.subs
                .borrow_mut()
                .entry((app, Arc::clone(channel)))
                .or_default()
                .insert(cx.conn, (joined.seq, sink));
            stats.subscriptions.fetch_add(1, Ordering::Relaxed);
            subs.push(Sub {
                channel: Arc::clone(channel),
                user: None,
            });
        }
        match (&from, failed) {
            (Some(from), false) => {
                stats.recoveries_ok.fetch_add(1, Ordering::Relaxed);
                sse::preamble(out, from);
                missed.sort_by_key(|(i, e)| (e.pos, *i));
                let mut positions = from.clone();
                for (i, e) in &missed {
                    positions[*i] = e.pos;
                    if multi {
                        out.extend_from_slice(&sse::with_id(
                            &sse::format_id(&positions),
                            e.lines(),
                        ));
                    } else {
                        out.extend_from_slice(&e.chunk);
                    }
                }
                if positions != at {
                    // Nothing more was missed: the stream is where its channels are.
                    sse::id_only(out, &at);
                }
            }
            (Some(_), true) => {
                stats.recoveries_failed.fetch_add(1, Ordering::Relaxed);
                sse::preamble(out, &at);
                crate::proto::sse::chunk(out, sse::RECOVERY_FAILED);
            }
            (None, _) => sse::preamble(out, &at),
        }
        let state = ConnState::new(cx.conn, app, n, subs, Some(at.into_boxed_slice()));
        self.conns.borrow_mut().insert(slot_key(cx.conn), state);
        true
    }

    /// Streams end with `holdfast:reconnect` at moments spread over half the shutdown timeout,
    /// as channel sockets get 4200.
    pub fn stream_drain(&self, cx: &Context<'_>) -> StreamDrain {
        StreamDrain {
            last: sse::RECONNECT,
            after_ms: self.drain_after(cx),
        }
    }
}
