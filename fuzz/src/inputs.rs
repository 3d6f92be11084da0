//! Owns what each target's input decodes into (through `arbitrary`, whose layout the seeds in
//! `seeds/` follow: see `seeds.rs`). Kept in the library rather than in the targets so that the
//! seed files can be checked to decode as intended.
//!
//! The protocol bytes of an input are its last field, a `&[u8]` that takes the rest of the input
//! as it is: a seed is a few bytes of settings followed by a request, a body or frames as they
//! go on the wire, and the fuzzer's byte-level mutations (and the tokens it learns from
//! comparisons) land on the protocol bytes directly. (A `Vec<u8>` would interleave a
//! continuation byte with every byte.)

use crate::env::Knobs;
use crate::stream::{HttpEvent, WsEvent};
use arbitrary::Arbitrary;

/// `http_head`.
#[derive(Arbitrary, Debug)]
pub struct HeadInput<'a> {
    /// 0 (mod 4): the defaults; otherwise small limits from the two numbers.
    pub limits: u8,
    pub max_header: u16,
    pub max_target: u16,
    /// Where to cut for the prefix checks.
    pub cuts: [u16; 3],
    pub bytes: &'a [u8],
}

/// `chunked`.
#[derive(Arbitrary, Debug)]
pub struct ChunkedInput<'a> {
    /// 0: the default 1 MiB; 1: no limit; 2: `small`; 3: a Content-Length body of `small`.
    pub mode: u8,
    pub small: u16,
    /// Piece lengths (`splits::pieces`); none: one byte at a time.
    pub cuts: Vec<u8>,
    pub bytes: &'a [u8],
}

/// `ws_frames`: one of the codec pieces per run.
#[derive(Arbitrary, Debug)]
pub enum FramesInput<'a> {
    Header {
        cuts: [u8; 2],
        bytes: &'a [u8],
    },
    Unmask {
        mask: [u8; 4],
        cuts: Vec<u8>,
        payload: &'a [u8],
    },
    Utf8 {
        cuts: Vec<u8>,
        bytes: &'a [u8],
    },
    Inflate {
        takeover: bool,
        cap: u32,
        messages: Vec<Compressed>,
    },
    Deflate {
        snct: bool,
        cnct: bool,
        bits: u8,
        messages: Vec<Vec<u8>>,
    },
    Negotiate {
        allow: bool,
        values: Vec<Vec<u8>>,
    },
}

/// A compressed message for `ws_frames`: raw bytes, or real deflate data (maybe a bomb, maybe
/// damaged).
#[derive(Arbitrary, Debug)]
pub enum Compressed {
    Raw(Vec<u8>),
    Deflated {
        plain: Vec<u8>,
        /// `count << (shift % 10)` more copies of a byte (up to 128 KiB: past the caps tried, and
        /// cheap enough to run millions of times), appended to `plain`.
        fill: Option<(u8, u8, u8)>,
        /// XOR one byte (at `pos % len`) with this.
        damage: Option<(u16, u8)>,
    },
}

/// `http1_conn`: a list of events built from the request grammar, or a client's byte stream as
/// it is (the form of the seeds), sent in one event.
#[derive(Arbitrary, Debug)]
pub enum Http1Input<'a> {
    Events {
        knobs: Knobs,
        /// Piece lengths are multiplied by 1, 7, 64 or 1024.
        scale: u8,
        cuts: Vec<u8>,
        events: Vec<HttpEvent>,
    },
    Stream {
        knobs: Knobs,
        scale: u8,
        cuts: Vec<u8>,
        bytes: &'a [u8],
    },
}

/// `h2_conn`: an HTTP/2 client's byte stream after its preface (which the target adds).
#[derive(Arbitrary, Debug)]
pub struct H2Input<'a> {
    pub knobs: Knobs,
    pub scale: u8,
    pub cuts: Vec<u8>,
    pub bytes: &'a [u8],
}

/// `ws_conn`: the same two forms, for a WebSocket connection with the given
/// permessage-deflate parameters.
#[derive(Arbitrary, Debug)]
pub enum WsInput<'a> {
    Events {
        knobs: Knobs,
        /// server_no_context_takeover, client_no_context_takeover, window bits.
        deflate: Option<(bool, bool, u8)>,
        scale: u8,
        cuts: Vec<u8>,
        events: Vec<WsEvent>,
    },
    Stream {
        knobs: Knobs,
        deflate: Option<(bool, bool, u8)>,
        scale: u8,
        cuts: Vec<u8>,
        bytes: &'a [u8],
    },
}

/// `channels`: which parser of `app::channels` gets the bytes.
#[derive(Arbitrary, Debug)]
pub enum ChannelsInput<'a> {
    /// A client's WebSocket message (`pusher::parse`), and a channel name (`names::classify`).
    Message(&'a [u8]),
    /// A datagram between server processes (`bus::decode`).
    Datagram(&'a [u8]),
    /// An HTTP API request (`api::parse`): a method byte, a byte whose low bit asks for a valid
    /// signature (so the checks behind it are reached), then `path LF query LF body`.
    Api(&'a [u8]),
}
