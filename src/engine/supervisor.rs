//! Owns `server.processes`: a supervisor that runs several server processes sharing the
//! listening ports through SO_REUSEPORT, for hosts whose per-process open-file limit is below the
//! connections wanted (like nginx's `worker_processes`). It resolves port 0 once and holds every
//! port bound (not listening) so a restarted process can always rejoin; shares one certificate
//! and one rotating ticket key file so TLS sessions resume at any process; gives each process a
//! slot of shared counters; forwards SIGTERM, SIGINT and SIGHUP; and restarts a process that dies,
//! with a growing delay while it keeps dying young.

use super::shm::SharedMetrics;
use crate::config::Config;
use crate::log;
use crate::log::access::Target as AccessTarget;
use crate::proto::tls::{certs, tickets};
use crate::signals::{self, Signal};
use nix::sys::signal::{Signal as NixSignal, kill};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, getsockname, setsockopt, socket,
    sockopt,
};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Tells a server process it runs under a supervisor: `index/count/metrics-fd/workers`.
const ROLE_ENV: &str = "HOLDFAST_SUPERVISED";

/// A server process's place under its supervisor.
pub struct ChildRole {
    pub index: usize,
    pub count: usize,
    pub metrics_fd: RawFd,
    pub workers: usize,
    /// The supervisor's pid; when `getppid()` differs, the supervisor has died.
    pub supervisor: i32,
}

impl ChildRole {
    /// True once the supervisor is gone. Its death also closes the pipe our stderr goes to, so
    /// stderr is pointed at /dev/null first: a log line must not fail (and panic) mid-drain.
    pub fn orphaned(&self) -> bool {
        if nix::unistd::getppid().as_raw() == self.supervisor {
            return false;
        }
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stderr(&null);
        }
        true
    }
}

/// The role given by the supervisor, if this process was started by one.
pub fn child_role() -> Result<Option<ChildRole>, String> {
    let Ok(v) = std::env::var(ROLE_ENV) else {
        return Ok(None);
    };
    let bad = || format!("{ROLE_ENV}={v:?}: expected index/count/fd/workers");
    let parts: Vec<usize> = v
        .split('/')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [index, count, fd, workers] = parts[..] else {
        return Err(bad());
    };
    if index >= count || workers == 0 {
        return Err(bad());
    }
    Ok(Some(ChildRole {
        index,
        count,
        metrics_fd: fd as RawFd,
        workers,
        supervisor: nix::unistd::getppid().as_raw(),
    }))
}

/// Where a server process under a supervisor writes its access log. With `log.access =
/// "stderr"` it writes to its stdout, which the supervisor points at its own stderr (see
/// `Launcher::spawn`): the lines arrive unprefixed and unparsed, as they would from one process,
/// while the process's stderr stays the pipe its log lines are relayed through.
pub fn child_access_target(configured: &AccessTarget) -> AccessTarget {
    match configured {
        AccessTarget::Stderr => AccessTarget::Stdout,
        other => other.clone(),
    }
}

/// What the supervisor hears about: signals, and lines from its processes.
enum Event {
    Signal(Signal),
    Ready(usize, u64),
}

/// One process slot.
struct Slot {
    child: Option<Child>,
    generation: u64,
    started: Instant,
    /// Delay before the next restart; doubles while the process keeps dying young.
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Slot {
    /// The exit status of a process that has ended (and is now forgotten), if it has.
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }
}

/// Runs `config.server.processes` server processes until SIGTERM/SIGINT and their drain.
/// `args` are this process's own arguments (after the program name), passed on to each process.
pub fn supervise(config: &Config, args: &[OsString]) -> Result<(), String> {
    let processes = config.server.processes;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match config.server.workers {
        0 => (cores / processes).max(1),
        n => n,
    };
    let signal_set = signals::block_supervisor()?;
    let share = config.server.max_connections.div_ceil(processes);
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(_, hard)| hard);
    if let Some(line) = super::nofile_shortfall(share as u64, hard) {
        log::warn!("server.max_connections per process (÷ {processes}) = {line}");
    }

    // Every --set below is appended after the operator's own, so it wins.
    let mut sets: Vec<String> = vec![
        format!("server.workers={workers}"),
        format!("server.max_connections={share}"),
    ];
    let mut held: Vec<OwnedFd> = Vec::new();
    let listen = hold_ports(&config.server.listen, &mut held)?;
    sets.push(format!("server.listen={}", toml_list(&listen)));
    let tls = !config.server.tls_listen.is_empty();
    let tls_listen = if tls {
        hold_ports(&config.server.tls_listen, &mut held)?
    } else {
        Vec::new()
    };
    let private = PrivateDir::create()?;
    let mut ticket_file = None;
    if tls {
        sets.push(format!("server.tls_listen={}", toml_list(&tls_listen)));
        if config.tls.cert.is_none() {
            let (cert, key) = certs::self_signed_pem()?;
            let cert_path = private.write("cert.pem", &cert)?;
            let key_path = private.write("key.pem", &key)?;
            sets.push(format!("tls.cert={:?}", cert_path.display().to_string()));
            sets.push(format!("tls.key={:?}", key_path.display().to_string()));
            log::warn!(
                "tls: no tls.cert/tls.key configured; serving a self-signed certificate \
                 for localhost generated at start (clients will not trust it)"
            );
        }
        if config.tls.tickets && config.tls.ticket_key_file.is_none() {
            let keys = TicketFile::new(private.path("ticket-keys"))?;
            keys.write()?;
            sets.push(format!(
                "tls.ticket_key_file={:?}",
                keys.path.display().to_string()
            ));
            ticket_file = Some(keys);
        }
    }

    let (metrics, metrics_fd) = SharedMetrics::create(processes, workers)?;
    let launcher = Launcher {
        args: args.to_vec(),
        sets,
        processes,
        workers,
        metrics_fd,
        access_to_stderr: config.log.access == AccessTarget::Stderr,
    };
    for (scheme, addrs) in [("http", &listen), ("https", &tls_listen)] {
        for a in addrs.iter() {
            log::info!(
                "listening on {scheme}://{a} (processes: {processes}, workers each: {workers})"
            );
        }
    }

    let (tx, rx) = mpsc::channel::<Event>();
    let signal_tx = tx.clone();
    std::thread::Builder::new()
        .name("holdfast-signals".into())
        .spawn(move || {
            signals::wait_loop(&signal_set, |sig| {
                let _ = signal_tx.send(Event::Signal(sig));
            })
        })
        .map_err(|e| format!("cannot start signal thread: {e}"))?;

    let mut slots: Vec<Slot> = Vec::with_capacity(processes);
    for index in 0..processes {
        let child = launcher.spawn(index, 0, &tx)?;
        slots.push(Slot {
            child: Some(child),
            generation: 0,
            started: Instant::now(),
            backoff: Duration::from_millis(100),
            restart_at: None,
        });
    }

    // Start-up: every process must report ready; one that dies first fails the whole start.
    let mut ready = vec![false; processes];
    let start_deadline = Instant::now() + Duration::from_secs(60);
    while !ready.iter().all(|r| *r) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Ready(i, 0)) => ready[i] = true,
            Ok(Event::Signal(Signal::Stop)) => {
                signal_all(&slots, NixSignal::SIGTERM);
                wait_all(&mut slots);
                return Ok(());
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => unreachable!("the supervisor holds a sender"),
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some(status) = slot.reap() {
                signal_all(&slots, NixSignal::SIGKILL);
                wait_all(&mut slots);
                return Err(format!(
                    "server process {i} exited during start-up ({}); see its lines above",
                    describe(status)
                ));
            }
        }
        if Instant::now() > start_deadline {
            signal_all(&slots, NixSignal::SIGKILL);
            wait_all(&mut slots);
            return Err("server processes did not become ready within 60s".into());
        }
    }
    log::info!("{}", log::READY);
    crate::notify::ready();

    let mut draining = false;
    let rotation = config.tls.ticket_rotation;
    let mut next_rotation = Instant::now() + rotation;
    loop {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(500);
        if ticket_file.is_some() {
            wake = wake.min(next_rotation);
        }
        for s in slots.iter().filter_map(|s| s.restart_at) {
            wake = wake.min(s);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Event::Signal(Signal::Stop)) => {
                if draining {
                    // The processes ignore repeated stop signals (a signal to the whole process
                    // group reaches them beside ours), so hurrying them is ours to do.
                    log::warn!("second stop signal, stopping the processes now");
                    signal_all(&slots, NixSignal::SIGKILL);
                } else {
                    log::info!(
                        "draining {processes} processes (up to {:?} after server.drain_delay \
                         {:?})",
                        config.server.shutdown_timeout,
                        config.server.drain_delay
                    );
                    crate::notify::stopping("draining");
                    signal_all(&slots, NixSignal::SIGTERM);
                }
                draining = true;
                for s in &mut slots {
                    s.restart_at = None;
                }
            }
            Ok(Event::Signal(Signal::Reload)) => {
                log::info!("SIGHUP: passing it on to {processes} processes");
                crate::notify::reloading();
                signal_all(&slots, NixSignal::SIGHUP);
                crate::notify::ready();
            }
            Ok(Event::Ready(i, generation)) if generation > 0 => {
                if slots[i].generation == generation {
                    log::info!("process {i} is serving again");
                }
            }
            Ok(Event::Signal(Signal::ChildExited) | Event::Ready(..))
            | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => unreachable!("the supervisor holds a sender"),
        }
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some(status) = slot.reap() {
                if draining {
                    continue;
                }
                let lived = now - slot.started;
                slot.backoff = if lived < Duration::from_secs(10) {
                    (slot.backoff * 2).min(Duration::from_secs(10))
                } else {
                    Duration::from_millis(100)
                };
                // Its connections are lost: a warning, though the supervisor copes.
                log::warn!(
                    "process {i} exited ({}) after {lived:.1?}; restarting in {:?}",
                    describe(status),
                    slot.backoff
                );
                slot.restart_at = Some(now + slot.backoff);
            }
            if slot.restart_at.is_some_and(|t| now >= t) {
                slot.restart_at = None;
                metrics.reset_for_restart(i);
                slot.generation += 1;
                match launcher.spawn(i, slot.generation, &tx) {
                    Ok(child) => {
                        slot.child = Some(child);
                        slot.started = now;
                    }
                    Err(e) => {
                        log::error!("process {i}: {e}; trying again");
                        slot.restart_at = Some(now + slot.backoff);
                    }
                }
            }
        }
        if let Some(keys) = ticket_file.as_mut()
            && now >= next_rotation
        {
            next_rotation = now + rotation;
            match keys.rotate() {
                // The processes re-read the file on SIGHUP; the key that now seals was already
                // in the file for a whole period, so every process can open its tickets.
                Ok(()) => signal_all(&slots, NixSignal::SIGHUP),
                Err(e) => log::warn!("ticket keys: {e}; keeping the current ones"),
            }
        }
        if draining && slots.iter().all(|s| s.child.is_none()) {
            log::info!("drained, exiting");
            drop(held);
            return Ok(());
        }
    }
}

/// How the supervisor starts a server process: the same binary and arguments, plus its role.
struct Launcher {
    args: Vec<OsString>,
    sets: Vec<String>,
    processes: usize,
    workers: usize,
    metrics_fd: OwnedFd,
    /// `log.access = "stderr"`: the process's stdout is our stderr (`child_access_target`).
    access_to_stderr: bool,
}

impl Launcher {
    fn spawn(
        &self,
        index: usize,
        generation: u64,
        events: &Sender<Event>,
    ) -> Result<Child, String> {
        let fd = self.metrics_fd.as_raw_fd();
        let parent = std::process::id() as i32;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.args(&self.args);
        for s in &self.sets {
            cmd.arg("--set").arg(s);
        }
        cmd.env(
            ROLE_ENV,
            format!("{index}/{}/{fd}/{}", self.processes, self.workers),
        )
        // The supervisor alone speaks to systemd (NotifyAccess=main).
        .env_remove(crate::notify::NOTIFY_SOCKET)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
        if self.access_to_stderr {
            use std::os::fd::AsFd;
            let ours = std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("cannot start server process {index}: stderr: {e}"))?;
            cmd.stdout(Stdio::from(ours));
        }
        // SAFETY: the closure runs in the child between fork and exec and calls only
        // async-signal-safe functions (prctl, getppid, fcntl, _exit); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // A server process must not outlive its supervisor: if the supervisor dies, the
                // process drains and exits as on SIGTERM.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // The shared counters' memfd is close-on-exec everywhere else.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start server process {index}: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let events = events.clone();
        std::thread::Builder::new()
            .name(format!("holdfast-p{index}-log"))
            .spawn(move || relay_log(index, generation, stderr, events))
            .map_err(|e| format!("cannot start a log thread: {e}"))?;
        Ok(child)
    }
}

/// Copies a process's lines to our stderr (`holdfast[i]: ...`, or its JSON lines as they are;
/// see `log::relay`), each in one write so two processes' lines never interleave, and says when
/// it is ready. A line that is not UTF-8 is relayed lossily rather than ending the relay.
fn relay_log(
    index: usize,
    generation: u64,
    stderr: std::process::ChildStderr,
    events: Sender<Event>,
) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let relayed = log::relay::relay(log::format(), index, line, log::unix_ms());
        log::write_stderr(&relayed.line);
        if relayed.ready {
            let _ = events.send(Event::Ready(index, generation));
        }
    }
}

/// Sends `sig` to every process that is running.
fn signal_all(slots: &[Slot], sig: NixSignal) {
    for s in slots.iter() {
        if let Some(c) = &s.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }
}

fn wait_all(slots: &mut [Slot]) {
    for s in slots {
        if let Some(mut c) = s.child.take() {
            let _ = c.wait();
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!(
            "killed by {}",
            NixSignal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.to_string())
        ),
        _ => status.to_string(),
    }
}

fn toml_list(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", items.join(","))
}

/// Binds (without listening) an SO_REUSEPORT socket on each address and keeps it: port 0 becomes
/// one concrete port every process joins, and the port stays ours while a process restarts. A
/// socket that does not listen receives no connections.
fn hold_ports(addrs: &[SocketAddr], held: &mut Vec<OwnedFd>) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let fail = |e: nix::Error| format!("server.listen {addr}: {e}");
        let family = if addr.is_ipv6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(fail)?;
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(fail)?;
        if addr.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(fail)?;
        }
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(fail)?;
        let local: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(fail)?;
        let bound = match (local.as_sockaddr_in(), local.as_sockaddr_in6()) {
            (Some(v4), _) => SocketAddr::from((v4.ip(), v4.port())),
            (_, Some(v6)) => SocketAddr::from((v6.ip(), v6.port())),
            _ => return Err(format!("server.listen {addr}: odd local address")),
        };
        out.push(bound);
        held.push(fd);
    }
    Ok(out)
}

/// A directory only this user can read (the generated key and ticket keys live there), removed
/// when the supervisor exits.
struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Under systemd, in the unit's `RuntimeDirectory=` (which it creates for the service user
    /// and removes at stop, and which stays writable under `ProtectSystem=strict`); elsewhere in
    /// the temporary directory.
    fn create() -> Result<PrivateDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("RUNTIME_DIRECTORY")
            .and_then(|d| {
                // systemd lists one directory per `RuntimeDirectory=` entry, separated by ':'.
                let first = d.to_str()?.split(':').next()?.to_string();
                (!first.is_empty()).then(|| PathBuf::from(first))
            })
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("holdfast-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(PrivateDir(path))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file atomically (temp file, then rename), readable by this user only.
    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        write_private(&self.path(name), text)?;
        Ok(self.path(name))
    }
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ticket key file the supervisor writes for its processes when the operator gave none. It
/// follows the two-step rotation of the README: a new key is added (it opens tickets) one period
/// before it starts sealing them, and a retired key stays two periods so tickets sealed just
/// before a rotation still open for their whole advertised lifetime.
struct TicketFile {
    path: PathBuf,
    /// The sealing key, then the two before it.
    current: Vec<String>,
    next: String,
}

impl TicketFile {
    fn new(path: PathBuf) -> Result<TicketFile, String> {
        Ok(TicketFile {
            path,
            current: vec![tickets::random_key_hex()?],
            next: tickets::random_key_hex()?,
        })
    }

    fn rotate(&mut self) -> Result<(), String> {
        let fresh = tickets::random_key_hex()?;
        let promoted = std::mem::replace(&mut self.next, fresh);
        self.current.insert(0, promoted);
        self.current.truncate(3);
        self.write()
    }

    fn write(&self) -> Result<(), String> {
        let mut text = String::from("# written by the holdfast supervisor: sealing key first\n");
        for k in self.current.iter().chain([&self.next]) {
            text.push_str(k);
            text.push('\n');
        }
        write_private(&self.path, &text)
    }
}
