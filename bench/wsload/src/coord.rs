//! Owns the coordination of a subscribe run that publishes too. The subscribers always run in
//! shard processes (one at least), so the publisher has the parent to itself; the parent
//! waits until every shard has settled (each subscriber subscribed or failed), publishes,
//! waits for the deliveries to settle (all expected ones in, or none for `--settle`, within
//! `SETTLE_BOUND`), and then writes one line to every shard's stdin saying what was published
//! per channel (and on the shared channel). Each shard then closes its subscribers and counts
//! what they lost against it. It says on stderr when publishing starts and ends, so a script
//! (bench/c1m.sh) can frame the server's CPU and memory around it; with `--server-pid` it
//! reads the server process at those moments itself (server.rs).
//! The child side of that line is here too: a thread reading stdin that raises a flag the
//! shard's loop looks at.

use crate::publish::{Published, Publisher};
use crate::report::{Counters, Phase};
use crate::server::Watch;
use crate::shard::Conductor;
use crate::signals;
use serde_json::{Value, json};
use std::io::BufRead;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// After the last publish, how long the parent waits for deliveries at most.
pub const SETTLE_BOUND: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Subscribing,
    /// Every subscriber has subscribed; publishing waits out `--publish-delay`.
    Waiting,
    Publishing,
    Settling,
    Ended,
}

/// The parent's side: the publisher, and when to start and stop it.
pub struct Coordinator {
    pub publisher: Publisher,
    stage: Stage,
    subscribers: usize,
    hold: Duration,
    settle: Duration,
    /// How long to wait between every subscriber subscribed and publishing.
    delay: Duration,
    /// When every shard had settled.
    pub held_from: Option<Instant>,
    settle_from: Option<Instant>,
    last_deliveries: u64,
    last_change: Instant,
    /// The server process, read before subscribing, at the start of publishing and at the end.
    pub server: Option<Watch>,
}

impl Coordinator {
    /// Made before the shards start, so that the server's first reading comes before any
    /// subscriber has connected.
    pub fn new(
        publisher: Publisher,
        subscribers: usize,
        hold: Duration,
        settle: Duration,
        delay: Duration,
        server: Option<Watch>,
    ) -> Coordinator {
        let server = server.map(|mut w| {
            w.before = Some(w.sample());
            w
        });
        Coordinator {
            server,
            publisher,
            stage: Stage::Subscribing,
            subscribers,
            hold,
            settle,
            delay,
            held_from: None,
            settle_from: None,
            last_deliveries: 0,
            last_change: Instant::now(),
        }
    }

    /// Deliveries to expect if every subscriber subscribed: per channel, the events the
    /// server accepted times that channel's subscribers (subscriber n is on channel n mod K).
    fn expected(&self) -> u64 {
        let published = &self.publisher.published;
        let k = published.sent.len();
        (0..k)
            .map(|c| {
                let subs = self.subscribers / k + usize::from(c < self.subscribers % k);
                published.accepted(c) * subs as u64
            })
            .sum()
    }

    /// Reads the server (if watched) into one of its milestones.
    fn read_server(&mut self, put: impl FnOnce(&mut Watch, Option<crate::server::Reading>)) {
        if let Some(w) = &mut self.server {
            let s = w.sample();
            put(w, Some(s));
        }
    }

    /// Broadcast deliveries to expect: every subscriber is on the shared channel.
    fn broadcasts_expected(&self) -> u64 {
        let p = &self.publisher.published;
        (p.shared_sent - p.shared_failed.len() as u64) * self.subscribers as u64
    }

    fn end_line(&self) -> String {
        let p = &self.publisher.published;
        let failed: Vec<Value> = p
            .failed
            .iter()
            .enumerate()
            .flat_map(|(c, seqs)| seqs.iter().map(move |s| json!([c, s])))
            .collect();
        json!({"end": {
            "sent": p.sent,
            "failed": failed,
            "shared_sent": p.shared_sent,
            "shared_failed": p.shared_failed,
        }})
        .to_string()
    }
}

impl Conductor for Coordinator {
    fn turn(&mut self, shards: &Counters, phase: Phase) -> Result<Option<String>, String> {
        let now = Instant::now();
        let stop = signals::stop_requested() || phase >= Phase::Close;
        if self.stage != Stage::Ended && stop {
            self.publisher.stop();
            self.stage = Stage::Ended;
            self.read_server(|w, s| w.settled = s);
            return Ok(Some(self.end_line()));
        }
        self.publisher.turn(Duration::from_millis(5))?;
        if self.stage == Stage::Subscribing && phase >= Phase::Hold {
            self.held_from = Some(now);
            self.stage = Stage::Waiting;
            if !self.delay.is_zero() {
                eprintln!(
                    "wsload: all subscribed; publishing in {:.1}s",
                    self.delay.as_secs_f64()
                );
            }
        }
        match self.stage {
            Stage::Waiting if self.held_from.is_some_and(|t| now - t >= self.delay) => {
                self.read_server(|w, s| w.subscribed = s);
                if shards.connected == 0 {
                    // Nobody to publish to.
                    self.publisher.stop();
                    self.stage = Stage::Settling;
                } else {
                    self.publisher.start();
                    self.stage = Stage::Publishing;
                    eprintln!(
                        "wsload: publishing started: {} subscribed, {} failed",
                        shards.connected, shards.failed
                    );
                }
            }
            Stage::Publishing if self.publisher.finished().is_some() => {
                let c = &self.publisher.stats.count;
                eprintln!(
                    "wsload: publishing done: {} events and {} broadcasts accepted, {} errors",
                    c.published, c.broadcasts, c.publish_errors
                );
                self.stage = Stage::Settling;
                self.settle_from = Some(now);
                self.last_change = now;
            }
            Stage::Settling => {
                if shards.deliveries != self.last_deliveries {
                    self.last_deliveries = shards.deliveries;
                    self.last_change = now;
                }
                let all_in = shards.connected == self.subscribers as u64
                    && shards.deliveries >= self.expected()
                    && shards.broadcast_deliveries >= self.broadcasts_expected();
                let quiet = now - self.last_change >= self.settle;
                let bound = self.settle_from.is_some_and(|t| now - t >= SETTLE_BOUND);
                let held = self.held_from.is_some_and(|t| now - t >= self.hold);
                if (all_in || quiet || bound) && held {
                    self.stage = Stage::Ended;
                    self.read_server(|w, s| w.settled = s);
                    return Ok(Some(self.end_line()));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    fn own(&self) -> Counters {
        self.publisher.stats.count
    }
}

static END: AtomicBool = AtomicBool::new(false);
static PUBLISHED: OnceLock<Published> = OnceLock::new();

/// In a shard: listens on stdin for the parent's end line (or its end of file).
pub fn listen_for_end() {
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(p) = parse_end(&v)
            {
                let _ = PUBLISHED.set(p);
                break;
            }
        }
        END.store(true, Ordering::SeqCst);
    });
}

/// The parent has said (or can no longer say) that the run is over.
pub fn end_requested() -> bool {
    END.load(Ordering::SeqCst)
}

/// What the parent published, once it has said.
pub fn published() -> Option<&'static Published> {
    PUBLISHED.get()
}

fn parse_end(v: &Value) -> Option<Published> {
    let end = v.get("end")?;
    let sent: Vec<u64> = end["sent"]
        .as_array()?
        .iter()
        .map(|n| n.as_u64().unwrap_or(0))
        .collect();
    let mut failed = vec![Vec::new(); sent.len()];
    for pair in end["failed"].as_array()? {
        let (Some(c), Some(s)) = (pair[0].as_u64(), pair[1].as_u64()) else {
            continue;
        };
        if let Some(f) = failed.get_mut(c as usize) {
            f.push(s);
        }
    }
    for f in &mut failed {
        f.sort_unstable();
    }
    let shared_sent = end["shared_sent"].as_u64().unwrap_or(0);
    let mut shared_failed: Vec<u64> = (end["shared_failed"].as_array().into_iter().flatten())
        .filter_map(Value::as_u64)
        .collect();
    shared_failed.sort_unstable();
    Some(Published {
        sent,
        failed,
        shared_sent,
        shared_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_line_round_trip() {
        let v = json!({"end": {"sent": [3, 2], "failed": [[1, 1], [0, 2], [0, 0]]}});
        let p = parse_end(&serde_json::from_str(&v.to_string()).unwrap()).unwrap();
        assert_eq!(p.sent, vec![3, 2]);
        assert_eq!(p.failed, vec![vec![0, 2], vec![1]]);
        assert_eq!((p.accepted(0), p.accepted(1)), (1, 1));
        assert_eq!((p.shared_sent, p.shared_failed.len()), (0, 0));
        let v =
            json!({"end": {"sent": [1], "failed": [], "shared_sent": 4, "shared_failed": [3, 1]}});
        let p = parse_end(&v).unwrap();
        assert_eq!((p.shared_sent, p.shared_failed), (4, vec![1, 3]));
    }
}
