//! Owns holdfast's channels (CHANNELS.md): the Pusher Channels protocol 7 on WebSocket at
//! `/app/{key}` and the Pusher HTTP API at `/apps/{id}/…`. Pure parts (names, signatures,
//! protocol JSON, API checks) are apart from the node's shared state ([`hub`]) and each
//! worker's index of its own subscribers ([`worker`]).

pub mod api;
pub mod auth;
pub mod bus;
pub mod cluster;
pub mod hub;
pub mod names;
pub mod peers;
pub mod pusher;
pub mod sse;
pub mod stats;
pub mod worker;

pub use hub::Hub;
pub use worker::ChannelsWorker;

/// The route of the channels' event streams, as the HTTP layer hands it back.
pub const ROUTE_EVENTS: u16 = 3;

/// Whether a request path is the Pusher WebSocket endpoint `/app/{key}`.
pub fn is_socket_path(path: &[u8]) -> bool {
    path.strip_prefix(b"/app/")
        .is_some_and(|key| !key.is_empty() && !key.contains(&b'/'))
}
