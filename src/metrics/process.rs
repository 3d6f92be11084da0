//! Owns the process metrics that the Prometheus client libraries export, under their names,
//! types and units (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...). They are
//! read from `/proc/<pid>/` when `/metrics` is scraped, so nothing is counted on the hot path.
//! Under a supervisor, the process answering a scrape reads its siblings' files too.

use nix::unistd::{SysconfVar, sysconf};
use std::path::Path;

/// One process's figures, in the units the exposition uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    cpu_seconds: f64,
    /// When the process started, in Unix seconds.
    start_time_seconds: f64,
    resident_memory_bytes: u64,
    virtual_memory_bytes: u64,
    /// None when /proc will not list the process's descriptors.
    open_fds: Option<u64>,
    /// The soft RLIMIT_NOFILE (the one `open` fails at); None when unlimited or unreadable.
    max_fds: Option<u64>,
}

/// One exposition family, and how to get one process's sample (None: that process has none).
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub value: fn(&ProcessStats) -> Option<String>,
}

/// The families, with the help texts of the Prometheus client libraries.
pub const FAMILIES: [Family; 6] = [
    Family {
        name: "process_cpu_seconds_total",
        kind: "counter",
        help: "Total user and system CPU time spent in seconds.",
        value: |p| Some(p.cpu_seconds.to_string()),
    },
    Family {
        name: "process_start_time_seconds",
        kind: "gauge",
        help: "Start time of the process since unix epoch in seconds.",
        value: |p| Some(p.start_time_seconds.to_string()),
    },
    Family {
        name: "process_resident_memory_bytes",
        kind: "gauge",
        help: "Resident memory size in bytes.",
        value: |p| Some(p.resident_memory_bytes.to_string()),
    },
    Family {
        name: "process_virtual_memory_bytes",
        kind: "gauge",
        help: "Virtual memory size in bytes.",
        value: |p| Some(p.virtual_memory_bytes.to_string()),
    },
    Family {
        name: "process_open_fds",
        kind: "gauge",
        help: "Number of open file descriptors.",
        value: |p| p.open_fds.map(|n| n.to_string()),
    },
    Family {
        name: "process_max_fds",
        kind: "gauge",
        help: "Maximum number of open file descriptors.",
        value: |p| p.max_fds.map(|n| n.to_string()),
    },
];

/// Reads each process in `pids`, in order. A process that cannot be read gets None and so no
/// samples: pid 0 (a slot whose process is restarting), a process that is gone or a zombie,
/// and a pid that is neither this process nor a sibling (a child of our parent) — the kernel
/// may have given a dead process's pid to an unrelated one before the supervisor cleared its
/// slot.
pub fn read_each(pids: impl Iterator<Item = u64>) -> Vec<Option<ProcessStats>> {
    let me = u64::from(std::process::id());
    let parent = u64::try_from(nix::unistd::getppid().as_raw()).unwrap_or(0);
    let units = Units::read();
    pids.map(|pid| {
        let units = units.as_ref()?;
        match pid {
            0 => None,
            _ if pid == me => read(pid, None, units),
            _ => read(pid, Some(parent), units),
        }
    })
    .collect()
}

/// What converts /proc's clock ticks, pages and boot-relative times into the exposition's units.
struct Units {
    ticks_per_second: f64,
    page_bytes: u64,
    /// Unix seconds at boot (`btime` in /proc/stat).
    boot_time: u64,
}

impl Units {
    fn read() -> Option<Units> {
        let positive = |v: SysconfVar| sysconf(v).ok().flatten().filter(|&n| n > 0);
        Some(Units {
            ticks_per_second: positive(SysconfVar::CLK_TCK)? as f64,
            page_bytes: u64::try_from(positive(SysconfVar::PAGE_SIZE)?).ok()?,
            boot_time: parse_boot_time(&std::fs::read("/proc/stat").ok()?)?,
        })
    }
}

/// Reads `/proc/<pid>/`; with `parent`, only a process whose parent that is.
fn read(pid: u64, parent: Option<u64>, units: &Units) -> Option<ProcessStats> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = parse_stat(&std::fs::read(dir.join("stat")).ok()?)?;
    if matches!(stat.state, b'Z' | b'X') || parent.is_some_and(|p| p != stat.ppid) {
        return None;
    }
    let max_fds = std::fs::read(dir.join("limits"))
        .ok()
        .and_then(|t| parse_max_fds(&t));
    Some(ProcessStats {
        cpu_seconds: stat.utime.saturating_add(stat.stime) as f64 / units.ticks_per_second,
        start_time_seconds: units.boot_time as f64
            + stat.start_ticks as f64 / units.ticks_per_second,
        resident_memory_bytes: stat.rss_pages.saturating_mul(units.page_bytes),
        virtual_memory_bytes: stat.vsize,
        open_fds: open_fds(&dir.join("fd")),
        max_fds,
    })
}

/// Counts the descriptors in `/proc/<pid>/fd`. Since Linux 6.2 the directory's size is that
/// count: one stat instead of listing (and making a dentry for) each of a million sockets.
/// Linux 6.1 reports size 0, and then the entries are counted (the listing's own descriptor
/// included when the process is this one).
fn open_fds(fd_dir: &Path) -> Option<u64> {
    match std::fs::metadata(fd_dir).ok()?.len() {
        0 => count_entries(fd_dir),
        n => Some(n),
    }
}

fn count_entries(dir: &Path) -> Option<u64> {
    Some(std::fs::read_dir(dir).ok()?.count() as u64)
}

/// The fields of `/proc/<pid>/stat` we use (proc(5) numbers them from 1).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    state: u8,
    ppid: u64,
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. Field 2, the command name in parentheses, may hold spaces,
/// parentheses and bytes that are not UTF-8, so the fields are counted from the last `)`.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `fields[0]` is field 3, the state.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let &[state] = fields.first()?.as_bytes() else {
        return None;
    };
    Some(Stat {
        state,
        ppid: field(4)?,
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The soft limit of the "Max open files" line of `/proc/<pid>/limits`.
fn parse_max_fds(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

/// The `btime` line of `/proc/stat`: when the system booted, in Unix seconds.
fn parse_boot_time(text: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"btime "))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// A real `stat` line's shape: pid, comm, then fields 3 to 52.
    fn stat_line(comm: &[u8], state: &str) -> Vec<u8> {
        let mut line = b"4242 (".to_vec();
        line.extend_from_slice(comm);
        line.extend_from_slice(b") ");
        // Fields 3.. : state, ppid 7, ..., utime 30, stime 12, ..., starttime 5000,
        // vsize 1048576, rss 25.
        let mut fields: Vec<String> = (3..=52).map(|n| (n * 1000).to_string()).collect();
        for (n, v) in [
            (3, state),
            (4, "7"),
            (14, "30"),
            (15, "12"),
            (22, "5000"),
            (23, "1048576"),
            (24, "25"),
        ] {
            fields[n - 3] = v.to_string();
        }
        line.extend_from_slice(fields.join(" ").as_bytes());
        line.push(b'\n');
        line
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let want = Stat {
            state: b'S',
            ppid: 7,
            utime: 30,
            stime: 12,
            start_ticks: 5000,
            vsize: 1_048_576,
            rss_pages: 25,
        };
        for comm in [
            &b"holdfast"[..],
            b"a) R 1 2 (b",
            b"two words",
            b"\xff\xfe not utf-8 )",
            b"",
        ] {
            assert_eq!(parse_stat(&stat_line(comm, "S")), Some(want), "{comm:?}");
        }
        assert_eq!(parse_stat(&stat_line(b"z", "Z")).unwrap().state, b'Z');
    }

    #[test]
    fn short_or_garbled_stat_is_none() {
        let shortest = b"4242 (x) S 7 0 0 0 0 0 0 0 0 0 30 12 0 0 0 0 0 0 5000 1048576 25";
        assert_eq!(parse_stat(shortest).map(|s| s.rss_pages), Some(25));
        for bad in [
            &b""[..],
            b"4242 holdfast S 1 2 3",
            b"4242 (x) S 1 2 3",
            // Cut before field 24, the resident set.
            &shortest[..shortest.len() - 3],
            b"4242 (x) SS 7 0 0 0 0 0 0 0 0 0 30 12 0 0 0 0 0 0 5000 1048576 25",
            b"4242 (x) S -7 0 0 0 0 0 0 0 0 0 30 12 0 0 0 0 0 0 5000 1048576 25",
        ] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn limits_and_boot_time() {
        let limits =
            b"Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            20000                524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(20000));
        assert_eq!(
            parse_max_fds(
                b"Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(parse_max_fds(b"nothing here"), None);
        assert_eq!(
            parse_boot_time(b"cpu  1 2 3\nintr 5 6\nbtime 1767225600\nprocesses 9\n"),
            Some(1_767_225_600)
        );
        assert_eq!(parse_boot_time(b"cpu 1\nbtime\n"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
            let _ = parse_max_fds(&bytes);
            let _ = parse_boot_time(&bytes);
        }
    }

    #[test]
    fn this_process_reads_with_sane_values() {
        let me = u64::from(std::process::id());
        let stats = read_each([me].into_iter());
        let p = stats[0].as_ref().expect("this process is readable");
        assert!(p.resident_memory_bytes > 0, "{p:?}");
        assert!(p.virtual_memory_bytes >= p.resident_memory_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds.is_some_and(|n| n > 0), "{p:?}");
        assert!(p.cpu_seconds >= 0.0, "{p:?}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // btime is whole seconds, so a start may appear up to a second in the future.
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 3600.0,
            "started {} s before now",
            now - p.start_time_seconds
        );
        for f in FAMILIES {
            assert!((f.value)(p).is_some(), "{}", f.name);
        }
    }

    #[test]
    fn restarting_gone_and_unrelated_pids_have_no_stats() {
        // A child of ours is not a sibling (its parent is us, not our parent): a reused pid.
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = u64::from(child.id());
        let stats = read_each([0, pid].into_iter());
        child.kill().unwrap();
        child.wait().unwrap();
        // A reaped child's pid is gone (or taken by someone else: still not a sibling).
        let gone = read_each([pid].into_iter());
        assert_eq!(stats, [None, None]);
        assert_eq!(gone, [None]);
    }

    #[test]
    fn open_fds_counts_by_size_or_by_listing() {
        // Other tests open files meanwhile, so the two ways are not compared exactly.
        let dir = Path::new("/proc/self/fd");
        assert!(open_fds(dir).is_some_and(|n| n >= 3));
        assert!(count_entries(dir).is_some_and(|n| n >= 3));
        assert_eq!(open_fds(Path::new("/proc/self/no-such-dir")), None);
    }
}
