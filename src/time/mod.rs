//! Time for the engine and the logs: the hierarchical timing wheel that drives every timeout and
//! heartbeat, and the calendar arithmetic behind `Date` headers and log timestamps.

pub mod civil;
pub mod wheel;
