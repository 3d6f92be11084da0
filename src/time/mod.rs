//! Time for the engine: the hierarchical timing wheel that drives every timeout and heartbeat.

pub mod wheel;
