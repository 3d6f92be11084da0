//! Owns watching the server under test (`subscribe --server-pid PID`): its CPU time (utime and
//! stime, /proc/PID/stat, summed over its threads) and resident memory (VmRSS,
//! /proc/PID/status) read at the run's milestones — before the subscribers connect, once every
//! one has subscribed (publishing starts then), and once the deliveries have settled — so that
//! a benchmark gets the server's memory per idle subscriber and its CPU time over exactly the
//! publishing window, with no guessing from outside when those moments were.

use serde_json::{Value, json};

/// One reading of the server process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User and system CPU time, in seconds.
    pub user_s: f64,
    pub sys_s: f64,
    pub rss_kib: u64,
}

/// The readings of one run, taken as it passes each milestone.
pub struct Watch {
    pid: u32,
    tick: f64,
    pub before: Option<Sample>,
    pub subscribed: Option<Sample>,
    pub settled: Option<Sample>,
}

impl Watch {
    pub fn new(pid: u32) -> Watch {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Watch {
            pid,
            tick: 1.0 / if hz > 0 { hz as f64 } else { 100.0 },
            before: None,
            subscribed: None,
            settled: None,
        }
    }

    /// Reads the process now (None once it is gone).
    pub fn sample(&self) -> Option<Sample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let (user, sys) = parse_stat(&stat)?;
        Some(Sample {
            user_s: user as f64 * self.tick,
            sys_s: sys as f64 * self.tick,
            rss_kib: parse_rss(&status)?,
        })
    }

    /// The `server` object of the report.
    pub fn json(&self) -> Value {
        let rss = |s: &Option<Sample>| s.map(|s| s.rss_kib);
        let (user, sys) = match (self.subscribed, self.settled) {
            (Some(a), Some(b)) => (b.user_s - a.user_s, b.sys_s - a.sys_s),
            _ => (0.0, 0.0),
        };
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "pid": self.pid,
            "rss_before_kib": rss(&self.before),
            "rss_subscribed_kib": rss(&self.subscribed),
            "rss_settled_kib": rss(&self.settled),
            "publish_cpu_user_s": r(user),
            "publish_cpu_sys_s": r(sys),
        })
    }
}

/// utime and stime (clock ticks) from /proc/PID/stat: fields 14 and 15, counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// VmRSS in KiB from /proc/PID/status.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        let stat = "4242 (nginx: a (b) c) S 1 4242 4242 0 -1 4194624 3000 0 0 0 \
                    1234 567 0 0 20 0 1 0 100 200000000 5000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((1234, 567)));
        assert_eq!(parse_stat("garbage"), None);
        let status = "Name:\tholdfast\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t2\n";
        assert_eq!(parse_rss(status), Some(12345));
        // This process can be read.
        let w = Watch::new(std::process::id());
        let s = w.sample().unwrap();
        assert!(s.rss_kib > 0);
    }
}
