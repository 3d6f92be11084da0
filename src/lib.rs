//! holdfast: a server for very many long-lived HTTP/1.1, WebSocket and TLS connections on
//! io_uring, one event loop per core. See DESIGN.md for the data flow: the engine owns the ring
//! and the sockets; everything under `proto` is sans-I/O.

pub mod app;
pub mod config;
pub mod engine;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod proto;
pub mod signals;
pub mod time;
pub mod tune;
