//! The whole HTTP/1.1 connection (`proto::Session::Http1`, on to `Session::Ws` after an
//! upgrade) fed a stream of events (data, time passing, SIGTERM) with the engine simulated by
//! `drive`. The data are requests of every shape (bodies of both framings, pipelining,
//! keep-alive and close, expectations, WebSocket handshakes with and without deflate offers,
//! then frames), and raw bytes; or, in the seeds' form, a client's byte stream as it is.
//! Between events, time passes, a stop is requested (`/healthz` then fails) or the drain starts.
//!
//! Checks, beyond "no panic":
//! - split invariance, the strong oracle: fed in pieces cut where the input says, the session
//!   sends exactly what it sends when every read is whole, save `100 Continue` (see
//!   `outputs::without_continues`), ends for the same reason, upgrades or not alike, and moves
//!   the metrics counters alike (so `GET /metrics` answers alike). Time passes only between
//!   events, so both runs see the same clock;
//! - bounds, after every call: output within `OUTPUT_CAP` plus one response, and a heap held
//!   by the connection that does not grow with the stream (`drive`);
//! - after a 101, the server's frames are a well-formed server stream (`ref_ws`), compressed
//!   messages inflating with the negotiated parameters.
#![no_main]

use holdfast::proto::Session;
use holdfast::proto::http1::Http1Conn;
use holdfast_fuzz::drive::{self, Event};
use holdfast_fuzz::env::{self, Env, metrics_pair};
use holdfast_fuzz::inputs::Http1Input;
use holdfast_fuzz::stream::Encoder;
use holdfast_fuzz::{outputs, ref_ws};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Http1Input<'_>| {
    let (knobs, scale, cuts, events) = match input {
        Http1Input::Events {
            knobs,
            scale,
            cuts,
            events,
        } => {
            // A client that offered client_no_context_takeover; the server then resets too,
            // and a client resetting anyway is always understood.
            let events = Encoder::new(true).http_events(&events);
            (knobs, scale, cuts, events)
        }
        Http1Input::Stream {
            knobs,
            scale,
            cuts,
            bytes,
        } => (knobs, scale, cuts, vec![Event::Data(bytes.to_vec())]),
    };
    let env = Env::new(knobs.config());
    let scale = [1, 7, 64, 1024][usize::from(scale % 4)];
    let (m_whole, m_split) = metrics_pair();
    let new = || Session::Http1(Http1Conn::new(0));
    let whole = drive::run(&env, m_whole, new(), 0, &events, None);
    let split = drive::run(&env, m_split, new(), 0, &events, Some((&cuts, scale)));

    let (w, w_continues) = outputs::without_continues(&whole.sink);
    let (s, s_continues) = outputs::without_continues(&split.sink);
    if w != s {
        let at = w
            .iter()
            .zip(&s)
            .position(|(a, b)| a != b)
            .unwrap_or(w.len().min(s.len()));
        let from = at.saturating_sub(200);
        panic!(
            "output differs at byte {at}:\nwhole: {:?}\nsplit: {:?}",
            String::from_utf8_lossy(&w[from..(at + 200).min(w.len())]),
            String::from_utf8_lossy(&s[from..(at + 200).min(s.len())]),
        );
    }
    assert!(
        s_continues >= w_continues,
        "fewer 100 Continue in pieces than whole"
    );
    assert_eq!(whole.close, split.close, "close reason");
    assert_eq!(
        whole.ws_start.is_some(),
        split.ws_start.is_some(),
        "upgraded"
    );
    assert!(
        env::counters(m_whole) == env::counters(m_split),
        "metrics differ between whole and pieces"
    );

    if let Some(start) = whole.ws_start {
        let params = outputs::negotiated_deflate(&whole.sink[..start]);
        ref_ws::check_server_output(&whole.sink[start..], params);
    }
});
