//! Owns incremental UTF-8 validation for text messages (RFC 6455 §8.1): a message may be split
//! across frames and fragments at any byte, so the validator carries only the state of one
//! unfinished sequence (which continuation bytes it still needs, and their allowed range) and
//! uses the standard library's fast path for everything in between.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Continuation bytes still expected for the current sequence.
    need: u8,
    /// The allowed range of the next byte (narrower than 80..=BF right after some lead bytes,
    /// which is how overlong forms and surrogates are excluded).
    lower: u8,
    upper: u8,
}

impl Default for Utf8Validator {
    fn default() -> Self {
        Utf8Validator {
            need: 0,
            lower: 0x80,
            upper: 0xBF,
        }
    }
}

impl Utf8Validator {
    /// Feeds the next bytes of a message; false as soon as they cannot be valid UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        loop {
            while self.need > 0 {
                let Some((&b, rest)) = bytes.split_first() else {
                    return true;
                };
                if b < self.lower || b > self.upper {
                    return false;
                }
                self.need -= 1;
                self.lower = 0x80;
                self.upper = 0xBF;
                bytes = rest;
            }
            match std::str::from_utf8(bytes) {
                Ok(_) => return true,
                Err(e) if e.error_len().is_some() => return false,
                Err(e) => {
                    // A valid prefix ending in an unfinished sequence: start it and loop to
                    // consume the continuation bytes that are present.
                    let tail = &bytes[e.valid_up_to()..];
                    if !self.start(tail[0]) {
                        return false;
                    }
                    bytes = &tail[1..];
                }
            }
        }
    }

    /// True when the bytes so far end on a character boundary: a message may only end here.
    pub fn is_complete(&self) -> bool {
        self.need == 0
    }

    fn start(&mut self, lead: u8) -> bool {
        let (need, lower, upper) = match lead {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return false,
        };
        self.need = need;
        self.lower = lower;
        self.upper = upper;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_split_everywhere(bytes: &[u8]) -> bool {
        let whole = {
            let mut v = Utf8Validator::default();
            v.feed(bytes) && v.is_complete()
        };
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::default();
            let split = v.feed(&bytes[..cut]) && v.feed(&bytes[cut..]) && v.is_complete();
            assert_eq!(split, whole, "cut at {cut} of {bytes:x?}");
        }
        whole
    }

    #[test]
    fn accepts_valid_text_split_anywhere() {
        for s in [
            "",
            "hello",
            "κόσμε",
            "日本語",
            "😀 emoji",
            "\u{10FFFF}",
            "\u{FFFF}",
        ] {
            assert!(valid_split_everywhere(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn rejects_invalid_sequences_split_anywhere() {
        for b in [
            &[0xC0, 0x80][..],         // overlong NUL
            &[0xE0, 0x80, 0x80],       // overlong
            &[0xED, 0xA0, 0x80],       // surrogate U+D800
            &[0xF4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xF5, 0x80, 0x80, 0x80], // bad lead
            &[0x80],                   // lone continuation
            &[0xCE, 0xBA, 0xE1, 0xBD], // truncated at the end
            &[0x68, 0xFF, 0x69],       // 0xFF never appears
        ] {
            assert!(!valid_split_everywhere(b), "{b:x?}");
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(&[0xCE, 0xBA, 0xE1]));
        assert!(!v.is_complete());
        assert!(!v.feed(&[0x28]));
    }

    proptest! {
        #[test]
        fn agrees_with_std_on_any_bytes_and_split(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..4),
        ) {
            let want = std::str::from_utf8(&bytes).is_ok();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            points.sort();
            let mut v = Utf8Validator::default();
            let mut ok = true;
            let mut prev = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                ok = ok && v.feed(&bytes[prev..p]);
                prev = p;
            }
            prop_assert_eq!(ok && v.is_complete(), want);
        }

        #[test]
        fn agrees_with_std_on_valid_strings(s in "\\PC{0,40}", cut in 0usize..200) {
            let b = s.as_bytes();
            let cut = cut.min(b.len());
            let mut v = Utf8Validator::default();
            prop_assert!(v.feed(&b[..cut]) && v.feed(&b[cut..]) && v.is_complete());
        }
    }
}
