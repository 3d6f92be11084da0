//! Owns the server's configuration: the TOML file, `--set KEY=VALUE` overrides, the embedded
//! defaults of DESIGN §1, and validation. Every error names the key it is about, so an operator
//! can fix a bad setting from the one line we print.

use crate::log::access::Target as AccessTarget;
use crate::log::{Format, Level};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ALPN names (RFC 7301) of the application protocols holdfast speaks inside TLS:
/// `tls.alpn` may list only these.
pub const ALPN_HTTP1: &str = "http/1.1";
pub const ALPN_H2: &str = "h2";

/// The whole configuration, one struct per TOML table.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub http2: Http2Config,
    pub websocket: WebSocketConfig,
    pub tcp: TcpConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    pub channels: ChannelsConfig,
    pub cluster: ClusterConfig,
    /// `[[apps]]` (CHANNELS.md §1); empty means the built-in default app, which only a server
    /// listening on loopback alone may use (see [`Config::effective_apps`]).
    pub apps: Vec<AppConfig>,
}

/// `[channels]`: the limits and timings of channel connections (CHANNELS.md §1).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelsConfig {
    /// Sent to clients in `connection_established`; their pings follow it.
    pub activity_timeout: Duration,
    pub max_channels_per_connection: usize,
    /// Events kept per channel for recovery (0: none).
    pub history_size: usize,
    pub history_ttl: Duration,
    /// Bytes the history of every channel together may hold in one server process; past it
    /// the oldest events are forgotten first (a recovery reaching back over them fails).
    pub history_memory: u64,
    /// A comment line on an SSE stream after this much silence.
    pub sse_heartbeat: Duration,
}

/// `[cluster]`: the Redis that joins this node to others (CHANNELS.md §5).
#[derive(Clone, PartialEq, Default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`; empty: this node is alone.
    pub redis: String,
    /// Starts every key and pub/sub channel name holdfast uses in Redis, so that several
    /// clusters (or other applications) can share one Redis.
    pub prefix: String,
}

impl std::fmt::Debug for ClusterConfig {
    /// The URL may carry a password: only whether one is set is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &(!self.redis.is_empty()))
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// One `[[apps]]` table: the credentials and limits of one application (CHANNELS.md §1).
#[derive(Clone, PartialEq)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    /// Signs private/presence auth and API requests. Never printed: `Debug` leaves it out.
    pub secret: String,
    pub max_connections: usize,
    pub client_events: bool,
    pub max_presence_members: usize,
    /// UTF-8 bytes of an event's data string.
    pub max_event_bytes: usize,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"(hidden)")
            .field("max_connections", &self.max_connections)
            .field("client_events", &self.client_events)
            .field("max_presence_members", &self.max_presence_members)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish()
    }
}

impl AppConfig {
    /// The app built in when no `[[apps]]` is configured: the credentials soketi users know.
    pub fn builtin() -> AppConfig {
        AppConfig {
            id: "app-id".into(),
            key: "app-key".into(),
            secret: "app-secret".into(),
            max_connections: 0,
            client_events: true,
            max_presence_members: 100,
            max_event_bytes: 10 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Plain HTTP + WebSocket listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners; empty when disabled (`""` or `[]` in the file).
    pub tls_listen: Vec<SocketAddr>,
    /// 0 = one worker per core (divided among `processes`).
    pub workers: usize,
    /// Server processes under one supervisor, sharing the listening ports through SO_REUSEPORT:
    /// for hosts whose per-process open-file limit is below the connections wanted. 1 = no
    /// supervisor.
    pub processes: usize,
    pub max_connections: usize,
    pub backlog: u32,
    pub shutdown_timeout: Duration,
    /// After SIGTERM, keep accepting and serving for this long with `/healthz` failing, so a
    /// load balancer takes the node out of rotation before its listeners close: a rolling
    /// restart then refuses no connection. Zero starts the drain at once.
    pub drain_delay: Duration,
    /// TCP_DEFER_ACCEPT on the listeners (nginx's `deferred`): the kernel hands over a
    /// connection only once its first bytes have arrived (or after `http.header_timeout`),
    /// saving a wake-up per connection and never spending a slot on a client that stays silent.
    pub defer_accept: bool,
    /// Every connection (on both listeners) starts with a PROXY protocol header (v1 or v2)
    /// from a load balancer; the client address it names is the connection's. A connection
    /// without a valid one within `http.header_timeout` is closed and counted.
    pub proxy_protocol: bool,
    /// Connections one client address may hold at once (0: no limit). Over it, a new one is
    /// answered 429 (HTTP), closed with 1013 (WebSocket) or closed before TLS.
    pub max_connections_per_ip: usize,
    /// New connections one client address may open per second, in bursts of as many (0: no
    /// limit); over it, answered as above.
    pub connection_rate_per_ip: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub keepalive_timeout: Duration,
    pub header_timeout: Duration,
    pub keepalive_requests: u64,
    pub max_connection_age: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub lingering_timeout: Duration,
}

/// `[http2]`: what only HTTP/2 connections have.
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Config {
    /// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); more
    /// are refused with REFUSED_STREAM.
    pub max_concurrent_streams: u32,
    /// A PING after this long without a byte from the peer (0: none), and the close when its
    /// answer does not come within `ping_timeout`: dead peers are found, idle middleboxes kept
    /// awake. A peer that keeps our data waiting on a closed flow-control window for
    /// `ping_timeout` is closed too (ENHANCE_YOUR_CALM).
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketConfig {
    /// Zero disables server pings.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    /// Zero means no idle limit.
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
    pub permessage_deflate: bool,
    /// Keep compression contexts between messages when the client allows it. Off by default:
    /// a context costs ~330 KiB per connection (measured); without it the server answers with
    /// both `*_no_context_takeover` parameters and keeps no per-connection state.
    pub deflate_context_takeover: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    pub keepalive: bool,
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_count: u32,
    /// Zero keeps the kernel default.
    pub user_timeout: Duration,
    pub nodelay: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Empty: a self-signed certificate is generated at start.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub tickets: bool,
    pub ticket_key_file: Option<PathBuf>,
    pub ticket_rotation: Duration,
    pub session_cache: usize,
    pub key_update_bytes: u64,
    pub key_update_interval: Duration,
    /// "1.2" or "1.3".
    pub min_version: String,
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Lines below this level are not written (nor formatted).
    pub level: Level,
    pub format: Format,
    /// Where the access log goes; off by default.
    pub access: AccessTarget,
    /// The fraction of successful requests that get an access line (errors always do).
    pub access_sample: f64,
}

/// A configuration error: the key (dotted, e.g. `http.keepalive_timeout`, or the file path for
/// I/O and syntax errors) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    /// The embedded defaults of DESIGN §1.
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: vec!["127.0.0.1:8080".parse().unwrap()],
                tls_listen: vec!["127.0.0.1:8443".parse().unwrap()],
                workers: 0,
                processes: 1,
                max_connections: 1_000_000,
                backlog: 65535,
                shutdown_timeout: Duration::from_secs(30),
                drain_delay: Duration::ZERO,
                defer_accept: false,
                proxy_protocol: false,
                max_connections_per_ip: 0,
                connection_rate_per_ip: 0,
            },
            http: HttpConfig {
                keepalive_timeout: Duration::from_secs(75),
                header_timeout: Duration::from_secs(60),
                keepalive_requests: 1000,
                max_connection_age: Duration::from_secs(3600),
                max_header_bytes: 16 * 1024,
                max_body_bytes: 1024 * 1024,
                lingering_timeout: Duration::from_secs(5),
            },
            http2: Http2Config {
                max_concurrent_streams: 128,
                ping_interval: Duration::from_secs(30),
                ping_timeout: Duration::from_secs(10),
            },
            websocket: WebSocketConfig {
                ping_interval: Duration::from_secs(30),
                pong_timeout: Duration::from_secs(10),
                idle_timeout: Duration::ZERO,
                max_message_bytes: 16 * 1024 * 1024,
                permessage_deflate: true,
                deflate_context_takeover: false,
            },
            tcp: TcpConfig {
                keepalive: true,
                keepalive_idle: Duration::from_secs(60),
                keepalive_interval: Duration::from_secs(10),
                keepalive_count: 6,
                user_timeout: Duration::ZERO,
                nodelay: true,
            },
            tls: TlsConfig {
                cert: None,
                key: None,
                tickets: true,
                ticket_key_file: None,
                ticket_rotation: Duration::from_secs(6 * 3600),
                session_cache: 10_000,
                key_update_bytes: 1 << 30,
                key_update_interval: Duration::from_secs(3600),
                min_version: "1.2".to_string(),
                alpn: vec![ALPN_H2.to_string(), ALPN_HTTP1.to_string()],
            },
            log: LogConfig {
                level: Level::Info,
                format: Format::Text,
                access: AccessTarget::Off,
                access_sample: 1.0,
            },
            channels: ChannelsConfig {
                activity_timeout: Duration::from_secs(30),
                max_channels_per_connection: 100,
                history_size: 100,
                history_ttl: Duration::from_secs(300),
                history_memory: 64 * 1024 * 1024,
                sse_heartbeat: Duration::from_secs(15),
            },
            cluster: ClusterConfig {
                redis: String::new(),
                prefix: "holdfast".into(),
            },
            apps: Vec::new(),
        }
    }
}

impl Config {
    /// Loads `file` (if any) over the defaults, then applies each `KEY=VALUE` of `sets` in order,
    /// then validates.
    pub fn load(file: Option<&Path>, sets: &[String]) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if let Some(path) = file {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| err(&name, e.to_string()))?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let line = e
                    .span()
                    .map(|s| text[..s.start].lines().count().max(1))
                    .unwrap_or(0);
                err(&name, format!("line {line}: {}", one_line(e.message())))
            })?;
            for (section, body) in &table {
                if section == "apps" {
                    cfg.apps = apps(body, path)?;
                    continue;
                }
                let toml::Value::Table(body) = body else {
                    return Err(unknown_key(section));
                };
                for (key, value) in body {
                    cfg.set(&format!("{section}.{key}"), value)?;
                }
            }
        }
        for s in sets {
            let (key, raw) = s
                .split_once('=')
                .ok_or_else(|| err("--set", format!("expected KEY=VALUE, got {s:?}")))?;
            let value = parse_set_value(raw);
            cfg.set(key.trim(), &value)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets one dotted key from a TOML value.
    fn set(&mut self, key: &str, v: &toml::Value) -> Result<(), ConfigError> {
        let e = |reason: String| err(key, reason);
        match key {
            "server.listen" => self.server.listen = addrs(v).map_err(e)?,
            "server.tls_listen" => self.server.tls_listen = addrs(v).map_err(e)?,
            "server.workers" => self.server.workers = int(v).map_err(e)? as usize,
            "server.processes" => self.server.processes = int(v).map_err(e)? as usize,
            "server.max_connections" => self.server.max_connections = int(v).map_err(e)? as usize,
            "server.backlog" => {
                self.server.backlog = u32::try_from(int(v).map_err(e)?)
                    .map_err(|_| err(key, "must be at most 2147483647".into()))?
            }
            "server.shutdown_timeout" => self.server.shutdown_timeout = dur(v).map_err(e)?,
            "server.drain_delay" => self.server.drain_delay = dur(v).map_err(e)?,
            "server.defer_accept" => self.server.defer_accept = boolean(v).map_err(e)?,
            "server.proxy_protocol" => self.server.proxy_protocol = boolean(v).map_err(e)?,
            "server.max_connections_per_ip" => {
                self.server.max_connections_per_ip = int(v).map_err(e)? as usize
            }
            "server.connection_rate_per_ip" => {
                self.server.connection_rate_per_ip = u32::try_from(int(v).map_err(e)?)
                    .map_err(|_| err(key, "must be at most 4294967295".into()))?
            }
            "http.keepalive_timeout" => self.http.keepalive_timeout = dur(v).map_err(e)?,
            "http.header_timeout" => self.http.header_timeout = dur(v).map_err(e)?,
            "http.keepalive_requests" => self.http.keepalive_requests = int(v).map_err(e)?,
            "http.max_connection_age" => self.http.max_connection_age = dur(v).map_err(e)?,
            "http.max_header_bytes" => self.http.max_header_bytes = size(v).map_err(e)? as usize,
            "http.max_body_bytes" => self.http.max_body_bytes = size(v).map_err(e)? as usize,
            "http.lingering_timeout" => self.http.lingering_timeout = dur(v).map_err(e)?,
            "http2.max_concurrent_streams" => {
                self.http2.max_concurrent_streams =
                    u32::try_from(int(v).map_err(e)?).map_err(|_| e("too large".into()))?
            }
            "http2.ping_interval" => self.http2.ping_interval = dur(v).map_err(e)?,
            "http2.ping_timeout" => self.http2.ping_timeout = dur(v).map_err(e)?,
            "websocket.ping_interval" => self.websocket.ping_interval = dur(v).map_err(e)?,
            "websocket.pong_timeout" => self.websocket.pong_timeout = dur(v).map_err(e)?,
            "websocket.idle_timeout" => self.websocket.idle_timeout = dur(v).map_err(e)?,
            "websocket.max_message_bytes" => {
                self.websocket.max_message_bytes = size(v).map_err(e)? as usize
            }
            "websocket.permessage_deflate" => {
                self.websocket.permessage_deflate = boolean(v).map_err(e)?
            }
            "websocket.deflate_context_takeover" => {
                self.websocket.deflate_context_takeover = boolean(v).map_err(e)?
            }
            "tcp.keepalive" => self.tcp.keepalive = boolean(v).map_err(e)?,
            "tcp.keepalive_idle" => self.tcp.keepalive_idle = dur(v).map_err(e)?,
            "tcp.keepalive_interval" => self.tcp.keepalive_interval = dur(v).map_err(e)?,
            "tcp.keepalive_count" => {
                self.tcp.keepalive_count = u32::try_from(int(v).map_err(e)?)
                    .map_err(|_| err(key, "must be from 1 to 127".into()))?
            }
            "tcp.user_timeout" => self.tcp.user_timeout = dur(v).map_err(e)?,
            "tcp.nodelay" => self.tcp.nodelay = boolean(v).map_err(e)?,
            "tls.cert" => self.tls.cert = path(v).map_err(e)?,
            "tls.key" => self.tls.key = path(v).map_err(e)?,
            "tls.tickets" => self.tls.tickets = boolean(v).map_err(e)?,
            "tls.ticket_key_file" => self.tls.ticket_key_file = path(v).map_err(e)?,
            "tls.ticket_rotation" => self.tls.ticket_rotation = dur(v).map_err(e)?,
            "tls.session_cache" => self.tls.session_cache = int(v).map_err(e)? as usize,
            "tls.key_update_bytes" => self.tls.key_update_bytes = size(v).map_err(e)?,
            "tls.key_update_interval" => self.tls.key_update_interval = dur(v).map_err(e)?,
            "tls.min_version" => self.tls.min_version = string(v).map_err(e)?,
            "tls.alpn" => self.tls.alpn = strings(v).map_err(e)?,
            "log.level" => self.log.level = level(v).map_err(e)?,
            "log.format" => self.log.format = log_format(v).map_err(e)?,
            "log.access" => self.log.access = AccessTarget::parse(&string(v).map_err(e)?),
            "log.access_sample" => self.log.access_sample = fraction(v).map_err(e)?,
            "channels.activity_timeout" => self.channels.activity_timeout = dur(v).map_err(e)?,
            "channels.max_channels_per_connection" => {
                self.channels.max_channels_per_connection = int(v).map_err(e)? as usize
            }
            "channels.history_size" => self.channels.history_size = int(v).map_err(e)? as usize,
            "channels.history_ttl" => self.channels.history_ttl = dur(v).map_err(e)?,
            "channels.history_memory" => self.channels.history_memory = size(v).map_err(e)?,
            "channels.sse_heartbeat" => self.channels.sse_heartbeat = dur(v).map_err(e)?,
            "cluster.redis" => self.cluster.redis = string(v).map_err(e)?,
            "cluster.prefix" => self.cluster.prefix = string(v).map_err(e)?,
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Range and consistency checks that a single value's parser cannot make.
    fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(err(key, reason.to_string()))
            }
        };
        check(
            !self.server.listen.is_empty(),
            "server.listen",
            "needs at least one address",
        )?;
        let loopback_only = self
            .server
            .listen
            .iter()
            .chain(&self.server.tls_listen)
            .all(|a| a.ip().is_loopback());
        check(
            !self.apps.is_empty() || loopback_only,
            "apps",
            "no [[apps]] configured: the built-in app-key/app-secret app is only for a server \
             listening on loopback; add an [[apps]] table with your own id, key and secret",
        )?;
        check(
            (1..=1_000_000).contains(&self.channels.max_channels_per_connection),
            "channels.max_channels_per_connection",
            "must be from 1 to 1000000",
        )?;
        check(
            self.channels.history_size <= 1_000_000,
            "channels.history_size",
            "must be at most 1000000",
        )?;
        check(
            self.channels.activity_timeout.as_secs() >= 1,
            "channels.activity_timeout",
            "must be at least 1s",
        )?;
        check(
            !self.channels.sse_heartbeat.is_zero(),
            "channels.sse_heartbeat",
            "must be more than 0",
        )?;
        check(
            self.cluster.redis.is_empty() || self.cluster.redis.starts_with("redis://"),
            "cluster.redis",
            "must be a redis://host:port[/db] URL, or empty for a node alone",
        )?;
        check(
            !self.cluster.prefix.is_empty()
                && self
                    .cluster
                    .prefix
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}'),
            "cluster.prefix",
            "must be a non-empty name of printable ASCII characters without spaces or braces",
        )?;
        check(
            self.server.workers <= 1024,
            "server.workers",
            "must be at most 1024",
        )?;
        check(
            (1..=1024).contains(&self.server.processes),
            "server.processes",
            "must be from 1 to 1024",
        )?;
        check(
            self.server.max_connections >= 1,
            "server.max_connections",
            "must be at least 1",
        )?;
        check(
            (1..=i32::MAX as u32).contains(&self.server.backlog),
            "server.backlog",
            "must be from 1 to 2147483647",
        )?;
        for (key, d) in [
            ("server.shutdown_timeout", self.server.shutdown_timeout),
            ("http.keepalive_timeout", self.http.keepalive_timeout),
            ("http.header_timeout", self.http.header_timeout),
            ("http.max_connection_age", self.http.max_connection_age),
            ("tls.ticket_rotation", self.tls.ticket_rotation),
        ] {
            check(!d.is_zero(), key, "must be greater than 0")?;
        }
        check(
            self.http.keepalive_requests >= 1,
            "http.keepalive_requests",
            "must be at least 1",
        )?;
        check(
            (1024..=1024 * 1024).contains(&self.http.max_header_bytes),
            "http.max_header_bytes",
            "must be from 1KiB to 1MiB",
        )?;
        for (key, d) in [
            ("tcp.keepalive_idle", self.tcp.keepalive_idle),
            ("tcp.keepalive_interval", self.tcp.keepalive_interval),
        ] {
            check(
                d.subsec_nanos() == 0 && (1..=32767).contains(&d.as_secs()),
                key,
                "must be whole seconds from 1s to 32767s (the kernel's limit)",
            )?;
        }
        check(
            (1..=127).contains(&self.tcp.keepalive_count),
            "tcp.keepalive_count",
            "must be from 1 to 127",
        )?;
        check(
            self.tcp.user_timeout.as_millis() <= u32::MAX as u128,
            "tcp.user_timeout",
            "must be at most 4294967295ms",
        )?;
        check(
            self.websocket.ping_interval.is_zero() || !self.websocket.pong_timeout.is_zero(),
            "websocket.pong_timeout",
            "must be greater than 0 when websocket.ping_interval is set",
        )?;
        check(
            self.websocket.max_message_bytes >= 1,
            "websocket.max_message_bytes",
            "must be at least 1",
        )?;
        check(
            self.tls.min_version == "1.2" || self.tls.min_version == "1.3",
            "tls.min_version",
            "must be \"1.2\" or \"1.3\"",
        )?;
        if let Some(p) = (self.tls.alpn.iter()).find(|p| *p != ALPN_HTTP1 && *p != ALPN_H2) {
            return Err(err(
                "tls.alpn",
                format!(
                    "{p:?} is not a protocol holdfast speaks; they are \"{ALPN_H2}\" and \
                     \"{ALPN_HTTP1}\" (announcing another would promise clients a protocol they \
                     would not get)"
                ),
            ));
        }
        check(
            self.http2.max_concurrent_streams >= 1,
            "http2.max_concurrent_streams",
            "must be at least 1",
        )?;
        check(
            !self.http2.ping_timeout.is_zero(),
            "http2.ping_timeout",
            "must be more than 0",
        )?;
        check(
            self.tls.key_update_bytes >= 1,
            "tls.key_update_bytes",
            "must be at least 1",
        )?;
        check(
            self.tls.cert.is_some() == self.tls.key.is_some(),
            "tls.cert",
            "tls.cert and tls.key must be set together",
        )?;
        Ok(())
    }
}

/// Every key `set` knows, for "did you mean" suggestions.
const KEYS: &[&str] = &[
    "server.listen",
    "server.tls_listen",
    "server.workers",
    "server.processes",
    "server.max_connections",
    "server.backlog",
    "server.shutdown_timeout",
    "server.drain_delay",
    "server.defer_accept",
    "server.proxy_protocol",
    "server.max_connections_per_ip",
    "server.connection_rate_per_ip",
    "http.keepalive_timeout",
    "http.header_timeout",
    "http.keepalive_requests",
    "http.max_connection_age",
    "http.max_header_bytes",
    "http.max_body_bytes",
    "http.lingering_timeout",
    "http2.max_concurrent_streams",
    "http2.ping_interval",
    "http2.ping_timeout",
    "websocket.ping_interval",
    "websocket.pong_timeout",
    "websocket.idle_timeout",
    "websocket.max_message_bytes",
    "websocket.permessage_deflate",
    "websocket.deflate_context_takeover",
    "tcp.keepalive",
    "tcp.keepalive_idle",
    "tcp.keepalive_interval",
    "tcp.keepalive_count",
    "tcp.user_timeout",
    "tcp.nodelay",
    "tls.cert",
    "tls.key",
    "tls.tickets",
    "tls.ticket_key_file",
    "tls.ticket_rotation",
    "tls.session_cache",
    "tls.key_update_bytes",
    "tls.key_update_interval",
    "tls.min_version",
    "tls.alpn",
    "log.level",
    "log.format",
    "log.access",
    "log.access_sample",
    "channels.activity_timeout",
    "channels.max_channels_per_connection",
    "channels.history_size",
    "channels.history_ttl",
    "channels.history_memory",
    "channels.sse_heartbeat",
    "cluster.redis",
    "cluster.prefix",
];

impl Config {
    /// The apps this server serves: the configured ones, or the built-in default app when
    /// none is configured (validation allows that only on loopback).
    pub fn effective_apps(&self) -> Vec<AppConfig> {
        if self.apps.is_empty() {
            vec![AppConfig::builtin()]
        } else {
            self.apps.clone()
        }
    }
}

/// The keys of one `[[apps]]` table.
const APP_KEYS: &[&str] = &[
    "id",
    "key",
    "secret",
    "secret_file",
    "max_connections",
    "client_events",
    "max_presence_members",
    "max_event_bytes",
];

/// Parses `[[apps]]`: each table's keys checked, the secret read from `secret_file` when
/// given, ids and keys unique. Errors name `apps[i].key`.
fn apps(v: &toml::Value, file: &Path) -> Result<Vec<AppConfig>, ConfigError> {
    let toml::Value::Array(tables) = v else {
        return Err(err("apps", "must be an array of tables: [[apps]]".into()));
    };
    let mut out: Vec<AppConfig> = Vec::new();
    for (i, t) in tables.iter().enumerate() {
        let name = |k: &str| format!("apps[{i}].{k}");
        let toml::Value::Table(t) = t else {
            return Err(err(&format!("apps[{i}]"), "must be a table".into()));
        };
        let mut app = AppConfig::builtin();
        app.secret.clear();
        let mut secret_file = None;
        for (k, v) in t {
            let e = |reason: String| err(&name(k), reason);
            match k.as_str() {
                "id" => app.id = string(v).map_err(e)?,
                "key" => app.key = string(v).map_err(e)?,
                "secret" => app.secret = string(v).map_err(e)?,
                "secret_file" => secret_file = path(v).map_err(e)?,
                "max_connections" => app.max_connections = int(v).map_err(e)? as usize,
                "client_events" => app.client_events = boolean(v).map_err(e)?,
                "max_presence_members" => app.max_presence_members = int(v).map_err(e)? as usize,
                "max_event_bytes" => app.max_event_bytes = size(v).map_err(e)? as usize,
                _ => {
                    let near = APP_KEYS.iter().find(|c| edit_distance(c, k) <= 2);
                    let reason = match near {
                        Some(c) => format!("unknown key (did you mean {c}?)"),
                        None => "unknown key".into(),
                    };
                    return Err(err(&name(k), reason));
                }
            }
        }
        if let Some(f) = secret_file {
            // A relative path is relative to the configuration file.
            let f = file.parent().map_or(f.clone(), |d| d.join(&f));
            let text = std::fs::read_to_string(&f)
                .map_err(|e| err(&name("secret_file"), format!("{}: {e}", f.display())))?;
            app.secret = text
                .strip_suffix('\n')
                .unwrap_or(&text)
                .trim_end_matches('\r')
                .into();
        }
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !valid(&app.id) {
            return Err(err(
                &name("id"),
                "must be a non-empty string without spaces".into(),
            ));
        }
        if !valid(&app.key) {
            return Err(err(
                &name("key"),
                "must be a non-empty string without spaces".into(),
            ));
        }
        if app.secret.is_empty() {
            return Err(err(&name("secret"), "is required (or secret_file)".into()));
        }
        if app.max_presence_members == 0 {
            return Err(err(
                &name("max_presence_members"),
                "must be at least 1".into(),
            ));
        }
        if app.max_event_bytes == 0 {
            return Err(err(&name("max_event_bytes"), "must be at least 1".into()));
        }
        if out.iter().any(|a| a.id == app.id) {
            return Err(err(
                &name("id"),
                format!("{:?} is used by another app", app.id),
            ));
        }
        if out.iter().any(|a| a.key == app.key) {
            return Err(err(
                &name("key"),
                format!("{:?} is used by another app", app.key),
            ));
        }
        out.push(app);
    }
    Ok(out)
}

fn err(key: &str, reason: String) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        reason,
    }
}

fn unknown_key(key: &str) -> ConfigError {
    let near = KEYS
        .iter()
        .map(|k| (edit_distance(k, key), k))
        .min()
        .filter(|(d, _)| *d <= 3);
    match near {
        Some((_, k)) => err(key, format!("unknown key (did you mean {k}?)")),
        None => err(key, "unknown key".into()),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A `--set` value: TOML if it parses as a TOML value, otherwise the raw text as a string, so
/// that `5s` and `127.0.0.1:0` need no quotes.
fn parse_set_value(raw: &str) -> toml::Value {
    let raw = raw.trim();
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn int(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::Integer(_) => Err("must not be negative".into()),
        toml::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected a whole number, got {s:?}")),
        other => Err(format!("expected a whole number, got {}", other.type_str())),
    }
}

fn boolean(v: &toml::Value) -> Result<bool, String> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        other => Err(format!("expected true or false, got {other}")),
    }
}

fn string(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got {}", other.type_str())),
    }
}

fn strings(v: &toml::Value) -> Result<Vec<String>, String> {
    match v {
        toml::Value::String(s) if s.is_empty() => Ok(Vec::new()),
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(string).collect(),
        other => Err(format!(
            "expected a list of strings, got {}",
            other.type_str()
        )),
    }
}

fn level(v: &toml::Value) -> Result<Level, String> {
    let s = string(v)?;
    Level::parse(&s).ok_or_else(|| {
        let names: Vec<&str> = Level::ALL.iter().map(|l| l.name()).collect();
        format!("expected one of {}, got {s:?}", names.join(", "))
    })
}

fn log_format(v: &toml::Value) -> Result<Format, String> {
    let s = string(v)?;
    Format::parse(&s).ok_or_else(|| format!("expected \"text\" or \"json\", got {s:?}"))
}

/// A fraction from 0.0 to 1.0 (`0` and `1` may be written as integers).
fn fraction(v: &toml::Value) -> Result<f64, String> {
    let f = match v {
        toml::Value::Float(f) => *f,
        toml::Value::Integer(i) => *i as f64,
        other => return Err(format!("expected a fraction from 0.0 to 1.0, got {other}")),
    };
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("expected a fraction from 0.0 to 1.0, got {f}"))
    }
}

fn path(v: &toml::Value) -> Result<Option<PathBuf>, String> {
    let s = string(v)?;
    Ok((!s.is_empty()).then(|| PathBuf::from(s)))
}

fn addrs(v: &toml::Value) -> Result<Vec<SocketAddr>, String> {
    strings(v)?
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                format!("expected an address like 127.0.0.1:8080 or [::1]:8080, got {s:?}")
            })
        })
        .collect()
}

fn dur(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        toml::Value::String(s) => parse_duration(s),
        other => Err(format!(
            "expected a duration like 75s, 500ms or 1h, got {other}"
        )),
    }
}

fn size(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::String(s) => parse_size(s),
        other => Err(format!("expected a size like 16KiB or 1MiB, got {other}")),
    }
}

/// Parses `75s`, `500ms`, `1h30m`, `2d`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 75s, 500ms or 1h, got {s:?}");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let part = n.checked_mul(ms_per).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses `16KiB`, `1MiB`, `1GiB`, `16k` (1024-based, as nginx), `1MB` (1000-based), `512B`, or a
/// bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("expected a size like 16KiB or 1MiB, got {s:?}");
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" | "b" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(s: &[&str]) -> Result<Config, ConfigError> {
        Config::load(None, &s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.http.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(c.http.max_header_bytes, 16384);
        assert_eq!(c.tls.key_update_bytes, 1 << 30);
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("75s"), Ok(Duration::from_secs(75)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5x", "-1s", "s", "1.5s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("16k"), Ok(16384));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        for bad in ["", "KiB", "1 parsec", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sets_override_in_order() {
        let c = sets(&[
            "http.keepalive_timeout=5s",
            "server.workers=2",
            "server.listen=127.0.0.1:0",
            "server.tls_listen=",
            "tls.alpn=[\"http/1.1\"]",
            "http.keepalive_timeout=7s",
            "tcp.nodelay=false",
        ])
        .unwrap();
        assert_eq!(c.http.keepalive_timeout, Duration::from_secs(7));
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.server.listen, vec!["127.0.0.1:0".parse().unwrap()]);
        assert!(c.server.tls_listen.is_empty());
        assert_eq!(c.tls.alpn, vec!["http/1.1"]);
        assert!(!c.tcp.nodelay);
        let c = sets(&[
            "log.level=debug",
            "log.format=json",
            "log.access=/var/log/holdfast/access.log",
            "log.access_sample=0.25",
        ])
        .unwrap();
        assert_eq!(c.log.level, Level::Debug);
        assert_eq!(c.log.format, Format::Json);
        assert_eq!(
            c.log.access,
            AccessTarget::File("/var/log/holdfast/access.log".into())
        );
        assert_eq!(c.log.access_sample, 0.25);
        let c = sets(&["log.access=stderr", "log.access_sample=0"]).unwrap();
        assert_eq!(c.log.access, AccessTarget::Stderr);
        assert_eq!(c.log.access_sample, 0.0);
        assert_eq!(
            sets(&["log.access=off"]).unwrap().log.access,
            AccessTarget::Off
        );
    }

    #[test]
    fn errors_name_their_key() {
        for (set, key) in [
            ("http.keepalive_timeout=soon", "http.keepalive_timeout"),
            ("server.listen=nowhere", "server.listen"),
            ("server.workers=-1", "server.workers"),
            ("server.max_connections=0", "server.max_connections"),
            ("http.keepalive_requests=0", "http.keepalive_requests"),
            ("http.max_header_bytes=10", "http.max_header_bytes"),
            ("tcp.keepalive_idle=1500ms", "tcp.keepalive_idle"),
            ("tcp.keepalive_count=500", "tcp.keepalive_count"),
            ("tls.min_version=\"1.1\"", "tls.min_version"),
            ("tls.alpn=[\"h3\", \"http/1.1\"]", "tls.alpn"),
            ("tls.alpn=spdy/3", "tls.alpn"),
            (
                "http2.max_concurrent_streams=0",
                "http2.max_concurrent_streams",
            ),
            ("tls.cert=/x.pem", "tls.cert"),
            ("tcp.nodelay=maybe", "tcp.nodelay"),
            ("log.level=verbose", "log.level"),
            ("log.format=xml", "log.format"),
            ("log.access=1", "log.access"),
            ("log.access_sample=1.5", "log.access_sample"),
            ("log.access_sample=-0.1", "log.access_sample"),
            ("log.access_sample=nan", "log.access_sample"),
            ("log.access_sample=half", "log.access_sample"),
            ("http.header_timeout=0", "http.header_timeout"),
            ("nosuch", "--set"),
        ] {
            let e = sets(&[set]).unwrap_err();
            assert_eq!(e.key, key, "{set}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        let e = sets(&["http.keepalive_timout=5s"]).unwrap_err();
        assert!(
            e.reason.contains("did you mean http.keepalive_timeout"),
            "{e}"
        );
    }

    #[test]
    fn files_load_and_report_errors_with_the_path() {
        let dir = std::env::temp_dir().join(format!("holdfast-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[server]\nlisten = [\"127.0.0.1:9000\", \"[::1]:9000\"]\nworkers = 3\n[http]\nkeepalive_timeout = 10\nmax_body_bytes = \"2MiB\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&good), &["server.workers=4".into()]).unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert_eq!(c.server.workers, 4);
        assert_eq!(c.http.keepalive_timeout, Duration::from_secs(10));
        assert_eq!(c.http.max_body_bytes, 2 << 20);

        let syntax = dir.join("syntax.toml");
        std::fs::write(&syntax, "[http]\nkeepalive_timeout = = 3\n").unwrap();
        let e = Config::load(Some(&syntax), &[]).unwrap_err();
        assert_eq!(e.key, syntax.display().to_string());
        assert!(e.reason.starts_with("line 2"), "{e}");

        let unknown = dir.join("unknown.toml");
        std::fs::write(&unknown, "[htp]\nkeepalive_timeout = 3\n").unwrap();
        assert_eq!(
            Config::load(Some(&unknown), &[]).unwrap_err().key,
            "htp.keepalive_timeout"
        );

        let missing = dir.join("missing.toml");
        assert_eq!(
            Config::load(Some(&missing), &[]).unwrap_err().key,
            missing.display().to_string()
        );
    }

    /// holdfast.toml at the repository root is the operator's example: every key, each at its
    /// default. This keeps it so when a key or a default changes.
    #[test]
    fn the_example_configuration_sets_every_key_to_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("holdfast.toml");
        assert_eq!(Config::load(Some(&path), &[]).unwrap(), Config::default());
        let table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        for key in KEYS {
            let (section, name) = key.split_once('.').unwrap();
            assert!(
                table.get(section).and_then(|t| t.get(name)).is_some(),
                "{key} is missing from holdfast.toml"
            );
        }
    }

    /// `set`'s match arms and `KEYS` (for "did you mean") list the keys twice; this keeps the
    /// two lists the same, in both directions, by reading the arms from this file.
    #[test]
    fn keys_lists_every_key_set_knows_and_no_other() {
        let source = include_str!("config.rs");
        let start = source.find("fn set(&mut self").unwrap();
        let end = start + source[start..].find("\n    }\n").unwrap();
        let arms: Vec<&str> = source[start..end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split_once("\" =>").map(|(k, _)| k))
            .collect();
        assert!(arms.len() > 30, "found only {arms:?}");
        for key in &arms {
            assert!(KEYS.contains(key), "{key} is set but missing from KEYS");
        }
        for key in KEYS {
            assert!(
                arms.contains(key),
                "{key} is in KEYS but set does not know it"
            );
        }
    }
}
