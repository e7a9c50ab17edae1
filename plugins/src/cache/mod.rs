//! Response caching: exact-match on the canonical request, scoped per
//! tenant by default, in memory (moka) and optionally in Redis shared by
//! every replica. It runs after authentication, policy and rate limits, so
//! a cached answer only reaches callers allowed to call the route, and a
//! hit counts against request limits (not token limits).
//!
//! - A hit answers locally: the JSON as stored, or for a stream request
//!   the same content as SSE ([`entry::Entry::sse`]).
//! - A miss leads (one backend call per key) or waits, bounded, for the
//!   identical miss in flight and is answered from its result.
//! - A leader's answer is captured as it streams to its client
//!   ([`Fill`]); stored only when it is a whole 200 (a stream: through
//!   `data: [DONE]`, assembled into its completion).
//! - `Cache-Control: no-cache` skips the lookup but stores the answer;
//!   `no-store` skips both.

pub mod entry;
pub mod key;
pub mod store;

use crate::{CacheStatus, Decision, Incoming, LocalResponse, Plugin, RequestCtx, Shared};
use async_trait::async_trait;
use bytes::Bytes;
use entry::{now_ms, Entry};
use key::{Key, Parts};
use pingora_http::ResponseHeader;
use skygate_config::{CacheScope, Config, Operation, RouteCache};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use store::{Flight, Joined};
pub use store::{RouteCounters, Store};

/// The cache plugin of one config.
pub struct Cache {
    /// By route index: the route's settings when it caches.
    routes: Vec<Option<RouteRt>>,
    store: Arc<Store>,
    redis: Arc<skygate_state::Redis>,
    /// The Redis tier is on (and `state` has a Redis).
    l2: bool,
    prefix: String,
}

struct RouteRt {
    conf: RouteCache,
    name: Arc<str>,
    chat: bool,
    counters: Arc<RouteCounters>,
}

/// A miss's answer on its way to the client, captured to be stored.
#[derive(Debug)]
pub struct Fill {
    key: Key,
    route: usize,
    tenant: Option<Arc<str>>,
    /// Leads the identical misses (they wake when this is dropped).
    _flight: Option<Flight>,
    buf: Vec<u8>,
    limit: usize,
    sse: bool,
    state: FillState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillState {
    Open,
    /// Not a 200 JSON or SSE answer, marked `no-store`, or too large.
    Dropped,
    Complete,
}

impl Fill {
    /// The backend's response header: only a 200 of JSON or SSE, not
    /// marked `no-store` or `private`, is kept.
    pub fn response_header(&mut self, h: &ResponseHeader) {
        let ctype = h
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        self.sse = ctype.starts_with(b"text/event-stream");
        let json = ctype.starts_with(b"application/json");
        let forbidden = h
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .any(|v| {
                has_directive(v.as_bytes(), "no-store") || has_directive(v.as_bytes(), "private")
            });
        if h.status.as_u16() != 200 || !(json || self.sse) || forbidden {
            self.drop_capture();
        }
    }

    /// A body chunk as the backend sent it.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.state != FillState::Open {
            return;
        }
        if self.buf.len() + chunk.len() > self.limit {
            self.drop_capture();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body ended whole.
    pub fn complete(&mut self) {
        if self.state == FillState::Open {
            self.state = FillState::Complete;
        }
    }

    fn drop_capture(&mut self) {
        self.state = FillState::Dropped;
        self.buf = Vec::new();
    }
}

impl Cache {
    /// The plugin for `config`, when some route caches.
    pub fn from_config(config: &Config, shared: &Shared) -> Option<Self> {
        shared.cache.configure(&config.cache);
        if config.routes.iter().all(|r| r.cache.is_none()) {
            return None;
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                r.cache.clone().map(|conf| RouteRt {
                    conf,
                    name: r.name.as_str().into(),
                    chat: r.operation == Operation::ChatCompletions,
                    counters: shared.cache.route_counters(&r.name),
                })
            })
            .collect();
        let prefix = config
            .state
            .redis
            .as_ref()
            .map_or_else(|| "skygate".to_string(), |r| r.prefix.clone());
        Some(Self {
            routes,
            store: shared.cache.clone(),
            redis: shared.redis.clone(),
            l2: config.cache.redis && config.state.redis.is_some(),
            prefix,
        })
    }

    fn hit(
        &self,
        rt: &RouteRt,
        ctx: &mut RequestCtx,
        e: &Entry,
        framing: &key::Framing,
    ) -> Option<Decision> {
        let (body, ctype) = if ctx.stream && rt.chat {
            (e.sse(framing.include_usage)?, "text/event-stream")
        } else {
            (e.body.clone(), "application/json")
        };
        ctx.cache = CacheStatus::Hit;
        ctx.cached_tokens = e.tokens;
        ctx.cache_hit_free = !rt.conf.charge_hits;
        rt.counters.hits.fetch_add(1, Relaxed);
        if let Some(t) = e.tokens {
            rt.counters.tokens.fetch_add(t, Relaxed);
        }
        let age = e.age(now_ms());
        Some(Decision::Answer(LocalResponse {
            status: 200,
            headers: vec![
                (
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(ctype),
                ),
                (http::header::AGE, http::HeaderValue::from(age)),
            ],
            body,
        }))
    }

    /// Looks in Redis (the leader of a miss only); a value found fills
    /// the in-memory tier.
    async fn look_in_redis(
        &self,
        rt: &RouteRt,
        key: Key,
        tenant: Option<&Arc<str>>,
    ) -> Option<Arc<Entry>> {
        if !self.l2 {
            return None;
        }
        let rkey = store::redis_key(&self.prefix, &rt.name, tenant.map(|t| &**t), key);
        let value = match self.redis.get(&rkey).await {
            Ok(v) => v?,
            Err(_) => {
                self.store.counters.redis_errors.fetch_add(1, Relaxed);
                return None;
            }
        };
        let Some(e) = Entry::decode(
            &value,
            rt.name.clone(),
            tenant.cloned(),
            rt.conf.max_entry_bytes,
        ) else {
            self.store.counters.redis_bad_values.fetch_add(1, Relaxed);
            return None;
        };
        if e.left(now_ms()).is_zero() {
            return None;
        }
        let e = Arc::new(e);
        self.store.insert(key, e.clone());
        Some(e)
    }
}

/// The scope part of the key, and the tenant the entry is filed under.
fn scope(conf: &RouteCache, ctx: &RequestCtx) -> (String, Option<Arc<str>>) {
    let Some(id) = &ctx.identity else {
        // No authentication on this route: every caller is the same one.
        return ("anonymous".into(), None);
    };
    let p = &id.principal;
    let tenant: Option<Arc<str>> = p.tenant.as_deref().map(Into::into);
    let principal = || format!("p:{}\0{}", p.issuer.as_deref().unwrap_or(""), p.id);
    let s = match conf.scope {
        // Nobody's own: not filed under the storer's tenant.
        CacheScope::Global => return ("global".into(), None),
        CacheScope::Tenant => match &tenant {
            Some(t) => format!("t:{t}"),
            None => principal(),
        },
        CacheScope::Principal => principal(),
    };
    (s, tenant)
}

/// `Cache-Control` of the request: (`no-cache`, `no-store`).
fn request_directives(h: &pingora_http::RequestHeader) -> (bool, bool) {
    let mut out = (false, false);
    for v in h.headers.get_all(http::header::CACHE_CONTROL) {
        out.0 |= has_directive(v.as_bytes(), "no-cache");
        out.1 |= has_directive(v.as_bytes(), "no-store");
    }
    out
}

fn has_directive(value: &[u8], name: &str) -> bool {
    value.split(|&b| b == b',').any(|d| {
        let d = d.trim_ascii();
        let d = d.split(|&b| b == b'=').next().unwrap_or(d);
        d.eq_ignore_ascii_case(name.as_bytes())
    })
}

#[async_trait]
impl Plugin for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn on_request(&self, req: Incoming<'_>, ctx: &mut RequestCtx) -> Decision {
        let Some(rt) = ctx
            .route
            .and_then(|r| self.routes.get(r))
            .and_then(Option::as_ref)
        else {
            return Decision::Continue;
        };
        let route = ctx.route.unwrap_or_default();
        let (no_cache, no_store) = request_directives(req.header);
        if no_store {
            rt.counters.bypasses.fetch_add(1, Relaxed);
            return Decision::Continue;
        }
        let (scope, tenant) = scope(&rt.conf, ctx);
        let mut forbidden = ctx.forbidden_backends.clone();
        forbidden.sort_unstable();
        let parts = Parts {
            route: &rt.name,
            scope: &scope,
            forbidden: &forbidden,
        };
        let Some((key, framing)) = key::key(&parts, req.body) else {
            rt.counters.bypasses.fetch_add(1, Relaxed);
            return Decision::Continue;
        };
        let mut flight = None;
        if !no_cache {
            if let Some(e) = self.store.get(key) {
                if let Some(d) = self.hit(rt, ctx, &e, &framing) {
                    return d;
                }
            }
            match self.store.join(key) {
                Joined::Lead(f) => {
                    if let Some(e) = self.look_in_redis(rt, key, tenant.as_ref()).await {
                        if let Some(d) = self.hit(rt, ctx, &e, &framing) {
                            rt.counters.redis_hits.fetch_add(1, Relaxed);
                            return d;
                        }
                    }
                    flight = Some(f);
                }
                Joined::Wait(rx) => {
                    rt.counters.waits.fetch_add(1, Relaxed);
                    let wait = self.store.conf().wait;
                    store::wait_for(rx, wait).await;
                    if let Some(e) = self.store.get(key) {
                        if let Some(d) = self.hit(rt, ctx, &e, &framing) {
                            return d;
                        }
                    }
                    // The first one stored nothing (or took too long): ask
                    // a backend, and store what it says.
                }
            }
            ctx.cache = CacheStatus::Miss;
            rt.counters.misses.fetch_add(1, Relaxed);
        } else {
            rt.counters.bypasses.fetch_add(1, Relaxed);
        }
        // A stream's entry should carry its usage: ask the backend for it
        // (the client's stream leaves it out unless it asked too).
        if ctx.stream {
            ctx.want_stream_usage = true;
        }
        ctx.cache_fill = Some(Box::new(Fill {
            key,
            route,
            tenant,
            _flight: flight,
            buf: Vec::new(),
            limit: rt.conf.max_entry_bytes,
            sse: false,
            state: FillState::Open,
        }));
        Decision::Continue
    }

    fn on_complete(&self, ctx: &mut RequestCtx) {
        let Some(fill) = ctx.cache_fill.take() else {
            return;
        };
        // Dropped at the end of this call: waiters wake after the store.
        let fill = *fill;
        if fill.state != FillState::Complete || ctx.status != 200 || ctx.error.is_some() {
            return;
        }
        let Some(rt) = self.routes.get(fill.route).and_then(Option::as_ref) else {
            return;
        };
        let body = if fill.sse {
            if !rt.chat {
                return;
            }
            match entry::assemble(&fill.buf) {
                Some(b) => b,
                None => return,
            }
        } else {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&fill.buf).is_err() {
                return;
            }
            fill.buf
        };
        let e = Arc::new(Entry::new(
            Bytes::from(body),
            rt.chat,
            rt.name.clone(),
            fill.tenant.clone(),
            now_ms(),
            rt.conf.ttl,
        ));
        if self.l2 {
            let rkey = store::redis_key(&self.prefix, &rt.name, fill.tenant.as_deref(), fill.key);
            let conf = self.store.conf();
            self.redis
                .put(rkey, e.encode(conf.compress_above), rt.conf.ttl);
        }
        self.store.insert(fill.key, e);
        rt.counters.stores.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        assert!(has_directive(b"no-cache", "no-cache"));
        assert!(has_directive(b"max-age=0, No-Store", "no-store"));
        assert!(!has_directive(b"no-cache", "no-store"));
        assert!(has_directive(b"private=\"x\"", "private"));
        assert!(!has_directive(b"no-cachex", "no-cache"));
    }
}
