//! The audit log: one JSON line per policy decision, apart from the access
//! log, written by a background thread so a slow disk or terminal never
//! slows a request. A line that cannot be queued (the writer is 64 Ki lines
//! behind) is counted in `skygate_audit_log_dropped_total`, never waited for.
//!
//! The sink is shared across reloads while its destination stays the same;
//! a new destination gets a new sink, and the old one drains and stops when
//! its last snapshot is gone.

use skygate_config::AuditLog;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Lines that could not be queued, since start.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

const QUEUE: usize = 64 * 1024;

enum Msg {
    Line(Vec<u8>),
    /// Flush, then answer.
    Flush(SyncSender<()>),
}

pub struct Sink {
    tx: Option<SyncSender<Msg>>,
}

impl Sink {
    /// Whether lines go anywhere (`audit_log: off`: no).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line (a JSON object; the newline is added here).
    pub fn write(&self, mut line: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Line(line)) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every line queued so far is written (at shutdown; tests).
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        // Bounded throughout: a destination that takes no more lines (a
        // full pipe on stderr) must not keep the process from exiting.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (done_tx, done_rx) = sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(m))
                    if std::time::Instant::now() < deadline =>
                {
                    msg = m;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }

    fn start(dest: &AuditLog) -> Result<Self, String> {
        let out: Box<dyn Write + Send> = match dest {
            AuditLog::Off => return Ok(Self { tx: None }),
            AuditLog::Stderr => Box::new(std::io::stderr()),
            AuditLog::File(path) => Box::new(open(path)?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer(rx, out))
            .map_err(|e| format!("cannot start the audit log's thread: {e}"))?;
        Ok(Self { tx: Some(tx) })
    }
}

/// Opens an audit file for appending (created 0600 when new).
pub fn open(path: &std::path::Path) -> Result<std::fs::File, String> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .map_err(|e| format!("cannot open the audit log `{}`: {e}", path.display()))
}

fn writer(rx: Receiver<Msg>, out: Box<dyn Write + Send>) {
    // Lines of a burst go out in one write.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    // Ends when every sender is gone (the sink was replaced and dropped).
    while let Ok(msg) = rx.recv() {
        let mut pending = Some(msg);
        // Write what is queued before flushing: one flush for a burst.
        while let Some(m) = pending.take() {
            match m {
                Msg::Line(l) => {
                    if let Err(e) = out.write_all(&l) {
                        log::error!("audit log: {e}");
                    }
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            pending = rx.try_recv().ok();
        }
        let _ = out.flush();
        // Then rest a moment: lines queued meanwhile wait in the channel
        // without waking this thread (a wake per line costs the request
        // path several microseconds under load); they are written within
        // BATCH of being queued.
        std::thread::sleep(BATCH);
    }
}

/// How long the writer gathers lines between writes.
const BATCH: std::time::Duration = std::time::Duration::from_millis(5);

static CURRENT: Mutex<Option<(AuditLog, Arc<Sink>)>> = Mutex::new(None);

/// The sink for `dest`: the current one when the destination is unchanged.
pub fn sink(dest: &AuditLog) -> Arc<Sink> {
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((d, s)) = current.as_ref() {
        if d == dest {
            return s.clone();
        }
    }
    let s = Arc::new(Sink::start(dest).unwrap_or_else(|e| {
        log::error!("{e}; audit lines go to stderr");
        Sink::start(&AuditLog::Stderr).unwrap_or(Sink { tx: None })
    }));
    *current = Some((dest.clone(), s.clone()));
    s
}

/// Flushes the current sink (at shutdown).
pub fn flush() {
    let s = CURRENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(_, s)| s.clone());
    if let Some(s) = s {
        s.flush();
    }
}
