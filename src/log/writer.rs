//! Owns the access log's writer thread: the only code that writes access lines, so the event
//! loops never wait on a disk or a pipe. Workers hand it whole batches of lines through a
//! bounded queue (`WorkerLog::flush`, which drops and counts a batch rather than wait); it
//! writes them in order, returns the emptied buffers for reuse, reopens the file on SIGHUP (for
//! logrotate), and on a clean shutdown writes everything queued before the process exits.

use super::access::{Target, WorkerLog};
use super::sample::Sampler;
use super::{Format, log_process_seed};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Batches the queue holds (each up to ~32 KiB): what the writer may fall behind by before
/// lines are dropped.
const QUEUE_BATCHES: usize = 64;
/// Emptied buffers kept for the workers to reuse.
const MAX_SPARES: usize = 64;
/// Writes to a pipe of at most this many bytes are atomic (POSIX PIPE_BUF on Linux): lines
/// written in such chunks never interleave with another writer's on a shared stderr.
const PIPE_BUF: usize = 4096;

pub(super) enum Msg {
    Lines(Vec<u8>),
    /// Look at the reopen flag.
    Wake,
    /// Write what is queued and end.
    Stop,
}

/// What workers and the writer share.
pub struct Queue {
    tx: SyncSender<Msg>,
    spares: Mutex<Vec<Vec<u8>>>,
    reopen: AtomicBool,
}

impl Queue {
    /// Queues a batch, or gives it back when the queue is full (or the writer is gone).
    pub(super) fn try_send(&self, batch: Vec<u8>) -> Result<(), Vec<u8>> {
        self.tx.try_send(Msg::Lines(batch)).map_err(|e| match e {
            TrySendError::Full(Msg::Lines(b)) | TrySendError::Disconnected(Msg::Lines(b)) => b,
            _ => unreachable!("only Lines was sent"),
        })
    }

    /// An empty buffer, reused when the writer has one to spare (never waiting for its lock).
    pub(super) fn spare(&self, capacity: usize) -> Vec<u8> {
        self.spares
            .try_lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < MAX_SPARES {
            spares.push(buf);
        }
    }
}

/// The process's access log: its writer thread and what workers need to feed it.
pub struct AccessLog {
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    format: Format,
    process: Option<usize>,
    sample: f64,
    reopenable: bool,
}

impl AccessLog {
    /// Opens `target` now, so that a path that cannot be opened is a configuration error at
    /// start (naming `log.access`), and starts the writer. `None` when the access log is off.
    pub fn start(
        target: &Target,
        format: Format,
        sample: f64,
        process: Option<usize>,
    ) -> Result<Option<AccessLog>, String> {
        let dest = match target {
            Target::Off => return Ok(None),
            Target::Stderr => Dest::new(Sink::Stderr, None),
            Target::Stdout => Dest::new(Sink::Stdout, None),
            Target::File(path) => Dest::new(Sink::File(open(path)?), Some(path.clone())),
        };
        let reopenable = dest.path.is_some();
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let queue = Arc::new(Queue {
            tx,
            spares: Mutex::new(Vec::new()),
            reopen: AtomicBool::new(false),
        });
        let writer_queue = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("holdfast-access".into())
            .spawn(move || {
                super::block_signals();
                run(rx, &writer_queue, dest)
            })
            .map_err(|e| format!("log.access: cannot start its writer thread: {e}"))?;
        Ok(Some(AccessLog {
            queue,
            thread: Mutex::new(Some(thread)),
            format,
            process,
            sample,
            reopenable,
        }))
    }

    /// Checks that `target` can be opened, creating the file if needed (the supervisor, whose
    /// processes each open it themselves).
    pub fn check(target: &Target) -> Result<(), String> {
        match target {
            Target::File(path) => open(path).map(drop),
            _ => Ok(()),
        }
    }

    /// Worker `index`'s buffer and sampler.
    pub fn worker(&self, index: usize) -> WorkerLog {
        let seed = log_process_seed() ^ (index as u64).rotate_left(48);
        WorkerLog::new(
            Arc::clone(&self.queue),
            self.format,
            self.process,
            Sampler::new(self.sample, seed),
        )
    }

    /// SIGHUP: the file is reopened by the writer before its next write. False when the access
    /// log is not a file (nothing to reopen).
    pub fn reopen(&self) -> bool {
        if !self.reopenable {
            return false;
        }
        self.queue.reopen.store(true, Ordering::Release);
        // A full queue means the writer is busy and sees the flag on its next round anyway.
        let _ = self.queue.tx.try_send(Msg::Wake);
        true
    }

    /// Writes everything queued and stops the writer. Called once the workers have handed
    /// over their last lines; waits for the writer, never for the workers.
    pub fn finish(&self) {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = self.queue.tx.send(Msg::Stop);
            let _ = thread.join();
        }
    }
}

fn open(path: &std::path::Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("log.access: cannot open {}: {e}", path.display()))
}

enum Sink {
    Stderr,
    Stdout,
    File(File),
}

struct Dest {
    sink: Sink,
    /// The file's path, for reopening.
    path: Option<PathBuf>,
    /// Not a regular file (a pipe, a terminal, a socket): written in line-aligned chunks of at
    /// most `PIPE_BUF`, so lines stay whole beside other writers.
    chunked: bool,
}

impl Dest {
    fn new(sink: Sink, path: Option<PathBuf>) -> Dest {
        let mut d = Dest {
            sink,
            path,
            chunked: true,
        };
        d.chunked = !d.is_regular_file();
        d
    }

    fn is_regular_file(&self) -> bool {
        use std::os::fd::AsFd;
        let fd = match &self.sink {
            Sink::Stderr => std::io::stderr().as_fd().try_clone_to_owned(),
            Sink::Stdout => std::io::stdout().as_fd().try_clone_to_owned(),
            Sink::File(f) => f.as_fd().try_clone_to_owned(),
        };
        fd.ok()
            .and_then(|fd| File::from(fd).metadata().ok())
            .is_some_and(|m| m.file_type().is_file())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = if self.chunked {
                chunk_len(rest)
            } else {
                rest.len()
            };
            let (now, later) = rest.split_at(n);
            match &mut self.sink {
                // Each chunk under the lock the leveled log takes too: its lines never land
                // inside one of ours.
                Sink::Stderr => std::io::stderr().lock().write_all(now)?,
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(now)?;
                    out.flush()?;
                }
                Sink::File(f) => f.write_all(now)?,
            }
            rest = later;
        }
        Ok(())
    }

    /// Opens the path again (logrotate has moved the file); on failure keeps writing to the
    /// file already open.
    fn reopen(&mut self) {
        let Some(path) = &self.path else { return };
        match open(path) {
            Ok(f) => {
                self.sink = Sink::File(f);
                self.chunked = !self.is_regular_file();
                super::info!("SIGHUP: reopened log.access {}", path.display());
            }
            Err(e) => super::warn!("SIGHUP: {e}; writing to the file already open"),
        }
    }
}

/// The longest prefix of `bytes` that ends at a line's end and fits in `PIPE_BUF` (a longer
/// line goes alone).
fn chunk_len(bytes: &[u8]) -> usize {
    if bytes.len() <= PIPE_BUF {
        return bytes.len();
    }
    match bytes[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1),
    }
}

/// The writer: takes every batch queued, then writes them in order (one wake-up serves many
/// batches when it falls behind).
fn run(rx: Receiver<Msg>, queue: &Queue, mut dest: Dest) {
    let mut batches = Vec::new();
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Msg::Lines(b) => batches.push(b),
                Msg::Wake => {}
                Msg::Stop => stop = true,
            }
            next = if stop { None } else { rx.try_recv().ok() };
        }
        if queue.reopen.swap(false, Ordering::AcqRel) {
            dest.reopen();
        }
        for b in batches.drain(..) {
            if let Err(e) = dest.write(&b) {
                let lines = b.iter().filter(|&&c| c == b'\n').count();
                super::limited!(Error, "log.access: write failed: {e}; {lines} lines lost");
            }
            queue.give_back(b);
        }
    }
}

/// A worker log with no writer thread, for protocol tests: the second value returns the text
/// of every batch handed over so far.
#[cfg(test)]
pub fn capture(format: Format) -> (WorkerLog, impl Fn() -> String) {
    let (tx, rx) = mpsc::sync_channel(1024);
    let queue = Arc::new(Queue {
        tx,
        spares: Mutex::new(Vec::new()),
        reopen: AtomicBool::new(false),
    });
    let log = WorkerLog::new(queue, format, None, Sampler::new(1.0, 0));
    let read = move || {
        let mut text = String::new();
        while let Ok(Msg::Lines(b)) = rx.try_recv() {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        text
    };
    (log, read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::access::Peer;

    #[test]
    fn chunks_end_at_line_ends_and_fit_a_pipe_write() {
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<_>>();
        let many: Vec<u8> = line.repeat(100);
        assert_eq!(chunk_len(&many), 4000);
        assert_eq!(chunk_len(&many[..300]), 300);
        let long = [b'y'; 5000]
            .iter()
            .chain(b"\nz\n")
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(chunk_len(&long), 5001, "a long line goes alone");
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("holdfast-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn lines_reach_the_file_in_order_and_finish_writes_them_all() {
        let path = temp("order.log");
        let log = AccessLog::start(&Target::File(path.clone()), Format::Text, 1.0, None)
            .unwrap()
            .unwrap();
        let w = log.worker(0);
        w.set_time(0, 0);
        for i in 0..5_000u64 {
            assert!(w.wants(200));
            w.write(Peer::UNKNOWN, None, 200, i, 0);
            if i % 100 == 0 {
                w.flush();
            }
        }
        w.flush();
        log.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let bytes: Vec<u64> = text
            .lines()
            .map(|l| l.split(' ').nth(4).unwrap().parse().unwrap())
            .collect();
        assert_eq!(bytes, (0..5_000).collect::<Vec<_>>());
        assert_eq!(w.take_dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let queue = Arc::new(Queue {
            tx,
            spares: Mutex::new(Vec::new()),
            reopen: AtomicBool::new(false),
        });
        let w = WorkerLog::new(queue, Format::Text, None, Sampler::new(1.0, 0));
        for _ in 0..3 {
            w.write(Peer::UNKNOWN, None, 200, 1, 0);
            w.write(Peer::UNKNOWN, None, 200, 1, 0);
            w.flush();
        }
        assert_eq!(
            w.take_dropped(),
            4,
            "the first batch fits, the next two do not"
        );
        assert_eq!(w.take_dropped(), 0);
    }

    #[test]
    fn errors_are_always_logged_and_the_rest_sampled() {
        let path = temp("sample.log");
        let log = AccessLog::start(&Target::File(path), Format::Text, 0.0, None)
            .unwrap()
            .unwrap();
        let w = log.worker(0);
        assert!(!w.wants(200) && !w.wants(101) && !w.wants(304));
        assert!(w.wants(400) && w.wants(404) && w.wants(503));
        log.finish();
    }

    #[test]
    fn an_unopenable_path_names_the_key() {
        let e = AccessLog::start(
            &Target::File("/nonexistent/dir/access.log".into()),
            Format::Text,
            1.0,
            None,
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("log.access: cannot open /nonexistent/dir/access.log: "),
            "{e}"
        );
        assert!(AccessLog::check(&Target::File("/nonexistent/x".into())).is_err());
    }

    #[test]
    fn batches_are_due_after_a_short_delay() {
        let (tx, rx) = mpsc::sync_channel(4);
        let queue = Arc::new(Queue {
            tx,
            spares: Mutex::new(Vec::new()),
            reopen: AtomicBool::new(false),
        });
        let w = WorkerLog::new(queue, Format::Text, None, Sampler::new(1.0, 0));
        assert_eq!(w.due_at(), None);
        w.set_time(1_000, 0);
        w.write(Peer::UNKNOWN, None, 200, 1, 0);
        assert_eq!(w.due_at(), Some(1_000 + crate::log::access::BATCH_DELAY_MS));
        w.flush_if_due(1_010);
        assert!(rx.try_recv().is_err(), "not yet");
        w.flush_if_due(1_050);
        assert!(matches!(rx.try_recv(), Ok(Msg::Lines(_))));
        assert_eq!(w.due_at(), None);
    }
}
