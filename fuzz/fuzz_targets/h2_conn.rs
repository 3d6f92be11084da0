//! The HTTP/2 connection (`proto::Session::H2`) fed a client's byte stream (the target puts
//! the preface in front) with the engine simulated by `drive`, whole and cut in pieces.
//!
//! Checks, beyond "no panic": split invariance (fed in pieces cut where the input says, the
//! session sends exactly what it sends when every read is whole and ends for the same reason),
//! and the bounds `drive` checks after every call (output within `OUTPUT_CAP` plus one
//! response, a heap that does not grow with the stream).
#![no_main]

use holdfast::proto::Session;
use holdfast::proto::h2::H2Conn;
use holdfast::proto::h2::frame::PREFACE;
use holdfast_fuzz::drive::{self, Event};
use holdfast_fuzz::env::{self, Env, metrics_pair};
use holdfast_fuzz::inputs::H2Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: H2Input<'_>| {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(input.bytes);
    let events = vec![Event::Data(bytes)];
    let env = Env::new(input.knobs.config());
    let scale = [1, 7, 64, 1024][usize::from(input.scale % 4)];
    let (m_whole, m_split) = metrics_pair();
    let new = || Session::H2(Box::new(H2Conn::new(0)));
    let whole = drive::run(&env, m_whole, new(), 0, &events, None);
    let split = drive::run(&env, m_split, new(), 0, &events, Some((&input.cuts, scale)));
    if whole.sink != split.sink {
        let (w, s) = (frames(&whole.sink), frames(&split.sink));
        let at = w.iter().zip(&s).position(|(a, b)| a != b).unwrap_or(w.len().min(s.len()));
        panic!(
            "output differs at frame {at}:\nwhole: {:?}\nsplit: {:?}",
            &w[at.saturating_sub(2)..(at + 3).min(w.len())],
            &s[at.saturating_sub(2)..(at + 3).min(s.len())]
        );
    }
    assert_eq!(whole.close, split.close, "close reason");
    assert!(
        env::counters(m_whole) == env::counters(m_split),
        "metrics differ between whole and pieces"
    );
});

/// The server's frames as (type, flags, stream, payload length, first bytes of the payload).
fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, usize, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(h) = holdfast::proto::h2::frame::Head::parse(b) {
        let end = (9 + h.len).min(b.len());
        out.push((h.kind, h.flags, h.stream, h.len, b[9..end.min(9 + 16)].to_vec()));
        b = &b[end..];
    }
    out
}
