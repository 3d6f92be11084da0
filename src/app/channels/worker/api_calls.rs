//! Owns what a valid Pusher HTTP API call does on this worker (CHANNELS.md §3): publishing
//! (answered once every worker and sibling has the events queued) and the occupancy queries,
//! with their JSON bodies. Checking the call is `api`'s; this is the doing.

use super::ChannelsWorker;
use crate::app::channels::api::{self, Call, Publish};
use crate::app::channels::hub::{AppIdx, Hub, Occupancy};
use crate::app::channels::names;
use crate::app::channels::pusher;
use crate::app::channels::stats::AuthFailure;
use crate::proto::Context;
use crate::proto::http1::exchange::{Answer, Reply, Request};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl ChannelsWorker {
    pub fn api<'b>(&self, req: &Request<'b>, cx: &Context<'_>) -> Answer<'b> {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let hub = &self.hub;
        let parsed = api::parse(
            req,
            |id| hub.app_by_id(id).map(|i| (i, &hub.apps[usize::from(i)])),
            now_unix,
        );
        let (app, call) = match parsed {
            Ok(ok) => ok,
            Err(e) => {
                if let Some(i) = api::app_id(req.path).and_then(|id| hub.app_by_id(id)) {
                    hub.stats[usize::from(i)].api_answered(e.status);
                    if e.status == 401 {
                        hub.stats[usize::from(i)].auth_failed(AuthFailure::Api);
                    }
                }
                return Answer::Reply(Reply::json(e.status, e.body()));
            }
        };
        let stats = &hub.stats[usize::from(app)];
        stats.api_answered(200);
        match call {
            Call::Events(p) => {
                let body = info_body(hub, app, std::slice::from_ref(&p), false);
                self.publish_all(app, &[p], body, cx)
            }
            Call::Batch(events) => {
                let body = info_body(hub, app, &events, true);
                self.publish_all(app, &events, body, cx)
            }
            Call::Channels { prefix, info } => {
                let list: Vec<String> = hub
                    .channels(app, &prefix)
                    .into_iter()
                    .map(|(name, o)| {
                        format!(
                            "{}:{}",
                            pusher::quote(&name),
                            occupancy_json(&o, info, None)
                        )
                    })
                    .collect();
                Answer::Reply(Reply::json(
                    200,
                    format!(r#"{{"channels":{{{}}}}}"#, list.join(",")).into_bytes(),
                ))
            }
            Call::Channel { name, info } => {
                let o = hub.occupancy(app, &name);
                let occupied = o.subscription_count > 0;
                Answer::Reply(Reply::json(
                    200,
                    occupancy_json(&o, info, Some(occupied)).into_bytes(),
                ))
            }
            Call::Users { name } => {
                let users: Vec<String> = hub
                    .users(app, &name)
                    .iter()
                    .map(|u| format!(r#"{{"id":{}}}"#, pusher::quote(u)))
                    .collect();
                Answer::Reply(Reply::json(
                    200,
                    format!(r#"{{"users":[{}]}}"#, users.join(",")).into_bytes(),
                ))
            }
        }
    }

    /// Publishes every (event, channel) and answers once every worker has them queued.
    fn publish_all<'b>(
        &self,
        app: AppIdx,
        events: &[Publish],
        body: String,
        cx: &Context<'_>,
    ) -> Answer<'b> {
        let stats = &self.hub.stats[usize::from(app)];
        let count: usize = events.iter().map(|e| e.channels.len()).sum();
        let ack = self.hub.ack(count, self.index, cx.conn, body);
        for e in events {
            for channel in &e.channels {
                let kind = names::classify(channel).expect("checked by api::parse");
                let frame = pusher::frame(&pusher::event(&e.name, channel, &e.data_json, None));
                stats.events_api.fetch_add(1, Ordering::Relaxed);
                self.hub.publish(
                    app,
                    channel,
                    frame,
                    kind.cache,
                    e.exclude,
                    Some(Arc::clone(&ack)),
                    self.index,
                );
            }
        }
        Answer::Later
    }
}

/// The body of a publish's 200: `{}`, or the occupancy the events asked for with `info`.
fn info_body(hub: &Hub, app: AppIdx, events: &[Publish], batch: bool) -> String {
    if !events.iter().any(|e| e.info != api::Info::default()) {
        return "{}".into();
    }
    let one = |e: &Publish| -> String {
        let parts: Vec<String> = e
            .channels
            .iter()
            .map(|c| {
                format!(
                    "{}:{}",
                    pusher::quote(c),
                    occupancy_json(&hub.occupancy(app, c), e.info, None)
                )
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    };
    if batch {
        let items: Vec<String> = events
            .iter()
            .map(|e| {
                if e.info == api::Info::default() {
                    "{}".into()
                } else {
                    let c = &e.channels[0];
                    occupancy_json(&hub.occupancy(app, c), e.info, None)
                }
            })
            .collect();
        format!(r#"{{"batch":[{}]}}"#, items.join(","))
    } else {
        format!(r#"{{"channels":{}}}"#, one(&events[0]))
    }
}

fn occupancy_json(o: &Occupancy, info: api::Info, occupied: Option<bool>) -> String {
    let mut parts = Vec::new();
    if let Some(b) = occupied {
        parts.push(format!(r#""occupied":{b}"#));
    }
    if info.subscription_count {
        parts.push(format!(r#""subscription_count":{}"#, o.subscription_count));
    }
    if info.user_count {
        parts.push(format!(r#""user_count":{}"#, o.user_count));
    }
    format!("{{{}}}", parts.join(","))
}
