//! Owns one server process's way from SIGTERM to exit: `/healthz` starts failing at once, the
//! listeners keep accepting for `server.drain_delay` (so a load balancer's health check takes
//! the node out before anything is refused), then the drain proper begins. A second stop signal
//! exits at once, except under a supervisor: there a stop arrives twice by design when the whole
//! process group or cgroup is signalled (Ctrl-C, systemd) and the supervisor forwards its own
//! copy too, so repeats are ignored and the supervisor alone decides to force an exit.

use super::worker::Shared;
use crate::log;
use nix::sys::eventfd::EventFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub struct Stopper {
    pub shared: Arc<Shared>,
    pub wakers: Arc<Vec<Arc<EventFd>>>,
    /// Under a supervisor: repeated stop signals are not a request to hurry.
    pub supervised: bool,
}

impl Stopper {
    /// A stop signal arrived (SIGTERM, SIGINT, or the supervisor's death).
    pub fn on_signal(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            if self.supervised {
                return;
            }
            log::warn!("second stop signal, exiting now");
            std::process::exit(1);
        }
        let delay = self.shared.config.server.drain_delay;
        crate::notify::stopping("draining");
        if delay.is_zero() {
            self.drain();
            return;
        }
        // Wake first, log after (as in `drain`): a health check sent by whoever read the
        // line must find every worker already told.
        self.wake();
        log::info!(
            "stopping: /healthz answers 503 and the listeners stay open for \
             server.drain_delay ({delay:?}), then the drain begins"
        );
        let me = Stopper {
            shared: Arc::clone(&self.shared),
            wakers: Arc::clone(&self.wakers),
            supervised: self.supervised,
        };
        let started = std::thread::Builder::new()
            .name("holdfast-drain-delay".into())
            .spawn(move || {
                std::thread::sleep(delay);
                me.drain();
            });
        if started.is_err() {
            // No thread for the delay: drain now rather than never.
            self.drain();
        }
    }

    fn drain(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        // Wake first, log after: whoever reads the line (an operator, a test) and then sends a
        // request must find every worker already told, its wake-up ahead of that request.
        self.wake();
        log::info!(
            "draining (up to {:?})",
            self.shared.config.server.shutdown_timeout
        );
    }

    fn wake(&self) {
        for w in self.wakers.iter() {
            let _ = w.write(1);
        }
    }
}
