//! Owns the publisher: events sent as `POST /apps/{id}/events`, signed (sign.rs), over a few
//! keep-alive HTTP/1.1 connections, at a fixed total rate, round robin over the channels with
//! a sequence number per channel. Event i goes to channel i mod K as that channel's number
//! i div K. Each channel is published on one connection (channel c on connection c mod P)
//! with one request in flight, so a channel's events reach the server in publish order and
//! any disorder a subscriber sees is the server's. A connection that is busy when its next
//! event is due sends it as soon as the answer comes (the send time in the data is when it is
//! actually sent). Answers other than 200, and requests whose connection broke, are publish
//! errors, remembered per channel so the subscribers do not count those events as lost.
//!
//! With a shared channel and a broadcast interval it also publishes broadcasts: broadcast b
//! (the shared channel's sequence number b) is due at (b + 1) × the interval after the start,
//! on a connection of its own (one request in flight, so they reach the server in order).
//!
//! A response saying `Connection: close` (holdfast's `http.keepalive_requests`, say) has its
//! connection reopened before the next request, which is neither an error nor one of the
//! `MAX_REOPENS`.
//!
//! Against nchan (`--peer nchan`) the same events go out as `POST /pub/{channel}` with the
//! data as the body, unsigned (nchan.rs), and 201 or 202 is success. No broadcasts there
//! (`ChannelArgs::check_shared` refuses a shared channel with nchan).
//!
//! It is driven from outside (`turn`), by the parent of the subscriber shards or by the publish
//! mode's own loop, and ends by itself: all events answered, or the planned time plus
//! `PUBLISH_SLACK`, then up to `ANSWER_GRACE` for the answers in flight.

use crate::cli::{self, ChannelArgs, Common, Peer, PublishArgs, Target};
use crate::http;
use crate::link::Link;
use crate::nchan;
use crate::pusher;
use crate::report::{self, Stats, record};
use crate::sign::Signer;
use crate::signals;
use crate::tls::{self, TlsPlan};
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Beyond the planned publishing time, how long the publisher may run behind before it stops
/// sending.
pub const PUBLISH_SLACK: Duration = Duration::from_secs(30);
/// Then how long it waits for the answers to requests still in flight (which count as failed
/// if none comes, though the server may still have taken them).
pub const ANSWER_GRACE: Duration = Duration::from_secs(10);
/// Connections the publisher may reopen in one run (the server closing idle ones included).
const MAX_REOPENS: u32 = 1000;

pub struct PublishPlan {
    pub target: SocketAddr,
    pub authority: String,
    pub tls: Option<TlsPlan>,
    pub app_id: String,
    pub signer: Signer,
    pub channels: Vec<String>,
    pub rate: f64,
    pub events: u64,
    pub size: usize,
    pub publishers: usize,
    pub peer: Peer,
    /// The shared channel, how many broadcasts to it, and how often.
    pub shared: Option<String>,
    pub broadcasts: u64,
    pub broadcast_every: Duration,
}

impl PublishPlan {
    /// How long publishing takes at the planned rate (and broadcast interval).
    pub fn planned(&self) -> Duration {
        let small = if self.rate > 0.0 {
            Duration::from_secs_f64(self.events as f64 / self.rate)
        } else {
            Duration::ZERO
        };
        small.max(self.broadcast_every * self.broadcasts as u32)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Idle,
    /// A request is in flight: its event's index, and when it was sent (µs since the epoch).
    Busy(u64, u64),
}

struct PubConn {
    link: Link,
    state: State,
    inbuf: Vec<u8>,
    /// The next event index this connection publishes.
    cursor: u64,
    /// The server said `Connection: close`: reopen before sending again.
    closing: bool,
}

/// What was published, per channel: what the subscribers need to count what they lost.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Events sent on each channel (sequence numbers 0..n).
    pub sent: Vec<u64>,
    /// Per channel, the sequence numbers the server did not accept (sorted).
    pub failed: Vec<Vec<u64>>,
    /// Broadcasts sent on the shared channel (sequence numbers 0..n), and those not accepted.
    pub shared_sent: u64,
    pub shared_failed: Vec<u64>,
}

impl Published {
    /// Events the server accepted on `channel`.
    pub fn accepted(&self, channel: usize) -> u64 {
        self.sent[channel] - self.failed[channel].len() as u64
    }
}

pub struct Publisher {
    plan: PublishPlan,
    poll: Poll,
    events: Events,
    /// Connections 0..small publish the small events; the one after them, if any, broadcasts.
    conns: Vec<Option<PubConn>>,
    small: usize,
    scratch: Vec<u8>,
    epoch: Instant,
    /// When publishing started (None: not yet).
    started: Option<Instant>,
    /// Set when it has stopped: everything answered, or out of time.
    finished: Option<Instant>,
    reopens: u32,
    /// It said it is behind schedule.
    said_late: bool,
    pub stats: Stats,
    pub published: Published,
    /// Wall-clock ns of the first send.
    pub first_send_ns: u64,
}

impl Publisher {
    /// Opens the connections now, so they are ready when publishing starts.
    pub fn new(plan: PublishPlan) -> Result<Publisher, String> {
        let k = plan.channels.len();
        let p = if plan.events > 0 {
            plan.publishers.clamp(1, k)
        } else {
            0
        };
        let b = usize::from(plan.broadcasts > 0);
        let mut publisher = Publisher {
            poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
            events: Events::with_capacity(256),
            conns: (0..p + b).map(|_| None).collect(),
            small: p,
            scratch: vec![0u8; 64 * 1024],
            epoch: Instant::now(),
            started: None,
            finished: None,
            reopens: 0,
            said_late: false,
            stats: Stats::new(),
            published: Published {
                sent: vec![0; k],
                failed: vec![Vec::new(); k],
                ..Published::default()
            },
            first_send_ns: 0,
            plan,
        };
        for j in 0..p {
            let first = publisher.owned_from(j, 0);
            publisher.open(j, first)?;
        }
        if b > 0 {
            publisher.open(p, 0)?;
        }
        Ok(publisher)
    }

    fn open(&mut self, j: usize, cursor: u64) -> Result<(), String> {
        let mut link = Link::open(self.plan.target, None, self.plan.tls.as_ref())
            .map_err(|e| format!("publisher: {e}"))?;
        self.poll
            .registry()
            .register(
                &mut link.stream,
                Token(j),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        self.conns[j] = Some(PubConn {
            link,
            state: State::Connecting,
            inbuf: Vec::new(),
            cursor,
            closing: false,
        });
        Ok(())
    }

    /// The first event index at or after `i` that connection `j` publishes.
    fn owned_from(&self, j: usize, mut i: u64) -> u64 {
        let k = self.plan.channels.len() as u64;
        let p = self.small as u64;
        while (i % k) % p != j as u64 {
            i += 1;
        }
        i
    }

    /// Whether connection `j` is the broadcasts'.
    fn broadcasts_on(&self, j: usize) -> bool {
        j >= self.small
    }

    /// How many events connection `j` publishes in all (its cursor's end).
    fn quota(&self, j: usize) -> u64 {
        if self.broadcasts_on(j) {
            self.plan.broadcasts
        } else {
            self.plan.events
        }
    }

    /// Event (or broadcast) `i` of connection `j` was not accepted.
    fn failed(&mut self, j: usize, i: u64) {
        self.stats.count.publish_errors += 1;
        if self.broadcasts_on(j) {
            self.published.shared_failed.push(i);
        } else {
            let k = self.plan.channels.len() as u64;
            self.published.failed[(i % k) as usize].push(i / k);
        }
    }

    pub fn start(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    pub fn finished(&self) -> Option<Instant> {
        self.finished
    }

    /// When publishing started.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Sends what is due, then waits at most `wait` for answers and handles them.
    pub fn turn(&mut self, wait: Duration) -> Result<(), String> {
        // Done: answers still coming in count for nothing (they were counted as failed).
        if self.finished.is_some() {
            std::thread::sleep(wait);
            return Ok(());
        }
        let now = Instant::now();
        let mut timeout = wait;
        if let (Some(start), None) = (self.started, self.finished) {
            let elapsed = now - start;
            let late = elapsed >= self.plan.planned() + PUBLISH_SLACK;
            if late && !self.said_late {
                self.said_late = true;
                eprintln!(
                    "wsload: publisher: out of time, behind schedule: sending no more, waiting \
                     {}s for answers in flight",
                    ANSWER_GRACE.as_secs()
                );
            }
            if self.small > 0 && !late {
                let due =
                    ((elapsed.as_secs_f64() * self.plan.rate) as u64 + 1).min(self.plan.events);
                for j in 0..self.small {
                    self.send_due(j, due)?;
                }
                // Wake for the next event.
                if due < self.plan.events {
                    let next = start + Duration::from_secs_f64(due as f64 / self.plan.rate);
                    timeout = timeout.min(next.saturating_duration_since(now));
                }
            }
            if self.small < self.conns.len() && !late {
                // Broadcast b is due at (b + 1) intervals.
                let every = self.plan.broadcast_every.as_secs_f64();
                let due = ((elapsed.as_secs_f64() / every) as u64).min(self.plan.broadcasts);
                self.send_due(self.small, due)?;
                if due < self.plan.broadcasts {
                    let next = start + self.plan.broadcast_every * (due as u32 + 1);
                    timeout = timeout.min(next.saturating_duration_since(now));
                }
            }
            let out_of_time = elapsed >= self.plan.planned() + PUBLISH_SLACK + ANSWER_GRACE;
            let all_sent = late
                || (0..self.conns.len()).all(|j| {
                    self.conns[j]
                        .as_ref()
                        .is_none_or(|c| c.cursor >= self.quota(j))
                });
            let idle = self.conns.iter().all(|c| {
                c.as_ref()
                    .is_none_or(|c| !matches!(c.state, State::Busy(..)))
            });
            if (all_sent && idle) || out_of_time {
                if out_of_time && !(all_sent && idle) {
                    eprintln!("wsload: publisher: answers still missing; counted as failed");
                    for j in 0..self.conns.len() {
                        if let Some(c) = &self.conns[j]
                            && let State::Busy(i, _) = c.state
                        {
                            self.failed(j, i);
                        }
                    }
                }
                self.finished = Some(now);
                return Ok(());
            }
        }
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for j in ready {
            if let Err(e) = self.drive(j) {
                self.broken(j, &e)?;
            } else if self.conns[j].as_ref().is_some_and(|c| c.closing) {
                self.reopen(j)?;
            }
        }
        Ok(())
    }

    /// Sends connection `j`'s next event if it is idle and the event is due.
    fn send_due(&mut self, j: usize, due: u64) -> Result<(), String> {
        let Some(c) = &self.conns[j] else {
            return Ok(());
        };
        if c.state != State::Idle || c.closing || c.cursor >= due {
            return Ok(());
        }
        let i = c.cursor;
        let k = self.plan.channels.len() as u64;
        let broadcast = self.broadcasts_on(j);
        let (channel, seq) = if broadcast {
            (self.plan.shared.as_deref().expect("a shared channel"), i)
        } else {
            (self.plan.channels[(i % k) as usize].as_str(), i / k)
        };
        let sent_ns = pusher::wall_ns();
        if self.first_send_ns == 0 {
            self.first_send_ns = sent_ns;
        }
        let data = pusher::event_data(seq, sent_ns, self.plan.size);
        let request = match self.plan.peer {
            Peer::Pusher => self.pusher_request(channel, &data, sent_ns),
            Peer::Nchan => nchan::publish_request(channel, &data, &self.plan.authority),
        };
        let next = if broadcast {
            self.published.shared_sent = seq + 1;
            i + 1
        } else {
            self.published.sent[(i % k) as usize] = seq + 1;
            self.owned_from(j, i + 1)
        };
        let now_us = self.epoch.elapsed().as_micros() as u64;
        let c = self.conns[j].as_mut().expect("checked above");
        c.cursor = next;
        c.state = State::Busy(i, now_us);
        match c.link.send(&request) {
            Ok(()) => Ok(()),
            // Counted as failed, then reopened, by `broken`.
            Err(e) => self.broken(j, &e),
        }
    }

    /// `POST /apps/{id}/events`, signed, for one event on `channel`.
    fn pusher_request(&self, channel: &str, data: &str, sent_ns: u64) -> Vec<u8> {
        let body = pusher::publish_body(channel, data);
        let path = format!("/apps/{}/events", self.plan.app_id);
        let query = self
            .plan
            .signer
            .query("POST", &path, &body, sent_ns / 1_000_000_000);
        let mut request = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.plan.authority,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        request
    }

    fn drive(&mut self, j: usize) -> io::Result<()> {
        let Some(c) = self.conns[j].as_mut() else {
            return Ok(());
        };
        if c.state == State::Connecting {
            if !c.link.connected()? {
                return Ok(());
            }
            c.state = State::Idle;
        }
        c.link.flush()?;
        let eof = c.link.recv(&mut self.scratch, &mut c.inbuf)?;
        loop {
            let c = self.conns[j].as_mut().expect("still open");
            let Some((status, len)) = http::response_head(&c.inbuf)? else {
                break;
            };
            if c.inbuf.len() < len {
                break;
            }
            let closing = http::says_close(&c.inbuf);
            c.inbuf.drain(..len);
            let State::Busy(i, sent_us) = c.state else {
                return Err(io::Error::other("a response to no request"));
            };
            c.state = State::Idle;
            let now_us = self.epoch.elapsed().as_micros() as u64;
            record(&mut self.stats.publish_us, now_us.saturating_sub(sent_us));
            let ok = match self.plan.peer {
                Peer::Pusher => status == 200,
                Peer::Nchan => nchan::accepted(status),
            };
            match (ok, self.broadcasts_on(j)) {
                (true, true) => self.stats.count.broadcasts += 1,
                (true, false) => self.stats.count.published += 1,
                (false, _) => {
                    self.failed(j, i);
                    say_status_once(status);
                }
            }
            // The server closes after this answer: nothing is in flight, so `turn` reopens
            // the connection (not counted as broken) rather than send the next request into
            // the closing one, whose end of stream is then expected.
            if closing {
                let c = self.conns[j].as_mut().expect("still open");
                c.closing = true;
                return Ok(());
            }
        }
        if eof {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Connection `j` broke: its request in flight (if any) failed; it is reopened, within
    /// `MAX_REOPENS` for the whole run.
    fn broken(&mut self, j: usize, why: &io::Error) -> Result<(), String> {
        let Some(mut c) = self.conns[j].take() else {
            return Ok(());
        };
        let _ = self.poll.registry().deregister(&mut c.link.stream);
        if let State::Busy(i, _) = c.state {
            self.failed(j, i);
            crate::conn::say_once(&FIRST_BREAK, "publisher: first broken request", why);
        }
        self.reopens += 1;
        if self.reopens > MAX_REOPENS {
            return Err(format!(
                "publisher: more than {MAX_REOPENS} connections broke; last: {why}"
            ));
        }
        self.open(j, c.cursor)
    }

    /// Connection `j` is idle and the server is closing it: a new one takes its place.
    fn reopen(&mut self, j: usize) -> Result<(), String> {
        let Some(mut c) = self.conns[j].take() else {
            return Ok(());
        };
        let _ = self.poll.registry().deregister(&mut c.link.stream);
        self.open(j, c.cursor)
    }

    /// Gives up at once (a signal): nothing more is sent.
    pub fn stop(&mut self) {
        if self.finished.is_none() {
            self.finished = Some(Instant::now());
        }
    }
}

static FIRST_BREAK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static FIRST_STATUS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn say_status_once(status: u16) {
    if !FIRST_STATUS.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("wsload: publisher: first answer that is not 200: {status}");
    }
}

/// How long publishing takes at the planned rate (and broadcast interval), from the flags.
pub fn planned(args: &ChannelArgs) -> Duration {
    let small = if args.publish_rate > 0.0 {
        Duration::from_secs_f64(args.events() as f64 / args.publish_rate)
    } else {
        Duration::ZERO
    };
    small.max(args.broadcast_every * args.broadcasts() as u32)
}

/// The publisher's plan from the flags, towards the subscribers' server (TLS if they use it).
pub fn plan(common: &Common, target: &Target, args: &ChannelArgs) -> Result<PublishPlan, String> {
    args.check_shared()?;
    if !(args.publish_rate >= 0.0 && args.publish_rate.is_finite()) {
        return Err("--publish-rate must be 0 or more".into());
    }
    if args.publish_rate > 0.0 && args.events() == 0 {
        return Err("nothing to publish: --events or --publish-duration is 0".into());
    }
    if !args.publishing() {
        return Err(
            "nothing to publish: --publish-rate is 0 and no broadcasts (--shared-channel, \
             --broadcast-every, --publish-duration)"
                .into(),
        );
    }
    let tls = target
        .tls
        .then(|| tls::plan(common, &target.host))
        .transpose()?;
    Ok(PublishPlan {
        target: target.addr,
        authority: target.authority.clone(),
        tls,
        app_id: args.app_id.clone(),
        signer: Signer::new(&args.key, &args.secret),
        channels: pusher::channel_names(&args.prefix, args.channels),
        rate: args.publish_rate,
        events: if args.publish_rate > 0.0 {
            args.events()
        } else {
            0
        },
        size: args.size,
        publishers: args.publishers as usize,
        peer: args.peer,
        shared: args.shared_channel.clone(),
        broadcasts: args.broadcasts(),
        broadcast_every: args.broadcast_every,
    })
}

/// The publish mode: publishes, prints the summary; exit 0 when every event was accepted.
pub fn start(args: &PublishArgs) -> Result<ExitCode, String> {
    let common = &args.common;
    let target = cli::parse_url(
        common.url.as_deref().unwrap_or("http://127.0.0.1:8080/"),
        true,
    )?;
    let plan = plan(common, &target, &args.channel)?;
    let events = plan.events;
    let broadcasts = plan.broadcasts;
    signals::install();
    let mut p = Publisher::new(plan)?;
    p.start();
    let mut last = Instant::now();
    while p.finished().is_none() {
        if signals::stop_requested() {
            p.stop();
            break;
        }
        p.turn(Duration::from_millis(20))?;
        if last.elapsed() >= common.progress_every {
            last = Instant::now();
            let c = &p.stats.count;
            eprintln!(
                "wsload: published {}/{events} (errors {})",
                c.published, c.publish_errors
            );
        }
    }
    let c = p.stats.count;
    let seconds = match (p.started(), p.finished()) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if seconds > 0.0 {
        c.published as f64 / seconds
    } else {
        0.0
    };
    if common.json {
        let v = serde_json::json!({
            "mode": "publish",
            "channels": args.channel.channels,
            "events_planned": events,
            "events_published": c.published,
            "publish_errors": c.publish_errors,
            "publish_seconds": (seconds * 1000.0).round() / 1000.0,
            "publish_per_sec": rate.round(),
            "publish_us": report::percentiles(&p.stats.publish_us),
            "broadcasts_planned": broadcasts,
            "broadcasts_published": c.broadcasts,
        });
        println!("{v}");
    } else {
        println!(
            "publish: {} of {events} events on {} channel(s) in {seconds:.2}s ({rate:.0}/s), \
             errors {}\nAPI round trip µs: {}",
            c.published,
            args.channel.channels,
            c.publish_errors,
            report::line(&p.stats.publish_us)
        );
        if broadcasts > 0 {
            println!("broadcasts: {} of {broadcasts}", c.broadcasts);
        }
    }
    Ok(
        if c.published == events && c.broadcasts == broadcasts && c.publish_errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}
