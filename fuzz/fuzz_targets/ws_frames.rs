//! The WebSocket codec pieces: `proto::ws::frame` (header parsing, writing, unmasking),
//! `proto::ws::utf8` (incremental validation) and `proto::ws::deflate` (negotiation, capped
//! inflate, deflate). The input picks one of them per run.
//!
//! Checks, beyond "no panic":
//! - header: the fields agree with a plain bit-by-bit decode; the header re-encodes (with its
//!   mask) to one that parses the same; every shorter prefix needs more; a 64-bit length with
//!   the top bit set, and only that, is refused;
//! - unmask: in any pieces, with the offset carried over, it equals a byte-wise XOR;
//! - UTF-8: fed in any pieces, the validator says "still valid" exactly while the bytes so far
//!   are a prefix of some UTF-8 text, and "complete" exactly when they are UTF-8 text
//!   (`std::str::from_utf8` is the reference);
//! - inflate: with and without context takeover, each message agrees with flate2's raw inflate
//!   (the same outcome and the same bytes up to the cap), never appends more than the cap (plus
//!   the one byte that detects going over), and never reserves more than that;
//! - deflate: what the server sends inflates back to the message with an inflater limited to
//!   the negotiated window (RFC 7692 §7.1.2.1), keeping context exactly when negotiated, and no
//!   context is held by a connection without takeover;
//! - negotiation: an accepted offer yields parameters in range, both `*_no_context_takeover`
//!   unless takeover is allowed, and a response that, read back as an offer, gives the same.
#![no_main]

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use holdfast::proto::ws::deflate::{self, Deflate, InflateError, Params, Scratch};
use holdfast::proto::ws::frame::{self, BadLength, FrameHeader};
use holdfast::proto::ws::utf8::Utf8Validator;
use holdfast_fuzz::inputs::{Compressed, FramesInput as Input};
use holdfast_fuzz::ref_ws::{InflateStop, Inflater};
use holdfast_fuzz::splits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Input<'_>| match input {
    Input::Header { cuts, bytes } => header(&cuts, bytes),
    Input::Unmask {
        mask,
        cuts,
        payload,
    } => unmask(mask, &cuts, payload),
    Input::Utf8 { cuts, bytes } => utf8(&cuts, bytes),
    Input::Inflate {
        takeover,
        cap,
        messages,
    } => inflate(takeover, cap, &messages),
    Input::Deflate {
        snct,
        cnct,
        bits,
        messages,
    } => deflate_round_trip(snct, cnct, bits, &messages),
    Input::Negotiate { allow, values } => negotiate(allow, &values),
});

/// The header read bit by bit (RFC 6455 §5.2).
fn reference_header(b: &[u8]) -> Result<Option<FrameHeader>, BadLength> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (len_bytes, small) = match b[1] & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    if b.len() < 2 + len_bytes {
        return Ok(None);
    }
    let payload_len = small.unwrap_or_else(|| {
        b[2..2 + len_bytes]
            .iter()
            .fold(0u64, |n, &x| (n << 8) | u64::from(x))
    });
    if payload_len >= 1 << 63 {
        return Err(BadLength);
    }
    let masked = b[1] >= 0x80;
    let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
    if b.len() < header_len {
        return Ok(None);
    }
    Ok(Some(FrameHeader {
        fin: b[0] >= 0x80,
        rsv: (b[0] >> 4) & 7,
        opcode: b[0] & 15,
        mask: masked.then(|| b[2 + len_bytes..header_len].try_into().unwrap()),
        payload_len,
        header_len,
    }))
}

fn header(cuts: &[u8; 2], bytes: &[u8]) {
    let parsed = frame::parse_header(bytes);
    assert_eq!(parsed, reference_header(bytes));
    let Ok(Some(h)) = parsed else { return };
    for cut in cuts
        .iter()
        .map(|&c| usize::from(c))
        .chain([h.header_len - 1])
    {
        if cut < h.header_len {
            assert_eq!(
                frame::parse_header(&bytes[..cut]),
                Ok(None),
                "prefix of {cut}"
            );
        }
    }
    let mut again = Vec::new();
    frame::write_header(&mut again, h.fin, h.rsv, h.opcode, h.payload_len as usize);
    if let Some(mask) = h.mask {
        again[1] |= 0x80;
        again.extend_from_slice(&mask);
    }
    let reparsed = frame::parse_header(&again).unwrap().unwrap();
    assert_eq!(reparsed.header_len, again.len());
    assert_eq!(
        FrameHeader {
            header_len: h.header_len,
            ..reparsed
        },
        h
    );
    if reparsed.header_len == h.header_len {
        // The input used the shortest length encoding: the same bytes come back.
        assert_eq!(&bytes[..h.header_len], &again[..]);
    }
}

fn unmask(mask: [u8; 4], cuts: &[u8], payload: &[u8]) {
    let expected: Vec<u8> = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    let mut out = b"kept".to_vec();
    let mut offset = 0;
    for piece in splits::pieces(payload, cuts, 1) {
        frame::unmask_into(&mut out, piece, mask, offset);
        offset += piece.len();
    }
    assert_eq!(&out[..4], b"kept");
    assert_eq!(&out[4..], &expected[..]);
    frame::unmask_in_place(&mut out[4..], mask, 0);
    assert_eq!(&out[4..], payload);
}

fn utf8(cuts: &[u8], bytes: &[u8]) {
    let is_prefix_of_text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    let mut v = Utf8Validator::default();
    let mut seen = 0;
    for piece in splits::pieces(bytes, cuts, 1) {
        seen += piece.len();
        let ok = v.feed(piece);
        assert_eq!(ok, is_prefix_of_text(&bytes[..seen]), "after {seen} bytes");
        if !ok {
            return;
        }
        assert_eq!(
            v.is_complete(),
            std::str::from_utf8(&bytes[..seen]).is_ok(),
            "complete after {seen} bytes"
        );
    }
    assert_eq!(v.is_complete(), std::str::from_utf8(bytes).is_ok());
}

fn inflate(takeover: bool, cap: u32, messages: &[Compressed]) {
    let cap = match cap % 4 {
        0 => 0,
        1 => (cap >> 2) as usize % 4096,
        2 => 1 << 16,
        _ => 1 << 20,
    };
    let params = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: !takeover,
        server_max_window_bits: 15,
    };
    let mut d = Deflate::new(params);
    let mut scratch = Scratch::default();
    let mut reference = Inflater::new(!takeover);
    let mut client = Compress::new(Compression::fast(), false);
    for m in messages {
        let wire = match m {
            Compressed::Raw(b) => b.clone(),
            Compressed::Deflated {
                plain,
                fill,
                damage,
            } => {
                let mut plain = plain.clone();
                if let Some((b, n, shift)) = fill {
                    plain.resize(plain.len() + (usize::from(*n) << (shift % 10)), *b);
                }
                if !takeover {
                    client.reset();
                }
                let mut wire = compress(&mut client, &plain);
                if let Some((pos, x)) = damage
                    && !wire.is_empty()
                {
                    let i = usize::from(*pos) % wire.len();
                    wire[i] ^= x;
                }
                wire
            }
        };
        let mut out = b"abc".to_vec();
        let initial_capacity = out.capacity();
        let got = d.inflate(&mut scratch, &wire, &mut out, cap);
        let (expected, stop) = reference.inflate_detailed(&wire, cap);
        assert!(
            out.capacity() <= initial_capacity.max(3 + cap + 1),
            "reserved {} for a cap of {cap}",
            out.capacity()
        );
        assert_eq!(&out[..3], b"abc", "inflate must append");
        let produced = &out[3..];
        match (stop, got) {
            (None, Ok(())) => assert_eq!(produced, &expected[..]),
            (Some(InflateStop::TooBig), Err(InflateError::TooBig)) => {
                assert!(produced.len() <= cap + 1);
                assert_eq!(produced[..cap], expected[..cap]);
            }
            (Some(InflateStop::Corrupt), Err(InflateError::Corrupt)) => {}
            (stop, got) => panic!("reference {stop:?}, holdfast {got:?}"),
        }
        if got.is_err() {
            // The connection fails; its inflater is never used again.
            return;
        }
    }
}

/// Raw deflate, sync flush, without the 4-byte tail.
fn compress(c: &mut Compress, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + 64);
    let start = c.total_in();
    loop {
        let used = (c.total_in() - start) as usize;
        c.compress_vec(&plain[used..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (c.total_in() - start) as usize == plain.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

fn deflate_round_trip(snct: bool, cnct: bool, bits: u8, messages: &[Vec<u8>]) {
    let bits = 9 + bits % 7;
    let params = Params {
        server_no_context_takeover: snct,
        client_no_context_takeover: cnct,
        server_max_window_bits: bits,
    };
    let mut d = Deflate::new(params);
    let mut scratch = Scratch::default();
    // The client: an inflater with the window the server promised not to exceed.
    let mut client = Decompress::new_with_window_bits(false, bits);
    for m in messages {
        if snct {
            client.reset(false);
        }
        let mut wire = Vec::new();
        d.deflate(&mut scratch, m, &mut wire);
        if snct && cnct {
            assert!(
                !d.holds_context(),
                "a connection without takeover holds a context"
            );
        }
        wire.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut back = Vec::with_capacity(m.len() + 64);
        let start_in = client.total_in();
        loop {
            let used = (client.total_in() - start_in) as usize;
            let before = client.total_out();
            client
                .decompress_vec(&wire[used..], &mut back, FlushDecompress::Sync)
                .expect("the server's deflate data inflates within its window");
            let used = (client.total_in() - start_in) as usize;
            if used == wire.len() && back.len() < back.capacity() {
                break;
            }
            if client.total_out() == before && back.len() < back.capacity() {
                panic!("the client's inflater is stuck");
            }
            back.reserve(back.capacity().max(64));
        }
        assert_eq!(&back, m, "round trip");
    }
}

fn negotiate(allow: bool, values: &[Vec<u8>]) {
    let Some((p, response)) = deflate::negotiate(values.iter().map(|v| &v[..]), allow) else {
        return;
    };
    assert!((9..=15).contains(&p.server_max_window_bits));
    if !allow {
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    }
    assert!(response.starts_with("permessage-deflate"));
    // The answer is a valid offer of exactly what it grants.
    let again = deflate::negotiate([response.as_bytes()], true);
    assert_eq!(again, Some((p, response)));
}
