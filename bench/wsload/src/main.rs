//! wsload: holdfast's WebSocket load client. `echo` mode opens N connections (from rotating
//! source addresses 127.0.0.2… on loopback), keeps one message of a given size in flight on
//! each, and reports messages per second and HDR percentiles of the round trip and of connect
//! time, as text or `--json`, with a progress line while it runs. Single-threaded on mio: pin
//! it to one core, as the benchmarks do, and measure the server's CPU beside it.

mod conn;
mod frame;
mod report;

use clap::{Parser, Subcommand};
use conn::{Conn, Phase, Plan};
use mio::{Events, Interest, Poll, Token};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "wsload", version, about = "WebSocket load client for holdfast")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Echo round trips: each connection keeps one message in flight.
    Echo(EchoArgs),
}

#[derive(Parser)]
struct EchoArgs {
    /// ws://HOST:PORT/PATH
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to measure, after the warm-up (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Traffic before measuring starts, once every connection is up.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// New connections per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    ramp: u64,
    /// Source addresses to rotate through, 127.0.0.2 upwards (0: let the kernel choose).
    /// Defaults to 200 for a loopback target.
    #[arg(long)]
    sources: Option<u32>,
    /// Send text frames instead of binary.
    #[arg(long)]
    text: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {s:?} (use ms, s or m)")),
    }
}

/// Splits ws://host:port/path into a socket address, the Host header and the path.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url must start with ws:// (got {url:?})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("--url {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {authority}: no address"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn main() -> ExitCode {
    let Mode::Echo(args) = Cli::parse().mode;
    match echo(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsload: {e}");
            ExitCode::from(2)
        }
    }
}

fn echo(args: EchoArgs) -> Result<ExitCode, String> {
    let (target, host, path) = parse_url(&args.url)?;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        if args.connections as u64 + 32 > hard {
            return Err(format!(
                "{} connections need more than this process's {hard} files (soft was {soft}); \
                 raise `ulimit -Hn` or run several wsload processes",
                args.connections
            ));
        }
    }
    let sources = args
        .sources
        .unwrap_or(if target.ip().is_loopback() { 200 } else { 0 });
    let payload = vec![b'x'; args.size];
    let opcode = if args.text {
        frame::OP_TEXT
    } else {
        frame::OP_BINARY
    };
    let plan = Plan {
        handshake: format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes(),
        message: frame::client_frame(opcode, &payload, [0x12, 0x34, 0x56, 0x78]),
        message_len: args.size,
    };

    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(4096);
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(args.connections);
    let mut stats = report::Stats::new();
    let mut progress = report::Progress::new();
    let start = Instant::now();
    let mut measure_from: Option<Instant> = None;
    // A hard stop, so a run never hangs: ramp time plus warm-up plus duration plus a minute.
    let ramp_time = if args.ramp > 0 {
        Duration::from_secs_f64(args.connections as f64 / args.ramp as f64)
    } else {
        Duration::ZERO
    };
    let give_up = start + ramp_time + args.warmup + args.duration + Duration::from_secs(60);

    loop {
        let now = Instant::now();
        // Open connections, at the ramp rate if one is set.
        let allowed = if args.ramp == 0 {
            args.connections
        } else {
            ((now - start).as_secs_f64() * args.ramp as f64) as usize + 1
        }
        .min(args.connections);
        while conns.len() < allowed {
            let i = conns.len();
            let source = (sources > 0).then(|| {
                IpAddr::V4(Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(127, 0, 0, 2)) + (i as u32 % sources),
                ))
            });
            match Conn::open(target, source) {
                Ok(mut c) => {
                    poll.registry()
                        .register(
                            &mut c.stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map_err(|e| format!("register: {e}"))?;
                    conns.push(Some(c));
                }
                Err(_) => {
                    stats.failed += 1;
                    conns.push(None);
                }
            }
        }
        let settled = conns.len() == args.connections
            && stats.connected + stats.failed >= args.connections as u64;
        if measure_from.is_none() && settled {
            measure_from = Some(now + args.warmup);
        }
        let measuring = measure_from.is_some_and(|m| now >= m);
        if let Some(m) = measure_from
            && now >= m + args.duration
        {
            break;
        }
        if now >= give_up {
            eprintln!("wsload: giving up: not every connection settled in time");
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in events.iter() {
            let Some(slot) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if let Some(c) = slot
                && !c.drive(&plan, &mut stats, measuring)
            {
                let _ = poll.registry().deregister(&mut c.stream);
                *slot = None;
            }
        }
        progress.tick(&stats, args.connections, measuring);
    }
    progress.finish();
    let measured = measure_from.map_or(Duration::ZERO, |m| {
        Instant::now().saturating_duration_since(m)
    });
    let open = conns
        .iter()
        .flatten()
        .filter(|c| c.phase == Phase::Open)
        .count();
    if args.json {
        println!(
            "{}",
            report::json(&stats, args.connections, args.size, measured)
        );
    } else {
        println!(
            "{}",
            report::text(&stats, args.connections, args.size, measured)
        );
    }
    Ok(if open == args.connections {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
