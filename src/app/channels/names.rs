//! Owns channel names (CHANNELS.md §2): which bytes a name may hold, how long it may be, and
//! what its prefix makes it (public, private, presence, with or without a cache).

/// The longest channel name, in bytes.
pub const MAX_NAME_BYTES: usize = 164;

/// Who may subscribe: anyone, a connection with a signature for the channel, or one with a
/// signature over its presence data too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Private,
    Presence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub access: Access,
    /// The last event is kept and sent to each new subscriber.
    pub cache: bool,
}

/// Classifies a channel name, or says what is wrong with it.
pub fn classify(name: &str) -> Result<Kind, &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err("channel names are 1 to 164 bytes");
    }
    if !name.bytes().all(allowed) {
        return Err("channel names may hold only A-Z a-z 0-9 _ - = @ , . ;");
    }
    let kind = |access, cache| Ok(Kind { access, cache });
    // Longest prefixes first: `private-cache-` is a private channel with a cache.
    if name.starts_with("private-cache-") {
        kind(Access::Private, true)
    } else if name.starts_with("presence-cache-") {
        kind(Access::Presence, true)
    } else if name.starts_with("private-") {
        // `private-encrypted-` too: the payload is the clients' business.
        kind(Access::Private, false)
    } else if name.starts_with("presence-") {
        kind(Access::Presence, false)
    } else if name.starts_with("cache-") {
        kind(Access::Public, true)
    } else {
        kind(Access::Public, false)
    }
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefixes_decide_the_kind() {
        let k = |n| classify(n).unwrap();
        assert_eq!(k("news").access, Access::Public);
        assert!(!k("news").cache);
        assert_eq!(k("private-a").access, Access::Private);
        assert_eq!(k("private-encrypted-a").access, Access::Private);
        assert_eq!(k("presence-a").access, Access::Presence);
        assert_eq!(
            k("cache-a"),
            Kind {
                access: Access::Public,
                cache: true
            }
        );
        assert_eq!(
            k("private-cache-a"),
            Kind {
                access: Access::Private,
                cache: true
            }
        );
        assert_eq!(
            k("presence-cache-a"),
            Kind {
                access: Access::Presence,
                cache: true
            }
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "a b", "a/b", "é", "a#", "a*"] {
            assert!(classify(bad).is_err(), "{bad:?}");
        }
        assert!(classify(&"a".repeat(164)).is_ok());
        assert!(classify(&"a".repeat(165)).is_err());
        assert!(classify("A-z_0=9@,.;").is_ok());
    }

    proptest! {
        #[test]
        fn a_name_is_valid_exactly_when_its_bytes_and_length_are(name in "[ -~]{0,170}") {
            let ok = !name.is_empty() && name.len() <= 164 && name.bytes().all(allowed);
            prop_assert_eq!(classify(&name).is_ok(), ok);
        }
    }
}
