//! Owns the socket options every accepted connection carries from `[tcp]`: kernel keep-alive
//! probing (so a peer that vanished without a FIN is found even when no heartbeat runs),
//! TCP_USER_TIMEOUT (so unacknowledged data cannot hold a connection for the kernel's ~15 min
//! retransmission budget), and TCP_NODELAY.
//!
//! Also the client's address of an accepted socket, read only when the access log needs it.
//!
//! They are set once on each listening socket: Linux copies them into every socket it accepts
//! there, which saves five `setsockopt` calls per connection (~3 µs, 4 % of a resumed TLS
//! handshake's server CPU). Each worker checks the first socket it accepts with [`carries`] and
//! falls back to [`apply`] per connection if a kernel ever stops copying them.

use crate::config::TcpConfig;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Applies `[tcp]` to a socket (a listener, or an accepted socket in the fallback). Errors are
/// returned so the caller can report them; a connection with a failed option still works, so
/// it is not closed for it.
pub fn apply(fd: BorrowedFd<'_>, tcp: &TcpConfig) -> nix::Result<()> {
    if tcp.nodelay {
        setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    }
    if tcp.keepalive {
        setsockopt(&fd, sockopt::KeepAlive, &true)?;
        setsockopt(&fd, sockopt::TcpKeepIdle, &keepalive_idle(tcp))?;
        setsockopt(&fd, sockopt::TcpKeepInterval, &keepalive_interval(tcp))?;
        setsockopt(&fd, sockopt::TcpKeepCount, &tcp.keepalive_count)?;
    }
    if !tcp.user_timeout.is_zero() {
        setsockopt(&fd, sockopt::TcpUserTimeout, &user_timeout_ms(tcp))?;
    }
    Ok(())
}

/// Whether an accepted socket already has every option `apply` would set.
pub fn carries(fd: BorrowedFd<'_>, tcp: &TcpConfig) -> bool {
    let nodelay = !tcp.nodelay || getsockopt(&fd, sockopt::TcpNoDelay) == Ok(true);
    let keepalive = !tcp.keepalive
        || (getsockopt(&fd, sockopt::KeepAlive) == Ok(true)
            && getsockopt(&fd, sockopt::TcpKeepIdle) == Ok(keepalive_idle(tcp))
            && getsockopt(&fd, sockopt::TcpKeepInterval) == Ok(keepalive_interval(tcp))
            && getsockopt(&fd, sockopt::TcpKeepCount) == Ok(tcp.keepalive_count));
    let user_timeout = tcp.user_timeout.is_zero()
        || getsockopt(&fd, sockopt::TcpUserTimeout) == Ok(user_timeout_ms(tcp));
    nodelay && keepalive && user_timeout
}

/// The peer's address (`getpeername`): a multishot accept returns only the fd. One system call
/// per connection, made only while the access log is on.
pub fn peer_addr(fd: BorrowedFd<'_>) -> Option<std::net::SocketAddr> {
    use nix::sys::socket::{SockaddrStorage, getpeername};
    let a: SockaddrStorage = getpeername(fd.as_raw_fd()).ok()?;
    match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
        (Some(v4), _) => Some((v4.ip(), v4.port()).into()),
        (_, Some(v6)) => Some((v6.ip(), v6.port()).into()),
        _ => None,
    }
}

fn keepalive_idle(tcp: &TcpConfig) -> u32 {
    tcp.keepalive_idle.as_secs() as u32
}

fn keepalive_interval(tcp: &TcpConfig) -> u32 {
    tcp.keepalive_interval.as_secs() as u32
}

fn user_timeout_ms(tcp: &TcpConfig) -> u32 {
    tcp.user_timeout.as_millis().min(u32::MAX as u128) as u32
}

/// TCP_DEFER_ACCEPT on a listening socket: a connection is queued for accept only once data
/// has arrived, or after about `secs` of silence (the kernel then passes it on at the client's
/// next ACK). HTTP, WebSocket and TLS clients all speak first.
pub fn defer_accept(fd: BorrowedFd<'_>, secs: u32) -> std::io::Result<()> {
    let secs = secs.max(1) as libc::c_int;
    // SAFETY: `fd` is a live socket for the duration of the call (a borrowed fd), and the
    // option value points at a c_int that outlives the call, with its size passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
