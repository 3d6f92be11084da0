//! `proto::http1::body::BodyDecoder` on arbitrary bytes, checked against `ref_chunked` (a plain
//! whole-input decoder) and against itself fed in pieces.
//!
//! Checks: the same decision as the reference (done after the same number of bytes, need more,
//! malformed, too large), the same decoded bytes in every case, the same outcome however the
//! input is cut (the caller drops consumed bytes and feeds the rest, as the connection does),
//! sticky errors, and nothing consumed once done. Content-Length bodies get the same split
//! check against the obvious answer.
#![no_main]

use holdfast::proto::http1::body::{BodyDecoder, BodyError, Decoded};
use holdfast::proto::http1::request::BodyFraming;
use holdfast_fuzz::inputs::ChunkedInput;
use holdfast_fuzz::ref_chunked::{self, Outcome};
use holdfast_fuzz::splits;
use libfuzzer_sys::fuzz_target;

type Result = std::result::Result<Decoded, BodyError>;

/// Feeds `pieces` the way the connection does: until done or an error, dropping what each call
/// consumed; returns the outcome with the total consumed, and the body.
fn feed<'a>(
    framing: BodyFraming,
    max: u64,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> (Result, Vec<u8>) {
    let mut d = BodyDecoder::new(framing, max);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut done = d.is_done();
    // A last empty read, as a connection makes when it resumes: it must change nothing (and a
    // body refused up front is refused even then).
    for piece in pieces.chain([&[][..]]) {
        if done {
            break;
        }
        match d.decode(piece, &mut body) {
            Err(e) => {
                // Sticky.
                assert_eq!(d.decode(b"0\r\n\r\n", &mut Vec::new()), Err(e));
                return (Err(e), body);
            }
            Ok(r) => {
                assert!(r.consumed <= piece.len());
                assert!(
                    r.done || r.consumed == piece.len(),
                    "stopped short without done"
                );
                consumed += r.consumed;
                done = r.done;
            }
        }
    }
    if done {
        assert_eq!(
            d.decode(b"more", &mut body),
            Ok(Decoded {
                consumed: 0,
                done: true
            })
        );
    }
    (Ok(Decoded { consumed, done }), body)
}

fuzz_target!(|input: ChunkedInput<'_>| {
    let data = input.bytes;
    let small = u64::from(input.small);
    let (framing, max) = match input.mode % 4 {
        0 => (BodyFraming::Chunked, 1 << 20),
        1 => (BodyFraming::Chunked, u64::MAX),
        2 => (BodyFraming::Chunked, small),
        _ => (BodyFraming::Length(small), 1 << 12),
    };
    let whole = feed(framing, max, std::iter::once(data));
    let split = feed(framing, max, splits::pieces(data, &input.cuts, 1));
    assert_eq!(split, whole, "fed in pieces vs whole");

    let (result, body) = whole;
    let (expected, expected_body) = match framing {
        BodyFraming::Length(n) if n > max => (Outcome::TooLarge, Vec::new()),
        BodyFraming::Length(n) => {
            let take = (n as usize).min(data.len());
            let outcome = if take as u64 == n {
                Outcome::Done { consumed: take }
            } else {
                Outcome::Partial
            };
            (outcome, data[..take].to_vec())
        }
        _ => ref_chunked::decode(data, max),
    };
    match (expected, result) {
        (Outcome::Done { consumed }, Ok(r)) => assert_eq!(
            r,
            Decoded {
                consumed,
                done: true
            }
        ),
        (Outcome::Partial, Ok(r)) => assert_eq!(
            r,
            Decoded {
                consumed: data.len(),
                done: false
            }
        ),
        (Outcome::BadChunk, Err(BodyError::BadChunk(_))) => {}
        (Outcome::TooLarge, Err(BodyError::TooLarge)) => {}
        (expected, got) => panic!("reference {expected:?}, decoder {got:?}"),
    }
    assert_eq!(body, expected_body, "decoded bytes");
});
