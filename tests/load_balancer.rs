//! A rolling restart behind a real load balancer (HAProxy, from Debian's package): two holdfast
//! backends health-checked on `/healthz`, a client sending requests through the balancer the
//! whole time, and one backend stopped with SIGTERM. With `server.drain_delay` covering the
//! balancer's health check, not one request fails; without it, the balancer keeps sending new
//! connections to a closed port until its check notices, and some do. HAProxy is told not to
//! retry, so that it hides no refusal. And HAProxy in TCP mode with `send-proxy-v2` in front of
//! two nodes with `server.proxy_protocol`: the nodes see and log the real client address.

mod common;

use common::Server;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Health checks every 100 ms, down after 2 failures: out of rotation within ~300 ms.
const CHECK: &str = "inter 100ms fall 2 rise 2";

struct Haproxy {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Haproxy {
    fn start(name: &str, backends: &[SocketAddr]) -> Haproxy {
        let checks = "  option httpchk\n  http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host lb\n  \
                      http-check expect status 200\n";
        Haproxy::start_with(name, backends, "http", checks, "check")
    }

    /// A balancer in `mode`, with `checks` in its backend and `server_options` on each server.
    fn start_with(
        name: &str,
        backends: &[SocketAddr],
        mode: &str,
        checks: &str,
        server_options: &str,
    ) -> Haproxy {
        let binary = common::tools::apt_tool("haproxy", "haproxy");
        let dir = std::env::temp_dir().join(format!("holdfast-lb-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  server s{i} {a} {server_options}\n"))
            .collect();
        let close = if mode == "http" {
            "  option http-server-close\n"
        } else {
            ""
        };
        let config = format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode {mode}\n  timeout connect 2s\n  timeout client 10s\n  \
             timeout server 10s\n  retries 0\n\
             frontend fe\n  bind {addr}\n  default_backend be\n\
             backend be\n  balance roundrobin\n{close}{checks}  default-server {CHECK}\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let lb = Haproxy { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while lb.get().is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start serving");
            std::thread::sleep(Duration::from_millis(50));
        }
        lb
    }

    /// One request on a new connection through the balancer: its status.
    fn get(&self) -> std::io::Result<u16> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        Ok(common::read_response(&mut BufReader::new(s))?.status)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops one of two backends while requests flow; returns (answered 200, failed).
fn rolling_stop(name: &str, drain_delay: &str) -> (usize, usize) {
    let sets = [
        "server.workers=1",
        &format!("server.drain_delay={drain_delay}"),
        "server.shutdown_timeout=5s",
    ];
    let mut stopped = Server::start(&sets);
    let kept = Server::start(&sets);
    let lb = Haproxy::start(name, &[stopped.addr, kept.addr]);
    // Both in rotation before the stop.
    for _ in 0..20 {
        assert_eq!(lb.get().unwrap(), 200);
    }
    stopped.signal("TERM");
    let (mut ok, mut failed) = (0, 0);
    let mut exited_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until well after the stopped backend exited: the balancer must have noticed by then.
    while exited_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(500)) {
        assert!(
            Instant::now() < deadline,
            "the stopped backend did not exit"
        );
        match lb.get() {
            Ok(200) => ok += 1,
            _ => failed += 1,
        }
        if exited_at.is_none() && stopped.child.try_wait().unwrap().is_some() {
            exited_at = Some(Instant::now());
        }
    }
    assert_eq!(stopped.wait_exit(Duration::from_secs(1)), Some(0));
    (ok, failed)
}

#[test]
fn with_drain_delay_a_rolling_restart_fails_no_request() {
    let (ok, failed) = rolling_stop("delay", "1s");
    assert_eq!(failed, 0, "{failed} requests failed ({ok} answered)");
    assert!(ok > 50, "too few requests ({ok}) to show anything");
}

#[test]
fn without_drain_delay_the_balancer_sends_connections_to_a_closed_port() {
    // The control: the same stop with the listeners closed at once. If this ever passes with
    // no failure, the test above proves nothing.
    let (ok, failed) = rolling_stop("nodelay", "0s");
    assert!(failed > 0, "no request failed ({ok} answered)");
}

/// HAProxy in TCP mode sends a PROXY v2 header on every connection to two nodes (its health
/// checks too, with `check-send-proxy`); the nodes answer through it and log the client's own
/// address (a source address of our choosing), not the balancer's.
#[test]
fn behind_haproxy_send_proxy_v2_the_nodes_see_the_real_client() {
    let nodes: Vec<Server> = (0..2)
        .map(|_| Server::start(&["server.proxy_protocol=true", "log.access=stderr"]))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let lb = Haproxy::start_with(
        "proxy-v2",
        &addrs,
        "tcp",
        "",
        "send-proxy-v2 check check-send-proxy",
    );
    let mut ports = Vec::new();
    for _ in 0..6 {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&"127.0.0.9:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.connect(&lb.addr.into()).unwrap();
        let mut s: TcpStream = sock.into();
        ports.push(s.local_addr().unwrap().port());
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let resp = common::read_response(&mut BufReader::new(s)).unwrap();
        assert_eq!(resp.status, 200);
    }
    for port in ports {
        let client = format!("127.0.0.9:{port}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !nodes.iter().any(|n| n.log_text().contains(&client)) {
            assert!(
                Instant::now() < deadline,
                "{client} is in no node's access log"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Both nodes served (round robin), each seeing the client's address.
    for n in &nodes {
        assert!(n.log_text().contains("127.0.0.9:"), "{}", n.log_text());
    }
}
