//! Nodes joined through a real Redis (`[cluster] redis`, CHANNELS.md §5): Debian's
//! `redis-server`, started, stopped and restarted by the tests on loopback, and holdfast nodes
//! started as processes. Events published on either node reach every subscriber on both, once
//! and in one order; counts and presence are cluster-wide; an SSE client recovers on the other
//! node; Redis going away and coming back, and a node killed with SIGKILL, are survived.

mod common;

use common::pusher::{api, publish};
use common::sse::Stream;
use common::ws::{Ws, next, pusher, quiet, send, subscribe};
use common::{Server, tools};
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of our own on a loopback port, killed by PID when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start(name: &str) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("holdfast-redis-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            child: None,
            port,
            dir,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let binary = tools::apt_tool("redis-server", "redis-server");
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // DEBUG SLEEP, from loopback only: a test makes Redis busy with it.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("cluster.redis=redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node of the cluster on `redis`, one worker (so that one process is one member).
fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut sets = vec![url.as_str(), "server.workers=1", "log.level=debug"];
    sets.extend_from_slice(extra);
    let srv = Server::start(&sets);
    assert!(
        srv.wait_log("cluster: joined through Redis"),
        "{}",
        srv.log_text()
    );
    srv
}

/// Waits until `srv` hears `n` members (itself included).
fn wait_members(srv: &Server, n: u64) {
    if let Err(seen) = srv.wait_metric("holdfast_cluster_members", Duration::from_secs(10), |v| {
        v == n
    }) {
        panic!("members: {seen}, not {n}\n{}", srv.log_text());
    }
}

/// The next `pusher` event on `ws` that is not a protocol message.
fn event(ws: &mut Ws) -> Value {
    loop {
        let m = next(ws);
        if !m["event"].as_str().unwrap_or("").starts_with("pusher") {
            return m;
        }
    }
}

fn presence(ws: &mut Ws, socket: &str, user: &str) -> Value {
    let data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
    let auth = common::ws::auth_for(socket, "presence-room", Some(&data));
    subscribe(ws, "presence-room", Some(&auth), Some(&data))
}

#[test]
fn events_counts_and_presence_are_cluster_wide() {
    let redis = Redis::start("wide");
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    wait_members(&a, 2);
    wait_members(&b, 2);

    let (mut on_a, sa) = pusher(&a);
    let (mut on_b, sb) = pusher(&b);
    assert_ne!(
        sa.split('.').next(),
        sb.split('.').next(),
        "socket_ids of two nodes differ: {sa} {sb}"
    );
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(
            subscribe(ws, "news", None, None)["event"],
            "pusher_internal:subscription_succeeded"
        );
    }
    // Counts: both subscribers, from either node.
    for srv in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, info) = api(
                srv,
                "GET",
                "/apps/app-id/channels/news",
                &[("info", "subscription_count")],
                "",
            );
            if info["subscription_count"] == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "count never reached 2: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Events published on both nodes, interleaved, reach both subscribers once each, in the
    // same order.
    for i in 0..20 {
        let srv = if i % 2 == 0 { &a } else { &b };
        let (status, body) = publish(srv, "news", "e", &i.to_string(), None);
        assert_eq!(status, 200, "{body}");
    }
    let got_a: Vec<String> = (0..20)
        .map(|_| event(&mut on_a)["data"].as_str().unwrap().to_string())
        .collect();
    let got_b: Vec<String> = (0..20)
        .map(|_| event(&mut on_b)["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got_a, got_b, "one order everywhere");
    let mut sorted: Vec<u32> = got_a.iter().map(|d| d.parse().unwrap()).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "each exactly once");
    // Published on one node, in order on the other.
    for i in 0..20 {
        publish(&a, "news", "seq", &i.to_string(), None);
    }
    for i in 0..20 {
        assert_eq!(event(&mut on_b)["data"], i.to_string());
        assert_eq!(event(&mut on_a)["data"], i.to_string());
    }
    // socket_id excludes across nodes.
    publish(&b, "news", "solo", "x", Some(&sa));
    assert_eq!(event(&mut on_b)["event"], "solo");
    assert!(quiet(&mut on_a, Duration::from_millis(300)));

    // Presence: u1 on both nodes is one member; u2 on b is announced on a.
    let (mut watcher, sw) = pusher(&a);
    let joined = presence(&mut watcher, &sw, "watcher");
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let (mut u1_a, s1a) = pusher(&a);
    presence(&mut u1_a, &s1a, "u1");
    assert_eq!(next(&mut watcher)["event"], "pusher_internal:member_added");
    let (mut u1_b, s1b) = pusher(&b);
    presence(&mut u1_b, &s1b, "u1");
    let (mut u2_b, s2b) = pusher(&b);
    presence(&mut u2_b, &s2b, "u2");
    let added = next(&mut watcher);
    assert_eq!(added["event"], "pusher_internal:member_added", "{added}");
    assert_eq!(
        serde_json::from_str::<Value>(added["data"].as_str().unwrap()).unwrap()["user_id"],
        "u2",
        "u1's second connection (on b) is no new member"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, users) = api(
            &a,
            "GET",
            "/apps/app-id/channels/presence-room/users",
            &[],
            "",
        );
        if users["users"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "users: {users}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // u1 leaves a: still on b, nobody hears; then leaves b too: removed.
    drop(u1_a);
    assert!(quiet(&mut watcher, Duration::from_millis(500)));
    send(
        &mut u1_b,
        json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}}),
    );
    let removed = next(&mut watcher);
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    assert!(
        removed["data"].as_str().unwrap().contains("\"u1\""),
        "{removed}"
    );
    drop(u2_b);
}

#[test]
fn an_event_stream_recovers_on_another_node() {
    let redis = Redis::start("recover");
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    wait_members(&a, 2);
    let target = "/app/app-key/events?channel=feed";
    let mut s = Stream::open(&a, target, "");
    assert_eq!(s.status, 200);
    for i in 0..3 {
        publish(&b, "feed", "e", &i.to_string(), None);
    }
    let mut last = String::new();
    for i in 0..3 {
        let m = s.event();
        assert_eq!(m.json()["data"], i.to_string());
        last = m.id.unwrap();
    }
    drop(s);
    for i in 3..8 {
        publish(&a, "feed", "e", &i.to_string(), None);
    }
    // Reconnect to the other node with the last ID seen: exactly the five missed, in order.
    let mut s = Stream::open(&b, target, &format!("Last-Event-ID: {last}\r\n"));
    assert_eq!(s.status, 200);
    for i in 3..8 {
        let m = s.event();
        assert_eq!(m.event.as_deref(), Some("e"), "{m:?}");
        assert_eq!(m.json()["data"], i.to_string());
    }
    publish(&a, "feed", "e", "live", None);
    assert_eq!(s.event().json()["data"], "live");
}

/// Sends one command to Redis on a connection of its own and leaves it running.
fn redis_command(redis: &Redis, args: &[&str]) -> TcpStream {
    use std::io::Write;
    let mut c = TcpStream::connect(redis.addr()).unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd += &format!("${}\r\n{a}\r\n", a.len());
    }
    c.write_all(cmd.as_bytes()).unwrap();
    c
}

#[test]
fn an_event_whose_answer_redis_kept_too_long_is_delivered_once() {
    // Redis busy for 3 s (DEBUG SLEEP): the node's wait for the batch's answer times out
    // after 2 s, so it delivers the event itself, not knowing whether Redis will run it. Redis
    // does run it when it wakes, and the subscription (which waits up to 5 s) hears it: the
    // node must know its own batch and not deliver it twice.
    let redis = Redis::start("busy");
    let a = node(&redis, &[]);
    let (mut ws, _) = pusher(&a);
    subscribe(&mut ws, "news", None, None);
    let _busy = redis_command(&redis, &["DEBUG", "SLEEP", "3"]);
    std::thread::sleep(Duration::from_millis(100));
    let (status, body) = publish(&a, "news", "e", "during", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(event(&mut ws)["data"], "during");
    assert!(
        a.wait_log("cluster: Redis did not take a batch"),
        "{}",
        a.log_text()
    );
    // Redis is awake again and has run the batch; the next event is the next one delivered.
    std::thread::sleep(Duration::from_millis(1500));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = publish(&a, "news", "e", "after", None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", a.log_text());
    }
    let next = event(&mut ws);
    assert_eq!(next["data"], "after", "delivered twice?\n{}", a.log_text());
    assert!(quiet(&mut ws, Duration::from_millis(500)), "nothing more");
}

#[test]
fn a_node_started_later_recovers_from_the_history_in_redis() {
    let redis = Redis::start("later");
    let a = node(&redis, &[]);
    let target = "/app/app-key/events?channel=feed";
    let mut s = Stream::open(&a, target, "");
    for i in 0..2 {
        publish(&a, "feed", "e", &i.to_string(), None);
    }
    let mut last = String::new();
    for _ in 0..2 {
        last = s.event().id.unwrap();
    }
    drop(s);
    for i in 2..6 {
        publish(&a, "feed", "e", &i.to_string(), None);
    }
    // b starts after all of them: its own history knows none; Redis's has them.
    let b = node(&redis, &[]);
    wait_members(&b, 2);
    let mut s = Stream::open(&b, target, &format!("Last-Event-ID: {last}\r\n"));
    assert_eq!(s.status, 200);
    for i in 2..6 {
        let m = s.event();
        assert_eq!(m.event.as_deref(), Some("e"), "{m:?}");
        assert_eq!(m.json()["data"], i.to_string());
    }
    publish(&a, "feed", "e", "live", None);
    assert_eq!(s.event().json()["data"], "live", "then live, nothing twice");
    // A position from long before the TTL: recovery_failed, as on a single node.
    let mut s = Stream::open(&b, target, "Last-Event-ID: 1000-0\r\n");
    let first = s.event();
    assert_eq!(
        first.event.as_deref(),
        Some("holdfast:recovery_failed"),
        "{first:?}"
    );
    let metrics = b.metrics_text();
    assert!(
        metrics.contains("holdfast_sse_recoveries_total{app=\"app-id\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[test]
fn redis_going_away_and_a_killed_node_are_survived() {
    let mut redis = Redis::start("faults");
    let a = node(&redis, &[]);
    let mut b = node(&redis, &[]);
    wait_members(&a, 2);
    let (mut on_a, _) = pusher(&a);
    subscribe(&mut on_a, "news", None, None);
    let (mut on_b, _) = pusher(&b);
    subscribe(&mut on_b, "news", None, None);

    // Redis stops: a's subscribers still get a's events; what could not cross is counted,
    // and said once.
    redis.stop();
    assert!(a.wait_log("cluster: lost Redis"), "{}", a.log_text());
    let before = a.metric("holdfast_channel_bus_errors_total");
    for i in 0..5 {
        let (status, body) = publish(&a, "news", "alone", &i.to_string(), None);
        assert_eq!(status, 200, "{body}");
    }
    for i in 0..5 {
        assert_eq!(event(&mut on_a)["data"], i.to_string());
    }
    assert!(a.metric("holdfast_channel_bus_errors_total") >= before + 5);
    assert_eq!(a.metric("holdfast_cluster_up"), 0);
    assert_eq!(
        a.log_text().matches("cluster: lost Redis").count(),
        1,
        "said once"
    );

    // Redis is back: both nodes rejoin by themselves and events cross again.
    redis.restart();
    assert!(a.wait_log("cluster: back in touch"), "{}", a.log_text());
    assert!(b.wait_log("cluster: back in touch"), "{}", b.log_text());
    wait_members(&a, 2);
    publish(&a, "news", "again", "crossed", None);
    on_b.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let m = match on_b.read() {
        Ok(tungstenite::Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
        other => panic!("{other:?}\na:\n{}\nb:\n{}", a.log_text(), b.log_text()),
    };
    assert_eq!(
        (m["event"].as_str(), m["data"].as_str()),
        (Some("again"), Some("crossed"))
    );

    // b is frozen (SIGSTOP: it reads nothing from Redis): a's publishes are answered and
    // delivered as fast as ever, since nothing on a waits for another node.
    assert_eq!(event(&mut on_a)["data"], "crossed");
    b.signal("STOP");
    let started = Instant::now();
    for i in 0..50 {
        let (status, body) = publish(&a, "news", "while-frozen", &i.to_string(), None);
        assert_eq!(status, 200, "{body}");
    }
    for i in 0..50 {
        assert_eq!(event(&mut on_a)["data"], i.to_string());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a frozen node slowed the others: {:?}",
        started.elapsed()
    );
    b.signal("CONT");
    for i in 0..50 {
        assert_eq!(
            event(&mut on_b)["data"],
            i.to_string(),
            "b catches up, in order"
        );
    }
    assert_eq!(
        b.log_text().matches("cluster: lost Redis").count(),
        1,
        "being stopped and continued is no lost connection"
    );

    // b is killed: its presence member leaves on a within MEMBER_SILENCE (10 s) and a tick.
    let (mut watcher, sw) = pusher(&a);
    presence(&mut watcher, &sw, "watcher");
    let (mut gone, sg) = pusher(&b);
    presence(&mut gone, &sg, "doomed");
    watcher
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match watcher.read() {
        Ok(tungstenite::Message::Text(t)) => assert!(t.contains("member_added"), "{t}"),
        other => panic!("{other:?}\na:\n{}\nb:\n{}", a.log_text(), b.log_text()),
    }
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    watcher
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let removed = next(&mut watcher);
    assert_eq!(
        removed["event"], "pusher_internal:member_removed",
        "{removed}"
    );
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(13), "took {took:?}");
    wait_members(&a, 1);
}
