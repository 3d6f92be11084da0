//! The operator's files under `tuning/` and the example `holdfast.toml`, checked with systemd's
//! own tools where it has one (`systemd-analyze verify`, `systemd-sysusers --dry-run`) and by
//! running the unit's commands against the real binary: a unit that names a subcommand holdfast
//! does not have, or a stop timeout shorter than the drain it must wait for, fails here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// Every `Key=value` line of the unit, in order.
fn unit_settings() -> Vec<(String, String)> {
    read("tuning/holdfast.service")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit(key: &str) -> String {
    let all: Vec<String> = unit_settings()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        all.len(),
        1,
        "{key}= should appear once in holdfast.service"
    );
    all[0].clone()
}

/// A systemd tool from PATH: systemd is every Debian system's init, so it is there.
fn systemd_tool(name: &str) -> Command {
    assert!(
        Path::new("/usr/bin").join(name).exists() || Path::new("/bin").join(name).exists(),
        "{name} is missing: install Debian's systemd package"
    );
    Command::new(name)
}

/// The unit as installed: holdfast and its configuration at the paths the unit names.
fn localized_unit(dir: &Path) -> PathBuf {
    let text = read("tuning/holdfast.service")
        .replace("/usr/local/bin/holdfast", env!("CARGO_BIN_EXE_holdfast"))
        .replace(
            "/etc/holdfast/holdfast.toml",
            repo("holdfast.toml").to_str().unwrap(),
        );
    let path = dir.join("holdfast.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_unit_verifies_and_its_commands_work() {
    let dir = temp_dir("unit");
    let path = localized_unit(&dir);
    let out = systemd_tool("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("holdfast.service:"),
        "systemd-analyze found fault with the unit: {said}"
    );

    assert_eq!(unit("Type"), "notify");
    assert_eq!(unit("KillMode"), "mixed");
    // The config check before start passes on the example and fails (exit 2, which the unit
    // keeps from restarting in a loop) on a broken one.
    let pre = unit("ExecStartPre");
    assert!(
        pre.ends_with("config check /etc/holdfast/holdfast.toml"),
        "{pre}"
    );
    let run_pre = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["config", "check"])
            .arg(config)
            .output()
            .unwrap()
    };
    let ok = run_pre(&repo("holdfast.toml"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[http]\nkeepalive_timeout = \"soon\"\n").unwrap();
    let bad = run_pre(&broken);
    assert_eq!(
        bad.status.code().map(|c| c.to_string()),
        Some(unit("RestartPreventExitStatus"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_stop_timeout_covers_the_drain_delay_and_the_drain() {
    let config: toml::Table = read("holdfast.toml").parse().unwrap();
    let secs = |key: &str| {
        let v = config["server"][key].as_str().unwrap();
        holdfast::config::parse_duration(v).unwrap()
    };
    let stop = holdfast::config::parse_duration(&unit("TimeoutStopSec")).unwrap();
    let drain = secs("drain_delay") + secs("shutdown_timeout");
    assert!(
        stop >= drain + Duration::from_secs(5),
        "TimeoutStopSec={stop:?} leaves too little margin over {drain:?} of drain"
    );
}

#[test]
fn the_sysusers_entry_creates_the_units_user() {
    let root = temp_dir("sysusers");
    let out = systemd_tool("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg("--dry-run")
        .arg(repo("tuning/sysusers.d/holdfast.conf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Creating user 'holdfast'"), "{said}");
    assert_eq!(unit("User"), "holdfast");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn limits_name_the_holdfast_user_and_client_sysctls_stay_apart() {
    for line in read("tuning/limits.d/holdfast.conf")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        assert_eq!(line.split_whitespace().next(), Some("holdfast"), "{line}");
    }
    let server = read("tuning/sysctl.d/99-holdfast.conf");
    assert!(
        !server
            .lines()
            .any(|l| l.starts_with("net.ipv4.ip_local_port_range")),
        "the ephemeral port range is client-side advice"
    );
    let client = read("tuning/sysctl.d/99-holdfast-client.conf");
    assert!(client.contains("net.ipv4.ip_local_port_range"));
}
