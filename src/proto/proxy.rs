//! Owns the PROXY protocol header (HAProxy's "PROXY protocol" specification, versions 1 and 2)
//! that a load balancer sends before anything else on a connection, so that the server learns
//! the client's address: parsed before TLS or HTTP see a byte. Sans-I/O: bytes in, how many
//! the header took and the address it names out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A version 1 header is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// The version 2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\x00\r\nQUIT\n";
/// A version 2 header longer than this (its address block and TLVs) is refused: nothing a
/// load balancer sends needs more, and a peer must not make us buffer 64 KiB for it.
const V2_MAX_BODY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far are the start of a header: wait for more.
    Incomplete,
    /// A whole header of `consumed` bytes; `source` is the client's address, or None when the
    /// header says the connection is the balancer's own (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC):
    /// then the socket's peer is the address.
    Done {
        consumed: usize,
        source: Option<SocketAddr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection does not start with a PROXY header.
    Missing,
    /// It starts like one but is not a valid one.
    Malformed(&'static str),
}

/// Parses the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if buf.len() < 16 {
            Ok(Parsed::Incomplete)
        } else {
            v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 {
            Ok(Parsed::Incomplete)
        } else {
            v1(buf)
        };
    }
    Err(ProxyError::Missing)
}

fn v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed(
                "a PROXY v1 line is longer than 107 bytes",
            ))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[6..end])
        .map_err(|_| ProxyError::Malformed("a PROXY v1 line that is not ASCII"))?;
    let consumed = end + 2;
    let mut parts = line.split(' ');
    let bad = ProxyError::Malformed("a malformed PROXY v1 line");
    match parts.next() {
        Some("UNKNOWN") => Ok(Parsed::Done {
            consumed,
            source: None,
        }),
        Some(proto @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(bad);
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s.parse().map_err(|_| bad)?;
                match (proto, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(bad),
                }
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Decimal without a sign or leading zeros, as the specification writes them.
                let ok = !s.is_empty()
                    && s.len() <= 5
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                if !ok {
                    return Err(bad);
                }
                s.parse().map_err(|_| bad)
            };
            let source = SocketAddr::new(ip(src)?, port(sport)?);
            ip(dst)?;
            port(dport)?;
            Ok(Parsed::Done {
                consumed,
                source: Some(source),
            })
        }
        _ => Err(bad),
    }
}

fn v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed(
            "a PROXY v2 header of another version",
        ));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(ProxyError::Malformed(
            "a PROXY v2 header with an unknown command",
        ));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyError::Malformed("a PROXY v2 header longer than 1 KiB"));
    }
    let consumed = 16 + len;
    if buf.len() < consumed {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..consumed];
    if command == 0 {
        // LOCAL: the balancer's own connection (a health check); the address block is ignored.
        return Ok(Parsed::Done {
            consumed,
            source: None,
        });
    }
    let short = ProxyError::Malformed("a PROXY v2 address block too short for its family");
    let source = match family {
        // TCP or UDP over IPv4: source, destination, source port, destination port.
        0x11 | 0x12 => {
            let b = body.get(..12).ok_or(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[8], b[9]]),
            ))
        }
        0x21 | 0x22 => {
            let b = body.get(..36).ok_or(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([b[32], b[33]]),
            ))
        }
        // UNSPEC, or Unix sockets: no address we can use; the socket's peer stands.
        0x00 | 0x31 | 0x32 => None,
        _ => {
            return Err(ProxyError::Malformed(
                "a PROXY v2 header with an unknown family",
            ));
        }
    };
    Ok(Parsed::Done { consumed, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done(consumed: usize, source: &str) -> Result<Parsed, ProxyError> {
        Ok(Parsed::Done {
            consumed,
            source: Some(source.parse().unwrap()),
        })
    }

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        let l = [line.as_slice(), b"GET / HTTP/1.1\r\n"].concat();
        assert_eq!(parse(&l), done(line.len(), "192.0.2.1:56324"));
        let l = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        assert_eq!(parse(l), done(l.len(), "[2001:db8::1]:1"));
        let l = b"PROXY UNKNOWN ffff:f::1 x y z\r\n";
        assert_eq!(
            parse(l),
            Ok(Parsed::Done {
                consumed: l.len(),
                source: None
            })
        );
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse(b"PROXY TCP4 192.0"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::Malformed(_))));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(
            parse(b"\x16\x03\x01"),
            Err(ProxyError::Missing),
            "a TLS hello"
        );
    }

    fn v2_header(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn version_2_headers() {
        let mut v4 = vec![192, 0, 2, 1, 198, 51, 100, 2];
        v4.extend_from_slice(&56324u16.to_be_bytes());
        v4.extend_from_slice(&443u16.to_be_bytes());
        v4.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV (NOOP), skipped
        let h = v2_header(1, 0x11, &v4);
        let mut with_request = h.clone();
        with_request.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&with_request), done(h.len(), "192.0.2.1:56324"));
        let mut v6 = vec![0u8; 36];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 1;
        v6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(parse(&v2_header(1, 0x21, &v6)), done(52, "[2001::1]:8080"));
        let local = v2_header(0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Done {
                consumed: 16,
                source: None
            })
        );
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Ok(Parsed::Incomplete), "{i}");
        }
        assert!(matches!(
            parse(&v2_header(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2_header(2, 0x11, &v4)),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2_header(1, 0x99, &v4)),
            Err(ProxyError::Malformed(_))
        ));
        let mut other_version = h.clone();
        other_version[12] = 0x11;
        assert!(matches!(
            parse(&other_version),
            Err(ProxyError::Malformed(_))
        ));
        let huge = v2_header(1, 0x11, &vec![0; 2000]);
        assert!(matches!(parse(&huge), Err(ProxyError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking_and_a_header_never_takes_more_than_it_has(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            prefix in 0u8..3,
        ) {
            let input = match prefix {
                0 => bytes,
                1 => [b"PROXY ".as_slice(), &bytes].concat(),
                _ => [V2_SIG.as_slice(), &bytes].concat(),
            };
            if let Ok(Parsed::Done { consumed, .. }) = parse(&input) {
                prop_assert!(consumed <= input.len());
            }
        }
    }
}
