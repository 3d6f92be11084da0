//! The WebSocket connection (`proto::ws::conn::WsConn`) on its own, with permessage-deflate off
//! or on (with and without context takeover, any window), fed client frames (whole messages,
//! fragmented and compressed as a client would, single frames with any header, raw bytes; or, in
//! the seeds' form, a client's byte stream as it is) split where the input says, with time
//! passing, a stop requested or the drain starting between events.
//!
//! Checks, beyond "no panic":
//! - split invariance: the same bytes out, the same end, the same metrics, whole or in pieces;
//! - bounds after every call (`drive`): output within `OUTPUT_CAP` plus one message, heap held
//!   not growing with the stream;
//! - the output is a well-formed server stream (`ref_ws::check_server_output`): only close codes
//!   a server may send, nothing after the close, compressed messages that inflate;
//! - echoes are right: the messages echoed are, byte for byte and in order, the first messages
//!   of the client's stream as a plain lenient reader sees them (`ref_ws::client_messages`),
//!   and the pongs carry the first pings' payloads.
#![no_main]

use holdfast::proto::Session;
use holdfast::proto::ws::WsConn;
use holdfast::proto::ws::deflate::Params;
use holdfast_fuzz::drive::{self, Event, SEED};
use holdfast_fuzz::env::{self, Env, metrics_pair};
use holdfast_fuzz::inputs::WsInput;
use holdfast_fuzz::ref_ws;
use holdfast_fuzz::stream::Encoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: WsInput<'_>| {
    let (knobs, deflate, scale, cuts) = match &input {
        WsInput::Events {
            knobs,
            deflate,
            scale,
            cuts,
            ..
        }
        | WsInput::Stream {
            knobs,
            deflate,
            scale,
            cuts,
            ..
        } => (knobs, *deflate, *scale, cuts),
    };
    let env = Env::new(knobs.config());
    let params = deflate.map(|(s, c, bits)| Params {
        server_no_context_takeover: s,
        client_no_context_takeover: c,
        server_max_window_bits: 9 + bits % 7,
    });
    let events = match &input {
        WsInput::Events { events, .. } => {
            let reset = params.is_none_or(|p| p.client_no_context_takeover);
            Encoder::new(reset).ws_events(events)
        }
        WsInput::Stream { bytes, .. } => vec![Event::Data(bytes.to_vec())],
    };
    let scale = [1, 7, 64, 1024][usize::from(scale % 4)];
    let (m_whole, m_split) = metrics_pair();
    let new = || {
        Session::Ws(WsConn::new(
            0,
            &env.config,
            SEED,
            params,
            holdfast::app::ROUTE_ECHO,
        ))
    };
    let whole = drive::run(&env, m_whole, new(), 0, &events, None);
    let split = drive::run(&env, m_split, new(), 0, &events, Some((cuts, scale)));
    assert!(whole.sink == split.sink, "output differs whole vs pieces");
    assert_eq!(whole.close, split.close, "close reason");
    assert!(
        env::counters(m_whole) == env::counters(m_split),
        "metrics differ between whole and pieces"
    );

    let server = ref_ws::check_server_output(&whole.sink, params);
    let sent: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(&d[..]),
            _ => None,
        })
        .collect::<Vec<_>>()
        .concat();
    let client = ref_ws::client_messages(&sent, params, env.config.websocket.max_message_bytes);
    assert!(
        server.messages.len() <= client.messages.len()
            && server.messages[..] == client.messages[..server.messages.len()],
        "echoes are not the client's messages"
    );
    assert!(
        server.pongs.len() <= client.pings.len()
            && server.pongs[..] == client.pings[..server.pongs.len()],
        "pongs are not the client's pings"
    );
});
