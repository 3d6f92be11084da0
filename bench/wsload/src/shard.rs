//! Owns sharding, for runs with more connections than one process may have files: the parent
//! re-executes itself K times with `--shard I/K` (same arguments otherwise), reads each
//! shard's JSON lines from its stdout (progress once an interval, then a final one with its
//! totals and histograms as [value, count] pairs), shows the merged progress, forwards
//! SIGINT/SIGTERM, and merges the finals into one summary. A shard writes those lines and
//! dies with its parent: PR_SET_PDEATHSIG, a check of its parent pid, and a broken stdout.
//! A run with a conductor (subscribe with a publisher, coord.rs) also gives the conductor a
//! turn each time round and writes what it says to every shard's stdin.

use crate::progress::Progress;
use crate::report::{Counters, Phase, Stats};
use crate::run::Outcome;
use crate::signals;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Shard `i` of `k`'s part of `total`: the first `total % k` shards take one more.
pub fn share(total: usize, i: u32, k: u32) -> usize {
    let (k, i) = (k as usize, i as usize);
    total / k + usize::from(i < total % k)
}

/// Shards needed so no process holds more than `limit - 64` connections.
pub fn needed(total: usize, limit: u64) -> u32 {
    let per = limit.saturating_sub(64).max(1);
    if total as u64 + 64 <= limit {
        1
    } else {
        (total as u64).div_ceil(per).min(u64::from(u32::MAX)) as u32
    }
}

fn emit(line: Value) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        // The parent is gone.
        std::process::exit(1);
    }
}

/// In a shard: a tick that writes a progress line every `every`, and at once when the phase
/// changes (and checks the parent).
pub fn child_ticker(every: Duration) -> impl FnMut(&Counters, Phase) {
    let mut last = Instant::now();
    let mut last_phase = Phase::Ramp;
    move |c, phase| {
        if last.elapsed() < every && phase == last_phase {
            return;
        }
        last = Instant::now();
        last_phase = phase;
        signals::exit_if_orphaned();
        let mut v = c.to_json();
        v["phase"] = phase.as_str().into();
        emit(json!({ "progress": v }));
    }
}

/// In a shard: the final line.
pub fn child_final(outcome: &Outcome) {
    let mut v = outcome.stats.to_json();
    v["held_seconds"] = outcome.held_seconds.into();
    v["gave_up"] = outcome.gave_up.into();
    emit(json!({ "final": v }));
}

/// The shards' results, merged.
pub struct Merged {
    pub stats: Stats,
    /// The shortest shard's hold.
    pub held_seconds: f64,
    /// Echo: the sum of each shard's messages over its own window.
    pub messages_per_sec: f64,
    pub gave_up: bool,
}

/// Something the parent runs beside its shards (the publisher of a subscribe run).
pub trait Conductor {
    /// One turn, given the shards' merged counters and earliest phase. It may wait a few ms
    /// itself. Returns a line to write to every shard's stdin, if it has one now.
    fn turn(&mut self, shards: &Counters, phase: Phase) -> Result<Option<String>, String>;
    /// Its own counters, shown with the shards' in the progress line.
    fn own(&self) -> Counters;
}

struct Shard {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    connections: usize,
    latest: Counters,
    phase: Phase,
    last: Option<Value>,
    open: bool,
}

/// In the parent: runs `k` shards of `total` connections and merges what they report.
/// `deadline` bounds the whole run; shards still going after it are killed.
pub fn parent(
    k: u32,
    total: usize,
    mode: &'static str,
    every: Duration,
    deadline: Duration,
    mut conductor: Option<&mut dyn Conductor>,
) -> Result<Merged, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find wsload itself: {e}"))?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut shards: Vec<Shard> = Vec::with_capacity(k as usize);
    for i in 0..k {
        let spawned = Command::new(&exe)
            .args(&args)
            .arg("--shard")
            .arg(format!("{i}/{k}"))
            .env(signals::PARENT_ENV, std::process::id().to_string())
            .stdin(if conductor.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C reaches only the parent, which then
            // stops each shard once.
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                for s in &mut shards {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                }
                return Err(format!("cannot start shard {i}: {e}"));
            }
        };
        let out = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let tx = tx.clone();
        let index = i as usize;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((index, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((index, None));
        });
        shards.push(Shard {
            child,
            stdin,
            connections: share(total, i, k),
            latest: Counters::default(),
            phase: Phase::Ramp,
            last: None,
            open: true,
        });
    }
    drop(tx);

    let mut progress = Progress::new(total as u64, mode, every);
    let end_by = Instant::now() + deadline;
    let mut stopping = false;
    let mut failure = None;
    while shards.iter().any(|s| s.open) {
        // A conductor waits in its own turn; without one, the shards' lines are all there is.
        let wait = if conductor.is_some() {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        let mut got = rx.recv_timeout(wait);
        loop {
            match got {
                Ok((i, Some(line))) => {
                    let s = &mut shards[i];
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) if v.get("progress").is_some() => {
                            s.latest = Counters::from_json(&v["progress"]);
                            s.phase = Phase::parse(v["progress"]["phase"].as_str().unwrap_or(""));
                        }
                        Ok(v) if v.get("final").is_some() => {
                            s.latest = Counters::from_json(&v["final"]);
                            s.phase = Phase::Done;
                            s.last = Some(v["final"].clone());
                        }
                        _ => eprintln!("wsload: shard {i} said {line:?}"),
                    }
                }
                Ok((i, None)) => shards[i].open = false,
                Err(_) => break,
            }
            got = rx.try_recv().map_err(|_| mpsc::RecvTimeoutError::Timeout);
        }
        if signals::stop_requested() && !stopping {
            stopping = true;
            for s in shards.iter().filter(|s| s.open) {
                let _ = kill(Pid::from_raw(s.child.id() as i32), Signal::SIGTERM);
            }
        }
        if Instant::now() >= end_by {
            eprintln!("wsload: shards still running at the deadline; killing them");
            break;
        }
        let mut sum = Counters::default();
        for s in &shards {
            sum.add(&s.latest);
        }
        let phase = shards.iter().map(|s| s.phase).min().unwrap_or(Phase::Done);
        if let Some(c) = conductor.as_deref_mut() {
            match c.turn(&sum, phase) {
                Ok(Some(line)) => {
                    for s in &mut shards {
                        if let Some(mut stdin) = s.stdin.take() {
                            let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // Stop the shards; they still report what they saw.
                    failure = Some(e);
                    for s in &mut shards {
                        s.stdin = None;
                    }
                    conductor = None;
                }
            }
            if let Some(c) = conductor.as_deref() {
                sum.add(&c.own());
            }
        }
        progress.tick(&sum, phase);
    }
    if let Some(e) = failure {
        eprintln!("wsload: {e}");
    }
    progress.finish();
    reap(&mut shards);

    let mut merged = Merged {
        stats: Stats::new(),
        held_seconds: f64::INFINITY,
        messages_per_sec: 0.0,
        gave_up: false,
    };
    for (i, s) in shards.iter().enumerate() {
        match &s.last {
            Some(v) => {
                merged.stats.merge_json(v);
                let held = v["held_seconds"].as_f64().unwrap_or(0.0);
                merged.held_seconds = merged.held_seconds.min(held);
                if held > 0.0 {
                    merged.messages_per_sec += v["messages"].as_u64().unwrap_or(0) as f64 / held;
                }
                merged.gave_up |= v["gave_up"].as_bool().unwrap_or(false);
            }
            None => {
                // A shard that died: what it had connected is lost, the rest failed.
                eprintln!("wsload: shard {i} ended without its report");
                let mut c = s.latest;
                c.lost = c.connected;
                c.failed = (s.connections as u64).saturating_sub(c.connected);
                merged.stats.count.add(&c);
                merged.held_seconds = 0.0;
            }
        }
    }
    if !merged.held_seconds.is_finite() {
        merged.held_seconds = 0.0;
    }
    Ok(merged)
}

/// Waits a little for shards to exit, then kills what is left; none outlives the parent.
fn reap(shards: &mut [Shard]) {
    let grace = Instant::now() + Duration::from_secs(2);
    for s in shards.iter_mut() {
        loop {
            match s.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < grace => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, k) in [(10, 3), (1_000_000, 51), (2, 5)] {
            let sum: usize = (0..k).map(|i| share(total, i, k)).sum();
            assert_eq!(sum, total);
        }
        assert_eq!(needed(100, 20_000), 1);
        assert_eq!(needed(19_936, 20_000), 1);
        assert_eq!(needed(19_937, 20_000), 2);
        assert_eq!(needed(1_000_000, 20_000), 51);
    }
}
