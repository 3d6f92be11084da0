//! Owns `holdfast tune check`: what a host needs to hold N long-lived connections, compared with
//! what it has. It reads the live values from a /proc tree (a fake one in tests), prints one
//! row per setting, and for each shortfall the exact command and the persistent line that fix
//! it. The per-connection figures it budgets with are the ones measured in bench/RESULTS.md.

use std::path::{Path, PathBuf};

/// Kernel memory per established TCP socket on the server side (socket, inode, dentry, file,
/// epoll/io_uring bookkeeping): about 4 KiB, see tuning/TUNING.md.
const KERNEL_BYTES_PER_CONN: u64 = 4 * 1024;
/// holdfast's own memory per idle connection, rounded up from the measured 0.2–3.8 KiB (plain
/// to TLS) so the budget holds for every kind.
const USER_BYTES_PER_CONN: u64 = 4 * 1024;
/// One page of unread data per socket is what heartbeats can pin in `tcp_mem`.
const PAGE: u64 = 4096;
/// Files a holdfast process needs besides its connections.
const FD_HEADROOM: u64 = 1024;

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub setting: String,
    pub current: String,
    pub needed: String,
    pub ok: bool,
    /// The command that fixes it now and the line that keeps it fixed (empty when ok).
    pub fix: Vec<String>,
}

/// Reads the host through `proc_root` (normally `/proc`).
pub fn check(proc_root: &Path, connections: u64) -> Result<Vec<Row>, String> {
    let host = Host {
        root: proc_root.to_path_buf(),
    };
    let fds = connections + FD_HEADROOM;
    let mut rows = Vec::new();

    let file_max = host.number("sys/fs/file-max")?;
    rows.push(at_least(
        "fs.file-max",
        file_max,
        fds + 65536,
        sysctl_fix("fs.file-max"),
    ));
    let nr_open = host.number("sys/fs/nr_open")?;
    rows.push(at_least(
        "fs.nr_open",
        nr_open,
        fds,
        sysctl_fix("fs.nr_open"),
    ));
    let (soft, hard) = host.nofile_limits()?;
    rows.push(at_least(
        "RLIMIT_NOFILE (hard)",
        hard,
        fds,
        |need| {
            // Where the limit cannot be raised: enough processes that each fits under it.
            let per_process = hard.saturating_sub(FD_HEADROOM).max(1);
            let processes = connections.div_ceil(per_process).max(2);
            vec![
                format!("systemd: LimitNOFILE={need} in holdfast.service (tuning/holdfast.service)"),
                format!("shell: `holdfast hard nofile {need}` in /etc/security/limits.d/holdfast.conf, then log in again"),
                format!("or, where the limit cannot be raised: server.processes = {processes} (each process holds up to {per_process}; README)"),
            ]
        },
    ));
    // holdfast raises its own soft limit to the hard one at start, so the soft limit is only
    // reported.
    rows.push(Row {
        setting: "RLIMIT_NOFILE (soft)".into(),
        current: soft.to_string(),
        needed: "raised to the hard limit by holdfast".into(),
        ok: true,
        fix: Vec::new(),
    });
    let somaxconn = host.number("sys/net/core/somaxconn")?;
    rows.push(at_least(
        "net.core.somaxconn",
        somaxconn,
        65535,
        sysctl_fix("net.core.somaxconn"),
    ));
    let syn_backlog = host.number("sys/net/ipv4/tcp_max_syn_backlog")?;
    rows.push(at_least(
        "net.ipv4.tcp_max_syn_backlog",
        syn_backlog,
        65535,
        sysctl_fix("net.ipv4.tcp_max_syn_backlog"),
    ));
    let tcp_mem = host.numbers("sys/net/ipv4/tcp_mem")?;
    if let [low, pressure, high] = tcp_mem[..] {
        // Heartbeats can leave a page of unread data per socket: the pressure threshold must
        // exceed that, or the kernel starts shrinking buffers and dropping under load.
        let need = connections.max(1);
        let ok = pressure >= need && high >= need + need / 4;
        rows.push(Row {
            setting: "net.ipv4.tcp_mem (pages)".into(),
            current: format!("{low} {pressure} {high}"),
            needed: format!("pressure ≥ {need}, max ≥ {}", need + need / 4),
            ok,
            fix: if ok {
                Vec::new()
            } else {
                let value = format!("{} {} {}", low.max(need / 2), need, need + need / 4);
                vec![
                    format!("sysctl -w net.ipv4.tcp_mem=\"{value}\""),
                    format!("net.ipv4.tcp_mem = {value}   # in /etc/sysctl.d/99-holdfast.conf"),
                ]
            },
        });
    } else {
        return Err("sys/net/ipv4/tcp_mem: expected three numbers".into());
    }
    if let Ok(conntrack) = host.number("sys/net/netfilter/nf_conntrack_max") {
        rows.push(at_least(
            "net.netfilter.nf_conntrack_max",
            conntrack,
            connections + connections / 10,
            sysctl_fix("net.netfilter.nf_conntrack_max"),
        ));
    }
    let mem_total = host.meminfo_kib("MemTotal")? * 1024;
    let budget = connections * (KERNEL_BYTES_PER_CONN + USER_BYTES_PER_CONN + PAGE);
    rows.push(Row {
        setting: "memory (MemTotal)".into(),
        current: format_bytes(mem_total),
        needed: format!(
            "{} (per connection: 4 KiB kernel + up to 4 KiB holdfast + 4 KiB of buffered data)",
            format_bytes(budget)
        ),
        ok: mem_total >= budget,
        fix: if mem_total >= budget {
            Vec::new()
        } else {
            vec![format!(
                "this host holds about {} such connections; add memory or hosts",
                mem_total / (KERNEL_BYTES_PER_CONN + USER_BYTES_PER_CONN + PAGE)
            )]
        },
    });
    Ok(rows)
}

/// The report as a table followed by the fixes.
pub fn render(rows: &[Row], connections: u64) -> String {
    let mut s = format!("holdfast tune check for {connections} connections\n\n");
    let width = rows.iter().map(|r| r.setting.len()).max().unwrap_or(0);
    let cur_width = rows.iter().map(|r| r.current.len()).max().unwrap_or(0);
    s.push_str(&format!(
        "{:width$}  {:cur_width$}  ok   needed\n",
        "setting", "current"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:width$}  {:cur_width$}  {}  {}\n",
            r.setting,
            r.current,
            if r.ok { "yes" } else { "NO " },
            r.needed
        ));
    }
    let short: Vec<&Row> = rows.iter().filter(|r| !r.ok).collect();
    if short.is_empty() {
        s.push_str("\nEverything fits.\n");
    } else {
        s.push_str("\nTo fix:\n");
        for r in short {
            s.push_str(&format!("  {}:\n", r.setting));
            for f in &r.fix {
                s.push_str(&format!("    {f}\n"));
            }
        }
        s.push_str("\nAll settings with explanations: tuning/TUNING.md; files: tuning/sysctl.d, tuning/limits.d.\n");
    }
    s
}

/// The report as JSON (hand-written: the shape is flat and fixed).
pub fn render_json(rows: &[Row], connections: u64) -> String {
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let fixes: Vec<String> = r.fix.iter().map(|f| format!("\"{}\"", esc(f))).collect();
            format!(
                "{{\"setting\":\"{}\",\"current\":\"{}\",\"needed\":\"{}\",\"ok\":{},\"fix\":[{}]}}",
                esc(&r.setting),
                esc(&r.current),
                esc(&r.needed),
                r.ok,
                fixes.join(",")
            )
        })
        .collect();
    format!(
        "{{\"connections\":{connections},\"ok\":{},\"checks\":[{}]}}\n",
        rows.iter().all(|r| r.ok),
        items.join(",")
    )
}

fn at_least(setting: &str, current: u64, need: u64, fix: impl Fn(u64) -> Vec<String>) -> Row {
    let ok = current >= need;
    Row {
        setting: setting.into(),
        current: current.to_string(),
        needed: format!("≥ {need}"),
        ok,
        fix: if ok { Vec::new() } else { fix(need) },
    }
}

fn sysctl_fix(name: &'static str) -> impl Fn(u64) -> Vec<String> {
    move |need| {
        vec![
            format!("sysctl -w {name}={need}"),
            format!("{name} = {need}   # in /etc/sysctl.d/99-holdfast.conf"),
        ]
    }
}

fn format_bytes(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

struct Host {
    root: PathBuf,
}

impl Host {
    fn read(&self, rel: &str) -> Result<String, String> {
        let path = self.root.join(rel);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    fn numbers(&self, rel: &str) -> Result<Vec<u64>, String> {
        self.read(rel)?
            .split_whitespace()
            .map(|v| {
                v.parse().map_err(|_| {
                    format!("{}: {v:?} is not a number", self.root.join(rel).display())
                })
            })
            .collect()
    }

    fn number(&self, rel: &str) -> Result<u64, String> {
        self.numbers(rel)?
            .first()
            .copied()
            .ok_or_else(|| format!("{}: empty", self.root.join(rel).display()))
    }

    /// "Max open files  1024  524288  files" from `self/limits`.
    fn nofile_limits(&self) -> Result<(u64, u64), String> {
        let text = self.read("self/limits")?;
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .ok_or("self/limits: no \"Max open files\" line")?;
        let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
        let parse = |v: &str| -> Result<u64, String> {
            if v == "unlimited" {
                Ok(u64::MAX)
            } else {
                v.parse()
                    .map_err(|_| format!("self/limits: bad value {v:?}"))
            }
        };
        match fields[..] {
            [soft, hard, ..] => Ok((parse(soft)?, parse(hard)?)),
            _ => Err("self/limits: short \"Max open files\" line".into()),
        }
    }

    fn meminfo_kib(&self, key: &str) -> Result<u64, String> {
        self.read("meminfo")?
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("meminfo: no {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fake /proc tree with the given sysctls.
    fn fake_proc(name: &str, values: &[(&str, &str)]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("holdfast-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let defaults = [
            ("sys/fs/file-max", "9223372036854775807"),
            ("sys/fs/nr_open", "1073741816"),
            ("sys/net/core/somaxconn", "4096"),
            ("sys/net/ipv4/tcp_max_syn_backlog", "4096"),
            ("sys/net/ipv4/tcp_mem", "192921\t257229\t385842"),
            (
                "self/limits",
                "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n",
            ),
            (
                "meminfo",
                "MemTotal:       24576000 kB\nMemFree:        20000000 kB\n",
            ),
        ];
        for (rel, text) in defaults.iter().chain(values) {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
        rows.iter().find(|r| r.setting == name).unwrap()
    }

    #[test]
    fn a_stock_host_fits_ten_thousand_but_not_a_million() {
        let root = fake_proc("stock", &[]);
        let small = check(&root, 10_000).unwrap();
        let bad: Vec<_> = small.iter().filter(|r| !r.ok).map(|r| &r.setting).collect();
        assert_eq!(bad, ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"]);
        let big = check(&root, 1_000_000).unwrap();
        let nofile = row(&big, "RLIMIT_NOFILE (hard)");
        assert!(!nofile.ok);
        assert!(
            nofile
                .fix
                .iter()
                .any(|f| f.contains("server.processes = 2 ")),
            "523,264 a process: two processes hold a million: {:?}",
            nofile.fix
        );
        assert!(!row(&big, "net.ipv4.tcp_mem (pages)").ok);
        assert!(
            row(&big, "memory (MemTotal)").ok,
            "24 GiB holds 1M at 12 KiB each"
        );
        let text = render(&big, 1_000_000);
        assert!(
            text.contains("sysctl -w net.core.somaxconn=65535"),
            "{text}"
        );
        assert!(text.contains("LimitNOFILE=1001024"), "{text}");
        assert!(
            text.contains("net.ipv4.tcp_mem = 500000 1000000 1250000"),
            "{text}"
        );
        assert!(!check(&root, 10_000_000).unwrap().iter().all(|r| r.ok));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_tuned_host_fits_a_million_and_conntrack_is_checked_when_loaded() {
        let root = fake_proc(
            "tuned",
            &[
                ("sys/net/core/somaxconn", "65535"),
                ("sys/net/ipv4/tcp_max_syn_backlog", "65535"),
                ("sys/net/ipv4/tcp_mem", "786432 1048576 1572864"),
                (
                    "self/limits",
                    "Max open files            1048576              2097152              files\n",
                ),
                ("sys/net/netfilter/nf_conntrack_max", "262144"),
            ],
        );
        let rows = check(&root, 1_000_000).unwrap();
        let bad: Vec<_> = rows.iter().filter(|r| !r.ok).map(|r| &r.setting).collect();
        assert_eq!(bad, ["net.netfilter.nf_conntrack_max"]);
        std::fs::write(root.join("sys/net/netfilter/nf_conntrack_max"), "2000000").unwrap();
        let rows = check(&root, 1_000_000).unwrap();
        assert!(rows.iter().all(|r| r.ok), "{rows:?}");
        assert!(render(&rows, 1_000_000).contains("Everything fits."));
        let json = render_json(&rows, 1_000_000);
        assert!(
            json.starts_with("{\"connections\":1000000,\"ok\":true,"),
            "{json}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_unreadable_tree_is_an_error_naming_the_file() {
        let err = check(Path::new("/nonexistent-proc"), 10).unwrap_err();
        assert!(err.contains("/nonexistent-proc/sys/fs/file-max"), "{err}");
    }
}
