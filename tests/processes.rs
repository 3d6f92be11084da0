//! `server.processes`: the supervisor on the real binary. Processes share the port, `/metrics`
//! from any of them reports each one, a killed process is restarted, SIGHUP and SIGTERM are
//! passed on, TLS sessions resume at whichever process a connection lands on, and the processes
//! do not outlive a killed supervisor.

mod common;

use common::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn start(extra: &[&str]) -> Server {
    let mut sets = vec!["server.processes=2", "server.workers=1"];
    sets.extend_from_slice(extra);
    Server::start(&sets)
}

/// Each process's value of one series, by `process` label, from one scrape.
fn per_process(server: &Server, series: &str) -> Vec<u64> {
    let body = String::from_utf8(server.get("/metrics").body).unwrap();
    let (name, extra) = series.split_once('{').unwrap_or((series, "}"));
    let mut out = Vec::new();
    for p in 0.. {
        let labels = if extra == "}" {
            format!("{{process=\"{p}\"}}")
        } else {
            format!("{{process=\"{p}\",{extra}")
        };
        let prefix = format!("{name}{labels} ");
        match body.lines().find_map(|l| l.strip_prefix(&prefix)) {
            Some(v) => out.push(v.trim().parse().unwrap()),
            None => break,
        }
    }
    assert!(!out.is_empty(), "no per-process {series} in:\n{body}");
    out
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn processes_share_the_port_and_metrics_report_each_one() {
    // More connections than any process's file limit allows: the shortfall is one line from
    // the supervisor, not one from every process.
    let server = start(&["server.max_connections=4000000000000"]);
    for _ in 0..40 {
        assert_eq!(server.get("/plaintext").status, 200);
    }
    let accepted = per_process(&server, "holdfast_connections_accepted_total");
    assert_eq!(accepted.len(), 2, "two processes: {accepted:?}");
    assert!(accepted.iter().sum::<u64>() >= 40, "{accepted:?}");
    assert!(
        accepted.iter().all(|&a| a > 0),
        "SO_REUSEPORT spreads 40 connections over both processes: {accepted:?}"
    );
    let pids = per_process(&server, "holdfast_process_pid");
    assert!(pids.iter().all(|&p| p > 0 && alive(p)), "{pids:?}");
    assert_ne!(pids[0], pids[1]);
    assert_eq!(per_process(&server, "holdfast_workers"), vec![1, 1]);
    assert!(
        server
            .log_text()
            .contains("(processes: 2, workers each: 1)")
    );
    let log = server.log_text();
    assert_eq!(log.matches("may open at most").count(), 1, "{log}");
    assert!(log.contains("per process (÷ 2) = 2000000000000"), "{log}");
}

#[test]
fn a_killed_process_is_restarted_and_its_slot_cleared() {
    let server = start(&[]);
    let pids = per_process(&server, "holdfast_process_pid");
    let victim = pids[1];
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.wait_log("holdfast: warn: process 1 exited (killed by SIGKILL)"));
    assert!(
        server.wait_log("holdfast: process 1 is serving again"),
        "{}",
        server.log_text()
    );
    let restarts = per_process(&server, "holdfast_process_restarts_total");
    assert_eq!(restarts, vec![0, 1]);
    let new_pids = per_process(&server, "holdfast_process_pid");
    assert_eq!(new_pids[0], pids[0]);
    assert_ne!(new_pids[1], victim);
    assert!(alive(new_pids[1]));
    for _ in 0..20 {
        assert_eq!(server.get("/plaintext").status, 200);
    }
}

#[test]
fn sighup_and_sigterm_are_passed_on_and_the_drain_ends_cleanly() {
    let mut server = start(&["server.tls_listen=127.0.0.1:0"]);
    let pids = per_process(&server, "holdfast_process_pid");
    server.signal("HUP");
    assert!(server.wait_log("holdfast[0]: SIGHUP: reloaded tls.cert and tls.key"));
    assert!(server.wait_log("holdfast[1]: SIGHUP: reloaded tls.cert and tls.key"));
    // A keep-alive connection idle at the stop is closed by the process that holds it.
    let (mut reader, mut writer) = server.pair();
    write!(writer, "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(common::read_response(&mut reader).unwrap().status, 200);
    server.signal("TERM");
    assert!(server.wait_log("holdfast: draining 2 processes"));
    let mut rest = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut rest).unwrap(),
        0,
        "closed, nothing more"
    );
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(server.log_text().contains("holdfast: drained, exiting"));
    for p in pids {
        assert!(!alive(p), "process {p} outlived the drain");
    }
}

#[test]
fn processes_do_not_outlive_a_killed_supervisor() {
    let mut server = start(&[]);
    let pids = per_process(&server, "holdfast_process_pid");
    server.signal("KILL");
    let _ = server.wait_exit(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids {
        assert!(!alive(p), "process {p} outlived its supervisor");
    }
}

#[test]
fn tls_sessions_resume_at_any_process() {
    let server = start(&["server.tls_listen=127.0.0.1:0"]);
    let addr = server.tls_addr.unwrap();
    // The supervisor generated one certificate for all its processes, in its private directory.
    let cert_path = std::env::temp_dir()
        .join(format!("holdfast-{}", server.pid()))
        .join("cert.pem");
    let pem = std::fs::read(&cert_path).unwrap();
    let der = CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        );
        for i in 0..12 {
            let tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = ClientConnection::new(
                Arc::clone(&config),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut s = StreamOwned::new(conn, tcp);
            s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut body = Vec::new();
            let _ = s.read_to_end(&mut body);
            assert!(String::from_utf8_lossy(&body).ends_with("Hello, World!"));
            let expect = if i == 0 {
                HandshakeKind::Full
            } else {
                HandshakeKind::Resumed
            };
            assert_eq!(s.conn.handshake_kind(), Some(expect), "{version:?} #{i}");
        }
    }
    let resumed = per_process(&server, "holdfast_tls_handshakes_total{kind=\"resumed\"}");
    assert_eq!(resumed.iter().sum::<u64>(), 22);
    assert!(
        resumed.iter().all(|&r| r > 0),
        "resumptions happened at both processes: {resumed:?}"
    );
}

#[test]
fn bad_processes_value_is_a_one_line_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--set", "server.processes=0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("server.processes"), "{err}");
}
