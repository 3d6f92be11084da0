#!/usr/bin/env python3
"""Reads the socket options of a server's accepted connection from the outside.

Usage: sockopts.py SERVER_PID PEER_PORT
Duplicates each socket of SERVER_PID into this process with pidfd_getfd(2) (needs ptrace
rights over it: root, or the parent of the server), finds the one whose peer port is
PEER_PORT, and prints its TCP options as JSON. Used by the integration tests to show that
holdfast really sets [tcp] on accepted sockets.
"""
import ctypes, json, os, socket, sys

SYS_pidfd_open, SYS_pidfd_getfd = 434, 438
libc = ctypes.CDLL(None, use_errno=True)

def main():
    pid, peer_port = int(sys.argv[1]), int(sys.argv[2])
    pidfd = libc.syscall(SYS_pidfd_open, pid, 0)
    if pidfd < 0:
        sys.exit(f"pidfd_open: {os.strerror(ctypes.get_errno())}")
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
        except OSError:
            continue
        fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
        if fd < 0:
            sys.exit(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
        s = socket.socket(fileno=fd)
        try:
            if s.type != socket.SOCK_STREAM or s.getpeername()[1] != peer_port:
                continue
        except OSError:
            continue
        finally:
            s.detach()
        s = socket.socket(fileno=fd)
        opts = {
            "SO_KEEPALIVE": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "TCP_KEEPIDLE": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "TCP_KEEPINTVL": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "TCP_KEEPCNT": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "TCP_USER_TIMEOUT": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            "TCP_NODELAY": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        }
        print(json.dumps(opts))
        return
    sys.exit(f"no socket of pid {pid} has peer port {peer_port}")

main()
