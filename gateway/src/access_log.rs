//! The access log: one JSON line per request on stdout, written by a
//! background thread so the request path never blocks on the terminal or a
//! pipe. Under load the writer gathers lines for a few milliseconds and
//! writes them at once (one `write` for many lines, no wake-up per line).
//! When the writer falls behind, lines are dropped and counted
//! (`skygate_access_log_dropped_total`) rather than slowing requests down.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};

static SENDER: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();
static DONE: OnceLock<Mutex<Option<std::thread::JoinHandle<()>>>> = OnceLock::new();

/// Starts the writer thread (once).
pub fn start() {
    let (tx, rx) = sync_channel::<Vec<u8>>(16 * 1024);
    if SENDER.set(tx).is_err() {
        return;
    }
    let handle = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer(rx));
    match handle {
        Ok(h) => {
            let _ = DONE.set(Mutex::new(Some(h)));
        }
        Err(e) => log::error!("access log disabled: cannot start its thread: {e}"),
    }
}

/// How long the writer lets lines gather after a write: under load, lines
/// queue meanwhile and go out in one `write`, and no request thread has to
/// wake the writer for each line.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

fn writer(rx: Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut batch: Vec<u8> = Vec::with_capacity(256 * 1024);
    // Blocks only while idle; an empty line is the stop marker sent by
    // `flush_and_stop`.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next.take() {
            if line.is_empty() {
                let _ = stdout.lock().write_all(&batch);
                let _ = stdout.lock().flush();
                return;
            }
            batch.extend_from_slice(&line);
            // Everything queued, then one write.
            let mut full = false;
            let stop = loop {
                match rx.try_recv() {
                    Ok(more) if more.is_empty() => break true,
                    Ok(more) => {
                        batch.extend_from_slice(&more);
                        if batch.len() >= 256 * 1024 {
                            full = true;
                            break false;
                        }
                    }
                    Err(_) => break false,
                }
            };
            {
                let mut out = stdout.lock();
                let _ = out.write_all(&batch);
                let _ = out.flush();
            }
            batch.clear();
            if stop {
                return;
            }
            // A full batch means more is waiting: no pause then.
            if !full {
                std::thread::sleep(GATHER);
            }
            next = rx.try_recv().ok();
        }
    }
}

/// Queues one line (a JSON object; the newline is added here).
pub fn write(mut line: Vec<u8>) {
    line.push(b'\n');
    let Some(tx) = SENDER.get() else { return };
    if let Err(TrySendError::Full(_)) = tx.try_send(line) {
        if let Some(m) = crate::metrics::get() {
            m.access_log_dropped.inc();
        }
    }
}

/// Flushes what is queued and stops the writer (at shutdown), waiting at
/// most [`STOP_WAIT`]: a stdout nobody reads (a full pipe) must not keep
/// the process from exiting; the lines still queued then are lost.
pub fn flush_and_stop() {
    flush_and_stop_within(STOP_WAIT);
}

/// How long the exit waits for the access log to be written.
pub const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn flush_and_stop_within(wait: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    let pause = std::time::Duration::from_millis(5);
    if let Some(tx) = SENDER.get() {
        // The stop marker, once there is room for it.
        loop {
            match tx.try_send(Vec::new()) {
                Err(TrySendError::Full(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                }
                _ => break,
            }
        }
    }
    let Some(lock) = DONE.get() else { return true };
    let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
    while slot.as_ref().is_some_and(|h| !h.is_finished()) {
        if std::time::Instant::now() >= deadline {
            log::warn!("access log: stdout took no more lines for {wait:?}; exiting without them");
            return false;
        }
        std::thread::sleep(pause);
    }
    if let Some(h) = slot.take() {
        let _ = h.join();
    }
    true
}
