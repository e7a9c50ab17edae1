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
        match self.flush(state).await {
            Ok(()) => Shared::Redis,
            Err(e) => {
                log::warn!("admin: the change is on this replica only until redis returns ({e})");
                self.wake.notify_one();
                Shared::Pending
            }
        }
    }

    /// Writes every pending field; each one written (and not changed again
    /// meanwhile) stops being pending.
    async fn flush(&self, state: &State) -> Result<(), skygate_state::RedisError> {
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

    /// Reads the shared state and makes this replica's match it.
    async fn pull(&self, state: &State) -> Result<(), skygate_state::RedisError> {
        let mut fields: HashMap<String, String> =
            state.shared.redis.admin_read().await?.into_iter().collect();
        let seen = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = fields.get("_epoch");
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
                self.flush(state).await?;
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
}
