//! wsload: holdfast's load client. Six modes: `idle` holds WebSocket connections open
//! (answering server pings, optionally sending its own heartbeats), `echo` keeps one message
//! in flight on each, `http-idle` holds keep-alive HTTP/1.1 connections; each over plain TCP or
//! TLS (with session resumption); `handshakes` opens and closes TLS connections back to back to
//! count handshakes per second (churn.rs); `subscribe` holds channel subscribers (holdfast's
//! Pusher channels or nginx's nchan, over WebSocket or SSE) and counts what is delivered to
//! them, publishing through the server's HTTP API itself with `--publish-rate` (coord.rs,
//! publish.rs); `publish` is that publisher alone.
//! Connections open at a ramp rate from rotating source addresses 127.0.0.2… on loopback; past
//! the per-process file limit the run shards itself over child processes. Reports HDR
//! percentiles of connect time, round trips and delivery latency, counts of failed and lost
//! connections and of lost, duplicated and reordered deliveries, as text or `--json`, with
//! progress on stderr while it runs.
//!
//! This file owns start-up: parsing, checking arguments (exit 2 with one line when they are
//! wrong), the file limit and the shard decision, building the per-connection plan, and the
//! exit code (0 only when every connection connected and none was lost; for subscribe, also
//! no delivery lost, duplicated, out of order or misrouted, and every event published).

mod churn;
mod cli;
mod conn;
mod coord;
mod frame;
mod http;
mod link;
mod nchan;
mod progress;
mod publish;
mod pusher;
mod report;
mod run;
mod server;
mod shard;
mod sign;
mod signals;
mod sse;
mod sub;
mod tls;
mod track;
mod ws;

use clap::Parser;
use clap::error::ErrorKind;
use cli::{Cli, Mode};
use conn::{Kind, Plan};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use report::{SubReport, Summary};
use run::RunSpec;
use std::process::ExitCode;
use std::time::Duration;
use sub::SubPlan;

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
                "wsload: a mode is needed: idle, echo, http-idle, handshakes, subscribe or publish (see wsload --help)"
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

/// A --metrics-url: plain http:// to an address (the page is fetched with a blocking GET).
fn metrics_url(url: &str) -> Result<server::MetricsUrl, String> {
    let t = cli::parse_url(url, true).map_err(|e| e.replace("--url", "--metrics-url"))?;
    if t.tls {
        return Err(format!("--metrics-url {url}: plain http:// only"));
    }
    Ok(server::MetricsUrl {
        url: url.to_string(),
        addr: t.addr,
        authority: t.authority,
        path: t.path,
    })
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
    // Publishing alone: one process, a few connections.
    if let Mode::Publish(args) = &mode {
        return publish::start(args);
    }
    let common = mode.common().clone();
    let sse = matches!(&mode, Mode::Subscribe(a) if a.sse);
    let default_url = match &mode {
        Mode::Subscribe(_) if sse => "http://127.0.0.1:8080/",
        Mode::Subscribe(_) => "ws://127.0.0.1:8080/",
        _ if mode.is_http() => "http://127.0.0.1:8080/plaintext",
        _ => "ws://127.0.0.1:8080/ws",
    };
    let target = cli::parse_url(
        common.url.as_deref().unwrap_or(default_url),
        mode.is_http() || sse,
    )?;
    if common.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let tls = target
        .tls
        .then(|| tls::plan(&common, &target.host))
        .transpose()?;
    // Subscribe: the channels, what subscribes to them, and whether wsload publishes too.
    let mut sub_plan = None;
    let mut channel_args = None;
    let (kind, request, message, message_len) = match &mode {
        Mode::Subscribe(a) => {
            let names = pusher::channel_names(&a.channel.prefix, a.channel.channels);
            a.channel.check_shared()?;
            let (plan, upgrade) = SubPlan::new(
                names,
                a.channel.shared_channel.clone(),
                a.sse,
                a.channel.peer,
                &a.channel.key,
                &target.authority,
            );
            sub_plan = Some(plan);
            channel_args = Some(a);
            (Kind::Subscribe, upgrade, Vec::new(), 0)
        }
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
        Mode::Handshakes(_) | Mode::Publish(_) => unreachable!("returned above"),
    };
    if let Some(a) = channel_args {
        let rate = a.channel.publish_rate;
        if !(rate >= 0.0 && rate.is_finite()) {
            return Err("--publish-rate must be 0 or more".into());
        }
        if rate > 0.0 && a.channel.events() == 0 {
            return Err("nothing to publish: --events or --publish-duration is 0".into());
        }
        let watching =
            !(a.server_pid.is_empty() && a.other_pid.is_empty() && a.metrics_url.is_empty());
        if watching && !a.channel.publishing() {
            return Err(
                "--server-pid, --other-pid and --metrics-url need --publish-rate or \
                 --broadcast-every"
                    .into(),
            );
        }
        if a.server_pid.is_empty() && !(a.other_pid.is_empty() && a.metrics_url.is_empty()) {
            return Err("--other-pid and --metrics-url go with --server-pid".into());
        }
        if let Some(url) = &a.publish_url {
            cli::parse_url(url, true).map_err(|e| e.replace("--url", "--publish-url"))?;
        }
        for url in &a.metrics_url {
            metrics_url(url)?;
        }
    }
    let publishing = channel_args.is_some_and(|a| a.channel.publishing());
    let (warmup, hold, heartbeat, message_bytes) = match &mode {
        Mode::Idle(a) | Mode::HttpIdle(a) => (Duration::ZERO, a.hold, a.heartbeat, 0),
        Mode::Echo(a) => (a.warmup, a.duration, Duration::ZERO, a.size),
        Mode::Subscribe(a) => {
            let hold = a.hold.unwrap_or(if publishing {
                Duration::ZERO
            } else {
                Duration::from_secs(10)
            });
            (Duration::ZERO, hold, Duration::ZERO, a.channel.size)
        }
        Mode::Handshakes(_) | Mode::Publish(_) => unreachable!("returned above"),
    };
    // Under a coordinator a shard holds until its parent says; this only bounds it.
    let shard_hold = match channel_args {
        Some(a) if publishing => {
            hold + a.publish_delay
                + publish::planned(&a.channel)
                + publish::PUBLISH_SLACK
                + coord::SETTLE_BOUND
                + Duration::from_secs(30)
        }
        _ => hold,
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
    // A publishing run keeps the parent for the publisher: its subscribers run in shards.
    let in_shards = shards > 1 || publishing;
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
            sub: sub_plan,
        },
        target: target.addr,
        connections,
        ramp: common.ramp as f64 * connections as f64 / total as f64,
        sources,
        stride: u64::from(shards),
        offset: u64::from(index),
        warmup,
        hold: shard_hold,
        heartbeat,
        coordinated: publishing && common.shard.is_some(),
    };
    signals::install();

    // A shard: run its part and report in JSON lines to the parent.
    if common.shard.is_some() {
        signals::die_with_parent();
        // A coordinated shard reports often, since its parent acts on what it says.
        let every = if spec.coordinated {
            coord::listen_for_end();
            common.progress_every.min(Duration::from_millis(100))
        } else {
            common.progress_every
        };
        let mut tick = shard::child_ticker(every);
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
        sub: channel_args.map(|a| SubReport {
            channels: a.channel.channels,
            sse,
            publishing,
            events_planned: if publishing && a.channel.publish_rate > 0.0 {
                a.channel.events()
            } else {
                0
            },
            publish_seconds: 0.0,
            delivery_seconds: 0.0,
            shared: a.channel.shared_channel.clone(),
            broadcasts_planned: if publishing {
                a.channel.broadcasts()
            } else {
                0
            },
            broadcast_every: a.channel.broadcast_every.as_secs_f64(),
        }),
        server: None,
    };
    if !in_shards {
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
        if let Some(sub) = &mut summary.sub {
            let (from, to) = (
                summary.stats.first_delivery_ns,
                summary.stats.last_delivery_ns,
            );
            if from > 0 && to > from {
                sub.delivery_seconds = (to - from) as f64 / 1e9;
            }
        }
    } else {
        // Every shard's run is bounded by its own give-up deadline plus the close phase; the
        // parent waits that long for the largest shard (shard 0, whose plan `spec` is), and a
        // little more.
        let deadline = spec.give_up_after() + run::CLOSE_BOUND + Duration::from_secs(15);
        let mut coordinator = match channel_args {
            Some(a) if publishing => {
                let publish_target = match &a.publish_url {
                    Some(url) => cli::parse_url(url, true)?,
                    None => target.clone(),
                };
                let plan = publish::plan(&common, &publish_target, &a.channel)?;
                let publisher = publish::Publisher::new(plan)?;
                let watch = if a.server_pid.is_empty() {
                    None
                } else {
                    let urls = a
                        .metrics_url
                        .iter()
                        .map(|u| metrics_url(u))
                        .collect::<Result<Vec<_>, _>>()?;
                    Some(server::Watch::new(
                        a.server_pid.clone(),
                        a.other_pid.clone(),
                        urls,
                        a.metrics_series.clone(),
                    ))
                };
                Some(coord::Coordinator::new(
                    publisher,
                    total,
                    hold,
                    a.settle,
                    a.publish_delay,
                    watch,
                ))
            }
            _ => None,
        };
        let conductor = coordinator.as_mut().map(|c| c as &mut dyn shard::Conductor);
        let every = common.progress_every;
        let merged = match shard::parent(shards, total, mode.name(), every, deadline, conductor) {
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
        if let (Some(c), Some(sub)) = (&coordinator, &mut summary.sub) {
            let p = &c.publisher;
            summary.stats.count.published = p.stats.count.published;
            summary.stats.count.broadcasts = p.stats.count.broadcasts;
            summary.stats.count.publish_errors = p.stats.count.publish_errors;
            let _ = summary.stats.publish_us.add(&p.stats.publish_us);
            if let (Some(from), Some(to)) = (p.started(), p.finished()) {
                sub.publish_seconds = to.saturating_duration_since(from).as_secs_f64();
            }
        }
        summary.server = coordinator
            .as_ref()
            .and_then(|c| c.server.as_ref())
            .map(|w| w.json());
        if let Some(sub) = &mut summary.sub {
            let from = match &coordinator {
                Some(c) => c.publisher.first_send_ns,
                None => summary.stats.first_delivery_ns,
            };
            let to = summary.stats.last_delivery_ns;
            if from > 0 && to > from {
                sub.delivery_seconds = (to - from) as f64 / 1e9;
            }
        }
    }
    summary.measured_seconds = summary.held_seconds;
    if !in_shards && summary.held_seconds > 0.0 {
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
