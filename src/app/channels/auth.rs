//! Owns the signatures of CHANNELS.md §2–3: HMAC-SHA256 in hex, as Pusher signs private and
//! presence subscriptions and HTTP API requests, and the MD5 of API bodies. Every comparison
//! of a signature is constant-time (`ring::hmac::verify`), so a forger learns nothing from how
//! long a refusal takes.

use md5::{Digest, Md5};
use ring::hmac;

/// Lower-case hex of HMAC-SHA256(secret, message).
pub fn sign(secret: &str, message: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex(hmac::sign(&key, message).as_ref())
}

/// Whether `signature` (hex, either case) is HMAC-SHA256(secret, message), in constant time.
pub fn verify(secret: &str, message: &[u8], signature: &str) -> bool {
    let Some(tag) = unhex(signature) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, message, &tag).is_ok()
}

/// Checks a subscription's `auth` (`key:signature`) for `socket_id` on `channel`, with
/// `channel_data` signed too on presence channels.
pub fn channel_auth_ok(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else {
        return false;
    };
    let mut message = format!("{socket_id}:{channel}");
    if let Some(data) = channel_data {
        message.push(':');
        message.push_str(data);
    }
    // The key is public; only the signature needs a constant-time comparison.
    given_key == key && verify(secret, message.as_bytes(), signature)
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex of the MD5 of `body`.
pub fn md5_hex(body: &[u8]) -> String {
    hex(&Md5::digest(body))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's authentication documentation (key 278d425bdf160c739803,
    /// secret 7ad3773142a6692b25b8, socket 1234.1234, channel private-foobar).
    #[test]
    fn the_documented_private_channel_signature() {
        let sig = sign("7ad3773142a6692b25b8", b"1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let auth = format!("278d425bdf160c739803:{sig}");
        let ok = |socket, channel, auth: &str| {
            channel_auth_ok(
                "278d425bdf160c739803",
                "7ad3773142a6692b25b8",
                socket,
                channel,
                None,
                auth,
            )
        };
        assert!(ok("1234.1234", "private-foobar", &auth));
        assert!(ok(
            "1234.1234",
            "private-foobar",
            &auth
                .to_uppercase()
                .replacen("278D425BDF160C739803", "278d425bdf160c739803", 1)
        ));
        assert!(!ok("1234.1235", "private-foobar", &auth), "another socket");
        assert!(!ok("1234.1234", "private-foobaz", &auth), "another channel");
        assert!(
            !ok("1234.1234", "private-foobar", &format!("other:{sig}")),
            "another key"
        );
        assert!(!ok(
            "1234.1234",
            "private-foobar",
            "278d425bdf160c739803:zz"
        ));
        assert!(!ok("1234.1234", "private-foobar", "no-colon"));
    }

    #[test]
    fn presence_signs_the_channel_data_too() {
        let data = r#"{"user_id":"1","user_info":{"name":"a"}}"#;
        let sig = sign("s", format!("1.2:presence-x:{data}").as_bytes());
        let auth = format!("k:{sig}");
        assert!(channel_auth_ok(
            "k",
            "s",
            "1.2",
            "presence-x",
            Some(data),
            &auth
        ));
        assert!(!channel_auth_ok(
            "k",
            "s",
            "1.2",
            "presence-x",
            Some("{}"),
            &auth
        ));
    }

    #[test]
    fn md5_of_a_body() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
