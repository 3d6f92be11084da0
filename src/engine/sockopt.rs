//! Owns the socket options set on every accepted connection from `[tcp]`: kernel keep-alive
//! probing (so a peer that vanished without a FIN is found even when no heartbeat runs),
//! TCP_USER_TIMEOUT (so unacknowledged data cannot hold a connection for the kernel's ~15 min
//! retransmission budget), and TCP_NODELAY.

use crate::config::TcpConfig;
use nix::sys::socket::{setsockopt, sockopt};
use std::os::fd::BorrowedFd;

/// Applies `[tcp]` to an accepted socket. Errors are returned so the caller can count them;
/// a connection with a failed option still works, so it is not closed for it.
pub fn apply(fd: BorrowedFd<'_>, tcp: &TcpConfig) -> nix::Result<()> {
    if tcp.nodelay {
        setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    }
    if tcp.keepalive {
        setsockopt(&fd, sockopt::KeepAlive, &true)?;
        setsockopt(
            &fd,
            sockopt::TcpKeepIdle,
            &(tcp.keepalive_idle.as_secs() as u32),
        )?;
        setsockopt(
            &fd,
            sockopt::TcpKeepInterval,
            &(tcp.keepalive_interval.as_secs() as u32),
        )?;
        setsockopt(&fd, sockopt::TcpKeepCount, &tcp.keepalive_count)?;
    }
    if !tcp.user_timeout.is_zero() {
        let ms = tcp.user_timeout.as_millis().min(u32::MAX as u128) as u32;
        setsockopt(&fd, sockopt::TcpUserTimeout, &ms)?;
    }
    Ok(())
}
