//! `proto::http1::request::parse_head` on arbitrary bytes, with the limits varied by the input.
//!
//! Checks, beyond "no panic":
//! - an accepted head: `head_len` ends at the first empty line after any leading empty lines,
//!   fits the input and `max_header_bytes`; the target (and every field range) lies inside the
//!   head; the plain reading of `ref_head` agrees with every field of `RequestHead`;
//! - the parser is a function of the head alone: the same result for the head cut right after
//!   its empty line and for the head with other bytes behind it;
//! - it is consistent under streaming, which is how the connection calls it (on everything
//!   received so far, again after each read): every prefix of an input that is accepted or
//!   still incomplete is "need more", and an error on a prefix is the error of the whole (more
//!   bytes never turn a refused head into an accepted one, or into another refusal);
//! - "need more" is only said while no empty line has ended the head, and within the limit (or
//!   while waiting to tell 414 from 431, within twice the limit).
#![no_main]

use holdfast::proto::http1::request::{HeadError, Limits, RequestHead, parse_head};
use holdfast_fuzz::inputs::HeadInput;
use holdfast_fuzz::ref_head;
use libfuzzer_sys::fuzz_target;

type Parsed = Result<Option<RequestHead>, HeadError>;

fuzz_target!(|input: HeadInput<'_>| {
    let limits = if input.limits.is_multiple_of(4) {
        Limits::default()
    } else {
        Limits {
            max_header_bytes: usize::from(input.max_header),
            max_target_bytes: usize::from(input.max_target),
        }
    };
    let buf = input.bytes;
    let parsed = parse_head(buf, &limits);
    let skip = ref_head::leading_empty_lines(buf);
    match &parsed {
        Ok(Some(head)) => accepted(buf, head, &limits, &parsed),
        Ok(None) => {
            // Past the limit, the choice between 414 and 431 may wait for the end of the
            // request line, at most `max_header_bytes` further.
            assert!(
                buf.len() <= 2 * limits.max_header_bytes + 1,
                "need more far past the limit"
            );
            assert!(
                !buf[skip..].windows(4).any(|w| w == b"\r\n\r\n"),
                "need more with a complete head"
            );
        }
        Err(_) => {
            // More bytes do not change a refusal.
            let mut longer = buf.to_vec();
            longer.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                parse_head(&longer, &limits),
                parsed,
                "more bytes changed a refusal"
            );
        }
    }
    // Streaming consistency on a few prefixes chosen by the input, plus the last byte short.
    let end = match &parsed {
        Ok(Some(head)) => head.head_len,
        _ => buf.len(),
    };
    let cuts = input
        .cuts
        .iter()
        .map(|&c| usize::from(c))
        .chain([end.saturating_sub(1)]);
    for cut in cuts.filter(|&c| c < end) {
        match parse_head(&buf[..cut], &limits) {
            Ok(None) => {}
            Ok(Some(h)) => panic!("a prefix of {cut} bytes is a whole head: {h:?}"),
            Err(e) => assert_eq!(
                Err(e),
                parsed,
                "a prefix of {cut} bytes is refused otherwise than the whole"
            ),
        }
    }
});

fn accepted(buf: &[u8], head: &RequestHead, limits: &Limits, parsed: &Parsed) {
    let n = head.head_len;
    assert!(
        n <= buf.len() && n <= limits.max_header_bytes,
        "head_len {n}"
    );
    let skip = ref_head::leading_empty_lines(buf);
    let end = buf[skip..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| skip + i + 4);
    assert_eq!(end, Some(n), "head_len is not the first empty line");
    let inside = |r: &std::ops::Range<usize>| skip <= r.start && r.start <= r.end && r.end <= n;
    assert!(inside(&head.target) && !head.target.is_empty());
    assert!(head.target.len() <= limits.max_target_bytes);
    assert!(head.ws_key.iter().chain(&head.ws_version).all(inside));
    assert!(head.ws_extensions.iter().all(inside));
    ref_head::check(buf, head);
    // Bytes past the head are not looked at.
    assert_eq!(&parse_head(&buf[..n], limits), parsed);
    let mut more = buf[..n].to_vec();
    more.extend_from_slice(b"\x00\r\n garbage \n");
    assert_eq!(&parse_head(&more, limits), parsed);
}
