//! Owns the seed corpus (`seeds/<target>/`): hand-written requests, bodies and frames, and the
//! few bytes of settings in front of them that `inputs` reads first. The files are written from
//! here and checked by the tests below, so a change to an input type that would make a seed
//! decode into something else fails `cargo test`:
//!
//! ```text
//! cargo +nightly test --lib seeds                       # are the files current and meaningful?
//! HOLDFAST_WRITE_SEEDS=1 cargo +nightly test --lib seeds  # rewrite them
//! ```
//!
//! How `arbitrary` (1.x) lays an input out, as far as the seeds need it: integers are taken
//! little-endian from the front; a `bool` or an `Option` tag is one byte (low bit); an enum
//! variant is chosen by a `u32` (`variant = u32 * variants >> 32`); a `Vec` is each element
//! behind a byte whose low bit says "one more" (a 0 byte ends it); the last field, a `&[u8]`,
//! takes every byte left.

use crate::stream::write_frame;
use flate2::{Compress, Compression, FlushCompress};

/// One seed: the target it is for, its file name, and its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// The protocol bytes it carries (what the target's last field, or its messages, decode to).
    pub carries: Vec<Vec<u8>>,
}

/// The `u32` that selects variant `index` of an enum of `count` variants.
fn variant(index: u64, count: u64) -> [u8; 4] {
    (((index << 32).div_ceil(count)) as u32).to_le_bytes()
}

/// A `Vec<u8>` that is not the last field: each byte behind a "one more" byte, then a 0.
fn vec_u8(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes.iter().flat_map(|&b| [1, b]).collect();
    out.push(0);
    out
}

/// `env::Knobs` (max_header, max_body, keepalive_requests, timeouts, max_message, ws_flags),
/// all zero but the WebSocket flags: the default limits, timers of a few seconds, no heartbeat,
/// permessage-deflate allowed; `takeover` allows context takeover (flag 0x80).
fn knobs(takeover: bool) -> Vec<u8> {
    let flags = if takeover { 0x80 } else { 0 };
    vec![0, 0, 0, 0, 0, 0, 0, flags]
}

/// A client frame: FIN, masked with a fixed key (so the masking matters).
fn frame(opcode: u8, rsv1: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let rsv = if rsv1 { 0b100 } else { 0 };
    write_frame(
        &mut out,
        fin,
        rsv,
        opcode,
        Some([0x37, 0xfa, 0x21, 0x3d]),
        payload,
        false,
    );
    out
}

/// Raw deflate with a sync flush, less its 4-byte tail (RFC 7692 §7.2.1), continuing `c`.
fn deflate(c: &mut Compress, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + 64);
    c.compress_vec(plain, &mut out, FlushCompress::Sync)
        .expect("deflate");
    assert!(
        out.ends_with(&[0, 0, 0xff, 0xff]),
        "room for the whole message"
    );
    out.truncate(out.len() - 4);
    out
}

fn fresh() -> Compress {
    Compress::new(Compression::default(), false)
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Client frames of a plain WebSocket session: text, a fragmented binary message with a ping
/// between its fragments, a pong, a close.
fn plain_frames() -> Vec<u8> {
    [
        frame(0x1, false, true, "héllo ✓".as_bytes()),
        frame(0x2, false, false, &[0, 1, 2, 3]),
        frame(0x9, false, true, b"ping!"),
        frame(0x0, false, true, &[4, 5, 6, 7, 8]),
        frame(0xA, false, true, b""),
        frame(0x8, false, true, b"\x03\xe8bye"),
    ]
    .concat()
}

/// Client frames of a session with permessage-deflate: compressed messages (with one compressor
/// across messages when `takeover`, else one per message), one of them fragmented, an
/// uncompressed one, a close.
fn deflate_frames(takeover: bool) -> Vec<u8> {
    let text = "Hello, Hello, Hello! ".repeat(8);
    let mut c = fresh();
    let mut next = |plain: &[u8]| {
        if !takeover {
            c = fresh();
        }
        deflate(&mut c, plain)
    };
    let a = next(text.as_bytes());
    let b = next(text.as_bytes());
    let (b1, b2) = b.split_at(b.len() / 2);
    let c3 = next(&[7u8; 300]);
    [
        frame(0x1, true, true, &a),
        frame(0x1, true, false, b1),
        frame(0x0, false, true, b2),
        frame(0x2, true, true, &c3),
        frame(0x2, false, true, b"not compressed"),
        frame(0x8, false, true, b"\x03\xe8"),
    ]
    .concat()
}

/// A `channels` seed: the enum variant, then its fields as `arbitrary` reads them (the last
/// field takes the rest).
fn channels(name: &'static str, variant_index: u64, fields: Vec<u8>, carries: &[u8]) -> Seed {
    let mut bytes = variant(variant_index, 3).to_vec();
    bytes.extend(fields);
    Seed {
        target: "channels",
        name,
        bytes,
        carries: vec![carries.to_vec()],
    }
}

fn channels_seeds() -> Vec<Seed> {
    let message = br#"{"event":"pusher:subscribe","data":{"channel":"presence-room","auth":"k:00","channel_data":"{\"user_id\":\"1\"}"}}"#;
    let client = br#"{"event":"client-typing","channel":"private-chat","data":{"who":"a"}}"#;
    let mut datagram = Vec::new();
    holdfast::app::channels::bus::start(&mut datagram, 1);
    for m in [
        holdfast::app::channels::bus::Msg::Hello,
        holdfast::app::channels::bus::Msg::Subs {
            app: 0,
            channel: "news".into(),
            count: 3,
        },
        holdfast::app::channels::bus::Msg::Acked { id: 9 },
    ] {
        holdfast::app::channels::bus::encode(&mut datagram, &m);
    }
    let api = |method: u8, path: &str, query: &str, body: &[u8]| {
        let mut f = vec![method, 1];
        f.extend_from_slice(format!("{path}\n{query}\n").as_bytes());
        f.extend_from_slice(body);
        f
    };
    let publish = br#"{"name":"e","channels":["a","b"],"data":"{\"x\":1}","socket_id":"1.2","info":"subscription_count"}"#;
    vec![
        channels("subscribe", 0, message.to_vec(), message),
        channels("client_event", 0, client.to_vec(), client),
        channels("datagram", 1, datagram.clone(), &datagram),
        {
            let a = api(1, "/apps/app-id/events", "", publish);
            channels("publish", 2, a.clone(), &a)
        },
        {
            let a = api(
                0,
                "/apps/app-id/channels",
                "filter_by_prefix=presence-&info=user_count",
                b"",
            );
            channels("channel_list", 2, a.clone(), &a)
        },
        {
            let a = api(0, "/apps/app-id/channels/presence-room/users", "", b"");
            channels("users", 2, a.clone(), &a)
        },
        {
            // An event stream recovering two channels (the body is its Last-Event-ID).
            let mut a = vec![0, 0];
            a.extend_from_slice(
                b"/app/app-key/events\nchannel=news&channel=private-a&expires=1900000000&auth=00\n5-1,6-2",
            );
            channels("event_stream", 2, a.clone(), &a)
        },
    ]
}

fn head(name: &'static str, cuts: [u16; 3], request: &str) -> Seed {
    let mut bytes = vec![0, 0, 0, 0, 0];
    bytes.extend(cuts.iter().flat_map(|c| c.to_le_bytes()));
    bytes.extend_from_slice(request.as_bytes());
    Seed {
        target: "http_head",
        name,
        bytes,
        carries: vec![request.as_bytes().to_vec()],
    }
}

fn chunked(name: &'static str, mode: u8, small: u16, body: &[u8]) -> Seed {
    let mut bytes = vec![mode];
    bytes.extend(small.to_le_bytes());
    bytes.push(0); // no cuts: one byte at a time
    bytes.extend_from_slice(body);
    Seed {
        target: "chunked",
        name,
        bytes,
        carries: vec![body.to_vec()],
    }
}

fn http1(name: &'static str, takeover: bool, stream: Vec<u8>) -> Seed {
    let mut bytes = variant(1, 2).to_vec(); // Http1Input::Stream
    bytes.extend(knobs(takeover));
    bytes.push(0); // scale 1
    bytes.push(0); // no cuts: one byte at a time
    bytes.extend_from_slice(&stream);
    Seed {
        target: "http1_conn",
        name,
        bytes,
        carries: vec![stream],
    }
}

fn h2(name: &'static str, stream: Vec<u8>) -> Seed {
    let mut bytes = knobs(false);
    bytes.push(0); // scale 1
    bytes.push(0); // no cuts: one byte at a time
    bytes.extend_from_slice(&stream);
    Seed {
        target: "h2_conn",
        name,
        bytes,
        carries: vec![stream],
    }
}

/// An HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A request's header block: literal fields never indexed, one of them Huffman-coded ("www"
/// as RFC 7541 C.4.1 codes it), one added to the dynamic table and then referred to.
fn h2_block(method: &str, path: &str, first: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [(":method", method), (":scheme", "http"), (":path", path)] {
        b.push(0x10);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    if first {
        // Literal with incremental indexing, name ":authority" (static 1), Huffman "www".
        b.extend_from_slice(&[0x41, 0x83, 0xf1, 0xe3, 0xc7]);
    } else {
        b.push(0x80 | 62); // the entry added by the first block
    }
    b
}

/// What a client sends after its preface: SETTINGS, a GET, a POST with a body in two DATA
/// frames, a PING, a window update, and a GOAWAY.
fn h2_requests() -> Vec<u8> {
    let mut s = Vec::new();
    h2_frame(&mut s, 0x4, 0, 0, &[0, 4, 0, 1, 0, 0]);
    h2_frame(&mut s, 0x1, 0x5, 1, &h2_block("GET", "/plaintext", true));
    h2_frame(&mut s, 0x1, 0x4, 3, &h2_block("POST", "/echo", false));
    h2_frame(&mut s, 0x0, 0, 3, b"hel");
    h2_frame(&mut s, 0x0, 0x1, 3, b"lo");
    h2_frame(&mut s, 0x6, 0, 0, b"8 bytes!");
    h2_frame(&mut s, 0x8, 0, 0, &1000u32.to_be_bytes());
    h2_frame(&mut s, 0x7, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
    s
}

/// A WebSocket over HTTP/2 (RFC 8441): an extended CONNECT for `/ws` on stream 1, a masked
/// text message and a close in its DATA, then a GOAWAY.
fn h2_websocket() -> Vec<u8> {
    let mut s = Vec::new();
    h2_frame(&mut s, 0x4, 0, 0, &[]);
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", "/ws"),
        ("sec-websocket-version", "13"),
    ] {
        b.push(0x10);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    h2_frame(&mut s, 0x1, 0x4, 1, &b);
    let mut ws = frame(1, false, true, b"over h2");
    ws.extend(frame(8, false, true, &1000u16.to_be_bytes()));
    h2_frame(&mut s, 0x0, 0, 1, &ws);
    h2_frame(&mut s, 0x7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    s
}

/// `deflate`: (server_no_context_takeover, client_no_context_takeover), window 15.
fn ws(name: &'static str, deflate: Option<(bool, bool)>, stream: Vec<u8>) -> Seed {
    let mut bytes = variant(1, 2).to_vec(); // WsInput::Stream
    bytes.extend(knobs(false));
    match deflate {
        None => bytes.push(0),
        Some((s, c)) => bytes.extend([1, u8::from(s), u8::from(c), 6]),
    }
    bytes.push(0);
    bytes.push(0);
    bytes.extend_from_slice(&stream);
    Seed {
        target: "ws_conn",
        name,
        bytes,
        carries: vec![stream],
    }
}

/// `ws_frames`, one of its six kinds.
fn frames(name: &'static str, kind: u64, fields: Vec<u8>, carries: Vec<Vec<u8>>) -> Seed {
    let mut bytes = variant(kind, 6).to_vec();
    bytes.extend(fields);
    Seed {
        target: "ws_frames",
        name,
        bytes,
        carries,
    }
}

/// Every seed.
pub fn all() -> Vec<Seed> {
    let mut seeds = vec![
        head(
            "get",
            [10, 30, 0],
            "GET /plaintext HTTP/1.1\r\nHost: example.com\r\nUser-Agent: seed\r\n\r\n",
        ),
        head(
            "post_length",
            [4, 40, 70],
            "POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n\
             Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        ),
        head(
            "post_chunked_expect",
            [20, 50, 90],
            "PUT /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
             Expect: 100-continue\r\nX-Empty:\r\nX-Tab:\tv a l\t\r\n\r\n",
        ),
        head(
            "upgrade",
            [16, 64, 128],
            "GET /ws HTTP/1.1\r\nHost: a:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Extensions: x-other\r\n\r\n",
        ),
        head(
            "http10_absolute",
            [2, 26, 0],
            "\r\n\r\nGET http://a:80/plaintext?q HTTP/1.0\r\nConnection: close\r\n\r\n",
        ),
        head("options_star", [3, 8, 0], "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        chunked(
            "simple",
            0,
            0,
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
        ),
        chunked(
            "extensions_trailers",
            1,
            0,
            b"00A;name=value;q=\"a \\\" b\" ; flag\r\n0123456789\r\n\
              1f\r\nthirty-one bytes of chunk data.\r\n0;last\r\nX-Trailer: yes\r\nX-Two: 2\r\n\r\n",
        ),
        chunked("too_large", 2, 8, b"4\r\nabcd\r\n5\r\nefghi\r\n0\r\n\r\n"),
        chunked("content_length", 3, 11, b"hello world and more"),
        http1(
            "pipelined",
            false,
            b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n\
              HEAD /plaintext HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n\
              OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /nope HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /stream?chunks=3 HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /plaintext HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
        http1(
            "bodies",
            false,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
              POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
              Expect: 100-continue\r\n\r\n5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n\
              POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
              GET http://a/plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
              GET /plaintext HTTP/1.0\r\n\r\n"
                .to_vec(),
        ),
        http1(
            "websocket",
            false,
            [format!("{UPGRADE}\r\n").into_bytes(), plain_frames()].concat(),
        ),
        http1(
            "websocket_deflate",
            false,
            [
                format!(
                    "{UPGRADE}Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
                )
                .into_bytes(),
                deflate_frames(false),
            ]
            .concat(),
        ),
        http1(
            "websocket_deflate_takeover",
            true,
            [
                format!("{UPGRADE}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
                    .into_bytes(),
                deflate_frames(true),
            ]
            .concat(),
        ),
        ws("plain", None, plain_frames()),
        ws("deflate", Some((true, true)), deflate_frames(false)),
        ws("deflate_takeover", Some((false, false)), deflate_frames(true)),
    ];

    // ws_frames: a masked header with a 16-bit length; a 64-bit one; unmasking; UTF-8;
    // inflating the RFC 7692 §7.2.3.2 example (the same message twice, the second referring to
    // the first); deflating; negotiating.
    let mut h16 = frame(0x2, false, true, &[9; 300]);
    h16.truncate(8);
    seeds.extend(channels_seeds());
    seeds.push(h2("requests", h2_requests()));
    seeds.push(h2("websocket", h2_websocket()));
    seeds.push(frames(
        "header_16",
        0,
        [vec![1, 5], h16.clone()].concat(),
        vec![h16],
    ));
    let h64 = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4].to_vec();
    seeds.push(frames(
        "header_64",
        0,
        [vec![3, 9], h64.clone()].concat(),
        vec![h64],
    ));
    let payload = b"masked payload".to_vec();
    seeds.push(frames(
        "unmask",
        1,
        [
            vec![0x37, 0xfa, 0x21, 0x3d],
            vec_u8(&[2, 0, 5]),
            payload.clone(),
        ]
        .concat(),
        vec![payload],
    ));
    let text = "ascii, é, ✓, 😀".as_bytes().to_vec();
    seeds.push(frames(
        "utf8",
        2,
        [vec_u8(&[0]), text.clone()].concat(),
        vec![text],
    ));
    let hello_once: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let hello_again: &[u8] = &[0xf2, 0x00, 0x11, 0x00, 0x00];
    let raw = |m: &[u8]| [&[1][..], &variant(0, 2), &vec_u8(m)].concat();
    seeds.push(frames(
        "inflate_rfc7692",
        3,
        [
            vec![1],
            2u32.to_le_bytes().to_vec(),
            raw(hello_once),
            raw(hello_again),
        ]
        .concat(),
        vec![hello_once.to_vec(), hello_again.to_vec()],
    ));
    let messages: [&[u8]; 3] = [b"Hello", b"Hello", &[b'x'; 200]];
    seeds.push(frames(
        "deflate",
        4,
        [
            vec![0, 0, 6],
            messages
                .iter()
                .flat_map(|m| [vec![1], vec_u8(m)].concat())
                .collect(),
        ]
        .concat(),
        messages.iter().map(|m| m.to_vec()).collect(),
    ));
    let offers: [&[u8]; 2] = [
        b"permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        b"permessage-deflate; client_no_context_takeover, permessage-deflate",
    ];
    seeds.push(frames(
        "negotiate",
        5,
        [
            vec![1],
            offers
                .iter()
                .flat_map(|m| [vec![1], vec_u8(m)].concat())
                .collect(),
        ]
        .concat(),
        offers.iter().map(|m| m.to_vec()).collect(),
    ));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{
        ChannelsInput, ChunkedInput, Compressed, FramesInput, H2Input, HeadInput, Http1Input,
        WsInput,
    };
    use arbitrary::{Arbitrary, Unstructured};
    use std::path::PathBuf;

    fn decode<'a, T: Arbitrary<'a>>(bytes: &'a [u8]) -> T {
        T::arbitrary_take_rest(Unstructured::new(bytes)).expect("decodes")
    }

    /// The protocol bytes a seed decodes to, and its settings as `Debug` text.
    fn carried(seed: &Seed) -> (Vec<Vec<u8>>, String) {
        let b = &seed.bytes[..];
        match seed.target {
            "http_head" => {
                let i: HeadInput = decode(b);
                (vec![i.bytes.to_vec()], format!("{} {:?}", i.limits, i.cuts))
            }
            "chunked" => {
                let i: ChunkedInput = decode(b);
                (
                    vec![i.bytes.to_vec()],
                    format!("{} {} {:?}", i.mode, i.small, i.cuts),
                )
            }
            "h2_conn" => {
                let i: H2Input = decode(b);
                let settings = format!("{:?} {} {:?}", i.knobs, i.scale, i.cuts);
                (vec![i.bytes.to_vec()], settings)
            }
            "http1_conn" => match decode(b) {
                Http1Input::Stream {
                    knobs,
                    scale,
                    cuts,
                    bytes,
                } => (vec![bytes.to_vec()], format!("{knobs:?} {scale} {cuts:?}")),
                Http1Input::Events { .. } => panic!("{}: not a stream", seed.name),
            },
            "ws_conn" => match decode(b) {
                WsInput::Stream {
                    knobs,
                    deflate,
                    scale,
                    cuts,
                    bytes,
                } => (
                    vec![bytes.to_vec()],
                    format!("{knobs:?} {deflate:?} {scale} {cuts:?}"),
                ),
                WsInput::Events { .. } => panic!("{}: not a stream", seed.name),
            },
            "ws_frames" => match decode(b) {
                FramesInput::Header { cuts, bytes } => (vec![bytes.to_vec()], format!("{cuts:?}")),
                FramesInput::Unmask {
                    mask,
                    cuts,
                    payload,
                } => (vec![payload.to_vec()], format!("{mask:?} {cuts:?}")),
                FramesInput::Utf8 { cuts, bytes } => (vec![bytes.to_vec()], format!("{cuts:?}")),
                FramesInput::Inflate {
                    takeover,
                    cap,
                    messages,
                } => (
                    messages
                        .into_iter()
                        .map(|m| match m {
                            Compressed::Raw(b) => b,
                            Compressed::Deflated { .. } => panic!("raw messages"),
                        })
                        .collect(),
                    format!("{takeover} {cap}"),
                ),
                FramesInput::Deflate {
                    snct,
                    cnct,
                    bits,
                    messages,
                } => (messages, format!("{snct} {cnct} {bits}")),
                FramesInput::Negotiate { allow, values } => (values, format!("{allow}")),
            },
            "channels" => match decode(b) {
                ChannelsInput::Message(b) | ChannelsInput::Datagram(b) | ChannelsInput::Api(b) => {
                    (vec![b.to_vec()], String::new())
                }
            },
            t => panic!("unknown target {t}"),
        }
    }

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds")
    }

    #[test]
    fn seeds_decode_to_what_they_carry() {
        for seed in all() {
            let (carries, settings) = carried(&seed);
            assert!(
                carries == seed.carries,
                "{}/{} decodes to {carries:?} ({settings})",
                seed.target,
                seed.name
            );
        }
    }

    #[test]
    fn the_rfc7692_example_inflates_to_hello_twice() {
        let mut i = crate::ref_ws::Inflater::new(false);
        assert_eq!(
            i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100)
                .unwrap(),
            b"Hello"
        );
        assert_eq!(
            i.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(),
            b"Hello"
        );
    }

    /// The files in `seeds/` are the ones `all()` makes, and no others
    /// (`HOLDFAST_WRITE_SEEDS=1` rewrites them).
    #[test]
    fn seed_files_are_current() {
        let write = std::env::var_os("HOLDFAST_WRITE_SEEDS").is_some();
        let seeds = all();
        if write {
            let _ = std::fs::remove_dir_all(dir());
        }
        for s in &seeds {
            let path = dir().join(s.target).join(s.name);
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &s.bytes).unwrap();
            }
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (HOLDFAST_WRITE_SEEDS=1 writes it)", path.display())
            });
            assert!(on_disk == s.bytes, "{} is stale", path.display());
        }
        let mut files = 0;
        for t in std::fs::read_dir(dir()).unwrap() {
            let t = t.unwrap().path();
            if t.is_dir() {
                files += std::fs::read_dir(&t).unwrap().count();
            }
        }
        assert_eq!(files, seeds.len(), "files in seeds/ that no seed makes");
    }
}

#[cfg(test)]
mod served {
    //! The connection seeds do what they are there for: requests that are answered (not
    //! refused), WebSocket sessions whose messages are all echoed and that close normally.
    use super::*;
    use crate::drive::{self, Event, SEED};
    use crate::env::{Env, metrics_pair};
    use crate::inputs::{Http1Input, WsInput};
    use crate::{outputs, ref_ws};
    use arbitrary::{Arbitrary, Unstructured};
    use holdfast::proto::ws::WsConn;
    use holdfast::proto::ws::deflate::Params;
    use holdfast::proto::h2::H2Conn;
    use holdfast::proto::{CloseReason, Session, http1::Http1Conn};

    fn statuses(http: &[u8]) -> Vec<u16> {
        http.windows(12)
            .filter(|w| w.starts_with(b"HTTP/1.1 "))
            .map(|w| std::str::from_utf8(&w[9..12]).unwrap().parse().unwrap())
            .collect()
    }

    /// Every message echoed, then the close handshake with 1000.
    fn a_whole_session(
        name: &str,
        sink: &[u8],
        close: Option<CloseReason>,
        params: Option<Params>,
    ) {
        let server = ref_ws::check_server_output(sink, params);
        assert_eq!(
            server.messages.len(),
            if params.is_some() { 4 } else { 2 },
            "{name}"
        );
        assert_eq!(server.pongs.len(), usize::from(params.is_none()), "{name}");
        assert_eq!(server.close, Some(Some(1000)), "{name}");
        assert_eq!(close, Some(CloseReason::WsClosed), "{name}");
    }

    #[test]
    fn connection_seeds_are_served() {
        let metrics = metrics_pair().0;
        for seed in all() {
            let u = Unstructured::new(&seed.bytes);
            match seed.target {
                "http1_conn" => {
                    let Ok(Http1Input::Stream { knobs, bytes, .. }) =
                        Http1Input::arbitrary_take_rest(u)
                    else {
                        panic!("{}", seed.name)
                    };
                    let env = Env::new(knobs.config());
                    let session = Session::Http1(Http1Conn::new(0));
                    let events = [Event::Data(bytes.to_vec())];
                    let out = drive::run(&env, metrics, session, 0, &events, None);
                    let http = &out.sink[..out.ws_start.unwrap_or(out.sink.len())];
                    let got = statuses(http);
                    match seed.name {
                        "pipelined" => assert_eq!(got, [200, 200, 200, 200, 404, 200, 200, 200]),
                        "bodies" => assert_eq!(got, [200, 200, 405, 200, 200]),
                        _ => {
                            assert_eq!(got, [101], "{}", seed.name);
                            let params = outputs::negotiated_deflate(http);
                            let takeover = seed.name.ends_with("takeover");
                            assert_eq!(
                                params.map(|p| p.client_no_context_takeover),
                                seed.name.contains("deflate").then_some(!takeover)
                            );
                            a_whole_session(
                                seed.name,
                                &out.sink[out.ws_start.unwrap()..],
                                out.close,
                                params,
                            );
                        }
                    }
                }
                "ws_conn" => {
                    let Ok(WsInput::Stream {
                        knobs,
                        deflate,
                        bytes,
                        ..
                    }) = WsInput::arbitrary_take_rest(u)
                    else {
                        panic!("{}", seed.name)
                    };
                    let env = Env::new(knobs.config());
                    let params = deflate.map(|(s, c, bits)| Params {
                        server_no_context_takeover: s,
                        client_no_context_takeover: c,
                        server_max_window_bits: 9 + bits % 7,
                    });
                    let session = Session::Ws(WsConn::new(
                        0,
                        &env.config,
                        SEED,
                        params,
                        holdfast::app::ROUTE_ECHO,
                    ));
                    let events = [Event::Data(bytes.to_vec())];
                    let out = drive::run(&env, metrics, session, 0, &events, None);
                    a_whole_session(seed.name, &out.sink, out.close, params);
                }
                "h2_conn" => {
                    let Ok(i) = crate::inputs::H2Input::arbitrary_take_rest(u) else {
                        panic!("{}", seed.name)
                    };
                    let env = Env::new(i.knobs.config());
                    let session = Session::H2(Box::new(H2Conn::new(0)));
                    let mut bytes = holdfast::proto::h2::frame::PREFACE.to_vec();
                    bytes.extend_from_slice(i.bytes);
                    let out = drive::run(&env, metrics, session, 0, &[Event::Data(bytes)], None);
                    // (kind, flags, stream, payload) of every frame the server sent.
                    let mut frames = Vec::new();
                    let mut at = 0;
                    while let Some(h) = holdfast::proto::h2::frame::Head::parse(&out.sink[at..]) {
                        let p = &out.sink[at + 9..at + 9 + h.len];
                        frames.push((h.kind, h.flags, h.stream, p.to_vec()));
                        at += 9 + h.len;
                    }
                    assert_eq!(at, out.sink.len(), "{}: whole frames", seed.name);
                    let data = |stream| {
                        frames
                            .iter()
                            .filter(|f| f.0 == 0 && f.2 == stream)
                            .flat_map(|f| f.3.clone())
                            .collect::<Vec<u8>>()
                    };
                    if seed.name == "websocket" {
                        // The echo's frame, then the close frame answering ours.
                        let mut want = vec![0x81, 7];
                        want.extend_from_slice(b"over h2");
                        want.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
                        assert_eq!(data(1), want);
                        assert_eq!(out.close, Some(CloseReason::Requested), "{}", seed.name);
                        continue;
                    }
                    assert_eq!(data(1), b"Hello, World!");
                    assert_eq!(data(3), b"hello");
                    assert!(frames.iter().any(|f| f.0 == 6 && f.1 == 1 && f.3 == b"8 bytes!"));
                    assert!(!frames.iter().any(|f| f.0 == 3 || f.0 == 7 && f.3[4..] != [0; 4]));
                    assert_eq!(out.close, Some(CloseReason::Requested), "{}", seed.name);
                }
                _ => {}
            }
        }
    }
}
