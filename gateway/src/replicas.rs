//! Admin changes shared by replicas (`state.redis`): a route's run-time
//! weights and a backend's drain, set on any replica, reach every other
//! within a second and survive a restart.
//!
//! - The shared state is one Redis hash, `{prefix}:admin`: a field per
//!   change (`route:NAME:weights` → a JSON object of backend → weight,
//!   `backend:NAME:drained` → `1`), written with a version bump and a
//!   `PUBLISH` of it in one script ([`skygate_state::Redis::admin_write`]).
//! - Every replica subscribes to that channel and, on each message (and
//!   every few seconds, in case one was missed), reads the whole hash and
//!   makes its own state match it: idempotent, so lost, repeated or
//!   reordered messages converge on the same state.
//! - A change is applied here first, then written. While Redis is down it
//!   waits in `pending` (this replica's change is not overwritten by the
//!   older shared state meanwhile) and is written when Redis returns: last
//!   writer wins, field by field.
//! - A replica that starts reads the hash before `/readyz` says ready, so
//!   a drained backend gets no traffic from a restarted replica.
//! - The hash carries an `_epoch`, set by whoever creates it. A Redis that
//!   restarted empty (no persistence) has none, or a new one: each replica
//!   then writes back its own state for the fields the hash lacks, so the
//!   operators' changes outlive it.

use crate::State;
use futures_util::StreamExt;
use serde_json::Value;
use skygate_backends::routing::state::WeightOverride;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Changes made here and not yet written: field → value (`None`:
    /// delete). The shared state does not overwrite these fields.
    pending: Mutex<BTreeMap<String, Option<String>>>,
    /// Wakes the sync loop (a change is pending).
    wake: tokio::sync::Notify,
    /// The shared state was read once (or Redis was found down): `/readyz`.
    synced: AtomicBool,
    /// The hash's `_epoch` when last read: another one (or none) means
    /// Redis lost the hash.
    epoch: Mutex<Option<String>>,
}

/// A route's field in the shared state.
pub fn weights_field(route: &str) -> String {
    format!("route:{route}:weights")
}

/// A backend's drain field in the shared state.
pub fn drained_field(backend: &str) -> String {
    format!("backend:{backend}:drained")
}

/// The value a weight override is shared as: a JSON object, keys sorted.
pub fn weights_value(o: &WeightOverride) -> String {
    let m: BTreeMap<&str, u32> = o.by_backend.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    serde_json::to_string(&m).unwrap_or_default()
}

impl Replicas {
    /// Whether `/readyz` may say ready as far as shared admin state goes.
    pub fn synced(&self, state: &State) -> bool {
        !state.shared.redis.is_configured() || self.synced.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks fields as changed here, before the change is applied, so a
    /// sync running meanwhile does not undo it.
    pub fn hold(&self, fields: &[(String, Option<String>)]) {
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
        let batch: Vec<(String, Option<String>)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let set: Vec<(String, String)> = batch
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        let delete: Vec<String> = batch
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        state.shared.redis.admin_write(&set, &delete).await?;
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
        if seen.is_some() && fields.get("_epoch") != seen.as_ref() {
            // Redis lost the hash (restarted empty): give back what this
            // replica holds and the hash lacks, then read the result.
            let mine = state.exclusive(|| local_fields(state));
            let missing: Vec<(String, Option<String>)> = mine
                .into_iter()
                .filter(|(k, _)| !fields.contains_key(k))
                .map(|(k, v)| (k, Some(v)))
                .collect();
            if !missing.is_empty() {
                log::warn!(
                    "admin: redis lost the shared admin state; writing back this replica's ({} fields)",
                    missing.len()
                );
                self.hold(&missing);
                self.flush(state).await?;
                fields = state.shared.redis.admin_read().await?.into_iter().collect();
            }
        }
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = fields.get("_epoch").cloned();
        let pending = self.lock().clone();
        state.exclusive(|| apply(state, &fields, &pending));
        self.synced.store(true, Ordering::Release);
        Ok(())
    }
}

/// Makes run-time weights and drains match the shared `fields`, except
/// those changed here and not yet written.
fn apply(
    state: &State,
    fields: &HashMap<String, String>,
    pending: &BTreeMap<String, Option<String>>,
) {
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
        let have = rs.overrides().map(|o| weights_value(&o));
        if want.as_ref().map(weights_value) != have {
            match &want {
                Some(o) => log::info!(
                    "admin (from another replica): route `{}` weights {}",
                    route.name,
                    weights_value(o)
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
            out.push((weights_field(&route.name), weights_value(&o)));
        }
    }
    for b in &snap.backends {
        if b.state.drained() {
            out.push((drained_field(&b.config.name), "1".to_string()));
        }
    }
    out
}

/// A shared weights value, keeping only the route's current targets (a
/// reload may have removed one); `None` when nothing usable is left.
fn parse_weights(v: &str, targets: &[&str]) -> Option<WeightOverride> {
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

/// Keeps this replica in step with the others, until the process ends:
/// subscribes, reads, and re-reads on every message and every few seconds.
pub async fn run(state: Arc<State>) {
    let replicas = &state.replicas;
    let mut logged = false;
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
        // change published in between is not missed).
        let synced = async {
            replicas.flush(&state).await?;
            replicas.pull(&state).await
        };
        if let Err(e) = synced.await {
            failures += 1;
            log::warn!("admin: reading the shared admin state failed ({e}); retrying");
            if failures >= 5 {
                // Redis answers, but not this: do not stay unready for it.
                replicas.synced.store(true, Ordering::Release);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        failures = 0;
        let channel = redis.admin_key();
        let mut sub = match redis.admin_subscribe().await {
            Ok(s) => s,
            Err(e) => {
                if !logged {
                    log::warn!("admin: cannot subscribe to shared admin changes ({e}); retrying every second");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        logged = false;
        if let Err(e) = replicas.pull(&state).await {
            log::warn!("admin: reading the shared admin state failed ({e}); retrying");
            continue;
        }
        let mut messages = sub.on_message();
        loop {
            let step = tokio::select! {
                m = messages.next() => match m {
                    Some(_) => replicas.pull(&state).await,
                    // The subscription's connection is gone: subscribe again.
                    None => break,
                },
                () = tokio::time::sleep(RESYNC) => {
                    if redis.admin_key() != channel {
                        break; // a reload changed the key prefix
                    }
                    match replicas.flush(&state).await {
                        Ok(()) => replicas.pull(&state).await,
                        Err(e) => Err(e),
                    }
                }
                () = replicas.wake.notified() => replicas.flush(&state).await,
            };
            if let Err(e) = step {
                log::warn!("admin: shared admin state: {e}; subscribing again");
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
        let v = weights_value(&o);
        assert_eq!(v, r#"{"a":80,"b":20}"#);
        let back = parse_weights(&v, &["a", "b"]).map(|o| weights_value(&o));
        assert_eq!(back.as_deref(), Some(v.as_str()));
        let only_a = parse_weights(&v, &["a"]).map(|o| o.by_backend);
        assert_eq!(only_a, Some(vec![("a".to_string(), 80)]));
        assert!(parse_weights(&v, &["c"]).is_none());
        assert!(parse_weights("[1]", &["a"]).is_none());
        assert!(parse_weights(r#"{"a":-1}"#, &["a"]).is_none());
    }
}
