//! The cache's storage, outliving every config snapshot: the in-memory
//! tier (moka: bounded by bytes, per-entry expiry, TinyLFU admission), the
//! misses in flight (one backend call per key; the others wait for it),
//! the Redis tier's keys, and the counters `/metrics` reads.

use super::doorkeeper::Doorkeeper;
use super::entry::{now_ms, Entry};
use super::key::Key;
use arc_swap::ArcSwap;
use moka::notification::RemovalCause;
use skygate_config::CacheConf;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Keyed by the request's digest, hashed with a per-process seed (see
/// `foldhash` in the workspace's Cargo.toml).
type L1 = moka::sync::Cache<u128, Arc<Entry>, foldhash::fast::SeedableRandomState>;

/// One route's counters (kept by name across reloads).
#[derive(Debug, Default)]
pub struct RouteCounters {
    pub hits: AtomicU64,
    /// Hits found in Redis (also counted in `hits`).
    pub redis_hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
    /// Misses that waited for an identical one in flight.
    pub waits: AtomicU64,
    pub stores: AtomicU64,
    /// Answers stored unchecked that were not whole answers, found at
    /// their first use ([`Entry::unchecked`]): never served.
    pub unservable: AtomicU64,
    /// Misses whose answers were not stored: the in-memory tier was full
    /// and their keys were new to it ([`Store::admits`]).
    pub not_admitted: AtomicU64,
    /// Tokens of the answers served from the cache.
    pub tokens: AtomicU64,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub evicted_size: AtomicU64,
    pub expired: AtomicU64,
    pub invalidated: AtomicU64,
    /// Redis reads that failed (down, timed out): served as misses.
    pub redis_errors: AtomicU64,
    /// Redis values that did not decode: served as misses.
    pub redis_bad_values: AtomicU64,
}

pub struct Store {
    l1: ArcSwap<L1>,
    memory: AtomicU64,
    /// Keys seen while the tier is full ([`Store::admits`]).
    door: ArcSwap<Doorkeeper>,
    flights: Mutex<HashMap<u128, watch::Receiver<bool>>>,
    /// Answers stored, counted by a slot of their keys: a miss that leads
    /// looks in memory again only when its slot's count moved since it
    /// looked ([`Store::stored_since`]).
    stored: Box<[AtomicU64]>,
    routes: Mutex<HashMap<String, Arc<RouteCounters>>>,
    pub counters: Arc<Counters>,
    /// Tiers' settings of the current config.
    conf: ArcSwap<CacheConf>,
    /// Recent purges (route, tenant, when), newest last: an answer to a
    /// request that began before a matching purge is not stored, nor a
    /// Redis value answered before one served.
    purges: Mutex<Purges>,
}

/// Recent purges, and a floor: for the answers of requests in flight, every
/// purge that was let go of (too many, or too old to list) counts as a
/// purge of everything at its time, so forgetting one can only keep more
/// answers out, never let one in. Redis values are refused by the recent
/// purges only ([`Store::purged_after`]).
#[derive(Default)]
struct Purges {
    recent: std::collections::VecDeque<Purge>,
    floor: Option<Instant>,
}

/// A purge: its route and tenant (`None`: any), when it reached this
/// replica, and when it was made by the wall clock (milliseconds; on the
/// replica that took it).
type Purge = (Option<String>, Option<String>, Instant, u64);

/// Purges remembered at most, and for how long (the longest a request
/// may run: a backend's `timeouts.total` is at most this by default).
const PURGES_KEPT: usize = 256;
const PURGE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// Leads a miss: while it lives, identical misses wait. Dropped, it wakes
/// them: they find the answer stored, or another of them leads (this one
/// was refused, or its client went away); [`Flight::go_ahead`] instead
/// tells them its answer will not be stored (each asks a backend).
pub struct Flight {
    store: Arc<Store>,
    key: u128,
    /// Dropped with the flight: waiters' `changed()` returns.
    done: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
}

impl Flight {
    /// This answer will not be stored: the waiters ask a backend now.
    pub fn go_ahead(self) {
        let _ = self.done.send(true);
    }
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flight({:032x})", self.key)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut f = self.store.flights.lock().unwrap_or_else(|p| p.into_inner());
        if f.get(&self.key).is_some_and(|r| r.same_channel(&self.rx)) {
            f.remove(&self.key);
        }
    }
}

/// Slots of keys for [`Store::stored_since`].
const STORED_SLOTS: usize = 4096;

fn slot(key: Key) -> usize {
    // The key is a digest: its low bits are as good as any. Anyone can
    // aim at a slot (the digest of a body is no secret): the worst they
    // get is another lookup on others' misses.
    (key.0 as usize) % STORED_SLOTS
}

/// A miss's place in line.
pub enum Joined {
    Lead(Flight),
    /// Another identical miss is in flight: wait for it.
    Wait(watch::Receiver<bool>),
}

impl Store {
    pub fn new(conf: &CacheConf) -> Arc<Self> {
        let counters = Arc::new(Counters::default());
        Arc::new(Self {
            l1: ArcSwap::from_pointee(build_l1(conf.memory, counters.clone())),
            memory: AtomicU64::new(conf.memory),
            door: ArcSwap::from_pointee(Doorkeeper::new(conf.memory)),
            flights: Mutex::new(HashMap::new()),
            stored: (0..STORED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            routes: Mutex::new(HashMap::new()),
            counters,
            conf: ArcSwap::from_pointee(conf.clone()),
            purges: Mutex::new(Purges::default()),
        })
    }

    /// Takes a new config's settings. A changed memory bound starts an
    /// empty in-memory tier (moka's bound is fixed at build).
    pub fn configure(&self, conf: &CacheConf) {
        if self.memory.swap(conf.memory, Ordering::AcqRel) != conf.memory {
            log::info!(
                "cache: memory bound is now {} bytes; the in-memory tier starts empty",
                conf.memory
            );
            self.l1
                .store(Arc::new(build_l1(conf.memory, self.counters.clone())));
            self.door.store(Arc::new(Doorkeeper::new(conf.memory)));
        }
        self.conf.store(Arc::new(conf.clone()));
    }

    pub fn conf(&self) -> Arc<CacheConf> {
        self.conf.load_full()
    }

    /// A route's counters, made on first use and kept across reloads.
    pub fn route_counters(&self, route: &str) -> Arc<RouteCounters> {
        let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(route.to_string()).or_default().clone()
    }

    /// Every route's counters, by name (for `/metrics`).
    pub fn all_route_counters(&self) -> Vec<(String, Arc<RouteCounters>)> {
        let m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = m.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A live entry (an expired one is gone from moka's view already).
    pub fn get(&self, key: Key) -> Option<Arc<Entry>> {
        self.l1.load().get(&key.0)
    }

    /// Whether a miss of `key` should capture and store its answer: while
    /// the in-memory tier has room, yes; once it is full (within 1/64 of
    /// its bound, where moka keeps it once full), only when the
    /// doorkeeper saw the key before (`doorkeeper.rs`: moka would refuse
    /// a first sight's entry), or the tier holds the key (a refresh, which
    /// moka takes as an update). A key the doorkeeper did not see is
    /// marked seen, so its next miss is admitted. Asked before a miss
    /// joins the ones in flight.
    pub fn admits(&self, key: Key) -> bool {
        let memory = self.memory.load(Ordering::Relaxed);
        let l1 = self.l1.load();
        l1.weighted_size() < memory - memory / 64 || self.door.load().seen(key.0) || self.holds(key)
    }

    pub fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.l1.load().insert(key.0, entry);
        // After the insert: whoever sees the count move sees the entry.
        self.stored[slot(key)].fetch_add(1, Ordering::Release);
    }

    /// Drops `key`'s entry when it is still `entry` (found unservable):
    /// it takes no memory until its key's next answer replaces it.
    pub fn discard(&self, key: Key, entry: &Arc<Entry>) {
        use moka::ops::compute::Op;
        self.l1
            .load()
            .entry(key.0)
            .and_compute_with(|found| match found {
                Some(e) if Arc::ptr_eq(e.value(), entry) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// Answers stored in `key`'s slot so far: taken before a lookup, for
    /// [`Store::stored_since`].
    pub fn stamp(&self, key: Key) -> u64 {
        self.stored[slot(key)].load(Ordering::Acquire)
    }

    /// An answer was stored in `key`'s slot since `stamp` (it may be
    /// `key`'s): a miss that leads then looks again, rather than ask a
    /// backend for what an identical request just stored. A leader stores
    /// before its flight ends, so a miss that finds no flight sees its
    /// store here. Another key of the same slot can say yes too (a lookup
    /// more, never a wrong answer).
    pub fn stored_since(&self, key: Key, stamp: u64) -> bool {
        self.stored[slot(key)].load(Ordering::Acquire) != stamp
    }

    /// Whether the in-memory tier holds an entry for `key` (usable or not).
    pub fn holds(&self, key: Key) -> bool {
        self.l1.load().contains_key(&key.0)
    }

    /// Whether a miss for `key` is in flight (one [`Self::join`] would
    /// wait for).
    pub fn in_flight(&self, key: Key) -> bool {
        let f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&key.0).is_some_and(|rx| rx.has_changed().is_ok())
    }

    /// Joins the misses in flight for `key`: leads when none is.
    pub fn join(self: &Arc<Self>, key: Key) -> Joined {
        let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = f.get(&key.0) {
            // A leader whose sender is gone has finished: lead anew.
            if rx.has_changed().is_ok() {
                return Joined::Wait(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(false);
        f.insert(key.0, rx.clone());
        Joined::Lead(Flight {
            store: self.clone(),
            key: key.0,
            done: tx,
            rx,
        })
    }

    /// Bytes and entries of the in-memory tier (after its pending upkeep).
    pub fn usage(&self) -> (u64, u64) {
        let l1 = self.l1.load();
        l1.run_pending_tasks();
        (l1.weighted_size(), l1.entry_count())
    }

    /// Removes the in-memory entries of a route and/or tenant (`None`:
    /// any); returns how many.
    pub fn purge(&self, route: Option<&str>, tenant: Option<&str>) -> u64 {
        self.purge_each(&[(route, tenant)])
    }

    /// [`Store::purge`] of several (route, tenant) pairs in one walk.
    pub fn purge_each(&self, purges: &[(Option<&str>, Option<&str>)]) -> u64 {
        let l1 = self.l1.load();
        let doomed: Vec<u128> = l1
            .iter()
            .filter(|(_, e)| {
                purges.iter().any(|(route, tenant)| {
                    route.is_none_or(|r| &*e.route == r)
                        && tenant.is_none_or(|t| e.tenant.as_deref() == Some(t))
                })
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            l1.invalidate(k);
        }
        doomed.len() as u64
    }
}

/// How a wait for an identical miss in flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The leader is done: look again (and lead, if nothing was stored).
    Done,
    /// The leader's answer will not be stored: ask a backend.
    GoAhead,
    /// The deadline passed first.
    TimedOut,
}

impl Store {
    /// Notes a purge made now, here: answers to requests that began
    /// before it, for its route and tenant, are not stored
    /// ([`Store::purged_since`]), nor Redis values of answers given before
    /// it ([`Store::purged_after`]).
    pub fn record_purge(&self, route: Option<&str>, tenant: Option<&str>) {
        self.record_purge_made(route, tenant, now_ms());
    }

    /// [`Store::record_purge`] of a purge another replica made at `made_ms`
    /// (its wall clock), reaching this one now.
    pub fn record_purge_made(&self, route: Option<&str>, tenant: Option<&str>, made_ms: u64) {
        let now = Instant::now();
        let mut p = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        while p.recent.len() >= PURGES_KEPT
            || p.recent
                .front()
                .is_some_and(|(_, _, at, _)| now.duration_since(*at) > PURGE_MEMORY)
        {
            if let Some((_, _, at, _)) = p.recent.pop_front() {
                p.floor = Some(p.floor.map_or(at, |f| f.max(at)));
            }
        }
        p.recent.push_back((
            route.map(String::from),
            tenant.map(String::from),
            now,
            made_ms,
        ));
    }

    /// Whether a purge matching this route and tenant ran after `since`
    /// (a request's start): its answer must not be stored.
    pub fn purged_since(&self, since: Instant, route: &str, tenant: Option<&str>) -> bool {
        let p = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        if p.floor.is_some_and(|f| f >= since) {
            return true;
        }
        p.recent
            .iter()
            .rev()
            .take_while(|(_, _, at, _)| *at >= since)
            .any(|(r, t, _, _)| matches(r, t, route, tenant))
    }

    /// Whether a recent purge matching this route and tenant was made at
    /// or after `stored_at_ms` (when a backend gave a Redis value's answer,
    /// both by the wall clock): the value is one the purge removed, read
    /// back from Redis before the purge's sweep reached it, and must not be
    /// served. Purges let go of are not asked: as a purge of everything
    /// they would refuse every older value for good. A purge is let go of
    /// after 15 minutes (its sweep took seconds) or when 256 newer ones
    /// came: in a burst of that many within one sweep's time, the oldest
    /// may let a value it removed be read back.
    pub fn purged_after(&self, stored_at_ms: u64, route: &str, tenant: Option<&str>) -> bool {
        let p = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        p.recent
            .iter()
            .any(|(r, t, _, ms)| *ms >= stored_at_ms && matches(r, t, route, tenant))
    }
}

/// Whether a purge of `route` and `tenant` (`None`: any) covers an entry's.
fn matches(route: &Option<String>, tenant: &Option<String>, r: &str, t: Option<&str>) -> bool {
    route.as_deref().is_none_or(|route| route == r)
        && tenant.as_deref().is_none_or(|tenant| Some(tenant) == t)
}

/// Waits for an identical miss in flight to finish, until `deadline`.
pub async fn wait_for(mut rx: watch::Receiver<bool>, deadline: Instant) -> Woken {
    match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
        Err(_) => Woken::TimedOut,
        Ok(Ok(())) if *rx.borrow() => Woken::GoAhead,
        Ok(_) => Woken::Done,
    }
}

struct Expiry;

impl moka::Expiry<u128, Arc<Entry>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &u128,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.left(now_ms()))
    }

    fn expire_after_update(
        &self,
        _key: &u128,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.left(now_ms()))
    }
}

fn build_l1(memory: u64, counters: Arc<Counters>) -> L1 {
    moka::sync::Cache::builder()
        .max_capacity(memory)
        .weigher(|_k: &u128, v: &Arc<Entry>| v.weight())
        .expire_after(Expiry)
        .eviction_listener(move |_k, v: Arc<Entry>, cause| {
            let c = match cause {
                RemovalCause::Size => &counters.evicted_size,
                RemovalCause::Expired => &counters.expired,
                // Dropped as unservable: counted as such by its route.
                RemovalCause::Explicit if v.found_unservable() => return,
                RemovalCause::Explicit => &counters.invalidated,
                RemovalCause::Replaced => return,
            };
            c.fetch_add(1, Ordering::Relaxed);
        })
        .build_with_hasher(l1_hasher())
}

/// foldhash seeded from the OS's randomness (through `rand`), once per
/// process; its own default seeds from addresses and the clock.
fn l1_hasher() -> foldhash::fast::SeedableRandomState {
    static SEED: std::sync::OnceLock<foldhash::SharedSeed> = std::sync::OnceLock::new();
    let shared = SEED.get_or_init(|| foldhash::SharedSeed::from_u64(rand::random()));
    foldhash::fast::SeedableRandomState::with_seed(rand::random(), shared)
}

/// The Redis key of an entry: readable by route and tenant (so
/// `DELETE /admin/cache` can match them), then the request's hash.
pub fn redis_key(prefix: &str, route: &str, tenant: Option<&str>, key: Key) -> String {
    format!(
        "{prefix}:cache:{}:{}:{}",
        escape(route),
        tenant.map_or_else(|| "-".to_string(), escape),
        key.hex()
    )
}

/// The `SCAN` pattern of a route's and/or tenant's entries.
pub fn redis_pattern(prefix: &str, route: Option<&str>, tenant: Option<&str>) -> String {
    format!(
        "{prefix}:cache:{}:{}:*",
        route.map_or_else(|| "*".to_string(), escape),
        tenant.map_or_else(|| "*".to_string(), escape)
    )
}

/// A tenant (or route) name in a key: `%`-escaped where it could be read
/// as a separator or a `SCAN` pattern (`:`, `*`, `?`, `[`, `]`, `\`, `%`,
/// `-` alone stands for "no tenant"), and any control or non-ASCII byte.
fn escape(s: &str) -> String {
    if s == "-" {
        return "%2D".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !b":*?[]\\%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(route: &str, tenant: Option<&str>, len: usize, ttl: Duration) -> Arc<Entry> {
        Arc::new(Entry::new(
            Bytes::from(vec![b' '; len]),
            false,
            route.into(),
            tenant.map(Into::into),
            now_ms(),
            ttl,
        ))
    }

    #[test]
    fn bounded_by_bytes() {
        let store = Store::new(&CacheConf {
            memory: 1 << 20,
            ..CacheConf::default()
        });
        for i in 0..10_000u128 {
            store.insert(Key(i), entry("r", None, 1000, Duration::from_secs(60)));
        }
        let (bytes, entries) = store.usage();
        assert!(bytes <= 1 << 20, "{bytes}");
        assert!(entries < 10_000 && entries > 100, "{entries}");
        assert!(store.counters.evicted_size.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn entries_expire_by_their_own_ttl() {
        let store = Store::new(&CacheConf::default());
        store.insert(Key(1), entry("r", None, 10, Duration::from_millis(50)));
        store.insert(Key(2), entry("r", None, 10, Duration::from_secs(60)));
        assert!(store.get(Key(1)).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(store.get(Key(1)).is_none());
        assert!(store.get(Key(2)).is_some());
    }

    #[test]
    fn purge_by_route_and_tenant() {
        let store = Store::new(&CacheConf::default());
        let ttl = Duration::from_secs(60);
        store.insert(Key(1), entry("chat", Some("a"), 10, ttl));
        store.insert(Key(2), entry("chat", Some("b"), 10, ttl));
        store.insert(Key(3), entry("emb", Some("a"), 10, ttl));
        store.insert(Key(4), entry("emb", None, 10, ttl));
        assert_eq!(store.purge(Some("chat"), Some("a")), 1);
        assert!(store.get(Key(1)).is_none());
        assert_eq!(store.purge(None, Some("a")), 1);
        assert_eq!(store.purge(Some("emb"), None), 1);
        assert_eq!(store.purge(None, None), 1);
        assert!(store.get(Key(2)).is_none());
        // Several in one walk.
        store.insert(Key(5), entry("chat", Some("a"), 10, ttl));
        store.insert(Key(6), entry("emb", Some("b"), 10, ttl));
        store.insert(Key(7), entry("emb", Some("c"), 10, ttl));
        assert_eq!(
            store.purge_each(&[(Some("chat"), None), (None, Some("b"))]),
            2
        );
        assert!(store.get(Key(7)).is_some());
        // Requests that began before a matching purge do not store.
        let before = Instant::now() - Duration::from_secs(1);
        store.record_purge(Some("chat"), Some("a"));
        assert!(store.purged_since(before, "chat", Some("a")));
        assert!(!store.purged_since(before, "emb", None));
        store.record_purge(None, None);
        assert!(
            store.purged_since(before, "emb", None),
            "the purge of everything"
        );
        let after = Instant::now();
        assert!(!store.purged_since(after, "chat", Some("a")));
        let store = Store::new(&CacheConf::default());
        store.record_purge(Some("chat"), Some("a"));
        assert!(!store.purged_since(before, "chat", Some("b")));
        assert!(!store.purged_since(before, "emb", Some("a")));
        // Purges let go of (past the list's bound) still keep answers out.
        for i in 0..PURGES_KEPT + 5 {
            store.record_purge(Some("other"), Some(&format!("t{i}")));
        }
        assert!(store.purged_since(before, "chat", Some("a")));
        assert!(
            store.purged_since(before, "emb", Some("b")),
            "as a purge of everything"
        );
    }

    #[test]
    fn redis_values_answered_before_a_purge_are_refused() {
        let store = Store::new(&CacheConf::default());
        store.record_purge_made(Some("chat"), Some("a"), 1_000);
        assert!(store.purged_after(999, "chat", Some("a")));
        assert!(store.purged_after(1_000, "chat", Some("a")), "the same ms");
        assert!(
            !store.purged_after(1_001, "chat", Some("a")),
            "answered after"
        );
        assert!(!store.purged_after(999, "chat", Some("b")));
        assert!(!store.purged_after(999, "emb", Some("a")));
        store.record_purge_made(None, None, 2_000);
        assert!(store.purged_after(1_500, "emb", None));
        // Purges let go of no longer refuse values (a purge of everything
        // would refuse every older value for good).
        for i in 0..PURGES_KEPT {
            store.record_purge_made(Some("other"), Some(&format!("t{i}")), 500);
        }
        assert!(!store.purged_after(1_999, "emb", Some("z")));
        assert!(store.purged_after(499, "other", Some("t3")));
    }

    #[tokio::test]
    async fn one_leads_the_others_wait() {
        let store = Store::new(&CacheConf::default());
        let lead = match store.join(Key(9)) {
            Joined::Lead(f) => f,
            Joined::Wait(_) => panic!("first must lead"),
        };
        let Joined::Wait(rx) = store.join(Key(9)) else {
            panic!("second must wait")
        };
        let soon = || Instant::now() + Duration::from_secs(5);
        let waiter = tokio::spawn(wait_for(rx, soon()));
        drop(lead);
        assert_eq!(
            waiter.await.unwrap(),
            Woken::Done,
            "woken when the leader is done"
        );
        // The flight is gone: the next one leads.
        assert!(matches!(store.join(Key(9)), Joined::Lead(_)));
        // A bounded wait gives up.
        let _lead = store.join(Key(10));
        let Joined::Wait(rx) = store.join(Key(10)) else {
            panic!("must wait")
        };
        let brief = Instant::now() + Duration::from_millis(20);
        assert_eq!(wait_for(rx, brief).await, Woken::TimedOut);
        // A leader whose answer will not be stored says so.
        let Joined::Lead(lead) = store.join(Key(11)) else {
            panic!("must lead")
        };
        let Joined::Wait(rx) = store.join(Key(11)) else {
            panic!("must wait")
        };
        lead.go_ahead();
        assert_eq!(wait_for(rx, soon()).await, Woken::GoAhead);
        assert!(matches!(store.join(Key(11)), Joined::Lead(_)));
    }

    /// A store moves its key's slot, and only that slot.
    #[test]
    fn a_store_moves_its_slot() {
        let store = Store::new(&CacheConf::default());
        let k = Key(0x1234);
        let other = Key(0x1235);
        let (stamp, other_stamp) = (store.stamp(k), store.stamp(other));
        assert!(!store.stored_since(k, stamp));
        store.insert(k, entry("chat", None, 10, Duration::from_secs(60)));
        assert!(store.stored_since(k, stamp));
        assert!(!store.stored_since(k, store.stamp(k)));
        // Another slot did not move; the same slot (low bits) did.
        assert!(!store.stored_since(other, other_stamp));
        let same_slot = Key(0x1234 + STORED_SLOTS as u128);
        assert!(store.stored_since(same_slot, stamp));
    }

    #[test]
    fn redis_keys_keep_tenants_apart() {
        let k = Key(0xab);
        assert_eq!(
            redis_key("sg", "chat", Some("acme"), k),
            format!("sg:cache:chat:acme:{}", k.hex())
        );
        assert_eq!(
            redis_key("sg", "chat", None, k),
            format!("sg:cache:chat:-:{}", k.hex())
        );
        // A tenant cannot pose as a pattern or a separator, or as "none".
        assert_eq!(
            redis_key("sg", "chat", Some("a:*b"), k),
            format!("sg:cache:chat:a%3A%2Ab:{}", k.hex())
        );
        assert_eq!(redis_pattern("sg", None, Some("-")), "sg:cache:*:%2D:*");
        assert_eq!(redis_pattern("sg", Some("chat"), None), "sg:cache:chat:*:*");
        // A route named `-` is spelled the same in keys and patterns.
        assert!(redis_key("sg", "-", None, k).starts_with("sg:cache:%2D:-:"));
        assert_eq!(redis_pattern("sg", Some("-"), None), "sg:cache:%2D:*:*");
    }
}
