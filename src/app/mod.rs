//! Owns what requests and messages mean (DESIGN §2a): the applications that the protocols hand
//! their parsed requests and messages to, through the `proto::handler` traits. Routing by path
//! is here: the built-in endpoints, the WebSocket echo at `/ws`, and the channels (the Pusher
//! WebSocket protocol at `/app/{key}`, the Pusher HTTP API at `/apps/{id}/…`, Server-Sent
//! Events at `/app/{key}/events`).

pub mod channels;
pub mod echo;
pub mod endpoints;

use crate::config::Config;
use crate::outcome::CloseReason;
use crate::proto::Context;
use crate::proto::handler::{
    Application, Drain, Handler, ProcessPlace, StreamDrain, Waker, Work, WorkerPlace, WsVerdict,
};
use crate::proto::http1::exchange::{Answer, Request};
use crate::proto::ws::Sender;
use channels::{ChannelsWorker, Hub};
use std::sync::{Arc, OnceLock};

/// The WebSocket routes, as the HTTP layer hands them back with each message.
pub const ROUTE_ECHO: u16 = 1;
pub const ROUTE_CHANNELS: u16 = 2;
/// The event-stream route (Server-Sent Events of the channels).
pub use channels::ROUTE_EVENTS;

/// The path that upgrades to the WebSocket echo.
const ECHO_PATH: &[u8] = b"/ws";

/// The node-wide application: everything workers share.
pub struct Node {
    apps: Vec<crate::config::AppConfig>,
    channels: crate::config::ChannelsConfig,
    cluster: crate::config::ClusterConfig,
    hub: OnceLock<Arc<Hub>>,
}

impl Node {
    pub fn new(config: &Config) -> Node {
        Node {
            apps: config.effective_apps(),
            channels: config.channels.clone(),
            cluster: config.cluster.clone(),
            hub: OnceLock::new(),
        }
    }
}

impl Application for Node {
    fn start(&self, place: ProcessPlace, workers: usize, wakers: Vec<Waker>) -> Result<(), String> {
        let hub = Arc::new(Hub::new(self.apps.clone(), &self.channels, workers));
        hub.set_wakers(&wakers);
        if !self.cluster.redis.is_empty() {
            // Every process is a cluster member of its own: Redis joins the siblings too.
            channels::cluster::start(&hub, &self.cluster, &self.channels)?;
        } else if place.count > 1 {
            channels::peers::start(&hub, place.group, place.index as u16, place.count)?;
        }
        let _ = self.hub.set(hub);
        Ok(())
    }

    fn worker(&self, place: WorkerPlace) -> Box<dyn Handler> {
        let hub = Arc::clone(
            self.hub
                .get_or_init(|| Arc::new(Hub::new(self.apps.clone(), &self.channels, 1))),
        );
        Box::new(WorkerApp {
            channels: ChannelsWorker::new(hub, place.index, place.process),
        })
    }
}

/// One worker's share of the application.
pub struct WorkerApp {
    channels: ChannelsWorker,
}

impl WorkerApp {
    /// A single worker's application on its own (the default app, no other workers), for
    /// tests of the protocols and the fuzz targets.
    pub fn standalone() -> WorkerApp {
        let config = Config::default();
        let hub = Arc::new(Hub::new(config.effective_apps(), &config.channels, 1));
        WorkerApp {
            channels: ChannelsWorker::new(hub, 0, 0),
        }
    }
}

impl Handler for WorkerApp {
    fn request<'b>(&self, req: &Request<'b>, cx: &Context<'_>) -> Answer<'b> {
        if req.path == ECHO_PATH {
            return Answer::Upgrade { route: ROUTE_ECHO };
        }
        if channels::is_socket_path(req.path) {
            return Answer::Upgrade {
                route: ROUTE_CHANNELS,
            };
        }
        if channels::api::is_api(req.path) {
            return self.channels.api(req, cx);
        }
        if channels::sse::is_stream_path(req.path) {
            return match self.channels.stream_request(req, cx) {
                Ok(true) => Answer::Stream {
                    route: ROUTE_EVENTS,
                },
                // It waits for the cluster's history; the worker starts it then.
                Ok(false) => Answer::Later,
                Err(reply) => Answer::Reply(reply),
            };
        }
        Answer::Reply(endpoints::route(req, cx, Some(self.channels.hub())))
    }

    fn ws_open(
        &self,
        route: u16,
        target: &[u8],
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) -> WsVerdict {
        match route {
            ROUTE_CHANNELS => self.channels.open(target, cx, tx),
            _ => WsVerdict::Continue,
        }
    }

    fn ws_message(
        &self,
        route: u16,
        text: bool,
        payload: &[u8],
        cx: &Context<'_>,
        tx: &mut Sender<'_>,
    ) -> WsVerdict {
        match route {
            ROUTE_CHANNELS => self.channels.message(text, payload, cx, tx),
            _ => echo::on_message(text, payload, tx),
        }
    }

    fn ws_drain(&self, route: u16, cx: &Context<'_>) -> Drain {
        match route {
            ROUTE_CHANNELS => self.channels.drain(cx),
            _ => echo::DRAIN,
        }
    }

    fn stream_open(&self, route: u16, _target: &[u8], cx: &Context<'_>, out: &mut Vec<u8>) -> bool {
        route == ROUTE_EVENTS && self.channels.stream_open(cx, out)
    }

    fn stream_drain(&self, _route: u16, cx: &Context<'_>) -> StreamDrain {
        self.channels.stream_drain(cx)
    }

    fn closed(&self, cx: &Context<'_>, reason: CloseReason) {
        self.channels.closed(cx, reason);
    }

    fn poll(&self, _cx: &Context<'_>) {
        self.channels.poll();
    }

    fn take_work(&self, into: &mut Vec<Work>) {
        self.channels.take_work(into);
    }

    /// The Pusher HTTP API answers every refusal in JSON (CHANNELS.md §3), and so do event
    /// streams refused before they start.
    fn json_errors(&self, path: &[u8]) -> bool {
        channels::api::is_api(path) || channels::sse::is_stream_path(path)
    }
}
