//! TLS on the real binary over loopback, with rustls's client and `openssl s_client`:
//! handshakes for both versions, ALPN, resumption (tickets, session IDs, across processes that
//! share a ticket key file, across a key rotation), key updates both ways, close_notify, wss,
//! SIGHUP certificate reload, and bad input on the TLS port.

mod common;

use common::{Server, read_response_ext};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A certificate and key for localhost written as PEM files in a fresh directory.
struct Certs {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("holdfast-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut certs = Certs {
            der: CertificateDer::from(vec![]),
            dir,
        };
        certs.der = certs.write_new();
        certs
    }

    /// Writes a new self-signed certificate over the files; returns it.
    fn write_new(&self) -> CertificateDer<'static> {
        let g = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(self.cert(), g.cert.pem()).unwrap();
        std::fs::write(self.key(), g.signing_key.serialize_pem()).unwrap();
        g.cert.der().clone()
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn sets(&self) -> Vec<String> {
        vec![
            "server.tls_listen=127.0.0.1:0".into(),
            format!("tls.cert={}", self.cert().display()),
            format!("tls.key={}", self.key().display()),
        ]
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(certs: &Certs, extra: &[&str]) -> Server {
    let mut sets = certs.sets();
    sets.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    Server::start(&refs)
}

fn client_config(
    roots: &[&CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> Arc<ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

fn default_client(certs: &Certs) -> Arc<ClientConfig> {
    client_config(&[&certs.der], rustls::DEFAULT_VERSIONS, &["http/1.1"])
}

fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ClientConnection::new(
        Arc::clone(config),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One request on an open TLS stream; returns (status, body).
fn request(stream: &mut TlsStream, req: &str) -> (u16, Vec<u8>) {
    stream.write_all(req.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut reader = BufReader::new(ReadHalf(stream));
    let resp = read_response_ext(&mut reader, false, false).expect("a response");
    assert!(reader.buffer().is_empty(), "nothing beyond the response");
    (resp.status, resp.body)
}

fn get(stream: &mut TlsStream, path: &str) -> (u16, Vec<u8>) {
    request(
        stream,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
}

/// Publishes event `e` with `data` on `channel` through the signed HTTP API on `api`.
fn publish_over(api: &mut TlsStream, channel: &str, data: &str) {
    let body = format!(r#"{{"name":"e","channel":"{channel}","data":"{data}"}}"#);
    let path = "/apps/app-id/events";
    let q = common::pusher::signed_query("POST", path, &[], &body, ("app-key", "app-secret"), 0);
    let req = format!(
        "POST {path}?{q} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(request(api, &req).0, 200);
}

/// Lends a TLS stream to a BufReader for one response.
struct ReadHalf<'a>(&'a mut TlsStream);

impl Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// Reads until the server ends the stream: Ok(()) only for a clean close_notify (rustls reports
/// a TCP close without one as UnexpectedEof).
fn read_to_close_notify(stream: &mut TlsStream) -> std::io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    Ok(rest)
}

/// Runs `openssl s_client` with `args`, feeding `input` (each item written after `pause`), and
/// returns everything it printed.
fn s_client(addr: SocketAddr, args: &[&str], input: &[&str], pause: Duration) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg("localhost")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    for item in input {
        std::thread::sleep(pause);
        let _ = stdin.write_all(item.as_bytes());
        let _ = stdin.flush();
    }
    std::thread::sleep(pause);
    drop(stdin);
    let killer = {
        let pid = child.id();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            let _ = Command::new("kill").arg(pid.to_string()).status();
        })
    };
    let out = child.wait_with_output().unwrap();
    drop(killer);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GET_PLAINTEXT: &str = "GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[test]
fn tls13_and_tls12_handshakes_with_alpn() {
    let certs = Certs::new("versions");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    for (version, expect) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        // HTTP/2 is preferred when the client offers it (tests/http2.rs speaks it)...
        let both = client_config(&[&certs.der], &[version], &["h2", "http/1.1"]);
        let s = connect(addr, &both).unwrap();
        assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
        drop(s);
        // ...and HTTP/1.1 is what a client offering only it gets.
        let config = client_config(&[&certs.der], &[version], &["http/1.1"]);
        let mut s = connect(addr, &config).unwrap();
        assert_eq!(s.conn.protocol_version(), Some(expect));
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(get(&mut s, "/plaintext"), (200, b"Hello, World!".to_vec()));
        // Keep-alive works inside TLS: a second request, and a body both ways.
        let (status, body) = request(
            &mut s,
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        assert_eq!((status, body), (200, b"hello".to_vec()));
    }
    // No protocol in common: the handshake fails (RFC 7301 §3.2) and is counted.
    let spdy_only = client_config(&[&certs.der], rustls::DEFAULT_VERSIONS, &["spdy/3.1"]);
    assert!(connect(addr, &spdy_only).is_err());
    assert_eq!(
        server.metric("holdfast_tls_failures_total{reason=\"no_alpn\"}"),
        1
    );
    assert_eq!(
        server.metric("holdfast_tls_handshakes_total{kind=\"full\"}"),
        4
    );
}

#[test]
fn old_versions_are_refused() {
    let certs = Certs::new("old");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    let out = s_client(addr, &["-tls1_1"], &[], Duration::from_millis(200));
    assert!(
        !out.contains("Cipher is ECDHE"),
        "TLS 1.1 must not complete:\n{out}"
    );
    assert!(out.contains("alert"), "{out}");
    assert!(server.metric("holdfast_tls_failures_total{reason=\"incompatible\"}") >= 1);

    // tls.min_version = 1.3 refuses TLS 1.2 as well.
    let strict = start(&certs, &["tls.min_version=\"1.3\""]);
    let tls12 = client_config(&[&certs.der], &[&rustls::version::TLS12], &["http/1.1"]);
    assert!(connect(strict.tls_addr.unwrap(), &tls12).is_err());
    let tls13 = client_config(&[&certs.der], &[&rustls::version::TLS13], &["http/1.1"]);
    assert!(connect(strict.tls_addr.unwrap(), &tls13).is_ok());
}

#[test]
fn the_server_picks_aes_128_gcm_over_the_clients_first_choice() {
    let certs = Certs::new("suites");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    // OpenSSL lists AES-256-GCM-SHA384 first in both versions; the server's order wins.
    let out = s_client(addr, &["-tls1_2"], &[], Duration::from_millis(200));
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "TLS 1.2 suite:\n{out}"
    );
    let out = s_client(addr, &["-tls1_3"], &[], Duration::from_millis(200));
    assert!(
        out.contains("Cipher is TLS_AES_128_GCM_SHA256"),
        "TLS 1.3 suite:\n{out}"
    );
    // A client that offers only the others still gets one of them.
    let only = ["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"];
    let out = s_client(addr, &only, &[], Duration::from_millis(200));
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305"),
        "{out}"
    );
    let only = ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"];
    let out = s_client(addr, &only, &[], Duration::from_millis(200));
    assert!(out.contains("Cipher is TLS_AES_256_GCM_SHA384"), "{out}");
}

#[test]
fn rustls_client_resumes_with_tickets_on_both_versions() {
    let certs = Certs::new("resume");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&[&certs.der], &[version], &["http/1.1"]);
        let mut first = connect(addr, &config).unwrap();
        assert_eq!(get(&mut first, "/plaintext").0, 200); // reads the ticket too
        assert_eq!(first.conn.handshake_kind(), Some(HandshakeKind::Full));
        let mut second = connect(addr, &config).unwrap();
        assert_eq!(second.conn.handshake_kind(), Some(HandshakeKind::Resumed));
        assert_eq!(get(&mut second, "/plaintext").0, 200);
    }
    assert_eq!(
        server.metric("holdfast_tls_handshakes_total{kind=\"resumed\"}"),
        2
    );
}

#[test]
fn openssl_resumes_tickets_and_session_ids() {
    let certs = Certs::new("openssl-resume");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    let sess = certs.dir.join("session.pem");
    let sess = sess.to_str().unwrap();
    let pause = Duration::from_millis(300);
    for flags in [&["-tls1_3"][..], &["-tls1_2"], &["-tls1_2", "-no_ticket"]] {
        let mut args = flags.to_vec();
        args.extend(["-sess_out", sess]);
        let first = s_client(addr, &args, &[GET_PLAINTEXT], pause);
        assert!(first.contains("\nNew, TLSv1."), "{flags:?}:\n{first}");
        assert!(first.contains("Hello, World!"), "{first}");
        let mut args = flags.to_vec();
        args.extend(["-sess_in", sess]);
        let second = s_client(addr, &args, &[GET_PLAINTEXT], pause);
        assert!(second.contains("\nReused, TLSv1."), "{flags:?}:\n{second}");
        assert!(second.contains("Hello, World!"), "{second}");
    }
}

#[test]
fn a_shared_ticket_key_file_resumes_across_processes_and_rotations() {
    let certs = Certs::new("shared-keys");
    let keys = certs.dir.join("tickets.keys");
    std::fs::write(
        &keys,
        "# holdfast ticket keys: first line seals\n\
         6b8f1c1d5e0a4b7c9d2e3f405162738495a6b7c8d9eafb0c1d2e3f4051627384\n",
    )
    .unwrap();
    let key_set = format!("tls.ticket_key_file={}", keys.display());
    let a = start(&certs, &[&key_set]);
    let b = start(&certs, &[&key_set]);
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&[&certs.der], &[version], &["http/1.1"]);
        let mut first = connect(a.tls_addr.unwrap(), &config).unwrap();
        assert_eq!(get(&mut first, "/plaintext").0, 200);
        // rustls's client looks tickets up by server name, so it offers A's ticket to B.
        let second = connect(b.tls_addr.unwrap(), &config).unwrap();
        assert_eq!(
            second.conn.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{version:?}: a ticket from process A resumes at process B"
        );
    }
    // A process with its own keys cannot open them.
    let c = start(&certs, &[]);
    let config = client_config(&[&certs.der], &[&rustls::version::TLS13], &["http/1.1"]);
    let mut first = connect(a.tls_addr.unwrap(), &config).unwrap();
    assert_eq!(get(&mut first, "/plaintext").0, 200);
    let other = connect(c.tls_addr.unwrap(), &config).unwrap();
    assert_eq!(other.conn.handshake_kind(), Some(HandshakeKind::Full));

    // Rotation as documented: the new key goes on top, the old one stays below. B re-reads the
    // file on SIGHUP and seals with the new key; tickets A issued under the old key still
    // resume at B, and B's new tickets resume at A once A has re-read the file too.
    let config = client_config(&[&certs.der], &[&rustls::version::TLS13], &["http/1.1"]);
    let mut old = connect(a.tls_addr.unwrap(), &config).unwrap();
    assert_eq!(get(&mut old, "/plaintext").0, 200);
    let text = std::fs::read_to_string(&keys).unwrap();
    std::fs::write(
        &keys,
        format!("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n{text}"),
    )
    .unwrap();
    b.signal("HUP");
    assert!(b.wait_log("SIGHUP"));
    let resumed = connect(b.tls_addr.unwrap(), &config).unwrap();
    assert_eq!(resumed.conn.handshake_kind(), Some(HandshakeKind::Resumed));
}

#[test]
fn generated_ticket_keys_still_resume_after_a_rotation() {
    let certs = Certs::new("rotation");
    let server = start(&certs, &["tls.ticket_rotation=1s"]);
    let addr = server.tls_addr.unwrap();
    let config = client_config(&[&certs.der], &[&rustls::version::TLS13], &["http/1.1"]);
    let mut first = connect(addr, &config).unwrap();
    assert_eq!(get(&mut first, "/plaintext").0, 200);
    // Past one rotation period: the ticket was sealed by what is now the previous key.
    std::thread::sleep(Duration::from_millis(1300));
    let mut second = connect(addr, &config).unwrap();
    assert_eq!(second.conn.handshake_kind(), Some(HandshakeKind::Resumed));
    assert_eq!(get(&mut second, "/plaintext").0, 200);
}

#[test]
fn server_key_updates_follow_the_byte_threshold_and_traffic_continues() {
    let certs = Certs::new("ku-bytes");
    let server = start(&certs, &["tls.key_update_bytes=64KiB"]);
    let config = client_config(&[&certs.der], &[&rustls::version::TLS13], &["http/1.1"]);
    let mut s = connect(server.tls_addr.unwrap(), &config).unwrap();
    let body = vec![b'x'; 16 * 1024];
    for _ in 0..10 {
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let (status, echoed) = request(&mut s, std::str::from_utf8(&body).unwrap());
        assert_eq!((status, echoed.len()), (200, body.len()));
    }
    // Ten responses of a little over 16 KiB: the threshold is crossed after the 4th and 8th.
    assert_eq!(server.metric("holdfast_tls_key_updates_sent_total"), 2);
    // rustls's client answers each update_requested with its own KeyUpdate.
    assert_eq!(server.metric("holdfast_tls_key_updates_received_total"), 2);
    assert_eq!(get(&mut s, "/plaintext").0, 200);
}

#[test]
fn server_key_updates_follow_the_interval_seen_by_openssl() {
    let certs = Certs::new("ku-interval");
    let server = start(&certs, &["tls.key_update_interval=1s"]);
    let addr = server.tls_addr.unwrap();
    // Connect, stay idle for 2.6 s, then send a request.
    let out = s_client(
        addr,
        &["-msg", "-tls1_3"],
        &["", GET_PLAINTEXT],
        Duration::from_millis(1300),
    );
    let before_response = out.split("Hello, World!").next().unwrap();
    let updates = before_response
        .lines()
        .filter(|l| l.starts_with("<<< TLS 1.3, Handshake") && l.ends_with("KeyUpdate"))
        .count();
    assert!((2..=3).contains(&updates), "{updates} KeyUpdates:\n{out}");
    assert!(out.contains("Hello, World!"), "traffic continues:\n{out}");
    assert!(server.metric("holdfast_tls_key_updates_sent_total") >= 2);
}

#[test]
fn client_key_updates_with_and_without_update_requested() {
    let certs = Certs::new("ku-client");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    // openssl: `k` sends KeyUpdate(update_not_requested), `K` asks us to update too (its
    // command letters work only without -ign_eof).
    let out = s_client(
        addr,
        &["-msg", "-tls1_3"],
        &["k\n", "K\n", GET_PLAINTEXT],
        Duration::from_millis(300),
    );
    let ours = out
        .lines()
        .filter(|l| l.starts_with("<<< TLS 1.3, Handshake") && l.ends_with("KeyUpdate"))
        .count();
    assert_eq!(ours, 1, "we answer only the update that asked:\n{out}");
    assert!(out.contains("Hello, World!"), "{out}");
    assert_eq!(server.metric("holdfast_tls_key_updates_received_total"), 2);
    assert_eq!(server.metric("holdfast_tls_key_updates_sent_total"), 0);

    // rustls's client: refresh_traffic_keys() sends an update_requested KeyUpdate.
    let config = client_config(&[&certs.der], &[&rustls::version::TLS13], &["http/1.1"]);
    let mut s = connect(addr, &config).unwrap();
    assert_eq!(get(&mut s, "/plaintext").0, 200);
    s.conn.refresh_traffic_keys().unwrap();
    assert_eq!(get(&mut s, "/plaintext").0, 200);
    assert_eq!(server.metric("holdfast_tls_key_updates_received_total"), 3);
}

#[test]
fn every_orderly_close_sends_close_notify() {
    let certs = Certs::new("close-notify");
    let server = start(&certs, &["http.keepalive_timeout=1s"]);
    let addr = server.tls_addr.unwrap();
    let config = default_client(&certs);

    // Connection: close.
    let mut s = connect(addr, &config).unwrap();
    let (status, _) = request(
        &mut s,
        "GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(read_to_close_notify(&mut s).unwrap().is_empty());

    // Idle timeout.
    let mut s = connect(addr, &config).unwrap();
    assert_eq!(get(&mut s, "/plaintext").0, 200);
    let started = std::time::Instant::now();
    assert!(read_to_close_notify(&mut s).unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(800));

    // The peer's close_notify is answered with ours.
    let mut s = connect(addr, &config).unwrap();
    assert_eq!(get(&mut s, "/plaintext").0, 200);
    s.conn.send_close_notify();
    s.conn.complete_io(&mut s.sock).unwrap();
    assert!(read_to_close_notify(&mut s).unwrap().is_empty());

    // Drain on SIGTERM.
    let mut idle = connect(addr, &config).unwrap();
    assert_eq!(get(&mut idle, "/plaintext").0, 200);
    server.signal("TERM");
    assert!(read_to_close_notify(&mut idle).unwrap().is_empty());
}

#[test]
fn a_bare_fin_gets_no_close_notify_but_a_request_before_it_is_answered() {
    let certs = Certs::new("fin");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    let config = default_client(&certs);

    // A request and then the client's FIN, no close_notify: the whole answer still comes.
    let mut s = connect(addr, &config).unwrap();
    s.write_all(GET_PLAINTEXT.as_bytes()).unwrap();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // The answer may leave in the turn before the FIN is seen, and then nothing
            // follows it: a plain TCP close, which rustls reports as UnexpectedEof.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("Hello, World!"),
        "{text}"
    );

    // A FIN after a finished exchange: closed with nothing sent, so no RST comes back from the
    // client's closed socket, and it counts as the peer's close.
    let before = server.metric("holdfast_connections_closed_total{reason=\"peer_closed\"}");
    let mut s = connect(addr, &config).unwrap();
    assert_eq!(get(&mut s, "/plaintext").0, 200);
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let err = read_to_close_notify(&mut s).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let closed = "holdfast_connections_closed_total{reason=\"peer_closed\"}";
    server
        .wait_metric(closed, Duration::from_secs(5), |n| n > before)
        .expect("not counted as peer_closed");
}

#[test]
fn garbage_and_plaintext_on_the_tls_port_close_only_that_connection() {
    let certs = Certs::new("garbage");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    let config = default_client(&certs);
    let mut bystander = connect(addr, &config).unwrap();
    assert_eq!(get(&mut bystander, "/plaintext").0, 200);

    // Plaintext HTTP: a 400 that says what to do, then close.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(GET_PLAINTEXT.as_bytes()).unwrap();
    let mut reader = BufReader::new(plain);
    let resp = read_response_ext(&mut reader, false, false).unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("https://"));
    assert_eq!(reader.fill_buf().unwrap().len(), 0, "closed after the 400");

    // Bytes that are not TLS records: an alert at most, then close.
    for garbage in [
        &b"\x16\x03\x01\xff\xff\x00\x00garbage"[..],
        b"\x00\x01\x02\x03\x04\x05",
        // A handshake record holding the start of an impossibly long handshake message: rustls
        // keeps it as a partial message, which once made the error path panic inside rustls.
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut g = TcpStream::connect(addr).unwrap();
        g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        g.write_all(garbage).unwrap();
        let mut rest = Vec::new();
        let _ = g.read_to_end(&mut rest);
        assert!(rest.len() < 64, "at most an alert: {rest:?}");
    }
    // A truncated handshake followed by EOF.
    let mut t = TcpStream::connect(addr).unwrap();
    t.write_all(b"\x16\x03\x01\x00\x40\x01\x00").unwrap();
    drop(t);

    assert_eq!(get(&mut bystander, "/plaintext").0, 200);
    assert_eq!(
        server.metric("holdfast_tls_failures_total{reason=\"plaintext_http\"}"),
        1
    );
    // The 400 "use https://" is a response like any other.
    assert_eq!(server.metric("holdfast_responses_total{code=\"4xx\"}"), 1);
    assert_eq!(
        server.metric("holdfast_tls_failures_total{reason=\"bad_record\"}"),
        3
    );
    assert_eq!(server.metric("holdfast_protocol_panics_total"), 0);
}

#[test]
fn a_stalled_handshake_is_closed_at_the_header_timeout() {
    let certs = Certs::new("stall");
    let server = start(&certs, &["http.header_timeout=500ms"]);
    let mut s = TcpStream::connect(server.tls_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x16\x03\x01\x00\x40\x01\x00").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        server.metric("holdfast_tls_failures_total{reason=\"timeout\"}"),
        1
    );
}

#[test]
fn wss_echo_over_tls() {
    let certs = Certs::new("wss");
    let server = start(&certs, &[]);
    let config = default_client(&certs);
    let stream = connect(server.tls_addr.unwrap(), &config).unwrap();
    let url = format!("wss://localhost:{}/ws", server.tls_addr.unwrap().port());
    let (mut ws, resp) = tungstenite::client(url.as_str(), stream).expect("upgrade over TLS");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "über TLS", &"x".repeat(70_000)] {
        ws.send(tungstenite::Message::text(text)).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text(text));
    }
    ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake: {e}"),
        }
    }
    assert_eq!(server.metric("holdfast_ws_upgrades_total"), 1);
    assert_eq!(server.metric("holdfast_responses_total{code=\"1xx\"}"), 1);
}

/// Pusher channels on the TLS listener: subscribers over wss get events published through the
/// API (each frame encrypted per connection), in order, and a publish over TLS works too.
#[test]
fn pusher_channels_over_tls() {
    let certs = Certs::new("wss-channels");
    let server = start(&certs, &[]);
    let config = default_client(&certs);
    let tls = server.tls_addr.unwrap();
    let mut subs: Vec<_> = (0..3)
        .map(|_| {
            let stream = connect(tls, &config).unwrap();
            let url = format!("wss://localhost:{}/app/app-key?protocol=7", tls.port());
            let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
            let hello = ws.read().unwrap().into_text().unwrap();
            assert!(hello.contains("pusher:connection_established"), "{hello}");
            ws.send(tungstenite::Message::text(
                r#"{"event":"pusher:subscribe","data":{"channel":"secure-news"}}"#,
            ))
            .unwrap();
            let ok = ws.read().unwrap().into_text().unwrap();
            assert!(ok.contains("subscription_succeeded"), "{ok}");
            ws
        })
        .collect();
    let mut api = connect(tls, &config).unwrap();
    for i in 0..20 {
        publish_over(&mut api, "secure-news", &i.to_string());
    }
    for ws in &mut subs {
        for i in 0..20 {
            let m = ws.read().unwrap().into_text().unwrap();
            assert_eq!(
                m.as_str(),
                format!(r#"{{"event":"e","channel":"secure-news","data":"{i}"}}"#)
            );
        }
    }
}

/// Server-Sent Events on the TLS listener: the chunked stream inside TLS carries the events
/// (encrypted per connection) and `curl` reads them as any client would.
#[test]
fn server_sent_events_over_tls() {
    let certs = Certs::new("sse");
    let server = start(&certs, &[]);
    let config = default_client(&certs);
    let tls = server.tls_addr.unwrap();
    let mut stream = connect(tls, &config).unwrap();
    stream
        .write_all(
            b"GET /app/app-key/events?channel=secure-feed HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .unwrap();
    stream.flush().unwrap();
    let mut curl = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "10", "--cacert"])
        .arg(certs.cert())
        .arg(format!(
            "https://localhost:{}/app/app-key/events?channel=secure-feed",
            tls.port()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let mut curl_out = BufReader::new(curl.stdout.take().unwrap());
    let mut first = String::new();
    curl_out.read_line(&mut first).unwrap();
    assert_eq!(first, "retry: 3000\n");
    let mut api = connect(tls, &config).unwrap();
    for i in 0..5 {
        publish_over(&mut api, "secure-feed", &i.to_string());
    }
    // The rustls stream: read until all five events are in the decoded text.
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let want = r#"data: {"channel":"secure-feed","data":"4"}"#;
    while !String::from_utf8_lossy(&text).contains(want) {
        let n = stream.read(&mut buf).expect("stream data");
        assert!(n > 0, "the stream ended");
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Type: text/event-stream"), "{text}");
    let mut seen = String::new();
    while !seen.contains(want) {
        let mut line = String::new();
        assert!(
            curl_out.read_line(&mut line).unwrap() > 0,
            "curl ended: {seen}"
        );
        seen.push_str(&line);
    }
    for i in 0..5 {
        let line = format!(r#"data: {{"channel":"secure-feed","data":"{i}"}}"#);
        assert!(text.contains(&line) && seen.contains(&line), "{i}");
    }
    let _ = curl.kill();
    let _ = curl.wait();
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let certs = Certs::new("reload");
    let server = start(&certs, &[]);
    let addr = server.tls_addr.unwrap();
    let old = certs.der.clone();
    let mut established = connect(addr, &default_client(&certs)).unwrap();
    assert_eq!(get(&mut established, "/plaintext").0, 200);

    let new = certs.write_new();
    server.signal("HUP");
    assert!(server.wait_log("reloaded tls.cert and tls.key"));
    let both = client_config(&[&old, &new], rustls::DEFAULT_VERSIONS, &["http/1.1"]);
    let fresh = connect(addr, &both).unwrap();
    assert_eq!(fresh.conn.peer_certificates().unwrap()[0], new);
    assert_eq!(get(&mut established, "/plaintext").0, 200, "still up");

    // A bad file keeps the current certificate and says why.
    std::fs::write(certs.cert(), "not a certificate").unwrap();
    server.signal("HUP");
    assert!(server.wait_log("keeping the current certificate"));
    let again = connect(addr, &both).unwrap();
    assert_eq!(again.conn.peer_certificates().unwrap()[0], new);
    assert_eq!(get(&mut established, "/plaintext").0, 200);
}

#[test]
fn bad_certificate_files_are_a_one_line_error_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("holdfast-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    for (cert, key, needle) in [
        (
            Path::new("/nonexistent/c.pem"),
            junk.as_path(),
            "tls.cert: cannot read /nonexistent/c.pem",
        ),
        (junk.as_path(), junk.as_path(), "tls.cert: cannot read"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["serve", "--set", "server.listen=127.0.0.1:0"])
            .args(["--set", "server.tls_listen=127.0.0.1:0"])
            .args(["--set", &format!("tls.cert={}", cert.display())])
            .args(["--set", &format!("tls.key={}", key.display())])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
