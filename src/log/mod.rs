//! Owns holdfast's logs. This file owns the leveled log: its level and format (set once at
//! start from `log.level` and `log.format`), the `error!`/`warn!`/`info!`/`debug!` and
//! `limited!` macros every part of the server logs through, and the one write per line to
//! stderr. A line below the level costs one relaxed atomic load: the macros check the level
//! before anything is formatted.
//!
//! Beside it: `line` (how a line looks, text or JSON), `limit` (repeated lines rate-limited with
//! a count), `relay` (the supervisor passing on its processes' lines), and the access log:
//! `access` (its lines and each worker's buffer), `sample` (`log.access_sample`) and `writer`
//! (the thread that writes them, so the event loops never wait on a disk or a pipe). This module
//! sits below the engine and the protocols and imports neither.

pub mod access;
pub mod limit;
pub mod line;
pub mod relay;
pub mod sample;
pub mod writer;

use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How severe a line is; a line is written when its level is at or above `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Error, Level::Warn, Level::Info, Level::Debug];

    /// The name in `log.level`, in text lines (`holdfast: warn: ...`) and in JSON's `level`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// `log.format`: lines for people (and the supervisor) or for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    Text = 0,
    Json = 1,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// The line that tells the supervisor (and scripts) that a server is serving.
pub const READY: &str = "ready";

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);
/// This process's index under a supervisor (`usize::MAX`: none), written into JSON lines.
static PROCESS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the level and format, and under a supervisor the process index, once the configuration
/// is known. Until then (a bad configuration, `config check`) lines are text at info. With JSON,
/// panics are logged as JSON lines too, so that every line on stderr parses.
pub fn init(level: Level, format: Format, process: Option<usize>) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    FORMAT.store(format as u8, Ordering::Relaxed);
    PROCESS.store(process.unwrap_or(usize::MAX), Ordering::Relaxed);
    if format == Format::Json {
        std::panic::set_hook(Box::new(log_panic));
    }
}

/// True when lines at `level` are written: the check the macros make before formatting.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// This process's index under a supervisor.
pub fn process() -> Option<usize> {
    let p = PROCESS.load(Ordering::Relaxed);
    (p != usize::MAX).then_some(p)
}

/// Writes one line (the macros have checked the level).
#[cold]
#[inline(never)]
pub fn emit(level: Level, args: std::fmt::Arguments<'_>) {
    match args.as_str() {
        Some(s) => emit_str(level, s),
        None => emit_str(level, &args.to_string()),
    }
}

pub fn emit_str(level: Level, msg: &str) {
    let line = line::render(format(), level, process(), unix_ms(), msg);
    write_stderr(&line);
}

/// One `write` for the whole line (stderr is unbuffered, and a line written in pieces could be
/// interleaved with another thread's). Errors are ignored: a log line must never take the
/// server down, and there is nowhere left to report them.
pub fn write_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Called first in every thread this module starts. The server takes its signals synchronously
/// in one thread with every other thread blocking them (`signals.rs`); a log thread may start
/// before that mask is set (the access log is opened before the engine starts), and a SIGTERM
/// delivered to it would kill the process instead of draining it. Faults stay deliverable.
fn block_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::all();
    for s in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGABRT,
        Signal::SIGTRAP,
    ] {
        set.remove(s);
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

/// Different in every process and every start: seeds the access log's samplers.
fn log_process_seed() -> u64 {
    unix_ms() ^ u64::from(std::process::id()).rotate_left(32)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The panic hook under `log.format = "json"`: the default hook's message as one JSON line,
/// with a backtrace inside it when RUST_BACKTRACE asks for one.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let what = info.payload_as_str().unwrap_or("Box<dyn Any>");
    let at = info.location().map_or(String::new(), |l| {
        format!(" at {}:{}:{}", l.file(), l.line(), l.column())
    });
    let backtrace = std::backtrace::Backtrace::capture();
    let trace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
        _ => String::new(),
    };
    emit_str(
        Level::Error,
        &format!("thread '{name}' panicked{at}: {what}{trace}"),
    );
}

#[doc(hidden)]
#[macro_export]
macro_rules! __holdfast_log {
    ($level:ident, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            $crate::log::emit($crate::log::Level::$level, format_args!($($arg)+));
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __holdfast_error {
    ($($arg:tt)+) => { $crate::__holdfast_log!(Error, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __holdfast_warn {
    ($($arg:tt)+) => { $crate::__holdfast_log!(Warn, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __holdfast_info {
    ($($arg:tt)+) => { $crate::__holdfast_log!(Info, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __holdfast_debug {
    ($($arg:tt)+) => { $crate::__holdfast_log!(Debug, $($arg)+) };
}

/// `limited!(Warn, "...", args)`: a line that may repeat per connection or per event, printed
/// at most once per call site every `limit::INTERVAL_MS`, with a count of the ones held back.
#[doc(hidden)]
#[macro_export]
macro_rules! __holdfast_limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log::limit::RateLimit = $crate::log::limit::RateLimit::new();
        if $crate::log::enabled($crate::log::Level::$level) {
            LIMIT.emit($crate::log::Level::$level, format_args!($($arg)+));
        }
    }};
}

pub use crate::{
    __holdfast_debug as debug, __holdfast_error as error, __holdfast_info as info,
    __holdfast_limited as limited, __holdfast_warn as warn,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_parse() {
        assert!(Level::Error < Level::Warn && Level::Info < Level::Debug);
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("warning"), None);
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse("JSON"), None);
    }

    #[test]
    fn lines_below_the_level_are_not_even_formatted() {
        struct Loud;
        impl std::fmt::Display for Loud {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("formatted a line below the level")
            }
        }
        // The default level is info (nothing in the unit tests calls `init`).
        assert!(enabled(Level::Info) && !enabled(Level::Debug));
        debug!("{}", Loud);
        limited!(Debug, "{}", Loud);
    }
}
