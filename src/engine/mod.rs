//! The engine: the only `unsafe` and the only io_uring in holdfast. It binds the listeners,
//! starts one worker thread per core (each with its own ring and SO_REUSEPORT listener), wakes
//! them on signals, and returns when every worker has drained.

mod bufring;
mod clock;
mod conn;
mod listener;
mod outq;
mod per_ip;
mod ring;
mod shm;
mod sockopt;
mod stop;
mod supervisor;
mod token;
mod worker;

pub use supervisor::{child_access_target, child_role, supervise};

use crate::config::Config;
use crate::log;
use crate::log::writer::AccessLog;
use crate::metrics::Metrics;
use crate::proto::handler::{Application, ProcessPlace, Waker, WorkerPlace};
use crate::signals::{self, Signal};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::sync::Arc;
use std::sync::mpsc;
use worker::{Shared, Worker};

/// Files a process needs besides its connections: rings, eventfds, listeners, stdio.
const FD_HEADROOM: u64 = 64;

/// Runs the server until SIGTERM/SIGINT and a completed drain. Errors are one line for the
/// operator (the caller prints them and exits non-zero). The access log, opened by the caller
/// (a bad path is a configuration error), has every line written before this returns.
pub fn run(
    config: Config,
    tls: Option<crate::proto::tls::TlsShared>,
    access: Option<AccessLog>,
    app: Arc<dyn Application>,
) -> Result<(), String> {
    let role = supervisor::child_role()?;
    let workers = match (&role, config.server.workers) {
        (Some(r), _) => r.workers,
        (None, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (None, n) => n,
    };
    let metrics = match &role {
        Some(r) => Metrics::shared(
            shm::SharedMetrics::open(r.metrics_fd, r.count, workers)?.blocks(),
            r.index,
        ),
        None => Metrics::new(workers),
    };
    // Probe io_uring before binding anything, so that a host without it gets one clear line
    // and no half-started server.
    drop(ring::build()?);
    let hard = raise_nofile_limit();
    // Under a supervisor every process would say the same; the supervisor says it once.
    if role.is_none()
        && let Some(line) = nofile_shortfall(config.server.max_connections as u64, hard)
    {
        log::warn!("server.max_connections = {line}");
    }
    // Signals are blocked before any thread starts so that every thread inherits the mask and
    // only the signal thread ever receives them.
    let signal_set = signals::block()?;

    let mut per_worker: Vec<Vec<(std::os::fd::OwnedFd, bool)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let tls_addrs = if tls.is_some() {
        config.server.tls_listen.as_slice()
    } else {
        &[]
    };
    let defer_secs = config
        .server
        .defer_accept
        .then(|| config.http.header_timeout.as_secs().min(u32::MAX as u64) as u32);
    let plain = config.server.listen.iter().map(|a| (a, false));
    for (addr, is_tls) in plain.chain(tls_addrs.iter().map(|a| (a, true))) {
        let (bound, fds) = listener::bind_reuseport(
            *addr,
            workers,
            config.server.backlog,
            &config.tcp,
            defer_secs,
        )?;
        for (w, fd) in fds.into_iter().enumerate() {
            per_worker[w].push((fd, is_tls));
        }
        let scheme = if is_tls { "https" } else { "http" };
        log::info!("listening on {scheme}://{bound} (workers: {workers})");
    }
    if tls.as_ref().is_some_and(|t| t.self_signed) {
        log::warn!(
            "tls: no tls.cert/tls.key configured; serving a self-signed certificate for \
             localhost generated at start (clients will not trust it)"
        );
    }

    let per_ip = per_ip::PerIp::new(
        config.server.max_connections_per_ip,
        config.server.connection_rate_per_ip,
    );
    let shared = Arc::new(Shared {
        metrics,
        per_ip,
        config,
        shutdown: Default::default(),
        stopping: Default::default(),
        tls,
        access,
    });
    let mut wakers = Vec::with_capacity(workers);
    for _ in 0..workers {
        wakers.push(Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)
                .map_err(|e| format!("eventfd: {e}"))?,
        ));
    }
    // The application wakes a worker the way a signal does: through its eventfd.
    let place = match &role {
        Some(r) => ProcessPlace {
            index: r.index,
            count: r.count,
            group: r.supervisor as u32,
        },
        None => ProcessPlace {
            index: 0,
            count: 1,
            group: std::process::id(),
        },
    };
    app.start(
        place,
        workers,
        wakers
            .iter()
            .map(|w| {
                let w = Arc::clone(w);
                Arc::new(move || {
                    let _ = w.write(1);
                }) as Waker
            })
            .collect(),
    )?;
    let process = place.index;
    let mut handles = Vec::with_capacity(workers);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    for (index, fds) in per_worker.into_iter().enumerate() {
        let wake = Arc::clone(&wakers[index]);
        let shared = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let app = Arc::clone(&app);
        let handle = std::thread::Builder::new()
            .name(format!("holdfast-w{index}"))
            .spawn(move || {
                let place = WorkerPlace {
                    index,
                    process,
                    workers,
                };
                let handler = app.worker(place);
                let worker = match Worker::new(index, fds, wake, shared, handler) {
                    Ok(w) => {
                        let _ = ready.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return Ok(());
                    }
                };
                worker.run()
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a worker thread died during start-up".into()),
        }
    }
    log::info!("{}", log::READY);

    crate::notify::ready();

    let stopper = stop::Stopper {
        shared: Arc::clone(&shared),
        wakers: Arc::new(wakers),
        supervised: role.is_some(),
    };
    std::thread::Builder::new()
        .name("holdfast-signals".into())
        .spawn(move || {
            signals::wait_loop(&signal_set, |sig| match sig {
                Signal::Stop => {
                    // After the supervisor's death (PR_SET_PDEATHSIG) we drain as on SIGTERM,
                    // with stderr quieted.
                    if let Some(r) = &role {
                        r.orphaned();
                    }
                    stopper.on_signal();
                }
                Signal::ChildExited => {}
                Signal::Reload => {
                    crate::notify::reloading();
                    let reopened = stopper.shared.access.as_ref().is_some_and(|a| a.reopen());
                    match &stopper.shared.tls {
                        Some(tls) => tls.reload(),
                        None if !reopened => {
                            log::info!("SIGHUP: no TLS listener or log file; nothing to reload")
                        }
                        None => {}
                    }
                    crate::notify::ready();
                }
            })
        })
        .map_err(|e| format!("cannot start signal thread: {e}"))?;

    let mut result = Ok(());
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err("a worker thread panicked".into()),
        }
    }
    // Every worker has handed over its last lines.
    if let Some(a) = &shared.access {
        a.finish();
    }
    if result.is_ok() {
        log::info!("drained, exiting");
    }
    result
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard one, which it returns.
fn raise_nofile_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        log::warn!("could not raise the open-file limit from {soft} to {hard}");
    }
    hard
}

/// When `connections` cannot fit in a process that may open `hard` files: the rest of a log
/// line that starts with the setting's value.
pub(crate) fn nofile_shortfall(connections: u64, hard: u64) -> Option<String> {
    (connections + FD_HEADROOM > hard).then(|| {
        format!(
            "{connections} but a process may open at most {hard} files; connections past about \
             {} will be refused at accept (raise LimitNOFILE= / `ulimit -Hn`, or \
             server.processes; see tuning/TUNING.md)",
            hard.saturating_sub(FD_HEADROOM)
        )
    })
}
