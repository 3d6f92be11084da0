//! Owns SIGINT/SIGTERM: the first asks the run to stop early (close the connections, report
//! what was measured); a second one exits at once. A shard also arranges to die with its
//! parent (PR_SET_PDEATHSIG) so a killed parent leaves no orphans.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::sync::atomic::{AtomicUsize, Ordering};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    if SIGNALS.fetch_add(1, Ordering::SeqCst) > 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// A stop was asked for.
pub fn stop_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// The environment variable through which a parent tells its shards its pid.
pub const PARENT_ENV: &str = "WSLOAD_PARENT_PID";

/// In a shard: be killed when the parent dies, and leave now if it already has.
pub fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    exit_if_orphaned();
}

/// In a shard: exit if the parent that started us is gone (we were re-parented).
pub fn exit_if_orphaned() {
    let expected = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    if let Some(pid) = expected
        && nix::unistd::getppid().as_raw() != pid
    {
        std::process::exit(1);
    }
}
