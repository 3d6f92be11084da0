//! Owns the engine's reading of the wall clock for `Date` headers: once per loop turn, and the
//! string is re-formatted only when the second changes.

use crate::proto::http1::date::imf_fixdate;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct DateCache {
    secs: u64,
    text: [u8; 29],
}

impl DateCache {
    pub fn new() -> DateCache {
        let mut d = DateCache {
            secs: u64::MAX,
            text: [0; 29],
        };
        d.refresh();
        d
    }

    pub fn refresh(&mut self) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.secs {
            self.secs = secs;
            self.text = imf_fixdate(secs);
        }
    }

    pub fn get(&self) -> &[u8] {
        &self.text
    }
}
