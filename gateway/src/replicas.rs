//! Admin changes shared by replicas (`state.redis`): a route's run-time
//! weights and a backend's drain, set on any replica, reach every other
//! within a second and survive a restart.
//!
//! - The shared state is one Redis hash, `{prefix}:admin`: a field per
//!   change (`route:NAME:weights` → a JSON object of backend → weight, or
//!   empty for the configured weights; `backend:NAME:drained` → `1` or
//!   `0`), written with a version bump and a `PUBLISH` of it in one script
//!   ([`skygate_state::Redis::admin_write`]). An undone change stays as a
//!   field (`0`, empty), so it is not mistaken for a lost one.
//! - Every replica subscribes to that channel and, on each message (and
//!   every few seconds, in case one was missed or the subscription hangs),
//!   reads the whole hash and makes its own state match it: idempotent, so
//!   lost, repeated or reordered messages converge on the same state. A read
//!   older than this replica's own last write is not applied.
//! - A change is applied here first, then written. While Redis is down it
//!   waits in `pending` (this replica's change is not overwritten by the
//!   older shared state meanwhile) and is written when Redis returns: last
//!   writer wins, field by field. Writes are one at a time, in order.
//! - The hash carries an `_epoch`, set by whoever creates it. A hash
//!   without one, or with another than last seen (Redis restarted empty),
//!   gets this replica's own changes back for the fields it lacks, so the
//!   operators' changes outlive a Redis without persistence.
//! - A replica that starts reads the hash before `/readyz` says ready (so a
//!   restarted replica sends no traffic to a backend the others drained),
//!   unless Redis cannot be reached: then it serves on its own state.
//! - Cache purges are events, not state: the hash counts them (`_purges`)
//!   and keeps the last [`PURGE_RING`] in a ring of fields (`purge:N`),
//!   written and published in one script
//!   ([`skygate_state::Redis::admin_purge`]). Every read applies the
//!   purges numbered after the last one this replica saw, except its own;
//!   one that missed more than the ring holds purges everything (a purge
//!   too many costs cache hits, one too few serves what was purged).

use crate::State;
use futures_util::StreamExt;
use serde_json::Value;
use skygate_backends::routing::state::WeightOverride;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the whole state is re-read even without a message.
const RESYNC: Duration = Duration::from_secs(5);

/// Purges the shared hash keeps (`purge:N`, N modulo this).
pub const PURGE_RING: u64 = 64;

/// Where an admin change went, as the admin API reports it (`shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// Written to Redis: every replica has it within a second.
    Redis,
    /// Redis is unreachable: this replica has it; the others get it when
    /// Redis returns.
    Pending,
    /// No `state.redis`: this replica only.
    Local,
}

impl Shared {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Pending => "pending",
            Self::Local => "local",
        }
    }
}

/// This replica's side of the shared admin state.
#[derive(Default)]
pub struct Replicas {
    /// Changes made here and not yet written: field → value. The shared
    /// state does not overwrite these fields.
    pending: Mutex<BTreeMap<String, String>>,
    /// Wakes the sync loop: a change is pending, or a reload happened.
    wake: tokio::sync::Notify,
    /// The shared state was read once (or Redis was found down): `/readyz`.
    synced: AtomicBool,
    /// The hash's `_epoch` when last read.
    epoch: Mutex<Option<String>>,
    /// The version this replica last wrote: an older read would undo it.
    floor: AtomicU64,
    /// One write at a time, so an older batch never lands after a newer.
    writing: tokio::sync::Mutex<()>,
    /// Which shared purges this replica has applied.
    purges: Mutex<PurgeMark>,
    /// Purges made here while Redis could not be written (their values):
    /// shared when it returns.
    pending_purges: Mutex<Vec<String>>,
}

/// How far this replica has read the shared purges.
#[derive(Debug, Default)]
struct PurgeMark {
    /// The shared `_purges` count when last read (`None`: not read yet).
    seen: Option<u64>,
    /// The ring's value for number `seen` then: a count that went back and
    /// came up again shows as another value there.
    seen_value: Option<String>,
    /// Before the first read, purges made since this (wall-clock ms: the
    /// process's start, or the last read before `state.redis` changed) are
    /// applied; older ones were of other memory than this replica's.
    since_ms: u64,
    /// Wall-clock ms when the last read began.
    read_ms: u64,
    /// `state.redis`'s generation at the last read.
    generation: u64,
}

/// A cache purge: a route's and/or a tenant's entries (`None`: any), and
/// when it was made (wall-clock ms, on the replica that took it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub route: Option<String>,
    pub tenant: Option<String>,
    pub made_ms: u64,
}

/// This process, as the origin of the purges it shares (it has applied
/// them already). Unique per process start.
fn origin() -> &'static str {
    static ORIGIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// A purge as the shared ring keeps it (after its number).
fn purge_value(route: Option<&str>, tenant: Option<&str>, made_ms: u64) -> String {
    serde_json::json!({ "origin": origin(), "route": route, "tenant": tenant, "made_ms": made_ms })
        .to_string()
}

/// Purge number `n` of the shared ring, and its origin; `Err(())` when
/// it is no longer there (overwritten by a later one) or unreadable.
fn ring_entry(fields: &HashMap<String, String>, n: u64) -> Result<(String, Purge), ()> {
    let v = fields.get(&format!("purge:{}", n % PURGE_RING)).ok_or(())?;
    let (number, purge) = v.split_once(' ').ok_or(())?;
    if number.parse::<u64>() != Ok(n) {
        return Err(());
    }
    let Ok(Value::Object(p)) = serde_json::from_str::<Value>(purge) else {
        return Err(());
    };
    let name = |k: &str| match p.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    };
    let origin = p.get("origin").and_then(Value::as_str).unwrap_or_default();
    Ok((
        origin.to_string(),
        Purge {
            route: name("route")?,
            tenant: name("tenant")?,
            made_ms: p.get("made_ms").and_then(Value::as_u64).ok_or(())?,
        },
    ))
}

/// The shared purges numbered `from + 1 ..= to`, but those `me` made, in
/// order; `Err(())` when one of them is no longer in the ring (overwritten
/// by a later one, or unreadable): then everything must go.
fn purges_between(
    fields: &HashMap<String, String>,
    from: u64,
    to: u64,
    me: &str,
) -> Result<Vec<Purge>, ()> {
    if from >= to {
        return Ok(Vec::new());
    }
    if to - from > PURGE_RING {
        return Err(());
    }
    let mut out = Vec::new();
    for n in from + 1..=to {
        let (origin, p) = ring_entry(fields, n)?;
        if origin != me {
            out.push(p);
        }
    }
    Ok(out)
}

/// A purge of everything, for purges that were missed. It refuses no Redis
/// value by its time (`made_ms` 0): the missed purges' own sweeps of Redis
/// are done, and refusing every older value would send every miss to a
/// backend for as long as the purge is remembered.
fn everything() -> Vec<Purge> {
    vec![Purge {
        route: None,
        tenant: None,
        made_ms: 0,
    }]
}

/// The purges to apply at a replica's first read: those in the ring made
/// since `since_ms` by others; everything when the ring may have lost some
/// (more purges than it holds, its oldest made since then or unreadable).
fn first_read(fields: &HashMap<String, String>, count: u64, since_ms: u64) -> Vec<Purge> {
    let oldest = count.saturating_sub(PURGE_RING) + 1;
    if count > PURGE_RING
        && ring_entry(fields, oldest)
            .ok()
            .is_none_or(|(_, p)| p.made_ms >= since_ms)
    {
        log::warn!(
            "admin: more purges were shared since this replica began keeping answers than the ring holds; purging its whole memory tier"
        );
        return everything();
    }
    (oldest..=count)
        .filter_map(|n| ring_entry(fields, n).ok())
        .filter(|(o, p)| o != origin() && p.made_ms >= since_ms)
        .map(|(_, p)| p)
        .collect()
}

/// Purges this replica's memory tier of a route's and/or a tenant's
/// entries, off the runtime's threads (walking a large tier takes a
/// while). Returns how many went.
pub async fn purge_memory(state: &State, route: Option<&str>, tenant: Option<&str>) -> u64 {
    let (cache, route, tenant) = (
        state.shared.cache.clone(),
        route.map(String::from),
        tenant.map(String::from),
    );
    tokio::task::spawn_blocking(move || cache.purge(route.as_deref(), tenant.as_deref()))
        .await
        .unwrap_or(0)
}

/// Applies other replicas' purges here: answers to requests that began
/// before they arrived are not stored (in memory, nor written to Redis),
/// Redis values answered before they were made are not served (a miss
/// here may read one back before the purging replica's sweep reaches it),
/// and the matching memory entries go, in one walk.
async fn apply_purges(state: &Arc<State>, purges: Vec<Purge>) {
    if purges.is_empty() {
        return;
    }
    let cache = &state.shared.cache;
    let redis = &state.shared.redis;
    for p in &purges {
        let (route, tenant) = (p.route.as_deref(), p.tenant.as_deref());
        cache.record_purge_made(route, tenant, p.made_ms);
        redis.drop_puts(&skygate_plugins::cache::store::redis_pattern(
            &redis.prefix(),
            route,
            tenant,
        ));
    }
    let (cache, walk) = (cache.clone(), purges.clone());
    let n = tokio::task::spawn_blocking(move || {
        let each: Vec<_> = walk
            .iter()
            .map(|p| (p.route.as_deref(), p.tenant.as_deref()))
            .collect();
        cache.purge_each(&each)
    })
    .await
    .unwrap_or(0);
    for p in &purges {
        log::info!(
            "admin (from another replica): cache purged (route {}, tenant {})",
            p.route.as_deref().map_or("*".into(), skygate_config::clip),
            p.tenant.as_deref().map_or("*".into(), skygate_config::clip),
        );
    }
    log::info!("admin: {n} in-memory entries went with the purges of other replicas");
}

/// A route's field in the shared state.
pub fn weights_field(route: &str) -> String {
    format!("route:{route}:weights")
}

/// A backend's drain field in the shared state.
pub fn drained_field(backend: &str) -> String {
    format!("backend:{backend}:drained")
}

/// The value a weight override is shared as: a JSON object, keys sorted;
/// empty for none (the configured weights).
pub fn weights_value(o: Option<&WeightOverride>) -> String {
    let Some(o) = o else {
        return String::new();
    };
    let m: BTreeMap<&str, u32> = o.by_backend.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    serde_json::to_string(&m).unwrap_or_default()
}

/// The value a drain is shared as.
pub fn drained_value(drained: bool) -> String {
    if drained { "1" } else { "0" }.to_string()
}

impl Replicas {
    /// Whether `/readyz` may say ready as far as shared admin state goes.
    pub fn synced(&self, state: &State) -> bool {
        !state.shared.redis.is_configured() || self.synced.load(Ordering::Acquire)
    }

    /// Asks the sync loop to write what is pending and read again (after a
    /// reload, which may have reset a backend's state).
    pub fn resync(&self) {
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks fields as changed here, before the change is applied (under
    /// the admin lock), so a sync running meanwhile does not undo it.
    pub fn hold(&self, fields: &[(String, String)]) {
        let mut p = self.lock();
        for (f, v) in fields {
            p.insert(f.clone(), v.clone());
        }
    }

    /// Writes what is pending to Redis now (the admin API waits for it,
    /// bounded by the Redis timeout).
    pub async fn share(&self, state: &State) -> Shared {
        if !state.shared.redis.is_configured() {
            self.lock().clear();
            return Shared::Local;
        }
        match self.flush_fields(state).await {
            Ok(()) => Shared::Redis,
            Err(e) => {
                log::warn!("admin: the change is on this replica only until redis returns ({e})");
                self.wake.notify_one();
                Shared::Pending
            }
        }
    }

    /// Tells every other replica to purge its memory of a route's and/or a
    /// tenant's entries (they stop storing answers to requests that began
    /// before, too). While Redis cannot be written the purge waits, as
    /// weights and drains do, and is shared when Redis returns: `pending`.
    pub async fn share_purge(
        &self,
        state: &State,
        route: Option<&str>,
        tenant: Option<&str>,
    ) -> Shared {
        if !state.shared.redis.is_configured() {
            return Shared::Local;
        }
        let value = purge_value(route, tenant, skygate_plugins::cache::entry::now_ms());
        {
            let mut p = self
                .pending_purges
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if p.len() >= PURGE_RING as usize {
                // More than the others could tell apart: they would purge
                // everything anyway, and so do these.
                log::warn!(
                    "admin: too many purges wait for redis; the others will purge everything"
                );
                p.clear();
                p.push(purge_value(None, None, 0));
            }
            p.push(value);
        }
        match self.flush_purges(state).await {
            Ok(()) => Shared::Redis,
            Err(e) => {
                log::warn!(
                    "admin: the purge reaches the other replicas only when redis returns ({e})"
                );
                self.wake.notify_one();
                Shared::Pending
            }
        }
    }

    /// Reads shared purges from anew, applying on the first read those
    /// made since `since_ms` (at start).
    fn purges_from(&self, since_ms: u64, generation: u64) {
        *self.purges.lock().unwrap_or_else(|p| p.into_inner()) = PurgeMark {
            since_ms,
            read_ms: since_ms,
            generation,
            ..PurgeMark::default()
        };
    }

    /// The shared purges this replica has not applied yet (and takes them
    /// as seen). `fresh_hash`: the hash is another than at the last read
    /// (Redis restarted empty, or a changed `state.redis` points elsewhere);
    /// `generation`: `state.redis`'s, and `read_ms` the wall clock, both
    /// taken before the read.
    fn purges_due(
        &self,
        fields: &HashMap<String, String>,
        fresh_hash: bool,
        generation: u64,
        read_ms: u64,
    ) -> Vec<Purge> {
        let count = fields
            .get("_purges")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut mark = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        if mark.generation != generation {
            mark.generation = generation;
            if fresh_hash {
                // Another Redis or key prefix: another count. Its purges
                // since the last read here apply (this memory predates them).
                mark.seen = None;
                mark.since_ms = mark.read_ms;
            }
        }
        let seen = mark.seen.replace(count);
        let seen_value = std::mem::replace(
            &mut mark.seen_value,
            fields
                .get(&format!("purge:{}", count % PURGE_RING))
                .cloned(),
        );
        let since_ms = mark.since_ms;
        mark.read_ms = read_ms;
        drop(mark);
        let from = match seen {
            None => return first_read(fields, count, since_ms),
            Some(_) if fresh_hash => 0,
            // The ring's value for the number last seen is another now:
            // the count went back and came up again (a lagging Redis replica
            // took over); which purges were lost cannot be told.
            Some(s)
                if s > 0
                    && s <= count
                    && count - s < PURGE_RING
                    && fields.get(&format!("purge:{}", s % PURGE_RING)) != seen_value.as_ref() =>
            {
                log::warn!(
                    "admin: the shared purges were rewritten since the last read (number {s}); purging this replica's whole memory tier"
                );
                return everything();
            }
            Some(s) if s <= count => s,
            // Fewer than seen, in the same hash: the same, caught earlier.
            Some(s) => {
                log::warn!(
                    "admin: the shared purge count went back from {s} to {count}; purging this replica's whole memory tier"
                );
                return everything();
            }
        };
        purges_between(fields, from, count, origin()).unwrap_or_else(|()| {
            log::warn!(
                "admin: purges shared by other replicas were missed (up to number {count}); purging this replica's whole memory tier"
            );
            everything()
        })
    }

    /// Writes what is pending: fields, then purges.
    async fn flush(&self, state: &State) -> Result<(), skygate_state::RedisError> {
        let fields = self.flush_fields(state).await;
        let purges = self.flush_purges(state).await;
        fields.and(purges)
    }

    /// Writes every pending field; each one written (and not changed again
    /// meanwhile) stops being pending.
    async fn flush_fields(&self, state: &State) -> Result<(), skygate_state::RedisError> {
        let _one_at_a_time = self.writing.lock().await;
        let batch: Vec<(String, String)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let version = state.shared.redis.admin_write(&batch, &[]).await?;
        self.floor.fetch_max(version, Ordering::AcqRel);
        let mut p = self.lock();
        for (k, v) in batch {
            if p.get(&k) == Some(&v) {
                p.remove(&k);
            }
        }
        Ok(())
    }

    /// Writes the pending purges in the order they were made, each gone
    /// once written. One Redis refuses (not a failure to reach it: a
    /// `_purges` that is not a number, say) is let go of, logged, so it
    /// does not hold back the others for good.
    async fn flush_purges(&self, state: &State) -> Result<(), skygate_state::RedisError> {
        let _one_at_a_time = self.writing.lock().await;
        loop {
            let next = self
                .pending_purges
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .first()
                .cloned();
            let Some(value) = next else {
                return Ok(());
            };
            match state.shared.redis.admin_purge(&value, PURGE_RING).await {
                Ok(_) => {}
                Err(skygate_state::RedisError::Failed(e)) if !e.starts_with("io:") => {
                    log::error!("admin: redis refused a purge for the other replicas, dropped ({e}): {value}");
                }
                Err(e) => return Err(e),
            }
            let mut p = self
                .pending_purges
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if p.first() == Some(&value) {
                p.remove(0);
            }
        }
    }

    /// Reads the shared state and makes this replica's match it; applies
    /// the purges shared since the last read.
    async fn pull(&self, state: &Arc<State>) -> Result<(), skygate_state::RedisError> {
        let (generation, read_ms) = (
            state.shared.redis.generation(),
            skygate_plugins::cache::entry::now_ms(),
        );
        let mut fields: HashMap<String, String> =
            state.shared.redis.admin_read().await?.into_iter().collect();
        let seen = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = fields.get("_epoch");
        let fresh_hash = seen.is_some() && now != seen.as_ref();
        if now.is_none() || (seen.is_some() && now != seen.as_ref()) {
            // A new hash (Redis restarted empty, or never written): give
            // back what this replica holds and the hash lacks, then read it.
            self.floor.store(0, Ordering::Release);
            let mine = state.exclusive(|| local_fields(state));
            let missing: Vec<(String, String)> = mine
                .into_iter()
                .filter(|(k, _)| !fields.contains_key(k))
                .collect();
            if !missing.is_empty() {
                log::warn!(
                    "admin: the shared admin state is new or was lost; writing back this replica's ({} fields)",
                    missing.len()
                );
                self.hold(&missing);
                self.flush_fields(state).await?;
                fields = state.shared.redis.admin_read().await?.into_iter().collect();
            }
        }
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = fields.get("_epoch").cloned();
        let version = fields
            .get("_version")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if version >= self.floor.load(Ordering::Acquire) {
            // Pending fields are read under the admin lock: a change made
            // now is either in them or made after this apply.
            state.exclusive(|| apply(state, &fields, &self.lock().clone()));
        }
        let due = self.purges_due(&fields, fresh_hash, generation, read_ms);
        apply_purges(state, due).await;
        self.synced.store(true, Ordering::Release);
        Ok(())
    }
}

/// Makes run-time weights and drains match the shared `fields`, except
/// those changed here and not yet written.
fn apply(state: &State, fields: &HashMap<String, String>, pending: &BTreeMap<String, String>) {
    let snap = state.snapshot();
    for (route, rs) in snap.config.routes.iter().zip(&snap.route_states) {
        let field = weights_field(&route.name);
        if pending.contains_key(&field) {
            continue;
        }
        let targets: Vec<&str> = route
            .targets
            .iter()
            .map(|t| snap.config.backends[t.backend].name.as_str())
            .collect();
        let want = fields.get(&field).and_then(|v| parse_weights(v, &targets));
        let have = rs.overrides();
        if weights_value(want.as_ref()) != weights_value(have.as_deref()) {
            match &want {
                Some(o) => log::info!(
                    "admin (from another replica): route `{}` weights {}",
                    route.name,
                    weights_value(Some(o))
                ),
                None => log::info!(
                    "admin (from another replica): route `{}` back to its configured weights",
                    route.name
                ),
            }
            rs.set_overrides(want);
        }
    }
    for b in &snap.backends {
        let field = drained_field(&b.config.name);
        if pending.contains_key(&field) {
            continue;
        }
        let want = fields.get(&field).is_some_and(|v| v == "1");
        if b.state.set_drained(want) != want {
            log::info!(
                "admin (from another replica): backend `{}` {}",
                b.config.name,
                if want { "drained" } else { "undrained" }
            );
        }
    }
}

/// This replica's run-time weights and drains, as shared fields.
fn local_fields(state: &State) -> Vec<(String, String)> {
    let snap = state.snapshot();
    let mut out = Vec::new();
    for (route, rs) in snap.config.routes.iter().zip(&snap.route_states) {
        if let Some(o) = rs.overrides() {
            out.push((weights_field(&route.name), weights_value(Some(&o))));
        }
    }
    for b in &snap.backends {
        if b.state.drained() {
            out.push((drained_field(&b.config.name), drained_value(true)));
        }
    }
    out
}

/// A shared weights value, keeping only the route's current targets (a
/// reload may have removed one); `None` when nothing usable is left, or
/// for an empty value (the configured weights).
fn parse_weights(v: &str, targets: &[&str]) -> Option<WeightOverride> {
    if v.is_empty() {
        return None;
    }
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(v) else {
        log::warn!("admin: ignoring a shared weights value that is not a JSON object: {v}");
        return None;
    };
    let by_backend: Vec<(String, u32)> = m
        .iter()
        .filter(|(n, _)| targets.contains(&n.as_str()))
        .filter_map(|(n, w)| Some((n.clone(), u32::try_from(w.as_u64()?).ok()?)))
        .collect();
    (!by_backend.is_empty()).then_some(WeightOverride { by_backend })
}

/// Logs a failure at most once a minute (a dead Redis must not flood).
fn warn_now(last: &mut Option<Instant>, what: &str, e: &skygate_state::RedisError) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
        log::warn!("admin: {what} ({e}); retrying");
        *last = Some(Instant::now());
    }
}

/// Keeps this replica in step with the others, until the process ends:
/// reads, subscribes, and re-reads on every message and every few seconds.
pub async fn run(state: Arc<State>) {
    let replicas = &state.replicas;
    let mut logged: Option<Instant> = None;
    let mut failures = 0u32;
    replicas.purges_from(
        skygate_plugins::cache::entry::now_ms(),
        state.shared.redis.generation(),
    );
    loop {
        let redis = &state.shared.redis;
        if !redis.is_configured() {
            replicas.synced.store(true, Ordering::Release);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if !redis.is_up() {
            // Once the first connect has failed, Redis is down: serve on
            // this replica's own state (ready, as the limits are, by their
            // failure policy). Before that, wait for it.
            if redis.is_settled() {
                replicas.synced.store(true, Ordering::Release);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        // Read first (what `/readyz` waits for), subscribe, read again (a
        // change published in between is not missed). A write that fails
        // stays pending and does not stop the reads.
        if let Err(e) = replicas.flush(&state).await {
            warn_now(&mut logged, "writing pending admin changes failed", &e);
        }
        if let Err(e) = replicas.pull(&state).await {
            failures += 1;
            warn_now(&mut logged, "reading the shared admin state failed", &e);
            if failures >= 5 {
                // Redis answers, but not this: do not stay unready for it.
                replicas.synced.store(true, Ordering::Release);
            }
            tokio::time::sleep(Duration::from_millis(500) * failures.min(10)).await;
            continue;
        }
        failures = 0;
        let generation = redis.generation();
        let mut sub = match redis.admin_subscribe().await {
            Ok(s) => s,
            Err(e) => {
                warn_now(&mut logged, "cannot subscribe to shared admin changes", &e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if replicas.pull(&state).await.is_err() {
            continue;
        }
        let mut messages = sub.on_message();
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let step = tokio::select! {
                m = messages.next() => match m {
                    Some(_) => replicas.pull(&state).await,
                    // The subscription's connection is gone: subscribe again.
                    None => break,
                },
                _ = tick.tick() => {
                    if redis.generation() != generation {
                        break; // a reload moved Redis or its key prefix
                    }
                    if let Err(e) = replicas.flush(&state).await {
                        warn_now(&mut logged, "writing pending admin changes failed", &e);
                    }
                    replicas.pull(&state).await
                }
                () = replicas.wake.notified() => {
                    if let Err(e) = replicas.flush(&state).await {
                        warn_now(&mut logged, "writing pending admin changes failed", &e);
                    }
                    replicas.pull(&state).await
                }
            };
            if let Err(e) = step {
                warn_now(&mut logged, "reading the shared admin state failed", &e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip_keeping_only_current_targets() {
        let o = WeightOverride {
            by_backend: vec![("b".into(), 20), ("a".into(), 80)],
        };
        let v = weights_value(Some(&o));
        assert_eq!(v, r#"{"a":80,"b":20}"#);
        let back = parse_weights(&v, &["a", "b"]).map(|o| weights_value(Some(&o)));
        assert_eq!(back.as_deref(), Some(v.as_str()));
        let only_a = parse_weights(&v, &["a"]).map(|o| o.by_backend);
        assert_eq!(only_a, Some(vec![("a".to_string(), 80)]));
        assert!(parse_weights(&v, &["c"]).is_none());
        assert!(parse_weights("[1]", &["a"]).is_none());
        assert!(parse_weights(r#"{"a":-1}"#, &["a"]).is_none());
        assert!(
            parse_weights("", &["a"]).is_none(),
            "empty: the configured weights"
        );
        assert_eq!(weights_value(None), "");
    }

    /// A ring of shared purges: (number, origin, route, tenant); each made
    /// at its number in ms.
    fn ring(purges: &[(u64, &str, Option<&str>, Option<&str>)]) -> HashMap<String, String> {
        let mut f = HashMap::new();
        for &(n, origin, route, tenant) in purges {
            let p = serde_json::json!({ "origin": origin, "route": route, "tenant": tenant, "made_ms": n });
            f.insert(format!("purge:{}", n % PURGE_RING), format!("{n} {p}"));
            f.insert("_purges".into(), n.to_string());
        }
        f
    }

    fn purge(route: Option<&str>, tenant: Option<&str>, made_ms: u64) -> Purge {
        Purge {
            route: route.map(String::from),
            tenant: tenant.map(String::from),
            made_ms,
        }
    }

    fn is_everything(p: &[Purge]) -> bool {
        p == everything()
    }

    #[test]
    fn shared_purges_are_read_in_order_skipping_this_replicas() {
        let f = ring(&[
            (1, "other", Some("chat"), None),
            (2, "me", None, None),
            (3, "other", None, Some("acme")),
        ]);
        assert_eq!(
            purges_between(&f, 0, 3, "me"),
            Ok(vec![
                purge(Some("chat"), None, 1),
                purge(None, Some("acme"), 3)
            ])
        );
        assert_eq!(
            purges_between(&f, 2, 3, "me"),
            Ok(vec![purge(None, Some("acme"), 3)])
        );
        assert_eq!(purges_between(&f, 3, 3, "me"), Ok(vec![]));
        assert_eq!(purges_between(&f, 5, 3, "me"), Ok(vec![]));
        assert_eq!(purges_between(&f, u64::MAX, u64::MAX, "me"), Ok(vec![]));
    }

    #[test]
    fn a_purge_no_longer_in_the_ring_means_purge_everything() {
        // Number 1's slot now holds number 65: 1 was overwritten.
        let f = ring(&[(2, "o", None, None), (65, "o", Some("chat"), None)]);
        assert_eq!(purges_between(&f, 0, 65, "me"), Err(()));
        assert_eq!(purges_between(&f, 0, 2, "me"), Err(()), "1 is gone");
        assert_eq!(
            purges_between(&f, 1, 2, "me"),
            Ok(vec![purge(None, None, 2)])
        );
        // More missed than the ring holds, a slot missing, or unreadable.
        assert_eq!(purges_between(&f, 0, PURGE_RING + 1, "me"), Err(()));
        assert_eq!(purges_between(&f, 2, 3, "me"), Err(()));
        let mut bad = ring(&[(1, "o", None, None)]);
        for v in [
            "1 [1]",
            r#"1 {"route": 7, "made_ms": 1}"#,
            r#"1 {"route": "r"}"#,
            "no number",
        ] {
            bad.insert("purge:1".into(), v.into());
            assert_eq!(purges_between(&bad, 0, 1, "me"), Err(()), "{v}");
        }
    }

    #[test]
    fn a_replica_applies_the_purges_made_since_its_last_read() {
        let r = Replicas::default();
        r.purges_from(2, 1);
        let due = |f: &HashMap<String, String>, fresh| r.purges_due(f, fresh, 1, 10);
        let f = ring(&[(1, "o", Some("a"), None), (2, "o", Some("b"), None)]);
        assert_eq!(
            due(&f, false),
            vec![purge(Some("b"), None, 2)],
            "the first read: only those made since it began"
        );
        assert!(due(&f, false).is_empty(), "seen already");
        let mut f = f;
        f.extend(ring(&[(3, "o", Some("c"), None)]));
        assert_eq!(due(&f, false), vec![purge(Some("c"), None, 3)]);
        // Redis restarted empty: the count starts again; a new purge there
        // is applied although its number is below the last one seen.
        let f = ring(&[(1, "o", Some("d"), None)]);
        assert_eq!(due(&f, true), vec![purge(Some("d"), None, 1)]);
        // Missed too many: everything, refusing no Redis value by its time.
        let f = ring(&[(100, "o", Some("e"), None)]);
        let all = due(&f, false);
        assert!(is_everything(&all), "{all:?}");
        assert_eq!(all[0].made_ms, 0);
        assert!(due(&f, false).is_empty());
        // The count went back in the same hash (a lagging Redis replica
        // took over): which were lost cannot be told, so everything.
        let f = ring(&[(98, "o", Some("f"), None)]);
        assert!(is_everything(&due(&f, false)));
        assert!(due(&f, false).is_empty());
    }

    #[test]
    fn a_count_that_went_back_and_came_up_again_is_noticed() {
        let r = Replicas::default();
        r.purges_from(0, 1);
        let mut f = ring(&[(9, "o", Some("a"), None), (10, "o", Some("b"), None)]);
        assert_eq!(r.purges_due(&f, false, 1, 10).len(), 2);
        // Failed over to a replica that had 8; two new purges make it 10.
        f.extend(ring(&[(9, "o", Some("x"), None)]));
        f.insert(
            "purge:10".into(),
            format!(
                "10 {}",
                serde_json::json!({"origin": "p", "made_ms": 10, "route": "y"})
            ),
        );
        f.insert("_purges".into(), "10".into());
        assert!(is_everything(&r.purges_due(&f, false, 1, 20)));
        // Then on as usual.
        f.extend(ring(&[(11, "o", Some("z"), None)]));
        assert_eq!(
            r.purges_due(&f, false, 1, 30),
            vec![purge(Some("z"), None, 11)]
        );
    }

    #[test]
    fn a_first_read_after_more_purges_than_the_ring_holds_purges_everything() {
        let r = Replicas::default();
        r.purges_from(5, 1);
        let purges: Vec<_> = (1..=70).map(|n| (n, "o", Some("r"), None)).collect();
        let f = ring(&purges);
        assert!(is_everything(&r.purges_due(&f, false, 1, 10)));
        // Made before this replica began: nothing lost that concerned it.
        let r = Replicas::default();
        r.purges_from(100, 1);
        assert!(r.purges_due(&f, false, 1, 200).is_empty());
    }

    #[test]
    fn a_changed_state_redis_reads_purges_anew_only_in_another_hash() {
        let r = Replicas::default();
        r.purges_from(0, 1);
        let f = ring(&[(1, "o", Some("a"), None), (2, "o", Some("b"), None)]);
        assert_eq!(r.purges_due(&f, false, 1, 50).len(), 2);
        // Another timeout, same hash: the count goes on.
        let mut f = f;
        f.extend(ring(&[(3, "o", Some("c"), None)]));
        assert_eq!(
            r.purges_due(&f, false, 2, 60),
            vec![purge(Some("c"), None, 3)]
        );
        // Another Redis: its purges made since the last read here apply
        // (that one began at 60 ms), older ones do not.
        let other = ring(&[(58, "o", Some("old"), None), (61, "o", Some("new"), None)]);
        assert_eq!(
            r.purges_due(&other, true, 3, 70),
            vec![purge(Some("new"), None, 61)]
        );
    }
}
