//! wsload: holdfast's load client. Four modes: `idle` holds WebSocket connections open
//! (answering server pings, optionally sending its own heartbeats), `echo` keeps one message
//! in flight on each, `http-idle` holds keep-alive HTTP/1.1 connections; each over plain TCP or
//! TLS (with session resumption); `handshakes` opens and closes TLS connections back to back to
//! count handshakes per second (churn.rs). Connections open at a ramp rate from rotating source
//! addresses 127.0.0.2… on loopback; past the per-process file limit the run shards itself
//! over child processes. Reports HDR percentiles of connect time and round trips, counts of
//! failed and lost connections, as text or `--json`, with progress on stderr while it runs.
//!
//! This file owns start-up: parsing, checking arguments (exit 2 with one line when they are
//! wrong), the file limit and the shard decision, building the per-connection plan, and the
//! exit code (0 only when every connection connected and none was lost).

mod churn;
mod cli;
mod conn;
mod frame;
mod http;
mod link;
mod progress;
mod pusher;
mod report;
mod run;
mod shard;
mod sign;
mod signals;
mod tls;
mod track;
mod ws;

use clap::Parser;
use clap::error::ErrorKind;
use cli::{Cli, Mode};
use conn::{Kind, Plan};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use report::Summary;
use run::RunSpec;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match start(cli.mode) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wsload: {e}");
            ExitCode::from(2)
        }
    }
}

/// Help and version go out as clap prints them; a usage error becomes one line and exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprintln!(
                "wsload: a mode is needed: idle, echo, http-idle or handshakes (see wsload --help)"
            );
            ExitCode::from(2)
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("wsload: {first} (see wsload --help)");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft file limit to the hard one and returns it.
fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            hard
        }
        Err(_) => 1024,
    }
}

/// Checks the arguments, then runs in this process, as a shard, or as the parent of shards.
fn start(mode: Mode) -> Result<ExitCode, String> {
    // Handshakes share only the arguments: one process, no shards, no held connections.
    if let Mode::Handshakes(args) = &mode {
        raise_nofile();
        return churn::start(args);
    }
    let common = mode.common().clone();
    let default_url = if mode.is_http() {
        "http://127.0.0.1:8080/plaintext"
    } else {
        "ws://127.0.0.1:8080/ws"
    };
    let target = cli::parse_url(common.url.as_deref().unwrap_or(default_url), mode.is_http())?;
    if common.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let tls = target
        .tls
        .then(|| tls::plan(&common, &target.host))
        .transpose()?;
    let (kind, request, message, message_len) = match &mode {
        Mode::Idle(_) => (
            Kind::Idle,
            ws::upgrade_request(&target.path, &target.authority),
            Vec::new(),
            0,
        ),
        Mode::HttpIdle(_) => (
            Kind::HttpIdle,
            http::request(&target.path, &target.authority),
            Vec::new(),
            0,
        ),
        Mode::Echo(a) => (
            Kind::Echo,
            ws::upgrade_request(&target.path, &target.authority),
            ws::echo_message(a.size, a.text),
            a.size,
        ),
        Mode::Handshakes(_) => unreachable!("handshakes mode returned above"),
    };
    let (warmup, hold, heartbeat, message_bytes) = match &mode {
        Mode::Idle(a) | Mode::HttpIdle(a) => (Duration::ZERO, a.hold, a.heartbeat, 0),
        Mode::Echo(a) => (a.warmup, a.duration, Duration::ZERO, a.size),
        Mode::Handshakes(_) => unreachable!("handshakes mode returned above"),
    };
    // Source addresses 127.0.0.2… only make sense towards an IPv4 loopback target.
    let v4_loopback = target.addr.is_ipv4() && target.addr.ip().is_loopback();
    let sources = cli::sources_for(&common, &target, if v4_loopback { 200 } else { 0 })?;
    let total = common.connections;
    let limit = raise_nofile();

    // A shard runs its part; a top-level run splits itself when one process cannot hold it all.
    let (index, shards) = common.shard.unwrap_or_else(|| {
        let k = common.shards.unwrap_or(1).max(shard::needed(total, limit));
        (0, k.min(total as u32))
    });
    let connections = shard::share(total, index, shards);
    if connections as u64 + 64 > limit {
        return Err(format!(
            "{connections} connections need more than this process's {limit} files"
        ));
    }
    let spec = RunSpec {
        plan: Plan {
            kind,
            request,
            message,
            message_len,
            tls,
        },
        target: target.addr,
        connections,
        ramp: common.ramp as f64 * connections as f64 / total as f64,
        sources,
        stride: u64::from(shards),
        offset: u64::from(index),
        warmup,
        hold,
        heartbeat,
    };
    signals::install();

    // A shard: run its part and report in JSON lines to the parent.
    if common.shard.is_some() {
        signals::die_with_parent();
        let mut tick = shard::child_ticker(common.progress_every);
        return Ok(match run::run(spec, &mut tick) {
            Ok(outcome) => {
                shard::child_final(&outcome);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wsload: shard {index}/{shards}: {e}");
                ExitCode::from(1)
            }
        });
    }

    let mut summary = Summary {
        mode: mode.name(),
        connections: total as u64,
        stats: report::Stats::new(),
        held_seconds: 0.0,
        measured_seconds: 0.0,
        messages_per_sec: 0.0,
        message_bytes,
        tls: target.tls,
        shards,
        gave_up: false,
    };
    if shards == 1 {
        let mut progress =
            progress::Progress::new(total as u64, mode.name(), common.progress_every);
        let outcome = run::run(spec, &mut |c, phase| progress.tick(c, phase));
        progress.finish();
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                eprintln!("wsload: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        summary.stats = outcome.stats;
        summary.held_seconds = outcome.held_seconds;
        summary.gave_up = outcome.gave_up;
    } else {
        // Every shard's run is bounded by its own give-up deadline plus the close phase; the
        // parent waits that long for the largest shard (shard 0, whose plan `spec` is), and a
        // little more.
        let deadline = spec.give_up_after() + run::CLOSE_BOUND + Duration::from_secs(15);
        let merged =
            match shard::parent(shards, total, mode.name(), common.progress_every, deadline) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("wsload: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
        summary.stats = merged.stats;
        summary.held_seconds = merged.held_seconds;
        summary.messages_per_sec = merged.messages_per_sec;
        summary.gave_up = merged.gave_up;
    }
    summary.measured_seconds = summary.held_seconds;
    if shards == 1 && summary.held_seconds > 0.0 {
        summary.messages_per_sec = summary.stats.count.messages as f64 / summary.held_seconds;
    }
    if common.json {
        println!("{}", summary.json());
    } else {
        println!("{}", summary.text());
    }
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
