//! Owns the progress display on stderr: on a terminal, one line rewritten in place with a bar
//! (connected, failed, lost, connection rate, elapsed, and messages/s or heartbeats); otherwise
//! one plain line every `--progress-every`, which is what logs and tests see.

use crate::report::{Counters, Phase};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const BAR: usize = 24;

pub struct Progress {
    start: Instant,
    last: Instant,
    last_connected: u64,
    last_messages: u64,
    every: Duration,
    tty: bool,
    target: u64,
    /// The mode's name: echo shows messages, idle server pings and heartbeats, http-idle
    /// heartbeats.
    mode: &'static str,
    drawn: bool,
}

impl Progress {
    pub fn new(target: u64, mode: &'static str, every: Duration) -> Progress {
        let now = Instant::now();
        let tty = std::io::stderr().is_terminal();
        Progress {
            start: now,
            last: now,
            last_connected: 0,
            last_messages: 0,
            // A bar is redrawn a few times a second whatever the plain-line interval.
            every: if tty {
                Duration::from_millis(250)
            } else {
                every.max(Duration::from_millis(10))
            },
            tty,
            target,
            mode,
            drawn: false,
        }
    }

    /// Prints a line if the interval has passed since the last one.
    pub fn tick(&mut self, c: &Counters, phase: Phase) {
        let now = Instant::now();
        let dt = now - self.last;
        if dt < self.every {
            return;
        }
        let secs = dt.as_secs_f64();
        let conn_rate = c.connected.saturating_sub(self.last_connected) as f64 / secs;
        let msg_rate = c.messages.saturating_sub(self.last_messages) as f64 / secs;
        let elapsed = (now - self.start).as_secs();
        let extra = match self.mode {
            "echo" => format!("{} msgs {msg_rate:.0}/s", c.messages),
            "subscribe" => format!(
                "published {} (errors {})  deliveries {}  broadcasts {} delivered {}",
                c.published, c.publish_errors, c.deliveries, c.broadcasts, c.broadcast_deliveries
            ),
            "idle" => format!(
                "server pings {}  heartbeats {}/{}",
                c.server_pings, c.heartbeats, c.heartbeats_sent
            ),
            _ => format!("heartbeats {}/{}", c.heartbeats, c.heartbeats_sent),
        };
        let mut err = std::io::stderr().lock();
        if self.tty {
            let filled = if self.target == 0 {
                BAR
            } else {
                ((c.connected as f64 / self.target as f64) * BAR as f64).round() as usize
            }
            .min(BAR);
            let line = format!(
                "[{}{}] {}/{} conn  failed {}  lost {}  {:.0}/s  elapsed {}s  {}  {}",
                "#".repeat(filled),
                ".".repeat(BAR - filled),
                c.connected,
                self.target,
                c.failed,
                c.lost,
                conn_rate,
                elapsed,
                phase.as_str(),
                extra
            );
            // Clear to the end of the line: the new one may be shorter.
            let _ = write!(err, "\r{line}\x1b[K");
            self.drawn = true;
        } else {
            let _ = writeln!(
                err,
                "wsload: {elapsed}s {} connected {}/{} failed {} lost {} {conn_rate:.0} conn/s {extra}",
                phase.as_str(),
                c.connected,
                self.target,
                c.failed,
                c.lost,
            );
        }
        let _ = err.flush();
        self.last = now;
        self.last_connected = c.connected;
        self.last_messages = c.messages;
    }

    /// Ends the rewritten line so the summary starts on a fresh one.
    pub fn finish(&self) {
        if self.tty && self.drawn {
            eprintln!();
        }
    }
}
