//! `holdfast tune check --json` from the real binary: one JSON object on stdout that
//! serde_json parses, for this host, for an absurd connection count, and for a /proc tree
//! that cannot be read, with a verdict that agrees with the exit code.

use serde_json::Value;
use std::process::{Command, Output};

fn tune_json(args: &[&str]) -> (Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["tune", "check", "--json"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).expect("UTF-8 on stdout");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out, json)
}

/// The exit code and the JSON agree: 0 with `"ok":true`, 1 with a check that is not ok.
fn agrees(out: &Output, json: &Value) {
    let checks = json["checks"].as_array().expect("checks");
    assert!(!checks.is_empty(), "{json}");
    for c in checks {
        for key in ["setting", "current", "needed"] {
            assert!(c[key].is_string(), "{c}");
        }
        assert!(c["fix"].is_array(), "{c}");
        assert_eq!(
            c["ok"].as_bool().unwrap(),
            c["fix"].as_array().unwrap().is_empty(),
            "a fix for each shortfall: {c}"
        );
    }
    let ok = checks.iter().all(|c| c["ok"] == true);
    assert_eq!(json["ok"], ok, "{json}");
    assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "{json}");
}

#[test]
fn this_host_and_an_absurd_count_are_valid_json() {
    let (out, json) = tune_json(&["--connections", "1000"]);
    assert_eq!(json["connections"], 1000);
    agrees(&out, &json);
    let max = u64::MAX.to_string();
    let (out, json) = tune_json(&["--connections", &max]);
    assert_eq!(json["connections"], u64::MAX);
    assert_eq!(json["ok"], false, "no host holds 2^64 connections");
    agrees(&out, &json);
}

#[test]
fn an_unreadable_proc_tree_is_json_with_the_error_and_exit_2() {
    let root = std::env::temp_dir().join(format!("holdfast-tune-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("sys/fs")).unwrap();
    // Not a number, not UTF-8, and characters JSON must escape.
    std::fs::write(root.join("sys/fs/file-max"), b"\"\\\x01\xff\xfe 12\n").unwrap();
    let (out, json) = tune_json(&["--connections", "10", "--proc-root", root.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(out.status.code(), Some(2), "{json}");
    assert_eq!(json["ok"], false);
    assert_eq!(json["checks"], serde_json::json!([]));
    let error = json["error"].as_str().expect("error");
    assert!(
        error.contains("sys/fs/file-max") && error.contains("not a number"),
        "{error}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(error), "{stderr}");
}
