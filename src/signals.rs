//! Owns signal handling: SIGTERM and SIGINT start a graceful drain (a second one exits at once),
//! SIGHUP asks for a reload, and (for a supervisor only) SIGCHLD says a server process ended. Signals are blocked in every thread and taken synchronously by one
//! thread with `sigwait`, so no async-signal-safety rules apply anywhere.

use nix::sys::signal::{SigSet, SigmaskHow, Signal as NixSignal, pthread_sigmask};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Reload,
    ChildExited,
}

/// Blocks the signals we handle (and SIGPIPE, which we never want: sends use MSG_NOSIGNAL)
/// in the calling thread; threads started afterwards inherit the mask.
pub fn block() -> Result<SigSet, String> {
    block_with(&[])
}

/// `block`, plus SIGCHLD, for the supervisor of several server processes.
pub fn block_supervisor() -> Result<SigSet, String> {
    block_with(&[NixSignal::SIGCHLD])
}

fn block_with(extra: &[NixSignal]) -> Result<SigSet, String> {
    let mut set = SigSet::empty();
    for s in extra {
        set.add(*s);
    }
    for s in [
        NixSignal::SIGTERM,
        NixSignal::SIGINT,
        NixSignal::SIGHUP,
        NixSignal::SIGPIPE,
    ] {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;
    Ok(set)
}

/// Waits for signals forever, calling `on` for each one we act on.
pub fn wait_loop(set: &SigSet, mut on: impl FnMut(Signal)) {
    loop {
        match set.wait() {
            Ok(NixSignal::SIGTERM | NixSignal::SIGINT) => on(Signal::Stop),
            Ok(NixSignal::SIGHUP) => on(Signal::Reload),
            Ok(NixSignal::SIGCHLD) => on(Signal::ChildExited),
            _ => {}
        }
    }
}
