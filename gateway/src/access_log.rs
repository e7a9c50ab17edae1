//! The access log: one JSON line per request on stdout, written by a
//! background thread so the request path never blocks on the terminal or a
//! pipe. When the writer falls behind, lines are dropped and counted
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

fn writer(rx: Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    // An empty line is the stop marker sent by `flush_and_stop`.
    while let Ok(line) = rx.recv() {
        let mut out = stdout.lock();
        if line.is_empty() {
            let _ = out.flush();
            return;
        }
        let _ = out.write_all(&line);
        // Drain what is queued before flushing: one write for a burst.
        while let Ok(more) = rx.try_recv() {
            if more.is_empty() {
                let _ = out.flush();
                return;
            }
            let _ = out.write_all(&more);
        }
        let _ = out.flush();
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

/// Flushes what is queued and stops the writer (at shutdown).
pub fn flush_and_stop() {
    if let Some(tx) = SENDER.get() {
        let _ = tx.send(Vec::new());
    }
    if let Some(lock) = DONE.get() {
        if let Some(h) = lock.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}
