//! Owns the HTTP side of the WebSocket opening handshake (RFC 6455 §4.2): deciding whether a
//! request is a valid upgrade, and writing the 101 response with `Sec-WebSocket-Accept`. It is
//! HTTP's business (header fields, a status), so it lives here and the WebSocket session knows
//! nothing of HTTP; a bad upgrade is answered by the HTTP layer with the status chosen here.

use super::request::{BodyFraming, Method, RequestHead, Version};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade was refused, and the HTTP answer that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    /// Extra header lines (CRLF-terminated) the refusal must carry.
    pub extra_headers: &'static str,
}

const fn bad(reason: &'static str) -> Refusal {
    Refusal {
        status: 400,
        reason,
        extra_headers: "",
    }
}

/// Checks an upgrade request whose head was parsed from `buf`; on success returns the value of
/// `Sec-WebSocket-Accept`.
pub fn check(head: &RequestHead, buf: &[u8]) -> Result<[u8; 28], Refusal> {
    if head.method != Method::Get {
        return Err(bad("a WebSocket upgrade must be a GET"));
    }
    if head.version != Version::Http11 {
        return Err(bad("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !head.upgrade_websocket {
        return Err(bad("missing Upgrade: websocket"));
    }
    if !head.connection_upgrade {
        return Err(bad("missing Connection: Upgrade"));
    }
    if head.framing != BodyFraming::None {
        return Err(bad("a WebSocket upgrade has no body"));
    }
    // RFC 6455 §4.2.2 / §4.4: a version we do not speak gets 426 and the one we do.
    match head.ws_version.clone().map(|r| &buf[r]) {
        None => return Err(bad("missing Sec-WebSocket-Version")),
        Some(b"13") => {}
        Some(_) => {
            return Err(Refusal {
                status: 426,
                reason: "unsupported WebSocket version",
                extra_headers: "Sec-WebSocket-Version: 13\r\n",
            });
        }
    }
    let key = head
        .ws_key
        .clone()
        .map(|r| &buf[r])
        .ok_or(bad("missing or repeated Sec-WebSocket-Key"))?;
    // §4.2.1: the key is the base64 of 16 bytes: 22 characters and "==".
    if key.len() != 24 || !key.ends_with(b"==") || !key[..22].iter().all(|&b| is_b64(b)) {
        return Err(bad("Sec-WebSocket-Key is not the base64 of 16 bytes"));
    }
    Ok(accept_key(key))
}

/// `base64(SHA-1(key ++ GUID))` (RFC 6455 §4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64_20(&sha.digest().bytes())
}

/// Appends the 101 response.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &[u8; 28], extensions: &str) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    if !extensions.is_empty() {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(extensions.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Base64 (standard alphabet, padded) of a 20-byte digest: always 28 characters.
fn base64_20(d: &[u8; 20]) -> [u8; 28] {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = [b'='; 28];
    let mut o = 0;
    for chunk in d.chunks(3) {
        let n = match chunk.len() {
            3 => u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]),
            _ => u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8,
        };
        let chars = if chunk.len() == 3 { 4 } else { 3 };
        for i in 0..chars {
            out[o + i] = A[(n >> (18 - 6 * i) & 63) as usize];
        }
        o += 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::request::{Limits, parse_head};
    use super::*;

    const L: Limits = Limits {
        max_header_bytes: 16384,
        max_target_bytes: 8192,
    };

    fn check_req(req: &str) -> Result<[u8; 28], Refusal> {
        let head = parse_head(req.as_bytes(), &L).unwrap().unwrap();
        check(&head, req.as_bytes())
    }

    const GOOD: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn the_rfc_example_key() {
        assert_eq!(&check_req(GOOD).unwrap(), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refusals() {
        let cases = [
            (GOOD.replace("GET", "POST"), 400),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (GOOD.replace("Upgrade: websocket\r\n", ""), 400),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                400,
            ),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=!"),
                400,
            ),
            (GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""), 400),
        ];
        for (req, status) in cases {
            assert_eq!(check_req(&req).unwrap_err().status, status, "{req}");
        }
        let r = check_req(&GOOD.replace("Version: 13", "Version: 8")).unwrap_err();
        assert_eq!(
            (r.status, r.extra_headers),
            (426, "Sec-WebSocket-Version: 13\r\n")
        );
    }

    #[test]
    fn switching_protocols_response() {
        let mut out = Vec::new();
        write_switching_protocols(&mut out, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "");
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }
}
