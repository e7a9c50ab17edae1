//! Where Skygate's own log lines go: stderr, written by a background
//! thread through a bounded queue, so a stderr nobody reads (a full pipe, a
//! hung log shipper) never blocks a request, the signal handler or the exit.
//! When the queue is full, lines are dropped and counted
//! (`skygate_log_dropped_total`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lines dropped because stderr took no more.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines waiting at most.
const QUEUE: usize = 4096;

static SENDER: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Line(Vec<u8>),
    /// Everything before it is written: answer on the channel.
    Flush(SyncSender<()>),
}

/// The writer `env_logger` writes each formatted record to: it queues the
/// record and returns at once.
pub struct Sink;

impl Sink {
    /// Starts the writer thread; without it (it could not start), lines
    /// go to stderr directly.
    pub fn start() -> Sink {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        if std::thread::Builder::new()
            .name("log".into())
            .spawn(move || writer(rx))
            .is_ok()
        {
            let _ = SENDER.set(tx);
        }
        Sink
    }
}

fn writer(rx: Receiver<Msg>) {
    let stderr = std::io::stderr();
    while let Ok(m) = rx.recv() {
        match m {
            Msg::Line(l) => {
                let _ = stderr.lock().write_all(&l);
            }
            Msg::Flush(done) => {
                let _ = done.try_send(());
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match SENDER.get() {
            Some(tx) => {
                if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(buf.to_vec())) {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let _ = std::io::stderr().write_all(buf);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits, at most `wait`, for the queued lines to reach stderr (at exit).
pub fn flush(wait: Duration) -> bool {
    let Some(tx) = SENDER.get() else { return true };
    let deadline = Instant::now() + wait;
    let (done_tx, done_rx) = sync_channel(1);
    let mut msg = Msg::Flush(done_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
    done_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write returns at once and the line reaches the writer thread;
    /// a flush waits for it.
    #[test]
    fn lines_are_queued_and_flushed() {
        let mut s = Sink::start();
        assert_eq!(s.write(b"a log line from a test\n").unwrap(), 23);
        assert!(flush(Duration::from_secs(5)));
    }
}
