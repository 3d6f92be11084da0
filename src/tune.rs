//! Owns `holdfast tune check`: what a host needs to hold N long-lived connections, compared with
//! what it has. It reads the live values from a /proc tree (a fake one in tests), prints one
//! row per setting, and for each shortfall the exact command and the persistent line that fix
//! it. The per-connection figures it budgets with are the ones measured in bench/RESULTS.md.

use serde::Serialize;
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub setting: String,
    pub current: String,
    pub needed: String,
    pub ok: bool,
    /// The command that fixes it now and the line that keeps it fixed (empty when ok).
    pub fix: Vec<String>,
}

/// What `holdfast tune check` prints and how it exits.
pub struct Outcome {
    /// The report (a table, or JSON), for stdout. With `--json` an error is reported here too,
    /// so a script always gets one JSON object.
    pub stdout: String,
    /// The one line for stderr when the host could not be read.
    pub error: Option<String>,
    /// 0 when everything fits, 1 when something falls short, 2 when the host could not be read.
    pub code: u8,
}

/// The whole command: reads the host through `proc_root` and renders the report as a table,
/// or as JSON with `json`.
pub fn run(proc_root: &Path, connections: u64, json: bool) -> Outcome {
    match check(proc_root, connections) {
        Ok(rows) => Outcome {
            stdout: if json {
                render_json(&rows, connections)
            } else {
                render(&rows, connections)
            },
            error: None,
            code: if rows.iter().all(|r| r.ok) { 0 } else { 1 },
        },
        Err(e) => Outcome {
            stdout: if json {
                report_json(connections, &[], Some(&e))
            } else {
                String::new()
            },
            error: Some(format!("tune check: {e}")),
            code: 2,
        },
    }
}

/// Reads the host through `proc_root` (normally `/proc`). Sums saturate: an absurd
/// `connections` gets an honest "no", not an overflow.
pub fn check(proc_root: &Path, connections: u64) -> Result<Vec<Row>, String> {
    let host = Host {
        root: proc_root.to_path_buf(),
    };
    let fds = connections.saturating_add(FD_HEADROOM);
    let mut rows = Vec::new();

    let file_max = host.number("sys/fs/file-max")?;
    rows.push(at_least(
        "fs.file-max",
        file_max,
        fds.saturating_add(65536),
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
        let max = need.saturating_add(need / 4);
        let ok = pressure >= need && high >= max;
        rows.push(Row {
            setting: "net.ipv4.tcp_mem (pages)".into(),
            current: format!("{low} {pressure} {high}"),
            needed: format!("pressure ≥ {need}, max ≥ {max}"),
            ok,
            fix: if ok {
                Vec::new()
            } else {
                let value = format!("{} {need} {max}", low.max(need / 2));
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
            connections.saturating_add(connections / 10),
            sysctl_fix("net.netfilter.nf_conntrack_max"),
        ));
    }
    let mem_total = host.meminfo_kib("MemTotal")?.saturating_mul(1024);
    let budget = connections.saturating_mul(KERNEL_BYTES_PER_CONN + USER_BYTES_PER_CONN + PAGE);
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

/// The report as one line of JSON:
/// `{"connections":N,"ok":bool,"checks":[{"setting","current","needed","ok","fix":[...]}]}`.
pub fn render_json(rows: &[Row], connections: u64) -> String {
    report_json(connections, rows, None)
}

/// The JSON object of `render_json`, or with `error` (and no checks) when the host could not be
/// read.
fn report_json(connections: u64, checks: &[Row], error: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        connections: u64,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        checks: &'a [Row],
    }
    let report = Report {
        connections,
        ok: error.is_none() && checks.iter().all(|r| r.ok),
        error,
        checks,
    };
    // Strings, numbers and bools: serde_json fails only on maps with non-string keys, or on a
    // Serialize implementation that fails by itself, and this has neither.
    let mut json = serde_json::to_string(&report).expect("a report always serializes");
    json.push('\n');
    json
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
    /// A file's text. Bytes that are not UTF-8 (never in a real /proc) become U+FFFD: they
    /// fail only the value they are part of, with an error naming the file.
    fn read(&self, rel: &str) -> Result<String, String> {
        let path = self.root.join(rel);
        std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
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
    use proptest::prelude::*;

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
    fn json_escapes_whatever_the_strings_hold() {
        let odd = "quote \" backslash \\ tab \t newline \n nul \0 bell \u{7} ≥ \u{fffd} \u{1f600}";
        let rows = vec![Row {
            setting: odd.into(),
            current: odd.into(),
            needed: odd.into(),
            ok: false,
            fix: vec![odd.into(), String::new()],
        }];
        let json = render_json(&rows, u64::MAX);
        assert!(
            json.ends_with("}\n") && !json.trim_end().contains('\n'),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["connections"], u64::MAX);
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][0]["setting"], odd);
        assert_eq!(v["checks"][0]["fix"][0], odd);
        assert_eq!(v.get("error"), None);
    }

    #[test]
    fn with_json_an_unreadable_tree_is_json_too() {
        let out = run(Path::new("/nonexistent-\"proc\\"), 10, true);
        assert_eq!(out.code, 2);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"], serde_json::json!([]));
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("/nonexistent-\"proc\\/sys/fs/file-max"),
            "{error}"
        );
        assert!(out.error.unwrap().contains(error));
        let table = run(Path::new("/nonexistent-proc"), 10, false);
        assert_eq!((table.code, table.stdout.as_str()), (2, ""));
    }

    /// What may stand in a proc file where a number belongs in the property test: a number
    /// too big for any counter, a word, any bytes at all (not UTF-8 included), or nothing (the
    /// file is missing).
    fn odd_value() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            "[0-9]{20,40}".prop_map(|s| Some(s.into_bytes())),
            Just(Some(b"unlimited".to_vec())),
            "[ -~]{0,12}".prop_map(|s| Some(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Some),
            Just(None),
        ]
    }

    /// `line` with each `{}` replaced by the next value (a missing value: no file).
    fn fill(line: &str, values: &[Option<Vec<u8>>]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut parts = line.split("{}");
        out.extend_from_slice(parts.next()?.as_bytes());
        for (part, v) in parts.zip(values) {
            out.extend_from_slice(v.as_deref()?);
            out.extend_from_slice(part.as_bytes());
        }
        Some(out)
    }

    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    proptest! {
        /// Whatever the proc files hold and however many connections are asked for, `tune
        /// check` answers: the table, or one JSON object that serde_json parses and whose
        /// verdict agrees with the exit code.
        #[test]
        fn any_proc_tree_gives_valid_json(
            numbers in proptest::collection::vec(prop_oneof![any::<u64>(), 0..10_000_000u64], 11),
            odd in proptest::option::of((0..11usize, odd_value())),
            connections in prop_oneof![any::<u64>(), 0..2_000_000u64],
        ) {
            // Numbers of any size everywhere, and at most one value that is not a number.
            let mut values: Vec<Option<Vec<u8>>> =
                numbers.iter().map(|n| Some(n.to_string().into_bytes())).collect();
            if let Some((i, v)) = odd {
                values[i] = v;
            }
            let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root = std::env::temp_dir()
                .join(format!("holdfast-proc-prop-{}-{case}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let tcp_mem = fill("{}\t{}\t{}\n", &values[5..8]);
            let files = [
                ("sys/fs/file-max", values[0].clone()),
                ("sys/fs/nr_open", values[1].clone()),
                ("sys/net/core/somaxconn", values[2].clone()),
                ("sys/net/ipv4/tcp_max_syn_backlog", values[3].clone()),
                ("sys/net/netfilter/nf_conntrack_max", values[4].clone()),
                ("sys/net/ipv4/tcp_mem", tcp_mem),
                ("self/limits", fill("Max open files  {}  {}  files\n", &values[8..10])),
                ("meminfo", fill("MemTotal:   {} kB\n", &values[10..11])),
            ];
            for (rel, text) in files {
                if let Some(text) = text {
                    let path = root.join(rel);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, text).unwrap();
                }
            }
            let table = run(&root, connections, false);
            let out = run(&root, connections, true);
            let _ = std::fs::remove_dir_all(&root);
            prop_assert_eq!(table.code, out.code);
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", out.stdout)))?;
            prop_assert_eq!(&v["connections"], &serde_json::json!(connections));
            prop_assert_eq!(v["ok"].as_bool(), Some(out.code == 0));
            prop_assert_eq!(v.get("error").is_some(), out.code == 2);
            prop_assert_eq!(out.error.is_some(), out.code == 2);
            for c in v["checks"].as_array().unwrap() {
                for key in ["setting", "current", "needed"] {
                    prop_assert!(c[key].is_string(), "{}", c);
                }
                prop_assert!(c["ok"].is_boolean() && c["fix"].is_array(), "{}", c);
            }
        }
    }

    #[test]
    fn an_unreadable_tree_is_an_error_naming_the_file() {
        let err = check(Path::new("/nonexistent-proc"), 10).unwrap_err();
        assert!(err.contains("/nonexistent-proc/sys/fs/file-max"), "{err}");
    }
}
