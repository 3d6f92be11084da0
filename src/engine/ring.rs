//! Owns io_uring setup: the flags that make a per-core ring fast (SINGLE_ISSUER, DEFER_TASKRUN,
//! COOP_TASKRUN, measured in DESIGN §4), falling back where the kernel lacks them, and turning
//! "io_uring is not available here" into one line that names the cause and the fix.

use io_uring::IoUring;
use std::io;

/// Submission queue entries per worker; completions get four times as many because multishot
/// accept and recv post many completions per submission.
const SQ_ENTRIES: u32 = 4096;
const CQ_ENTRIES: u32 = SQ_ENTRIES * 4;

/// Which setup flags the ring ended up with, for the start-up log line.
#[derive(Debug, Clone, Copy)]
pub struct RingFlags {
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
}

/// Builds a ring with the best flags this kernel accepts. SINGLE_ISSUER and DEFER_TASKRUN hold
/// because only the owning worker thread ever submits to or waits on the ring.
pub fn build() -> Result<(IoUring, RingFlags), String> {
    let attempts: [(bool, bool); 3] = [(true, true), (false, true), (false, false)];
    let mut last = None;
    for (defer, coop) in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(CQ_ENTRIES).setup_clamp();
        if defer {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        if coop {
            b.setup_coop_taskrun();
        }
        match b.build(SQ_ENTRIES) {
            Ok(ring) => {
                let p = ring.params();
                if !p.is_feature_ext_arg()
                    || !p.is_feature_nodrop()
                    || !p.is_feature_skip_cqe_on_success()
                {
                    return Err(unsupported_kernel(
                        "the ring lacks EXT_ARG, NODROP or CQE_SKIP",
                    ));
                }
                return Ok((
                    ring,
                    RingFlags {
                        defer_taskrun: defer,
                        coop_taskrun: coop,
                    },
                ));
            }
            // EINVAL: a flag this kernel does not know; try the next set.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(explain_setup_error(&e)),
        }
    }
    Err(explain_setup_error(&last.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

/// Maps an `io_uring_setup` failure to its likely cause and fix.
pub fn explain_setup_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "io_uring is not permitted here ({e}): either the sysctl kernel.io_uring_disabled is \
             set (fix: `sysctl -w kernel.io_uring_disabled=0`, or add this user to \
             kernel.io_uring_group) or a container seccomp profile blocks io_uring_setup (fix: \
             run with a profile that allows io_uring_setup, io_uring_enter and \
             io_uring_register, e.g. `--security-opt seccomp=unconfined`)"
        ),
        Some(libc::ENOSYS) => format!(
            "io_uring is not available ({e}): the kernel was built without it or a seccomp \
             profile hides it (fix: Linux 6.1 or newer with CONFIG_IO_URING=y, and a seccomp \
             profile that allows the io_uring system calls)"
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring setup ran out of locked memory ({e}) (fix: raise `ulimit -l` / \
             LimitMEMLOCK=, or use Linux 5.12 or newer where rings are memcg-accounted)"
        ),
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            format!("io_uring setup hit the open-file limit ({e}) (fix: raise `ulimit -n`)")
        }
        _ => unsupported_kernel(&e.to_string()),
    }
}

pub fn unsupported_kernel(detail: &str) -> String {
    format!(
        "io_uring on this kernel lacks what holdfast needs ({detail}) (fix: Linux 6.1 or newer: \
         multishot accept and recv, provided buffer rings, EXT_ARG waits)"
    )
}
