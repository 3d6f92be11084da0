//! Owns the Pusher HTTP API's request signing, as CHANNELS.md §3 and Pusher's HTTP API
//! reference define it: the query carries `auth_key`, `auth_timestamp`, `auth_version=1.0` and
//! `body_md5` (hex MD5 of the body), and `auth_signature` is the hex HMAC-SHA256, keyed with
//! the app's secret, of `METHOD\nPATH\n` followed by those parameters sorted by key and
//! joined with `&` (the signature itself left out). Values go in as they are, unescaped: the
//! ones wsload sends (key, digits, hex) need no escaping.

use md5::{Digest, Md5};
use ring::hmac;

/// What signs requests for one app.
pub struct Signer {
    key: String,
    secret: hmac::Key,
}

impl Signer {
    pub fn new(key: &str, secret: &str) -> Signer {
        Signer {
            key: key.to_string(),
            secret: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    /// The full query string (`auth_signature` last) for `method path` with this body, signed
    /// at `timestamp` (Unix seconds).
    pub fn query(&self, method: &str, path: &str, body: &[u8], timestamp: u64) -> String {
        // Already in key order: auth_key < auth_timestamp < auth_version < body_md5.
        let params = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={}",
            self.key,
            hex(&Md5::digest(body))
        );
        let to_sign = format!("{method}\n{path}\n{params}");
        let signature = hmac::sign(&self.secret, to_sign.as_bytes());
        format!("{params}&auth_signature={}", hex(signature.as_ref()))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_inputs() {
        // RFC 1321's test suite.
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            hex(&Md5::digest(b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn signs_an_events_request() {
        // Expected values computed outside wsload from the formula alone (openssl):
        //   printf '%s' "$BODY" | openssl md5
        //   printf 'POST\n/apps/app-id/events\nauth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=%s' "$MD5" \
        //     | openssl dgst -sha256 -hmac app-secret
        let body = br#"{"name":"bench","channel":"bench-0","data":"{\"s\":0}"}"#;
        let q = Signer::new("app-key", "app-secret").query(
            "POST",
            "/apps/app-id/events",
            body,
            1_700_000_000,
        );
        assert_eq!(
            q,
            "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0\
             &body_md5=6a49f8d56e4edd690bd184e9a723e582&auth_signature=58f301dd21489efe0e55882c17f15d713d939bc8c21c621cd5ea8684c73939f2"
        );
    }
}
