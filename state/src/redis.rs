//! The Redis connection shared by every replica's limits (and later the L2
//! cache and prewarm leases): one multiplexed connection (or a cluster
//! connection) kept up by a background loop, never by a request, and one
//! more per request thread, made in the background on that thread's runtime
//! once Redis is up (so a request's call does not hop to another thread).
//!
//! - A request never waits for a connect: when Redis is down its call fails
//!   at once ([`RedisError::Down`]) and the caller follows its failure policy.
//! - Every call is bounded by `timeout`. An I/O error, or three timeouts in
//!   a row, mark Redis down (one slow call does not); the loop reconnects at
//!   once, then once a second, and marks it up.
//! - Settles (refunds, debts, freed in-flight slots) that cannot be sent are
//!   queued (bounded) and sent when Redis is back.
//! - Going down and coming back are logged once each and counted
//!   ([`COUNTERS`], `skygate_redis_up`).
//! - A request's check is one script call on a single node, all or nothing
//!   whatever the number of limits; on a cluster, one call per key (keys
//!   are hash-tagged, each its own slot), all in flight together on the one
//!   connection, so still one round trip.
//! - Settles (refunds, debts, freed in-flight slots) go in the background,
//!   batched over a few milliseconds and merged per key: one call for many
//!   requests.

use crate::gcra::{Rate, Verdict};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script, ScriptInvocation};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// Where Redis is and how long a call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` URLs: one for a single node, the seed nodes
    /// of a cluster.
    pub nodes: Vec<String>,
    pub cluster: bool,
    /// Bound on every call (and on connecting).
    pub timeout: Duration,
    /// Every key starts with this (`skygate` by default).
    pub prefix: String,
}

/// Why a Redis call did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected (down, or not configured).
    Down,
    Timeout,
    Failed(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down => f.write_str("redis is down"),
            Self::Timeout => f.write_str("redis did not answer in time"),
            Self::Failed(e) => write!(f, "redis: {e}"),
        }
    }
}

/// Process-wide Redis counters, read by `/metrics`.
pub struct Counters {
    /// 1 while connected.
    pub up: AtomicBool,
    /// Times the connection was lost (or could not be made at first).
    pub down_events: AtomicU64,
    /// Calls that failed or timed out.
    pub errors: AtomicU64,
    /// Values ([`Redis::put`]) dropped: Redis down, or the queue full.
    pub puts_dropped: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    up: AtomicBool::new(false),
    down_events: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    puts_dropped: AtomicU64::new(0),
};

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn invoke<T: redis::FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Self::Single(c) => inv.invoke_async(&mut c.clone()).await,
            Self::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(&mut c.clone()).await,
            Self::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

/// One GCRA check (or settle) on a Redis key.
#[derive(Debug, Clone)]
pub struct RedisAsk {
    pub key: String,
    pub rate: Rate,
    /// Units to charge (capped at the rate's amount by the caller).
    pub cost: u64,
}

/// One in-flight slot on a Redis key.
#[derive(Debug, Clone)]
pub struct RedisSlot {
    pub key: String,
    pub limit: u32,
}

/// What [`Redis::acquire`] found.
#[derive(Debug, Default)]
pub struct Acquired {
    /// One per ask, in order.
    pub verdicts: Vec<Verdict>,
    /// One per slot: the slots left, or `None` when full.
    pub slots: Vec<Option<u32>>,
}

impl Acquired {
    pub fn allowed(&self) -> bool {
        self.verdicts.iter().all(|v| v.allowed) && self.slots.iter().all(Option::is_some)
    }
}

/// How long an in-flight slot is held in Redis when its release never comes
/// (a replica that died mid-request).
pub const SLOT_LEASE: Duration = Duration::from_secs(15 * 60);

/// Settles waiting for Redis to come back, at most.
const MAX_PENDING: usize = 10_000;

/// Timeouts in a row that mark Redis down.
const TIMEOUTS_DOWN: u32 = 3;

/// A settle to send: key adjustments, slots to free, the request's member.
type Settle = (Vec<(RedisAsk, i64)>, Vec<String>, String);

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("acquire.lua")));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("settle.lua")));
static ADMIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("admin.lua")));
static PURGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("purge.lua")));
static CACHE_LEAD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache_lead.lua")));
static CACHE_MARK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("cache_mark.lua")));

thread_local! {
    /// A request thread's own Redis connection: (the `Redis` it belongs to,
    /// its epoch, the connection once made).
    #[allow(clippy::type_complexity)]
    static THREAD_CONN: std::cell::RefCell<Option<(usize, u64, Arc<std::sync::OnceLock<Arc<Conn>>>)>> =
        const { std::cell::RefCell::new(None) };
}

/// How long settles gather before they are sent.
const SETTLE_GATHER: Duration = Duration::from_millis(2);

/// Keys in one settle call at most (a script blocks Redis while it runs).
const SETTLE_KEYS: usize = 512;

/// The Redis handle: configured (or not) by the config, reconfigured on
/// reload, connected by [`Redis::maintain`].
pub struct Redis {
    config: Mutex<Option<RedisConfig>>,
    conn: ArcSwapOption<Conn>,
    /// Bumped when the config changes: the loop reconnects.
    generation: AtomicU64,
    wake: tokio::sync::Notify,
    /// The timeout of calls, in microseconds (read on every call).
    timeout_us: AtomicU64,
    timeouts_in_a_row: AtomicU32,
    /// Settles that could not be sent, oldest first.
    pending: Mutex<VecDeque<Settle>>,
    /// The first connect attempt of the current config has finished (won
    /// or failed): until then requests would all take the failure policy.
    settled: AtomicBool,
    /// Wakes the settle sender.
    settle_wake: tokio::sync::Notify,
    /// When a script error was last logged (seconds on the clock).
    error_logged: AtomicU64,
    /// Bumped whenever the shared connection changes: each request thread's
    /// own connection ([`Redis::request_conn`]) is made again after it.
    epoch: AtomicU64,
    cluster: AtomicBool,
    /// Values waiting to be written ([`Redis::put`]), and their bytes.
    puts: Mutex<(VecDeque<Put>, usize)>,
    put_purges: Mutex<PutPurges>,
}

/// A value to write: its key, how to make it (run by the writer, off the
/// request path: compression happens there), its size as counted against
/// the queue's bound, and its time to live in milliseconds.
struct Put {
    key: String,
    value: Box<dyn FnOnce() -> Vec<u8> + Send>,
    size: usize,
    ttl_ms: u64,
    /// When the request that made it began: a purge since then drops it.
    since: std::time::Instant,
}

/// Purges of written values ([`Redis::drop_puts`]): their patterns and
/// times, and a floor (purges let go of count as purges of everything).
#[derive(Default)]
struct PutPurges {
    recent: VecDeque<(String, std::time::Instant)>,
    floor: Option<std::time::Instant>,
}

impl PutPurges {
    /// Whether a value made by a request that began at `since` has been
    /// purged since.
    fn covers(&self, since: std::time::Instant, key: &str) -> bool {
        self.floor.is_some_and(|f| f >= since)
            || self
                .recent
                .iter()
                .rev()
                .take_while(|(_, at)| *at >= since)
                .any(|(p, _)| glob(p, key))
    }
}

/// Bytes of values waiting to be written, at most: beyond, new ones are
/// dropped (a cache entry is worth less than the memory to hold it).
const MAX_PUT_BYTES: usize = 32 << 20;

/// Values written in one round trip at most, and their bytes: one batch
/// never holds the shared connection (and the settles behind it) for long.
const PUT_BATCH: usize = 256;
const PUT_BATCH_BYTES: usize = 1 << 20;

impl Default for Redis {
    fn default() -> Self {
        Self::new()
    }
}

impl Redis {
    pub fn new() -> Self {
        Self {
            config: Mutex::new(None),
            conn: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            timeout_us: AtomicU64::new(100_000),
            timeouts_in_a_row: AtomicU32::new(0),
            pending: Mutex::new(VecDeque::new()),
            settled: AtomicBool::new(true),
            settle_wake: tokio::sync::Notify::new(),
            epoch: AtomicU64::new(0),
            error_logged: AtomicU64::new(0),
            cluster: AtomicBool::new(false),
            puts: Mutex::new((VecDeque::new(), 0)),
            put_purges: Mutex::new(PutPurges::default()),
        }
    }

    /// Not configured, or the first connect attempt is over: readiness
    /// waits for this, so a starting gateway does not answer its first
    /// requests by the failure policy while Redis is simply not asked yet.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Sets (or clears) where Redis is; a change drops the connection and
    /// the loop connects to the new place.
    pub fn configure(&self, config: Option<RedisConfig>) {
        let mut c = self.config.lock().unwrap_or_else(|p| p.into_inner());
        if *c == config {
            return;
        }
        if let Some(conf) = &config {
            self.timeout_us
                .store(conf.timeout.as_micros() as u64, Ordering::Relaxed);
            self.cluster.store(conf.cluster, Ordering::Relaxed);
        }
        if c.is_none() && config.is_some() {
            // A first Redis: not ready until it has been tried (a changed
            // URL on reload keeps readiness as it is).
            self.settled.store(false, Ordering::Release);
        }
        if config.is_none() {
            self.settled.store(true, Ordering::Release);
        }
        *c = config;
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.conn.store(None);
        COUNTERS.up.store(false, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Bumped whenever `configure` changes where Redis is (or its prefix).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_configured(&self) -> bool {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn is_up(&self) -> bool {
        self.conn.load().is_some()
    }

    /// The prefix of every key (`skygate` when unconfigured).
    pub fn prefix(&self) -> String {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or_else(|| "skygate".to_string(), |c| c.prefix.clone())
    }

    fn timeout(&self) -> Duration {
        Duration::from_micros(self.timeout_us.load(Ordering::Relaxed))
    }

    fn conn(&self) -> Result<Arc<Conn>, RedisError> {
        self.conn.load_full().ok_or(RedisError::Down)
    }

    /// The connection for a request: this thread's own once it is made
    /// (made in the background on the request's runtime, so its driver
    /// task runs where the request does and a call does not cross threads
    /// twice), the shared one until then. Only while Redis is up.
    fn request_conn(&self) -> Result<(Arc<Conn>, bool), RedisError> {
        let shared = self.conn()?;
        let epoch = self.epoch.load(Ordering::Acquire);
        let me = self as *const Self as usize;
        let mine = THREAD_CONN.with(|c| {
            let mut c = c.borrow_mut();
            match &*c {
                Some((owner, e, slot)) if *owner == me && *e == epoch => slot.get().cloned(),
                _ => {
                    // First call on this thread (or since Redis came back):
                    // connect in the background, use the shared one now.
                    let slot = Arc::new(std::sync::OnceLock::new());
                    *c = Some((me, epoch, slot.clone()));
                    let config = self
                        .config
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let (Some(config), Ok(rt)) = (config, tokio::runtime::Handle::try_current())
                    {
                        rt.spawn(async move {
                            if let Ok(conn) = connect(&config).await {
                                let _ = slot.set(Arc::new(conn));
                            }
                        });
                    }
                    None
                }
            }
        });
        Ok(match mine {
            Some(c) => (c, true),
            None => (shared, false),
        })
    }

    /// This thread's own connection failed: forget it (the next request
    /// makes another); Redis itself is judged by the shared connection.
    fn drop_thread_conn(&self) {
        THREAD_CONN.with(|c| *c.borrow_mut() = None);
    }

    /// A call failed: count it; an I/O error, or the third timeout in a
    /// row, marks Redis down.
    fn failed(&self, e: RedisError) -> RedisError {
        COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(&e, RedisError::Failed(m) if !m.starts_with("io:")) {
            // A script error (a key of the wrong type, a read-only replica,
            // out of memory): said, at most every 10 s.
            let now = crate::clock::now_us() / 1_000_000;
            let last = self.error_logged.load(Ordering::Relaxed);
            if (last == 0 || now >= last + 10)
                && self
                    .error_logged
                    .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                log::warn!(
                    "redis call failed ({e}); the limits involved follow their failure policy"
                );
            }
        }
        let down = match &e {
            RedisError::Timeout => {
                self.timeouts_in_a_row.fetch_add(1, Ordering::AcqRel) + 1 >= TIMEOUTS_DOWN
            }
            RedisError::Failed(m) => m.starts_with("io:"),
            RedisError::Down => false,
        };
        if down {
            self.mark_down(&e.to_string());
        }
        e
    }

    fn answered(&self) {
        if self.timeouts_in_a_row.load(Ordering::Relaxed) != 0 {
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// Keeps a settle to send (the oldest is dropped when the queue is
    /// full: its slots lapse with their lease).
    fn queue(&self, s: Settle) {
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_PENDING {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// Sends the settles queued when it starts, merged per key. A batch
    /// whose call failed or timed out may have been applied in part, so its
    /// refunds and debts are dropped (never applied twice) and only its slot
    /// frees, which are safe to repeat, go back to the queue.
    async fn flush(&self, conn: &Conn) {
        let mut left = self.pending();
        while left > 0 {
            let batch: Vec<Settle> = {
                let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let n = q.len().min(1024).min(left);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            left -= batch.len();
            let calls = settle_calls(&batch, self.cluster.load(Ordering::Relaxed));
            let sent = tokio::time::timeout(
                self.timeout() * 4,
                futures_util::future::join_all(calls.iter().map(|c| c.send(conn))),
            )
            .await;
            let failure = match sent {
                Ok(results) => results
                    .into_iter()
                    .find_map(Result::err)
                    .map(|e| to_error(&e)),
                Err(_) => Some(RedisError::Timeout),
            };
            match failure {
                None => self.answered(),
                Some(e) => {
                    self.failed(e);
                    let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    for (_, slots, member) in batch.into_iter().rev() {
                        if !slots.is_empty() && q.len() < MAX_PENDING {
                            q.push_front((Vec::new(), slots, member));
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Sends settles as they come, a few milliseconds' worth at a time.
    /// Runs beside [`Redis::maintain`] for the life of the process.
    pub async fn send_settles(&self) {
        loop {
            self.settle_wake.notified().await;
            tokio::time::sleep(SETTLE_GATHER).await;
            if let Ok(conn) = self.conn() {
                self.flush(&conn).await;
                self.write_puts(&conn).await;
            }
        }
    }

    /// Reads a value (the L2 cache's): `None` when there is none. Bounded
    /// by the call timeout; fails at once while Redis is down.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let (conn, own) = self.request_conn()?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.on_request_conn(own, conn.query::<Option<Vec<u8>>>(&cmd))
            .await
    }

    /// A call on a request thread's connection ([`Redis::request_conn`]),
    /// bounded by the call timeout; a failed connection of the thread's own
    /// is made again next time.
    async fn on_request_conn<T>(
        &self,
        own: bool,
        f: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.timeout(), f).await {
            Ok(Ok(v)) => {
                self.answered();
                Ok(v)
            }
            Ok(Err(e)) => {
                if own {
                    self.drop_thread_conn();
                }
                Err(self.failed(to_error(&e)))
            }
            Err(_) => Err(self.failed(RedisError::Timeout)),
        }
    }

    /// A cache miss's leader looks for `key`'s value; when there is none,
    /// it leads for every replica: `marker` in the value's place for `ttl`,
    /// until the answer's write replaces it (`cache_lead.lua`). `Ok(None)`:
    /// this caller leads; else the value found (an answer, or another
    /// leader's marker). Bounded and failing as [`Redis::get`].
    pub async fn get_or_mark(
        &self,
        key: &str,
        marker: &[u8],
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, RedisError> {
        let (conn, own) = self.request_conn()?;
        let mut inv = CACHE_LEAD.key(key);
        inv.arg(marker).arg(millis(ttl));
        self.on_request_conn(own, conn.invoke::<Option<Vec<u8>>>(&inv))
            .await
    }

    /// Keeps or ends a lead taken with [`Redis::get_or_mark`], while `key`
    /// still holds `marker` (`cache_mark.lua`). `Ok(false)`: it no longer
    /// does. Cache upkeep: a timeout does not count towards marking Redis
    /// down (only a lost connection does), as for the cache's writes.
    pub async fn mark(&self, key: &str, marker: &[u8], op: MarkOp<'_>) -> Result<bool, RedisError> {
        let conn = self.conn()?;
        let mut inv = CACHE_MARK.key(key);
        inv.arg(marker);
        match op {
            MarkOp::Renew(ttl) => {
                inv.arg("renew").arg(millis(ttl));
            }
            MarkOp::Yield(value, ttl) => {
                inv.arg("yield").arg(millis(ttl)).arg(value);
            }
            MarkOp::Drop => {
                inv.arg("drop");
            }
        }
        match tokio::time::timeout(self.timeout(), conn.invoke::<u64>(&inv)).await {
            Ok(Ok(n)) => Ok(n == 1),
            Ok(Err(e)) => {
                let e = to_error(&e);
                if matches!(&e, RedisError::Failed(m) if m.starts_with("io:")) {
                    Err(self.failed(e))
                } else {
                    COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            }
            Err(_) => {
                COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                Err(RedisError::Timeout)
            }
        }
    }

    /// Takes a lease, `SET key owner NX PX ttl`: `true` when this caller
    /// got it, `false` when another holds it. Fails at once while Redis is
    /// down (the caller decides whether to act alone).
    pub async fn lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, RedisError> {
        let conn = self.conn()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        match tokio::time::timeout(self.timeout(), conn.query::<Option<String>>(&cmd)).await {
            Ok(Ok(v)) => {
                self.answered();
                Ok(v.is_some())
            }
            Ok(Err(e)) => Err(self.failed(to_error(&e))),
            Err(_) => Err(self.failed(RedisError::Timeout)),
        }
    }

    /// Writes a value with a time to live, in the background: batched with
    /// others, never waited for; `value` is called by the writer (so its
    /// encoding costs the request nothing), `size` is what it will weigh.
    /// While Redis is down, or when the bytes waiting pass a bound, the
    /// value is dropped and counted: `false`. (Queued, it may still be
    /// dropped by a purge, or when its batch fails.)
    pub fn put(
        &self,
        key: String,
        size: usize,
        ttl: Duration,
        since: std::time::Instant,
        value: impl FnOnce() -> Vec<u8> + Send + 'static,
    ) -> bool {
        if self.conn.load().is_none() {
            COUNTERS.puts_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        {
            let mut q = self.puts.lock().unwrap_or_else(|p| p.into_inner());
            let size = key.len() + size;
            if q.1 + size > MAX_PUT_BYTES {
                COUNTERS.puts_dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            q.1 += size;
            q.0.push_back(Put {
                key,
                value: Box::new(value),
                size,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
                since,
            });
        }
        self.settle_wake.notify_one();
        true
    }

    /// Drops the values waiting to be written whose key matches a `SCAN`
    /// pattern (only `*` wildcards): a purge must not be undone by a write
    /// queued before it. Returns how many.
    pub fn drop_puts(&self, pattern: &str) -> usize {
        {
            // Remembered, so values made by requests that began before
            // this are dropped by the writer too, even if queued later.
            let now = std::time::Instant::now();
            let mut p = self.put_purges.lock().unwrap_or_else(|p| p.into_inner());
            while p.recent.len() >= 256
                || p.recent
                    .front()
                    .is_some_and(|(_, at)| now.duration_since(*at) > Duration::from_secs(900))
            {
                if let Some((_, at)) = p.recent.pop_front() {
                    p.floor = Some(p.floor.map_or(at, |f| f.max(at)));
                }
            }
            p.recent.push_back((pattern.to_string(), now));
        }
        let mut q = self.puts.lock().unwrap_or_else(|p| p.into_inner());
        let before = q.0.len();
        let mut freed = 0;
        q.0.retain(|p| {
            let keep = !glob(pattern, &p.key);
            if !keep {
                freed += p.size;
            }
            keep
        });
        q.1 -= freed;
        before - q.0.len()
    }

    /// Values waiting to be written (for tests).
    pub fn puts_pending(&self) -> usize {
        self.puts.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    /// Writes the values waiting when it starts (later ones wait for the
    /// next wake-up, so settles are never starved), a batch per round trip
    /// (one pipeline on a single node; on a cluster, calls in flight
    /// together). A failed batch is dropped and counted, not retried:
    /// entries come again. A slow write does not count towards marking
    /// Redis down (only an I/O error does): a cache value must not put the
    /// limits on their failure policy.
    async fn write_puts(&self, conn: &Conn) {
        let mut left = self.puts.lock().unwrap_or_else(|p| p.into_inner()).0.len();
        while left > 0 {
            let batch: Vec<Put> = {
                let mut q = self.puts.lock().unwrap_or_else(|p| p.into_inner());
                let (mut n, mut bytes) = (0, 0);
                while let Some(p) = q.0.get(n) {
                    if n >= PUT_BATCH.min(left) || (n > 0 && bytes + p.size > PUT_BATCH_BYTES) {
                        break;
                    }
                    bytes += p.size;
                    n += 1;
                }
                let batch: Vec<Put> = q.0.drain(..n).collect();
                q.1 -= bytes;
                batch
            };
            if batch.is_empty() {
                return;
            }
            left -= batch.len();
            let n = batch.len() as u64;
            // Encoding (compression) of a large batch runs on a blocking
            // thread, so the settles behind it are not held up.
            let bytes: usize = batch.iter().map(|p| p.size).sum();
            let encode = move || -> Vec<(String, Vec<u8>, u64, std::time::Instant)> {
                batch
                    .into_iter()
                    .map(|p| (p.key, (p.value)(), p.ttl_ms, p.since))
                    .collect()
            };
            let batch = if bytes > 64 << 10 {
                match tokio::task::spawn_blocking(encode).await {
                    Ok(b) => b,
                    Err(_) => {
                        COUNTERS.puts_dropped.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                }
            } else {
                encode()
            };
            // Right before sending: a purge since the value's request began
            // drops it (a purge cannot be undone by a write in the queue).
            let batch: Vec<(String, Vec<u8>, u64)> = {
                let p = self.put_purges.lock().unwrap_or_else(|p| p.into_inner());
                batch
                    .into_iter()
                    .filter(|(k, _, _, since)| !p.covers(*since, k))
                    .map(|(k, v, ms, _)| (k, v, ms))
                    .collect()
            };
            if batch.is_empty() {
                continue;
            }
            let set = |(k, v, ms): &(String, Vec<u8>, u64)| {
                let mut c = redis::cmd("SET");
                c.arg(k).arg(v.as_slice()).arg("PX").arg(*ms);
                c
            };
            let sent = match conn {
                Conn::Single(c) => {
                    let mut pipe = redis::pipe();
                    for p in &batch {
                        pipe.add_command(set(p)).ignore();
                    }
                    tokio::time::timeout(self.timeout() * 4, pipe.query_async::<()>(&mut c.clone()))
                        .await
                        .map(|r| r.map_err(|e| to_error(&e)))
                }
                Conn::Cluster(_) => {
                    let cmds: Vec<redis::Cmd> = batch.iter().map(set).collect();
                    tokio::time::timeout(
                        self.timeout() * 4,
                        futures_util::future::join_all(cmds.iter().map(|c| conn.query::<()>(c))),
                    )
                    .await
                    .map(|all| {
                        all.into_iter()
                            .find_map(Result::err)
                            .map_or(Ok(()), |e| Err(to_error(&e)))
                    })
                }
            };
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    COUNTERS.puts_dropped.fetch_add(n, Ordering::Relaxed);
                    if matches!(&e, RedisError::Failed(m) if m.starts_with("io:")) {
                        self.failed(e);
                    } else {
                        COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Err(_) => {
                    COUNTERS.puts_dropped.fetch_add(n, Ordering::Relaxed);
                    COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// A call bounded by `t`, its failure counted.
    async fn bounded<T>(
        &self,
        t: Duration,
        f: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(t, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(to_error(&e))),
            Err(_) => Err(self.failed(RedisError::Timeout)),
        }
    }

    /// The hash holding the admin state replicas share, which is also the
    /// channel its new versions are published on: `{prefix}:admin`.
    pub fn admin_key(&self) -> String {
        format!("{}:admin", self.prefix())
    }

    /// Writes admin state for every replica, atomically: sets and deletes
    /// fields of [`Redis::admin_key`], bumps its `_version` and publishes it;
    /// a hash made by this call gets a new `_epoch`. Returns the new
    /// version.
    pub async fn admin_write(
        &self,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<u64, RedisError> {
        let conn = self.conn()?;
        let key = self.admin_key();
        let mut inv = ADMIN.key(&key);
        inv.arg(&key).arg(admin_epoch()).arg(set.len());
        for (f, v) in set {
            inv.arg(f).arg(v);
        }
        for f in delete {
            inv.arg(f);
        }
        let t = self.timeout().max(Duration::from_secs(1));
        self.bounded(t, conn.invoke::<u64>(&inv)).await
    }

    /// Shares a cache purge (`purge`, JSON) with every replica: counted in
    /// [`Redis::admin_key`]'s `_purges`, kept in its ring of the last
    /// `ring` purges (`purge:N`, each `NUMBER PURGE`), and published like an
    /// [`Redis::admin_write`]. Returns the purge's number.
    pub async fn admin_purge(&self, purge: &str, ring: u64) -> Result<u64, RedisError> {
        let conn = self.conn()?;
        let key = self.admin_key();
        let mut inv = PURGE.key(&key);
        inv.arg(&key).arg(admin_epoch()).arg(ring).arg(purge);
        let t = self.timeout().max(Duration::from_secs(1));
        self.bounded(t, conn.invoke::<u64>(&inv)).await
    }

    /// Reads every field of the shared admin state (`_version` included).
    pub async fn admin_read(&self) -> Result<Vec<(String, String)>, RedisError> {
        let conn = self.conn()?;
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.admin_key());
        let t = self.timeout().max(Duration::from_secs(1));
        self.bounded(t, conn.query::<Vec<(String, String)>>(&cmd))
            .await
    }

    /// A subscription to the admin channel on a connection of its own (a
    /// subscribed connection can do nothing else). On a cluster, to the
    /// first seed node that answers: a cluster passes `PUBLISH` to every
    /// node.
    pub async fn admin_subscribe(&self) -> Result<redis::aio::PubSub, RedisError> {
        let config = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(RedisError::Down)?;
        let t = config.timeout.max(Duration::from_millis(500));
        let mut last = RedisError::Down;
        for url in &config.nodes {
            let attempt = async {
                let client = redis::Client::open(url.as_str())?;
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(format!("{}:admin", config.prefix)).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(t * 2, attempt).await {
                Ok(Ok(ps)) => return Ok(ps),
                Ok(Err(e)) => last = to_error(&e),
                Err(_) => last = RedisError::Timeout,
            }
        }
        Err(last)
    }

    /// Deletes every key matching a `SCAN` pattern, a page at a time (on a
    /// cluster, on every primary). Returns the keys deleted. For the admin
    /// API: it may take a while on a large keyspace, never blocking Redis
    /// for long (each page is one `SCAN` and one `UNLINK`).
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64, RedisError> {
        let conn = self.conn()?;
        let t = self.timeout().max(Duration::from_secs(1));
        let mut deleted = 0u64;
        match &*conn {
            Conn::Single(c) => {
                let mut cursor = 0u64;
                loop {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let (next, keys): (u64, Vec<String>) =
                        self.bounded(t, scan.query_async(&mut c.clone())).await?;
                    if !keys.is_empty() {
                        let mut unlink = redis::cmd("UNLINK");
                        unlink.arg(&keys);
                        let n: u64 = self.bounded(t, unlink.query_async(&mut c.clone())).await?;
                        deleted += n;
                    }
                    if next == 0 {
                        return Ok(deleted);
                    }
                    cursor = next;
                }
            }
            Conn::Cluster(c) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo,
                };
                // Each primary: its address and its cursor; the first page
                // goes to all of them at once and says who they are.
                let mut scan = redis::cmd("SCAN");
                scan.arg(0).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let first: redis::Value = self
                    .bounded(
                        t,
                        c.clone().route_command(
                            scan,
                            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                        ),
                    )
                    .await?;
                let mut pages: Vec<(String, redis::Value)> = match first {
                    redis::Value::Map(m) => m
                        .into_iter()
                        .filter_map(|(a, v)| {
                            redis::from_redis_value::<String>(a).ok().map(|a| (a, v))
                        })
                        .collect(),
                    other => {
                        return Err(RedisError::Failed(format!(
                            "unexpected SCAN reply from the cluster: {other:?}"
                        )))
                    }
                };
                while let Some((addr, page)) = pages.pop() {
                    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(page)
                        .map_err(|e| RedisError::Failed(format!("SCAN reply: {e}")))?;
                    for k in &keys {
                        let mut unlink = redis::cmd("UNLINK");
                        unlink.arg(k);
                        let n: u64 = self.bounded(t, conn.query(&unlink)).await?;
                        deleted += n;
                    }
                    if next != 0 {
                        let Some((host, port)) = addr
                            .rsplit_once(':')
                            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                        else {
                            return Err(RedisError::Failed(format!("node address `{addr}`")));
                        };
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(next)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000);
                        let page: redis::Value = self
                            .bounded(
                                t,
                                c.clone().route_command(
                                    scan,
                                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                        host,
                                        port,
                                    }),
                                ),
                            )
                            .await?;
                        pages.push((addr, page));
                    }
                }
                Ok(deleted)
            }
        }
    }

    fn mark_down(&self, why: &str) {
        if self.conn.swap(None).is_some() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            COUNTERS.up.store(false, Ordering::Relaxed);
            COUNTERS.down_events.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "redis went away ({why}); limits follow their failure policy until it is back"
            );
            self.wake.notify_one();
        }
    }

    /// Keeps the connection up, until the process ends: connects when
    /// configured and down (again every second while that fails), probes
    /// with `PING` every second while up. Run it on a background runtime.
    pub async fn maintain(&self) {
        let mut logged_failure = false;
        loop {
            let generation = self.generation.load(Ordering::Acquire);
            let config = self
                .config
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(config) = config else {
                self.wake.notified().await;
                continue;
            };
            match self.conn.load_full() {
                None => match connect(&config).await {
                    Ok(c) => {
                        if self.generation.load(Ordering::Acquire) != generation {
                            continue;
                        }
                        let c = Arc::new(c);
                        self.conn.store(Some(c.clone()));
                        self.epoch.fetch_add(1, Ordering::AcqRel);
                        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                        self.settled.store(true, Ordering::Release);
                        COUNTERS.up.store(true, Ordering::Relaxed);
                        log::info!("redis is up at {}", shown(&config.nodes));
                        logged_failure = false;
                        self.flush(&c).await;
                    }
                    Err(e) => {
                        self.settled.store(true, Ordering::Release);
                        if !logged_failure {
                            if COUNTERS.down_events.load(Ordering::Relaxed) == 0 {
                                COUNTERS.down_events.fetch_add(1, Ordering::Relaxed);
                            }
                            log::warn!(
                                "redis at {} is not reachable ({e}); retrying every second",
                                shown(&config.nodes)
                            );
                            logged_failure = true;
                        }
                    }
                },
                Some(c) => {
                    let ping = tokio::time::timeout(
                        config.timeout.max(Duration::from_millis(500)),
                        c.query::<String>(&redis::cmd("PING")),
                    )
                    .await;
                    match ping {
                        Ok(Ok(_)) => self.flush(&c).await,
                        Ok(Err(e)) => self.mark_down(&e.to_string()),
                        Err(_) => self.mark_down("PING timed out"),
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Checks every ask and takes every slot in one round trip: one atomic
    /// script on a single node; on a cluster one per key, and when any
    /// refuses, what the others charged is given back in the background.
    pub async fn acquire(
        self: &Arc<Self>,
        asks: &[RedisAsk],
        slots: &[RedisSlot],
        member: &str,
    ) -> Result<Acquired, RedisError> {
        let (conn, own) = self.request_conn()?;
        let cluster = self.cluster.load(Ordering::Relaxed);
        let invocations: Vec<ScriptInvocation<'_>> = if cluster {
            asks.iter()
                .map(|a| acquire_invocation(std::slice::from_ref(a), &[], member))
                .chain(
                    slots
                        .iter()
                        .map(|s| acquire_invocation(&[], std::slice::from_ref(s), member)),
                )
                .collect()
        } else {
            vec![acquire_invocation(asks, slots, member)]
        };
        let calls =
            futures_util::future::join_all(invocations.iter().map(|i| conn.invoke::<Vec<u64>>(i)));
        // On a failure, slots this request may have taken are freed (in the
        // background); charges stay: erring to fewer admissions.
        // Sent on the connection the check used, so it runs after any late
        // ZADD of that check (queued for later if it cannot be sent).
        let free_slots = || {
            if !slots.is_empty() {
                let frees: Settle = (
                    Vec::new(),
                    slots.iter().map(|s| s.key.clone()).collect(),
                    member.to_string(),
                );
                let (this, conn) = (self.clone(), conn.clone());
                tokio::spawn(async move {
                    let calls = settle_calls(std::slice::from_ref(&frees), cluster);
                    let sent = tokio::time::timeout(
                        this.timeout() * 4,
                        futures_util::future::join_all(calls.iter().map(|c| c.send(&conn))),
                    )
                    .await;
                    if !matches!(sent, Ok(r) if r.iter().all(Result::is_ok)) {
                        this.queue(frees);
                    }
                });
            }
        };
        // A failure on this thread's own connection drops that connection
        // only; one on the shared connection counts against Redis.
        let fail = |e: RedisError| {
            if own {
                COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
                self.drop_thread_conn();
                e
            } else {
                self.failed(e)
            }
        };
        let Ok(replies) = tokio::time::timeout(self.timeout(), calls).await else {
            free_slots();
            return Err(fail(RedisError::Timeout));
        };
        let mut flat = Vec::with_capacity(asks.len() * 4 + slots.len() * 2);
        for r in replies {
            match r {
                Ok(v) => flat.extend(v),
                Err(e) => {
                    free_slots();
                    return Err(fail(to_error(&e)));
                }
            }
        }
        if flat.len() != asks.len() * 4 + slots.len() * 2 {
            free_slots();
            return Err(fail(RedisError::Failed("unexpected script reply".into())));
        }
        self.answered();
        let (v, s) = flat.split_at(asks.len() * 4);
        let out = Acquired {
            verdicts: v
                .chunks_exact(4)
                .map(|r| Verdict {
                    allowed: r[0] == 1,
                    remaining: r[1],
                    reset_us: r[2],
                    retry_after_us: r[3],
                })
                .collect(),
            slots: s
                .chunks_exact(2)
                .map(|r| (r[0] == 1).then_some(r[1].min(u64::from(u32::MAX)) as u32))
                .collect(),
        };
        // A single node's script wrote nothing when anything refused; a
        // cluster's calls each decided alone: give back what passed.
        if cluster && !out.allowed() {
            let back: Vec<(RedisAsk, i64)> = asks
                .iter()
                .zip(&out.verdicts)
                .filter(|(a, v)| v.allowed && a.cost > 0)
                .map(|(a, _)| (a.clone(), -i64::try_from(a.cost).unwrap_or(i64::MAX)))
                .collect();
            let freed: Vec<String> = slots
                .iter()
                .zip(&out.slots)
                .filter(|(_, s)| s.is_some())
                .map(|(s, _)| s.key.clone())
                .collect();
            self.settle(back, freed, member.to_string());
        }
        Ok(out)
    }

    /// Settles a finished request, in the background: moves each key by
    /// its delta (refund or debt) and frees its slots. Settles gather for a
    /// few milliseconds and go merged; while Redis is down they wait
    /// (bounded) and go when it is back.
    pub fn settle(&self, adjust: Vec<(RedisAsk, i64)>, slots: Vec<String>, member: String) {
        let adjust: Vec<(RedisAsk, i64)> = adjust.into_iter().filter(|(_, d)| *d != 0).collect();
        if adjust.is_empty() && slots.is_empty() {
            return;
        }
        self.queue((adjust, slots, member));
        self.settle_wake.notify_one();
    }

    /// Settles waiting to be sent (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A key's state without charging it (for tests and the admin API).
    pub async fn peek(&self, ask: &RedisAsk) -> Result<Verdict, RedisError> {
        let conn = self.conn()?;
        let probe = RedisAsk {
            cost: 0,
            ..ask.clone()
        };
        let inv = acquire_invocation(std::slice::from_ref(&probe), &[], "");
        let r: Vec<u64> = tokio::time::timeout(self.timeout(), conn.invoke(&inv))
            .await
            .map_err(|_| self.failed(RedisError::Timeout))?
            .map_err(|e| self.failed(to_error(&e)))?;
        match r.as_slice() {
            &[a, remaining, reset_us, retry_after_us] => Ok(Verdict {
                allowed: a == 1,
                remaining,
                reset_us,
                retry_after_us,
            }),
            _ => Err(RedisError::Failed("unexpected script reply".into())),
        }
    }
}

fn acquire_invocation<'a>(
    asks: &[RedisAsk],
    slots: &[RedisSlot],
    member: &str,
) -> ScriptInvocation<'a> {
    let mut inv = ACQUIRE.prepare_invoke();
    for a in asks {
        inv.key(&a.key);
    }
    for s in slots {
        inv.key(&s.key);
    }
    inv.arg(asks.len())
        .arg(member)
        .arg(SLOT_LEASE.as_millis() as u64);
    for a in asks {
        inv.arg(a.rate.amount).arg(a.rate.period_us).arg(a.cost);
    }
    for s in slots {
        inv.arg(s.limit);
    }
    inv
}

/// One call of a batch of settles.
enum SettleCall {
    Script(ScriptInvocation<'static>),
    Zrem(redis::Cmd),
}

impl SettleCall {
    async fn send(&self, conn: &Conn) -> RedisResult<redis::Value> {
        match self {
            Self::Script(inv) => conn.invoke(inv).await,
            Self::Zrem(cmd) => conn.query(cmd).await,
        }
    }
}

/// A batch of settles as calls: deltas summed per key (and rate), slots
/// freed; on a single node in chunks of [`SETTLE_KEYS`] keys per script, on
/// a cluster one call per key.
fn settle_calls(batch: &[Settle], cluster: bool) -> Vec<SettleCall> {
    let mut sums: std::collections::HashMap<(&str, u64, u64), i64> = Default::default();
    let mut order: Vec<(&str, u64, u64)> = Vec::new();
    let mut frees: Vec<(&str, &str)> = Vec::new();
    for (adjust, slots, member) in batch {
        for (a, d) in adjust {
            let k = (a.key.as_str(), a.rate.amount, a.rate.period_us);
            let sum = sums.entry(k).or_insert_with(|| {
                order.push(k);
                0
            });
            *sum = sum.saturating_add(*d);
        }
        for s in slots {
            frees.push((s.as_str(), member.as_str()));
        }
    }
    let adjusts: Vec<((&str, u64, u64), i64)> = order
        .into_iter()
        .map(|k| (k, sums[&k]))
        .filter(|(_, d)| *d != 0)
        .collect();
    let script = |adj: &[((&str, u64, u64), i64)], free: &[(&str, &str)]| {
        let mut inv = SETTLE.prepare_invoke();
        for ((key, ..), _) in adj {
            inv.key(*key);
        }
        for (key, _) in free {
            inv.key(*key);
        }
        inv.arg(adj.len());
        for ((_, amount, period), d) in adj {
            inv.arg(*amount).arg(*period).arg(*d);
        }
        for (_, member) in free {
            inv.arg(*member);
        }
        SettleCall::Script(inv)
    };
    if cluster {
        let mut calls: Vec<SettleCall> = adjusts
            .iter()
            .map(|a| script(std::slice::from_ref(a), &[]))
            .collect();
        calls.extend(frees.iter().map(|(key, member)| {
            let mut c = redis::cmd("ZREM");
            c.arg(*key).arg(*member);
            SettleCall::Zrem(c)
        }));
        return calls;
    }
    let mut calls = Vec::new();
    let (mut a, mut f) = (&adjusts[..], &frees[..]);
    while !a.is_empty() || !f.is_empty() {
        let na = a.len().min(SETTLE_KEYS);
        let nf = f.len().min(SETTLE_KEYS - na);
        calls.push(script(&a[..na], &f[..nf]));
        a = &a[na..];
        f = &f[nf..];
    }
    calls
}

/// Whether `text` matches `pattern`, whose only wildcard is `*`.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole text
    };
    for p in middle {
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn to_error(e: &redis::RedisError) -> RedisError {
    // READONLY, MASTERDOWN, LOADING ... (a failover behind one address):
    // the connection must be made again, as after an I/O error.
    let reconnect = matches!(
        e.retry_method(),
        redis::RetryMethod::Reconnect
            | redis::RetryMethod::ReconnectFromInitialConnections
            | redis::RetryMethod::WaitAndRetry
    );
    if reconnect || e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
        RedisError::Failed(format!("io: {e}"))
    } else {
        RedisError::Failed(e.to_string())
    }
}

async fn connect(config: &RedisConfig) -> Result<Conn, String> {
    let t = config.timeout.max(Duration::from_millis(500));
    if config.cluster {
        let client = redis::cluster::ClusterClientBuilder::new(config.nodes.clone())
            .connection_timeout(t)
            .response_timeout(t)
            .retries(1)
            .build()
            .map_err(|e| e.to_string())?;
        let c = tokio::time::timeout(t * 2, client.get_async_connection())
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let conn = Conn::Cluster(c);
        // A cluster client connects lazily: ask once so a dead cluster
        // is not reported up.
        tokio::time::timeout(t, conn.query::<String>(&redis::cmd("PING")))
            .await
            .map_err(|_| "PING timed out".to_string())?
            .map_err(|e| e.to_string())?;
        return Ok(conn);
    }
    let url = config.nodes.first().ok_or("no redis url")?;
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(t))
        .set_response_timeout(Some(t));
    let c = tokio::time::timeout(
        t * 2,
        client.get_multiplexed_async_connection_with_config(&cfg),
    )
    .await
    .map_err(|_| "connecting timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let conn = Conn::Single(c);
    // An open socket is not an answering Redis (one paused, or loading):
    // up only once it answers.
    tokio::time::timeout(t, conn.query::<String>(&redis::cmd("PING")))
        .await
        .map_err(|_| "PING timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// What [`Redis::mark`] does with a cache miss's lead.
#[derive(Debug, Clone, Copy)]
pub enum MarkOp<'a> {
    /// Keep it for this long from now.
    Renew(Duration),
    /// Put this value in its place for this long.
    Yield(&'a [u8], Duration),
    /// Delete it.
    Drop,
}

/// Milliseconds for `PX`: at least 1.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// An `_epoch` for the shared admin hash, should this write create it:
/// unique per creation (this process and the time it wrote).
fn admin_epoch() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{now:x}", std::process::id())
}

/// The nodes' URLs as logs show them: a password (`redis://:pw@host`)
/// replaced by `***`.
fn shown(nodes: &[String]) -> String {
    // Up to the last `@` (a password may hold `/`, `?` or `#`), as
    // `skygate_config::redact_url`.
    let hide = |url: &str| -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_string();
        };
        match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        }
    };
    nodes.iter().map(|u| hide(u)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    //! The Lua scripts against the Rust arithmetic they copy, on a real
    //! `redis-server` started here on a free port.
    use super::*;

    #[test]
    fn logged_urls_hide_the_password() {
        let nodes = [
            "redis://:s3cret@10.0.0.1:6379/2".to_string(),
            "redis://10.0.0.2:6379".to_string(),
            "redis://user:pw@h:1".to_string(),
            "redis://:ab/cd+ef=@cache:6379".to_string(),
        ];
        assert_eq!(
            shown(&nodes),
            "redis://***@10.0.0.1:6379/2, redis://10.0.0.2:6379, redis://***@h:1, redis://***@cache:6379"
        );
    }
    use crate::Local;

    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn redis_server() -> (Server, u16) {
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(0);
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn();
            let Ok(mut child) = child else {
                panic!("redis-server is not installed: run the suite with scripts/test.sh")
            };
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (Server(child), port);
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // port taken meanwhile
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
        }
        panic!("could not start redis-server")
    }

    async fn connected(port: u16) -> Arc<Redis> {
        let r = Arc::new(Redis::new());
        r.configure(Some(RedisConfig {
            nodes: vec![format!("redis://127.0.0.1:{port}")],
            cluster: false,
            timeout: Duration::from_secs(1),
            prefix: "t".into(),
        }));
        tokio::spawn({
            let r = r.clone();
            async move { r.maintain().await }
        });
        tokio::spawn({
            let r = r.clone();
            async move { r.send_settles().await }
        });
        for _ in 0..500 {
            if r.is_up() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis never up")
    }

    /// The same charges, refunds and debts give the same verdicts in
    /// Redis as in memory (a day's rate: nothing refills in between).
    #[test]
    fn purges_cover_values_made_before_them() {
        let r = Redis::new();
        let t0 = std::time::Instant::now();
        assert_eq!(r.drop_puts("sg:cache:chat:*:*"), 0);
        let p = r.put_purges.lock().unwrap();
        assert!(p.covers(t0, "sg:cache:chat:acme:ab"));
        assert!(!p.covers(t0, "sg:cache:emb:acme:ab"));
        assert!(!p.covers(std::time::Instant::now(), "sg:cache:chat:acme:ab"));
    }

    #[test]
    fn glob_matches_like_scan() {
        for (p, t, m) in [
            ("sg:cache:*:*:*", "sg:cache:chat:acme:ab", true),
            ("sg:cache:chat:*:*", "sg:cache:chat:acme:ab", true),
            ("sg:cache:chat:*:*", "sg:cache:emb:acme:ab", false),
            ("sg:cache:*:acme:*", "sg:cache:chat:acme:ab", true),
            ("sg:cache:*:acme:*", "sg:cache:chat:acme2:ab", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob(p, t), m, "{p} {t}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lua_and_rust_agree() {
        let (_server, port) = redis_server();
        let redis = connected(port).await;
        let rate = Rate {
            amount: 1000,
            period_us: 86_400_000_000,
        };
        let local = Local::new(1024);
        let ask = |cost| RedisAsk {
            key: "t:rl:{agree}".into(),
            rate,
            cost,
        };
        // (cost, then a settle delta)
        let steps: [(u64, i64); 7] = [
            (300, 0),
            (300, -200),
            (500, 0),
            (400, 0),
            (1, 700),
            (50, -5000),
            (5000, 0),
        ];
        for (i, (cost, delta)) in steps.into_iter().enumerate() {
            let now = crate::clock::now_us();
            let want = local.check(&crate::Ask { key: 1, rate, cost }, now);
            let got = redis.acquire(&[ask(cost)], &[], "m").await.unwrap();
            let got = got.verdicts[0];
            assert_eq!(
                (got.allowed, got.remaining),
                (want.allowed, want.remaining),
                "step {i}"
            );
            // Times agree to the clocks' drift over the test.
            assert!(got.reset_us.abs_diff(want.reset_us) < 50_000, "step {i}");
            assert!(
                got.retry_after_us.abs_diff(want.retry_after_us) < 50_000,
                "step {i}"
            );
            if delta != 0 {
                local.adjust(1, rate, delta, crate::clock::now_us());
                redis.settle(vec![(ask(0), delta)], Vec::new(), String::new());
                for _ in 0..200 {
                    if redis.pending() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let peek = redis.peek(&ask(0)).await.unwrap();
            let local_peek = local.peek(1, rate, crate::clock::now_us());
            assert_eq!(peek.remaining, local_peek.remaining, "after step {i}");
        }
        // A debt is capped at one period past full, in both.
        redis.settle(vec![(ask(0), i64::MAX)], Vec::new(), String::new());
        local.adjust(1, rate, i64::MAX, crate::clock::now_us());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (r, l) = (
            redis.peek(&ask(0)).await.unwrap(),
            local.peek(1, rate, crate::clock::now_us()),
        );
        assert!(!r.allowed && !l.allowed);
        assert!(r.retry_after_us.abs_diff(l.retry_after_us) < 100_000);
        assert!(r.retry_after_us <= rate.period_us + 1000);
    }

    /// Slots in Redis: taken up to the limit, all or nothing with the
    /// counters, freed by a settle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_all_or_nothing() {
        let (_server, port) = redis_server();
        let redis = connected(port).await;
        let rate = Rate {
            amount: 1,
            period_us: 60_000_000,
        };
        let slot = RedisSlot {
            key: "t:rl:{slot}".into(),
            limit: 1,
        };
        let ask = RedisAsk {
            key: "t:rl:{one}".into(),
            rate,
            cost: 1,
        };
        let a = redis
            .acquire(&[], std::slice::from_ref(&slot), "a")
            .await
            .unwrap();
        assert_eq!(a.slots, vec![Some(0)]);
        // Slot full: the counter next to it is not charged either.
        let b = redis
            .acquire(std::slice::from_ref(&ask), std::slice::from_ref(&slot), "b")
            .await
            .unwrap();
        assert!(!b.allowed() && b.verdicts[0].allowed && b.slots[0].is_none());
        assert_eq!(redis.peek(&ask).await.unwrap().remaining, 1);
        redis.settle(Vec::new(), vec![slot.key.clone()], "a".into());
        for _ in 0..200 {
            let c = redis
                .acquire(std::slice::from_ref(&ask), std::slice::from_ref(&slot), "c")
                .await
                .unwrap();
            if c.allowed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the freed slot was never free");
    }
}
