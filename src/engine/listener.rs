//! Owns listening sockets: one SO_REUSEPORT socket per worker per address, so the kernel spreads
//! new connections across workers with no shared accept queue and no lock. Each carries the
//! `[tcp]` options, which accepted sockets inherit (see `sockopt`).

use super::sockopt as tcp_options;
use crate::config::TcpConfig;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, getsockname, listen,
    setsockopt, socket, sockopt,
};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Binds `workers` sockets to `addr`. With port 0 the first bind picks the port and the others
/// join it, so every worker serves the same ephemeral port.
pub fn bind_reuseport(
    addr: SocketAddr,
    workers: usize,
    backlog: u32,
    tcp: &TcpConfig,
    defer_secs: Option<u32>,
) -> Result<(SocketAddr, Vec<OwnedFd>), String> {
    let mut bound = addr;
    let mut fds = Vec::with_capacity(workers);
    for _ in 0..workers {
        let fd = bind_one(bound, backlog).map_err(|e| format!("server.listen {addr}: {e}"))?;
        // A failure here is not fatal: the worker finds the option missing on its first
        // accepted socket and sets the options per connection, reporting the error there.
        let _ = tcp_options::apply(fd.as_fd(), tcp);
        if let Some(secs) = defer_secs {
            tcp_options::defer_accept(fd.as_fd(), secs)
                .map_err(|e| format!("server.defer_accept on {addr}: {e}"))?;
        }
        if bound.port() == 0 {
            let local: SockaddrStorage = getsockname(fd.as_raw_fd())
                .map_err(|e| format!("server.listen {addr}: getsockname: {e}"))?;
            bound = to_std(&local).ok_or_else(|| format!("server.listen {addr}: odd address"))?;
        }
        fds.push(fd);
    }
    Ok((bound, fds))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> nix::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // The kernel caps the backlog at net.core.somaxconn; see tuning/.
    let backlog = Backlog::new(backlog.min(i32::MAX as u32) as i32).unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog)?;
    Ok(fd)
}

fn to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}
