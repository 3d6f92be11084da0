//! Owns the service manager's readiness protocol (systemd's `sd_notify`): one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET`, so that a `Type=notify` unit
//! is "active" only once holdfast listens, shows "reloading" around SIGHUP and "deactivating"
//! during the drain. Without `NOTIFY_SOCKET` (a shell, a test, a process under holdfast's own
//! supervisor, which speaks for its processes) every call does nothing.
//!
//! Spoken directly rather than through libsystemd: the protocol is a single `sendto`, and the
//! abstract-namespace form (`@name`) is all std needs to be told about.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Start-up is complete: the listeners accept.
pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload (SIGHUP) begins; `ready` says it ended. `MONOTONIC_USEC` lets `Type=notify-reload`
/// units match this message to the signal they sent.
pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
    ));
}

/// The stop began: systemd shows the unit as deactivating while connections drain.
pub fn stopping(status: &str) {
    send(&format!("STOPPING=1\nSTATUS={status}"));
}

fn send(message: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send_to(&target.to_string_lossy(), message) {
        // Readiness is the service manager's business; failing to tell it must not stop the
        // server, but the operator should know why the unit hangs in "activating".
        crate::log::warn!(
            "{NOTIFY_SOCKET}={}: {e} (systemd will not see this state change)",
            target.to_string_lossy()
        );
    }
}

/// Sends one datagram to `target`: a filesystem path, or `@name` for Linux's abstract namespace.
pub fn send_to(target: &str, message: &str) -> std::io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None if target.starts_with('/') => SocketAddr::from_pathname(target)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected an absolute path or @abstract-name",
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let path = std::env::temp_dir().join(format!("holdfast-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);

        let name = format!("holdfast-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_target_is_refused() {
        assert!(send_to("notify.sock", "READY=1").is_err());
    }
}
