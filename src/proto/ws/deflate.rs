//! Owns permessage-deflate (RFC 7692): negotiating its parameters from the client's offers,
//! inflating received messages with a hard cap on the output (a decompression bomb is a 1009,
//! never unbounded memory), and deflating outgoing ones above a size threshold.
//!
//! Memory is the design constraint. A connection without context takeover holds no compression
//! state at all: every message is independent, so one inflater and one deflater per worker
//! (`Scratch`) serve all such connections in turn. Only a connection that keeps context (the
//! client did not offer `*_no_context_takeover`) gets its own boxed inflater/deflater, whose
//! windows are bounded by the negotiated window bits.

use crate::proto::text::trim_ows as trim;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Messages shorter than this are sent uncompressed: deflate's framing would outweigh it.
pub const COMPRESS_THRESHOLD: usize = 128;
/// Fast compression: for an echo server CPU per message matters more than the last few percent.
const LEVEL: u32 = 1;
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// We reset our compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so we may reset our inflater.
    pub client_no_context_takeover: bool,
    /// The LZ77 window we compress with (9–15).
    pub server_max_window_bits: u8,
}

/// Picks the first acceptable `permessage-deflate` offer from the values of every
/// `Sec-WebSocket-Extensions` header; returns the parameters and the response header value.
/// Without `allow_takeover` the response always carries both `*_no_context_takeover`
/// parameters, which a server may add to any offer (RFC 7692 §7.1.1.1, §7.1.1.2), so that no
/// connection keeps compression state.
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    allow_takeover: bool,
) -> Option<(Params, String)> {
    for value in headers {
        for offer in split_unquoted(value, b',') {
            if let Some(accepted) = accept_offer(offer, allow_takeover) {
                return Some(accepted);
            }
        }
    }
    None
}

/// RFC 7692 §7.1: an offer with an unknown, repeated or malformed parameter is declined (and
/// we move on to the next one).
fn accept_offer(offer: &[u8], allow_takeover: bool) -> Option<(Params, String)> {
    let mut parts = split_unquoted(offer, b';').map(trim);
    if !parts.next()?.eq_ignore_ascii_case(b"permessage-deflate") {
        return None;
    }
    let mut p = Params {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
    };
    let (mut seen_snct, mut seen_cnct, mut seen_smwb, mut seen_cmwb) = (false, false, false, false);
    let mut client_bits: Option<u8> = None;
    for param in parts {
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&param[..i]), Some(unquote(trim(&param[i + 1..])))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        match (name.as_slice(), value) {
            (b"server_no_context_takeover", None) if !seen_snct => {
                seen_snct = true;
                p.server_no_context_takeover = true;
            }
            (b"client_no_context_takeover", None) if !seen_cnct => {
                seen_cnct = true;
                p.client_no_context_takeover = true;
            }
            (b"server_max_window_bits", Some(v)) if !seen_smwb => {
                seen_smwb = true;
                p.server_max_window_bits = window_bits(v)?;
            }
            (b"client_max_window_bits", v) if !seen_cmwb => {
                seen_cmwb = true;
                if let Some(v) = v {
                    client_bits = Some(window_bits(v)?);
                }
            }
            _ => return None,
        }
    }
    // zlib cannot compress with an 8-bit window (it silently uses 9), which a client holding
    // us to 8 could not inflate: decline rather than break the limit.
    if p.server_max_window_bits < 9 {
        return None;
    }
    if !allow_takeover {
        p.server_no_context_takeover = true;
        p.client_no_context_takeover = true;
    }
    let mut resp = String::from("permessage-deflate");
    if p.server_no_context_takeover {
        resp.push_str("; server_no_context_takeover");
    }
    if p.client_no_context_takeover {
        resp.push_str("; client_no_context_takeover");
    }
    if seen_smwb {
        resp.push_str(&format!(
            "; server_max_window_bits={}",
            p.server_max_window_bits
        ));
    }
    if let Some(b) = client_bits {
        // The client offered to limit its own window: accepting the value as offered.
        resp.push_str(&format!("; client_max_window_bits={b}"));
    }
    Some((p, resp))
}

fn window_bits(v: &[u8]) -> Option<u8> {
    // §7.1.2: 1*DIGIT from 8 to 15, no leading zeros.
    match v {
        [d] if (b'8'..=b'9').contains(d) => Some(d - b'0'),
        [b'1', d] if (b'0'..=b'5').contains(d) => Some(10 + d - b'0'),
        _ => None,
    }
}

fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(v: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    v.split(move |&b| {
        if b == b'"' {
            quoted = !quoted;
        }
        b == sep && !quoted
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The output passed the cap: 1009.
    TooBig,
    /// Not a valid deflate stream: 1007 (RFC 7692 §8, "invalid data").
    Corrupt,
}

/// A connection's deflate state: parameters always, contexts only when taken over.
pub struct Deflate {
    pub params: Params,
    inflater: Option<Box<Decompress>>,
    deflater: Option<Box<Compress>>,
}

/// Per-worker contexts shared by every connection without context takeover, plus a buffer.
pub struct Scratch {
    inflater: Decompress,
    /// One deflater per window size that has been negotiated (index = bits - 9).
    deflaters: [Option<Compress>; 7],
    /// A single-frame message's unmasked payload.
    pub buf: Vec<u8>,
    /// A compressed message, inflated.
    pub plain: Vec<u8>,
    /// An echo, deflated.
    pub packed: Vec<u8>,
}

/// Buffers larger than this go back to the allocator instead of the scratch, so that one big
/// message does not pin its memory in the worker for good.
const KEEP_MAX: usize = 256 * 1024;

impl Scratch {
    /// Lends out one of the buffers above, empty.
    pub fn lend(slot: &mut Vec<u8>) -> Vec<u8> {
        let mut v = std::mem::take(slot);
        v.clear();
        v
    }

    /// Takes a lent buffer back, unless it grew past `KEEP_MAX`.
    pub fn keep(slot: &mut Vec<u8>, v: Vec<u8>) {
        if v.capacity() <= KEEP_MAX {
            *slot = v;
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            inflater: Decompress::new_with_window_bits(false, 15),
            deflaters: Default::default(),
            buf: Vec::new(),
            plain: Vec::new(),
            packed: Vec::new(),
        }
    }
}

impl Deflate {
    pub fn new(params: Params) -> Deflate {
        Deflate {
            params,
            inflater: None,
            deflater: None,
        }
    }

    /// The message just deflated goes out uncompressed after all (compressing did not make it
    /// smaller). With context takeover the peer's inflater never sees it, so our deflater must
    /// not refer back to it: its context is reset (the peer keeping more history than we use
    /// is harmless; us using history the peer lacks breaks every later message). Without
    /// takeover nothing is kept, so there is nothing to do.
    pub fn not_sent(&mut self) {
        if !self.params.server_no_context_takeover
            && let Some(c) = self.deflater.as_mut()
        {
            c.reset();
        }
    }

    /// Whether this connection holds compression contexts of its own (only with takeover).
    pub fn holds_context(&self) -> bool {
        self.inflater.is_some() || self.deflater.is_some()
    }

    /// Inflates one whole message (`input` is its compressed payload, all frames joined),
    /// appending at most `cap` bytes to `out`.
    pub fn inflate(
        &mut self,
        scratch: &mut Scratch,
        input: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<(), InflateError> {
        if input.is_empty() {
            // Not what RFC 7692 prescribes for an empty message (0x00), but unambiguous: nothing
            // to inflate, and feeding a lone tail would corrupt a kept context.
            return Ok(());
        }
        if self.params.client_no_context_takeover {
            let d = &mut scratch.inflater;
            d.reset(false);
            inflate_into(d, input, out, cap)
        } else {
            // Inflating always uses a 15-bit window: it decodes any smaller window too.
            let d = self
                .inflater
                .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
            inflate_into(d, input, out, cap)
        }
    }

    /// Deflates one whole message into `out` (without the final empty block's 4-byte tail).
    pub fn deflate(&mut self, scratch: &mut Scratch, input: &[u8], out: &mut Vec<u8>) {
        let bits = self.params.server_max_window_bits;
        let c = if self.params.server_no_context_takeover {
            let c = scratch.deflaters[(bits - 9) as usize].get_or_insert_with(|| {
                Compress::new_with_window_bits(Compression::new(LEVEL), false, bits)
            });
            c.reset();
            c
        } else {
            &mut **self.deflater.get_or_insert_with(|| {
                Box::new(Compress::new_with_window_bits(
                    Compression::new(LEVEL),
                    false,
                    bits,
                ))
            })
        };
        deflate_into(c, input, out);
    }
}

fn inflate_into(
    d: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    cap: usize,
) -> Result<(), InflateError> {
    let limit = out.len() + cap;
    for chunk in [input, &TAIL[..]] {
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                // Grow in steps, never past the cap (+1 to detect going over it).
                let want = (chunk.len() * 4).clamp(4096, 1 << 20);
                out.reserve_exact(want.min(limit + 1 - out.len()).max(1));
            }
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d.decompress_vec(&chunk[pos..], out, FlushDecompress::Sync);
            // The cap first: zlib may write past it and then, within the same call, read on
            // into corrupt data; the message was too big before it was corrupt (and checking in
            // this order keeps the answer independent of how much room each call had).
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            let status = status.map_err(|_| InflateError::Corrupt)?;
            pos += (d.total_in() - in_before) as usize;
            if status == Status::StreamEnd {
                // A final block ends this message's stream; the next one starts afresh.
                d.reset(false);
                return Ok(());
            }
            let progressed = d.total_in() != in_before || d.total_out() != out_before;
            let room = out.len() < out.capacity();
            if pos == chunk.len() && (room || !progressed) {
                // All of this chunk is in, and the output either has room left (so nothing is
                // pending) or a call with an empty input produced nothing more.
                break;
            }
            if !progressed && room {
                // Input left, room to write, and still no progress: not a deflate stream.
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(())
}

fn deflate_into(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    if input.is_empty() {
        // RFC 7692 §7.2.3.6: an empty message is the single byte 0x00 (an empty stored block
        // without its tail). zlib emits nothing for an empty sync flush, and a peer keeping
        // context would then inflate a lone tail and lose its stream.
        out.push(0x00);
        return;
    }
    let start = out.len();
    // Room for all of it, so that one call does it: the most deflate can expand data (zlib's
    // conservative deflateBound: an eighth and a 64th more) plus the sync flush's empty block,
    // with slack. A flush that ended exactly at the end of the buffer would take a second
    // call, which zlib answers with a second empty stored block: the bytes sent would then
    // depend on the capacity the shared buffer happened to have.
    out.reserve(input.len() + input.len() / 8 + input.len() / 64 + 64);
    let mut pos = 0;
    loop {
        let before = c.total_in();
        c.compress_vec(&input[pos..], out, FlushCompress::Sync)
            .expect("deflate on a valid stream does not fail");
        pos += (c.total_in() - before) as usize;
        // A sync flush is complete once all input is in and the output did not fill up.
        if pos == input.len() && out.len() < out.capacity() {
            break;
        }
        // Not reached within the bound above; still correct deflate if it were.
        out.reserve(input.len() / 2 + 64);
    }
    if out[start..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the server answers by default: no compression state kept between messages.
    const NO_TAKEOVER: Params = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
    };

    fn neg(h: &str) -> Option<(Params, String)> {
        negotiate([h.as_bytes()], true)
    }

    #[test]
    fn without_takeover_the_server_imposes_no_context_takeover_both_ways() {
        let (p, r) =
            negotiate([&b"permessage-deflate; client_max_window_bits"[..]], false).unwrap();
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn negotiation() {
        let (p, r) = neg("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(r, "permessage-deflate");
        assert!(!p.server_no_context_takeover && !p.client_no_context_takeover);
        let (p, r) = neg("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=\"12\"").unwrap();
        assert_eq!(
            r,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
        assert_eq!(p.server_max_window_bits, 10);
        // Bad offers are skipped in favour of the next.
        let (p, _) = neg("permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=9").unwrap();
        assert_eq!(p.server_max_window_bits, 9);
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(neg(bad), None, "{bad}");
        }
    }

    fn round_trip(p: Params, msgs: &[Vec<u8>]) {
        let mut scratch = Scratch::default();
        let mut server = Deflate::new(p);
        // The "client" side here is another Deflate with mirrored parameters.
        let mut client = Deflate::new(Params {
            server_no_context_takeover: p.client_no_context_takeover,
            client_no_context_takeover: p.server_no_context_takeover,
            server_max_window_bits: 15,
        });
        let mut cscratch = Scratch::default();
        for m in msgs {
            let mut wire = Vec::new();
            server.deflate(&mut scratch, m, &mut wire);
            let mut back = Vec::new();
            client
                .inflate(&mut cscratch, &wire, &mut back, 1 << 20)
                .unwrap();
            assert_eq!(&back, m);
        }
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        let msgs: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("message {i} ").repeat(50).into_bytes())
            .collect();
        for (snct, cnct, bits) in [
            (false, false, 15),
            (true, true, 15),
            (true, false, 9),
            (false, true, 12),
        ] {
            round_trip(
                Params {
                    server_no_context_takeover: snct,
                    client_no_context_takeover: cnct,
                    server_max_window_bits: bits,
                },
                &msgs,
            );
        }
    }

    #[test]
    fn no_context_takeover_keeps_no_state_on_the_connection() {
        let p = NO_TAKEOVER;
        let mut scratch = Scratch::default();
        let mut d = Deflate::new(p);
        let mut wire = Vec::new();
        d.deflate(&mut scratch, &[b'a'; 1000], &mut wire);
        let mut back = Vec::new();
        d.inflate(&mut scratch, &wire, &mut back, 2000).unwrap();
        assert!(!d.holds_context());
        let mut t = Deflate::new(Params {
            server_no_context_takeover: false,
            ..p
        });
        t.deflate(&mut scratch, &[b'a'; 1000], &mut Vec::new());
        assert!(t.holds_context());
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_cap() {
        let p = NO_TAKEOVER;
        let mut scratch = Scratch::default();
        let mut d = Deflate::new(p);
        let mut bomb = Vec::new();
        d.deflate(&mut scratch, &vec![0u8; 10 << 20], &mut bomb);
        assert!(
            bomb.len() < (10 << 20) / 50,
            "10 MiB of zeros compresses to {}",
            bomb.len()
        );
        let mut out = Vec::new();
        assert_eq!(
            d.inflate(&mut scratch, &bomb, &mut out, 64 * 1024),
            Err(InflateError::TooBig)
        );
        assert!(
            out.capacity() <= 64 * 1024 + 1,
            "held {} bytes",
            out.capacity()
        );
    }

    #[test]
    fn empty_messages_keep_a_shared_context_intact() {
        // The case the round-trip proptest found: with context takeover, an empty message
        // between two others must not break the stream.
        let p = Params {
            server_no_context_takeover: false,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
        };
        let msgs = vec![
            b"first message ".repeat(40),
            Vec::new(),
            b"third one ".repeat(40),
        ];
        round_trip(p, &msgs);
        let mut wire = Vec::new();
        Deflate::new(p).deflate(&mut Scratch::default(), b"", &mut wire);
        assert_eq!(wire, [0x00]);
    }

    #[test]
    fn garbage_is_corrupt() {
        let p = NO_TAKEOVER;
        let mut d = Deflate::new(p);
        let mut out = Vec::new();
        assert_eq!(
            d.inflate(&mut Scratch::default(), &[0xff; 16], &mut out, 1000),
            Err(InflateError::Corrupt)
        );
    }

    proptest! {
        #[test]
        fn random_messages_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3000), 1..6), snct: bool, cnct: bool) {
            round_trip(Params { server_no_context_takeover: snct, client_no_context_takeover: cnct, server_max_window_bits: 15 }, &msgs);
        }
    }

    #[test]
    fn scratch_lends_buffers_empty_and_keeps_only_small_ones() {
        let mut slot = Vec::new();
        let mut v = Scratch::lend(&mut slot);
        v.extend_from_slice(&[1; 1000]);
        Scratch::keep(&mut slot, v);
        let v = Scratch::lend(&mut slot);
        assert!(
            v.is_empty() && v.capacity() >= 1000,
            "lent empty, memory reused"
        );
        Scratch::keep(&mut slot, v);
        // One big message's buffer goes back to the allocator, not into the worker.
        let _ = Scratch::lend(&mut slot);
        Scratch::keep(&mut slot, vec![0u8; KEEP_MAX + 1]);
        assert_eq!(slot.capacity(), 0);
    }

    /// Found by fuzzing: a stored block that fills the output past the cap, followed within
    /// the same call by a block of the reserved type, was called corrupt (1007) instead of too
    /// big (1009), depending on how much room the call had.
    #[test]
    fn past_the_cap_before_corrupt_data_is_too_big() {
        // A stored block of 6 bytes (not final), then a block header of the reserved type 3.
        let wire = [
            0x00, 0x06, 0x00, 0xf9, 0xff, b'a', b'a', b'a', b'a', b'a', b'a', 0x06,
        ];
        let mut out = Vec::new();
        let r = Deflate::new(NO_TAKEOVER).inflate(&mut Scratch::default(), &wire, &mut out, 5);
        assert_eq!(r, Err(InflateError::TooBig));
        assert!(out.len() <= 6);
        // Under the cap, the same data is corrupt.
        let r = Deflate::new(NO_TAKEOVER).inflate(&mut Scratch::default(), &wire, &mut out, 100);
        assert_eq!(r, Err(InflateError::Corrupt));
    }

    /// Found by fuzzing (fuzz/http1_conn, split invariance): when a sync flush ended exactly at
    /// the end of the output buffer, deflate_into called the compressor again, and zlib then
    /// emits a second empty stored block. The bytes of an echo depended on the capacity the
    /// worker's shared buffer happened to have (so on other messages and other connections).
    #[test]
    fn the_compressed_bytes_do_not_depend_on_the_room_in_the_buffer() {
        let mut x: u32 = 7;
        let noise: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for msg in [&noise[..], &[b'a'; 2000][..], b"Hello"] {
            let mut want = Vec::new();
            Deflate::new(NO_TAKEOVER).deflate(&mut Scratch::default(), msg, &mut want);
            for room in 0..want.len() + 64 {
                let mut out = Vec::with_capacity(room);
                Deflate::new(NO_TAKEOVER).deflate(&mut Scratch::default(), msg, &mut out);
                assert_eq!(out, want, "{} bytes with room for {room}", msg.len());
            }
        }
    }
}
