//! Owns the command line: the modes and the flags they share, duration and URL parsing,
//! and the checks that turn a wrong argument into one line and exit code 2.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "wsload",
    version,
    about = "Load client for holdfast: many WebSocket or keep-alive HTTP connections, plain or TLS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand, Clone)]
pub enum Mode {
    /// Hold WebSocket connections open: answer server pings, optionally send heartbeats.
    Idle(IdleArgs),
    /// Echo round trips: each connection keeps one message in flight.
    Echo(EchoArgs),
    /// Hold keep-alive HTTP/1.1 connections open after one request, optionally repeating it.
    HttpIdle(IdleArgs),
    /// TLS handshakes back to back: each connection closes once its handshake is done and a
    /// new one takes its place, `-c` of them in flight (full handshakes with --no-resume).
    Handshakes(HandshakeArgs),
    /// Pusher channel subscribers, each on one of --channels channels, counting every event
    /// delivered (lost, duplicated, out of order, latency); with --publish-rate, wsload also
    /// publishes through the HTTP API once all are subscribed, and reports on the fan-out.
    Subscribe(SubscribeArgs),
    /// Publish events through the Pusher HTTP API alone (subscribers elsewhere).
    Publish(PublishArgs),
}

impl Mode {
    pub fn common(&self) -> &Common {
        match self {
            Mode::Idle(a) | Mode::HttpIdle(a) => &a.common,
            Mode::Echo(a) => &a.common,
            Mode::Handshakes(a) => &a.common,
            Mode::Subscribe(a) => &a.common,
            Mode::Publish(a) => &a.common,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Idle(_) => "idle",
            Mode::Echo(_) => "echo",
            Mode::HttpIdle(_) => "http-idle",
            Mode::Handshakes(_) => "handshakes",
            Mode::Subscribe(_) => "subscribe",
            Mode::Publish(_) => "publish",
        }
    }

    pub fn is_http(&self) -> bool {
        matches!(self, Mode::HttpIdle(_) | Mode::Handshakes(_))
    }
}

/// Flags every mode takes.
#[derive(Args, Clone)]
pub struct Common {
    /// ws://, wss://, http:// or https:// HOST:PORT/PATH (ws modes default to
    /// ws://127.0.0.1:8080/ws, http-idle to http://127.0.0.1:8080/plaintext, handshakes to
    /// https://127.0.0.1:8443/).
    #[arg(long)]
    pub url: Option<String>,
    /// Connections to open (in total, across shards); in handshakes mode, how many are in
    /// flight at once.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,
    /// New connections per second, in total across shards (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub ramp: u64,
    /// Source addresses to rotate through, 127.0.0.2 upwards (0: let the kernel choose).
    /// Defaults to 200 for an IPv4 loopback target, 0 otherwise.
    #[arg(long)]
    pub sources: Option<u32>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Trust the certificates in this PEM file (wss:// and https://).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (for holdfast's self-signed default).
    #[arg(long)]
    pub insecure: bool,
    /// TLS versions to offer.
    #[arg(long, value_enum, default_value = "any")]
    pub tls_version: TlsVersion,
    /// Never resume TLS sessions (every handshake is a full one). In handshakes mode the client
    /// still offers and takes tickets, as on a first visit, and never uses them.
    #[arg(long)]
    pub no_resume: bool,
    /// Split the run over this many child processes (default: as many as the file limit needs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shards: Option<u32>,
    /// How often to print a progress line when stderr is not a terminal.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub progress_every: Duration,
    /// Internal: this process is shard I of K, started by a parent wsload.
    #[arg(long, hide = true, value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
}

#[derive(Args, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// How long to hold the connections once every one has connected or failed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Each connection's own heartbeat: a ping (WebSocket) or the request again (HTTP) every
    /// this often, its round trip measured (0: off).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub heartbeat: Duration,
}

#[derive(Args, Clone)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long to measure, after the warm-up (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Traffic before measuring starts, once every connection is up.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Send text frames instead of binary.
    #[arg(long)]
    pub text: bool,
}

#[derive(Args, Clone)]
pub struct HandshakeArgs {
    #[command(flatten)]
    pub common: Common,
    /// How long to keep handshaking (e.g. 8s, 500ms).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub duration: Duration,
}

/// The app, the channels and the publisher: what subscribe and publish share.
#[derive(Args, Clone)]
pub struct ChannelArgs {
    /// The app's id, for the HTTP API's /apps/{id}/events.
    #[arg(long, default_value = "app-id")]
    pub app_id: String,
    /// The app's key: subscribers connect to /app/{key}, API requests carry it.
    #[arg(long, default_value = "app-key")]
    pub key: String,
    /// The app's secret, which signs API requests.
    #[arg(long, default_value = "app-secret")]
    pub secret: String,
    /// Channels {prefix}-0 … {prefix}-{K-1}: subscribers are spread over them round robin,
    /// and so are published events.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub channels: u32,
    /// The channel names' prefix.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Events published per second, in total over the channels (subscribe: 0 publishes
    /// nothing, the subscribers only count what others publish).
    #[arg(long, default_value_t = 0.0)]
    pub publish_rate: f64,
    /// How long to publish, at --publish-rate.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub publish_duration: Duration,
    /// Publish this many events instead (at --publish-rate).
    #[arg(long)]
    pub events: Option<u64>,
    /// Bytes of each event's data (its sequence number and send time, padded).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Keep-alive HTTP connections the publisher uses; each channel is published on one of
    /// them, one request in flight, so its events reach the server in order.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub publishers: u32,
    /// What the server speaks: `pusher` (holdfast's channels: /app/{key}, the signed HTTP
    /// API) or `nchan` (nginx's nchan module: WebSocket or, with --sse, EventSource to
    /// /sub/{channel}; POST /pub/{channel}).
    #[arg(long, value_enum, default_value = "pusher")]
    pub peer: Peer,
    /// A channel every subscriber subscribes to as well as its own (the broadcasts'); its
    /// events are counted apart, per broadcast, to the last subscriber.
    #[arg(long, value_name = "NAME")]
    pub shared_channel: Option<String>,
    /// Publish one event to --shared-channel every this often while publishing, the first
    /// one interval after the start (0: none). Over --publish-duration (or the time --events
    /// take at --publish-rate), so D / this many broadcasts.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub broadcast_every: Duration,
}

/// The protocol a subscribe or publish run speaks to its server.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Peer {
    /// The Pusher Channels protocol and HTTP API (CHANNELS.md).
    Pusher,
    /// nginx with the nchan module (nchan.rs).
    Nchan,
}

impl ChannelArgs {
    /// How many events the publisher sends over the K channels.
    pub fn events(&self) -> u64 {
        self.events
            .unwrap_or((self.publish_rate * self.publish_duration.as_secs_f64()).round() as u64)
    }

    /// How long publishing lasts: the time --events take at the rate, or --publish-duration.
    pub fn publish_time(&self) -> Duration {
        match self.events {
            Some(n) if self.publish_rate > 0.0 => {
                Duration::from_secs_f64(n as f64 / self.publish_rate)
            }
            _ => self.publish_duration,
        }
    }

    /// How many broadcasts to the shared channel the publisher sends.
    pub fn broadcasts(&self) -> u64 {
        if self.shared_channel.is_none() || self.broadcast_every.is_zero() {
            return 0;
        }
        (self.publish_time().as_nanos() / self.broadcast_every.as_nanos()) as u64
    }

    /// Whether there is anything to publish.
    pub fn publishing(&self) -> bool {
        self.publish_rate > 0.0 || self.broadcasts() > 0
    }

    /// The shared channel's flags make sense: a name of its own, and broadcasts only to it.
    pub fn check_shared(&self) -> Result<(), String> {
        let Some(shared) = &self.shared_channel else {
            if !self.broadcast_every.is_zero() {
                return Err("--broadcast-every needs --shared-channel".into());
            }
            return Ok(());
        };
        if self.peer == Peer::Nchan {
            return Err("--shared-channel is for --peer pusher (no broadcasts with nchan)".into());
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "_-=@,.;".contains(c);
        if shared.is_empty() || shared.len() > 164 || !shared.chars().all(valid) {
            return Err(format!("--shared-channel {shared:?}: not a channel name"));
        }
        let own = shared
            .strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < self.channels);
        if own {
            return Err(format!(
                "--shared-channel {shared}: one of the subscribers' own channels"
            ));
        }
        Ok(())
    }
}

#[derive(Args, Clone)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// How long to hold the subscribers once every one has subscribed or failed (default
    /// 10s; with --publish-rate, the run ends once publishing is done and the deliveries have
    /// settled, but not before this).
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,
    /// After the last publish, how long deliveries may stay still before the run ends
    /// without them all.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Once every subscriber has subscribed, wait this long before publishing (and before the
    /// --server-pid and --metrics-url readings that open the publishing window), so that what
    /// subscribing set off has settled first: a cluster's nodes tell each other their
    /// subscriber counts once a second, say.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub publish_delay: Duration,
    /// Subscribe over Server-Sent Events (GET /app/{key}/events?channel=…, or GET
    /// /sub/{channel} with --peer nchan) instead of WebSocket; --url is then http:// or
    /// https:// (ws:// and wss:// work too).
    #[arg(long)]
    pub sse: bool,
    /// Sample this server process's CPU time and RSS from /proc (when publishing): before
    /// the subscribers connect, once all have subscribed, and when the deliveries have
    /// settled; reported under `server` (for nginx, give the worker's pid). Repeat it for
    /// several (the nodes of a cluster): their figures are summed, and listed one by one
    /// under `server.processes`.
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<u32>,
    /// Another process to read at the same moments (a Redis, a proxy) and report apart,
    /// under `server.others`, never added to the servers' figures. Repeatable.
    #[arg(long, value_name = "PID")]
    pub other_pid: Vec<u32>,
    /// A Prometheus text page (holdfast's http://HOST:PORT/metrics) to fetch at the same
    /// moments; `server.metrics` gives how much each series named by --metrics-series grew
    /// over the publishing window, per page and summed over them. Repeatable.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Vec<String>,
    /// Which series of the --metrics-url pages to report: those whose name starts with this.
    /// Repeatable.
    #[arg(long, value_name = "PREFIX", default_values_t = ["holdfast_channel_bus_".to_string()])]
    pub metrics_series: Vec<String>,
    /// Publish to this server instead of the subscribers' (--url): a node of a cluster whose
    /// subscribers connect through a proxy, say. http:// or https://; its path is not used.
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
}

#[derive(Args, Clone)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub channel: ChannelArgs,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
    #[value(name = "any")]
    Any,
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("bad duration {s:?} (use ms, s, m or h)")),
    }
}

/// `I/K` with I < K.
fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, k) = s.split_once('/').ok_or("expected I/K")?;
    let (i, k): (u32, u32) = (
        i.parse().map_err(|_| "expected I/K")?,
        k.parse().map_err(|_| "expected I/K")?,
    );
    if i >= k {
        return Err("expected I/K with I < K".into());
    }
    Ok((i, k))
}

/// Where to connect, and what to say once connected.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// HOST[:PORT] as written, for the Host header.
    pub authority: String,
    /// HOST alone, for TLS server name indication.
    pub host: String,
    pub path: String,
    pub tls: bool,
}

/// The `--sources` to use towards `target`, `default` when not given; an error when source
/// addresses 127.0.0.2… are asked for towards a target that is not IPv4.
pub fn sources_for(common: &Common, target: &Target, default: u32) -> Result<u32, String> {
    let sources = common.sources.unwrap_or(default);
    if sources > 0 && !target.addr.is_ipv4() {
        return Err("--sources needs an IPv4 target (use --sources 0)".into());
    }
    Ok(sources)
}

/// Splits a URL into a socket address, Host header, server name and path. WebSocket modes
/// take ws:// and wss://; http-idle takes http:// and https:// (and ws:// or wss:// too).
pub fn parse_url(url: &str, http: bool) -> Result<Target, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("--url {url:?}: expected SCHEME://HOST:PORT/PATH"))?;
    let tls = match (scheme, http) {
        ("ws", _) | ("http", true) => false,
        ("wss", _) | ("https", true) => true,
        (_, false) => return Err(format!("--url {url:?}: this mode needs ws:// or wss://")),
        (_, true) => {
            return Err(format!(
                "--url {url:?}: this mode needs http:// or https:// (or ws:// or wss://)"
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None if http => (rest, "/plaintext"),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("--url {url:?}: no host"));
    }
    // The host alone: [v6] or name, without the port.
    let (host, has_port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("--url {url:?}: unclosed ["))?;
        (&v6[..end], v6[end + 1..].starts_with(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) => (h, true),
            None => (authority, false),
        }
    };
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("--url {authority}: {e}"))?
        .collect();
    // Prefer IPv4: "localhost" often resolves to ::1 first while servers listen on 127.0.0.1.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("--url {authority}: no address"))?;
    Ok(Target {
        addr,
        authority: authority.to_string(),
        host: host.to_string(),
        path: path.to_string(),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn broadcasts_over_the_publishing_time() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["wsload", "publish"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().mode {
                Mode::Publish(a) => a.channel,
                _ => unreachable!(),
            }
        };
        let a = args(&[
            "--shared-channel",
            "all",
            "--broadcast-every",
            "30s",
            "--publish-duration",
            "2m",
        ]);
        assert_eq!((a.broadcasts(), a.events(), a.publishing()), (4, 0, true));
        assert!(a.check_shared().is_ok());
        // --events at a rate set the time.
        let a = args(&[
            "--shared-channel",
            "all",
            "--broadcast-every",
            "1s",
            "--publish-rate",
            "10",
            "--events",
            "35",
        ]);
        assert_eq!((a.broadcasts(), a.events()), (3, 35));
        // No shared channel, no broadcasts; and nothing to publish at all.
        let a = args(&["--publish-duration", "2m"]);
        assert_eq!((a.broadcasts(), a.publishing()), (0, false));
        assert!(args(&["--broadcast-every", "1s"]).check_shared().is_err());
        assert!(
            args(&["--shared-channel", "bench-3", "--channels", "4"])
                .check_shared()
                .is_err()
        );
        assert!(
            args(&["--shared-channel", "bench-4", "--channels", "4"])
                .check_shared()
                .is_ok()
        );
        assert!(args(&["--shared-channel", "a b"]).check_shared().is_err());
        // nchan has no broadcasts here.
        let e = args(&["--peer", "nchan", "--shared-channel", "all"]).check_shared();
        assert!(e.unwrap_err().contains("--peer pusher"));
    }

    #[test]
    fn urls() {
        let t = parse_url("wss://127.0.0.1:8443/ws", false).unwrap();
        assert_eq!(
            (t.addr.port(), t.host.as_str(), t.path.as_str(), t.tls),
            (8443, "127.0.0.1", "/ws", true)
        );
        let t = parse_url("http://127.0.0.1:8080", true).unwrap();
        assert_eq!((t.path.as_str(), t.tls), ("/plaintext", false));
        let t = parse_url("ws://[::1]:9", false).unwrap();
        assert_eq!((t.host.as_str(), t.path.as_str()), ("::1", "/"));
        assert!(parse_url("http://127.0.0.1:1/", false).is_err());
        assert!(parse_url("ftp://127.0.0.1:1/", true).is_err());
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").is_err());
    }
}
