//! Owns a plain reference reading of a request head that holdfast accepted: split the lines on
//! CRLF, the request line on its two spaces, each field line on its first colon, and derive
//! what `proto::http1::request::RequestHead` summarises (method, version, body framing,
//! Connection and Upgrade tokens, Expect, the WebSocket fields) with the simplest code that
//! follows RFC 9110/9112 and holdfast's documented strictness. The `http_head` target asserts
//! that every accepted head reads the same way here; anything this reading finds malformed
//! (two Hosts, a Content-Length that is not digits, chunked not last, a bare CR...) would have
//! been accepted by mistake.

use holdfast::proto::http1::request::{BodyFraming, Method, RequestHead, Version};

/// The number of leading empty lines (CRLF pairs) a parser skips before the request line.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.chunks_exact(2).take_while(|c| *c == b"\r\n").count() * 2
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

fn members(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim)
}

/// Checks an accepted head against the reference reading of `buf[..head.head_len]`; panics
/// with the first disagreement.
pub fn check(buf: &[u8], head: &RequestHead) {
    let skip = leading_empty_lines(buf);
    let text = &buf[skip..head.head_len];
    let text = text
        .strip_suffix(b"\r\n\r\n")
        .expect("an accepted head ends with an empty line");
    assert!(
        !text.windows(4).any(|w| w == b"\r\n\r\n"),
        "an earlier empty line ends the head"
    );
    // Only CRLF pairs: no bare CR or LF anywhere.
    for (i, &b) in text.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(text.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert_eq!(text[i - 1], b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().expect("a request line");

    // method SP request-target SP HTTP-version
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    assert_eq!(parts.len(), 3, "request line of three parts");
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    assert!(!method.is_empty() && method.iter().all(|&b| is_tchar(b)));
    assert!(!target.is_empty());
    assert!(
        target.iter().all(|&b| b > b' ' && b != 0x7f),
        "target with whitespace or controls"
    );
    assert_eq!(&buf[head.target.clone()], target, "target range");
    let expected_method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        b"CONNECT" => Method::Connect,
        b"TRACE" => Method::Trace,
        _ => Method::Other,
    };
    assert_eq!(head.method, expected_method);
    // HTTP/1.0 and HTTP/1.1; HTTP/1.2..1.9 are read as 1.1.
    let expected_version = match version {
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if (b'1'..=b'9').contains(d) => {
            Version::Http11
        }
        _ => panic!("accepted version {:?}", String::from_utf8_lossy(version)),
    };
    assert_eq!(head.version, expected_version);

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut te_present = false;
    let (mut close, mut keep_alive, mut upgrade, mut websocket) = (false, false, false, false);
    let (mut continue_, mut other_expectation) = (false, false);
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut versions: Vec<&[u8]> = Vec::new();
    let mut extensions: Vec<&[u8]> = Vec::new();
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .expect("a field line has a colon");
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        assert!(
            !name.is_empty() && name.iter().all(|&b| is_tchar(b)),
            "field name {:?}",
            String::from_utf8_lossy(name)
        );
        assert!(
            value.iter().all(|&b| b == b'\t' || b >= b' ') && !value.contains(&0x7f),
            "control byte in a field value"
        );
        if eq(name, "host") {
            hosts += 1;
        } else if eq(name, "content-length") {
            for m in members(value) {
                assert!(
                    !m.is_empty() && m.iter().all(u8::is_ascii_digit),
                    "Content-Length"
                );
                let n: u64 = std::str::from_utf8(m).unwrap().parse().expect("fits a u64");
                assert!(content_length.is_none_or(|c| c == n), "conflicting lengths");
                content_length = Some(n);
            }
        } else if eq(name, "transfer-encoding") {
            te_present = true;
            codings.extend(members(value));
        } else if eq(name, "connection") {
            for m in members(value) {
                close |= eq(m, "close");
                keep_alive |= eq(m, "keep-alive");
                upgrade |= eq(m, "upgrade");
            }
        } else if eq(name, "upgrade") {
            websocket |= members(value).any(|m| eq(m, "websocket"));
        } else if eq(name, "expect") {
            for m in members(value) {
                if eq(m, "100-continue") {
                    continue_ = true;
                } else if !m.is_empty() {
                    other_expectation = true;
                }
            }
        } else if eq(name, "sec-websocket-key") {
            keys.push(value);
        } else if eq(name, "sec-websocket-version") {
            versions.push(value);
        } else if eq(name, "sec-websocket-extensions") {
            extensions.push(value);
        }
    }

    match expected_version {
        Version::Http11 => assert_eq!(hosts, 1, "HTTP/1.1 needs exactly one Host"),
        Version::Http10 => assert!(hosts <= 1, "more than one Host"),
        Version::Http2 => panic!("the HTTP/1.1 parser never says HTTP/2"),
    }
    assert!(!other_expectation, "an unknown expectation is 417");
    let framing = if te_present {
        assert_eq!(
            expected_version,
            Version::Http11,
            "Transfer-Encoding in HTTP/1.0"
        );
        assert!(
            content_length.is_none(),
            "both Transfer-Encoding and Content-Length"
        );
        assert_eq!(codings.len(), 1, "only chunked is implemented: {codings:?}");
        assert!(eq(codings[0], "chunked"));
        BodyFraming::Chunked
    } else {
        match content_length {
            None | Some(0) => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    assert_eq!(head.framing, framing);
    assert_eq!(head.connection_close, close);
    assert_eq!(head.connection_keep_alive, keep_alive);
    assert_eq!(head.connection_upgrade, upgrade);
    assert_eq!(head.upgrade_websocket, websocket);
    assert_eq!(
        head.expect_continue,
        continue_ && expected_version == Version::Http11
    );
    let only = |values: &[&[u8]]| (values.len() == 1).then(|| values[0].to_vec());
    let get = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| buf[r].to_vec());
    assert_eq!(get(&head.ws_key), only(&keys));
    assert_eq!(get(&head.ws_version), only(&versions));
    let ext: Vec<&[u8]> = head.ws_extensions.iter().map(|r| &buf[r.clone()]).collect();
    assert_eq!(ext, extensions);
}
