//! Owns the engine's reading of the wall clock for `Date` headers and access log timestamps. The
//! wall clock is read at most every half second of the monotonic clock the loop already reads (a
//! clock read per loop turn showed up at 2 % of server CPU), so a Date is at most half a second
//! stale; the string is re-formatted only when the second changes. Log timestamps advance the
//! last read by the monotonic clock, to the millisecond.

use crate::proto::http1::date::imf_fixdate;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct DateCache {
    secs: u64,
    /// Wall-clock milliseconds at the last read.
    wall_ms: u64,
    text: [u8; 29],
    /// Monotonic milliseconds at the last wall-clock read.
    read_at_ms: u64,
}

/// How stale a Date may get, in monotonic milliseconds.
const REFRESH_MS: u64 = 500;

impl DateCache {
    pub fn new() -> DateCache {
        let mut d = DateCache {
            secs: u64::MAX,
            wall_ms: 0,
            text: [0; 29],
            read_at_ms: 0,
        };
        d.read_wall_clock();
        d
    }

    /// Called every loop turn with the monotonic time the loop just read.
    pub fn refresh(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.read_at_ms) >= REFRESH_MS {
            self.read_at_ms = now_ms;
            self.read_wall_clock();
        }
    }

    fn read_wall_clock(&mut self) {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.wall_ms = since_epoch.as_millis() as u64;
        let secs = since_epoch.as_secs();
        if secs != self.secs {
            self.secs = secs;
            self.text = imf_fixdate(secs);
        }
    }

    pub fn get(&self) -> &[u8] {
        &self.text
    }

    /// Wall-clock milliseconds at monotonic `now_ms`, for access log lines: the last read
    /// advanced by the monotonic clock, so no extra clock read.
    pub fn unix_ms(&self, now_ms: u64) -> u64 {
        self.wall_ms + now_ms.saturating_sub(self.read_at_ms)
    }
}
