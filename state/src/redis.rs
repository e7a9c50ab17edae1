//! The Redis connection shared by every replica's limits (and later the L2
//! cache and prewarm leases): one multiplexed connection (or a cluster
//! connection) kept up by a background loop, never by a request.
//!
//! - A request never waits for a connect: when Redis is down its call fails
//!   at once ([`RedisError::Down`]) and the caller follows its failure policy.
//! - Every call is bounded by `timeout`; a timeout or I/O error marks Redis
//!   down, and the loop reconnects (probing once a second) and marks it up.
//! - Going down and coming back are logged once each and counted
//!   ([`COUNTERS`], `skygate_redis_up`).
//! - A request's calls go out together on the one connection (pipelined:
//!   one round trip whatever their number); each is one script on one key,
//!   so they run on a Redis Cluster too (keys are hash-tagged).

use crate::gcra::{Rate, Verdict};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script, ScriptInvocation};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

pub static COUNTERS: Counters = Counters {
    up: AtomicBool::new(false),
    down_events: AtomicU64::new(0),
    errors: AtomicU64::new(0),
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

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));
static SLOT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("slot.lua")));

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
}

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
        }
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
        }
        *c = config;
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.conn.store(None);
        COUNTERS.up.store(false, Ordering::Relaxed);
        self.wake.notify_one();
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

    /// A call failed: count it; an I/O error or timeout marks Redis down.
    fn failed(&self, e: RedisError) -> RedisError {
        COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(e, RedisError::Timeout)
            || matches!(&e, RedisError::Failed(m) if m.starts_with("io:"))
        {
            self.mark_down(&e.to_string());
        }
        e
    }

    fn mark_down(&self, why: &str) {
        if self.conn.swap(None).is_some() {
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
                        self.conn.store(Some(Arc::new(c)));
                        COUNTERS.up.store(true, Ordering::Relaxed);
                        log::info!("redis is up at {}", config.nodes.join(", "));
                        logged_failure = false;
                    }
                    Err(e) => {
                        if !logged_failure {
                            if COUNTERS.down_events.load(Ordering::Relaxed) == 0 {
                                COUNTERS.down_events.fetch_add(1, Ordering::Relaxed);
                            }
                            log::warn!(
                                "redis at {} is not reachable ({e}); retrying every second",
                                config.nodes.join(", ")
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
                        Ok(Ok(_)) => {}
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

    /// Checks every ask and takes every slot, all in one round trip; when
    /// any is refused, what was charged is given back (in the background:
    /// the refusal does not wait for it).
    pub async fn acquire(
        &self,
        asks: &[RedisAsk],
        slots: &[RedisSlot],
        member: &str,
    ) -> Result<Acquired, RedisError> {
        let conn = self.conn()?;
        let gcra: Vec<ScriptInvocation<'_>> = asks
            .iter()
            .map(|a| {
                let mut inv = GCRA.prepare_invoke();
                inv.key(&a.key)
                    .arg(a.rate.amount)
                    .arg(a.rate.period_us)
                    .arg(a.cost)
                    .arg("c");
                inv
            })
            .collect();
        let slot: Vec<ScriptInvocation<'_>> = slots
            .iter()
            .map(|s| {
                let mut inv = SLOT.prepare_invoke();
                inv.key(&s.key)
                    .arg(s.limit)
                    .arg(member)
                    .arg(SLOT_LEASE.as_millis() as u64);
                inv
            })
            .collect();
        let calls = async {
            let (v, s) = futures_util::future::join(
                futures_util::future::join_all(gcra.iter().map(|i| conn.invoke::<Vec<u64>>(i))),
                futures_util::future::join_all(slot.iter().map(|i| conn.invoke::<Vec<u64>>(i))),
            )
            .await;
            (v, s)
        };
        let (v, s) = tokio::time::timeout(self.timeout(), calls)
            .await
            .map_err(|_| self.failed(RedisError::Timeout))?;
        let mut out = Acquired::default();
        let mut error = None;
        for r in v {
            match r {
                Ok(r) if r.len() == 4 => out.verdicts.push(Verdict {
                    allowed: r[0] == 1,
                    remaining: r[1],
                    reset_us: r[2],
                    retry_after_us: r[3],
                }),
                Ok(_) => error = Some(RedisError::Failed("unexpected script reply".into())),
                Err(e) => error = Some(to_error(&e)),
            }
        }
        for r in s {
            match r {
                Ok(r) if r.len() == 2 => out.slots.push((r[0] == 1).then_some(r[1] as u32)),
                Ok(_) => error = Some(RedisError::Failed("unexpected script reply".into())),
                Err(e) => error = Some(to_error(&e)),
            }
        }
        if let Some(e) = error {
            // Whatever was charged stays charged: erring to fewer admissions.
            return Err(self.failed(e));
        }
        if !out.allowed() {
            let back: Vec<(RedisAsk, i64)> = asks
                .iter()
                .zip(&out.verdicts)
                .filter(|(_, v)| v.allowed)
                .map(|(a, _)| (a.clone(), -(a.cost as i64)))
                .collect();
            let freed: Vec<String> = slots
                .iter()
                .zip(&out.slots)
                .filter(|(_, s)| s.is_some())
                .map(|(s, _)| s.key.clone())
                .collect();
            if !back.is_empty() || !freed.is_empty() {
                let conn = conn.clone();
                let member = member.to_string();
                let timeout = self.timeout();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(timeout, settle(&conn, &back, &freed, &member)).await;
                });
            }
        }
        Ok(out)
    }

    /// Settles a finished request: moves each key by its delta (refund or
    /// debt) and frees its slots. Bounded by the timeout; a failure is
    /// counted and otherwise dropped (a slot's lease frees it anyway).
    pub async fn settle(&self, adjust: &[(RedisAsk, i64)], slots: &[String], member: &str) {
        let Ok(conn) = self.conn() else {
            COUNTERS.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tokio::time::timeout(self.timeout(), settle(&conn, adjust, slots, member)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.failed(e);
            }
            Err(_) => {
                self.failed(RedisError::Timeout);
            }
        }
    }

    /// A key's state without charging it (for tests and the admin API).
    pub async fn peek(&self, ask: &RedisAsk) -> Result<Verdict, RedisError> {
        let conn = self.conn()?;
        let mut inv = GCRA.prepare_invoke();
        inv.key(&ask.key)
            .arg(ask.rate.amount)
            .arg(ask.rate.period_us)
            .arg(0)
            .arg("c");
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

async fn settle(
    conn: &Conn,
    adjust: &[(RedisAsk, i64)],
    slots: &[String],
    member: &str,
) -> Result<(), RedisError> {
    let invs: Vec<ScriptInvocation<'_>> = adjust
        .iter()
        .filter(|(_, d)| *d != 0)
        .map(|(a, d)| {
            let mut inv = GCRA.prepare_invoke();
            inv.key(&a.key)
                .arg(a.rate.amount)
                .arg(a.rate.period_us)
                .arg(*d)
                .arg("a");
            inv
        })
        .collect();
    let cmds: Vec<redis::Cmd> = slots
        .iter()
        .map(|k| {
            let mut c = redis::cmd("ZREM");
            c.arg(k).arg(member);
            c
        })
        .collect();
    let (a, b) = futures_util::future::join(
        futures_util::future::join_all(invs.iter().map(|i| conn.invoke::<redis::Value>(i))),
        futures_util::future::join_all(cmds.iter().map(|c| conn.query::<redis::Value>(c))),
    )
    .await;
    for r in a.into_iter().chain(b) {
        r.map_err(|e| to_error(&e))?;
    }
    Ok(())
}

fn to_error(e: &redis::RedisError) -> RedisError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
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
    Ok(Conn::Single(c))
}
