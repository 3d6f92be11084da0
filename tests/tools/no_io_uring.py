#!/usr/bin/env python3
"""Runs a command with io_uring_setup(2) blocked by a seccomp filter, as a container runtime's
default profile does: the call fails with EPERM. Usage: no_io_uring.py CMD [ARG]...
Used by the integration tests to check holdfast's one-line explanation when io_uring is missing.
"""
import ctypes, os, struct, sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SYS_io_uring_setup = 425  # the same number on every architecture (unified since Linux 5.1)
EPERM = 1

def insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)

prog = b"".join([
    insn(0x20, 0, 0, 0),                          # A = seccomp_data.nr
    insn(0x15, 0, 1, SYS_io_uring_setup),         # if A == io_uring_setup
    insn(0x06, 0, 0, 0x00050000 | EPERM),         #   return ERRNO(EPERM)
    insn(0x06, 0, 0, 0x7FFF0000),                 # return ALLOW
])
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxP", len(prog) // 8, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0) != 0:
    sys.exit(f"prctl(SECCOMP): {os.strerror(ctypes.get_errno())}")
os.execvp(sys.argv[1], sys.argv[1:])
