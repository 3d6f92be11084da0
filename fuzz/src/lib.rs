//! Shared pieces of holdfast's fuzz targets (`fuzz_targets/*.rs`): what each target's input
//! decodes into, small reference implementations the targets compare holdfast against, the
//! engine simulation that drives a sans-I/O session the way `engine::worker` does, and the input
//! grammars that turn fuzzer bytes into request and frame streams. Each module owns one of these;
//! README.md says what each target checks and why.

pub mod drive;
pub mod env;
pub mod heap;
pub mod inputs;
pub mod outputs;
pub mod ref_chunked;
pub mod ref_head;
pub mod ref_ws;
pub mod seeds;
pub mod splits;
pub mod stream;
