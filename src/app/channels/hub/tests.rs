//! The hub's property tests: presence against a model of connections, and sequencing.

use super::*;
use proptest::prelude::*;

fn frame(s: &str) -> Arc<[u8]> {
    Arc::from(s.as_bytes())
}

/// A member event's frame, as `mail` shows it.
fn member_frame(message: &str) -> String {
    String::from_utf8_lossy(&pusher::frame(message)).into_owned()
}

/// Mail of worker 0, as the frames' text.
fn mail(hub: &Hub) -> Vec<String> {
    let mut m = Vec::new();
    hub.take_mail(0, &mut m);
    m.into_iter()
        .filter_map(|m| match m {
            Mail::Event(e) => Some(String::from_utf8_lossy(&e.frame).into_owned()),
            Mail::Acked { .. } | Mail::Fetched { .. } => None,
        })
        .collect()
}

proptest! {
    /// Against a model of who is connected: members are users with at least one
    /// connection, `member_added` comes exactly when a user's first connection joins and
    /// `member_removed` when the last leaves (to whoever is still subscribed), and the
    /// counts return to zero.
    #[test]
    fn presence_follows_the_first_and_last_connection_of_each_user(
        ops in proptest::collection::vec((0u8..4, any::<bool>()), 1..200)
    ) {
        let hub = Hub::new(vec![AppConfig::builtin()], &crate::config::Config::default().channels, 1);
        let ch: Arc<str> = "presence-p".into();
        let mut conns: Vec<Vec<u8>> = vec![Vec::new(); 4];
        let me = SocketId { origin: 1, n: 1 };
        for (user, join) in ops {
            let u = format!("u{user}");
            let before = conns[user as usize].len();
            if join {
                let r = hub.join(0, &ch, Some((&u, "{}")), 100, me, 0, Via::Socket);
                prop_assert!(r.is_ok());
                conns[user as usize].push(0);
                let m = mail(&hub);
                if before == 0 {
                    prop_assert_eq!(m, vec![member_frame(&pusher::member_added("presence-p", &u, "{}"))]);
                } else {
                    prop_assert!(m.is_empty());
                }
            } else if before > 0 {
                hub.leave(0, &ch, Some(&u), 0, false);
                conns[user as usize].pop();
                let m = mail(&hub);
                let others = conns.iter().map(Vec::len).sum::<usize>() > 0;
                if before == 1 && others {
                    prop_assert_eq!(m, vec![member_frame(&pusher::member_removed("presence-p", &u))]);
                } else {
                    prop_assert!(m.is_empty());
                }
            }
            let mut expected: Vec<String> = (0..4).filter(|&i| !conns[i].is_empty()).map(|i| format!("u{i}")).collect();
            let mut users = hub.users(0, "presence-p");
            users.sort();
            expected.sort();
            prop_assert_eq!(&users, &expected);
            let total: usize = conns.iter().map(Vec::len).sum();
            prop_assert_eq!(hub.occupancy(0, "presence-p").subscription_count, total as u64);
            prop_assert_eq!(hub.stats[0].presence_members.load(Ordering::Relaxed), expected.len() as i64);
        }
        for (i, c) in conns.iter().enumerate() {
            for _ in 0..c.len() {
                hub.leave(0, &ch, Some(&format!("u{i}")), 0, false);
            }
        }
        prop_assert!(hub.channels(0, "").is_empty());
        prop_assert_eq!(hub.stats[0].occupied_channels.load(Ordering::Relaxed), 0);
    }

    /// Events posted in any interleaving of channels keep each channel's sequence
    /// increasing in every mailbox, and a subscription sees only events after it joined.
    #[test]
    fn each_channel_is_sequenced_in_every_mailbox(
        posts in proptest::collection::vec(0u8..3, 1..100)
    ) {
        let hub = Hub::new(vec![AppConfig::builtin()], &crate::config::Config::default().channels, 2);
        let me = SocketId { origin: 1, n: 1 };
        let names: Vec<Arc<str>> = (0..3).map(|i| Arc::from(format!("c{i}"))).collect();
        let mut joined = Vec::new();
        for n in &names {
            joined.push(hub.join(0, n, None, 100, me, 0, Via::Socket).ok().unwrap().seq);
        }
        for &c in &posts {
            hub.publish(0, &names[c as usize], frame("e"), false, None, None, 0);
        }
        for w in 0..2 {
            let mut m = Vec::new();
            hub.take_mail(w, &mut m);
            prop_assert_eq!(m.len(), posts.len());
            let mut last = joined.clone();
            for (mail, &c) in m.iter().zip(&posts) {
                let Mail::Event(e) = mail else { panic!() };
                prop_assert_eq!(&*e.channel, &*names[c as usize]);
                prop_assert_eq!(e.seq, last[c as usize] + 1);
                last[c as usize] = e.seq;
            }
        }
    }
}

/// Expired caches of channels nobody is subscribed to are forgotten; live ones are not.
#[test]
fn the_sweep_forgets_expired_caches_only() {
    // Without a recovery history, which would keep the channels for its own TTL.
    let mut channels = crate::config::Config::default().channels;
    channels.history_size = 0;
    let hub = Hub::new(vec![AppConfig::builtin()], &channels, 1);
    let me = SocketId { origin: 1, n: 1 };
    let held: Arc<str> = "cache-held".into();
    hub.join(0, &held, None, 100, me, 0, Via::Socket)
        .ok()
        .unwrap();
    for name in ["cache-held", "cache-alone"] {
        hub.publish(0, name, frame("e"), true, None, None, 0);
    }
    let later = Instant::now() + CACHE_TTL + Duration::from_secs(1);
    hub.sweep(Instant::now());
    assert_eq!(
        lock(&hub.shards[0]).len()
            + hub
                .shards
                .iter()
                .skip(1)
                .map(|s| lock(s).len())
                .sum::<usize>(),
        2
    );
    hub.sweep(later);
    let left: Vec<String> = hub
        .shards
        .iter()
        .flat_map(|s| lock(s).keys().map(|k| k.1.to_string()).collect::<Vec<_>>())
        .collect();
    assert_eq!(
        left,
        ["cache-held"],
        "the subscribed channel stays, its cache gone"
    );
}

/// A stream that joins to recover while events are being published gets, from its replay and
/// then its live events, every event after its position exactly once and in order: the replay
/// and the join's sequence are taken under the same lock, whatever the publisher is doing.
#[test]
fn replay_and_live_events_meet_without_gap_or_repeat_under_concurrent_publishing() {
    let mut channels = crate::config::Config::default().channels;
    channels.history_size = 100_000;
    channels.history_memory = 1 << 30;
    let hub = Arc::new(Hub::new(vec![AppConfig::builtin()], &channels, 1));
    let ch: Arc<str> = "race".into();
    let me = SocketId { origin: 1, n: 1 };
    let event = |i: u32| pusher::frame(&pusher::event("e", "race", &format!("\"{i}\""), None));
    for i in 0..100 {
        hub.publish(0, "race", event(i), false, None, None, 0);
    }
    // The position a client had: after the 50th event.
    let from = {
        let shard = hub.shard(0, "race");
        shard[&(0, Arc::clone(&ch))].history.entries_positions()[49]
    };
    let publisher = {
        let hub = Arc::clone(&hub);
        std::thread::spawn(move || {
            for i in 100..20_000 {
                hub.publish(0, "race", event(i), false, None, None, 0);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(2));
    let mut mail = Vec::new();
    hub.take_mail(0, &mut mail); // what came before the join is not this stream's
    let joined = hub
        .join(
            0,
            &ch,
            None,
            100,
            me,
            0,
            Via::Stream {
                from: Some(from),
                fetched: None,
            },
        )
        .ok()
        .unwrap();
    publisher.join().unwrap();
    let Recovered::Events(replayed) = joined.recovered else {
        panic!("the history reaches back");
    };
    let mut seen: Vec<Pos> = replayed.iter().map(|e| e.pos).collect();
    hub.take_mail(0, &mut mail);
    for m in mail {
        if let Mail::Event(e) = m
            && e.seq > joined.seq
        {
            seen.push(e.sse.as_ref().expect("a positioned event").pos);
        }
    }
    let shard = hub.shard(0, "race");
    let all = shard[&(0, Arc::clone(&ch))].history.entries_positions();
    let want: Vec<Pos> = all.into_iter().filter(|p| *p > from).collect();
    assert_eq!(seen.len(), want.len());
    assert_eq!(seen, want);
    assert!(!replayed.is_empty(), "some events were replayed");
    assert!(seen.len() > replayed.len(), "and some came live");
}

/// A member that started after a stream's position recovers from what Redis held before its
/// own history and its own history after: every event once, in order; without Redis's part,
/// or with one that ends before this history begins, the recovery fails.
#[test]
fn a_fetched_history_fills_what_this_process_never_saw() {
    let channels = crate::config::Config::default().channels;
    let hub = Hub::new(vec![AppConfig::builtin()], &channels, 1);
    let ch: Arc<str> = "late".into();
    let frame = |i: u32| pusher::frame(&pusher::event("e", "late", &format!("\"{i}\""), None));
    for i in 10..15 {
        hub.publish(0, "late", frame(i), false, None, None, 0);
    }
    let start = hub.start_ms;
    let before = |k: u64| Pos {
        ms: start - 100 + k,
        n: 0,
    };
    let entry =
        |i: u32, pos: Pos| crate::app::channels::sse::entry(&frame(i), pos, pos.ms).unwrap();
    let from = before(0);
    // Redis's read: two events this process never saw, then (as it may) ones it did.
    let mut entries = vec![entry(1, before(10)), entry(2, before(20))];
    let local = hub.shard(0, "late")[&(0, Arc::clone(&ch))]
        .history
        .entries_positions();
    entries.extend(local.iter().take(2).map(|p| entry(99, *p)));
    let fetched = Fetched {
        entries,
        upto: Pos {
            ms: unix_ms(),
            n: u64::MAX,
        },
    };
    let join = |f: Option<&Fetched>| {
        let me = SocketId { origin: 1, n: 1 };
        let via = Via::Stream {
            from: Some(from),
            fetched: f,
        };
        let j = hub.join(0, &ch, None, 100, me, 0, via).ok().unwrap();
        hub.leave(0, &ch, None, 0, true);
        j.recovered
    };
    let Recovered::Events(got) = join(Some(&fetched)) else {
        panic!("Redis's part and this history cover everything after the position");
    };
    let mut want = vec![before(10), before(20)];
    want.extend(local);
    assert_eq!(got.iter().map(|e| e.pos).collect::<Vec<_>>(), want);
    assert!(matches!(join(None), Recovered::Failed));
    let stale = Fetched {
        upto: before(50),
        ..fetched
    };
    assert!(matches!(join(Some(&stale)), Recovered::Failed));
}
